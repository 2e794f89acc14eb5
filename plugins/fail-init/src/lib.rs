//! Test plugin: a valid component whose `init` always returns an error, so it
//! can never replace a working version.

use linecook_guest::{Batch, Context, Error, Handler, export_handler};

struct FailInit;

impl Handler for FailInit {
    fn init(_ctx: &Context) -> Result<Self, String> {
        Err("fail-init refuses to start".to_owned())
    }

    fn handle(&mut self, _batch: Batch<'_>) -> Result<(), Error> {
        Ok(())
    }
}

export_handler!(FailInit);
