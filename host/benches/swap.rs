//! Hot-swap figures, measured on a running host under a steady stream:
//! - swap pause per partition: time between the last batch of the old version
//!   and the first batch of the new (not counting time waiting for records),
//!   as the host reports it in `status`;
//! - file drop → every partition on the new version, as seen through `status`
//!   (includes the watcher's debounce).
//!
//! Run: `cargo bench -p linecook --bench swap` (SWAPS=n to change the count).
//! Prints a markdown table.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use linecook::client::Access;
use linecook::config::Config;
use linecook::plugins::digest;
use linecook::record::NewRecord;
use support::Setup;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

struct Figures {
    size: u64,
    produced: u64,
    pauses_ms: Vec<f64>,
    first_drop_ms: f64,
    drop_to_all_ms: Vec<f64>,
    compile_ms: Option<u64>,
    /// Ordinary batch boundaries of the same run: (samples, p50, p99) as
    /// bucket upper bounds of `linecook_batch_wait_seconds`, in ms.
    waits: (u64, f64, f64),
}

/// Samples, p50 and p99 (upper bounds of their buckets, ms) of the
/// `linecook_batch_wait_seconds` histogram in an OpenMetrics scrape.
fn wait_percentiles(metrics: &str) -> (u64, f64, f64) {
    let mut buckets: Vec<(f64, u64)> = metrics
        .lines()
        .filter(|l| l.starts_with("linecook_batch_wait_seconds_bucket{"))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let count = l.rsplit(' ').next()?.parse().ok()?;
            Some((
                if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                },
                count,
            ))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map_or(0, |b| b.1);
    let at = |q: f64| {
        let want = (total as f64 * q).ceil() as u64;
        buckets
            .iter()
            .find(|b| b.1 >= want)
            .map_or(f64::NAN, |b| b.0 * 1e3)
    };
    (total, at(0.5), at(0.99))
}

/// Swaps `v1`/`v2` (installed as plugin `tag`) `swaps` times on a running host
/// under a steady stream.
fn measure(v1: &Path, v2: &Path, swaps: usize, partitions: u32) -> Figures {
    let builds = [
        (v2.to_owned(), digest(&std::fs::read(v2).unwrap())),
        (v1.to_owned(), digest(&std::fs::read(v1).unwrap())),
    ];
    let setup = Setup::new(
        &format!(
            "max_batch = 100\n[[topic]]\nname = \"in\"\npartitions = {partitions}\n[[topic]]\nname = \"out\"\npartitions = {partitions}\n[[route]]\ntopic = \"in\"\nplugin = \"tag\"\nconfig = {{ output = \"out\" }}\n"
        ),
        &[],
    );
    std::fs::copy(v1, setup.dir.path().join("plugins/tag.wasm")).unwrap();
    let mut host = setup.start();
    host.wait_ready();
    // Status over one client, as the producer does: a `linecook status`
    // process every 5 ms would compete for this 2-core machine with the
    // very pauses it measures.
    let config = Config::load(&setup.config).unwrap();
    let watcher = Access::connect(&config).unwrap();
    let status = || watcher.status(&config).unwrap();

    // A steady stream on every partition while swapping.
    let stop = Arc::new(AtomicBool::new(false));
    let producer = std::thread::spawn({
        let stop = stop.clone();
        let config = Config::load(&setup.config).unwrap();
        move || {
            let access = Access::connect(&config).unwrap();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let records = (i..i + 64)
                    .map(|n| NewRecord {
                        timestamp_ms: None,
                        key: Some(format!("k{}", n % 64).into_bytes()),
                        value: vec![b'x'; 100],
                        headers: vec![],
                        partition: None,
                    })
                    .collect();
                access.produce("in", records).unwrap();
                i += 64;
                std::thread::sleep(Duration::from_millis(2));
            }
            i
        }
    });

    let mut pauses_ms = Vec::new();
    let mut drop_to_all_ms = Vec::new();
    for n in 0..swaps {
        let (path, want) = &builds[n % 2];
        let tmp = setup.dir.path().join("plugins/tag.wasm.partial");
        std::fs::copy(path, &tmp).unwrap();
        let dropped = Instant::now();
        std::fs::rename(&tmp, setup.dir.path().join("plugins/tag.wasm")).unwrap();
        while !status()
            .partitions
            .iter()
            .all(|p| p.version.as_deref() == Some(want.as_str()) && p.swaps == n as u64 + 1)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        drop_to_all_ms.push(dropped.elapsed().as_secs_f64() * 1e3);
        // Let each partition run its first batch with the new version so
        // the pause is recorded, then read them all.
        std::thread::sleep(Duration::from_millis(100));
        for p in &status().partitions {
            if let Some(us) = p.last_swap_pause_us {
                pauses_ms.push(us as f64 / 1e3);
            }
        }
    }
    let compile_ms = status()
        .plugins
        .iter()
        .flat_map(|p| &p.versions)
        .find(|v| v.digest == builds[0].1)
        .and_then(|v| v.prepare_ms);
    let waits = wait_percentiles(&setup.admin_get("/metrics"));
    stop.store(true, Ordering::Relaxed);
    let produced = producer.join().unwrap();
    host.stop();
    pauses_ms.sort_by(f64::total_cmp);
    let first_drop_ms = drop_to_all_ms.remove(0);
    drop_to_all_ms.sort_by(f64::total_cmp);
    Figures {
        size: std::fs::metadata(v1).unwrap().len(),
        produced,
        pauses_ms,
        first_drop_ms,
        drop_to_all_ms,
        compile_ms,
        waits,
    }
}

