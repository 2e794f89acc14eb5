//! Hot swap: new plugin versions dropped into the plugins directory of a
//! running host, under a steady stream, with real components built from
//! `plugins/` (the `tag` plugin built as v1 and as v2).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use linecook::plugins::{VersionState, digest};
use linecook::status::StatusReport;
use support::{Producer, Setup, read_all, wait_drained, wait_until};

const PARTITIONS: u32 = 4;

fn tag_route(rollout: &str) -> String {
    tag_route_with(rollout, "")
}

/// `tag_route` with more route config (`, key = "value"` pairs).
fn tag_route_with(rollout: &str, config: &str) -> String {
    format!(
        r#"
max_batch = 20
[[topic]]
name = "in"
partitions = {PARTITIONS}
[[topic]]
name = "out"
partitions = {PARTITIONS}
[[route]]
topic = "in"
plugin = "tag"
config = {{ output = "out"{config} }}
{rollout}
"#
    )
}

/// `tag.wasm` built with `LINECOOK_TAG=v2`.
fn tag_v2() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| support::build_plugins(Some("v2")).join("tag.wasm"))
        .clone()
}

fn tag_v1() -> PathBuf {
    support::plugins().join("tag.wasm")
}

#[derive(Clone, Copy, Debug)]
enum Deploy {
    /// Write a temp file, then rename it over `tag.wasm` (atomic).
    Rename,
    /// Copy over `tag.wasm` in place (truncate, then write).
    InPlace,
}

fn deploy(setup: &Setup, from: &Path, how: Deploy) {
    let dest = setup.dir.path().join("plugins/tag.wasm");
    match how {
        Deploy::Rename => {
            let tmp = setup.dir.path().join("plugins/tag.wasm.partial");
            std::fs::copy(from, &tmp).unwrap();
            std::fs::rename(&tmp, &dest).unwrap();
        }
        Deploy::InPlace => {
            std::fs::copy(from, &dest).unwrap();
        }
    }
}

fn deploy_bytes(setup: &Setup, bytes: &[u8]) {
    let tmp = setup.dir.path().join("plugins/tag.wasm.partial");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, setup.dir.path().join("plugins/tag.wasm")).unwrap();
}

fn wait_all_on(setup: &Setup, digest: &str) -> StatusReport {
    let mut last = None;
    wait_until(
        Duration::from_secs(60),
        "every partition to run the version",
        || {
            let status = setup.status();
            let done = status
                .partitions
                .iter()
                .all(|p| p.version.as_deref() == Some(digest));
            last = Some(status);
            done
        },
    );
    last.unwrap()
}

fn version_state(status: &StatusReport, digest: &str) -> Option<(VersionState, Option<String>)> {
    status
        .plugins
        .iter()
        .flat_map(|p| &p.versions)
        .find(|v| v.digest == digest)
        .map(|v| (v.state, v.reason.clone()))
}

/// Checks every produced value came out exactly once, tagged with one of
/// `tags`, and in order per key; returns the tags per output partition in
/// log order.
fn check_exactly_once(
    setup: &Setup,
    produced: &[u64],
    tags: &[&str],
) -> BTreeMap<u32, Vec<String>> {
    let store = setup.store();
    let out = read_all(&store, "out");
    let mut seen = BTreeSet::new();
    let mut last_per_key: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    let mut tags_per_partition: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for r in &out {
        let text = String::from_utf8(r.value.clone()).unwrap();
        let (tag, n) = text.split_once(':').expect("tag:value");
        assert!(tags.contains(&tag), "unexpected tag in {text}");
        let n: u64 = n.parse().unwrap();
        assert!(seen.insert(n), "value {n} came out twice");
        let key = r.key.clone().unwrap();
        if let Some(prev) = last_per_key.insert(key.clone(), n) {
            assert!(prev < n, "key {key:?}: {n} came out after {prev}");
        }
        tags_per_partition
            .entry(r.partition)
            .or_default()
            .push(tag.to_owned());
    }
    let want: BTreeSet<u64> = produced.iter().copied().collect();
    assert_eq!(seen.len(), want.len(), "outputs vs inputs");
    assert_eq!(seen, want, "every input exactly once");
    let input = store.topic("in").unwrap();
    let ends = store.end_offsets(&input).unwrap();
    for p in 0..PARTITIONS {
        let cp = store.checkpoint(&input, p).unwrap().unwrap();
        assert_eq!(cp.next_offset, ends[p as usize], "offset of in/{p}");
    }
    tags_per_partition
}

