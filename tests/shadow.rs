//! Shadow rollout: a candidate runs beside the serving version on the same
//! batches from the same state, its effects compared and thrown away. One
//! that differs is rejected with the differences and never serves a record;
//! one that matches goes on through canary to every partition.

mod support;

use std::time::Duration;

use support::{Setup, tail_values, wait_until};

fn config(rollout: &str) -> String {
    format!(
        r#"max_batch = 100
[[topic]]
name = "words"
partitions = 2
[[topic]]
name = "shouted"
partitions = 1
[[route]]
topic = "words"
plugin = "uppercase"
config = {{ output = "shouted" }}
rollout = {rollout}
"#
    )
}

fn deploy(setup: &Setup, bytes: &[u8]) {
    let tmp = setup.dir.path().join("plugins/uppercase.wasm.partial");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, setup.dir.path().join("plugins/uppercase.wasm")).unwrap();
}

fn digest(bytes: &[u8]) -> String {
    linecook::plugins::digest(bytes)
}

/// The state of `digest` in the running host.
fn version_state(setup: &Setup, digest: &str) -> Option<(String, Option<String>)> {
    setup
        .status()
        .plugins
        .iter()
        .flat_map(|p| p.versions.iter())
        .find(|v| v.digest == digest)
        .map(|v| (v.state.to_string(), v.reason.clone()))
}

/// Deploys a rebuild of `uppercase` (same code, another digest) and waits
/// until it runs in shadow; returns its digest.
fn deploy_rebuild_in_shadow(setup: &Setup, section: u32) -> String {
    let rebuilt = support::with_custom_section(
        &std::fs::read(support::plugins().join("uppercase.wasm")).unwrap(),
        section,
    );
    let new = digest(&rebuilt);
    deploy(setup, &rebuilt);
    wait_until(
        Duration::from_secs(60),
        "the rebuild to run in shadow",
        || version_state(setup, &new).is_some_and(|(s, _)| s == "shadow"),
    );
    new
}

