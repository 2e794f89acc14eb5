//! Retention of the embedded log: it removes exactly the oldest records
//! beyond the limit, keeps the log start across restarts, and a route that
//! retention passed skips exactly the removed records (`on_truncated =
//! "earliest"`) or pauses saying what is gone (`"pause"`); a route that
//! waits (the default) holds retention at its committed offset.

mod support;

use std::time::Duration;

use linecook::status::PartitionReport;
use support::{Setup, tail_values, wait_until};

const RECORDS: usize = 100;
const KEEP: u64 = 30;

fn partition(setup: &Setup, topic: &str) -> PartitionReport {
    setup
        .status()
        .partitions
        .into_iter()
        .find(|p| p.topic == topic)
        .unwrap_or_else(|| panic!("no status for {topic}"))
}

/// `topics list` as (log start, stored, bytes, records) of `topic`.
fn listed(setup: &Setup, topic: &str) -> (u64, u64, u64, u64) {
    let out = setup.cli(&["topics", "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let cols: Vec<u64> = text
        .lines()
        .find(|l| l.starts_with(&format!("{topic} ")))
        .unwrap_or_else(|| panic!("{topic} not in {text}"))
        .split_whitespace()
        .skip(2)
        .map(|c| c.parse().unwrap())
        .collect();
    (cols[0], cols[1], cols[2], cols[3])
}

fn config(record_bytes: u64, routes: bool) -> String {
    // Keep `KEEP` records and half of one more: the limit falls inside a
    // record, which must go too.
    let limit = KEEP * record_bytes + record_bytes / 2;
    let mut config = format!(
        r#"
[retention]
check_interval_ms = 50
[[topic]]
name = "early"
partitions = 1
retention_bytes = {limit}
[[topic]]
name = "stop"
partitions = 1
retention_bytes = {limit}
[[topic]]
name = "out"
partitions = 1
"#
    );
    if routes {
        config.push_str(
            r#"
[[route]]
topic = "early"
plugin = "uppercase"
config = { output = "out" }
on_truncated = "earliest"
[[route]]
topic = "stop"
plugin = "uppercase"
config = { output = "out" }
on_truncated = "pause"
"#,
        );
    }
    config
}

#[test]
fn retention_removes_exactly_the_oldest_records_and_routes_it_passed_skip_or_pause() {
    // Every record the same size, so the byte limit says how many stay.
    let setup = Setup::new("", &["uppercase"]);
    {
        let store = setup.store();
        store.create_topic("early", 1).unwrap();
        store.create_topic("stop", 1).unwrap();
    }
    let lines: Vec<String> = (0..RECORDS).map(|i| format!("rec-{i:03}")).collect();
    for topic in ["early", "stop"] {
        let records: Vec<(Option<&str>, &str)> = lines.iter().map(|l| (None, l.as_str())).collect();
        setup.produce(topic, &records);
    }
    let total_bytes = {
        let store = setup.store();
        store.stored_bytes(&store.topic("early").unwrap()).unwrap()[0]
    };
    let record_bytes = total_bytes / RECORDS as u64;
    assert_eq!(
        record_bytes * RECORDS as u64,
        total_bytes,
        "records of one size"
    );
    let removed = RECORDS as u64 - KEEP;

    // No route yet: retention alone trims both topics to the limit.
    let body = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(
        &setup.config,
        format!("{body}{}", config(record_bytes, false)),
    )
    .unwrap();
    let mut host = setup.start();
    host.wait_ready();
    wait_until(Duration::from_secs(30), "retention to trim", || {
        listed(&setup, "early").0 == removed && listed(&setup, "stop").0 == removed
    });
    assert_eq!(
        listed(&setup, "early"),
        (removed, KEEP, KEEP * record_bytes, RECORDS as u64),
        "log start, stored records, bytes, records ever appended"
    );
    host.stop();
    let early: Vec<String> = tail_values(&setup, "early");
    assert_eq!(early, lines[removed as usize..], "exactly the oldest went");

    // Routes whose checkpoints (none: offset 0) retention passed.
    std::fs::write(
        &setup.config,
        format!("{body}{}", config(record_bytes, true)),
    )
    .unwrap();
    let mut host = setup.start();
    host.wait_ready();
    wait_until(Duration::from_secs(60), "`early` to skip and drain", || {
        let p = partition(&setup, "early");
        p.committed_offset == RECORDS as u64 && p.lag == 0
    });
    let early = partition(&setup, "early");
    assert_eq!(early.log_start_offset, removed);
    assert_eq!(early.skipped_records, removed, "the skipped count is exact");
    let expected: Vec<String> = lines[removed as usize..]
        .iter()
        .map(|l| l.to_uppercase())
        .collect();
    assert_eq!(
        tail_values(&setup, "out"),
        expected,
        "only what was left handled"
    );
    let metrics = setup.admin_get("/metrics");
    assert!(
        metrics.contains(&format!(
            "linecook_skipped_records_total{{topic=\"early\",partition=\"0\",plugin=\"uppercase\"}} {removed}"
        )),
        "{metrics}"
    );
    assert!(
        setup.host_log().contains(&format!(
            "retention removed offsets 0..{removed} ({removed} records)"
        )),
        "the skip is logged"
    );

    // `stop` pauses, names what is gone, and handles nothing until reset.
    wait_until(Duration::from_secs(30), "`stop` to pause", || {
        partition(&setup, "stop").state == Some(linecook::status::PartitionState::Paused)
    });
    let stop = partition(&setup, "stop");
    let detail = stop.detail.unwrap_or_default();
    assert!(
        detail.contains(&format!(
            "retention removed offsets 0..{removed} ({removed} records)"
        )) && detail.contains("--to-earliest"),
        "{detail}"
    );
    assert_eq!((stop.committed_offset, stop.skipped_records), (0, 0));
    let out = setup.cli(&["partitions", "reset", "--topic", "stop", "--to-earliest"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(
        Duration::from_secs(60),
        "`stop` to drain after the reset",
        || {
            let p = partition(&setup, "stop");
            p.committed_offset == RECORDS as u64 && p.lag == 0
        },
    );
    assert_eq!(tail_values(&setup, "out").len(), 2 * KEEP as usize);

    // New records move the start on; a restart keeps it.
    let more: Vec<String> = (0..10).map(|i| format!("new-{i:03}")).collect();
    let out = setup.cli_with_stdin(&["produce", "--topic", "early"], &(more.join("\n") + "\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(Duration::from_secs(30), "retention to follow", || {
        listed(&setup, "early").0 == removed + 10
    });
    host.stop();
    assert_eq!(partition(&setup, "early").log_start_offset, removed + 10);
    let mut host = setup.start();
    host.wait_ready();
    assert_eq!(
        listed(&setup, "early"),
        (removed + 10, KEEP, KEEP * record_bytes, RECORDS as u64 + 10)
    );
    host.stop();
}

#[test]
fn a_route_that_waits_holds_retention_at_its_committed_offset() {
    let setup = Setup::new(
        r#"
[retention]
ms = 1
check_interval_ms = 50
[[topic]]
name = "held"
partitions = 1
[[topic]]
name = "free"
partitions = 1
[[route]]
topic = "held"
plugin = "fatal"
errors = { on_error = "pause" }
"#,
        &["fatal"],
    );
    let mut host = setup.start();
    host.wait_ready();
    for topic in ["held", "free"] {
        let out = setup.cli_with_stdin(&["produce", "--topic", topic], "a\nb\nc\n");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Retention runs (the unrouted topic empties) but leaves every record
    // the paused route has not committed.
    wait_until(Duration::from_secs(30), "retention to empty `free`", || {
        listed(&setup, "free") == (3, 0, 0, 3)
    });
    wait_until(Duration::from_secs(30), "`held` to pause", || {
        partition(&setup, "held").state == Some(linecook::status::PartitionState::Paused)
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(listed(&setup, "held").0, 0, "nothing of `held` removed");
    assert_eq!(listed(&setup, "held").1, 3);
    // Skipping them by hand lets retention remove them.
    let out = setup.cli(&["partitions", "reset", "--topic", "held", "--to-latest"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(
        Duration::from_secs(30),
        "retention to follow the route",
        || listed(&setup, "held").0 == 3,
    );
    host.stop();
}
