//! uppercase: emits each record's value ASCII-upper-cased, with the same key,
//! to the topic named by the route config `output`.
//!
//! `init` runs once per partition before any batch; `handle` gets consecutive
//! records of that partition. Keep durable data in `state`: guest memory is
//! dropped at every swap.

use linecook_guest::{Batch, Context, Error, Handler, emit, export_handler};

struct App {
    output: String,
    /// Reused for every record: the batch's records are borrowed, so the
    /// upper-cased copy needs a place of its own.
    line: Vec<u8>,
}

impl Handler for App {
    fn init(ctx: &Context) -> Result<Self, String> {
        let output = ctx
            .config("output")
            .ok_or("uppercase needs route config `output`: the topic to write to")?;
        Ok(App {
            output: output.to_owned(),
            line: Vec::new(),
        })
    }

    fn handle(&mut self, batch: Batch<'_>) -> Result<(), Error> {
        for record in batch {
            self.line.clear();
            self.line.extend_from_slice(record.value);
            self.line.make_ascii_uppercase();
            emit::send(&self.output, record.key, &self.line);
        }
        Ok(())
    }
}

export_handler!(App);