fn main() {
    let swaps: usize = std::env::var("SWAPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let partitions = 4;
    let v1 = support::plugins();
    let v2 = support::build_plugins(Some("v2"));
    let runs = [
        (
            "tag",
            measure(
                &v1.join("tag.wasm"),
                &v2.join("tag.wasm"),
                swaps,
                partitions,
            ),
        ),
        (
            "big-tag",
            measure(
                &v1.join("big_tag.wasm"),
                &v2.join("big_tag.wasm"),
                swaps,
                partitions,
            ),
        ),
    ];
    println!(
        "\nhot swap, {partitions} partitions, {swaps} swaps v1<->v2 per plugin, 100-byte records streaming meanwhile\n"
    );
    println!("| plugin | size (bytes) | figure | samples | median | p99 | max |");
    println!("|---|---|---|---|---|---|---|");
    for (name, f) in &runs {
        println!(
            "| {name} | {} | swap pause per partition (ms) | {} | {:.3} | {:.3} | {:.3} |",
            f.size,
            f.pauses_ms.len(),
            percentile(&f.pauses_ms, 0.5),
            percentile(&f.pauses_ms, 0.99),
            f.pauses_ms.last().unwrap()
        );
        println!(
            "| {name} | {} | ordinary batch boundary, same run (ms, bucket upper bound: linecook_batch_wait_seconds) | {} | ≤ {} | ≤ {} | |",
            f.size, f.waits.0, f.waits.1, f.waits.2
        );
        println!(
            "| {name} | {} | file drop → all partitions on it, known version (ms, incl. {} ms debounce) | {} | {:.1} | {:.1} | {:.1} |",
            f.size,
            linecook::plugins::watcher::DEBOUNCE.as_millis(),
            f.drop_to_all_ms.len(),
            percentile(&f.drop_to_all_ms, 0.5),
            percentile(&f.drop_to_all_ms, 0.99),
            f.drop_to_all_ms.last().unwrap()
        );
        println!(
            "| {name} | {} | first drop of v2 → all partitions on it (ms, compiles v2: {} ms) | 1 | {:.1} | | |",
            f.size,
            f.compile_ms.map_or("?".to_owned(), |m| m.to_string()),
            f.first_drop_ms
        );
        let _ = f.produced;
    }
}
