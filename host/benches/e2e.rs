//! End to end on the embedded log with durable checkpoints, WASM against
//! native handlers and against a raw redb write loop of the same bytes; plus
//! checkpoint latency, compile (uncached, cached) and instantiate times.
//!
//! Each partition runs the worker's per-batch path on a thread of its own,
//! as the host does: read a batch from the log, call the handler, commit
//! state + outputs + offset through the group committer, which writes the
//! batches of every partition ready at the time in one durable redb
//! transaction.
//!
//! Native and WASM run in turn, ROUNDS times (default 5), each on a store
//! of its own: a row reports the median run, and WASM's "vs native" is the
//! median of the rounds' ratios, since this machine's disk makes one run
//! differ from the next by more than the handlers do.
//!
//! Run: `cargo bench -p linecook --bench e2e` (RECORDS=n, BATCH=n, ROUNDS=n
//! to change).

mod common;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use common::{BatchHandler, HANDLERS, Native, Wasm, median};
use linecook::checkpoint::{BatchCommit, OwnedCommit};
use linecook::plugins::ArtifactCache;
use linecook::record::NewRecord;
use linecook::runtime::Runtime;
use linecook::store::Store;

const PARTITIONS: u32 = 4;
/// Records in the first batch of a fresh instance: about what each of
/// 1,024 partitions gets in the binary bench's spread run.
const FIRST_BATCH: usize = 300;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The run with the median records/s.
fn median_run(runs: &[Run]) -> Run {
    let mut runs = runs.to_vec();
    runs.sort_by(|a, b| a.records_per_sec.total_cmp(&b.records_per_sec));
    runs[runs.len() / 2]
}

/// A store with `n` keyed 100-byte records in `in`, and an empty `out`.
fn store_with_input(n: usize) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.create_topic("in", PARTITIONS).unwrap();
    store.create_topic("out", PARTITIONS).unwrap();
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        let records: Vec<NewRecord> = chunk
            .iter()
            .map(|&i| NewRecord {
                timestamp_ms: None,
                key: Some(format!("key-{}", i % 1000).into_bytes()),
                value: common::value(i),
                headers: vec![],
                partition: None,
            })
            .collect();
        store.produce("in", &records).unwrap();
    }
    (dir, store)
}

#[derive(Clone, Copy)]
struct Run {
    records_per_sec: f64,
    commit_ms: f64,
    records_per_commit: f64,
    batches_per_transaction: f64,
}

