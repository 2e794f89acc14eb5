//! Bad handlers, bad records and a full disk: limits, the error policy with
//! dead letters, pause and resume, the sandbox. Uses the `hostile` plugin,
//! which misbehaves according to each record's value.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use linecook::client::Access;
use linecook::config::Config;
use linecook::record::{LogRecord, NewRecord};
use linecook::status::PartitionState;
use linecook::worker::dead_letter_headers as dlh;
use support::{Setup, read_all, wait_until};

/// `in` (2 partitions) → hostile → `out` (2 partitions), dead letters to `in.dlq`.
fn hostile_route(extra: &str) -> String {
    format!(
        r#"
max_batch = 10
[[topic]]
name = "in"
partitions = 2
[[topic]]
name = "out"
partitions = 2
[[route]]
topic = "in"
plugin = "hostile"
config = {{ output = "out" }}
{extra}
"#
    )
}

fn records(partition: u32, values: &[&str]) -> Vec<NewRecord> {
    values
        .iter()
        .map(|v| NewRecord {
            timestamp_ms: None,
            key: Some(format!("p{partition}").into_bytes()),
            value: v.as_bytes().to_vec(),
            headers: vec![("origin".into(), b"test".to_vec())],
            partition: Some(partition),
        })
        .collect()
}

/// Creates the topics (as `run` would) and appends records while no host runs.
fn produce_offline(setup: &Setup, batches: &[(u32, &[&str])]) {
    for (t, p) in [("in", "2"), ("out", "2")] {
        let out = setup.cli(&["topics", "create", t, "--partitions", p]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let store = setup.store();
    for (partition, values) in batches {
        store.produce("in", &records(*partition, values)).unwrap();
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn header<'a>(r: &'a LogRecord, name: &str) -> Option<&'a [u8]> {
    r.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_slice())
}

/// Outputs by source partition (the key is `p<partition>`), in log order.
fn outputs(setup: &Setup) -> BTreeMap<u32, Vec<String>> {
    let mut map: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for r in read_all(&setup.store(), "out") {
        let key = text(r.key.as_deref().unwrap_or_default());
        let partition = key
            .trim_start_matches('p')
            .parse()
            .expect("key p<partition>");
        map.entry(partition).or_default().push(text(&r.value));
    }
    map
}

fn wait_lag_zero(setup: &Setup) {
    wait_until(
        Duration::from_secs(60),
        "every partition to catch up",
        || setup.status().partitions.iter().all(|p| p.lag == 0),
    );
}

#[test]
fn an_endless_loop_is_interrupted_dead_lettered_and_other_partitions_go_on() {
    let setup = Setup::new(
        &hostile_route(
            "limits = { cpu_ms = 300 }\nerrors = { retries = 3, backoff_base_ms = 200, backoff_max_ms = 200 }",
        ),
        &["hostile"],
    );
    produce_offline(
        &setup,
        &[(0, &["a0", "a1", "loop", "a3", "a4"]), (1, &["b0", "b1"])],
    );
    let mut host = setup.start();
    host.wait_ready();
    wait_until(
        Duration::from_secs(30),
        "the loop to be interrupted",
        || {
            let s = setup.status();
            let p0 = &s.partitions[0];
            p0.state == Some(PartitionState::Retrying)
                && p0
                    .detail
                    .as_deref()
                    .is_some_and(|d| d.contains("CPU time limit exceeded"))
        },
    );
    // While partition 0 is stuck on the loop, partition 1 keeps moving.
    let access = Access::connect(&Config::load(&setup.config).unwrap()).unwrap();
    access
        .produce("in", records(1, &["b2", "b3", "b4"]))
        .unwrap();
    wait_until(Duration::from_secs(10), "partition 1 to progress", || {
        setup.status().partitions[1].committed_offset == 5
    });
    let p0 = setup.status().partitions[0].clone();
    assert!(
        p0.committed_offset <= 2,
        "partition 1 progressed while partition 0 was still on the loop record: {p0:?}"
    );
    wait_lag_zero(&setup);
    host.stop();

    let out = outputs(&setup);
    assert_eq!(out[&0], ["ok:a0", "ok:a1", "ok:a3", "ok:a4"]);
    assert_eq!(out[&1], ["ok:b0", "ok:b1", "ok:b2", "ok:b3", "ok:b4"]);
    let dlq = read_all(&setup.store(), "in.dlq");
    assert_eq!(dlq.len(), 1, "one dead letter");
    let dead = &dlq[0];
    assert_eq!(dead.value, b"loop");
    assert_eq!(dead.key.as_deref(), Some(&b"p0"[..]));
    assert_eq!(
        header(dead, "origin"),
        Some(&b"test"[..]),
        "original headers kept"
    );
    assert_eq!(header(dead, dlh::TOPIC), Some(&b"in"[..]));
    assert_eq!(header(dead, dlh::PARTITION), Some(&b"0"[..]));
    assert_eq!(header(dead, dlh::OFFSET), Some(&b"2"[..]));
    assert_eq!(header(dead, dlh::PLUGIN), Some(&b"hostile"[..]));
    assert_eq!(header(dead, dlh::VERSION).map(<[u8]>::len), Some(64));
    assert_eq!(header(dead, dlh::ERROR_KIND), Some(&b"limit"[..]));
    let message = text(header(dead, dlh::ERROR_MESSAGE).unwrap());
    assert!(message.contains("CPU time limit exceeded"), "{message}");
    assert!(message.contains("ms over the limit of"), "{message}");
}

#[test]
fn unbounded_allocation_is_stopped_at_the_memory_limit() {
    let setup = Setup::new(
        &hostile_route(
            "limits = { memory_mib = 32 }\nerrors = { retries = 1, backoff_base_ms = 10 }",
        ),
        &["hostile"],
    );
    produce_offline(&setup, &[(0, &["x", "eat", "y"])]);
    let mut host = setup.start();
    host.wait_ready();
    wait_lag_zero(&setup);
    let peak_kib = peak_rss_kib(host.pid());
    host.stop();

    assert_eq!(outputs(&setup)[&0], ["ok:x", "ok:y"]);
    let dlq = read_all(&setup.store(), "in.dlq");
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].value, b"eat");
    let message = text(header(&dlq[0], dlh::ERROR_MESSAGE).unwrap());
    assert!(message.contains("memory limit exceeded"), "{message}");
    // Exact bytes: the attempted size and the excess over the limit.
    let limit = 32u64 << 20;
    assert!(
        message.contains(&format!("over the limit of {limit} bytes (32 MiB)")),
        "{message}"
    );
    let numbers: Vec<u64> = message
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    let (desired, excess) = (numbers[1], numbers[2]);
    assert!(desired > limit, "{message}");
    assert_eq!(excess, desired - limit, "{message}");
    // The guest asked for memory without end; the host stayed small.
    assert!(peak_kib < 400 * 1024, "host peak RSS {peak_kib} KiB");
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

