//! Timers (contract 0.2.0), through the store and a real component:
//!
//! 1. firing throughput: due timers read, `on-timers` called, effects and
//!    the timers' removal committed durably, 1000 timers a round — the
//!    `session` plugin against the same handler compiled natively;
//! 2. a million pending timers: what setting them costs against a raw redb
//!    loop writing the same keys, the file size per timer, and a restart
//!    (open the store, find the next timer);
//! 3. processing-time firing lateness (due → committed) on a loaded
//!    partition: the worker's loop — a batch of records, its checkpoint,
//!    then the due timers and theirs — with `session` closing a key's
//!    session 20 ms after its last record while records stream in.
//!
//! Run: `cargo bench -p linecook --bench timers` (TIMERS=n, PENDING=n,
//! RECORDS=n to change the sizes).

mod common;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::MemState;
use linecook::checkpoint::{BatchCommit, StateReader};
use linecook::config::Limits;
use linecook::log::TopicInfo;
use linecook::record::{BatchEffects, NewRecord, OutputRecord, TimeDomain, Timer, now_ms};
use linecook::runtime::bindings::Context;
use linecook::runtime::{Batch, CallTime, Instance, Labels, Runtime};
use linecook::store::Store;

const GAP_MS: i64 = 20;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn session(runtime: &Runtime) -> Instance {
    let prepared = common::prepare(runtime, support::plugins(), "session");
    let context = Context {
        plugin: "session".into(),
        version: "bench".into(),
        topic: "in".into(),
        partition: 0,
        config: vec![
            ("output".into(), "out".into()),
            ("gap_ms".into(), GAP_MS.to_string()),
        ],
    };
    let labels = Labels {
        plugin: "session".into(),
        version: "bench".into(),
        topic: "in".into(),
        partition: 0,
    };
    Instance::start(
        &prepared,
        labels,
        Limits::default(),
        &context,
        Box::new(MemState::default()),
    )
    .unwrap()
}

/// `session`'s `on-timers`, compiled into the host.
fn native_on_timers(due: &[Timer], reader: &dyn StateReader) -> BatchEffects {
    let mut effects = BatchEffects::default();
    for timer in due {
        let Some(bytes) = reader.get(&timer.key).unwrap() else {
            continue;
        };
        let word = |i: usize| i64::from_be_bytes(bytes[i..i + 8].try_into().unwrap());
        effects.state.insert(timer.key.clone(), None);
        let line = format!(
            "{}:{}:{}:{}",
            String::from_utf8_lossy(&timer.key),
            word(0),
            word(8),
            word(16)
        );
        effects.outputs.push(OutputRecord {
            topic: "out".into(),
            key: Some(timer.key.clone()),
            value: line.into_bytes(),
            headers: vec![],
            timestamp_ms: None,
        });
    }
    effects.fired = due.to_vec();
    effects
}

fn store() -> (tempfile::TempDir, Store, TopicInfo) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.create_topic("in", 1).unwrap();
    store.create_topic("out", 1).unwrap();
    let input = store.topic("in").unwrap();
    (dir, store, input)
}

fn commit(store: &Store, input: &TopicInfo, from: u64, to: u64, effects: &BatchEffects) {
    store
        .commit_batch(BatchCommit {
            topic: input,
            partition: 0,
            first_offset: from,
            next_offset: to,
            version: "bench",
            effects,
            changelog: None,
            firing_seq: None,
        })
        .unwrap();
}

/// `n` due processing timers, each with a session in state, set in
/// checkpoints of 10,000.
fn with_due_timers(n: usize) -> (tempfile::TempDir, Store, TopicInfo) {
    let (dir, store, input) = store();
    let session = {
        let mut s = Vec::new();
        for v in [1i64, 5, 9] {
            s.extend_from_slice(&v.to_be_bytes());
        }
        s
    };
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        let mut effects = BatchEffects::default();
        for &i in chunk {
            let key = format!("key-{i:08}").into_bytes();
            effects.state.insert(key.clone(), Some(session.clone()));
            effects
                .timers
                .insert((TimeDomain::Processing, key), Some(1_000 + i as i64));
        }
        commit(&store, &input, 0, 0, &effects);
    }
    (dir, store, input)
}

