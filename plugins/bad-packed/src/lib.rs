//! Test plugin: a 0.2.0 component whose packed path returns an effects
//! buffer the host cannot read — an entry of an unknown kind after a valid
//! output — for records whose value is `garbage`, and the records
//! themselves otherwise. The host must fail such a batch like a trap:
//! nothing of it committed, the byte offset in the reason.

wit_bindgen::generate!({
    world: "packed-handler",
    path: "../../wit/0.2.0",
});

use exports::linecook::handler::{guest, packed};
use linecook::handler::types::{Context, DueTimer, HandlerError, StreamRecord};

struct Bad;

impl guest::Guest for Bad {
    fn init(_: Context) -> Result<(), String> {
        Ok(())
    }

    fn handle(_: Vec<StreamRecord>) -> Result<(), HandlerError> {
        Err(HandlerError::Fatal(
            "bad-packed is only called packed".into(),
        ))
    }

    fn on_timers(_: Vec<DueTimer>) -> Result<(), HandlerError> {
        Ok(())
    }
}

/// One output entry (kind 1) of `value` to topic `out`, keyless.
fn output(buf: &mut Vec<u8>, value: &[u8]) {
    buf.push(1);
    buf.extend_from_slice(&3u32.to_le_bytes());
    buf.extend_from_slice(b"out");
    buf.extend_from_slice(&(-1i32).to_le_bytes());
    buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
    buf.extend_from_slice(value);
    buf.extend_from_slice(&0u16.to_le_bytes());
    buf.push(0);
}

impl packed::Guest for Bad {
    fn handle_packed(batch: Vec<u8>) -> Result<Vec<u8>, HandlerError> {
        let mut out = b"LCE1".to_vec();
        let mut garbage = false;
        // Walk the records (layout v1) only as far as their values.
        let count = u32::from_le_bytes(batch[4..8].try_into().unwrap());
        let topic_len = u32::from_le_bytes(batch[8..12].try_into().unwrap()) as usize;
        let mut at = 12 + topic_len + 4;
        let u32_at = |at: usize| u32::from_le_bytes(batch[at..at + 4].try_into().unwrap());
        for _ in 0..count {
            at += 16;
            let key_len = i32::from_le_bytes(batch[at..at + 4].try_into().unwrap());
            at += 4 + key_len.max(0) as usize;
            let value_len = u32_at(at) as usize;
            let value = &batch[at + 4..at + 4 + value_len];
            at += 4 + value_len;
            let headers = u16::from_le_bytes(batch[at..at + 2].try_into().unwrap());
            at += 2;
            for _ in 0..headers {
                let name = u16::from_le_bytes(batch[at..at + 2].try_into().unwrap()) as usize;
                at += 2 + name;
                at += 4 + u32_at(at) as usize;
            }
            garbage |= value == b"garbage";
            output(&mut out, value);
        }
        if garbage {
            out.push(7);
        }
        Ok(out)
    }
}

export!(Bad);
