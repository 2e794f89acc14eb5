//! Running handler components: one `Engine` and `Linker` for the process, one
//! pre-instantiated `HandlerPre` per plugin version, one `Store` + instance per
//! partition.
//!
//! Lifetimes: the [`Runtime`] lives as long as the host. A [`Prepared`] plugin
//! version lives while any partition may still adopt or run it. An
//! [`Instance`] serves one partition until it is replaced (new version),
//! discarded (after a trap) or the partition is released.
//!
//! **Architecture invariant:** the runtime knows nothing about redb or the
//! log. It reads committed state through `checkpoint::StateReader` and hands
//! back a batch's effects; committing them is the worker's business.

pub mod bindings;
mod host;
pub mod packed;
mod stdio;

use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::types::{ComponentExtern, ComponentItem};
use wasmtime::component::{Component, ComponentExportIndex, Func, HasSelf, Linker};
use wasmtime::{Engine, Trap};

use crate::checkpoint::StateReader;
use crate::config::Limits;
use crate::record::{BatchEffects, LogRecord, TimeDomain, Timer};
use bindings::{Context, HandlerError, StreamRecord, v1, v2};
use host::BatchScope;
pub use host::{CallTime, HostState, Labels, MAX_SCAN_PAGE};

/// How often the engine's epoch advances: the granularity of CPU-time limits.
pub const EPOCH_TICK: std::time::Duration = std::time::Duration::from_millis(10);

/// Why a module cannot be used as a handler.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrepareError {
    /// The bytes are not WebAssembly at all.
    #[error("not a WebAssembly file (no `\\0asm` header)")]
    NotWasm,
    /// A core module, not a component.
    #[error(
        "this is a core WebAssembly module, not a component; build for wasm32-wasip2 or make it one with `linecook sdk componentize`"
    )]
    CoreModule,
    /// The component failed to validate or compile.
    #[error("invalid component: {0:#}")]
    Compile(wasmtime::Error),
    /// The component imports something the host does not provide, or lacks
    /// the world's exports.
    #[error("does not match the linecook:handler world: {0:#}")]
    World(wasmtime::Error),
    /// The host's trust policy refused it (`trusted_keys`): unsigned, or
    /// not signed by a trusted key.
    #[error("refused by trusted_keys: {0}")]
    Untrusted(String),
    /// The component exports neither contract's functions.
    #[error(
        "exports neither linecook:handler 0.1.0's `init`/`handle` nor 0.2.0's `{GUEST_0_2}` interface (it exports: {0})"
    )]
    NoContract(String),
}

/// The export that says a component implements 0.2.0.
pub const GUEST_0_2: &str = "linecook:handler/guest@0.2.0";
/// The optional export of 0.2.0's packed batch path.
pub const PACKED_0_2: &str = "linecook:handler/packed@0.2.0";

/// The contract a component implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Contract {
    /// `linecook:handler@0.1.0`: records in, state and outputs.
    #[serde(rename = "0.1.0")]
    V0_1,
    /// `linecook:handler@0.2.0`: adds timers, output timestamps, state TTL.
    #[serde(rename = "0.2.0")]
    V0_2,
}

impl Contract {
    /// The contract's version, as users see it.
    pub fn version(self) -> &'static str {
        match self {
            Contract::V0_1 => "0.1.0",
            Contract::V0_2 => "0.2.0",
        }
    }

    /// Which contract a component with these export names implements: the
    /// `guest` interface names 0.2.0; bare `init` and `handle`, 0.1.0.
    pub fn of_exports<'a>(exports: impl IntoIterator<Item = &'a str>) -> Option<Contract> {
        let (mut init, mut handle) = (false, false);
        for name in exports {
            match name {
                GUEST_0_2 => return Some(Contract::V0_2),
                "init" => init = true,
                "handle" => handle = true,
                _ => {}
            }
        }
        (init && handle).then_some(Contract::V0_1)
    }
}

impl std::fmt::Display for Contract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.version())
    }
}

/// Whether an error was the kernel saying a resource is busy (EBUSY):
/// worth trying again, unlike anything about the component.
fn busy(e: &wasmtime::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.raw_os_error() == Some(libc::EBUSY))
    })
}

