//! End-to-end behaviour of the embedded host: real components built from
//! `plugins/`, the real `linecook` binary, real redb files.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use linecook::status::PartitionState;
use support::{Setup, read_all, values_by_key, wait_drained, wait_until};

const PIPELINE: &str = r#"
max_batch = 50
[[topic]]
name = "words"
partitions = 3
[[topic]]
name = "shouted"
partitions = 3
[[topic]]
name = "counts"
partitions = 2
[[route]]
topic = "words"
plugin = "uppercase"
config = { output = "shouted" }
[[route]]
topic = "shouted"
plugin = "counter"
config = { output = "counts" }
"#;

/// `n` records over `keys` keys: ("key-<k>", "value <i> of key-<k>").
fn keyed_input(n: usize, keys: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            let k = i % keys;
            (format!("key-{k}"), format!("value {i} of key-{k}"))
        })
        .collect()
}

fn produce_keyed(setup: &Setup, topic: &str, input: &[(String, String)]) {
    let records: Vec<(Option<&str>, &str)> = input
        .iter()
        .map(|(k, v)| (Some(k.as_str()), v.as_str()))
        .collect();
    setup.produce(topic, &records);
}

/// Values per key, in order.
type ByKey = BTreeMap<Option<String>, Vec<String>>;

/// What `uppercase` then `counter` must produce for `input`, per key in order.
fn expected_pipeline(input: &[(String, String)]) -> (ByKey, ByKey) {
    let mut shouted = ByKey::new();
    let mut counts = ByKey::new();
    for (k, v) in input {
        shouted
            .entry(Some(k.clone()))
            .or_default()
            .push(v.to_ascii_uppercase());
        let seen = counts.entry(Some(k.clone())).or_default();
        seen.push(format!("{k}:{}", seen.len() + 1));
    }
    (shouted, counts)
}

