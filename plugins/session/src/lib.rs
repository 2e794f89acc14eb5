//! Session windows per key with a processing-time gap of route config
//! `gap_ms`: each record joins its key's session (keyless records share the
//! empty key) and moves the key's processing-time timer to now + `gap_ms`.
//! When a key has had no record for `gap_ms`, its timer fires: the plugin
//! emits `"<key>:<records>:<first-ts>:<last-ts>"` (the session's record
//! count and its earliest and latest record timestamps) to the topic named
//! by route config `output`, keyed by the key, and forgets the session.

use linecook_guest::window::Session;
use linecook_guest::{
    Batch, Context, DueTimer, Error, Handler, TimeDomain, emit, export_handler, state, timers,
};

struct Sessions {
    output: String,
    gap_ms: i64,
}

impl Handler for Sessions {
    fn init(ctx: &Context) -> Result<Self, String> {
        let output = ctx
            .config("output")
            .ok_or("session needs route config `output`: the topic to write to")?;
        let gap_ms = ctx
            .config("gap_ms")
            .ok_or("session needs route config `gap_ms`: the inactivity gap")?
            .parse::<i64>()
            .ok()
            .filter(|g| *g > 0)
            .ok_or("route config `gap_ms` must be a positive number of milliseconds")?;
        Ok(Sessions {
            output: output.to_owned(),
            gap_ms,
        })
    }

    fn handle(&mut self, batch: Batch<'_>) -> Result<(), Error> {
        let expires = timers::now_ms() + self.gap_ms;
        for record in batch {
            let key = record.key.unwrap_or_default();
            let ts = record.timestamp_ms;
            let session = match state::get(key).and_then(|v| Session::from_bytes(&v)) {
                Some(session) => session.extend(ts),
                None => Session::new(ts),
            };
            state::set(key, &session.to_bytes());
            timers::set(key, TimeDomain::Processing, expires);
        }
        Ok(())
    }

    fn on_timers(&mut self, due: Vec<DueTimer>) -> Result<(), Error> {
        for timer in due {
            let Some(s) = state::get(&timer.key).and_then(|v| Session::from_bytes(&v)) else {
                continue;
            };
            state::delete(&timer.key);
            let line = format!(
                "{}:{}:{}:{}",
                String::from_utf8_lossy(&timer.key),
                s.records,
                s.first_ms,
                s.last_ms
            );
            let key = (!timer.key.is_empty()).then_some(timer.key.as_slice());
            emit::send(&self.output, key, line.as_bytes());
        }
        Ok(())
    }
}

export_handler!(Sessions);
