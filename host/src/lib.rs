//! linecook: a consumer-group member that runs stream handlers written as
//! WebAssembly components.
//!
//! Core concepts, and how long each lives:
//! - [`store::Store`] — the data directory's redb file: embedded log
//!   ([`log`]), handler state and [`checkpoint`]s. One per process; one
//!   process per data directory.
//! - [`runtime::Runtime`] — the wasmtime engine and linker. One per process.
//! - [`plugins::Registry`] — accepted plugin versions, each compiled once and
//!   published to the partitions that run it.
//! - [`group`] — which partitions this member owns. [`daemon`] starts a
//!   [`worker`] per owned partition, each with its own handler instance.
//! - [`worker`] — fetch a batch → `handle` → one checkpoint transaction.
//!
//! See `ARCHITECTURE.md` for the map and the invariants.

pub mod admin;
pub mod api;
pub mod checkpoint;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod dlq;
pub mod egress;
pub mod fixture;
pub mod group;
pub mod kafka;
pub mod log;
pub mod metrics;
pub mod outbox;
pub mod partitioner;
pub mod plugins;
pub mod policy;
pub mod record;
pub mod reload;
pub mod replay;
pub mod retention;
pub mod rollout;
pub mod runtime;
pub mod scaffold;
pub mod sdk;
pub mod shadow;
pub mod source;
pub mod status;
pub mod store;
pub mod telemetry;
pub mod timers;
pub mod tls;
pub mod worker;
