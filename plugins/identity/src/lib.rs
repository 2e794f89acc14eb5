//! Emits every record unchanged (same key, value and headers) to the topic
//! named by route config `output`. The baseline for measuring what a handler
//! call costs.

use linecook_guest::{Batch, Context, Error, Handler, emit, export_handler};

struct Identity {
    output: String,
}

impl Handler for Identity {
    fn init(ctx: &Context) -> Result<Self, String> {
        let output = ctx
            .config("output")
            .ok_or("identity needs route config `output`: the topic to write to")?;
        Ok(Identity {
            output: output.to_owned(),
        })
    }

    fn handle(&mut self, batch: Batch<'_>) -> Result<(), Error> {
        for record in batch {
            if record.headers.is_empty() {
                emit::send(&self.output, record.key, record.value);
            } else {
                let headers: Vec<(&str, &[u8])> = record.headers.iter().collect();
                emit::send_with_headers(&self.output, record.key, record.value, &headers);
            }
        }
        Ok(())
    }
}

export_handler!(Identity);
