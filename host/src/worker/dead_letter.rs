//! The record a failing one becomes in the dead-letter topic: its own key,
//! value and headers, plus headers that say where it came from and why it
//! failed.

pub use crate::record::dead_letter_headers as headers;
use crate::record::{OutputRecord, Timer};
use crate::runtime::bindings::StreamRecord;

/// Where the record failed.
pub(super) struct Origin<'a> {
    pub plugin: &'a str,
    pub version: &'a str,
    pub kind: &'a str,
    pub message: &'a str,
}

/// `record` (of `record.topic`) as it goes to `dead_letter_topic`.
pub(super) fn dead_letter(
    record: &StreamRecord,
    dead_letter_topic: &str,
    origin: &Origin<'_>,
) -> OutputRecord {
    let mut out: Vec<(String, Vec<u8>)> = record
        .headers
        .iter()
        .map(|h| (h.key.clone(), h.value.clone()))
        .collect();
    let text = |name: &str, value: String| (name.to_owned(), value.into_bytes());
    out.extend([
        text(headers::TOPIC, record.topic.clone()),
        text(headers::PARTITION, record.partition.to_string()),
        text(headers::OFFSET, record.offset.to_string()),
        text(headers::PLUGIN, origin.plugin.to_owned()),
        text(headers::VERSION, origin.version.to_owned()),
        text(headers::ERROR_KIND, origin.kind.to_owned()),
        text(headers::ERROR_MESSAGE, origin.message.to_owned()),
    ]);
    OutputRecord {
        topic: dead_letter_topic.to_owned(),
        key: record.key.clone(),
        value: record.value.clone(),
        headers: out,
        timestamp_ms: None,
    }
}

/// A timer `on-timers` could not fire, as it goes to `dead_letter_topic`:
/// its key, an empty value, and headers naming the timer and the failure.
pub(super) fn dead_timer(
    timer: &Timer,
    topic: &str,
    partition: u32,
    dead_letter_topic: &str,
    origin: &Origin<'_>,
) -> OutputRecord {
    let text = |name: &str, value: String| (name.to_owned(), value.into_bytes());
    OutputRecord {
        topic: dead_letter_topic.to_owned(),
        key: Some(timer.key.clone()),
        value: Vec::new(),
        headers: vec![
            text(headers::TOPIC, topic.to_owned()),
            text(headers::PARTITION, partition.to_string()),
            text(headers::TIMER_DOMAIN, timer.domain.name().to_owned()),
            text(headers::TIMER_DUE_MS, timer.due_ms.to_string()),
            text(headers::PLUGIN, origin.plugin.to_owned()),
            text(headers::VERSION, origin.version.to_owned()),
            text(headers::ERROR_KIND, origin.kind.to_owned()),
            text(headers::ERROR_MESSAGE, origin.message.to_owned()),
        ],
        timestamp_ms: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::bindings::Header;

    #[test]
    fn a_dead_letter_keeps_the_record_and_says_where_and_why() {
        let record = StreamRecord {
            topic: "orders".into(),
            partition: 3,
            offset: 41,
            timestamp_ms: 7,
            key: Some(b"k".to_vec()),
            value: b"v".to_vec(),
            headers: vec![Header {
                key: "trace".into(),
                value: b"t1".to_vec(),
            }],
        };
        let origin = Origin {
            plugin: "counter",
            version: "abc",
            kind: "trap",
            message: "boom",
        };
        let out = dead_letter(&record, "orders.dlq", &origin);
        assert_eq!(out.topic, "orders.dlq");
        assert_eq!(
            (out.key.as_deref(), out.value.as_slice()),
            (Some(&b"k"[..]), &b"v"[..])
        );
        let header = |name: &str| {
            let (_, v) = out.headers.iter().find(|(k, _)| k == name).unwrap();
            String::from_utf8(v.clone()).unwrap()
        };
        assert_eq!(
            out.headers[0].0, "trace",
            "the record's own headers come first"
        );
        assert_eq!(header(headers::TOPIC), "orders");
        assert_eq!(header(headers::PARTITION), "3");
        assert_eq!(header(headers::OFFSET), "41");
        assert_eq!(header(headers::PLUGIN), "counter");
        assert_eq!(header(headers::VERSION), "abc");
        assert_eq!(header(headers::ERROR_KIND), "trap");
        assert_eq!(header(headers::ERROR_MESSAGE), "boom");
    }
}
