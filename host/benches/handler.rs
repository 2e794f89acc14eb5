//! Handler call cost: the same handler as a WASM component and compiled
//! natively into the host, behind the same trait, for batches of 1 to 1000
//! records of 100 bytes. Criterion measures; a markdown table of ns/record
//! and the WASM/native ratio is printed at the end.
//!
//! Run: `cargo bench -p linecook --bench handler`

mod common;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::{BatchHandler, HANDLERS, MemState, Native, Wasm};
use criterion::{BenchmarkId, Criterion};
use linecook::runtime::Runtime;

const BATCHES: [usize; 4] = [1, 10, 100, 1000];

/// (handler, batch, "wasm" | "native") → ns/record of each criterion sample.
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

    for name in HANDLERS {
        let prepared = common::prepare(&runtime, plugins, name);
        let mut group = c.benchmark_group(name);
        for batch in BATCHES {
            let mut wasm = Wasm(common::instance(&prepared, name));
            let mut native = Native::new(name);
            for (kind, handler) in [
                ("wasm", &mut wasm as &mut dyn BatchHandler),
                ("native", &mut native as &mut dyn BatchHandler),
            ] {
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
    println!("\n| handler | batch | native ns/record | WASM ns/record | WASM / native |");
    println!("|---|---|---|---|---|");
    for name in HANDLERS {
        for batch in BATCHES {
            let native = median(&samples[&(name, batch, "native")]);
            let wasm = median(&samples[&(name, batch, "wasm")]);
            println!(
                "| {name} | {batch} | {native:.0} | {wasm:.0} | {:.1}× |",
                wasm / native
            );
        }
    }
}
