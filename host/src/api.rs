//! Wire types of the admin HTTP API, shared by the server (`admin`) and the
//! CLI's remote access (`client`). Bytes travel as base64.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::record::{LogRecord, NewRecord};

/// Bytes serialised as a base64 string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct B64(pub Vec<u8>);

impl Serialize for B64 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for B64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD
            .decode(s.as_bytes())
            .map(B64)
            .map_err(serde::de::Error::custom)
    }
}

/// `POST /topics`
#[derive(Debug, Serialize, Deserialize)]
pub struct CreateTopic {
    /// Topic name.
    pub name: String,
    /// Partition count.
    pub partitions: u32,
}

/// A record in a produce request.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireNewRecord {
    /// Key.
    pub key: Option<B64>,
    /// Value.
    pub value: B64,
    /// Explicit partition.
    #[serde(default)]
    pub partition: Option<u32>,
    /// Headers, in order.
    #[serde(default)]
    pub headers: Vec<(String, B64)>,
    /// Timestamp; absent: the append time.
    #[serde(default)]
    pub timestamp_ms: Option<i64>,
}

/// `POST /topics/{topic}/records`
#[derive(Debug, Serialize, Deserialize)]
pub struct Produce {
    /// Records to append, in order.
    pub records: Vec<WireNewRecord>,
}

/// `POST /topics/{topic}/partitions/{p}/reset`
#[derive(Debug, Serialize, Deserialize)]
pub struct ResetPartition {
    /// Where to.
    pub to: crate::checkpoint::ResetTo,
    /// What happens to state.
    pub state: crate::checkpoint::ResetState,
}

/// The answer to a reset: the committed offset before and after.
#[derive(Debug, Serialize, Deserialize)]
pub struct ResetReport {
    /// Before.
    pub from: u64,
    /// After.
    pub to: u64,
}

/// `POST /topics/{dlq}/replay`
#[derive(Debug, Serialize, Deserialize)]
pub struct Replay {
    /// Topic to send the letters to; default: each one's source topic.
    #[serde(default)]
    pub to: Option<String>,
    /// `name=value` conditions every replayed letter meets.
    #[serde(default)]
    pub filter: Vec<(String, String)>,
    /// Say what would be replayed; replay nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// Answer to a produce request.
#[derive(Debug, Serialize, Deserialize)]
pub struct Produced {
    /// (partition, offset) of each record.
    pub positions: Vec<(u32, u64)>,
}

/// A record read from the log.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireRecord {
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// Append time.
    pub timestamp_ms: i64,
    /// Key.
    pub key: Option<B64>,
    /// Value.
    pub value: B64,
    /// Headers.
    #[serde(default)]
    pub headers: Vec<(String, B64)>,
}

/// A topic and its end offsets.
#[derive(Debug, Serialize, Deserialize)]
pub struct TopicReport {
    /// Name.
    pub name: String,
    /// Partition count.
    pub partitions: u32,
    /// Next offset to be appended, per partition.
    pub end_offsets: Vec<u64>,
    /// First offset still stored, per partition (retention moves it).
    #[serde(default)]
    pub start_offsets: Vec<u64>,
    /// Bytes of records stored, per partition.
    #[serde(default)]
    pub bytes: Vec<u64>,
}

/// An error answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong.
    pub error: String,
}

impl From<NewRecord> for WireNewRecord {
    fn from(r: NewRecord) -> Self {
        WireNewRecord {
            key: r.key.map(B64),
            value: B64(r.value),
            partition: r.partition,
            headers: r.headers.into_iter().map(|(k, v)| (k, B64(v))).collect(),
            timestamp_ms: r.timestamp_ms,
        }
    }
}

impl From<WireNewRecord> for NewRecord {
    fn from(r: WireNewRecord) -> Self {
        NewRecord {
            key: r.key.map(|k| k.0),
            value: r.value.0,
            headers: r.headers.into_iter().map(|(k, v)| (k, v.0)).collect(),
            partition: r.partition,
            timestamp_ms: r.timestamp_ms,
        }
    }
}

impl From<LogRecord> for WireRecord {
    fn from(r: LogRecord) -> Self {
        WireRecord {
            partition: r.partition,
            offset: r.offset,
            timestamp_ms: r.timestamp_ms,
            key: r.key.map(B64),
            value: B64(r.value),
            headers: r.headers.into_iter().map(|(k, v)| (k, B64(v))).collect(),
        }
    }
}

impl From<WireRecord> for LogRecord {
    fn from(r: WireRecord) -> Self {
        LogRecord {
            partition: r.partition,
            offset: r.offset,
            timestamp_ms: r.timestamp_ms,
            key: r.key.map(|k| k.0),
            value: r.value.0,
            headers: r.headers.into_iter().map(|(k, v)| (k, v.0)).collect(),
        }
    }
}
