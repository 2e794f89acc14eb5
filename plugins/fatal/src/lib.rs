//! Test plugin: a valid handler whose every batch fails with `fatal`. Used to
//! show that a canary rollout of a broken version rolls back.

use linecook_guest::{Batch, Context, Error, Handler, export_handler};

struct Fatal;

impl Handler for Fatal {
    fn init(_ctx: &Context) -> Result<Self, String> {
        Ok(Fatal)
    }

    fn handle(&mut self, batch: Batch<'_>) -> Result<(), Error> {
        Err(Error::Fatal(format!(
            "fatal refuses every batch (this one started at offset {})",
            batch.first().map_or(0, |r| r.offset)
        )))
    }
}

export_handler!(Fatal);
