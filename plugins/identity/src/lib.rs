//! Emits every record unchanged (same key, value and headers) to the topic
//! named by route config `output`. The baseline for measuring what a handler
//! call costs.

use linecook_guest::{Context, Error, Handler, Record, emit, export_handler};

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

    fn handle(&mut self, batch: Vec<Record>) -> Result<(), Error> {
        for record in batch {
            let headers: Vec<(&str, &[u8])> = record
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_slice()))
                .collect();
            emit::send_with_headers(&self.output, record.key.as_deref(), &record.value, &headers);
        }
        Ok(())
    }
}

export_handler!(Identity);