/// Why an instance could not be created for a partition.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstanceError {
    /// Instantiation failed (e.g. a start function trapped, or limits).
    #[error("instantiation failed: {0:#}")]
    Instantiate(wasmtime::Error),
    /// `init` returned an error.
    #[error("init failed: {0}")]
    Init(String),
    /// `init` trapped.
    #[error("init trapped: {0}")]
    InitTrap(TrapReport),
    /// `init` exceeded a limit.
    #[error("init exceeded a limit: {0}")]
    InitLimit(String),
}

/// Why a batch failed. The batch's effects are discarded in every case.
#[derive(Debug)]
pub enum BatchFailure {
    /// The handler returned an error: an answer, the instance is intact.
    Handler(HandlerError),
    /// The guest trapped: its memory may be corrupt, so the instance must be
    /// discarded.
    Trap(TrapReport),
    /// The guest exceeded a limit (CPU time, memory, outputs, state value
    /// size) and was stopped: which, and by how much. Discard the instance.
    Limit(String),
}

impl BatchFailure {
    /// Short name of the failure kind, for dead-letter headers and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            BatchFailure::Handler(HandlerError::Retry(_)) => "retry",
            BatchFailure::Handler(HandlerError::Poison(_)) => "poison",
            BatchFailure::Handler(HandlerError::Fatal(_)) => "fatal",
            BatchFailure::Trap(_) => "trap",
            BatchFailure::Limit(_) => "limit",
        }
    }

    /// Whether the instance must be discarded.
    pub fn discards_instance(&self) -> bool {
        matches!(self, BatchFailure::Trap(_) | BatchFailure::Limit(_))
    }
}

impl std::fmt::Display for BatchFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchFailure::Handler(HandlerError::Retry(m)) => {
                write!(f, "handler asked to retry: {m}")
            }
            BatchFailure::Handler(HandlerError::Fatal(m)) => {
                write!(f, "handler failed fatally: {m}")
            }
            BatchFailure::Handler(HandlerError::Poison(p)) => {
                write!(
                    f,
                    "handler rejected record {} of the batch: {}",
                    p.index, p.message
                )
            }
            BatchFailure::Trap(trap) => write!(f, "handler trapped: {trap}"),
            BatchFailure::Limit(what) => write!(f, "handler stopped: {what}"),
        }
    }
}

/// A trap, for people: one line with what the guest said last on stderr
/// (a panic message, say) and the kind of trap. The whole error, with its
/// wasm backtrace, goes to the debug log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrapReport {
    /// The one line.
    pub summary: String,
}

impl std::fmt::Display for TrapReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.summary)
    }
}

/// Longest guest message a trap's summary quotes.
const MAX_SAID: usize = 400;

/// The one line for a trap of `kind` after the guest wrote `said` to stderr
/// (oldest first): the guest's last meaningful lines — without Rust's
/// "thread … panicked" prefix and backtrace hint — then the kind.
fn trap_summary<'a>(kind: &str, said: impl Iterator<Item = &'a str>) -> String {
    let lines: Vec<&str> = said
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
        .collect();
    let mut message = lines[lines.len().saturating_sub(3)..].join(" ");
    if let Some(at) = message.find("panicked at ")
        && message.starts_with("thread ")
    {
        message.drain(..at);
    }
    if message.len() > MAX_SAID {
        let mut cut = MAX_SAID;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    if message.is_empty() {
        kind.to_owned()
    } else {
        format!("{message} ({kind})")
    }
}

/// The process-wide engine and linker.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

/// A compiled, type-checked plugin version, ready to instantiate cheaply.
#[derive(Clone)]
pub struct Prepared {
    pre: Pre,
    /// `packed.handle-packed`, when exported.
    packed: Option<ComponentExportIndex>,
    /// Whether it imports `wasi:http/outgoing-handler`.
    http: bool,
}

#[derive(Clone)]
enum Pre {
    V1(v1::HandlerPre<HostState>),
    V2(v2::HandlerPre<HostState>),
}

impl Prepared {
    /// The contract the version implements.
    pub fn contract(&self) -> Contract {
        match self.pre {
            Pre::V1(_) => Contract::V0_1,
            Pre::V2(_) => Contract::V0_2,
        }
    }

    /// Whether it exports 0.2.0's packed batch path, which the host then
    /// calls instead of `guest.handle`.
    pub fn packed(&self) -> bool {
        self.packed.is_some()
    }

    /// Whether it imports `wasi:http/outgoing-handler`: it makes outbound
    /// requests, which its route's `http` table must allow.
    pub fn http(&self) -> bool {
        self.http
    }

    fn engine(&self) -> &Engine {
        match &self.pre {
            Pre::V1(pre) => pre.engine(),
            Pre::V2(pre) => pre.engine(),
        }
    }
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared").finish_non_exhaustive()
    }
}

