//! Behaves exactly like `tag` (emits `"<tag>:<value>"` to route config
//! `output`, `<tag>` from `LINECOOK_TAG` at build time, default `v1`), but is
//! a large component: ~6000 generated functions and 4 MiB of data, to measure
//! compiling and swapping something the size of a real application.

use linecook_guest::{Batch, Context, Error, Handler, emit, export_handler};

// Generated bulk (see build.rs): its shape is the generator's, not ours to lint.
#[allow(clippy::all)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/generated.rs"));
}
use generated::MIXERS;

static DATA: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/data.bin"));

const TAG: &str = match option_env!("LINECOOK_TAG") {
    Some(tag) => tag,
    None => "v1",
};

struct BigTag {
    output: String,
}

impl Handler for BigTag {
    fn init(ctx: &Context) -> Result<Self, String> {
        let output = ctx
            .config("output")
            .ok_or("big-tag needs route config `output`: the topic to write to")?;
        Ok(BigTag {
            output: output.to_owned(),
        })
    }

    fn handle(&mut self, batch: Batch<'_>) -> Result<(), Error> {
        let mut line = Vec::new();
        for record in batch {
            // Touch the bulk so none of it is optimised away.
            let x = record.offset ^ u64::from(DATA[record.offset as usize % DATA.len()]);
            std::hint::black_box(MIXERS[(x % MIXERS.len() as u64) as usize](x));
            line.clear();
            line.extend_from_slice(TAG.as_bytes());
            line.push(b':');
            line.extend_from_slice(record.value);
            emit::send(&self.output, record.key, &line);
        }
        Ok(())
    }
}

export_handler!(BigTag);