#[test]
fn dropping_v2_switches_every_partition_at_a_batch_boundary() {
    let setup = Setup::new(&tag_route(""), &["tag"]);
    let (v1, v2) = (
        digest(&std::fs::read(tag_v1()).unwrap()),
        digest(&std::fs::read(tag_v2()).unwrap()),
    );
    assert_ne!(v1, v2, "the two builds differ");
    let mut host = setup.start();
    host.wait_ready();
    let producer = Producer::start(&setup, "");
    std::thread::sleep(Duration::from_millis(700));
    deploy(&setup, &tag_v2(), Deploy::Rename);
    let status = wait_all_on(&setup, &v2);
    assert!(
        status.partitions.iter().all(|p| p.swaps == 1),
        "one swap per partition: {status:?}"
    );
    std::thread::sleep(Duration::from_millis(700));
    let produced = producer.finish();
    wait_drained(&setup, "out", produced.len() as u64);
    let status = setup.status();
    assert_eq!(
        version_state(&status, &v2).map(|s| s.0),
        Some(VersionState::Active)
    );
    assert_eq!(
        version_state(&status, &v1).map(|s| s.0),
        Some(VersionState::Retired)
    );
    for p in &status.partitions {
        let pause = p.last_swap_pause_us.expect("the swap pause is recorded");
        assert!(
            pause < 5_000_000,
            "partition {}: swap pause {pause} us",
            p.partition
        );
    }
    host.stop();

    let tags = check_exactly_once(&setup, &produced, &["v1", "v2"]);
    for p in 0..PARTITIONS {
        let seq = &tags[&p];
        let first_v2 = seq
            .iter()
            .position(|t| t == "v2")
            .expect("partition switched to v2");
        assert!(first_v2 > 0, "partition {p} ran v1 first");
        assert!(
            seq[first_v2..].iter().all(|t| t == "v2"),
            "partition {p}: all v1 before all v2"
        );
    }
    // Each checkpoint records the version that handled its batch.
    let store = setup.store();
    let input = store.topic("in").unwrap();
    for p in 0..PARTITIONS {
        let history = store.version_history(&input, p).unwrap();
        let versions: Vec<&str> = history.iter().map(|(_, v)| v.as_str()).collect();
        assert_eq!(
            versions,
            [v1.as_str(), v2.as_str()],
            "version history of in/{p}"
        );
    }
}

