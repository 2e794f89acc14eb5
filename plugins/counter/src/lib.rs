//! Keeps a per-key count in partition state and, for each record, emits
//! `"<key>:<count>"` (the count after this record; the key as UTF-8, keyless
//! records counted under the empty key) with the same key to the topic named by
//! route config `output`.
//!
//! Optional route config `fail_on`: a batch containing a record whose value
//! equals it returns `retry` — after having written state and emitted records
//! for the records before it, which the host must then discard.

use linecook_guest::{Batch, Context, Error, Handler, emit, export_handler, state};

struct Counter {
    output: String,
    fail_on: Option<Vec<u8>>,
}

impl Handler for Counter {
    fn init(ctx: &Context) -> Result<Self, String> {
        let output = ctx
            .config("output")
            .ok_or("counter needs route config `output`: the topic to write to")?;
        Ok(Counter {
            output: output.to_owned(),
            fail_on: ctx.config("fail_on").map(|v| v.as_bytes().to_vec()),
        })
    }

    fn handle(&mut self, batch: Batch<'_>) -> Result<(), Error> {
        // One host call for the batch's counts instead of one per key.
        state::prefetch(batch.iter().map(|r| r.key.unwrap_or_default()));
        for record in batch {
            if self.fail_on.as_deref() == Some(record.value) {
                return Err(Error::Retry(format!(
                    "record at offset {} matches fail_on",
                    record.offset
                )));
            }
            let key = record.key.unwrap_or_default();
            let count = state::get(key)
                .and_then(|v| String::from_utf8(v).ok()?.parse::<u64>().ok())
                .unwrap_or(0)
                + 1;
            state::set(key, count.to_string().as_bytes());
            let line = format!("{}:{count}", String::from_utf8_lossy(key));
            emit::send(&self.output, record.key, line.as_bytes());
        }
        Ok(())
    }
}

export_handler!(Counter);
