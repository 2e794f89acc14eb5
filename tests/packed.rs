//! The packed batch path (contract 0.2.0's `handle-packed`): the example
//! handlers, built with the Rust SDK, export it and the host calls it. It
//! must mean exactly what the typed `guest.handle` means — the same records
//! in, the same state, outputs and timers out — and a component whose
//! packed answer is malformed must fail like a trap, committing nothing.

mod support;

use linecook::checkpoint::BatchCommit;
use linecook::config::Limits;
use linecook::record::{BatchEffects, LogRecord, NewRecord};
use linecook::runtime::bindings::Context;
use linecook::runtime::{Batch, CallTime, Instance, Labels, Runtime, Shape};
use linecook::store::Store;
use linecook::worker::dead_letter_headers as dlh;
use support::{Setup, read_all, wait_until};

fn record(offset: u64, ts: i64, key: Option<&str>, value: &str) -> LogRecord {
    LogRecord {
        partition: 0,
        offset,
        timestamp_ms: ts,
        key: key.map(|k| k.as_bytes().to_vec()),
        value: value.as_bytes().to_vec(),
        headers: if offset.is_multiple_of(2) {
            vec![
                ("trace".into(), format!("t{offset}").into_bytes()),
                ("empty".into(), Vec::new()),
            ]
        } else {
            Vec::new()
        },
    }
}

/// Calls `plugin` once through `shape` on a fresh instance, against the
/// committed state of `in`/0 in `store`.
fn effects(
    runtime: &Runtime,
    store: &Store,
    plugin: &str,
    shape: Shape,
    records: &[LogRecord],
) -> BatchEffects {
    let path = support::plugins().join(format!("{plugin}.wasm"));
    effects_of(runtime, store, &path, plugin, shape, records)
}

/// [`effects`] of the component at `path`.
fn effects_of(
    runtime: &Runtime,
    store: &Store,
    path: &std::path::Path,
    plugin: &str,
    shape: Shape,
    records: &[LogRecord],
) -> BatchEffects {
    let bytes = std::fs::read(path).unwrap();
    let prepared = runtime.prepare(&bytes).unwrap();
    assert!(prepared.packed(), "{plugin} exports the packed path");
    let topic = store.topic("in").unwrap();
    let context = Context {
        plugin: plugin.into(),
        version: "test".into(),
        topic: "in".into(),
        partition: 0,
        config: vec![
            ("output".into(), "out".into()),
            ("window_ms".into(), "1000".into()),
            ("gap_ms".into(), "5000".into()),
        ],
    };
    let labels = Labels {
        plugin: plugin.into(),
        version: "test".into(),
        topic: "in".into(),
        partition: 0,
    };
    let reader = || Box::new(store.partition_state(&topic, 0).unwrap());
    let mut instance =
        Instance::start(&prepared, labels, Limits::default(), &context, reader()).unwrap();
    assert_eq!(instance.shape(), Shape::Packed);
    let batch = Batch::new(shape, "in", records.to_vec());
    assert_eq!(
        matches!(batch, Batch::Packed { .. }),
        shape == Shape::Packed
    );
    let time = CallTime {
        now_ms: 1_700_000_000_000,
        watermark: Some(500),
        ..CallTime::default()
    };
    instance
        .handle(&batch, reader(), time)
        .unwrap_or_else(|e| panic!("{plugin} through {shape:?}: {e}"))
        .0
}

#[test]
fn the_packed_path_and_the_typed_interface_do_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let input = store.create_topic("in", 1).unwrap();
    store.create_topic("out", 1).unwrap();
    // Committed state the handlers read: counts, and a key the `scan`
    // record's writes overlay.
    let mut committed = BatchEffects::default();
    for (k, v) in [("a", "5"), ("s/0", "zero"), ("s/b", "old")] {
        committed
            .state
            .insert(k.as_bytes().to_vec(), Some(v.as_bytes().to_vec()));
    }
    store
        .commit_batch(BatchCommit {
            topic: &input,
            partition: 0,
            first_offset: 0,
            next_offset: 1,
            version: "seed",
            effects: &committed,
            changelog: None,
            firing_seq: None,
        })
        .unwrap();

    let records = vec![
        record(1, 100, Some("a"), "hello"),
        record(2, 900, Some("b"), "World"),
        record(3, 1500, None, "scan"),
        record(4, 1200, Some("a"), "again"),
        record(5, 2600, Some("a"), "x"),
    ];
    let runtime = Runtime::new().unwrap();
    for plugin in [
        "identity",
        "uppercase",
        "counter",
        "tag",
        "hostile",
        "window_count",
        "session",
    ] {
        let typed = effects(&runtime, &store, plugin, Shape::V2, &records);
        let packed = effects(&runtime, &store, plugin, Shape::Packed, &records);
        assert_eq!(packed, typed, "{plugin}: packed and typed differ");
        assert!(
            !(typed.outputs.is_empty() && typed.state.is_empty() && typed.timers.is_empty()),
            "{plugin} did something to compare"
        );
    }

    // What they did, spelled out for two of them.
    let counter = effects(&runtime, &store, "counter", Shape::Packed, &records);
    let lines: Vec<String> = counter
        .outputs
        .iter()
        .map(|o| String::from_utf8_lossy(&o.value).into_owned())
        .collect();
    assert_eq!(lines, ["a:6", "b:1", ":1", "a:7", "a:8"]);
    assert_eq!(counter.state[&b"a".to_vec()], Some(b"8".to_vec()));
    let identity = effects(&runtime, &store, "identity", Shape::Packed, &records);
    assert_eq!(identity.outputs[1].headers, records[1].headers);
    assert_eq!(identity.outputs[1].value, b"World");
    assert_eq!(identity.outputs[2].key, None);
    // The SDK held the writes back and the host answered the scans: the
    // delete and the overlay are both visible.
    let hostile = effects(&runtime, &store, "hostile", Shape::Packed, &records);
    assert_eq!(
        String::from_utf8_lossy(&hostile.outputs[2].value),
        "scan:s/0=zero,s/b=2 b:Some(\"2\") a:None then:3"
    );
}

