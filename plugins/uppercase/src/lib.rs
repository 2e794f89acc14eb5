//! uppercase: emits each record's value ASCII-upper-cased, with the same key,
//! to the topic named by the route config `output`.
//!
//! `init` runs once per partition before any batch; `handle` gets consecutive
//! records of that partition. Keep durable data in `state`: guest memory is
//! dropped at every swap.

use linecook_guest::{Context, Error, Handler, Record, emit, export_handler};

struct App {
    output: String,
}

impl Handler for App {
    fn init(ctx: &Context) -> Result<Self, String> {
        let output = ctx
            .config("output")
            .ok_or("uppercase needs route config `output`: the topic to write to")?;
        Ok(App {
            output: output.to_owned(),
        })
    }

    fn handle(&mut self, batch: Vec<Record>) -> Result<(), Error> {
        for mut record in batch {
            record.value.make_ascii_uppercase();
            emit::send(&self.output, record.key.as_deref(), &record.value);
        }
        Ok(())
    }
}

export_handler!(App);
