//! The one place `bindgen!` runs, once per contract. Everything else uses
//! these types.
//!
//! The host's own record types are 0.1.0's (`StreamRecord`, `Context`,
//! `HandlerError`): both contracts define them identically, and a 0.2.0 call
//! converts at the boundary (`runtime::v2_batch`).

/// `linecook:handler@0.1.0` (`wit/handler.wit`): exports the bare functions
/// `init` and `handle`.
pub mod v1 {
    wasmtime::component::bindgen!({
        world: "handler",
        path: "../wit",
        // Every import may trap: a storage failure while reading state must
        // stop the batch, not hand the guest a wrong answer.
        imports: { default: trappable },
    });
}

/// `linecook:handler@0.2.0` (`wit/0.2.0/handler.wit`): exports the `guest`
/// interface; adds timers, output timestamps and state with a time to live.
pub mod v2 {
    wasmtime::component::bindgen!({
        world: "handler",
        path: "../wit/0.2.0",
        imports: { default: trappable },
    });
}

pub use v1::linecook::handler::log::Level;
pub use v1::linecook::handler::types::{
    Context, HandlerError, Header, OutputRecord, PoisonRecord, StreamRecord,
};
pub use v1::{Handler, HandlerPre};