fn produce(setup: &Setup, lines: &[String]) {
    let out = setup.cli_with_stdin(&["produce", "--topic", "words"], &(lines.join("\n") + "\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_candidate_differing_on_one_record_in_a_thousand_is_rejected_and_never_serves() {
    let setup = Setup::new(
        // A generous time budget: no batch may be skipped here.
        &config("{ shadow_batches = 100000, max_diff = 2, max_slowdown_percent = 100000 }"),
        &["uppercase"],
    );
    let mut host = setup.start();
    host.wait_ready();
    let candidate = std::fs::read(support::plugins().join("quirky.wasm")).unwrap();
    let candidate_digest = digest(&candidate);
    deploy(&setup, &candidate);
    wait_until(
        Duration::from_secs(60),
        "the candidate to run in shadow",
        || version_state(&setup, &candidate_digest).is_some_and(|(s, _)| s == "shadow"),
    );

    let lines: Vec<String> = (0..3000).map(|i| format!("rec-{i:04}")).collect();
    produce(&setup, &lines);
    wait_until(
        Duration::from_secs(60),
        "the candidate to be rejected",
        || version_state(&setup, &candidate_digest).is_some_and(|(s, _)| s == "rejected"),
    );
    let (_, reason) = version_state(&setup, &candidate_digest).unwrap();
    let reason = reason.unwrap();
    assert!(reason.contains("3 differences, 2 allowed"), "{reason}");

    // The diff names exactly the three records, with their batches' offsets.
    let out = setup.cli(&["plugins", "diff", "uppercase", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let diff: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = diff["shadow"]["first"].as_array().unwrap();
    let mut changed: Vec<(String, String)> = first
        .iter()
        .map(|d| {
            (
                d["active"].as_str().unwrap().to_owned(),
                d["candidate"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    changed.sort();
    assert_eq!(
        changed,
        ["0999", "1999", "2999"]
            .iter()
            .map(|n| (
                format!("shouted -=\"REC-{n}\""),
                format!("shouted -=\"rec-{n}\"")
            ))
            .collect::<Vec<_>>()
    );
    for d in first {
        let [from, to] = [
            d["offsets"][0].as_u64().unwrap(),
            d["offsets"][1].as_u64().unwrap(),
        ];
        assert!(
            from <= to && to - from < 100,
            "a batch of at most max_batch: {d}"
        );
    }
    let total = &diff["shadow"]["total"];
    assert_eq!(total["differing"], 3);
    assert_eq!(
        total["extra"].as_u64().unwrap() + total["missing"].as_u64().unwrap(),
        0
    );
    let text = setup.cli(&["plugins", "diff", "uppercase"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("rejected"));

    // Live outputs are exactly the serving version's: every record upper-cased
    // once, none of the candidate's.
    wait_until(Duration::from_secs(60), "the outputs", || {
        tail_values(&setup, "shouted").len() >= lines.len()
    });
    let mut outputs = tail_values(&setup, "shouted");
    outputs.sort();
    let expected: Vec<String> = lines.iter().map(|l| l.to_uppercase()).collect();
    assert_eq!(outputs, expected);
    assert!(
        setup
            .status()
            .partitions
            .iter()
            .all(|p| p.version.as_deref() != Some(candidate_digest.as_str())),
        "the candidate never served"
    );
    host.stop();
}

#[test]
fn an_identical_rebuild_passes_shadow_then_canary_and_serves_every_partition() {
    let setup = Setup::new(
        &config("{ shadow_batches = 4, max_diff = 0, canary = 1, promote_after_batches = 2 }"),
        &["uppercase"],
    );
    let mut host = setup.start();
    host.wait_ready();
    let new = deploy_rebuild_in_shadow(&setup, 7);
    let mut produced = Vec::new();
    let mut round = 0;
    wait_until(
        Duration::from_secs(120),
        "the rebuild to serve everywhere",
        || {
            let lines: Vec<String> = (0..50).map(|i| format!("r{round}-{i}")).collect();
            round += 1;
            produce(&setup, &lines);
            produced.extend(lines);
            let status = setup.status();
            status
                .partitions
                .iter()
                .all(|p| p.version.as_deref() == Some(new.as_str()))
        },
    );
    let (state, _) = version_state(&setup, &new).unwrap();
    assert_eq!(state, "active");
    let diff: serde_json::Value = serde_json::from_slice(
        &setup
            .cli(&["plugins", "diff", "uppercase", "--json"])
            .stdout,
    )
    .unwrap();
    assert!(diff["shadow"]["total"]["batches"].as_u64().unwrap() >= 4);
    assert_eq!(diff["shadow"]["total"]["differing"], 0);
    assert_eq!(diff["shadow"]["first"].as_array().unwrap().len(), 0);
    wait_until(Duration::from_secs(60), "every output", || {
        setup.status().partitions.iter().all(|p| p.lag == 0)
    });
    let mut outputs = tail_values(&setup, "shouted");
    outputs.sort();
    let mut expected: Vec<String> = produced.iter().map(|l| l.to_uppercase()).collect();
    expected.sort();
    assert_eq!(outputs, expected, "nothing lost or repeated");
    host.stop();
}

#[test]
fn a_host_killed_during_a_shadow_restarts_the_shadow_and_loses_nothing() {
    let setup = Setup::new(
        // A generous time budget: a batch skipped for time does not count
        // toward the 30, and a loaded machine could skip enough of them to
        // keep the rebuild from ever passing within the test.
        &config("{ shadow_batches = 30, max_diff = 0, max_slowdown_percent = 100000 }"),
        &["uppercase"],
    );
    let old = digest(&std::fs::read(support::plugins().join("uppercase.wasm")).unwrap());
    let mut host = setup.start();
    host.wait_ready();
    let new = deploy_rebuild_in_shadow(&setup, 9);
    let first: Vec<String> = (0..1000).map(|i| format!("a{i}")).collect();
    produce(&setup, &first);
    wait_until(Duration::from_secs(60), "some batches shadowed", || {
        setup
            .status()
            .plugins
            .iter()
            .flat_map(|p| &p.versions)
            .any(|v| v.digest == new && v.shadow.as_ref().is_some_and(|s| s.total.batches >= 2))
    });
    host.kill();

    // The file holds the rebuild, but it never finished its shadow: the old
    // version serves again and the shadow starts over.
    let mut host = setup.start();
    host.wait_ready();
    wait_until(Duration::from_secs(60), "the shadow to start over", || {
        version_state(&setup, &new).is_some_and(|(s, _)| s == "shadow")
    });
    let status = setup.status();
    assert!(
        status
            .partitions
            .iter()
            .all(|p| p.version.as_deref() == Some(old.as_str())),
        "the unproven version does not serve after a restart"
    );
    assert!(setup.host_log().contains("runs in shadow again"));
    produce(&setup, &["x0".into(), "x1".into()]);
    wait_until(
        Duration::from_secs(30),
        "`status` to show the shadow",
        || {
            String::from_utf8_lossy(&setup.cli(&["status"]).stdout).contains(&format!(
                "plugin uppercase version {} in shadow: ",
                &new[..12]
            ))
        },
    );
    let second: Vec<String> = (0..3000).map(|i| format!("b{i}")).collect();
    produce(&setup, &second);
    wait_until(
        Duration::from_secs(120),
        "the rebuild to pass and serve",
        || {
            setup
                .status()
                .partitions
                .iter()
                .all(|p| p.version.as_deref() == Some(new.as_str()))
        },
    );
    wait_until(Duration::from_secs(60), "every output", || {
        setup.status().partitions.iter().all(|p| p.lag == 0)
    });
    let mut outputs = tail_values(&setup, "shouted");
    outputs.sort();
    let mut expected: Vec<String> = first
        .iter()
        .chain(&second)
        .chain(&["x0".to_owned(), "x1".to_owned()])
        .map(|l| l.to_uppercase())
        .collect();
    expected.sort();
    assert_eq!(outputs, expected, "exactly once across the kill");
    host.stop();
}
