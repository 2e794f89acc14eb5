//! Crash consistency: a pipeline killed with SIGKILL at random moments and
//! restarted ends with exactly the outputs and state of an uninterrupted run.
//!
//! The kill times come from a seeded generator; the seed is printed, and
//! `LINECOOK_CRASH_SEED=<seed>` reproduces a run. `LINECOOK_CRASH_KILLS`
//! sets how many kills (default 30). Every third round deploys a new version
//! of `uppercase` (same code, new digest) just before the kill, so kills also
//! land before, during and after hot swaps. Its seven partitions (two
//! routes) commit through the group committer, and the test checks that
//! kills landed after transactions holding several batches had been
//! written — kills during group commits.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use support::{Setup, read_all, values_by_key, wait_drained};

const PIPELINE: &str = r#"
max_batch = 20
[[topic]]
name = "in"
partitions = 4
[[topic]]
name = "mid"
partitions = 3
[[topic]]
name = "out"
partitions = 2
[[route]]
topic = "in"
plugin = "counter"
config = { output = "mid" }
[[route]]
topic = "mid"
plugin = "uppercase"
config = { output = "out" }
"#;

#[test]
fn sigkill_at_random_moments_loses_and_duplicates_nothing() {
    let seed: u64 = std::env::var("LINECOOK_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    let kills: usize = std::env::var("LINECOOK_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    eprintln!("crash test seed {seed} ({kills} kills); reproduce with LINECOOK_CRASH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let setup = Setup::new(PIPELINE, &["counter", "uppercase"]);
    for (t, p) in [("in", "4"), ("mid", "3"), ("out", "2")] {
        assert!(
            setup
                .cli(&["topics", "create", t, "--partitions", p])
                .status
                .success()
        );
    }
    // Input arrives in waves, one per round, while the host is down; each
    // round kills the host a random moment (0-100 ms) after it is ready, so most kills
    // land while batches are being handled and committed.
    let keys = 40;
    let wave = 3000;
    let total = wave * (kills + 1);
    let input: Vec<(String, String)> = (0..total)
        .map(|i| (format!("key-{}", i % keys), format!("v{i}")))
        .collect();
    let produce_wave = |n: usize| {
        let records: Vec<(Option<&str>, &str)> = input[n * wave..(n + 1) * wave]
            .iter()
            .map(|(k, v)| (Some(k.as_str()), v.as_str()))
            .collect();
        setup.produce("in", &records);
    };

    let uppercase = std::fs::read(support::plugins().join("uppercase.wasm")).unwrap();
    let mut mid_stream_kills = 0;
    let mut grouped_rounds = 0;
    for round in 0..kills {
        produce_wave(round);
        let mut host = setup.start();
        host.wait_ready();
        let delay = if round % 3 == 1 {
            let tmp = setup.dir.path().join("plugins/uppercase.wasm.partial");
            std::fs::write(&tmp, support::with_custom_section(&uppercase, round as u32)).unwrap();
            std::fs::rename(&tmp, setup.dir.path().join("plugins/uppercase.wasm")).unwrap();
            // Around the watcher's debounce: before, during or after the swap.
            Duration::from_millis(rng.random_range(150..400))
        } else {
            Duration::from_millis(rng.random_range(0..100))
        };
        std::thread::sleep(delay);
        let (transactions, batches) = checkpoint_counts(&setup);
        if batches > transactions {
            grouped_rounds += 1;
        }
        host.kill();
        let status = setup.status();
        let done: u64 = status
            .partitions
            .iter()
            .filter(|p| p.topic == "in")
            .map(|p| p.committed_offset)
            .sum();
        let lag: u64 = status.partitions.iter().map(|p| p.lag).sum();
        eprintln!(
            "kill {round} {delay:?} after ready: {done}/{} inputs committed, lag {lag}",
            (round + 1) * wave
        );
        if lag > 0 && done > 0 {
            mid_stream_kills += 1;
        }
    }
    produce_wave(kills);

    let mut host = setup.start();
    host.wait_ready();
    wait_drained(&setup, "out", total as u64);
    host.stop();

    // The model: counter then uppercase, per key in input order.
    let mut want: BTreeMap<Option<String>, Vec<String>> = BTreeMap::new();
    for (k, _) in &input {
        let seen = want.entry(Some(k.clone())).or_default();
        seen.push(format!("{k}:{}", seen.len() + 1).to_ascii_uppercase());
    }
    let store = setup.store();
    let got = values_by_key(&read_all(&store, "out"));
    for (key, values) in &want {
        assert_eq!(
            got.get(key),
            Some(values),
            "outputs of {key:?} differ from the uninterrupted model (seed {seed})"
        );
    }
    assert_eq!(got.len(), want.len(), "unexpected keys (seed {seed})");

    let in_topic = store.topic("in").unwrap();
    let ends = store.end_offsets(&in_topic).unwrap();
    let mut counted = 0;
    for p in 0..in_topic.partitions {
        let cp = store.checkpoint(&in_topic, p).unwrap().unwrap();
        assert_eq!(
            cp.next_offset, ends[p as usize],
            "offset of in/{p} (seed {seed})"
        );
        for (k, v) in store.state_entries(&in_topic, p).unwrap() {
            let k = String::from_utf8(k).unwrap();
            let n: usize = String::from_utf8(v).unwrap().parse().unwrap();
            assert_eq!(
                n,
                want[&Some(k.clone())].len(),
                "count of {k} (seed {seed})"
            );
            counted += n;
        }
    }
    assert_eq!(
        counted, total,
        "state counts every input once (seed {seed})"
    );
    let mid = store.topic("mid").unwrap();
    let versions: std::collections::BTreeSet<String> = (0..mid.partitions)
        .flat_map(|p| store.version_history(&mid, p).unwrap())
        .map(|(_, v)| v)
        .collect();
    assert!(
        kills < 3 || versions.len() > 1,
        "uppercase was redeployed, so checkpoints record more than one version (seed {seed})"
    );
    assert!(
        mid_stream_kills * 2 >= kills,
        "only {mid_stream_kills} of {kills} kills hit a pipeline in motion; the test proves too little (seed {seed})"
    );
    assert!(
        grouped_rounds * 3 >= kills,
        "only {grouped_rounds} of {kills} kills came after a transaction of several batches; group commit was barely exercised (seed {seed})"
    );
}

/// (checkpoint transactions, batches committed) since the host started,
/// from `/metrics`.
fn checkpoint_counts(setup: &Setup) -> (u64, u64) {
    let text = setup.admin_get("/metrics");
    let sum = |name: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    (
        sum("linecook_checkpoint_transactions_total "),
        sum("linecook_batches_total{"),
    )
}

/// Event-time windows whose timers fire all the time, killed at random
/// moments: every window is emitted exactly once, with its exact count,
/// and what is left in state and in pending timers is exactly the windows
/// still open.
#[test]
fn sigkill_while_timers_fire_applies_every_firing_exactly_once() {
    let seed: u64 = std::env::var("LINECOOK_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    let kills: usize = std::env::var("LINECOOK_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    eprintln!(
        "timers crash test seed {seed} ({kills} kills); reproduce with LINECOOK_CRASH_SEED={seed}"
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    const PARTITIONS: u32 = 4;
    const WINDOW: i64 = 500;
    const LATENESS: i64 = 100;
    let setup = Setup::new(
        &format!(
            r#"
max_batch = 20
[[topic]]
name = "in"
partitions = {PARTITIONS}
[[topic]]
name = "out"
partitions = 2
[[route]]
topic = "in"
plugin = "window_count"
allowed_lateness_ms = {LATENESS}
config = {{ output = "out", window_ms = {WINDOW} }}
"#
        ),
        &["window_count"],
    );
    // Key k lives on partition k % 4; timestamps rise by 7 ms a record, so
    // a window holds one or two records of a key and closes soon after.
    let keys = 40;
    let wave = 3000;
    let total = wave * (kills + 1);
    let input: Vec<(usize, i64)> = (0..total)
        .map(|i| (i % keys, 1_000_000 + 7 * i as i64))
        .collect();
    {
        let store = setup.store();
        store.create_topic("in", PARTITIONS).unwrap();
        store.create_topic("out", 2).unwrap();
    }
    let produce_wave = |n: usize| {
        let store = setup.store();
        let records: Vec<linecook::record::NewRecord> = input[n * wave..(n + 1) * wave]
            .iter()
            .map(|(k, ts)| linecook::record::NewRecord {
                timestamp_ms: Some(*ts),
                key: Some(format!("key-{k}").into_bytes()),
                value: b"x".to_vec(),
                headers: vec![],
                partition: Some(*k as u32 % PARTITIONS),
            })
            .collect();
        store.produce("in", &records).unwrap();
    };

    let mut fired_mid_stream = 0;
    for round in 0..kills {
        produce_wave(round);
        let mut host = setup.start();
        host.wait_ready();
        std::thread::sleep(Duration::from_millis(rng.random_range(0..100)));
        host.kill();
        let status = setup.status();
        let lag: u64 = status.partitions.iter().map(|p| p.lag).sum();
        let pending: u64 = status.partitions.iter().map(|p| p.timers_pending).sum();
        eprintln!("kill {round}: lag {lag}, {pending} timers pending");
        if lag > 0 && pending > 0 {
            fired_mid_stream += 1;
        }
    }
    // The model: per key, windows in order; closed once the partition's
    // final watermark reached their end.
    let mut watermark = [i64::MIN; PARTITIONS as usize];
    for (k, ts) in &input {
        let p = *k % PARTITIONS as usize;
        watermark[p] = watermark[p].max(ts - LATENESS);
    }
    let mut windows: BTreeMap<usize, BTreeMap<i64, usize>> = BTreeMap::new();
    for (k, ts) in &input {
        *windows
            .entry(*k)
            .or_default()
            .entry(ts - ts.rem_euclid(WINDOW))
            .or_default() += 1;
    }
    let mut want: BTreeMap<Option<String>, Vec<String>> = BTreeMap::new();
    let mut open = 0;
    for (k, per_window) in &windows {
        for (start, count) in per_window {
            if start + WINDOW <= watermark[*k % PARTITIONS as usize] {
                want.entry(Some(format!("key-{k}")))
                    .or_default()
                    .push(format!("key-{k}:{start}:{count}"));
            } else {
                open += 1;
            }
        }
    }
    produce_wave(kills);
    let mut host = setup.start();
    host.wait_ready();
    support::wait_until(
        Duration::from_secs(120),
        "every partition to catch up and fire its closed windows",
        || {
            let status = setup.status();
            status.partitions.iter().all(|p| p.lag == 0)
                && status
                    .partitions
                    .iter()
                    .map(|p| p.timers_pending)
                    .sum::<u64>()
                    == open as u64
        },
    );
    host.stop();

    let store = setup.store();
    let got = values_by_key(&read_all(&store, "out"));
    for (key, values) in &want {
        assert_eq!(
            got.get(key),
            Some(values),
            "windows of {key:?} differ from the model (seed {seed})"
        );
    }
    assert_eq!(got.len(), want.len(), "unexpected keys (seed {seed})");
    let input_topic = store.topic("in").unwrap();
    let mut state_entries = 0;
    let mut pending = 0;
    for p in 0..PARTITIONS {
        state_entries += store.state_entries(&input_topic, p).unwrap().len();
        pending += store.pending_timers(&input_topic, p).unwrap().timers;
    }
    assert_eq!(
        state_entries, open,
        "state holds the open windows only (seed {seed})"
    );
    assert_eq!(
        pending as usize, open,
        "one timer per open window (seed {seed})"
    );
    assert!(
        fired_mid_stream * 2 >= kills,
        "only {fired_mid_stream} of {kills} kills hit a partition in motion with timers pending (seed {seed})"
    );
}
