//! What the benchmarks share: the same three handlers compiled natively and
//! as WASM components, behind one trait, driven with the same records.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use linecook::checkpoint::{Entries, StateReader};
use linecook::config::Limits;
use linecook::record::OutputRecord;
use linecook::record::{BatchEffects, LogRecord};
use linecook::runtime::bindings::Context;
use linecook::runtime::{Batch, CallTime, Instance, Labels, Prepared, Runtime, Shape};
use linecook::store::StoreError;

/// The handlers measured, by plugin name.
pub const HANDLERS: [&str; 3] = ["identity", "uppercase", "counter"];

/// One batch call: the contract the worker drives.
pub trait BatchHandler {
    /// Records read from the log, in the form this handler takes (moved,
    /// as the worker does).
    fn batch(&self, records: Vec<LogRecord>) -> Batch;
    fn handle(&mut self, batch: &Batch, reader: Box<dyn StateReader>) -> BatchEffects;
}

/// A WASM component instance, called the way the worker would call it.
pub struct Wasm(pub Instance);

/// A WASM component instance called through one interface: `Shape::V2`
/// forces the typed `guest.handle` on a component that also exports the
/// packed path.
pub struct WasmAs(pub Instance, pub Shape);

impl BatchHandler for Wasm {
    fn batch(&self, records: Vec<LogRecord>) -> Batch {
        Batch::new(self.0.shape(), "in", records)
    }

    fn handle(&mut self, batch: &Batch, reader: Box<dyn StateReader>) -> BatchEffects {
        self.0
            .handle(batch, reader, CallTime::default())
            .expect("the handler succeeds")
            .0
    }
}

impl BatchHandler for WasmAs {
    fn batch(&self, records: Vec<LogRecord>) -> Batch {
        Batch::new(self.1, "in", records)
    }

    fn handle(&mut self, batch: &Batch, reader: Box<dyn StateReader>) -> BatchEffects {
        self.0
            .handle(batch, reader, CallTime::default())
            .expect("the handler succeeds")
            .0
    }
}

/// The same handler written in Rust and compiled into the host.
pub struct Native {
    kind: &'static str,
    output: String,
}

impl Native {
    pub fn new(kind: &'static str) -> Native {
        Native {
            kind,
            output: "out".into(),
        }
    }
}

impl BatchHandler for Native {
    fn batch(&self, records: Vec<LogRecord>) -> Batch {
        Batch::new(Shape::V1, "in", records)
    }

    fn handle(&mut self, batch: &Batch, reader: Box<dyn StateReader>) -> BatchEffects {
        let Batch::V1(batch) = batch else {
            panic!("native handlers take the host's record type")
        };
        let mut effects = BatchEffects::default();
        for record in batch {
            match self.kind {
                "identity" => effects.outputs.push(OutputRecord {
                    topic: self.output.clone(),
                    key: record.key.clone(),
                    value: record.value.clone(),
                    headers: record
                        .headers
                        .iter()
                        .map(|h| (h.key.clone(), h.value.clone()))
                        .collect(),
                    timestamp_ms: None,
                }),
                "uppercase" => effects.outputs.push(OutputRecord {
                    topic: self.output.clone(),
                    key: record.key.clone(),
                    value: record.value.to_ascii_uppercase(),
                    headers: Vec::new(),
                    timestamp_ms: None,
                }),
                "counter" => {
                    let key = record.key.clone().unwrap_or_default();
                    let current = match effects.state.get(&key) {
                        Some(v) => v.clone(),
                        None => reader.get(&key).expect("state read"),
                    };
                    let count = current
                        .and_then(|v| String::from_utf8(v).ok()?.parse::<u64>().ok())
                        .unwrap_or(0)
                        + 1;
                    effects
                        .state
                        .insert(key.clone(), Some(count.to_string().into_bytes()));
                    let line = format!("{}:{count}", String::from_utf8_lossy(&key));
                    effects.outputs.push(OutputRecord {
                        topic: self.output.clone(),
                        key: record.key.clone(),
                        value: line.into_bytes(),
                        headers: Vec::new(),
                        timestamp_ms: None,
                    });
                }
                other => panic!("no native {other}"),
            }
        }
        effects
    }
}

/// State held in memory, for measuring the call alone.
#[derive(Default)]
pub struct MemState(pub BTreeMap<Vec<u8>, Vec<u8>>);

impl StateReader for MemState {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.get(key).cloned())
    }

    fn scan(
        &self,
        prefix: &[u8],
        _start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        Ok(self
            .0
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

/// `n` records of 100-byte values, keyed over 1000 keys.
pub fn records(n: usize) -> Vec<LogRecord> {
    (0..n)
        .map(|i| LogRecord {
            partition: 0,
            offset: i as u64,
            timestamp_ms: 0,
            key: Some(format!("key-{}", i % 1000).into_bytes()),
            value: value(i),
            headers: Vec::new(),
        })
        .collect()
}

/// The middle value (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A 100-byte value.
pub fn value(i: usize) -> Vec<u8> {
    let mut v = format!("record {i:08} ").into_bytes();
    v.resize(100, b'x');
    v
}

/// Compiles `plugins/<name>.wasm` (built by the test support).
pub fn prepare(runtime: &Runtime, dir: &Path, name: &str) -> Prepared {
    let bytes = std::fs::read(dir.join(format!("{name}.wasm"))).unwrap();
    runtime.prepare(&bytes).unwrap()
}

/// A started instance of `prepared` emitting to `out`.
pub fn instance(prepared: &Prepared, name: &str) -> Instance {
    let context = Context {
        plugin: name.into(),
        version: "bench".into(),
        topic: "in".into(),
        partition: 0,
        config: vec![("output".into(), "out".into())],
    };
    let labels = Labels {
        plugin: name.into(),
        version: "bench".into(),
        topic: "in".into(),
        partition: 0,
    };
    Instance::start(
        prepared,
        labels,
        Limits::default(),
        &context,
        Box::new(MemState::default()),
    )
    .unwrap()
}