#[test]
fn a_malformed_packed_answer_fails_like_a_trap_and_commits_nothing_of_it() {
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
plugin = "bad_packed"
errors = { retries = 1, backoff_base_ms = 10 }
"#,
        &["bad_packed"],
    );
    {
        let store = setup.store();
        store.create_topic("in", 1).unwrap();
        store.create_topic("out", 1).unwrap();
        let records: Vec<NewRecord> = ["a", "garbage", "b"]
            .iter()
            .map(|v| NewRecord {
                timestamp_ms: None,
                key: None,
                value: v.as_bytes().to_vec(),
                headers: Vec::new(),
                partition: Some(0),
            })
            .collect();
        store.produce("in", &records).unwrap();
    }
    let mut host = setup.start();
    host.wait_ready();
    wait_until(
        std::time::Duration::from_secs(60),
        "the partition to catch up",
        || setup.status().partitions.iter().all(|p| p.lag == 0),
    );
    host.stop();

    let store = setup.store();
    let out: Vec<String> = read_all(&store, "out")
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect();
    // The output entry before the bad one in the same answer is not kept.
    assert_eq!(out, ["a", "b"]);
    let dlq = read_all(&store, "in.dlq");
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].value, b"garbage");
    let header = |name: &str| {
        dlq[0]
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap()
    };
    assert_eq!(header(dlh::ERROR_KIND), "trap");
    // One output entry (26 bytes) after the magic, then the unknown kind.
    let message = header(dlh::ERROR_MESSAGE);
    assert!(
        message.contains("malformed packed effects at byte 30: unknown entry kind 7"),
        "{message}"
    );
}

/// A C handler using `plugins/c/packed.h` (world `packed-handler`) is
/// called through the packed path, and means what its typed `guest.handle`
/// means: every record, upper-cased, keyed as it came, in order.
#[test]
fn a_c_handler_takes_the_packed_path_through_its_header() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.create_topic("in", 1).unwrap();
    store.create_topic("out", 1).unwrap();
    let records = vec![
        record(0, 100, Some("a"), "hello"),
        record(1, 900, None, "World, é!"),
        record(2, 1500, Some(""), ""),
        record(3, 1200, Some("a"), "again"),
    ];
    let runtime = Runtime::new().unwrap();
    let path = support::c_plugins().join("uppercase-packed.wasm");
    let typed = effects_of(
        &runtime,
        &store,
        &path,
        "uppercase-packed",
        Shape::V2,
        &records,
    );
    let packed = effects_of(
        &runtime,
        &store,
        &path,
        "uppercase-packed",
        Shape::Packed,
        &records,
    );
    assert_eq!(packed, typed);
    let outputs: Vec<(Option<String>, String, &str)> = packed
        .outputs
        .iter()
        .map(|o| {
            let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
            (o.key.as_deref().map(text), text(&o.value), o.topic.as_str())
        })
        .collect();
    let want = |k: Option<&str>, v: &str| (k.map(str::to_owned), v.to_owned(), "out");
    assert_eq!(
        outputs,
        [
            want(Some("a"), "HELLO"),
            want(None, "WORLD, é!"),
            want(Some(""), ""),
            want(Some("a"), "AGAIN"),
        ]
    );
}

#[test]
fn zig_handlers_take_the_packed_path_through_their_glue_and_mean_the_same() {
    glue_handlers_mean_the_same(support::zig_plugins(), "Zig");
}

#[test]
fn assemblyscript_handlers_take_the_packed_path_through_their_glue_and_mean_the_same() {
    glue_handlers_mean_the_same(support::assemblyscript_plugins(), "AssemblyScript");
}

#[test]
fn go_handlers_take_the_packed_path_through_their_glue_and_mean_the_same() {
    glue_handlers_mean_the_same(support::go_plugins(), "Go");
}

/// The four handlers of a hand-written glue at `dir`: packed and typed
/// calls do the same, and counter's counts are exact.
fn glue_handlers_mean_the_same(plugins: &std::path::Path, lang: &str) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.create_topic("in", 1).unwrap();
    store.create_topic("out", 1).unwrap();
    let records = vec![
        record(0, 100, Some("a"), "hello"),
        record(1, 900, None, "World, é!"),
        record(2, 1500, Some(""), ""),
        record(3, 1200, Some("a"), "again"),
        record(4, 2600, Some("b"), "x"),
    ];
    let runtime = Runtime::new().unwrap();
    for plugin in ["uppercase", "counter", "window-count", "session"] {
        let path = plugins.join(format!("{plugin}.wasm"));
        let typed = effects_of(&runtime, &store, &path, plugin, Shape::V2, &records);
        let packed = effects_of(&runtime, &store, &path, plugin, Shape::Packed, &records);
        assert_eq!(packed, typed, "{lang} {plugin}: packed and typed differ");
        assert!(
            !(typed.outputs.is_empty() && typed.state.is_empty() && typed.timers.is_empty()),
            "{lang} {plugin} did something to compare"
        );
    }
    let path = plugins.join("counter.wasm");
    let counter = effects_of(&runtime, &store, &path, "counter", Shape::Packed, &records);
    let lines: Vec<String> = counter
        .outputs
        .iter()
        .map(|o| String::from_utf8_lossy(&o.value).into_owned())
        .collect();
    assert_eq!(lines, ["a:1", ":1", ":2", "a:2", "b:1"]);
}