/// Timers fired per second: read ≤ 1000 due, call, commit, until none.
fn fire_all(
    store: &Store,
    input: &TopicInfo,
    mut on_timers: impl FnMut(&[Timer], Box<dyn StateReader>) -> BatchEffects,
) -> (f64, usize) {
    let started = Instant::now();
    let mut fired = 0;
    loop {
        let due = store
            .due_timers(input, 0, TimeDomain::Processing, now_ms(), 1000)
            .unwrap();
        if due.is_empty() {
            break;
        }
        let reader = store.partition_state(input, 0).unwrap();
        let effects = on_timers(&due, Box::new(reader));
        commit(store, input, 0, 0, &effects);
        fired += due.len();
    }
    (fired as f64 / started.elapsed().as_secs_f64(), fired)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn million_pending(n: usize) {
    let (dir, store, input) = store();
    let before = std::fs::metadata(dir.path().join("linecook.redb"))
        .unwrap()
        .len();
    let started = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        let mut effects = BatchEffects::default();
        for &i in chunk {
            effects.timers.insert(
                (TimeDomain::Event, format!("key-{i:08}").into_bytes()),
                Some(1_000_000 + i as i64),
            );
        }
        commit(&store, &input, 0, 0, &effects);
    }
    let set_rate = n as f64 / started.elapsed().as_secs_f64();
    drop(store);
    let size = std::fs::metadata(dir.path().join("linecook.redb"))
        .unwrap()
        .len();

    // The same keys and dues, one plain redb table, same transactions.
    let raw_rate = {
        use redb::{Database, TableDefinition};
        const T: TableDefinition<(i64, &[u8]), ()> = TableDefinition::new("t");
        let raw = tempfile::tempdir().unwrap();
        let db = Database::create(raw.path().join("raw.redb")).unwrap();
        let started = Instant::now();
        for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
            let txn = db.begin_write().unwrap();
            {
                let mut t = txn.open_table(T).unwrap();
                for &i in chunk {
                    let key = format!("key-{i:08}");
                    t.insert((1_000_000 + i as i64, key.as_bytes()), ())
                        .unwrap();
                }
            }
            txn.commit().unwrap();
        }
        n as f64 / started.elapsed().as_secs_f64()
    };

    let rss = rss_kib();
    let started = Instant::now();
    let store = Store::open(dir.path()).unwrap();
    let pending = store.pending_timers(&input, 0).unwrap();
    let first = store
        .due_timers(&input, 0, TimeDomain::Event, i64::MAX, 1000)
        .unwrap();
    let restart = started.elapsed();
    assert_eq!(pending.timers as usize, n);
    assert_eq!(first.len(), 1000.min(n));
    println!("\n{n} pending event-time timers\n");
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| set, checkpoints of 10,000 (timers/s) | {set_rate:.0} ({:.2} of a raw redb loop writing the same keys: {raw_rate:.0}/s) |",
        set_rate / raw_rate
    );
    println!(
        "| file growth (bytes per timer) | {:.0} |",
        (size - before) as f64 / n as f64
    );
    println!(
        "| restart: open the store, count them, read the first 1000 (ms) | {:.1} |",
        restart.as_secs_f64() * 1e3
    );
    println!(
        "| host memory they take (RSS change over the reopen, KiB) | {} |",
        rss_kib() as i64 - rss as i64
    );
}