impl Runtime {
    /// Creates the engine and links the host imports (WASI p2 without
    /// capabilities, plus `state`, `emit`, `log`).
    pub fn new() -> anyhow::Result<Runtime> {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        // CPU-time limits: every call gets a deadline in epoch ticks, and a
        // ticker thread advances the epoch.
        config.epoch_interruption(true);
        if let Some(dir) = compile_cache_dir() {
            // Every linecook process on the machine may share it: `linecook
            // test` and `plugins check` compile on every run otherwise, and
            // a large component (Python, JavaScript) takes seconds.
            let mut cache = wasmtime::CacheConfig::new();
            cache.with_directory(&dir);
            let cache = wasmtime::Cache::new(cache)
                .map_err(|e| anyhow::anyhow!("{COMPILE_CACHE} = {}: {e:#}", dir.display()))?;
            config.cache(Some(cache));
        }
        let engine = Engine::new(&config)?;
        let ticker = engine.clone();
        std::thread::Builder::new()
            .name("lc-epoch".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(EPOCH_TICK);
                    ticker.increment_epoch();
                }
            })?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        // Every component may import `wasi:http`; a request is refused unless
        // the route's `http` allows it (`egress`).
        wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker)?;
        // Both contracts' imports: their names carry their versions, so one
        // linker serves 0.1.0 and 0.2.0 components side by side.
        v1::Handler::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)?;
        v2::Handler::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)?;
        // The same `get-many`, reading its keys in place (`get_many_in_place`).
        linker.allow_shadowing(true);
        linker
            .instance("linecook:handler/state@0.2.0")?
            .func_wrap("get-many", |store, (keys,)| {
                HostState::get_many_in_place(store, keys).map(|values| (values,))
            })?;
        linker.allow_shadowing(false);
        Ok(Runtime { engine, linker })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles `bytes` and checks them against the world. Slow (Cranelift):
    /// call it off any partition's path.
    pub fn prepare(&self, bytes: &[u8]) -> Result<Prepared, PrepareError> {
        self.link(&self.compile(bytes)?)
    }

    /// Validates and compiles `bytes` into a component. Slow (Cranelift).
    pub fn compile(&self, bytes: &[u8]) -> Result<Component, PrepareError> {
        check_header(bytes)?;
        Component::new(&self.engine, bytes).map_err(PrepareError::Compile)
    }

    /// Checks a compiled component against its contract's world and
    /// pre-instantiates it.
    pub fn link(&self, component: &Component) -> Result<Prepared, PrepareError> {
        let ty = component.component_type();
        let exports: Vec<&str> = ty.exports(&self.engine).map(|(name, _)| name).collect();
        let contract = Contract::of_exports(exports.iter().copied())
            .ok_or_else(|| PrepareError::NoContract(list_or_nothing(&exports)))?;
        let packed = component
            .get_export_index(None, PACKED_0_2)
            .and_then(|iface| component.get_export_index(Some(&iface), "handle-packed"));
        if exports.contains(&PACKED_0_2) && packed.is_none() {
            return Err(PrepareError::World(wasmtime::Error::msg(format!(
                "{PACKED_0_2} does not export `handle-packed`"
            ))));
        }
        let instance_pre = self
            .linker
            .instantiate_pre(component)
            .map_err(PrepareError::World)?;
        let pre = match contract {
            Contract::V0_1 => {
                Pre::V1(v1::HandlerPre::new(instance_pre).map_err(PrepareError::World)?)
            }
            Contract::V0_2 => {
                Pre::V2(v2::HandlerPre::new(instance_pre).map_err(PrepareError::World)?)
            }
        };
        let packed = packed.filter(|_| contract == Contract::V0_2);
        let http = ty
            .imports(&self.engine)
            .any(|(name, _)| name.starts_with("wasi:http/outgoing-handler@"));
        Ok(Prepared { pre, packed, http })
    }

    /// The imports and exports of a compiled component, by name, for
    /// `plugins check`.
    pub fn describe(&self, component: &Component) -> (Vec<String>, Vec<String>) {
        let ty = component.component_type();
        let name = |(n, item): (&str, ComponentExtern<'_>)| match item.ty {
            ComponentItem::ComponentFunc(_) => format!("{n} (func)"),
            ComponentItem::ComponentInstance(_) => format!("{n} (interface)"),
            _ => n.to_owned(),
        };
        let imports = ty.imports(&self.engine).map(name).collect();
        let exports = ty.exports(&self.engine).map(name).collect();
        (imports, exports)
    }
}

