//! What operators read: `/metrics` and status.

mod support;

use std::collections::BTreeMap;

use support::{Setup, wait_drained};

const ROUTE: &str = r#"
max_batch = 7
[[topic]]
name = "words"
partitions = 2
[[topic]]
name = "shouted"
partitions = 2
retention_ms = 86400000
[[route]]
topic = "words"
plugin = "uppercase"
config = { output = "shouted" }
# Makes no request: its outbound HTTP series exist at zero.
http = { allow = ["127.0.0.1:9"] }
"#;

/// A sample line: metric name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the Prometheus / OpenMetrics text format strictly enough that a
/// malformed line fails the test: `# HELP|TYPE|UNIT` comments, `# EOF` last,
/// and `name{label="value",...} number` samples.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "exposition ends with # EOF");
    let mut samples = Vec::new();
    let mut typed = std::collections::HashSet::new();
    for line in &lines[..lines.len() - 1] {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let kind = parts.next().unwrap();
            let name = parts.next().expect("comment names a metric");
            assert!(
                matches!(kind, "HELP" | "TYPE" | "UNIT"),
                "bad comment: {line}"
            );
            if kind == "TYPE" {
                let ty = parts.next().unwrap();
                assert!(
                    ["counter", "gauge", "histogram", "info", "unknown"].contains(&ty),
                    "bad type: {line}"
                );
                typed.insert(name.to_owned());
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("bad labels: {line}"));
                let labels = body
                    .split(',')
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| {
                        let (k, v) = kv
                            .split_once('=')
                            .unwrap_or_else(|| panic!("bad label: {line}"));
                        let v = v
                            .strip_prefix('"')
                            .and_then(|v| v.strip_suffix('"'))
                            .unwrap_or_else(|| panic!("unquoted label: {line}"));
                        (k.to_owned(), v.to_owned())
                    })
                    .collect();
                (name.to_owned(), labels)
            }
        };
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad metric name: {line}"
        );
        assert!(
            typed.iter().any(|t| name.starts_with(t.as_str())),
            "sample before its # TYPE: {line}"
        );
        samples.push((name, labels, value));
    }
    samples
}

fn sum(samples: &[Sample], name: &str) -> f64 {
    samples.iter().filter(|s| s.0 == name).map(|s| s.2).sum()
}

#[test]
fn metrics_parse_and_move_as_records_flow() {
    let setup = Setup::new(ROUTE, &["uppercase"]);
    let mut host = setup.start();
    host.wait_ready();
    let input: String = (0..100)
        .map(|i| format!("k{}:value {i}\n", i % 9))
        .collect();
    let out = setup.cli_with_stdin(
        &["produce", "--topic", "words", "--key-separator", ":"],
        &input,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_drained(&setup, "shouted", 100);

    let addr = std::fs::read_to_string(setup.data_dir().join("admin.addr")).unwrap();
    let mut response = ureq::get(format!("http://{}/metrics", addr.trim()))
        .call()
        .unwrap();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.body_mut().read_to_string().unwrap();
    let samples = parse_exposition(&text);

    assert_eq!(
        sum(&samples, "linecook_records_in_total"),
        100.0,
        "records in = records produced"
    );
    assert_eq!(sum(&samples, "linecook_records_out_total"), 100.0);
    assert!(sum(&samples, "linecook_batches_total") >= 100.0 / 7.0);
    assert_eq!(
        sum(&samples, "linecook_batch_handle_seconds_count"),
        sum(&samples, "linecook_batches_total"),
        "one handle latency per batch"
    );
    assert!(sum(&samples, "linecook_checkpoint_commit_seconds_count") > 0.0);
    assert_eq!(sum(&samples, "linecook_owned_partitions"), 2.0);
    assert_eq!(sum(&samples, "linecook_rebalances_total"), 1.0);
    let lags: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.0 == "linecook_lag_records")
        .collect();
    assert_eq!(lags.len(), 2, "lag per partition");
    assert!(lags.iter().all(|s| s.2 == 0.0), "lag reached zero");
    assert!(sum(&samples, "linecook_instance_memory_bytes") > 0.0);
    for s in samples
        .iter()
        .filter(|s| s.0 == "linecook_records_in_total")
    {
        assert_eq!(s.1.get("topic").map(String::as_str), Some("words"));
        assert_eq!(s.1.get("plugin").map(String::as_str), Some("uppercase"));
        assert!(s.1.contains_key("partition"));
    }
    readme_names_the_metrics_as_scraped(&text);
    deploy_files_query_only_scraped_series(&text);
    classic_text_passes_promtool(addr.trim());
    host.stop();
}

