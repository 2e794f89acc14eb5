//! Plain record types shared by the log, the checkpoint and the runtime.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A record header: name and opaque bytes.
pub type Header = (String, Vec<u8>);

/// A record read from a partition of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Partition the record is in.
    pub partition: u32,
    /// Offset within the partition.
    pub offset: u64,
    /// Append time, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Key, absent for keyless records.
    pub key: Option<Vec<u8>>,
    /// Value.
    pub value: Vec<u8>,
    /// Headers in order.
    pub headers: Vec<Header>,
}

/// A record to append to a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    /// Key; decides the partition unless `partition` is set.
    pub key: Option<Vec<u8>>,
    /// Value.
    pub value: Vec<u8>,
    /// Headers in order.
    pub headers: Vec<Header>,
    /// Explicit partition, overriding the partitioner.
    pub partition: Option<u32>,
    /// Timestamp, milliseconds since the Unix epoch; `None`: the append time.
    pub timestamp_ms: Option<i64>,
}

/// A record a handler emitted, bound for `topic`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRecord {
    /// Destination topic.
    pub topic: String,
    /// Key; decides the partition.
    pub key: Option<Vec<u8>>,
    /// Value.
    pub value: Vec<u8>,
    /// Headers in order.
    pub headers: Vec<Header>,
    /// Timestamp, milliseconds since the Unix epoch; `None`: the commit time.
    pub timestamp_ms: Option<i64>,
}

/// How a record is stored in the log table: everything but its position,
/// which is the table key.
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredRecord {
    pub timestamp_ms: i64,
    pub key: Option<serde_bytes::ByteBuf>,
    pub value: serde_bytes::ByteBuf,
    pub headers: Vec<(String, serde_bytes::ByteBuf)>,
}

impl StoredRecord {
    /// Appends the encoding of a record to `buf`.
    pub(crate) fn encode(
        buf: Vec<u8>,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[Header],
    ) -> Vec<u8> {
        #[derive(Serialize)]
        struct Borrowed<'a> {
            timestamp_ms: i64,
            #[serde(with = "serde_bytes")]
            key: Option<&'a [u8]>,
            #[serde(with = "serde_bytes")]
            value: &'a [u8],
            headers: Vec<(&'a str, &'a serde_bytes::Bytes)>,
        }
        let borrowed = Borrowed {
            timestamp_ms,
            key,
            value,
            headers: headers
                .iter()
                .map(|(k, v)| (k.as_str(), serde_bytes::Bytes::new(v)))
                .collect(),
        };
        // Serialising plain structs into a Vec cannot fail.
        postcard::to_extend(&borrowed, buf).expect("postcard encodes in memory")
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<StoredRecord, postcard::Error> {
        postcard::from_bytes(bytes)
    }

    pub(crate) fn into_log_record(self, partition: u32, offset: u64) -> LogRecord {
        LogRecord {
            partition,
            offset,
            timestamp_ms: self.timestamp_ms,
            key: self.key.map(serde_bytes::ByteBuf::into_vec),
            value: self.value.into_vec(),
            headers: self
                .headers
                .into_iter()
                .map(|(k, v)| (k, v.into_vec()))
                .collect(),
        }
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_record_round_trips() {
        let headers = vec![("h".to_string(), vec![0, 255])];
        let bytes = StoredRecord::encode(Vec::new(), 42, Some(b"k"), b"\xffvalue", &headers);
        let back = StoredRecord::decode(&bytes).unwrap().into_log_record(3, 7);
        assert_eq!(
            back,
            LogRecord {
                partition: 3,
                offset: 7,
                timestamp_ms: 42,
                key: Some(b"k".to_vec()),
                value: b"\xffvalue".to_vec(),
                headers,
            }
        );
    }
}

/// The effects of one successful `handle` (or `on-timers`) call, not yet
/// durable.
// Serialized: with Kafka, a timer firing travels whole in its changelog
// record (`outbox::Firing`), so a new owner applies exactly what was fired.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchEffects {
    /// State writes by key: `Some(value)` sets, `None` deletes.
    pub state: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Time to live, in milliseconds from the commit, of the keys of `state`
    /// set with one. A key set without one (or deleted) never expires.
    pub ttl: BTreeMap<Vec<u8>, u64>,
    /// Records to append, in the order they were emitted.
    pub outputs: Vec<OutputRecord>,
    /// Timer changes by (domain, key): `Some(due_ms)` sets or moves,
    /// `None` cancels.
    pub timers: BTreeMap<(TimeDomain, Vec<u8>), Option<i64>>,
    /// Timers this call fired, removed by its commit — unless the call set
    /// the same timer again (`timers` wins).
    pub fired: Vec<Timer>,
    /// The partition's watermark after the call, when it moved.
    pub watermark: Option<i64>,
}

impl BatchEffects {
    /// Whether committing these effects writes nothing but the offset.
    pub fn is_empty(&self) -> bool {
        self.state.is_empty()
            && self.outputs.is_empty()
            && self.timers.is_empty()
            && self.fired.is_empty()
            && self.watermark.is_none()
    }
}

/// Which clock a timer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TimeDomain {
    /// The host's wall clock.
    Processing,
    /// The partition's watermark.
    Event,
}

impl TimeDomain {
    /// The byte that stands for the domain in table keys.
    pub fn tag(self) -> u8 {
        match self {
            TimeDomain::Processing => 0,
            TimeDomain::Event => 1,
        }
    }

    /// The domain a table key's byte stands for.
    pub fn from_tag(tag: u8) -> Option<TimeDomain> {
        match tag {
            0 => Some(TimeDomain::Processing),
            1 => Some(TimeDomain::Event),
            _ => None,
        }
    }

    /// The domain's name, for status, metrics and headers.
    pub fn name(self) -> &'static str {
        match self {
            TimeDomain::Processing => "processing",
            TimeDomain::Event => "event",
        }
    }
}

/// A pending timer of a partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    /// The key it was set for.
    pub key: Vec<u8>,
    /// Its clock.
    pub domain: TimeDomain,
    /// When it is due, milliseconds since the Unix epoch.
    pub due_ms: i64,
}

/// Headers a dead-lettered record carries, besides its own.
pub mod dead_letter_headers {
    /// Source topic.
    pub const TOPIC: &str = "linecook.source.topic";
    /// Source partition (decimal).
    pub const PARTITION: &str = "linecook.source.partition";
    /// Source offset (decimal).
    pub const OFFSET: &str = "linecook.source.offset";
    /// Plugin name.
    pub const PLUGIN: &str = "linecook.plugin";
    /// Plugin version digest.
    pub const VERSION: &str = "linecook.version";
    /// `retry`, `poison`, `trap` or `limit`.
    pub const ERROR_KIND: &str = "linecook.error.kind";
    /// The error message.
    pub const ERROR_MESSAGE: &str = "linecook.error.message";
    /// A dead-lettered timer's domain (`processing`, `event`); such a
    /// letter has no source offset.
    pub const TIMER_DOMAIN: &str = "linecook.timer.domain";
    /// A dead-lettered timer's due time (decimal ms).
    pub const TIMER_DUE_MS: &str = "linecook.timer.due_ms";
}