/// The environment variable naming a directory where compiled components
/// are kept, keyed by their bytes and the engine's settings, and reused by
/// any linecook command.
pub const COMPILE_CACHE: &str = "LINECOOK_COMPILE_CACHE";

fn compile_cache_dir() -> Option<std::path::PathBuf> {
    std::env::var_os(COMPILE_CACHE)
        .filter(|d| !d.is_empty())
        .map(std::path::PathBuf::from)
}

fn list_or_nothing(names: &[&str]) -> String {
    if names.is_empty() {
        "nothing".to_owned()
    } else {
        names.join(", ")
    }
}

fn check_header(bytes: &[u8]) -> Result<(), PrepareError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(PrepareError::NotWasm);
    }
    // Core modules are version 1 (layer 0); components are layer 1.
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(PrepareError::CoreModule);
    }
    Ok(())
}

/// How an instance takes its batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// 0.1.0's `handle(list<stream-record>)`.
    V1,
    /// 0.2.0's `guest.handle(list<stream-record>)`.
    V2,
    /// 0.2.0's `packed.handle-packed(list<u8>)`: one buffer in, one out.
    Packed,
}

/// A batch, in the form the instance that will handle it takes: typed
/// records are moved in, never copied; a packed batch is one buffer.
#[derive(Debug)]
pub enum Batch {
    /// For a 0.1.0 instance.
    V1(Vec<StreamRecord>),
    /// For a 0.2.0 instance called through `guest.handle`.
    V2(Vec<v2::linecook::handler::types::StreamRecord>),
    /// For a 0.2.0 instance called through `handle-packed`: the records
    /// (for dead letters) and their encoding in batch layout v1.
    Packed {
        /// The records, as read.
        records: Vec<LogRecord>,
        /// Their source topic.
        topic: String,
        /// The buffer the guest gets.
        buf: Vec<u8>,
    },
}

