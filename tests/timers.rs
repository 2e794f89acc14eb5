//! Time in handlers (contract 0.2.0): event-time windows with a watermark
//! and late records, processing-time sessions, timers across a hot swap,
//! and 0.1.0 and 0.2.0 components side by side — real components built from
//! `plugins/`, a real `linecook run`, real redb files.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use linecook::record::LogRecord;
use linecook::record::NewRecord;
use support::{Setup, read_all, tail_values, wait_until};

/// Appends `(key, timestamp, value)` records to partition 0 of `topic`
/// while no host runs.
fn produce_at(setup: &Setup, topic: &str, records: &[(&str, i64, &str)]) {
    let store = setup.store();
    // The host creates the config's topics when it starts; these come first.
    for name in ["in", "out"] {
        store.create_topic(name, 1).unwrap();
    }
    let records: Vec<NewRecord> = records
        .iter()
        .map(|(k, ts, v)| NewRecord {
            timestamp_ms: Some(*ts),
            key: Some(k.as_bytes().to_vec()),
            value: v.as_bytes().to_vec(),
            headers: vec![],
            partition: Some(0),
        })
        .collect();
    store.produce(topic, &records).unwrap();
}

/// `linecook produce` of `lines` (`key:value` each) into topic `keys`,
/// through the running host.
fn produce_keys(setup: &Setup, lines: &str) {
    let out = setup.cli_with_stdin(
        &["produce", "--topic", "keys", "--key-separator", ":"],
        lines,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn values(records: &[LogRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect()
}

fn window_count_config(late: &str) -> String {
    format!(
        r#"
max_batch = 3
[[topic]]
name = "in"
partitions = 1
[[topic]]
name = "out"
partitions = 1
[[route]]
topic = "in"
plugin = "window_count"
allowed_lateness_ms = 500
config = {{ output = "out", window_ms = 1000, late = "{late}" }}
"#
    )
}

/// (key, timestamp): with windows of 1 s and a lateness of 500 ms, the
/// watermark after each record is in the comment.
const EVENTS: &[(&str, i64)] = &[
    ("a", 1000), // wm 500
    ("a", 1500), // wm 1000
    ("b", 1200), // wm 1000
    ("a", 2100), // wm 1600
    ("b", 1900), // wm 1600: window 1000..2000 still open
    ("a", 2600), // wm 2100: closes 1000..2000
    ("b", 1800), // late: its window closed at wm 2100
    ("a", 3700), // wm 3200: closes 2000..3000
    ("b", 2500), // late
    ("c", 9000), // wm 8500: closes 3000..4000
];

fn produce_events(setup: &Setup) {
    let records: Vec<(&str, i64, &str)> = EVENTS.iter().map(|(k, ts)| (*k, *ts, "x")).collect();
    produce_at(setup, "in", &records);
}

#[test]
fn window_count_emits_exact_windows_and_dead_letters_late_records() {
    exact_windows(&support::plugins().join("window_count.wasm"));
}

#[test]
fn window_count_in_python_gives_the_same_windows() {
    exact_windows(support::python_window_count());
}

#[test]
fn window_count_in_c_gives_the_same_windows() {
    exact_windows(&support::c_plugins().join("window-count.wasm"));
}

#[test]
fn window_count_in_javascript_gives_the_same_windows() {
    exact_windows(&support::js_plugins().join("window-count.wasm"));
}

#[test]
fn window_count_in_zig_gives_the_same_windows() {
    exact_windows(&support::zig_plugins().join("window-count.wasm"));
}

#[test]
fn window_count_in_assemblyscript_gives_the_same_windows() {
    exact_windows(&support::assemblyscript_plugins().join("window-count.wasm"));
}

#[test]
fn window_count_in_go_gives_the_same_windows() {
    exact_windows(&support::go_plugins().join("window-count.wasm"));
}

/// Runs `window-count` built at `wasm` over `EVENTS` and checks every
/// output, letter and state entry.
fn exact_windows(wasm: &std::path::Path) {
    let setup = Setup::new(&window_count_config("dead-letter"), &[]);
    std::fs::copy(wasm, setup.dir.path().join("plugins/window_count.wasm")).unwrap();
    produce_events(&setup);
    let mut host = setup.start();
    host.wait_ready();
    wait_until(
        Duration::from_secs(60),
        "three windows and two letters",
        || {
            let store_view = setup.status();
            store_view.partitions.iter().all(|p| p.lag == 0)
                && store_view
                    .partitions
                    .iter()
                    .map(|p| p.dead_letters)
                    .sum::<u64>()
                    == 2
                && setup
                    .status()
                    .partitions
                    .iter()
                    .all(|p| p.timers_pending == 1)
        },
    );
    let status = setup.status();
    let p = &status.partitions[0];
    assert_eq!(p.contract.as_deref(), Some("0.2.0"));
    assert_eq!(p.watermark_ms, Some(8500));
    assert_eq!(p.timers_fired, 4);
    host.stop();

    let store = setup.store();
    let out = read_all(&store, "out");
    assert_eq!(
        values(&out),
        ["a:1000:2", "b:1000:2", "a:2000:2", "a:3000:1"]
    );
    // Each output carries its window's end as its timestamp.
    let stamps: Vec<i64> = out.iter().map(|r| r.timestamp_ms).collect();
    assert_eq!(stamps, [2000, 2000, 3000, 4000]);
    let letters = read_all(&store, "in.dlq");
    let late: Vec<(String, i64)> = letters
        .iter()
        .map(|r| {
            (
                String::from_utf8_lossy(r.key.as_deref().unwrap()).into_owned(),
                r.timestamp_ms,
            )
        })
        .collect();
    assert_eq!(late.len(), 2, "{late:?}");
    let reasons: Vec<String> = letters
        .iter()
        .filter_map(|r| {
            let (_, v) = r
                .headers
                .iter()
                .find(|(k, _)| k == "linecook.error.message")?;
            let text = String::from_utf8_lossy(v);
            Some(text[text.find("late:")?..].to_owned())
        })
        .collect();
    assert_eq!(
        reasons,
        [
            "late: window 1000..2000 closed at watermark 2100",
            "late: window 2000..3000 closed at watermark 3200"
        ]
    );
    // The source offsets of the late records: 6 (b@1800) and 8 (b@2500).
    let offsets: BTreeSet<String> = letters
        .iter()
        .filter_map(|r| {
            r.headers
                .iter()
                .find(|(k, _)| k == "linecook.source.offset")
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        })
        .collect();
    assert_eq!(offsets, BTreeSet::from(["6".to_owned(), "8".to_owned()]));
    // Only the open window of `c` is left in state; closed ones were deleted.
    let input = store.topic("in").unwrap();
    let state = store.state_entries(&input, 0).unwrap();
    assert_eq!(state.len(), 1, "{state:?}");
    assert!(state[0].0.starts_with(b"wc"));
    assert_eq!(state[0].1, b"1");
}

#[test]
fn window_count_can_drop_late_records_and_count_them() {
    let setup = Setup::new(&window_count_config("drop"), &["window_count"]);
    produce_events(&setup);
    let mut host = setup.start();
    host.wait_ready();
    wait_until(Duration::from_secs(60), "four windows", || {
        setup.status().partitions.iter().all(|p| p.lag == 0)
            && tail_values(&setup, "out").len() >= 4
    });
    host.stop();
    let store = setup.store();
    assert_eq!(
        values(&read_all(&store, "out")),
        ["a:1000:2", "b:1000:2", "a:2000:2", "a:3000:1"]
    );
    assert!(read_all(&store, "in.dlq").is_empty());
    let input = store.topic("in").unwrap();
    let state = store.state_entries(&input, 0).unwrap();
    assert!(
        state.contains(&(b"late".to_vec(), b"2".to_vec())),
        "{state:?}"
    );
}

/// Appends records with timestamps through `linecook produce --format json`
/// while the host runs.
fn produce_json(setup: &Setup, topic: &str, records: &[(&str, i64)]) {
    let lines: String = records
        .iter()
        .map(|(k, ts)| format!("{{\"key\":\"{k}\",\"value\":\"x\",\"timestamp_ms\":{ts}}}\n"))
        .collect();
    let out = setup.cli_with_stdin(&["produce", "--topic", topic, "--format", "json"], &lines);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn partition_status(setup: &Setup) -> linecook::status::PartitionReport {
    setup.status().partitions.remove(0)
}

/// `linecook_timers_pending` of the one partition, as `/metrics` shows it.
fn timers_pending_metric(setup: &Setup) -> Option<f64> {
    let addr = std::fs::read_to_string(setup.data_dir().join("admin.addr")).ok()?;
    let text = ureq::get(format!("http://{}/metrics", addr.trim()))
        .call()
        .ok()?
        .body_mut()
        .read_to_string()
        .ok()?;
    text.lines()
        .find(|l| l.starts_with("linecook_timers_pending{"))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

#[test]
fn pending_timers_fire_once_in_the_new_version_after_a_swap_and_a_restart() {
    let setup = Setup::new(&window_count_config("dead-letter"), &["window_count"]);
    produce_at(&setup, "in", &[("a", 1000, "x"), ("b", 1200, "x")]);
    let mut host = setup.start();
    host.wait_ready();
    wait_until(Duration::from_secs(60), "two pending windows", || {
        let p = partition_status(&setup);
        p.lag == 0 && p.timers_pending == 2
    });
    let old = partition_status(&setup).version.unwrap();

    // A new version of the same code: the swap happens with both windows
    // open, and they fire there.
    let bytes = std::fs::read(support::plugins().join("window_count.wasm")).unwrap();
    let new_bytes = support::with_custom_section(&bytes, 1);
    let new = linecook::plugins::digest(&new_bytes);
    let tmp = setup.dir.path().join("plugins/window_count.wasm.partial");
    std::fs::write(&tmp, &new_bytes).unwrap();
    std::fs::rename(&tmp, setup.dir.path().join("plugins/window_count.wasm")).unwrap();
    wait_until(Duration::from_secs(60), "the new version to run", || {
        partition_status(&setup).version.as_deref() == Some(new.as_str())
    });
    assert_ne!(old, new);
    assert_eq!(partition_status(&setup).timers_pending, 2);
    assert_eq!(
        timers_pending_metric(&setup),
        Some(2.0),
        "the gauge keeps its count through the swap"
    );
    produce_json(&setup, "in", &[("c", 5000)]);
    wait_until(Duration::from_secs(60), "the two windows", || {
        tail_values(&setup, "out").len() >= 2 && partition_status(&setup).timers_pending == 1
    });
    host.stop();

    // c's window is pending across a restart and fires once after it.
    let mut host = setup.start();
    host.wait_ready();
    assert_eq!(partition_status(&setup).timers_pending, 1);
    // Counted when the partition starts, before any record arrives.
    wait_until(
        Duration::from_secs(30),
        "the gauge to count c's window",
        || timers_pending_metric(&setup) == Some(1.0),
    );
    produce_json(&setup, "in", &[("d", 9000)]);
    wait_until(Duration::from_secs(60), "c's window", || {
        tail_values(&setup, "out").len() >= 3 && partition_status(&setup).timers_pending == 1
    });
    host.stop();

    let store = setup.store();
    assert_eq!(
        values(&read_all(&store, "out")),
        ["a:1000:1", "b:1000:1", "c:5000:1"]
    );
    let input = store.topic("in").unwrap();
    let checkpoint = store.checkpoint(&input, 0).unwrap().unwrap();
    assert_eq!(
        checkpoint.version, new,
        "the firings were the new version's"
    );
    assert_eq!(checkpoint.next_offset, 4);
}

#[test]
fn session_windows_close_after_a_processing_time_gap() {
    let setup = Setup::new(
        r#"
max_batch = 100
[[topic]]
name = "in"
partitions = 1
[[topic]]
name = "out"
partitions = 1
[[route]]
topic = "in"
plugin = "session"
config = { output = "out", gap_ms = 300 }
"#,
        &["session"],
    );
    produce_at(
        &setup,
        "in",
        &[
            ("k1", 10, "x"),
            ("k1", 30, "x"),
            ("k2", 40, "x"),
            ("k1", 20, "x"),
        ],
    );
    let mut host = setup.start();
    host.wait_ready();
    wait_until(Duration::from_secs(30), "both sessions to close", || {
        tail_values(&setup, "out").len() >= 2
    });
    let closed: BTreeSet<String> = tail_values(&setup, "out").into_iter().collect();
    assert_eq!(
        closed,
        BTreeSet::from(["k1:3:10:30".to_owned(), "k2:1:40:40".to_owned()])
    );
    // A new record opens a new session, which closes on its own.
    produce_json(&setup, "in", &[("k1", 77)]);
    wait_until(Duration::from_secs(30), "the next session to close", || {
        tail_values(&setup, "out").len() >= 3
    });
    assert_eq!(tail_values(&setup, "out")[2], "k1:1:77:77");
    let p = partition_status(&setup);
    assert_eq!((p.timers_pending, p.timers_fired), (0, 3));
    host.stop();
    let store = setup.store();
    let input = store.topic("in").unwrap();
    assert!(store.state_entries(&input, 0).unwrap().is_empty());
    assert_eq!(read_all(&store, "out").len(), 3);
}

#[test]
fn contracts_0_1_and_0_2_run_side_by_side_and_a_swap_between_them_keeps_state() {
    let c = support::c_plugins();
    let setup = Setup::new(
        r#"
[[topic]]
name = "keys"
partitions = 1
[[topic]]
name = "words"
partitions = 1
[[topic]]
name = "counts"
partitions = 1
[[topic]]
name = "upper"
partitions = 1
[[route]]
topic = "keys"
plugin = "counter"
config = { output = "counts" }
[[route]]
topic = "words"
plugin = "uppercase"
config = { output = "upper" }
"#,
        &["uppercase"],
    );
    // counter is the C build: contract 0.1.0.
    std::fs::copy(
        c.join("counter.wasm"),
        setup.dir.path().join("plugins/counter.wasm"),
    )
    .unwrap();
    for name in ["keys", "words", "counts", "upper"] {
        setup.store().create_topic(name, 1).unwrap();
    }
    setup.produce("keys", &[(Some("a"), "1"), (Some("a"), "2")]);
    setup.produce("words", &[(None, "hi")]);
    let mut host = setup.start();
    host.wait_ready();
    wait_until(Duration::from_secs(60), "both routes", || {
        tail_values(&setup, "counts").len() == 2 && tail_values(&setup, "upper").len() == 1
    });
    let contracts = |setup: &Setup| -> Vec<(String, Option<String>)> {
        setup
            .status()
            .partitions
            .into_iter()
            .map(|p| (p.topic, p.contract))
            .collect()
    };
    assert_eq!(
        contracts(&setup),
        [
            ("keys".to_owned(), Some("0.1.0".to_owned())),
            ("words".to_owned(), Some("0.2.0".to_owned()))
        ]
    );
    let list = setup.cli(&["plugins", "list"]);
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.contains("contract 0.1.0") && list.contains("contract 0.2.0"),
        "{list}"
    );

    // The Rust counter (0.2.0) replaces the C one and goes on counting.
    let tmp = setup.dir.path().join("plugins/counter.wasm.partial");
    std::fs::copy(support::plugins().join("counter.wasm"), &tmp).unwrap();
    std::fs::rename(&tmp, setup.dir.path().join("plugins/counter.wasm")).unwrap();
    wait_until(Duration::from_secs(60), "the 0.2.0 counter to run", || {
        contracts(&setup)[0].1.as_deref() == Some("0.2.0")
    });
    produce_keys(&setup, "a:3\n");
    wait_until(Duration::from_secs(60), "the third count", || {
        tail_values(&setup, "counts").len() == 3
    });
    assert_eq!(tail_values(&setup, "counts"), ["a:1", "a:2", "a:3"]);
    host.stop();
}

/// `counter` on `keys` (`partitions` partitions) into `counts`, its state
/// forgotten `ttl_ms` after each write.
fn counter_with_ttl(partitions: u32, ttl_ms: u64) -> String {
    format!(
        r#"
[[topic]]
name = "keys"
partitions = {partitions}
[[topic]]
name = "counts"
partitions = 1
[[route]]
topic = "keys"
plugin = "counter"
state_ttl_ms = {ttl_ms}
config = {{ output = "counts" }}
"#
    )
}

#[test]
fn state_written_under_a_route_ttl_is_forgotten_after_it() {
    // The C counter, contract 0.1.0: the route's TTL applies to any plain
    // `state.set`, whatever the contract.
    let c = support::c_plugins();
    let setup = Setup::new(&counter_with_ttl(1, 1500), &[]);
    std::fs::copy(
        c.join("counter.wasm"),
        setup.dir.path().join("plugins/counter.wasm"),
    )
    .unwrap();
    let mut host = setup.start();
    host.wait_ready();
    let produce = |line: &str| produce_keys(&setup, &format!("{line}\n"));
    produce("a:1");
    produce("a:2");
    wait_until(Duration::from_secs(30), "two counts", || {
        tail_values(&setup, "counts").len() == 2
    });
    // Within the TTL the count goes on; each write restarts it.
    produce("a:3");
    wait_until(Duration::from_secs(30), "three counts", || {
        tail_values(&setup, "counts").len() == 3
    });
    std::thread::sleep(Duration::from_millis(2500));
    produce("a:4");
    wait_until(Duration::from_secs(30), "four counts", || {
        tail_values(&setup, "counts").len() == 4
    });
    host.stop();
    assert_eq!(
        values(&read_all(&setup.store(), "counts")),
        ["a:1", "a:2", "a:3", "a:1"]
    );
}

#[test]
fn an_idle_partition_removes_its_expired_state_from_disk() {
    // Expired entries are hidden at once; removing them from the file is
    // the sweep's work, which an idle partition must still do.
    let setup = Setup::new(&counter_with_ttl(2, 200), &["counter"]);
    let mut host = setup.start();
    host.wait_ready();
    // Idle a while first, as between bursts: the host has looked for
    // expired state before any was written.
    std::thread::sleep(Duration::from_secs(2));
    produce_keys(&setup, "a:1\nb:1\nc:1\n");
    wait_until(Duration::from_secs(30), "three counts", || {
        tail_values(&setup, "counts").len() == 3
    });
    // Expired 200 ms after their commit; swept within a second after that.
    std::thread::sleep(Duration::from_secs(4));
    host.stop();
    use linecook::checkpoint::StateReader;
    let store = setup.store();
    let keys = store.topic("keys").unwrap();
    for partition in 0..2 {
        // As of the earliest time: what is on disk, expired or not.
        let on_disk = store
            .partition_state_at(&keys, partition, i64::MIN)
            .unwrap()
            .scan(b"", None, usize::MAX)
            .unwrap();
        assert!(on_disk.is_empty(), "partition {partition} kept {on_disk:?}");
    }
}

#[test]
fn a_ttl_of_zero_is_refused() {
    for (source, ttl, error) in [
        ("", "0", "`state_ttl_ms` is 0"),
        (
            "[source]\nkind = \"kafka\"\nbrokers = \"127.0.0.1:1\"\n",
            "0",
            "`state_ttl_ms` is 0",
        ),
    ] {
        let setup = Setup::new(
            &format!(
                "{source}[[route]]\ntopic = \"keys\"\nplugin = \"counter\"\nstate_ttl_ms = {ttl}\nconfig = {{ output = \"counts\" }}\n"
            ),
            &["counter"],
        );
        let out = setup.cli(&["run"]);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(error), "{stderr}");
    }
}
