//! One language-independent scenario, run through the real host against the
//! `uppercase` and `counter` handlers of every language in `plugins/`: exact
//! outputs (keyed, keyless, empty values, non-UTF-8 bytes), exact state, and
//! a `retry` error path that must leave nothing behind. Then the timers
//! scenarios, through `linecook test`, for each language's contract 0.2.0
//! `window-count` and `session`: `plugins/fixtures/window-count.toml`
//! (event time: out-of-order timestamps within the lateness, a late record,
//! exact windows with their timestamps, state and pending timers) and
//! `plugins/fixtures/session.toml` (processing time: sessions that expire
//! as the clock moves, exact outputs, nothing left in state or timers).
//! Prints a table of languages × checks; fails if any cell fails.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use linecook::record::{LogRecord, NewRecord};
use support::{Setup, build_plugins, plugins, read_all, wait_until};

type Bytes = Vec<u8>;

/// (key, value) of every input, in order, all on one partition.
fn inputs() -> Vec<(Option<Bytes>, Bytes)> {
    let r = |k: Option<&[u8]>, v: &[u8]| (k.map(<[u8]>::to_vec), v.to_vec());
    vec![
        r(Some(b"a"), b"hello"),
        r(Some(b"b"), b"World 42!"),
        r(Some(b"a"), b""),
        r(None, b"keyless"),
        r(Some(b"k\xff\xfe"), b"bytes \xff\x00 caf\xc3\xa9"),
        r(Some(b"x\xe2\x82y\xf0\x9f"), b"truncated sequences"),
        r(Some(b"a"), b"again"),
        r(None, b""),
        r(Some(b""), b"empty key counts with keyless"),
        r(
            Some(b"\xc3\xa9t\xc3\xa9"),
            b"\xe2\x82\xac uppercase leaves non-ASCII alone",
        ),
    ]
}

/// What `uppercase` must emit: ASCII letters upper-cased, same key.
fn expected_uppercase() -> Pairs {
    inputs()
        .into_iter()
        .map(|(k, v)| (k, v.to_ascii_uppercase()))
        .collect()
}

/// What `counter` must emit, and the state it must leave.
fn expected_counter(inputs: &[(Option<Bytes>, Bytes)]) -> (Pairs, Vec<(Bytes, Bytes)>) {
    let mut counts: BTreeMap<Bytes, u64> = BTreeMap::new();
    let mut out = Vec::new();
    for (k, _) in inputs {
        let key = k.clone().unwrap_or_default();
        let n = counts.entry(key.clone()).or_default();
        *n += 1;
        let line = format!("{}:{n}", String::from_utf8_lossy(&key));
        out.push((k.clone(), line.into_bytes()));
    }
    let state = counts
        .into_iter()
        .map(|(k, n)| (k, n.to_string().into_bytes()))
        .collect();
    (out, state)
}

fn retry_inputs() -> Vec<(Option<Bytes>, Bytes)> {
    ["1", "2", "boom", "3", "4"]
        .iter()
        .map(|v| {
            let key: &[u8] = if *v == "boom" { b"b" } else { b"a" };
            (Some(key.to_vec()), v.as_bytes().to_vec())
        })
        .collect()
}

const CHECKS: [&str; 9] = [
    "uppercase",
    "counter",
    "state",
    "keyless",
    "empty value",
    "non-UTF-8",
    "retry",
    "timers",
    "processing time",
];

struct Language {
    name: &'static str,
    uppercase: PathBuf,
    counter: PathBuf,
    /// Its contract 0.2.0 `window-count` and `session`, or why the row has
    /// none.
    timers: Result<(PathBuf, PathBuf), &'static str>,
}

