//! Test plugin: a valid component whose `init` traps (a Rust panic aborts
//! the instance), so it can never replace a working version.

use linecook_guest::{Batch, Context, Error, Handler, export_handler};

struct TrapInit;

impl Handler for TrapInit {
    fn init(_ctx: &Context) -> Result<Self, String> {
        panic!("trap-init traps in init")
    }

    fn handle(&mut self, _batch: Batch<'_>) -> Result<(), Error> {
        Ok(())
    }
}

export_handler!(TrapInit);