impl Batch {
    /// `records` of `topic` for an instance that takes `shape`. A batch the
    /// packed layout cannot carry (a record with more than 65,535 headers)
    /// goes through the typed interface.
    pub fn new(shape: Shape, topic: &str, records: Vec<LogRecord>) -> Batch {
        match shape {
            Shape::Packed if packed::fits(&records) => {
                let mut buf = Vec::new();
                let partition = records.first().map_or(0, |r| r.partition);
                packed::encode_batch(topic, partition, &records, &mut buf);
                Batch::Packed {
                    records,
                    topic: topic.to_owned(),
                    buf,
                }
            }
            Shape::V1 => Batch::V1(
                records
                    .into_iter()
                    .map(|r| crate::worker::to_stream_record(topic, r))
                    .collect(),
            ),
            Shape::V2 | Shape::Packed => Batch::V2(
                records
                    .into_iter()
                    .map(|r| v2::linecook::handler::types::StreamRecord {
                        topic: topic.to_owned(),
                        partition: r.partition,
                        offset: r.offset,
                        timestamp_ms: r.timestamp_ms,
                        key: r.key,
                        value: r.value,
                        headers: r
                            .headers
                            .into_iter()
                            .map(|(key, value)| v2::linecook::handler::types::Header { key, value })
                            .collect(),
                    })
                    .collect(),
            ),
        }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        match self {
            Batch::V1(b) => b.len(),
            Batch::V2(b) => b.len(),
            Batch::Packed { records, .. } => records.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The records' offsets, in order.
    pub fn offsets(&self) -> Vec<u64> {
        match self {
            Batch::V1(b) => b.iter().map(|r| r.offset).collect(),
            Batch::V2(b) => b.iter().map(|r| r.offset).collect(),
            Batch::Packed { records, .. } => records.iter().map(|r| r.offset).collect(),
        }
    }

    /// The records' timestamps, in order.
    pub fn timestamps(&self) -> Vec<i64> {
        match self {
            Batch::V1(b) => b.iter().map(|r| r.timestamp_ms).collect(),
            Batch::V2(b) => b.iter().map(|r| r.timestamp_ms).collect(),
            Batch::Packed { records, .. } => records.iter().map(|r| r.timestamp_ms).collect(),
        }
    }

    /// Record `index`, as the host's own type.
    pub fn record(&self, index: usize) -> StreamRecord {
        match self {
            Batch::V1(b) => b[index].clone(),
            Batch::Packed { records, topic, .. } => {
                crate::worker::to_stream_record(topic, records[index].clone())
            }
            Batch::V2(b) => {
                let r = &b[index];
                StreamRecord {
                    topic: r.topic.clone(),
                    partition: r.partition,
                    offset: r.offset,
                    timestamp_ms: r.timestamp_ms,
                    key: r.key.clone(),
                    value: r.value.clone(),
                    headers: r
                        .headers
                        .iter()
                        .map(|h| bindings::Header {
                            key: h.key.clone(),
                            value: h.value.clone(),
                        })
                        .collect(),
                }
            }
        }
    }
}

fn v1_error(e: v2::linecook::handler::types::HandlerError) -> HandlerError {
    use v2::linecook::handler::types::HandlerError as E;
    match e {
        E::Retry(m) => HandlerError::Retry(m),
        E::Fatal(m) => HandlerError::Fatal(m),
        E::Poison(p) => HandlerError::Poison(bindings::PoisonRecord {
            index: p.index,
            message: p.message,
        }),
    }
}

enum Bindings {
    V1(v1::Handler),
    V2(v2::Handler),
}

/// A live handler instance serving one partition.
pub struct Instance {
    store: wasmtime::Store<HostState>,
    bindings: Bindings,
    /// `handle-packed`, when the component exports it.
    packed: Option<Func>,
}

/// `handle-packed`'s signature.
type PackedCall<'a> = (&'a [u8],);
type PackedResult = (Result<Vec<u8>, v2::linecook::handler::types::HandlerError>,);

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("labels", &self.store.data().labels)
            .finish_non_exhaustive()
    }
}

impl Instance {
    /// Instantiates `prepared` and calls `init(context)`. `init` may read the
    /// partition's committed state through `reader`, but not write.
    pub fn start(
        prepared: &Prepared,
        labels: Labels,
        limits: Limits,
        context: &Context,
        reader: Box<dyn StateReader>,
    ) -> Result<Instance, InstanceError> {
        let mut instance = Instance::instantiate(prepared, labels, limits, None)?;
        instance.init(context, reader)?;
        Ok(instance)
    }

    /// Instantiates `prepared` without calling anything in it: what can be
    /// done before a swap's batch boundary, on another thread. Its `wasi:http`
    /// requests go through `egress`, or are refused without one.
    pub fn instantiate(
        prepared: &Prepared,
        labels: Labels,
        limits: Limits,
        egress: Option<Arc<crate::egress::Egress>>,
    ) -> Result<Instance, InstanceError> {
        // wasmtime makes a component's memory image the first time it is
        // instantiated: a memfd it seals read-only. Linux refuses the seal
        // with EBUSY while any of the file's pages has an extra reference,
        // which happens for a moment under memory pressure (seen once in CI,
        // a 12 MB JavaScript component on a loaded machine). Nothing about
        // the component is wrong, so it is tried again before a version is
        // refused for it.
        let mut attempt = 0;
        loop {
            match Instance::instantiate_once(prepared, labels.clone(), limits, egress.clone()) {
                Err(InstanceError::Instantiate(e)) if attempt < 3 && busy(&e) => {
                    attempt += 1;
                    tracing::debug!("instantiation met a busy resource, trying again: {e:#}");
                    std::thread::sleep(std::time::Duration::from_millis(50 << attempt));
                }
                other => return other,
            }
        }
    }