fn languages() -> Vec<Language> {
    // Every language builds at once: toolchain installs take turns
    // (scripts/toolchains.sh), the builds overlap them and each other.
    std::thread::scope(|s| {
        s.spawn(|| build_plugins(None));
        s.spawn(support::c_plugins);
        s.spawn(support::js_plugins);
        s.spawn(support::zig_plugins);
        s.spawn(support::go_plugins);
        s.spawn(support::assemblyscript_plugins);
        s.spawn(support::python_uppercase);
        s.spawn(support::python_counter);
        s.spawn(support::python_window_count);
        s.spawn(support::python_session);
    });
    vec![
        Language {
            name: "Rust",
            uppercase: plugins().join("uppercase.wasm"),
            counter: plugins().join("counter.wasm"),
            timers: Ok((
                plugins().join("window_count.wasm"),
                plugins().join("session.wasm"),
            )),
        },
        Language {
            name: "C",
            uppercase: support::c_plugins().join("uppercase.wasm"),
            counter: support::c_plugins().join("counter.wasm"),
            timers: Ok((
                support::c_plugins().join("window-count.wasm"),
                support::c_plugins().join("session.wasm"),
            )),
        },
        // The same checks with `uppercase` called through the packed batch
        // path (plugins/c/packed.h); its counter is the typed 0.1.0 one.
        Language {
            name: "C, packed uppercase",
            uppercase: support::c_plugins().join("uppercase-packed.wasm"),
            counter: support::c_plugins().join("counter.wasm"),
            timers: Err("n/a (see C)"),
        },
        Language {
            name: "JavaScript",
            uppercase: support::js_plugins().join("uppercase.wasm"),
            counter: support::js_plugins().join("counter.wasm"),
            timers: Ok((
                support::js_plugins().join("window-count.wasm"),
                support::js_plugins().join("session.wasm"),
            )),
        },
        Language {
            name: "Zig (packed)",
            uppercase: support::zig_plugins().join("uppercase.wasm"),
            counter: support::zig_plugins().join("counter.wasm"),
            timers: Ok((
                support::zig_plugins().join("window-count.wasm"),
                support::zig_plugins().join("session.wasm"),
            )),
        },
        Language {
            name: "Go (packed)",
            uppercase: support::go_plugins().join("uppercase.wasm"),
            counter: support::go_plugins().join("counter.wasm"),
            timers: Ok((
                support::go_plugins().join("window-count.wasm"),
                support::go_plugins().join("session.wasm"),
            )),
        },
        Language {
            name: "AssemblyScript (packed)",
            uppercase: support::assemblyscript_plugins().join("uppercase.wasm"),
            counter: support::assemblyscript_plugins().join("counter.wasm"),
            timers: Ok((
                support::assemblyscript_plugins().join("window-count.wasm"),
                support::assemblyscript_plugins().join("session.wasm"),
            )),
        },
        Language {
            name: "Python",
            uppercase: support::python_uppercase().to_owned(),
            counter: support::python_counter().to_owned(),
            timers: Ok((
                support::python_window_count().to_owned(),
                support::python_session().to_owned(),
            )),
        },
    ]
}

type Pairs = Vec<(Option<Bytes>, Bytes)>;

fn pairs(records: &[LogRecord]) -> Pairs {
    records
        .iter()
        .map(|r| (r.key.clone(), r.value.clone()))
        .collect()
}

/// Compares the outputs of the inputs selected by `pick`.
fn compare(
    got: &Pairs,
    want: &Pairs,
    pick: impl Fn(&(Option<Bytes>, Bytes)) -> bool,
) -> Result<(), String> {
    let inputs = inputs();
    if got.len() != want.len() {
        return Err(format!("{} outputs, expected {}", got.len(), want.len()));
    }
    for (i, input) in inputs.iter().enumerate() {
        if pick(input) && got[i] != want[i] {
            return Err(format!(
                "input {i}: got {:?}, expected {:?}",
                show(&got[i]),
                show(&want[i])
            ));
        }
    }
    Ok(())
}

/// `key=value`, bytes outside printable ASCII escaped (`\xNN`).
fn show((k, v): &(Option<Bytes>, Bytes)) -> String {
    let escape = |b: &[u8]| b.escape_ascii().to_string();
    format!(
        "{}={}",
        k.as_ref().map_or("(none)".into(), |k| escape(k)),
        escape(v)
    )
}

