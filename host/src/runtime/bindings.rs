//! The one place `bindgen!` runs. Everything else uses these types.

wasmtime::component::bindgen!({
    world: "handler",
    path: "../wit",
    // Every import may trap: a storage failure while reading state must stop
    // the batch, not hand the guest a wrong answer.
    imports: { default: trappable },
});

pub use self::linecook::handler::log::Level;
pub use self::linecook::handler::types::{Header, OutputRecord, PoisonRecord};
