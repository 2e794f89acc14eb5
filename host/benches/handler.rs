//! Handler call cost: the same handler as a WASM component — called through
//! the typed interface (`guest.handle`, a canonical-ABI list per record and
//! a host call per output) and through the packed path (`handle-packed`, one
//! buffer each way) — and compiled natively into the host, behind the same
//! trait, for batches of 1 to 1000 records of 100 bytes. A markdown table
//! of ns/record and the WASM/native ratios is printed at the end. The C
//! `uppercase` with the packed path (`plugins/c/uppercase-packed`, through
//! `plugins/c/packed.h`) and the Zig, AssemblyScript and Go `uppercase` and
//! `counter` (packed through their hand-written glue) are measured the same
//! way, against the same native handlers; so are the Python and JavaScript
//! ones, whose generators make only the typed interface (no packed column
//! for them).
//!
//! This VM's speed moves within seconds, so the ways of calling a handler
//! are measured in turn, `ROUNDS` times (default 15), each for ~40 ms: a
//! ratio is the median of the rounds' ratios, each between measurements
//! taken next to each other, and ns/record the median of the rounds.
//!
//! Run: `cargo bench -p linecook --bench handler`, or with a filter,
//! `-- 'counter/1000'` or `-- 'Zig|Go'`: rows whose `name/batch` contains
//! one of the `|`-separated parts.

mod common;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use common::{BatchHandler, HANDLERS, MemState, Native, WasmAs, median};
use linecook::runtime::{Runtime, Shape};

const BATCHES: [usize; 4] = [1, 10, 100, 1000];

/// How long one measurement of one way of calling runs.
const TURN: Duration = Duration::from_millis(40);

fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(15)
        .max(1);
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .flat_map(|a| a.split('|').map(str::to_owned).collect::<Vec<_>>())
        .collect();
    let wanted = |row: &str| filter.is_empty() || filter.iter().any(|f| row.contains(f.as_str()));
    let runtime = Runtime::new().unwrap();
    let plugins = support::plugins();
    // (row label, directory, file, the native handler it does the work of)
    let mut handlers: Vec<(&'static str, &std::path::Path, &str, &str)> = HANDLERS
        .iter()
        .map(|&name| (name, plugins, name, name))
        .collect();
    handlers.push((
        "uppercase (C)",
        support::c_plugins(),
        "uppercase-packed",
        "uppercase",
    ));
    // The Zig, AssemblyScript and Go glue take the packed path for every
    // handler.
    handlers.extend([
        (
            "uppercase (Zig)",
            support::zig_plugins(),
            "uppercase",
            "uppercase",
        ),
        (
            "counter (Zig)",
            support::zig_plugins(),
            "counter",
            "counter",
        ),
        (
            "uppercase (AssemblyScript)",
            support::assemblyscript_plugins(),
            "uppercase",
            "uppercase",
        ),
        (
            "counter (AssemblyScript)",
            support::assemblyscript_plugins(),
            "counter",
            "counter",
        ),
        (
            "uppercase (Go)",
            support::go_plugins(),
            "uppercase",
            "uppercase",
        ),
        ("counter (Go)", support::go_plugins(), "counter", "counter"),
    ]);
    // Python and JavaScript: componentize-py and componentize-js generate
    // only the typed interface, which is how the host calls them.
    let python = |file: &'static std::path::Path| file.parent().expect("in a directory");
    handlers.extend([
        (
            "uppercase (Python)",
            python(support::python_uppercase()),
            "uppercase",
            "uppercase",
        ),
        (
            "counter (Python)",
            python(support::python_counter()),
            "counter",
            "counter",
        ),
        (
            "uppercase (JavaScript)",
            support::js_plugins(),
            "uppercase",
            "uppercase",
        ),
        (
            "counter (JavaScript)",
            support::js_plugins(),
            "counter",
            "counter",
        ),
    ]);

    println!(
        "\n| handler | batch | native ns/record | typed ns/record | typed / native | packed ns/record | packed / native |"
    );
    println!("|---|---|---|---|---|---|---|");
    for &(name, dir, file, native_name) in &handlers {
        if !BATCHES.iter().any(|b| wanted(&format!("{name}/{b}"))) {
            continue;
        }
        let prepared = common::prepare(&runtime, dir, file);
        let typed_only = typed_only(name);
        assert_eq!(
            prepared.packed(),
            !typed_only,
            "{name}: which interfaces it exports"
        );
        for batch in BATCHES {
            if !wanted(&format!("{name}/{batch}")) {
                continue;
            }
            let instance = common::instance(&prepared, native_name);
            // A component with the packed path also has the typed one
            // (0.2.0's `guest.handle`); one without is called as it is.
            let shape = if typed_only {
                instance.shape()
            } else {
                Shape::V2
            };
            let mut typed = WasmAs(instance, shape);
            let mut packed = (!typed_only)
                .then(|| WasmAs(common::instance(&prepared, native_name), Shape::Packed));
            let mut native = Native::new(native_name);
            let mut ways: Vec<&mut dyn BatchHandler> = vec![&mut native, &mut typed];
            if let Some(packed) = packed.as_mut() {
                ways.push(packed);
            }
            // Each in its own record type, built once, outside the timing.
            let batches: Vec<_> = ways
                .iter()
                .map(|way| way.batch(common::records(batch)))
                .collect();
            // Calls per measurement, from a warm-up of each way.
            let calls: Vec<u64> = ways
                .iter_mut()
                .zip(&batches)
                .map(|(way, records)| {
                    let started = Instant::now();
                    let mut calls = 0u64;
                    while started.elapsed() < TURN * 5 {
                        std::hint::black_box(way.handle(records, Box::new(MemState::default())));
                        calls += 1;
                    }
                    (calls / 5).max(1)
                })
                .collect();
            // ns/record of each way, round by round.
            let mut per_round: Vec<Vec<f64>> = vec![Vec::new(); ways.len()];
            for _ in 0..rounds {
                for (i, way) in ways.iter_mut().enumerate() {
                    let started = Instant::now();
                    for _ in 0..calls[i] {
                        std::hint::black_box(
                            way.handle(&batches[i], Box::new(MemState::default())),
                        );
                    }
                    per_round[i].push(
                        started.elapsed().as_nanos() as f64 / (calls[i] * batch as u64) as f64,
                    );
                }
            }
            let ratio = |i: usize| {
                median(
                    per_round[i]
                        .iter()
                        .zip(&per_round[0])
                        .map(|(way, native)| way / native)
                        .collect(),
                )
            };
            let (native_ns, typed_ns) =
                (median(per_round[0].clone()), median(per_round[1].clone()));
            let packed = if per_round.len() > 2 {
                format!("{:.0} | {:.2}×", median(per_round[2].clone()), ratio(2))
            } else {
                "— | —".to_owned()
            };
            println!(
                "| {name} | {batch} | {native_ns:.0} | {typed_ns:.0} | {:.1}× | {packed} |",
                ratio(1)
            );
        }
    }
    println!(
        "\n(ratios: the median of {rounds} rounds' ratios, the ways measured in turn, ~{} ms each)",
        TURN.as_millis()
    );
}

/// Whether the row's component has only the typed interface.
fn typed_only(name: &str) -> bool {
    name.ends_with("(Python)") || name.ends_with("(JavaScript)")
}
