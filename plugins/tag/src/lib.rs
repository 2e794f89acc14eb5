//! Emits `"<tag>:<value>"` with the same key to the topic named by route config
//! `output`. `<tag>` is fixed at build time by the environment variable
//! `LINECOOK_TAG` (default `v1`), so two builds are two distinguishable
//! versions of one plugin. Route config `output_<tag>`, if present, is the
//! topic of that build only: one route can send one version somewhere else
//! (a test's way to deploy a version that writes to a missing topic).

use linecook_guest::{Batch, Context, Error, Handler, emit, export_handler};

const TAG: &str = match option_env!("LINECOOK_TAG") {
    Some(tag) => tag,
    None => "v1",
};

struct Tag {
    output: String,
}

impl Handler for Tag {
    fn init(ctx: &Context) -> Result<Self, String> {
        let output = ctx
            .config(&format!("output_{TAG}"))
            .or_else(|| ctx.config("output"))
            .ok_or("tag needs route config `output`: the topic to write to")?;
        Ok(Tag {
            output: output.to_owned(),
        })
    }

    fn handle(&mut self, batch: Batch<'_>) -> Result<(), Error> {
        let mut line = Vec::new();
        for record in batch {
            line.clear();
            line.extend_from_slice(TAG.as_bytes());
            line.push(b':');
            line.extend_from_slice(record.value);
            emit::send(&self.output, record.key, &line);
        }
        Ok(())
    }
}

export_handler!(Tag);
