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
mod stdio;

use std::time::Instant;

use wasmtime::component::types::{ComponentExtern, ComponentItem};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Trap};

use crate::checkpoint::StateReader;
use crate::config::Limits;
use crate::record::BatchEffects;
use bindings::{Context, Handler, HandlerError, HandlerPre, StreamRecord};
use host::BatchScope;
pub use host::{HostState, Labels, MAX_SCAN_PAGE};

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
    pre: HandlerPre<HostState>,
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
        Handler::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)?;
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

    /// Checks a compiled component against the world and pre-instantiates it.
    pub fn link(&self, component: &Component) -> Result<Prepared, PrepareError> {
        let instance_pre = self
            .linker
            .instantiate_pre(component)
            .map_err(PrepareError::World)?;
        let pre = HandlerPre::new(instance_pre).map_err(PrepareError::World)?;
        Ok(Prepared { pre })
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

/// A live handler instance serving one partition.
pub struct Instance {
    store: wasmtime::Store<HostState>,
    bindings: Handler,
}

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
        let mut store = wasmtime::Store::new(prepared.pre.engine(), HostState::new(labels, limits));
        store.limiter(|s| s as &mut dyn wasmtime::ResourceLimiter);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(deadline_ticks(&limits));
        let bindings = match prepared.pre.instantiate(&mut store) {
            Ok(bindings) => bindings,
            Err(e) => {
                return Err(match store.data_mut().limit_hit.take() {
                    Some(limit) => InstanceError::InitLimit(limit),
                    None => InstanceError::Instantiate(e),
                });
            }
        };
        store.data_mut().scope = Some(BatchScope::new(reader, false));
        store.data().last_words.lock().expect("last words").clear();
        store.set_epoch_deadline(deadline_ticks(&limits));
        let started = Instant::now();
        let result = bindings.call_init(&mut store, context);
        let ran = started.elapsed();
        store.data_mut().scope = None;
        let mut instance = Instance { store, bindings };
        match result {
            Ok(Ok(())) => Ok(instance),
            Ok(Err(message)) => Err(InstanceError::Init(message)),
            Err(trap) => Err(match instance.classify(trap, ran) {
                BatchFailure::Limit(what) => InstanceError::InitLimit(what),
                BatchFailure::Trap(trap) => InstanceError::InitTrap(trap),
                BatchFailure::Handler(_) => unreachable!("classify only sees traps"),
            }),
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

    /// Calls `handle(batch)` and returns what the batch did, to be committed.
    pub fn handle(
        &mut self,
        batch: &[StreamRecord],
        reader: Box<dyn StateReader>,
    ) -> Result<(BatchEffects, std::time::Duration), BatchFailure> {
        self.store.data_mut().scope = Some(BatchScope::new(reader, true));
        self.store
            .data()
            .last_words
            .lock()
            .expect("last words")
            .clear();
        let limits = self.store.data().limits;
        self.store.set_epoch_deadline(deadline_ticks(&limits));
        let started = Instant::now();
        let result = self.bindings.call_handle(&mut self.store, batch);
        let elapsed = started.elapsed();
        let scope = self.store.data_mut().scope.take();
        match result {
            Ok(Ok(())) => Ok((scope.map(|s| s.effects).unwrap_or_default(), elapsed)),
            Ok(Err(error)) => Err(BatchFailure::Handler(error)),
            Err(trap) => Err(self.classify(trap, elapsed)),
        }
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