#[test]
fn poison_traps_and_floods_dead_letter_exactly_those_records() {
    let setup = Setup::new(
        &hostile_route(
            "limits = { max_outputs = 100 }\nerrors = { retries = 1, backoff_base_ms = 10 }",
        ),
        &["hostile"],
    );
    produce_offline(
        &setup,
        &[(
            0,
            &["r0", "r1", "poison", "r3", "trap", "r5", "flood", "r7"],
        )],
    );
    let mut host = setup.start();
    host.wait_ready();
    wait_lag_zero(&setup);
    let status = setup.status();
    assert_eq!(status.partitions[0].dead_letters, 3);
    host.stop();

    assert_eq!(
        outputs(&setup)[&0],
        ["ok:r0", "ok:r1", "ok:r3", "ok:r5", "ok:r7"]
    );
    let dlq = read_all(&setup.store(), "in.dlq");
    let dead: Vec<(String, String, String)> = dlq
        .iter()
        .map(|r| {
            (
                text(&r.value),
                text(header(r, dlh::OFFSET).unwrap()),
                text(header(r, dlh::ERROR_KIND).unwrap()),
            )
        })
        .collect();
    assert_eq!(
        dead,
        [
            ("poison".into(), "2".into(), "poison".into()),
            ("trap".into(), "4".into(), "trap".into()),
            ("flood".into(), "6".into(), "limit".into()),
        ]
    );
    let flood = text(header(&dlq[2], dlh::ERROR_MESSAGE).unwrap());
    assert!(flood.contains("output limit exceeded"), "{flood}");
    // A trap is one line in the guest's own words, not a wasm backtrace.
    let trap = text(header(&dlq[1], dlh::ERROR_MESSAGE).unwrap());
    assert!(
        trap.contains("hostile traps on purpose")
            && trap.contains("unreachable")
            && !trap.contains('\n')
            && !trap.contains("wasm function"),
        "{trap}"
    );
    let store = setup.store();
    let input = store.topic("in").unwrap();
    assert_eq!(store.checkpoint(&input, 0).unwrap().unwrap().next_offset, 8);
}