/// A swap instantiates the next version and calls its `init` off the
/// partition's path, while the running version goes on committing; an
/// `init` that reads the partition's state must still see it as of the
/// boundary it is swapped in at, not as of some batches before.
#[test]
fn an_init_that_reads_state_sees_it_as_of_the_swap_boundary() {
    const SWAPS: usize = 6;
    // `init` waits 50 ms after its read: an `init` run early, while the
    // running version goes on committing, would surely miss some commits.
    let setup = Setup::new(
        &tag_route_with("", r#", count = "true", init_ms = "50""#),
        &["tag"],
    );
    let mut host = setup.start();
    host.wait_ready();
    let producer = Producer::start(&setup, "");
    std::thread::sleep(Duration::from_millis(500));
    for build in [tag_v2(), tag_v1()].iter().cycle().take(SWAPS) {
        deploy(&setup, build, Deploy::Rename);
        wait_all_on(&setup, &digest(&std::fs::read(build).unwrap()));
        std::thread::sleep(Duration::from_millis(100));
    }
    let produced = producer.finish();
    wait_drained(&setup, "out", produced.len() as u64);
    host.stop();

    check_exactly_once(&setup, &produced, &["v1", "v2"]);
    // Each instance's first output says what its `init` read and what the
    // count was when its first batch began; both must be the number of
    // records the partition handled before it.
    let header = |r: &linecook::record::LogRecord, name: &str| -> Option<u64> {
        let (_, value) = r.headers.iter().find(|(k, _)| k == name)?;
        String::from_utf8(value.clone()).ok()?.parse().ok()
    };
    let out = read_all(&setup.store(), "out");
    for p in 0..PARTITIONS {
        let mut starts = 0;
        for (before, r) in out.iter().filter(|r| r.partition == p).enumerate() {
            if let Some(init_n) = header(r, "init-n") {
                starts += 1;
                assert_eq!(
                    (init_n, header(r, "batch-n")),
                    (before as u64, Some(before as u64)),
                    "partition {p}, output {before}: what `init` read, and the count when its first batch began"
                );
            }
        }
        assert_eq!(starts, 1 + SWAPS, "partition {p}: instances started");
    }
}

#[test]
fn twenty_swaps_under_load_lose_and_duplicate_nothing() {
    let setup = Setup::new(&tag_route(""), &["tag"]);
    let builds = [
        (tag_v2(), digest(&std::fs::read(tag_v2()).unwrap())),
        (tag_v1(), digest(&std::fs::read(tag_v1()).unwrap())),
    ];
    let mut host = setup.start();
    host.wait_ready();
    let producer = Producer::start(&setup, "");
    for i in 0..20 {
        let (path, digest) = &builds[i % 2];
        let how = if i % 4 < 2 {
            Deploy::Rename
        } else {
            Deploy::InPlace
        };
        deploy(&setup, path, how);
        wait_all_on(&setup, digest);
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = setup.status();
    assert!(
        status.partitions.iter().all(|p| p.swaps == 20),
        "20 swaps on every partition: {status:?}"
    );
    let produced = producer.finish();
    wait_drained(&setup, "out", produced.len() as u64);
    host.stop();
    check_exactly_once(&setup, &produced, &["v1", "v2"]);
}

#[test]
fn bad_modules_are_rejected_and_the_old_version_keeps_serving() {
    let setup = Setup::new(&tag_route(""), &["tag"]);
    let v1 = digest(&std::fs::read(tag_v1()).unwrap());
    let v2_bytes = std::fs::read(tag_v2()).unwrap();
    let bad_file = |name: &str| std::fs::read(support::plugins().join(name)).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "not wasm",
            b"definitely not wasm".to_vec(),
            "not a WebAssembly file",
        ),
        (
            "truncated",
            v2_bytes[..v2_bytes.len() / 2].to_vec(),
            "invalid component",
        ),
        (
            "core module",
            b"\0asm\x01\0\0\0".to_vec(),
            "core WebAssembly module",
        ),
        (
            "wrong world",
            bad_file("not_a_handler.wasm"),
            "exports neither linecook:handler 0.1.0's `init`/`handle` nor 0.2.0's",
        ),
        (
            "init error",
            bad_file("fail_init.wasm"),
            "fail-init refuses to start",
        ),
        // One line, in the guest's own words: its panic message.
        (
            "init trap",
            bad_file("trap_init.wasm"),
            "init trapped: panicked at",
        ),
    ];
    let mut host = setup.start();
    host.wait_ready();
    let producer = Producer::start(&setup, "");
    for (kind, bytes, reason) in &cases {
        let bad = digest(bytes);
        deploy_bytes(&setup, bytes);
        let mut status = None;
        wait_until(
            Duration::from_secs(30),
            &format!("{kind} to be rejected"),
            || {
                let s = setup.status();
                let rejected = matches!(version_state(&s, &bad), Some((VersionState::Rejected, _)));
                status = Some(s);
                rejected
            },
        );
        let status = status.unwrap();
        let (_, why) = version_state(&status, &bad).unwrap();
        let why = why.unwrap_or_default();
        assert!(
            why.contains(reason),
            "{kind}: reason {why:?} does not say {reason:?}"
        );
        if *kind == "init trap" {
            assert!(
                why.contains("trap-init traps in init")
                    && !why.contains('\n')
                    && !why.contains("wasm function"),
                "{kind}: {why:?} is not one line with the guest's message"
            );
        }
        assert!(
            status
                .partitions
                .iter()
                .all(|p| p.version.as_deref() == Some(v1.as_str())),
            "{kind}: every partition still runs v1"
        );
        assert_eq!(
            version_state(&status, &v1).map(|s| s.0),
            Some(VersionState::Active)
        );
    }
    let status = setup.status();
    let rejected: u64 = status.plugins.iter().map(|p| p.rejected_total).sum();
    assert_eq!(
        rejected,
        cases.len() as u64,
        "one rejection counted per bad module"
    );
    // A deleted file stops nothing.
    std::fs::remove_file(setup.dir.path().join("plugins/tag.wasm")).unwrap();
    wait_until(
        Duration::from_secs(30),
        "the deletion to be noticed",
        || setup.status().plugins.iter().any(|p| !p.file_present),
    );
    std::thread::sleep(Duration::from_millis(300));
    let produced = producer.finish();
    wait_drained(&setup, "out", produced.len() as u64);
    host.stop();
    // Output never stopped, and only v1 ever handled anything.
    check_exactly_once(&setup, &produced, &["v1"]);
}

