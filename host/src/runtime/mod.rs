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

use std::time::Instant;

use wasmtime::component::types::{ComponentExtern, ComponentItem};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, StoreLimitsBuilder};

use crate::checkpoint::{BatchEffects, StateReader};
use bindings::{Context, Handler, HandlerError, HandlerPre, StreamRecord};
use host::BatchScope;
pub use host::{HostState, Labels, MAX_SCAN_PAGE};

/// Linear memory one instance may grow to.
pub const DEFAULT_MEMORY_LIMIT: usize = 256 << 20;

/// Why a module cannot be used as a handler.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrepareError {
    /// The bytes are not WebAssembly at all.
    #[error("not a WebAssembly file (no `\\0asm` header)")]
    NotWasm,
    /// A core module, not a component.
    #[error(
        "this is a core WebAssembly module, not a component; build for wasm32-wasip2 or wrap it with `wasm-tools component new`"
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
    #[error("init trapped: {0:#}")]
    InitTrap(wasmtime::Error),
}

/// Why a batch failed. The batch's effects are discarded in every case.
#[derive(Debug)]
pub enum BatchFailure {
    /// The handler returned an error: an answer, the instance is intact.
    Handler(HandlerError),
    /// The guest trapped (or exceeded a limit): its memory may be corrupt,
    /// so the instance must be discarded.
    Trap(wasmtime::Error),
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
            BatchFailure::Trap(e) => write!(f, "handler trapped: {e:#}"),
        }
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
        let engine = Engine::new(&config)?;
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

    /// The imports and exports of a component, by name, for `plugins check`.
    pub fn describe(&self, bytes: &[u8]) -> Result<(Vec<String>, Vec<String>), PrepareError> {
        check_header(bytes)?;
        let component = Component::new(&self.engine, bytes).map_err(PrepareError::Compile)?;
        let ty = component.component_type();
        let name = |(n, item): (&str, ComponentExtern<'_>)| match item.ty {
            ComponentItem::ComponentFunc(_) => format!("{n} (func)"),
            ComponentItem::ComponentInstance(_) => format!("{n} (interface)"),
            _ => n.to_owned(),
        };
        let imports = ty.imports(&self.engine).map(name).collect();
        let exports = ty.exports(&self.engine).map(name).collect();
        Ok((imports, exports))
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
        context: &Context,
        reader: Box<dyn StateReader>,
    ) -> Result<Instance, InstanceError> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(DEFAULT_MEMORY_LIMIT)
            .trap_on_grow_failure(true)
            .build();
        let mut store = wasmtime::Store::new(prepared.pre.engine(), HostState::new(labels, limits));
        store.limiter(|s| &mut s.limits);
        let bindings = prepared
            .pre
            .instantiate(&mut store)
            .map_err(InstanceError::Instantiate)?;
        store.data_mut().scope = Some(BatchScope {
            reader,
            effects: BatchEffects::default(),
            writable: false,
        });
        let result = bindings.call_init(&mut store, context);
        store.data_mut().scope = None;
        match result {
            Ok(Ok(())) => Ok(Instance { store, bindings }),
            Ok(Err(message)) => Err(InstanceError::Init(message)),
            Err(trap) => Err(InstanceError::InitTrap(trap)),
        }
    }

    /// Calls `handle(batch)` and returns what the batch did, to be committed.
    pub fn handle(
        &mut self,
        batch: &[StreamRecord],
        reader: Box<dyn StateReader>,
    ) -> Result<(BatchEffects, std::time::Duration), BatchFailure> {
        self.store.data_mut().scope = Some(BatchScope {
            reader,
            effects: BatchEffects::default(),
            writable: true,
        });
        let started = Instant::now();
        let result = self.bindings.call_handle(&mut self.store, batch);
        let elapsed = started.elapsed();
        let scope = self.store.data_mut().scope.take();
        match result {
            Ok(Ok(())) => Ok((scope.map(|s| s.effects).unwrap_or_default(), elapsed)),
            Ok(Err(error)) => Err(BatchFailure::Handler(error)),
            Err(trap) => Err(BatchFailure::Trap(trap)),
        }
    }
}