/// Runs the scenario for one language; one result per check.
/// The window-count fixture run against `wasm` with `linecook test`.
/// `plugins/fixtures/<fixture>.toml` run against `wasm` with `linecook test`.
fn fixture(fixture: &str, wasm: &std::path::Path) -> Result<(), String> {
    let name = format!("{fixture}.toml");
    let fixture = std::fs::read_to_string(
        support::workspace_root()
            .join("plugins/fixtures")
            .join(&name),
    )
    .unwrap();
    let plugin_line = fixture
        .lines()
        .find(|l| l.starts_with("plugin = "))
        .expect("the fixture names its plugin");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    let fixture = fixture.replace(
        plugin_line,
        &format!("plugin = {:?}", wasm.display().to_string()),
    );
    std::fs::write(&path, fixture).unwrap();
    let out = std::process::Command::new(support::BIN)
        .arg("test")
        .arg(&path)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// One language's cells, in `CHECKS` order; `None` where a check does not
/// apply.
type Row = Vec<Option<Result<(), String>>>;

fn run(language: &Language) -> Row {
    let setup = Setup::new(
        r#"max_batch = 100

[[topic]]
name = "up-in"
partitions = 1
[[topic]]
name = "up-out"
partitions = 1
[[topic]]
name = "ct-in"
partitions = 1
[[topic]]
name = "ct-out"
partitions = 1
[[topic]]
name = "rt-in"
partitions = 1
[[topic]]
name = "rt-out"
partitions = 1

[[route]]
topic = "up-in"
plugin = "uppercase"
config = { output = "up-out" }

[[route]]
topic = "ct-in"
plugin = "counter"
config = { output = "ct-out" }

[[route]]
topic = "rt-in"
plugin = "counter"
config = { output = "rt-out", fail_on = "boom" }
errors = { retries = 1, backoff_base_ms = 10, backoff_max_ms = 10 }
"#,
        &[],
    );
    let dir = setup.dir.path().join("plugins");
    std::fs::copy(&language.uppercase, dir.join("uppercase.wasm")).unwrap();
    std::fs::copy(&language.counter, dir.join("counter.wasm")).unwrap();
    {
        let store = setup.store();
        for topic in ["up-in", "up-out", "ct-in", "ct-out", "rt-in", "rt-out"] {
            store.create_topic(topic, 1).unwrap();
        }
        let records = |inputs: Pairs| -> Vec<NewRecord> {
            inputs
                .into_iter()
                .map(|(key, value)| NewRecord {
                    timestamp_ms: None,
                    key,
                    value,
                    headers: vec![],
                    partition: Some(0),
                })
                .collect()
        };
        store.produce("up-in", &records(inputs())).unwrap();
        store.produce("ct-in", &records(inputs())).unwrap();
        store.produce("rt-in", &records(retry_inputs())).unwrap();
    }
    let started = Instant::now();
    let mut host = setup.start();
    host.wait_ready();
    wait_until(
        Duration::from_secs(120),
        "every input to be handled",
        || {
            let status = setup.status();
            status.partitions.len() == 3 && status.partitions.iter().all(|p| p.lag == 0)
        },
    );
    eprintln!(
        "{}: scenario ran in {:.1} s (including compiling both components)",
        language.name,
        started.elapsed().as_secs_f64()
    );
    host.stop();

    let store = setup.store();
    let up = pairs(&read_all(&store, "up-out"));
    let ct = pairs(&read_all(&store, "ct-out"));
    let (want_ct, want_state) = expected_counter(&inputs());
    let want_up = expected_uppercase();
    let ct_topic = store.topic("ct-in").unwrap();
    let state = store.state_entries(&ct_topic, 0).unwrap();

    let retry = || -> Result<(), String> {
        let kept: Pairs = retry_inputs()
            .into_iter()
            .filter(|(_, v)| v != b"boom")
            .collect();
        let (want, want_state) = expected_counter(&kept);
        let got = pairs(&read_all(&store, "rt-out"));
        if got != want {
            return Err(format!(
                "outputs {:?}, expected {:?}",
                got.iter().map(show).collect::<Vec<_>>(),
                want.iter().map(show).collect::<Vec<_>>()
            ));
        }
        let topic = store.topic("rt-in").unwrap();
        let state = store.state_entries(&topic, 0).unwrap();
        if state != want_state {
            return Err(format!("state {state:?}, expected {want_state:?}"));
        }
        let dead = read_all(&store, "rt-in.dlq");
        let kind = dead.first().and_then(|r| {
            r.headers
                .iter()
                .find(|(k, _)| k == "linecook.error.kind")
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        });
        if dead.len() != 1 || dead[0].value != b"boom" || kind.as_deref() != Some("retry") {
            return Err(format!(
                "dead letters {:?} (kind {kind:?}), expected the `boom` record as `retry`",
                dead.iter()
                    .map(|r| show(&(r.key.clone(), r.value.clone())))
                    .collect::<Vec<_>>()
            ));
        }
        Ok(())
    };

    [
        compare(&up, &want_up, |_| true),
        compare(&ct, &want_ct, |_| true),
        if state == want_state {
            Ok(())
        } else {
            Err(format!("state {state:?}, expected {want_state:?}"))
        },
        compare(&up, &want_up, |(k, _)| k.is_none())
            .and(compare(&ct, &want_ct, |(k, _)| k.is_none())),
        compare(&up, &want_up, |(_, v)| v.is_empty())
            .and(compare(&ct, &want_ct, |(_, v)| v.is_empty())),
        compare(&up, &want_up, |(k, v)| {
            std::str::from_utf8(v).is_err()
                || k.as_ref().is_some_and(|k| std::str::from_utf8(k).is_err())
        })
        .and(compare(&ct, &want_ct, |(k, _)| {
            k.as_ref().is_some_and(|k| std::str::from_utf8(k).is_err())
        })),
        retry(),
    ]
    .into_iter()
    .map(Some)
    .chain(match &language.timers {
        Ok((window_count, session)) => [
            Some(fixture("window-count", window_count)),
            Some(fixture("session", session)),
        ],
        Err(_) => [None, None],
    })
    .collect()
}

#[test]
fn every_language_passes_every_check() {
    let languages = languages();
    // One language at a time: a host's start compiles its components on
    // both cores, and the big ones (JavaScript, Python) take tens of seconds.
    let results: Vec<(&str, Row)> = languages.iter().map(|l| (l.name, run(l))).collect();

    let mut table = format!("\n| language | {} |\n|---|", CHECKS.join(" | "));
    table.push_str(&"---|".repeat(CHECKS.len()));
    table.push('\n');
    for ((name, row), language) in results.iter().zip(&languages) {
        table.push_str(&format!("| {name} |"));
        for cell in row {
            table.push_str(&match cell {
                Some(Ok(())) => " pass |".to_owned(),
                Some(Err(_)) => " FAIL |".to_owned(),
                // No timer handlers in this row: why.
                None => format!(" {} |", language.timers.as_ref().err().unwrap_or(&"n/a")),
            });
        }
        table.push('\n');
    }
    eprintln!("{table}");
    // Passing tests' output is captured: scripts/test.sh prints this file.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| support::workspace_root().join("target"));
    std::fs::write(target.join("conformance.md"), &table).unwrap();
    let failures: Vec<String> = results
        .iter()
        .flat_map(|(name, row)| {
            row.iter().zip(CHECKS).filter_map(move |(cell, check)| {
                cell.as_ref()?
                    .as_ref()
                    .err()
                    .map(|e| format!("{name} / {check}: {e}"))
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "conformance failures:\n{}",
        failures.join("\n")
    );
}