#[test]
fn a_failing_canary_rolls_back_and_a_good_one_is_promoted() {
    let setup = Setup::new(
        &tag_route("rollout = { canary = 1, promote_after_batches = 3 }"),
        &["tag"],
    );
    let v1 = digest(&std::fs::read(tag_v1()).unwrap());
    let v2 = digest(&std::fs::read(tag_v2()).unwrap());
    let fatal_bytes = std::fs::read(support::plugins().join("fatal.wasm")).unwrap();
    let fatal = digest(&fatal_bytes);
    let mut host = setup.start();
    host.wait_ready();
    let producer = Producer::start(&setup, "");
    std::thread::sleep(Duration::from_millis(300));

    deploy_bytes(&setup, &fatal_bytes);
    let mut status = None;
    wait_until(
        Duration::from_secs(30),
        "the fatal canary to be rolled back",
        || {
            let s = setup.status();
            let rolled = matches!(
                version_state(&s, &fatal),
                Some((VersionState::RolledBack, _))
            );
            status = Some(s);
            rolled
        },
    );
    let status = status.unwrap();
    let (_, why) = version_state(&status, &fatal).unwrap();
    assert!(
        why.as_deref()
            .is_some_and(|w| w.contains("canary partition 0") && w.contains("fatal refuses")),
        "rollback reason: {why:?}"
    );
    wait_all_on(&setup, &v1);
    let status = setup.status();
    assert_eq!(status.plugins[0].rolled_back_total, 1);

    deploy(&setup, &tag_v2(), Deploy::Rename);
    wait_all_on(&setup, &v2);
    let status = setup.status();
    assert_eq!(
        version_state(&status, &v2).map(|s| s.0),
        Some(VersionState::Active)
    );
    std::thread::sleep(Duration::from_millis(300));
    let produced = producer.finish();
    wait_drained(&setup, "out", produced.len() as u64);
    host.stop();

    // The fatal version committed nothing: its failed batches were redone.
    let tags = check_exactly_once(&setup, &produced, &["v1", "v2"]);
    // Partition 0 was the canary: it switched first, the others after.
    let store = setup.store();
    let input = store.topic("in").unwrap();
    let switched_at = |p: u32| {
        store
            .version_history(&input, p)
            .unwrap()
            .into_iter()
            .find(|(_, v)| *v == v2)
            .map(|(offset, _)| offset)
    };
    for p in 0..PARTITIONS {
        assert!(switched_at(p).is_some(), "partition {p} promoted to v2");
        assert!(tags[&p].contains(&"v2".to_owned()));
        let history = store.version_history(&input, p).unwrap();
        assert!(
            history.iter().all(|(_, v)| *v != fatal),
            "no checkpoint of in/{p} was made by the fatal version"
        );
    }
}

