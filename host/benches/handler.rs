//! Handler call cost: the same handler as a WASM component — called through
//! the typed interface (`guest.handle`, a canonical-ABI list per record and
//! a host call per output) and through the packed path (`handle-packed`, one
//! buffer each way) — and compiled natively into the host, behind the same
//! trait, for batches of 1 to 1000 records of 100 bytes. Criterion
//! measures; a markdown table of ns/record and the WASM/native ratios is
//! printed at the end. The C `uppercase` with the packed path
//! (`plugins/c/uppercase-packed`, through `plugins/c/packed.h`) and the Zig,
//! AssemblyScript and Go `uppercase` and `counter` (packed through their
//! hand-written glue) are measured the same way, against the same native
//! handlers; so are the Python and JavaScript ones, whose generators make
//! only the typed interface (no packed column for them).
//!
//! Run: `cargo bench -p linecook --bench handler`

mod common;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::{BatchHandler, HANDLERS, MemState, Native, WasmAs};
use criterion::{BenchmarkId, Criterion};
use linecook::runtime::{Runtime, Shape};

const BATCHES: [usize; 4] = [1, 10, 100, 1000];

/// (handler, batch, "typed" | "packed" | "native") → ns/record of each
/// criterion sample.
type Samples = BTreeMap<(&'static str, usize, &'static str), Vec<f64>>;

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .configure_from_args();
    let runtime = Runtime::new().unwrap();
    let plugins = support::plugins();
    let samples: Rc<RefCell<Samples>> = Rc::default();
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

    for &(name, dir, file, native_name) in &handlers {
        let prepared = common::prepare(&runtime, dir, file);
        let mut group = c.benchmark_group(name);
        let typed_only = typed_only(name);
        assert_eq!(
            prepared.packed(),
            !typed_only,
            "{name}: which interfaces it exports"
        );
        for batch in BATCHES {
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
            let mut kinds: Vec<(&str, &mut dyn BatchHandler)> = vec![("typed", &mut typed)];
            if let Some(packed) = packed.as_mut() {
                kinds.push(("packed", packed));
            }
            kinds.push(("native", &mut native));
            for (kind, handler) in kinds {
                // Each in its own record type, built once, outside the timing.
                let records = handler.batch(common::records(batch));
                let samples = samples.clone();
                group.bench_with_input(BenchmarkId::new(kind, batch), &batch, |b, _| {
                    b.iter_custom(|iters| {
                        let started = Instant::now();
                        for _ in 0..iters {
                            let effects = handler.handle(&records, Box::new(MemState::default()));
                            std::hint::black_box(effects);
                        }
                        let elapsed = started.elapsed();
                        samples
                            .borrow_mut()
                            .entry((name, batch, kind))
                            .or_default()
                            .push(elapsed.as_nanos() as f64 / (iters as f64 * batch as f64));
                        elapsed
                    })
                });
            }
        }
        group.finish();
    }
    c.final_summary();

    let median = |v: &Vec<f64>| {
        let mut v = v.clone();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let samples = samples.borrow();
    println!(
        "\n| handler | batch | native ns/record | typed ns/record | typed / native | packed ns/record | packed / native |"
    );
    println!("|---|---|---|---|---|---|---|");
    for &(name, ..) in &handlers {
        for batch in BATCHES {
            // A filter on the command line (`-- counter/packed`) leaves rows out.
            let get = |kind| samples.get(&(name, batch, kind)).map(median);
            let (Some(native), Some(typed)) = (get("native"), get("typed")) else {
                continue;
            };
            let packed = match get("packed") {
                Some(packed) => format!("{packed:.0} | {:.2}×", packed / native),
                None if typed_only(name) => "— | —".to_owned(),
                None => continue,
            };
            println!(
                "| {name} | {batch} | {native:.0} | {typed:.0} | {:.1}× | {packed} |",
                typed / native,
            );
        }
    }
}

/// Whether the row's component has only the typed interface.
fn typed_only(name: &str) -> bool {
    name.ends_with("(Python)") || name.ends_with("(JavaScript)")
}
