//! Test plugin: `uppercase`, except that a value ending in `999` passes
//! through unchanged — a candidate that differs from `uppercase` on one
//! record in a thousand, for the shadow rollout tests.

use linecook_guest::{Batch, Context, Error, Handler, emit, export_handler};

struct Quirky {
    output: String,
}

impl Handler for Quirky {
    fn init(ctx: &Context) -> Result<Self, String> {
        let output = ctx
            .config("output")
            .ok_or("quirky needs route config `output`: the topic to write to")?;
        Ok(Quirky {
            output: output.to_owned(),
        })
    }

    fn handle(&mut self, batch: Batch<'_>) -> Result<(), Error> {
        for record in batch {
            let mut line = record.value.to_vec();
            if !line.ends_with(b"999") {
                line.make_ascii_uppercase();
            }
            emit::send(&self.output, record.key, &line);
        }
        Ok(())
    }
}

export_handler!(Quirky);