#[test]
fn a_paused_partition_resumes_on_request() {
    let setup = Setup::new(
        &hostile_route("errors = { on_error = \"pause\", retries = 0 }"),
        &["hostile"],
    );
    produce_offline(&setup, &[(0, &["a", "retry-once", "b"]), (1, &["c"])]);
    let mut host = setup.start();
    host.wait_ready();
    wait_until(Duration::from_secs(30), "partition 0 to pause", || {
        let s = setup.status();
        s.partitions[0].state == Some(PartitionState::Paused) && s.partitions[1].lag == 0
    });
    let paused = setup.status().partitions[0].clone();
    assert!(
        paused
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("hostile wants one more try")),
        "{paused:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        setup.status().partitions[0].committed_offset,
        0,
        "a paused partition stays put"
    );

    let out = setup.cli(&["partitions", "resume", "--topic", "in", "--partition", "0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_lag_zero(&setup);
    // Partition 1 never paused: resuming it says so and changes nothing.
    let out = setup.cli(&["partitions", "resume", "--topic", "in", "--partition", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("in/1 is running, not paused: nothing to resume"),
        "{stderr}"
    );
    host.stop();
    assert_eq!(outputs(&setup)[&0], ["ok:a", "ok:retry-once", "ok:b"]);
    assert!(read_all(&setup.store(), "in.dlq").is_empty());
}

#[test]
fn sandbox_escapes_fail_inside_the_guest() {
    let setup = Setup::new(&hostile_route(""), &["hostile"]);
    produce_offline(&setup, &[(0, &["escape"])]);
    let mut host = setup.start();
    host.wait_ready();
    wait_lag_zero(&setup);
    host.stop();
    let report = outputs(&setup)[&0][0].clone();
    for denied in ["fs=denied(", "file=denied(", "env=denied(", "net=denied("] {
        assert!(report.contains(denied), "{denied} missing from: {report}");
    }
    assert!(report.contains("vars=0"), "{report}");
    assert!(report.contains("args=0"), "{report}");
}

#[test]
fn guest_stdout_and_stderr_become_rate_limited_log_lines() {
    let setup = Setup::new(&hostile_route(""), &["hostile"]);
    produce_offline(&setup, &[(0, &["print", "spam"])]);
    let mut host = setup.start();
    host.wait_ready();
    wait_lag_zero(&setup);
    host.stop();
    let log = setup.host_log();
    let line = |needle: &str| log.lines().find(|l| l.contains(needle)).map(str::to_owned);
    let stdout = line("hostile says hello on stdout").expect("stdout reaches the log");
    assert!(
        stdout.contains("stdout") && stdout.contains("hostile"),
        "{stdout}"
    );
    assert!(
        line("hostile says hello on stderr").is_some(),
        "stderr reaches the log"
    );
    let spam = log.lines().filter(|l| l.contains("spam line")).count();
    // The burst gets through, the rest is cut by the rate limit.
    assert!(
        (50..=200).contains(&spam),
        "10000 lines printed, {spam} logged"
    );
}

#[test]
fn a_full_disk_stops_work_without_corruption_and_a_restart_continues() {
    let setup = Setup::new(&hostile_route("errors = { retries = 0 }"), &["hostile"]);
    let data = setup.data_dir();
    std::fs::create_dir_all(&data).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(&data)
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        mounted,
        "this test needs to mount a 24 MiB tmpfs (run as root); it cannot fake a full disk"
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(data.clone());

    // A first run compiles the plugin into the cache while there is room.
    let mut host = setup.start();
    host.wait_ready();
    host.stop();

    let value = "v".repeat(1000);
    let values: Vec<String> = (0..3000).map(|i| format!("{i:05}{value}")).collect();
    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
    produce_offline(&setup, &[(0, &refs[..1500]), (1, &refs[1500..])]);
    // Leave the host almost no room: its outputs cannot all fit.
    let filler = data.join("filler");
    fill(&filler, 300 * 1024);

    let mut host = setup.start();
    host.wait_ready();
    wait_until(
        Duration::from_secs(60),
        "the full disk to stop the work",
        || {
            setup.status().partitions.iter().any(|p| {
                p.state == Some(PartitionState::Retrying)
                    && p.detail
                        .as_deref()
                        .is_some_and(|d| d.contains("checkpoint failed"))
            })
        },
    );
    let stuck = setup.status();
    assert!(
        stuck.partitions.iter().any(|p| p.lag > 0),
        "work stopped short: {stuck:?}"
    );
    host.stop();

    std::fs::remove_file(&filler).unwrap();
    let mut host = setup.start();
    host.wait_ready();
    wait_lag_zero(&setup);
    host.stop();

    let out = outputs(&setup);
    let expect = |range: std::ops::Range<usize>| -> Vec<String> {
        values[range].iter().map(|v| format!("ok:{v}")).collect()
    };
    assert_eq!(
        out[&0],
        expect(0..1500),
        "partition 0: every output exactly once, in order"
    );
    assert_eq!(
        out[&1],
        expect(1500..3000),
        "partition 1: every output exactly once, in order"
    );
}

/// Writes zeros to `path` until the filesystem has at most `leave` bytes free.
fn fill(path: &std::path::Path, leave: u64) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    loop {
        let free = free_bytes(path.parent().unwrap());
        if free <= leave + chunk.len() as u64 {
            break;
        }
        if file.write_all(&chunk).is_err() {
            break;
        }
    }
    file.sync_all().unwrap();
}

fn free_bytes(dir: &std::path::Path) -> u64 {
    let out = std::process::Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap()
}

#[test]
fn a_fixed_dead_letter_is_replayed_exactly_once() {
    let setup = Setup::new(
        &hostile_route("errors = { retries = 0, dead_letter_partitions = 2 }"),
        &["hostile"],
    );
    produce_offline(&setup, &[(0, &["r0", "trap", "r2"])]);
    let mut host = setup.start();
    host.wait_ready();
    wait_lag_zero(&setup);

    // The operator sees the letter, where it came from and why.
    let out = setup.cli(&["dlq", "list", "--topic", "in"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = table.lines().nth(1).unwrap_or_default();
    for cell in ["0/1", "trap", "hostile", "hostile traps on purpose"] {
        assert!(row.contains(cell), "`{cell}` missing from: {table}");
    }

    // The fix: a version that handles the record (uppercase, same `output`).
    let fixed = std::fs::read(support::plugins().join("uppercase.wasm")).unwrap();
    let tmp = setup.dir.path().join("plugins/hostile.wasm.partial");
    std::fs::write(&tmp, &fixed).unwrap();
    std::fs::rename(&tmp, setup.dir.path().join("plugins/hostile.wasm")).unwrap();
    let digest = linecook::plugins::digest(&fixed);
    wait_until(Duration::from_secs(60), "the fixed version to run", || {
        setup
            .status()
            .partitions
            .iter()
            .all(|p| p.version.as_deref() == Some(digest.as_str()))
    });

    let dry = setup.cli(&[
        "dlq",
        "replay",
        "--topic",
        "in",
        "--where",
        "kind=trap",
        "--dry-run",
    ]);
    assert!(
        String::from_utf8_lossy(&dry.stdout).contains("in.dlq/"),
        "{dry:?}"
    );
    let out = setup.cli(&["dlq", "replay", "--topic", "in", "--where", "kind=trap"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = setup.cli(&["dlq", "replay", "--topic", "in.dlq"]);
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(
        said.contains("replayed 0 dead letter(s)") && said.contains("1 replayed before"),
        "{said}"
    );
    wait_until(
        Duration::from_secs(30),
        "the replayed record to be handled",
        || setup.status().partitions[0].committed_offset == 4,
    );
    host.stop();
    assert_eq!(
        outputs(&setup)[&0],
        ["ok:r0", "ok:r2", "TRAP"],
        "once, by the fixed version"
    );
    let store = setup.store();
    assert_eq!(store.topic("in.dlq").unwrap().partitions, 2);
    let list = store.dead_letters("in.dlq").unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        list[0].replayed_to.as_ref().map(|t| t.0.as_str()),
        Some("in")
    );
}