/// Asked for the classic text format, `/metrics` serves it, and promtool
/// (the pinned one, `scripts/toolchains.sh promtool`) lints it clean.
fn classic_text_passes_promtool(addr: &str) {
    let mut response = ureq::get(format!("http://{addr}/metrics"))
        .header("Accept", "text/plain;version=0.0.4")
        .call()
        .unwrap();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.body_mut().read_to_string().unwrap();
    assert!(!text.contains("# EOF") && !text.contains("# UNIT"));
    assert!(
        text.contains("# TYPE linecook_records_in_total counter"),
        "{text}"
    );
    let promtool = std::process::Command::new("bash")
        .arg(support::workspace_root().join("scripts/toolchains.sh"))
        .arg("promtool")
        .output()
        .unwrap();
    assert!(
        promtool.status.success(),
        "{}",
        String::from_utf8_lossy(&promtool.stderr)
    );
    let promtool = String::from_utf8(promtool.stdout).unwrap();
    let mut check = std::process::Command::new(promtool.trim())
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every `linecook_*` series the Grafana dashboard and the alert rules query
/// is one a scrape shows: a gauge, a counter's `_total`, or a histogram's
/// `_bucket`, `_sum`, `_count`.
fn deploy_files_query_only_scraped_series(exposition: &str) {
    let mut series = std::collections::BTreeSet::new();
    for line in exposition.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let (name, ty) = line.split_once(' ').unwrap();
        match ty {
            "counter" => {
                series.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    series.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                series.insert(name.to_owned());
            }
        }
    }
    let mut checked = 0;
    for file in [
        "deploy/grafana/linecook.json",
        "deploy/prometheus/alerts.yml",
    ] {
        let text = std::fs::read_to_string(support::workspace_root().join(file)).unwrap();
        for (at, _) in text.match_indices("linecook_") {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                series.contains(&name),
                "{file} queries `{name}`, which /metrics does not export"
            );
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} series names found");
}

/// Every family the host exports is in the README under the name a scrape
/// shows (counters with `_total`), and every name the README's "Observing
/// it" list gives is exported.
fn readme_names_the_metrics_as_scraped(exposition: &str) {
    let scraped: std::collections::BTreeSet<String> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, ty) = l.split_once(' ').unwrap();
            if ty == "counter" {
                format!("{name}_total")
            } else {
                name.to_owned()
            }
        })
        .collect();
    let readme = std::fs::read_to_string(support::workspace_root().join("README.md")).unwrap();
    let names = |text: &str| -> std::collections::BTreeSet<String> {
        text.split('`')
            .skip(1)
            .step_by(2)
            .filter_map(|code| {
                let name: String = code
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                name.starts_with("linecook_").then_some(name)
            })
            .collect()
    };
    let everywhere = names(&readme);
    let missing: Vec<&String> = scraped
        .iter()
        .filter(|n| !everywhere.contains(*n))
        .collect();
    assert!(
        missing.is_empty(),
        "exported but not in the README: {missing:?}"
    );
    let start = readme.find("## Observing it").unwrap();
    let end = readme[start + 3..]
        .find("\n## ")
        .map_or(readme.len(), |i| start + 3 + i);
    let listed = names(&readme[start..end]);
    let unknown: Vec<&String> = listed.iter().filter(|n| !scraped.contains(*n)).collect();
    assert!(
        unknown.is_empty(),
        "in the README's list but not exported: {unknown:?}"
    );
    assert!(listed.len() >= 15, "{listed:?}");
}