#[test]
fn a_restart_loads_known_versions_from_the_cache_instead_of_compiling() {
    let setup = Setup::new(&tag_route(""), &["tag"]);
    let v1 = digest(&std::fs::read(tag_v1()).unwrap());
    let source = |setup: &Setup| {
        let status = setup.status();
        status.plugins[0]
            .versions
            .iter()
            .find(|v| v.digest == v1)
            .and_then(|v| v.source)
    };

    let mut host = setup.start();
    host.wait_ready();
    assert_eq!(source(&setup), Some(linecook::plugins::Source::Compiled));
    host.stop();
    let cached: Vec<_> = std::fs::read_dir(setup.data_dir().join("compiled"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(cached.len(), 1, "one artifact: {cached:?}");
    assert!(
        cached[0]
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(&v1),
        "named by the module digest"
    );
    let written = std::fs::metadata(&cached[0]).unwrap().modified().unwrap();

    let mut host = setup.start();
    host.wait_ready();
    assert_eq!(source(&setup), Some(linecook::plugins::Source::Cache));
    host.stop();
    assert_eq!(
        std::fs::metadata(&cached[0]).unwrap().modified().unwrap(),
        written,
        "the artifact was not rewritten"
    );
}

#[test]
fn a_canary_whose_batches_cannot_commit_is_rolled_back_and_nothing_is_lost() {
    // v2 writes to a topic that does not exist: it passes every load-time
    // check, then no batch it handles can be committed.
    let setup = Setup::new(
        &tag_route_with(
            "rollout = { canary = 1, promote_after_batches = 3 }\nerrors = { commit_retries = 3 }",
            ", output_v2 = \"nowhere\"",
        ),
        &["tag"],
    );
    let v1 = digest(&std::fs::read(tag_v1()).unwrap());
    let v2 = digest(&std::fs::read(tag_v2()).unwrap());
    let mut host = setup.start();
    host.wait_ready();
    let producer = Producer::start(&setup, "");
    std::thread::sleep(Duration::from_millis(300));

    deploy(&setup, &tag_v2(), Deploy::Rename);
    let mut status = None;
    wait_until(
        Duration::from_secs(30),
        "the canary that cannot commit to be rolled back",
        || {
            let s = setup.status();
            let rolled = matches!(version_state(&s, &v2), Some((VersionState::RolledBack, _)));
            status = Some(s);
            rolled
        },
    );
    let (_, why) = version_state(&status.unwrap(), &v2).unwrap();
    let why = why.unwrap_or_default();
    assert!(
        why.contains("cannot commit on partition 0") && why.contains("`nowhere`"),
        "rollback reason: {why}"
    );
    let status = wait_all_on(&setup, &v1);
    assert_eq!(status.plugins[0].rolled_back_total, 1);
    // The canary went v1 -> v2 -> v1: two swaps, the return counted too.
    assert_eq!(status.partitions[0].swaps, 2, "{:?}", status.partitions[0]);
    let produced = producer.finish();
    wait_drained(&setup, "out", produced.len() as u64);
    host.stop();
    // v2 never committed a batch: every record came out once, from v1.
    check_exactly_once(&setup, &produced, &["v1"]);
}

/// Appends records `from..to` (keys `k<i % 16>`, values `i`) while no host
/// runs.
fn produce_offline(setup: &Setup, from: u64, to: u64) {
    let store = setup.store();
    for topic in ["in", "out"] {
        if store.topic(topic).is_err() {
            store.create_topic(topic, PARTITIONS).unwrap();
        }
    }
    drop(store);
    let records: Vec<(String, String)> = (from..to)
        .map(|i| (format!("k{}", i % 16), i.to_string()))
        .collect();
    let borrowed: Vec<(Option<&str>, &str)> = records
        .iter()
        .map(|(k, v)| (Some(k.as_str()), v.as_str()))
        .collect();
    setup.produce("in", &borrowed);
}

#[derive(Debug, Clone, Copy)]
enum BadStart {
    /// A garbage file was rejected live, then SIGTERM.
    GarbageThenStop,
    /// A garbage file was rejected live, then SIGKILL.
    GarbageThenKill,
    /// The file was deleted while the host was down.
    Deleted,
}

#[test]
fn a_restart_with_an_unusable_plugin_file_serves_the_last_good_version() {
    let v1 = digest(&std::fs::read(tag_v1()).unwrap());
    for case in [
        BadStart::GarbageThenStop,
        BadStart::GarbageThenKill,
        BadStart::Deleted,
    ] {
        let setup = Setup::new(&tag_route(""), &["tag"]);
        produce_offline(&setup, 0, 200);
        let mut host = setup.start();
        host.wait_ready();
        wait_drained(&setup, "out", 200);
        match case {
            BadStart::GarbageThenStop | BadStart::GarbageThenKill => {
                let garbage = b"definitely not wasm".to_vec();
                let bad = digest(&garbage);
                deploy_bytes(&setup, &garbage);
                wait_until(
                    Duration::from_secs(30),
                    "the garbage to be rejected",
                    || {
                        matches!(
                            version_state(&setup.status(), &bad),
                            Some((VersionState::Rejected, _))
                        )
                    },
                );
                if matches!(case, BadStart::GarbageThenKill) {
                    host.kill();
                } else {
                    host.stop();
                }
            }
            BadStart::Deleted => {
                host.stop();
                std::fs::remove_file(setup.dir.path().join("plugins/tag.wasm")).unwrap();
            }
        }

        // Down with an unusable file: more records arrive meanwhile.
        produce_offline(&setup, 200, 400);
        let mut host = setup.start();
        host.wait_ready();
        wait_drained(&setup, "out", 400);
        let status = setup.status();
        assert!(
            status
                .partitions
                .iter()
                .all(|p| p.version.as_deref() == Some(v1.as_str())),
            "{case:?}: every partition serves v1: {:?}",
            status.partitions
        );
        let fallback = status.plugins[0].fallback.clone().unwrap_or_default();
        assert!(
            fallback.contains("serving last good version") && fallback.contains(&v1[..12]),
            "{case:?}: status says why: {fallback:?}"
        );
        match case {
            BadStart::Deleted => assert!(fallback.contains("not found"), "{fallback}"),
            _ => {
                assert!(fallback.contains("not a WebAssembly file"), "{fallback}");
                assert_eq!(status.plugins[0].rejected_total, 1, "{case:?}");
            }
        }
        let metrics = setup.admin_get("/metrics");
        assert!(
            metrics.contains("linecook_plugin_fallback{plugin=\"tag\"} 1"),
            "{case:?}: the fallback metric"
        );
        // A good file brings the route back to normal, without a restart.
        deploy(&setup, &tag_v1(), Deploy::Rename);
        wait_until(Duration::from_secs(30), "the fallback to clear", || {
            setup.status().plugins[0].fallback.is_none()
        });
        host.stop();
        check_exactly_once(&setup, &(0..400).collect::<Vec<u64>>(), &["v1"]);
    }
}

#[test]
fn a_start_with_no_usable_version_ever_fails_clearly() {
    let setup = Setup::new(&tag_route(""), &[]);
    std::fs::write(setup.dir.path().join("plugins/tag.wasm"), b"garbage").unwrap();
    let out = setup.cli(&["run"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not a WebAssembly file")
            && stderr.contains("no earlier version of it was ever accepted"),
        "{stderr}"
    );
}

/// GET `path` from the running host's admin API.
#[test]
fn a_canary_that_traps_returns_to_the_old_version_and_both_swaps_count() {
    let setup = Setup::new(
        &tag_route(
            "rollout = { canary = 1, promote_after_batches = 100 }\nerrors = { retries = 0 }",
        ),
        &["tag"],
    );
    let v1 = digest(&std::fs::read(tag_v1()).unwrap());
    let hostile = std::fs::read(support::plugins().join("hostile.wasm")).unwrap();
    let mut host = setup.start();
    host.wait_ready();
    let access =
        linecook::client::Access::connect(&linecook::config::Config::load(&setup.config).unwrap())
            .unwrap();
    let to_partition_0 = |value: &str| {
        access
            .produce(
                "in",
                vec![linecook::record::NewRecord {
                    timestamp_ms: None,
                    key: Some(b"k".to_vec()),
                    value: value.as_bytes().to_vec(),
                    headers: vec![],
                    partition: Some(0),
                }],
            )
            .unwrap();
    };
    to_partition_0("1");
    wait_drained(&setup, "out", 1);
    deploy_bytes(&setup, &hostile);
    wait_until(
        Duration::from_secs(30),
        "the canary to run the new version",
        || setup.status().partitions[0].version.as_deref() != Some(v1.as_str()),
    );
    // The canary traps: its instance is discarded and partition 0 goes back
    // to v1 on a fresh instance — a change of version like any other.
    to_partition_0("trap");
    let status = wait_all_on(&setup, &v1);
    assert_eq!(
        status.partitions[0].swaps, 2,
        "v1 -> canary -> v1: {:?}",
        status.partitions[0]
    );
    assert!(status.partitions[1..].iter().all(|p| p.swaps == 0));
    // With no retries, the trapping record went to the dead-letter topic.
    wait_drained(&setup, "in.dlq", 1);
    host.stop();
}
