//! Handlers in other languages, through the real host.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use linecook::plugins::digest;
use support::{Producer, Setup, read_all, wait_drained, wait_until};

const ROUTE: &str = r#"
max_batch = 20
[[topic]]
name = "in"
partitions = 3
[[topic]]
name = "out"
partitions = 3
[[route]]
topic = "in"
plugin = "uppercase"
config = { output = "out" }
"#;

fn deploy(setup: &Setup, bytes: &[u8]) {
    let tmp = setup.dir.path().join("plugins/uppercase.wasm.partial");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, setup.dir.path().join("plugins/uppercase.wasm")).unwrap();
}

fn wait_all_on(setup: &Setup, digest: &str) {
    wait_until(
        Duration::from_secs(120),
        "every partition to run the version",
        || {
            setup
                .status()
                .partitions
                .iter()
                .all(|p| p.version.as_deref() == Some(digest))
        },
    );
}

#[test]
fn a_rust_handler_swaps_to_python_and_back_losing_nothing() {
    let python = std::fs::read(support::python_uppercase()).unwrap();
    let rust = std::fs::read(support::plugins().join("uppercase.wasm")).unwrap();
    let (py, rs) = (digest(&python), digest(&rust));
    let setup = Setup::new(ROUTE, &["uppercase"]);
    let mut host = setup.start();
    host.wait_ready();
    let producer = Producer::start(&setup, "value ");
    std::thread::sleep(Duration::from_millis(300));
    deploy(&setup, &python);
    wait_all_on(&setup, &py);
    std::thread::sleep(Duration::from_millis(500));
    deploy(&setup, &rust);
    wait_all_on(&setup, &rs);
    std::thread::sleep(Duration::from_millis(300));
    let produced = producer.finish();
    wait_drained(&setup, "out", produced.len() as u64);
    host.stop();

    // Every input exactly once, upper-cased, in order per key — whichever
    // language handled it.
    let store = setup.store();
    let mut per_key: BTreeMap<Vec<u8>, Vec<u64>> = BTreeMap::new();
    for r in read_all(&store, "out") {
        let text = String::from_utf8(r.value).unwrap();
        let n: u64 = text
            .strip_prefix("VALUE ")
            .unwrap_or_else(|| panic!("not upper-cased: {text}"))
            .parse()
            .unwrap();
        per_key.entry(r.key.unwrap()).or_default().push(n);
    }
    let mut seen: Vec<u64> = per_key.values().flatten().copied().collect();
    for values in per_key.values() {
        assert!(values.windows(2).all(|w| w[0] < w[1]), "order per key");
    }
    seen.sort_unstable();
    assert_eq!(seen, produced, "every input exactly once");

    // And both languages really handled batches: Rust, Python, Rust.
    let input = store.topic("in").unwrap();
    let mut python_batches = 0;
    for p in 0..input.partitions {
        let history: Vec<String> = store
            .version_history(&input, p)
            .unwrap()
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        assert_eq!(history.first(), Some(&rs), "in/{p} started on Rust");
        assert_eq!(history.last(), Some(&rs), "in/{p} ended on Rust");
        python_batches += history.iter().filter(|v| **v == py).count();
    }
    assert!(python_batches > 0, "Python handled batches in between");
}