#[test]
fn status_json_is_complete_and_matches_the_log() {
    let setup = Setup::new(ROUTE, &["uppercase"]);
    let mut host = setup.start();
    host.wait_ready();
    let input: String = (0..50).map(|i| format!("k{i}:v\n")).collect();
    assert!(
        setup
            .cli_with_stdin(
                &["produce", "--topic", "words", "--key-separator", ":"],
                &input
            )
            .status
            .success()
    );
    wait_drained(&setup, "shouted", 50);
    let out = setup.cli(&["status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for field in ["group", "running", "partitions", "plugins"] {
        assert!(json.get(field).is_some(), "status has {field}");
    }
    let partitions = json["partitions"].as_array().unwrap();
    for p in partitions {
        for field in [
            "topic",
            "partition",
            "committed_offset",
            "end_offset",
            "lag",
            "plugin",
            "version",
            "state",
            "batches",
            "records",
            "records_per_sec",
            "swaps",
            "dead_letters",
        ] {
            assert!(p.get(field).is_some(), "partition status has {field}: {p}");
        }
        assert_eq!(
            p["lag"].as_u64().unwrap(),
            p["end_offset"].as_u64().unwrap() - p["committed_offset"].as_u64().unwrap()
        );
    }
    let reported_ends: Vec<u64> = partitions
        .iter()
        .map(|p| p["end_offset"].as_u64().unwrap())
        .collect();
    let records: u64 = partitions
        .iter()
        .map(|p| p["records"].as_u64().unwrap())
        .sum();
    assert_eq!(records, 50);
    host.stop();

    let store = setup.store();
    let words = store.topic("words").unwrap();
    assert_eq!(
        store.end_offsets(&words).unwrap(),
        reported_ends,
        "status end offsets are the log's"
    );
}

/// Runs a host with `args` after `run` and `env`, with debug logging, on
/// `setup`; produces twenty records, waits until they are handled, stops it
/// with SIGTERM and returns its log.
fn twenty_records_through(setup: &Setup, args: &[&str], env: &[(&str, &str)]) -> String {
    let log_path = setup.dir.path().join("traced.log");
    let mut child = std::process::Command::new(support::BIN)
        .arg("run")
        .args(args)
        .arg("--config")
        .arg(&setup.config)
        .env("RUST_LOG", "linecook=debug")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    support::wait_until(
        std::time::Duration::from_secs(30),
        "the host to start",
        || setup.data_dir().join("admin.addr").exists(),
    );
    let input: String = (0..20).map(|i| format!("k{i}:v\n")).collect();
    let out = setup.cli_with_stdin(
        &["produce", "--topic", "words", "--key-separator", ":"],
        &input,
    );
    assert!(out.status.success());
    wait_drained(setup, "shouted", 20);
    // A clean stop also flushes spans not exported yet.
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    assert!(child.wait().unwrap().success());
    std::fs::read_to_string(&log_path).unwrap()
}

#[test]
fn each_batch_is_a_trace_of_its_own() {
    let setup = Setup::new(ROUTE, &["uppercase"]);
    let log = twenty_records_through(&setup, &["--log-format", "json"], &[]);
    let committed: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["fields"]["message"] == "batch committed")
        .collect();
    assert!(!committed.is_empty(), "{log}");
    for line in &committed {
        let spans = line["spans"].as_array().unwrap();
        assert_eq!(
            spans[0]["name"], "batch",
            "the batch span is a root: {line}"
        );
        assert_eq!(spans[0]["topic"], "words", "{line}");
        assert!(spans[0]["partition"].is_u64(), "{line}");
    }
}

/// One request an OTLP/HTTP collector received.
struct Export {
    head: String,
    body: Vec<u8>,
}

/// Answers every HTTP/1.1 request on `stream` with 200, sending each to `tx`.
fn collect_exports(stream: std::net::TcpStream, tx: std::sync::mpsc::Sender<Export>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => head.push_str(&line),
            }
        }
        let length = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let answered = writer.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
        );
        if tx.send(Export { head, body }).is_err() || answered.is_err() {
            return;
        }
    }
}

/// With the `otlp` feature (as `scripts/test.sh` builds the tests), each
/// batch's spans reach an OTLP/HTTP collector — a real HTTP server on
/// loopback. Without it, an endpoint that is set is said, not ignored.
#[test]
fn spans_reach_an_otlp_collector_or_the_build_says_it_cannot() {
    if !cfg!(feature = "otlp") {
        let out = std::process::Command::new(support::BIN)
            .args(["config-help"])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("built without the `otlp` feature"),
            "{stderr}"
        );
        return;
    }
    let collector = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", collector.local_addr().unwrap());
    let (tx, exports) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in collector.incoming().flatten() {
            let tx = tx.clone();
            std::thread::spawn(move || collect_exports(stream, tx));
        }
    });
    let setup = Setup::new(ROUTE, &["uppercase"]);
    let log = twenty_records_through(&setup, &[], &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)]);
    assert!(log.contains("exporting spans over OTLP/HTTP"), "{log}");

    let mut received = Vec::new();
    let wait = |got: &Vec<Export>| {
        std::time::Duration::from_millis(if got.is_empty() { 10_000 } else { 500 })
    };
    while let Ok(export) = exports.recv_timeout(wait(&received)) {
        received.push(export);
    }
    assert!(
        !received.is_empty(),
        "the collector received nothing:\n{log}"
    );
    let mut body = Vec::new();
    for export in &received {
        let head = export.head.to_ascii_lowercase();
        assert!(head.starts_with("post /v1/traces "), "{head}");
        assert!(
            head.contains("content-type: application/x-protobuf"),
            "{head}"
        );
        body.extend_from_slice(&export.body);
    }
    // Protobuf stores strings as their bytes: the service, the spans and
    // their attributes can be found without decoding the message.
    let contains = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    for needle in [
        "linecook",
        "batch",
        "handle",
        "checkpoint",
        "words",
        "uppercase",
    ] {
        assert!(
            contains(needle.as_bytes()),
            "no {needle:?} in the {} bytes exported",
            body.len()
        );
    }
}
