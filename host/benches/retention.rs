//! Soak: does the redb file stay bounded under steady traffic with
//! retention? A producer appends 100-byte records at a fixed rate for
//! `LINECOOK_SOAK_SECS` (default 600) while retention (`retention_ms` =
//! `LINECOOK_SOAK_RETENTION_MS`, default 60 s) runs every second, as the
//! host runs it; every minute it prints the records stored and the file's
//! size, then the size growth of the second half against the first. A run
//! without retention is the baseline: its file grows with every record.
//!
//! `cargo bench -p linecook --bench retention`

use std::time::{Duration, Instant};

use linecook::config::Config;
use linecook::metrics::Metrics;
use linecook::record::NewRecord;
use linecook::retention::Plan;
use linecook::store::{STORE_FILE, Store};
use tokio_util::sync::CancellationToken;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Appends at `rate` records/s for `secs`, sampling every `every`; returns
/// the file size at each sample.
fn soak(retention_ms: Option<u64>, rate: u64, secs: u64, every: Duration) -> Vec<u64> {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(Store::open(dir.path()).unwrap());
    let topic = store.create_topic("soak", 4).unwrap();
    let retention = retention_ms.map_or(String::new(), |ms| {
        format!("[retention]\nms = {ms}\ncheck_interval_ms = 1000\n")
    });
    let config_path = dir.path().join("linecook.toml");
    std::fs::write(&config_path, format!("group = \"soak\"\n{retention}")).unwrap();
    let plan = Plan::from_config(&Config::load(&config_path).unwrap());
    let stop = CancellationToken::new();
    let enforcer = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || plan.run(&store, &Metrics::new(), &stop))
    };
    // 20 appends a second, each a transaction of rate/20 records.
    let per_append = (rate / 20).max(1);
    let value = vec![b'x'; 100];
    let started = Instant::now();
    let mut next_sample = every;
    let mut appended = 0u64;
    let mut sizes = Vec::new();
    println!(
        "retention {:>8}  {:>6} {:>10} {:>10} {:>12}",
        retention_ms.map_or("none".to_owned(), |ms| format!("{ms} ms")),
        "secs",
        "appended",
        "stored",
        "file bytes"
    );
    while started.elapsed() < Duration::from_secs(secs) {
        let records: Vec<NewRecord> = (0..per_append)
            .map(|i| NewRecord {
                key: Some(format!("k{}", (appended + i) % 64).into_bytes()),
                value: value.clone(),
                headers: vec![],
                partition: None,
                timestamp_ms: None,
            })
            .collect();
        store.produce("soak", &records).unwrap();
        appended += per_append;
        let due = Duration::from_secs_f64(appended as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        if started.elapsed() >= next_sample {
            next_sample += every;
            let size = std::fs::metadata(dir.path().join(STORE_FILE))
                .unwrap()
                .len();
            let stored = store.stored_records().unwrap();
            sizes.push(size);
            println!(
                "                   {:>6} {:>10} {:>10} {:>12}",
                started.elapsed().as_secs(),
                appended,
                stored,
                size
            );
        }
    }
    stop.cancel();
    enforcer.join().unwrap();
    let starts = store.start_offsets(&topic).unwrap();
    println!("log starts at the end: {starts:?}");
    sizes
}

/// Growth of the file over the second half of the samples, as a fraction of
/// its size at the half.
fn second_half_growth(sizes: &[u64]) -> f64 {
    let half = sizes[sizes.len() / 2 - 1] as f64;
    (*sizes.last().unwrap() as f64 - half) / half
}

fn main() {
    let secs = env("LINECOOK_SOAK_SECS", 600);
    let rate = env("LINECOOK_SOAK_RATE", 2_000);
    let retention_ms = env("LINECOOK_SOAK_RETENTION_MS", 60_000);
    let every = Duration::from_secs(env("LINECOOK_SOAK_SAMPLE_SECS", 60));
    println!(
        "soak: {rate} records/s of 100 bytes into 4 partitions for {secs} s, retention {retention_ms} ms"
    );
    // The baseline runs a fifth as long: its growth rate is what matters.
    let baseline = soak(None, rate, (secs / 5).max(2 * every.as_secs()), every);
    let kept = soak(Some(retention_ms), rate, secs, every);
    if kept.len() >= 2 && baseline.len() >= 2 {
        println!(
            "file growth over the second half: {:+.1}% with retention, {:+.1}% without",
            100.0 * second_half_growth(&kept),
            100.0 * second_half_growth(&baseline)
        );
    }
}