    fn instantiate_once(
        prepared: &Prepared,
        labels: Labels,
        limits: Limits,
        egress: Option<Arc<crate::egress::Egress>>,
    ) -> Result<Instance, InstanceError> {
        let mut store = wasmtime::Store::new(prepared.engine(), HostState::new(labels, limits));
        store.limiter(|s| s as &mut dyn wasmtime::ResourceLimiter);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(deadline_ticks(&limits));
        let instantiated = match &prepared.pre {
            Pre::V1(pre) => pre.instantiate(&mut store).map(|b| (Bindings::V1(b), None)),
            Pre::V2(pre) => pre.instance_pre().instantiate(&mut store).and_then(|i| {
                let bindings = v2::Handler::new(&mut store, &i)?;
                let packed = match &prepared.packed {
                    Some(index) => {
                        let func = i.get_func(&mut store, index).ok_or_else(|| {
                            wasmtime::Error::msg("handle-packed is not a function")
                        })?;
                        // A wrong signature refuses the version here, not at its
                        // first batch.
                        func.typed::<PackedCall<'_>, PackedResult>(&store)?;
                        Some(func)
                    }
                    None => None,
                };
                Ok((Bindings::V2(bindings), packed))
            }),
        };
        let (bindings, packed) = match instantiated {
            Ok(bindings) => bindings,
            Err(e) => {
                return Err(match store.data_mut().limit_hit.take() {
                    Some(limit) => InstanceError::InitLimit(limit),
                    None => InstanceError::Instantiate(e),
                });
            }
        };
        let mut instance = Instance {
            store,
            bindings,
            packed,
        };
        if let Some(egress) = egress {
            instance.grant_http(egress);
        }
        Ok(instance)
    }

    /// Lets the instance's `wasi:http` requests through `egress` (refused
    /// otherwise). From then on `limits.cpu_ms` counts the thread's CPU time,
    /// so waiting on a response does not use it up.
    fn grant_http(&mut self, egress: Arc<crate::egress::Egress>) {
        let allows_any = egress.allows_any();
        self.store.data_mut().http.egress = Some(egress);
        if !allows_any {
            return;
        }
        self.store.epoch_deadline_callback(|mut store| {
            store
                .data_mut()
                .past_deadline()
                .map(wasmtime::UpdateDeadline::Continue)
        });
    }