fn start_pipeline(input_len: usize) -> (Setup, Vec<(String, String)>) {
    let setup = Setup::new(PIPELINE, &["uppercase", "counter"]);
    // The config's [[topic]]s are created by `run`; create them first so the
    // input can be written before the host starts.
    for (t, p) in [("words", "3"), ("shouted", "3"), ("counts", "2")] {
        let out = setup.cli(&["topics", "create", t, "--partitions", p]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let input = keyed_input(input_len, 7);
    produce_keyed(&setup, "words", &input);
    (setup, input)
}

#[test]
fn uppercase_then_counter_produce_exact_outputs_in_key_order() {
    let (setup, input) = start_pipeline(600);
    let mut host = setup.start();
    host.wait_ready();
    wait_drained(&setup, "counts", input.len() as u64);
    host.stop();

    let store = setup.store();
    let (want_shouted, want_counts) = expected_pipeline(&input);
    let shouted = read_all(&store, "shouted");
    assert_eq!(values_by_key(&shouted), want_shouted);
    let counts = read_all(&store, "counts");
    assert_eq!(values_by_key(&counts), want_counts);

    // Each key stays on the partition Kafka's partitioner gives it.
    for r in shouted.iter().chain(&counts) {
        let parts = if counts.contains(r) { 2 } else { 3 };
        assert_eq!(
            r.partition,
            linecook::partitioner::partition_for_key(r.key.as_deref().unwrap(), parts)
        );
    }

    // Counter state is exact per key, and checkpoints record the version.
    let shouted_topic = store.topic("shouted").unwrap();
    let mut state = BTreeMap::new();
    for p in 0..3 {
        for (k, v) in store.state_entries(&shouted_topic, p).unwrap() {
            state.insert(String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap());
        }
        let cp = store.checkpoint(&shouted_topic, p).unwrap().unwrap();
        assert_eq!(cp.version.len(), 64, "version is a sha-256 digest");
    }
    for (k, values) in &want_counts {
        assert_eq!(
            state.get(k.as_ref().unwrap()),
            Some(&values.len().to_string())
        );
    }
}

#[test]
fn a_batch_that_returns_retry_leaves_state_outputs_and_offset_untouched() {
    let setup = Setup::new(
        r#"
max_batch = 10
[[topic]]
name = "in"
partitions = 1
[[topic]]
name = "out"
partitions = 1
[[route]]
topic = "in"
plugin = "counter"
config = { output = "out", fail_on = "boom" }
# Enough quick retries that the batch is never halved to set "boom" aside
# while the test watches: the default (3 retries, then isolate) would commit
# "y" alone after ~0.7 s.
errors = { retries = 1000, backoff_base_ms = 50, backoff_max_ms = 50 }
"#,
        &["counter"],
    );
    let mut host = setup.start();
    host.wait_ready();
    let first: String = (0..5).map(|_| "k:x\n").collect();
    let out = setup.cli_with_stdin(
        &["produce", "--topic", "in", "--key-separator", ":"],
        &first,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(Duration::from_secs(30), "the first five records", || {
        setup.status().partitions[0].committed_offset == 5
    });

    // This batch writes state and emits for "y" before reaching "boom".
    let out = setup.cli_with_stdin(
        &["produce", "--topic", "in", "--key-separator", ":"],
        "k:y\nk:boom\nk:z\n",
    );
    assert!(out.status.success());
    wait_until(Duration::from_secs(30), "the batch to fail", || {
        let p = &setup.status().partitions[0];
        p.state == Some(PartitionState::Retrying)
            && p.detail.as_deref().is_some_and(|d| d.contains("fail_on"))
    });
    // Let it fail a few more times; nothing may leak from any attempt.
    std::thread::sleep(Duration::from_millis(500));
    let status = setup.status();
    assert_eq!(status.partitions[0].committed_offset, 5);
    assert_eq!(status.partitions[0].end_offset, 8);
    host.stop();

    let store = setup.store();
    let input = store.topic("in").unwrap();
    assert_eq!(store.checkpoint(&input, 0).unwrap().unwrap().next_offset, 5);
    assert_eq!(
        store.state_entries(&input, 0).unwrap(),
        vec![(b"k".to_vec(), b"5".to_vec())]
    );
    let outputs: Vec<String> = read_all(&store, "out")
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect();
    assert_eq!(outputs, ["k:1", "k:2", "k:3", "k:4", "k:5"]);
}

#[test]
fn a_graceful_restart_continues_from_the_checkpoint() {
    let (setup, input) = start_pipeline(3000);
    let mut host = setup.start();
    host.wait_ready();
    wait_until(Duration::from_secs(60), "some progress", || {
        setup
            .status()
            .partitions
            .iter()
            .any(|p| p.committed_offset > 0)
    });
    host.stop();
    let mid = setup.status();
    let done: u64 = mid
        .partitions
        .iter()
        .filter(|p| p.topic == "words")
        .map(|p| p.committed_offset)
        .sum();
    assert!(done > 0, "the first run committed something");

    let mut host = setup.start();
    host.wait_ready();
    wait_drained(&setup, "counts", input.len() as u64);
    host.stop();

    let store = setup.store();
    let (want_shouted, want_counts) = expected_pipeline(&input);
    assert_eq!(values_by_key(&read_all(&store, "shouted")), want_shouted);
    assert_eq!(values_by_key(&read_all(&store, "counts")), want_counts);
}

#[test]
fn produce_tail_and_status_work_while_the_host_runs() {
    let setup = Setup::new(
        r#"
[[topic]]
name = "words"
partitions = 2
[[topic]]
name = "shouted"
partitions = 2
[[route]]
topic = "words"
plugin = "uppercase"
config = { output = "shouted" }
"#,
        &["uppercase"],
    );
    let mut host = setup.start();
    host.wait_ready();
    let out = setup.cli_with_stdin(
        &["produce", "--topic", "words", "--key-separator", "="],
        "a=hello\nb=world\nno key here\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_drained(&setup, "shouted", 3);

    let out = setup.cli(&["tail", "--topic", "shouted", "--from-beginning"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut values: Vec<(serde_json::Value, String)> = lines
        .iter()
        .map(|l| (l["key"].clone(), l["value"].as_str().unwrap().to_owned()))
        .collect();
    values.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        values,
        vec![
            (serde_json::json!("a"), "HELLO".to_owned()),
            (serde_json::Value::Null, "NO KEY HERE".to_owned()),
            (serde_json::json!("b"), "WORLD".to_owned()),
        ]
    );
    let first = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap()
        .to_owned();
    assert!(
        first.starts_with("{\"topic\":\"shouted\",\"partition\":"),
        "fields in the documented order: {first}"
    );

    let out = setup.cli(&[
        "tail",
        "--topic",
        "shouted",
        "--from-beginning",
        "--max-records",
        "1",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);

    let status = setup.status();
    assert!(status.running);
    assert_eq!(status.partitions.len(), 2);
    for p in &status.partitions {
        assert_eq!(p.plugin, "uppercase");
        assert_eq!(p.state, Some(PartitionState::Running));
        assert_eq!(p.lag, 0);
    }
    host.stop();

    let status = setup.status();
    assert!(!status.running, "status works without a host too");
    assert_eq!(
        status
            .partitions
            .iter()
            .map(|p| p.committed_offset)
            .sum::<u64>(),
        3
    );
}

#[test]
fn produce_through_a_running_host_sends_megabytes_in_requests_it_accepts() {
    let setup = Setup::new(
        "[[topic]]\nname = \"in\"\npartitions = 2\n[[topic]]\nname = \"out\"\npartitions = 1\n[[route]]\ntopic = \"in\"\nplugin = \"counter\"\nconfig = { output = \"out\" }\n",
        &["counter"],
    );
    let mut host = setup.start();
    host.wait_ready();
    // ~5.5 MB of lines: the admin API takes request bodies up to 2 MB, and
    // JSON with base64 values is a third larger than the lines.
    const LINES: u64 = 50_000;
    let stdin: String = (0..LINES)
        .map(|i| format!("k{}:{}\n", i % 100, "x".repeat(100)))
        .collect();
    let out = setup.cli_with_stdin(
        &["produce", "--topic", "in", "--key-separator", ":"],
        &stdin,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_drained(&setup, "out", LINES);
    host.stop();
    let outputs = read_all(&setup.store(), "out");
    assert_eq!(outputs.len() as u64, LINES);
    // Every key counted to its 500 records, once each.
    let mut last: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    for r in &outputs {
        let value = String::from_utf8_lossy(&r.value).into_owned();
        let (_, n) = value.rsplit_once(':').unwrap();
        let n: u64 = n.parse().unwrap();
        let seen = last.entry(r.key.clone().unwrap()).or_default();
        assert_eq!(n, *seen + 1, "{value}");
        *seen = n;
    }
    assert!(last.values().all(|&n| n == LINES / 100), "{last:?}");
}

#[test]
fn a_second_run_on_the_same_data_dir_fails_clearly() {
    let setup = Setup::new(
        "[[topic]]\nname = \"t\"\npartitions = 1\n[[route]]\ntopic = \"t\"\nplugin = \"uppercase\"\nconfig = { output = \"t\" }\n",
        &["uppercase"],
    );
    let mut host = setup.start();
    host.wait_ready();
    let out = setup.cli(&["run"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another linecook process is running on data directory"),
        "{err}"
    );
    // The first host is unharmed.
    assert!(setup.status().running);
    host.stop();
}

#[test]
fn bad_config_fails_fast_naming_the_problem() {
    let cases = [
        ("max_btach = 10\n", "max_btach"),
        (
            "[[topic]]\nname = \"t\"\npartitions = 0\n",
            "partitions is 0",
        ),
        (
            "[[topic]]\nname = \"t\"\npartitions = 1\n[[route]]\ntopic = \"t\"\nplugin = \"nosuch\"\n",
            "plugin `nosuch` has no file at",
        ),
        (
            "[[route]]\ntopic = \"missing\"\nplugin = \"uppercase\"\n",
            "route for topic `missing`: no such topic; declare it in a [[topic]] table",
        ),
        ("max_batch = 0\n", "`max_batch` is 0"),
        ("group = 3\n", "group"),
    ];
    for (body, expected) in cases {
        let setup = Setup::new(body, &["uppercase"]);
        let out = setup.cli(&["run"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "config {body:?} was accepted");
        assert!(
            err.contains(expected),
            "config {body:?}: error does not name the problem: {err}"
        );
        // Nothing was created for a config that cannot run.
        assert!(
            !setup.data_dir().exists(),
            "config {body:?}: the data directory was created"
        );
    }
    // With a data directory already there: no dead-letter or declared topic
    // is created for a route that cannot run.
    let setup = Setup::new(
        "[[topic]]\nname = \"declared\"\npartitions = 1\n[[route]]\ntopic = \"missing\"\nplugin = \"uppercase\"\n",
        &["uppercase"],
    );
    setup.store().create_topic("other", 1).unwrap();
    let out = setup.cli(&["run"]);
    assert!(!out.status.success());
    let topics: Vec<String> = setup
        .store()
        .topics()
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(
        topics,
        ["other"],
        "nothing created by a config that cannot run"
    );
}

#[test]
fn a_module_that_is_not_a_component_is_refused_at_start() {
    let setup = Setup::new(
        "[[topic]]\nname = \"t\"\npartitions = 1\n[[route]]\ntopic = \"t\"\nplugin = \"broken\"\n",
        &[],
    );
    std::fs::write(
        setup.dir.path().join("plugins/broken.wasm"),
        b"not wasm at all",
    )
    .unwrap();
    let out = setup.cli(&["run"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a WebAssembly file"), "{err}");

    let out = setup.cli(&[
        "plugins",
        "check",
        setup
            .dir
            .path()
            .join("plugins/broken.wasm")
            .to_str()
            .unwrap(),
    ]);
    // 2: not a component.
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn plugins_check_lists_the_world_of_a_good_component() {
    let out = std::process::Command::new(support::BIN)
        .args(["plugins", "check"])
        .arg(support::plugins().join("counter.wasm"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The Rust SDK builds contract 0.2.0 components: the `guest` interface.
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("a linecook:handler@0.2.0 component"),
        "{text}"
    );
    assert!(text.contains("linecook:handler/state@0.2.0"), "{text}");
    assert!(
        text.contains("linecook:handler/guest@0.2.0 (interface)"),
        "{text}"
    );
    // The C example is still 0.1.0: bare functions.
    let out = std::process::Command::new(support::BIN)
        .args(["plugins", "check"])
        .arg(support::c_plugins().join("counter.wasm"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("a linecook:handler@0.1.0 component"),
        "{text}"
    );
    assert!(text.contains("handle (func)"), "{text}");
}

#[test]
fn commands_piped_into_head_end_quietly_with_success() {
    let setup = Setup::new(PIPELINE, &["uppercase", "counter"]);
    setup.store().create_topic("words", 3).unwrap();
    let input = keyed_input(5000, 7);
    produce_keyed(&setup, "words", &input);
    let config = setup.config.display().to_string();
    let bin = support::BIN;
    // `set -o pipefail`: the pipeline's status is linecook's, not head's.
    for command in [
        format!("{bin} topics list --config {config}"),
        format!("{bin} tail --topic words --from-beginning --config {config}"),
        format!("{bin} status --config {config}"),
        format!("{bin} status --watch --config {config}"),
        format!("{bin} config-help"),
    ] {
        let out = std::process::Command::new("bash")
            .args([
                "-c",
                &format!("set -o pipefail; {command} | head -c 1 >/dev/null"),
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !stderr.contains("panicked") && !stderr.contains("error"),
            "`{command} | head`: {:?}, stderr: {stderr}",
            out.status
        );
    }
}

#[test]
fn config_goes_before_or_after_the_command() {
    let setup = Setup::new(PIPELINE, &["uppercase", "counter"]);
    let config = setup.config.display().to_string();
    for args in [
        vec!["--config", config.as_str(), "status", "--json"],
        vec!["status", "--json", "--config", config.as_str()],
        vec!["-c", config.as_str(), "topics", "list"],
        vec!["--config", config.as_str(), "config-help"],
    ] {
        let out = std::process::Command::new(support::BIN)
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn tail_piped_into_produce_json_copies_a_topic_exactly() {
    let setup = Setup::new(PIPELINE, &["uppercase", "counter"]);
    let store = setup.store();
    store.create_topic("a", 3).unwrap();
    store.create_topic("b", 3).unwrap();
    let record = |key: Option<&[u8]>, value: &[u8], headers: &[(&str, &[u8])], ts, partition| {
        linecook::record::NewRecord {
            key: key.map(<[u8]>::to_vec),
            value: value.to_vec(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect(),
            partition,
            timestamp_ms: Some(ts),
        }
    };
    store
        .produce(
            "a",
            &[
                record(Some(b"k1"), b"plain", &[], 1_000, None),
                record(
                    Some(&[0xff, 0x00]),
                    &[0x80, 0x81, 0x00],
                    &[("bin", &[0xfe])],
                    2_000,
                    None,
                ),
                record(
                    None,
                    "café".as_bytes(),
                    &[("t", b"1"), ("t", b"2")],
                    3_000,
                    Some(2),
                ),
                record(None, b"", &[("empty", b"")], -5, Some(0)),
                record(Some(b""), b"{\"json\": \"inside\"}\n", &[], 4_000, Some(1)),
            ],
        )
        .unwrap();
    drop(store);
    // Both ends of the pipe use the data directory at once: through the
    // running host's admin API.
    let mut host = setup.start();
    host.wait_ready();
    let config = setup.config.display().to_string();
    let bin = support::BIN;
    let out = std::process::Command::new("bash")
        .args([
            "-c",
            &format!(
                "set -o pipefail; {bin} tail --topic a --from-beginning --headers --config {config} \
                 | {bin} produce --topic b --format json --config {config}"
            ),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    host.stop();
    let store = setup.store();
    let fields = |topic| {
        read_all(&store, topic)
            .into_iter()
            .map(|r| {
                (
                    r.partition,
                    r.offset,
                    r.key,
                    r.value,
                    r.headers,
                    r.timestamp_ms,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(fields("b"), fields("a"));
    assert_eq!(fields("a").len(), 5);
}

#[test]
fn produce_json_names_the_bad_line_and_keeps_what_came_before() {
    let setup = Setup::new(PIPELINE, &["uppercase", "counter"]);
    setup.store().create_topic("b", 1).unwrap();
    let config = setup.config.display().to_string();
    let out = std::process::Command::new("bash")
        .args([
            "-c",
            &format!(
                "printf '{{\"value\": \"ok\"}}\\n{{\"value\": 3}}\\n' | {} produce --topic b --format json --config {config}",
                support::BIN
            ),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("line 2 of standard input") && stderr.contains("value must be a string"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the 1 record before it went to `b`"),
        "{stderr}"
    );
    let produced: Vec<Vec<u8>> = read_all(&setup.store(), "b")
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(
        produced,
        [b"ok".to_vec()],
        "what came before the bad line is in"
    );
}

#[test]
fn produce_sends_records_as_they_are_read() {
    use std::io::Write;
    let setup = Setup::new(PIPELINE, &["uppercase", "counter"]);
    setup.store().create_topic("live", 1).unwrap();
    let mut host = setup.start();
    host.wait_ready();
    // A slow writer that keeps its end open, like `tail -f log | linecook produce`.
    let mut producer = std::process::Command::new(support::BIN)
        .args(["produce", "--topic", "live", "--config"])
        .arg(&setup.config)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = producer.stdin.take().unwrap();
    let end = || {
        let out = setup.cli(&["topics", "list"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find(|l| l.starts_with("live "))
            .and_then(|l| l.split_whitespace().last().map(str::to_owned))
            .unwrap_or_default()
    };
    for (i, line) in ["one", "two", "three"].iter().enumerate() {
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        wait_until(Duration::from_secs(10), "the line to be produced", || {
            end() == (i + 1).to_string()
        });
    }
    drop(stdin);
    assert!(producer.wait().unwrap().success());
    host.stop();
}

#[test]
fn plugins_check_runs_init_as_a_partition_would() {
    let check = |file: &str, extra: &[&str]| {
        std::process::Command::new(support::BIN)
            .args(["plugins", "check"])
            .arg(support::plugins().join(file))
            .args(extra)
            .output()
            .unwrap()
    };
    let text = |out: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    // A module whose init traps is not usable, whatever the config.
    let out = check("trap_init.wasm", &[]);
    // 4: init failed.
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("init trapped"), "{}", text(&out));
    // 3: a component of another world.
    let out = check("not_a_handler.wasm", &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    // One that needs its route's config says so, and passes with it.
    let out = check("uppercase.wasm", &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out)
            .contains("refused without the route's config: uppercase needs route config `output`"),
        "{}",
        text(&out)
    );
    let out = check("uppercase.wasm", &["--set", "output=out"]);
    assert!(
        out.status.success() && text(&out).contains("init    ok"),
        "{}",
        text(&out)
    );
    // A refusal with the config given fails the check.
    let out = check("fail_init.wasm", &["--set", "output=out"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        text(&out).contains("fail-init refuses to start"),
        "{}",
        text(&out)
    );
}

#[test]
fn wit_prints_every_contract_the_host_accepts() {
    let out = std::process::Command::new(support::BIN)
        .arg("wit")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for version in ["0.1.0", "0.2.0"] {
        assert!(
            text.contains(&format!("package linecook:handler@{version};")),
            "{version}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(support::BIN)
        .args(["wit", "--out-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    for (version, file) in [
        ("0.1.0", "wit/handler.wit"),
        ("0.2.0", "wit/0.2.0/handler.wit"),
    ] {
        let written =
            std::fs::read_to_string(dir.path().join(version).join("handler.wit")).unwrap();
        let source = std::fs::read_to_string(support::workspace_root().join(file)).unwrap();
        assert_eq!(written, source, "{version}");
    }
}

#[test]
fn a_partition_reset_replays_or_skips_with_state_kept_or_cleared() {
    let setup = Setup::new(
        "[[topic]]\nname = \"in\"\npartitions = 1\n[[topic]]\nname = \"out\"\npartitions = 1\n[[route]]\ntopic = \"in\"\nplugin = \"counter\"\nconfig = { output = \"out\" }\n",
        &["counter"],
    );
    {
        let store = setup.store();
        store.create_topic("in", 1).unwrap();
        store.create_topic("out", 1).unwrap();
    }
    setup.produce(
        "in",
        &[
            (Some("a"), "1"),
            (Some("a"), "2"),
            (Some("a"), "3"),
            (Some("a"), "4"),
        ],
    );
    let outputs = |setup: &Setup| -> Vec<String> {
        support::read_all(&setup.store(), "out")
            .iter()
            .map(|r| String::from_utf8_lossy(&r.value).into_owned())
            .collect()
    };
    let run_until = |count: u64| {
        let mut host = setup.start();
        host.wait_ready();
        support::wait_drained(&setup, "out", count);
        host.stop();
    };
    let reset = |args: &[&str]| {
        let mut all = vec!["partitions", "reset", "--topic", "in"];
        all.extend_from_slice(args);
        let out = setup.cli(&all);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run_until(4);
    assert_eq!(outputs(&setup), ["a:1", "a:2", "a:3", "a:4"]);

    // Back two records, state kept: they are counted again on top.
    let said = reset(&["--to-offset", "2"]);
    assert_eq!(
        said.trim(),
        "in/0: 4 -> 2 (2 records will be handled again; state kept)"
    );
    run_until(6);
    assert_eq!(outputs(&setup)[4..], ["a:5", "a:6"]);

    // From the start with state cleared: as if new.
    let said = reset(&["--to-earliest", "--state", "clear"]);
    assert!(
        said.contains("4 records will be handled again; state cleared"),
        "{said}"
    );
    run_until(10);
    assert_eq!(outputs(&setup)[6..], ["a:1", "a:2", "a:3", "a:4"]);

    // Skip what is not handled yet.
    setup.produce("in", &[(Some("a"), "5"), (Some("a"), "6")]);
    let said = reset(&["--to-latest"]);
    assert!(said.contains("2 records skipped"), "{said}");
    setup.produce("in", &[(Some("a"), "7")]);
    run_until(11);
    assert_eq!(outputs(&setup)[10..], ["a:5"]);

    // Past the end: refused, nothing moved.
    let out = setup.cli(&["partitions", "reset", "--topic", "in", "--to-offset", "99"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ends at offset 7"));

    // With the host running, the worker moves at a batch boundary: the
    // last two records are handled again, on top of the kept count.
    let mut host = setup.start();
    host.wait_ready();
    support::wait_drained(&setup, "out", 11);
    let said = reset(&["--to-offset", "5"]);
    assert_eq!(
        said.trim(),
        "in/0: 7 -> 5 (2 records will be handled again; state kept)"
    );
    support::wait_drained(&setup, "out", 13);
    let out = setup.cli(&["partitions", "reset", "--topic", "in", "--to-offset", "99"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ends at offset 7"));
    host.stop();
    assert_eq!(outputs(&setup)[11..], ["a:6", "a:7"]);
    let input = setup.store().topic("in").unwrap();
    let checkpoint = setup.store().checkpoint(&input, 0).unwrap().unwrap();
    assert_eq!(checkpoint.next_offset, 7);
}

/// `tail -f log | linecook produce`: lines of a stream that pauses are
/// produced as they arrive, not held back until standard input closes.
#[test]
fn produce_sends_a_paused_streams_lines_before_it_ends() {
    use std::io::Write;
    let setup = Setup::new("[[topic]]\nname = \"lines\"\npartitions = 1\n", &[]);
    let mut host = setup.start();
    host.wait_ready();
    let mut produce = std::process::Command::new(env!("CARGO_BIN_EXE_linecook"))
        .args(["produce", "--topic", "lines", "--config"])
        .arg(&setup.config)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = produce.stdin.take().unwrap();
    stdin.write_all(b"first\nsecond\n").unwrap();
    stdin.flush().unwrap();
    let lines = || {
        let out = setup.cli(&["tail", "--topic", "lines", "--from-beginning"]);
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    // Standard input stays open: only the pause lets them go.
    wait_until(Duration::from_secs(10), "the first two lines", || {
        lines() == 2
    });
    stdin.write_all(b"third\n").unwrap();
    drop(stdin);
    let out = produce.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lines(), 3);
    host.stop();
}

/// Partitions cost tasks, not threads: 512 partitions run on the worker
/// pool (one thread per core) beside the host's own few threads, and each
/// handles its records exactly once.
#[test]
fn many_partitions_run_on_a_few_threads() {
    const PARTITIONS: u64 = 512;
    const RECORDS: u64 = PARTITIONS * 4;
    let setup = Setup::new(
        &format!(
            r#"
max_batch = 100
[[topic]]
name = "words"
partitions = {PARTITIONS}
[[topic]]
name = "shouted"
partitions = 8
[[route]]
topic = "words"
plugin = "uppercase"
config = {{ output = "shouted" }}
"#
        ),
        &["uppercase"],
    );
    let mut host = setup.start();
    host.wait_ready();
    let input: String = (0..RECORDS).map(|i| format!("k{i}:v{i}\n")).collect();
    let out = setup.cli_with_stdin(
        &["produce", "--topic", "words", "--key-separator", ":"],
        &input,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_drained(&setup, "shouted", RECORDS);
    let status = std::fs::read_to_string(format!("/proc/{}/status", host.pid())).unwrap();
    let threads: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let cores = std::thread::available_parallelism().unwrap().get();
    assert!(
        threads <= 2 * cores + 12,
        "{threads} threads for {PARTITIONS} partitions on {cores} cores"
    );
    let report = setup.status();
    assert_eq!(report.partitions.len() as u64, PARTITIONS);
    assert!(report.partitions.iter().all(|p| p.lag == 0));
    assert_eq!(
        report.partitions.iter().map(|p| p.records).sum::<u64>(),
        RECORDS
    );
    host.stop();
}

/// A running host whose route `counter` (with `route_extra` settings) has
/// counted six keyed records of `words` into `counts`, in batches of 4.
fn counted_words(route_extra: &str) -> (Setup, support::Host) {
    let setup = Setup::new(
        &format!(
            r#"
max_batch = 4
[[topic]]
name = "words"
partitions = 1
[[topic]]
name = "counts"
partitions = 1
[[route]]
topic = "words"
plugin = "counter"
config = {{ output = "counts" }}
{route_extra}"#
        ),
        &["counter"],
    );
    let mut host = setup.start();
    host.wait_ready();
    let out = setup.cli_with_stdin(
        &["produce", "--topic", "words", "--key-separator", ":"],
        "a:1\nb:2\na:3\na:4\nb:5\nc:6\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_drained(&setup, "counts", 6);
    (setup, host)
}

/// `linecook replay` runs a version over records already in the log beside
/// a running host and prints what it emits, committing nothing; it starts
/// from empty state or from the partition's committed state.
#[test]
fn replay_prints_what_a_version_emits_and_commits_nothing() {
    let (setup, host) = counted_words("");
    let plugin = support::plugins().join("counter.wasm");
    let plugin = plugin.to_str().unwrap();

    let replay = |args: &[&str]| -> Vec<serde_json::Value> {
        let mut all = vec!["replay", "--plugin", plugin, "--topic", "words"];
        all.extend_from_slice(args);
        let out = setup.cli(&all);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let values = |lines: &[serde_json::Value]| -> Vec<String> {
        lines
            .iter()
            .map(|l| l["value"].as_str().unwrap().to_owned())
            .collect()
    };

    // From empty state: what a new deployment would emit.
    let lines = replay(&[]);
    assert_eq!(values(&lines), ["a:1", "b:1", "a:2", "a:3", "b:2", "c:1"]);
    assert_eq!(lines[0]["topic"], "counts");
    assert_eq!(lines[0]["key"], "a");
    assert_eq!(lines[0]["source_offsets"], serde_json::json!([0, 3]));
    assert_eq!(lines[5]["source_offsets"], serde_json::json!([4, 5]));
    // From the committed state (a=3, b=2, c=1), a range of offsets.
    let lines = replay(&[
        "--state",
        "current",
        "--from-offset",
        "2",
        "--to-offset",
        "4",
    ]);
    assert_eq!(values(&lines), ["a:4", "a:5"]);

    // Compared with the version the partitions run (the host's kept copy):
    // the same component matches output for output; another differs, and
    // says where.
    let out = setup.cli(&[
        "replay",
        "--plugin",
        plugin,
        "--topic",
        "words",
        "--against",
        "active",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("2 batches of `words`: 6 outputs match, 0 differ, 0 extra, 0 missing"),
        "{text}"
    );
    let other = support::plugins().join("uppercase.wasm");
    let out = setup.cli(&[
        "replay",
        "--plugin",
        other.to_str().unwrap(),
        "--topic",
        "words",
        "--against",
        "active",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let diff: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(diff["matching"], 0);
    assert_eq!(diff["differing"], 6);
    assert_eq!(diff["first"][0]["baseline"]["value"], "a:1");
    assert_eq!(diff["first"][0]["candidate"]["value"], "1");
    assert_eq!(
        diff["first"][0]["source_offsets"],
        serde_json::json!([0, 3])
    );

    // Nothing was committed: the same outputs, state and offset as before.
    let status = setup.status();
    assert_eq!(status.partitions[0].committed_offset, 6);
    assert_eq!(status.partitions[0].records, 6);
    let counts = setup.cli(&["tail", "--topic", "counts", "--from-beginning"]);
    assert_eq!(String::from_utf8_lossy(&counts.stdout).lines().count(), 6);
    host.stop();
    let store = setup.store();
    let words = store.topic("words").unwrap();
    let state: BTreeMap<Vec<u8>, Vec<u8>> = store
        .state_entries(&words, 0)
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(state.get(&b"a"[..]).map(Vec::as_slice), Some(&b"3"[..]));
}

#[test]
fn replay_against_the_log_compares_with_what_the_route_wrote() {
    let (setup, host) = counted_words("origin_headers = true\n");
    // Outputs carry their origin, as with Kafka.
    let tail = setup.cli(&["tail", "--topic", "counts", "--from-beginning", "--headers"]);
    let first: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&tail.stdout)
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let headers = first["headers"].to_string();
    assert!(
        headers.contains(r#"["linecook.origin.topic","words"]"#)
            && headers.contains(r#"["linecook.origin.offset","0"]"#)
            && headers.contains(r#"["linecook.origin.index","0"]"#),
        "{headers}"
    );

    let replay = |plugin: &str, extra: &[&str]| {
        let path = support::plugins().join(format!("{plugin}.wasm"));
        let mut args = vec![
            "replay",
            "--plugin",
            path.to_str().unwrap(),
            "--topic",
            "words",
        ];
        args.extend_from_slice(extra);
        setup.cli(&args)
    };
    // The same version reproduces exactly what the route wrote.
    let out = replay("counter", &["--against", "log"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("6 outputs match, 0 differ, 0 extra, 0 missing"),
        "{text}"
    );
    // A changed one differs, and the difference names the logged batch.
    let out = replay(
        "uppercase",
        &["--against", "log", "--json", "--set", "output=counts"],
    );
    assert_eq!(out.status.code(), Some(1));
    let diff: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(diff["differing"], 6);
    assert_eq!(diff["first"][0]["baseline"]["value"], "a:1");
    assert_eq!(
        diff["first"][1]["source_offsets"],
        serde_json::json!([0, 0])
    );
    // A range by time: nothing after the future, everything after 0.
    let future = (linecook::record::now_ms() + 3_600_000).to_string();
    let out = replay("counter", &["--from-timestamp", &future]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("replayed 0 records"));
    let out = replay("counter", &["--from-timestamp", "0"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 6);
    host.stop();
}

fn resident_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS");
    kib / 1024
}

/// The store keeps at most `store_cache_mb` (64 MiB by default) of its file
/// in memory. With redb's own default of 1 GiB, a host's memory grew by
/// ~60 MiB for every 200,000 records it handled, up to that gigabyte: more
/// than many containers allow.
#[test]
fn a_hosts_memory_stays_bounded_as_its_log_grows() {
    let setup = Setup::new(
        r#"
max_batch = 1000
[[topic]]
name = "in"
partitions = 2
[[topic]]
name = "out"
partitions = 2
[[route]]
topic = "in"
plugin = "uppercase"
config = { output = "out" }
"#,
        &["uppercase"],
    );
    let mut host = setup.start();
    host.wait_ready();
    const ROUND: u64 = 200_000;
    let mut handled = 0;
    let mut round = || {
        let lines: String = (0..ROUND)
            .map(|i| format!("record {:08} {}\n", handled + i, "x".repeat(83)))
            .collect();
        let out = setup.cli_with_stdin(&["produce", "--topic", "in"], &lines);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        handled += ROUND;
        wait_until(Duration::from_secs(120), "the round to be handled", || {
            let status = setup.status();
            status
                .partitions
                .iter()
                .map(|p| p.committed_offset)
                .sum::<u64>()
                == handled
        });
    };
    // The first round warms what stays: instances, buffers, the allocator.
    round();
    let warm = resident_mib(host.pid());
    for _ in 0..4 {
        round();
    }
    let after = resident_mib(host.pid());
    host.stop();
    // 800,000 more records: 160 MB written (inputs and outputs).
    eprintln!("resident memory: {warm} MiB after the first round, {after} MiB after five");
    assert!(
        after < warm + 96,
        "resident memory grew from {warm} MiB to {after} MiB over 800,000 records"
    );
}