/// The worker's loop on one partition with records streaming in: returns
/// the lateness of each processing-time firing (ms) and records/s.
fn lateness(runtime: &Runtime, n: usize, batch_size: usize) -> (Vec<f64>, f64, usize) {
    let (_dir, store, input) = store();
    // 5,000 keys in turn: each key's next record comes ~5,000 records
    // later, well after its 20 ms gap at these rates, so sessions close
    // all the time.
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        let records: Vec<NewRecord> = chunk
            .iter()
            .map(|&i| NewRecord {
                timestamp_ms: Some(i as i64),
                key: Some(format!("key-{:05}", i % 5000).into_bytes()),
                value: common::value(i),
                headers: vec![],
                partition: Some(0),
            })
            .collect();
        store.produce("in", &records).unwrap();
    }
    let mut instance = session(runtime);
    let mut late = Vec::new();
    let mut next = 0u64;
    let started = Instant::now();
    loop {
        // Due timers first, as the worker does between batches.
        let now = now_ms();
        let due = store
            .due_timers(&input, 0, TimeDomain::Processing, now, batch_size)
            .unwrap();
        if !due.is_empty() {
            let reader = store.partition_state_at(&input, 0, now).unwrap();
            let time = CallTime {
                now_ms: now,
                ..CallTime::default()
            };
            let (effects, _) = instance.on_timers(&due, Box::new(reader), time).unwrap();
            commit(&store, &input, next, next, &effects);
            let done = now_ms();
            late.extend(due.iter().map(|t| (done - t.due_ms) as f64));
            continue;
        }
        let read = store.read(&input, 0, next, batch_size).unwrap();
        if read.is_empty() {
            let pending = store.pending_timers(&input, 0).unwrap();
            match pending.next_processing {
                Some(at) => {
                    std::thread::sleep(Duration::from_millis(at.saturating_sub(now).max(0) as u64));
                    continue;
                }
                None => break,
            }
        }
        let end = read.last().unwrap().offset + 1;
        let batch = Batch::new(instance.shape(), "in", read);
        let reader = store.partition_state_at(&input, 0, now).unwrap();
        let time = CallTime {
            now_ms: now,
            ..CallTime::default()
        };
        let (effects, _) = instance.handle(&batch, Box::new(reader), time).unwrap();
        commit(&store, &input, next, end, &effects);
        next = end;
    }
    let fired = late.len();
    (late, n as f64 / started.elapsed().as_secs_f64(), fired)
}

fn main() {
    let runtime = Runtime::new().unwrap();
    let timers = env("TIMERS", 100_000);

    let (_d1, store, input) = with_due_timers(timers);
    let (native, fired) = fire_all(&store, &input, |due, reader| {
        native_on_timers(due, &*reader)
    });
    assert_eq!(fired, timers);
    let (_d2, store, input) = with_due_timers(timers);
    let mut wasm_session = session(&runtime);
    let (wasm, fired) = fire_all(&store, &input, |due, reader| {
        let time = CallTime {
            now_ms: now_ms(),
            ..CallTime::default()
        };
        wasm_session.on_timers(due, reader, time).unwrap().0
    });
    assert_eq!(fired, timers);
    let out = store.topic("out").unwrap();
    assert_eq!(store.end_offsets(&out).unwrap()[0] as usize, timers);
    println!(
        "\nfiring {timers} due processing timers, 1000 per call and durable checkpoint (session: state read and delete, one output each)\n"
    );
    println!("| path | timers/s | vs native |");
    println!("|---|---|---|");
    println!("| native on-timers | {native:.0} | 1.00 |");
    println!(
        "| WASM session on-timers | {wasm:.0} | {:.2} |",
        wasm / native
    );

    million_pending(env("PENDING", 1_000_000));

    let records = env("RECORDS", 200_000);
    println!(
        "\nprocessing-time firing lateness (committed − due), {records} records streaming through `session` (gap {GAP_MS} ms, 5000 keys), one partition\n"
    );
    println!("| batch | records/s | timers fired | p50 (ms) | p99 (ms) | max (ms) |");
    println!("|---|---|---|---|---|---|");
    for batch in [100, 1000] {
        let (mut late, rate, fired) = lateness(&runtime, records, batch);
        let mut per: BTreeMap<&str, f64> = BTreeMap::new();
        per.insert("p50", quantile(&mut late, 0.5));
        per.insert("p99", quantile(&mut late, 0.99));
        per.insert("max", quantile(&mut late, 1.0));
        println!(
            "| {batch} | {rate:.0} | {fired} | {:.1} | {:.1} | {:.1} |",
            per["p50"], per["p99"], per["max"]
        );
    }
}
