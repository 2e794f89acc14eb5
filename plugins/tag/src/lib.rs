//! Emits `"<tag>:<value>"` with the same key to the topic named by route config
//! `output`. `<tag>` is fixed at build time by the environment variable
//! `LINECOOK_TAG` (default `v1`), so two builds are two distinguishable
//! versions of one plugin. Route config `output_<tag>`, if present, is the
//! topic of that build only: one route can send one version somewhere else
//! (a test's way to deploy a version that writes to a missing topic).
//!
//! Route config `count = "true"`: it also counts the partition's records in
//! state (key `n`), reads that count in `init`, and sends the first output
//! of each instance with headers `init-n` (the count `init` read) and
//! `batch-n` (the count when its first batch began) — equal when `init`
//! saw the state as of the batch boundary it was swapped in at. Route
//! config `init_ms`: `init` then waits that long after reading the count,
//! so that an `init` run early would miss what is committed meanwhile.

use linecook_guest::{Batch, Context, Error, Handler, emit, export_handler, state};

const TAG: &str = match option_env!("LINECOOK_TAG") {
    Some(tag) => tag,
    None => "v1",
};

struct Tag {
    output: String,
    /// `Some` with route config `count`: the count `init` read, until the
    /// first output carries it.
    count: Option<Option<u64>>,
}

fn count() -> u64 {
    state::get(b"n")
        .and_then(|v| String::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(0)
}

impl Handler for Tag {
    fn init(ctx: &Context) -> Result<Self, String> {
        let output = ctx
            .config(&format!("output_{TAG}"))
            .or_else(|| ctx.config("output"))
            .ok_or("tag needs route config `output`: the topic to write to")?;
        let count = (ctx.config("count") == Some("true")).then(|| Some(count()));
        if let Some(ms) = ctx.config("init_ms").and_then(|ms| ms.parse().ok()) {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        Ok(Tag {
            output: output.to_owned(),
            count,
        })
    }

    fn handle(&mut self, batch: Batch<'_>) -> Result<(), Error> {
        let mut line = Vec::new();
        let mut n = self.count.is_some().then(count);
        for record in batch {
            line.clear();
            line.extend_from_slice(TAG.as_bytes());
            line.push(b':');
            line.extend_from_slice(record.value);
            // `Some` for this instance's first output only.
            let init_n = self.count.as_mut().and_then(Option::take);
            match (init_n, n) {
                (Some(init_n), Some(batch_n)) => emit::send_with_headers(
                    &self.output,
                    record.key,
                    &line,
                    &[
                        ("init-n", init_n.to_string().as_bytes()),
                        ("batch-n", batch_n.to_string().as_bytes()),
                    ],
                ),
                _ => emit::send(&self.output, record.key, &line),
            }
            if let Some(n) = &mut n {
                *n += 1;
            }
        }
        if let Some(n) = n {
            state::set(b"n", n.to_string().as_bytes());
        }
        Ok(())
    }
}

export_handler!(Tag);