/// Drives `make(partition)`'s handlers over every partition to the end, a
/// thread per partition as the host runs them, each batch committed through
/// the group committer as the worker commits it.
/// `grouped: false` commits each batch in a transaction of its own, as the
/// host did before group commit.
fn run(
    store: &Store,
    batch: usize,
    grouped: bool,
    make: impl Fn(u32) -> Box<dyn BatchHandler> + Sync,
) -> Run {
    let input = store.topic("in").unwrap();
    let started = Instant::now();
    let per_partition: Vec<(usize, usize, usize, Vec<f64>)> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..PARTITIONS)
            .map(|p| {
                let (make, input) = (&make, &input);
                s.spawn(move || {
                    let mut handler = make(p);
                    let mut next = 0u64;
                    let (mut records, mut transactions, mut batches) = (0, 0, 0);
                    let mut commit_times = Vec::new();
                    loop {
                        let read = store.read(input, p, next, batch).unwrap();
                        let Some(last) = read.last().map(|r| r.offset) else {
                            break;
                        };
                        let first = read[0].offset;
                        // The worker's own conversion, so the bench measures
                        // its path.
                        let batch = handler.batch(read);
                        let reader = store.partition_state(input, p).unwrap();
                        let effects = handler.handle(&batch, Box::new(reader));
                        let commit = Instant::now();
                        if grouped {
                            let done = store.commit_grouped(OwnedCommit {
                                topic: input.clone(),
                                partition: p,
                                first_offset: first,
                                next_offset: last + 1,
                                version: "bench".into(),
                                effects,
                                changelog: None,
                                firing_seq: None,
                            });
                            done.result.unwrap();
                            if let Some(n) = done.wrote {
                                transactions += 1;
                                batches += n;
                            }
                        } else {
                            store
                                .commit_batch(BatchCommit {
                                    topic: input,
                                    partition: p,
                                    first_offset: first,
                                    next_offset: last + 1,
                                    version: "bench",
                                    effects: &effects,
                                    changelog: None,
                                    firing_seq: None,
                                })
                                .unwrap();
                            transactions += 1;
                            batches += 1;
                        }
                        commit_times.push(commit.elapsed().as_secs_f64() * 1e3);
                        records += batch.len();
                        next = last + 1;
                    }
                    (records, transactions, batches, commit_times)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let records: usize = per_partition.iter().map(|r| r.0).sum();
    let transactions: usize = per_partition.iter().map(|r| r.1).sum();
    let batches: usize = per_partition.iter().map(|r| r.2).sum();
    let times = per_partition.into_iter().flat_map(|r| r.3).collect();
    Run {
        records_per_sec: records as f64 / elapsed,
        commit_ms: median(times),
        records_per_commit: records as f64 / transactions as f64,
        batches_per_transaction: batches as f64 / transactions as f64,
    }
}

/// The storage limit: one durable redb transaction per batch writing the
/// same output bytes and an offset, with no log read and no handler; a row
/// per record (`per_row = 1`), or `per_row` records' bytes per row, as the
/// log's blocks store them (`linecook::log::BLOCK_RECORDS`).
fn raw_redb(n: usize, batch: usize, per_row: usize) -> f64 {
    use redb::{Database, TableDefinition};
    const OUT: TableDefinition<(u32, u32, u64), &[u8]> = TableDefinition::new("out");
    const OFFSETS: TableDefinition<u32, u64> = TableDefinition::new("offsets");
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("raw.redb")).unwrap();
    let values: Vec<Vec<u8>> = (0..batch).map(common::value).collect();
    let started = Instant::now();
    let mut offset = 0u64;
    let mut row = Vec::new();
    while (offset as usize) < n {
        let p = (offset / batch as u64) as u32 % PARTITIONS;
        let txn = db.begin_write().unwrap();
        {
            let mut out = txn.open_table(OUT).unwrap();
            for (i, chunk) in values.chunks(per_row).enumerate() {
                row.clear();
                for v in chunk {
                    row.extend_from_slice(&(v.len() as u32).to_le_bytes());
                    row.extend_from_slice(v);
                }
                let first = offset + (i * per_row) as u64;
                out.insert((0, p, first), row.as_slice()).unwrap();
            }
            txn.open_table(OFFSETS)
                .unwrap()
                .insert(p, offset + batch as u64)
                .unwrap();
        }
        txn.commit().unwrap();
        offset += batch as u64;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    // `cargo bench` passes --bench; nothing else is accepted.
    let n = env("RECORDS", 200_000);
    let batch = env("BATCH", 1000);
    let rounds = env("ROUNDS", 5).max(1);
    let runtime = Runtime::new().unwrap();
    let plugins = support::plugins();

    let mut rows = Vec::new();
    let raw_rows = raw_redb(n, batch, 1);
    let raw = raw_redb(n, batch, linecook::log::BLOCK_RECORDS as usize);
    for name in ["uppercase", "counter"] {
        let prepared = common::prepare(&runtime, plugins, name);
        for grouped in [false, true] {
            let (mut natives, mut wasms) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                let (_d1, store) = store_with_input(n);
                natives.push(run(&store, batch, grouped, |_| Box::new(Native::new(name))));
                let (_d2, store) = store_with_input(n);
                wasms.push(run(&store, batch, grouped, |_| {
                    Box::new(Wasm(common::instance(&prepared, name)))
                }));
            }
            rows.push((name, grouped, natives, wasms));
        }
    }

    println!(
        "\nend to end, embedded log, durable checkpoints: {n} records of 100 bytes, {PARTITIONS} partitions, batch {batch}; median of {rounds} runs each, native and WASM in turn\n"
    );
    println!(
        "| path | records/s | vs native | vs raw redb loop | checkpoint commit (median ms) | records/transaction | batches/transaction |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| raw redb write loop, same bytes, a transaction per batch, a row per record | {raw_rows:.0} | | {:.2} | | {batch} | 1 |",
        raw_rows / raw
    );
    println!(
        "| raw redb write loop, same bytes, a transaction per batch, {} records a row (as the log's blocks) | {raw:.0} | | 1.00 | | {batch} | 1 |",
        linecook::log::BLOCK_RECORDS
    );
    let mut spreads = Vec::new();
    for (name, grouped, natives, wasms) in &rows {
        let commits = if *grouped {
            "group commit"
        } else {
            "a transaction per batch"
        };
        let mut ratios: Vec<f64> = natives
            .iter()
            .zip(wasms)
            .map(|(n, w)| w.records_per_sec / n.records_per_sec)
            .collect();
        ratios.sort_by(f64::total_cmp);
        spreads.push(format!(
            "{name}, {commits}: {}",
            ratios
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        for (kind, runs, vs_native) in [
            ("native", natives, 1.0),
            ("WASM", wasms, median(ratios.clone())),
        ] {
            let r = median_run(runs);
            println!(
                "| {name} {kind}, {commits} | {:.0} | {vs_native:.2} | {:.2} | {:.2} | {:.0} | {:.2} |",
                r.records_per_sec,
                r.records_per_sec / raw,
                r.commit_ms,
                r.records_per_commit,
                r.batches_per_transaction
            );
        }
    }
    println!("\nWASM / native, each round, in order of size:\n");
    for line in spreads {
        println!("- {line}");
    }

    println!("\nper plugin: compile and instantiate\n");
    println!(
        "| plugin | size (bytes) | compile, uncached (ms) | load from cache (ms) | cached / uncached | instantiate + init (µs, median of 200) | + a first batch of {FIRST_BATCH} records (µs, median of 200) |"
    );
    println!("|---|---|---|---|---|---|---|");
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = ArtifactCache::new(cache_dir.path().to_owned(), runtime.engine());
    for name in HANDLERS.iter().chain(["tag"].iter()) {
        let bytes = std::fs::read(plugins.join(format!("{name}.wasm"))).unwrap();
        let digest = linecook::plugins::digest(&bytes);
        let compile = median(
            (0..5)
                .map(|_| {
                    let t = Instant::now();
                    std::hint::black_box(runtime.compile(&bytes).unwrap());
                    t.elapsed().as_secs_f64() * 1e3
                })
                .collect(),
        );
        cache.store(&digest, &runtime.compile(&bytes).unwrap());
        let load = median(
            (0..5)
                .map(|_| {
                    let t = Instant::now();
                    std::hint::black_box(cache.load(runtime.engine(), &digest).unwrap());
                    t.elapsed().as_secs_f64() * 1e3
                })
                .collect(),
        );
        let prepared = runtime.prepare(&bytes).unwrap();
        let instantiate = median(
            (0..200)
                .map(|_| {
                    let t = Instant::now();
                    std::hint::black_box(common::instance(&prepared, name));
                    t.elapsed().as_secs_f64() * 1e6
                })
                .collect(),
        );
        // What a partition pays before its first batch is done, when it
        // has few records (a host with many partitions): a fresh instance's
        // first call, its memory not yet touched.
        let inputs: Vec<_> = (0..200).map(|_| common::records(FIRST_BATCH)).collect();
        let first_batch = median(
            inputs
                .into_iter()
                .map(|records| {
                    let t = Instant::now();
                    let mut wasm = Wasm(common::instance(&prepared, name));
                    let batch = wasm.batch(records);
                    std::hint::black_box(
                        wasm.handle(&batch, Box::new(common::MemState::default())),
                    );
                    t.elapsed().as_secs_f64() * 1e6
                })
                .collect(),
        );
        println!(
            "| {name} | {} | {compile:.1} | {load:.2} | {:.3} | {instantiate:.0} | {first_batch:.0} |",
            bytes.len(),
            load / compile
        );
        let _ = Duration::ZERO;
    }
}