    /// Calls `init(context)`; an instance whose `init` failed must not be
    /// used.
    pub fn init(
        &mut self,
        context: &Context,
        reader: Box<dyn StateReader>,
    ) -> Result<(), InstanceError> {
        let limits = self.store.data().limits;
        let (store, bindings) = (&mut self.store, &self.bindings);
        let time = CallTime {
            now_ms: crate::record::now_ms(),
            ..CallTime::default()
        };
        store.data_mut().scope = Some(BatchScope::new(reader, false, time));
        store.data().last_words.lock().expect("last words").clear();
        store.set_epoch_deadline(deadline_ticks(&limits));
        store.data_mut().begin_call();
        let started = Instant::now();
        let result = match bindings {
            Bindings::V1(b) => b.call_init(&mut *store, context),
            Bindings::V2(b) => b.linecook_handler_guest().call_init(
                &mut *store,
                &v2::linecook::handler::types::Context {
                    plugin: context.plugin.clone(),
                    version: context.version.clone(),
                    topic: context.topic.clone(),
                    partition: context.partition,
                    config: context.config.clone(),
                },
            ),
        };
        let ran = started.elapsed();
        store.data_mut().scope = None;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(InstanceError::Init(message)),
            Err(trap) => Err(match self.classify(trap, ran) {
                BatchFailure::Limit(what) => InstanceError::InitLimit(what),
                BatchFailure::Trap(trap) => InstanceError::InitTrap(trap),
                BatchFailure::Handler(_) => unreachable!("classify only sees traps"),
            }),
        }
    }

    /// The contract the instance implements.
    pub fn contract(&self) -> Contract {
        match self.bindings {
            Bindings::V1(_) => Contract::V0_1,
            Bindings::V2(_) => Contract::V0_2,
        }
    }

    /// How the instance takes batches: packed when it exports the packed
    /// path.
    pub fn shape(&self) -> Shape {
        match (&self.bindings, self.packed) {
            (Bindings::V1(_), _) => Shape::V1,
            (Bindings::V2(_), None) => Shape::V2,
            (Bindings::V2(_), Some(_)) => Shape::Packed,
        }
    }

    /// Tells a limit apart from any other trap; `ran` is how long the call
    /// ran.
    fn classify(&mut self, trap: wasmtime::Error, ran: std::time::Duration) -> BatchFailure {
        if let Some(what) = self.store.data_mut().limit_hit.take() {
            return BatchFailure::Limit(what);
        }
        if trap.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            let ms = self.store.data().limits.cpu_ms;
            return BatchFailure::Limit(format!(
                "CPU time limit exceeded: the call ran {} ms, {} ms over the limit of {ms} ms, and was interrupted",
                ran.as_millis(),
                (ran.as_millis() as u64).saturating_sub(ms)
            ));
        }
        let kind = match trap.downcast_ref::<Trap>() {
            Some(code) => code.to_string(),
            None => trap.root_cause().to_string(),
        };
        let kind = kind.lines().next().unwrap_or("trap").to_owned();
        let words = self.store.data().last_words.clone();
        let summary = trap_summary(&kind, words.lock().expect("last words").lines());
        let l = &self.store.data().labels;
        tracing::debug!(plugin = %l.plugin, topic = %l.topic, partition = l.partition,
            "trap in full: {trap:?}");
        BatchFailure::Trap(TrapReport { summary })
    }

    /// Size of the instance's linear memory, in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.store.data().memory_bytes
    }

    /// Runs one call with a fresh scope and returns its effects; `fired`:
    /// the timers it is called with.
    fn call(
        &mut self,
        reader: Box<dyn StateReader>,
        time: CallTime,
        fired: Vec<Timer>,
        call: impl FnOnce(
            &Bindings,
            &mut wasmtime::Store<HostState>,
        ) -> wasmtime::Result<Result<(), HandlerError>>,
    ) -> Result<(BatchEffects, std::time::Duration), BatchFailure> {
        let mut scope = BatchScope::new(reader, true, time);
        scope.effects.fired = fired;
        self.store.data_mut().scope = Some(scope);
        self.store
            .data()
            .last_words
            .lock()
            .expect("last words")
            .clear();
        let limits = self.store.data().limits;
        self.store.set_epoch_deadline(deadline_ticks(&limits));
        self.store.data_mut().begin_call();
        let started = Instant::now();
        let result = call(&self.bindings, &mut self.store);
        let elapsed = started.elapsed();
        let scope = self.store.data_mut().scope.take();
        match result {
            Ok(Ok(())) => Ok((scope.map(|s| s.effects).unwrap_or_default(), elapsed)),
            Ok(Err(error)) => Err(BatchFailure::Handler(error)),
            Err(trap) => Err(self.classify(trap, elapsed)),
        }
    }

    /// Calls `handle(batch)` and returns what the batch did, to be committed.
    /// `batch` must be of the instance's contract (`Batch::new`).
    pub fn handle(
        &mut self,
        batch: &Batch,
        reader: Box<dyn StateReader>,
        time: CallTime,
    ) -> Result<(BatchEffects, std::time::Duration), BatchFailure> {
        let packed = self.packed;
        self.call(reader, time, Vec::new(), |bindings, store| {
            match (bindings, batch) {
                (Bindings::V1(b), Batch::V1(records)) => b.call_handle(store, records),
                (Bindings::V2(b), Batch::V2(records)) => b
                    .linecook_handler_guest()
                    .call_handle(store, records)
                    .map(|r| r.map_err(v1_error)),
                (Bindings::V2(_), Batch::Packed { buf, .. }) => {
                    let Some(func) = packed else {
                        return Err(wasmtime::Error::msg(
                            "host bug: a packed batch for an instance without handle-packed",
                        ));
                    };
                    let typed = func.typed::<PackedCall<'_>, PackedResult>(&*store)?;
                    let (result,) = typed.call(&mut *store, (buf.as_slice(),))?;
                    match result {
                        Ok(effects) => store.data_mut().apply_packed(&effects).map(Ok),
                        Err(e) => Ok(Err(v1_error(e))),
                    }
                }
                _ => Err(wasmtime::Error::msg(
                    "host bug: a batch built for another contract",
                )),
            }
        })
    }

    /// Calls `on-timers(due)` (0.2.0 only) and returns what it did; the
    /// effects name the fired timers (`fired`), so their commit removes
    /// them.
    pub fn on_timers(
        &mut self,
        due: &[Timer],
        reader: Box<dyn StateReader>,
        time: CallTime,
    ) -> Result<(BatchEffects, std::time::Duration), BatchFailure> {
        use v2::linecook::handler::types::{DueTimer, TimeDomain as D};
        let list: Vec<DueTimer> = due
            .iter()
            .map(|t| DueTimer {
                key: t.key.clone(),
                domain: match t.domain {
                    TimeDomain::Processing => D::Processing,
                    TimeDomain::Event => D::Event,
                },
                due_ms: t.due_ms,
            })
            .collect();
        self.call(
            reader,
            time,
            due.to_vec(),
            |bindings, store| match bindings {
                Bindings::V2(b) => b
                    .linecook_handler_guest()
                    .call_on_timers(store, &list)
                    .map(|r| r.map_err(v1_error)),
                Bindings::V1(_) => Ok(Ok(())),
            },
        )
    }
}

