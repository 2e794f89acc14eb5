//! Counts records per key in tumbling event-time windows of route config
//! `window_ms` (epoch-aligned: a record with timestamp `t` is in the window
//! starting at `t - t mod window_ms`). When the partition's watermark — the
//! highest record timestamp minus the route's `allowed_lateness_ms` —
//! reaches a window's end, emits `"<key>:<window-start-ms>:<count>"` to the
//! topic named by route config `output`, keyed by the record key (none for
//! keyless records, counted under the empty key) and timestamped with the
//! window's end.
//!
//! A record whose window the watermark already closed is late. Route config
//! `late`: `dead-letter` (default) sends it to the dead-letter topic
//! (`poison`, message `late: …`); `drop` drops it and counts it in state
//! under the key `late`.

use linecook_guest::window::{self, Watermark, Window};
use linecook_guest::{
    Batch, Context, DueTimer, Error, Handler, TimeDomain, emit, export_handler, state, timers,
};

struct WindowCount {
    output: String,
    window_ms: i64,
    drop_late: bool,
}

/// State key of a window's count: `w` then the window key.
fn count_key(window_key: &[u8]) -> Vec<u8> {
    [b"w".as_slice(), window_key].concat()
}

fn read_u64(key: &[u8]) -> u64 {
    state::get(key)
        .and_then(|v| String::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(0)
}

impl Handler for WindowCount {
    fn init(ctx: &Context) -> Result<Self, String> {
        let output = ctx
            .config("output")
            .ok_or("window-count needs route config `output`: the topic to write to")?;
        let window_ms = ctx
            .config("window_ms")
            .ok_or("window-count needs route config `window_ms`: the window size")?
            .parse::<i64>()
            .ok()
            .filter(|w| *w > 0)
            .ok_or("route config `window_ms` must be a positive number of milliseconds")?;
        let drop_late = match ctx.config("late").unwrap_or("dead-letter") {
            "dead-letter" => false,
            "drop" => true,
            other => {
                return Err(format!(
                    "route config `late` is `{other}`; use `dead-letter` or `drop`"
                ));
            }
        };
        Ok(WindowCount {
            output: output.to_owned(),
            window_ms,
            drop_late,
        })
    }

    fn handle(&mut self, batch: Batch<'_>) -> Result<(), Error> {
        let mut watermark = Watermark::start();
        for (index, record) in batch.iter().enumerate() {
            let now = watermark.observe(record.timestamp_ms);
            let w = window::tumbling(record.timestamp_ms, self.window_ms);
            if w.closed_by(now) {
                if self.drop_late {
                    state::set(b"late", (read_u64(b"late") + 1).to_string().as_bytes());
                    continue;
                }
                return Err(Error::Poison {
                    index: index as u32,
                    message: format!(
                        "late: window {}..{} closed at watermark {}",
                        w.start_ms,
                        w.end_ms,
                        now.unwrap_or_default()
                    ),
                });
            }
            let window_key = w.key(record.key.unwrap_or_default());
            let key = count_key(&window_key);
            state::set(&key, (read_u64(&key) + 1).to_string().as_bytes());
            timers::set(&window_key, TimeDomain::Event, w.end_ms);
        }
        Ok(())
    }

    fn on_timers(&mut self, due: Vec<DueTimer>) -> Result<(), Error> {
        for timer in due {
            let Some((key, w)) = Window::parse_key(&timer.key, self.window_ms) else {
                continue;
            };
            let count_key = count_key(&timer.key);
            let count = read_u64(&count_key);
            state::delete(&count_key);
            let line = format!("{}:{}:{count}", String::from_utf8_lossy(key), w.start_ms);
            let key = (!key.is_empty()).then_some(key);
            emit::send_at(&self.output, key, line.as_bytes(), w.end_ms);
        }
        Ok(())
    }
}

export_handler!(WindowCount);