/// The epoch deadline for one call under `limits`, in ticks.
fn deadline_ticks(limits: &Limits) -> u64 {
    limits.cpu_ms.div_ceil(EPOCH_TICK.as_millis() as u64) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_busy_kernel_resource_is_tried_again() {
        // As the memfd crate reports a refused seal: its own error, the
        // system's as its source.
        #[derive(Debug)]
        struct AddSeals(std::io::Error);
        impl std::fmt::Display for AddSeals {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("cannot add seals to the memfd")
            }
        }
        impl std::error::Error for AddSeals {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let sealing =
            wasmtime::Error::from(AddSeals(std::io::Error::from_raw_os_error(libc::EBUSY)));
        assert!(busy(&sealing));
        let wrapped = wasmtime::Error::from(std::io::Error::from_raw_os_error(libc::EBUSY))
            .context("making the memory image");
        assert!(busy(&wrapped));
        assert!(!busy(&wasmtime::Error::msg("start function trapped")));
        let denied = wasmtime::Error::from(std::io::Error::from_raw_os_error(libc::EPERM));
        assert!(!busy(&denied));
    }

    #[test]
    fn the_exports_name_the_contract() {
        assert_eq!(
            Contract::of_exports(["init", "handle"]),
            Some(Contract::V0_1)
        );
        assert_eq!(
            Contract::of_exports([GUEST_0_2, PACKED_0_2]),
            Some(Contract::V0_2)
        );
        assert_eq!(Contract::of_exports(["handle"]), None);
        assert_eq!(Contract::of_exports(["linecook:handler/guest@0.3.0"]), None);
        assert_eq!(Contract::of_exports([]), None);
    }

    #[test]
    fn a_trap_is_one_line_with_the_guests_own_words() {
        let kind = "wasm `unreachable` instruction executed";
        let rust_panic = [
            "",
            "thread '<unnamed>' panicked at src/lib.rs:20:13:",
            "bad record at offset 7",
            "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace",
        ];
        assert_eq!(
            trap_summary(kind, rust_panic.into_iter()),
            "panicked at src/lib.rs:20:13: bad record at offset 7 (wasm `unreachable` instruction executed)"
        );
        assert_eq!(trap_summary(kind, std::iter::empty()), kind);
        // Only the last three lines of a long traceback.
        let traceback = ["Traceback:", "  a", "  b", "  c", "ValueError: no"];
        assert_eq!(
            trap_summary("unreachable", traceback.into_iter()),
            "b c ValueError: no (unreachable)"
        );
        let long = "x".repeat(1000);
        let summary = trap_summary("k", [long.as_str()].into_iter());
        assert!(
            summary.len() < 420 && summary.ends_with("… (k)"),
            "{summary}"
        );
        assert!(!summary.contains('\n'));
    }
}
