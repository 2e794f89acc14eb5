//! Records as JSON lines: what `tail` prints and `produce --format json`
//! reads, so `tail … | produce --format json …` copies a topic exactly.
//!
//! `{"topic","partition","offset","key","value","timestamp_ms"}`, plus
//! `"headers": [[name, value], …]` with `tail --headers`. Bytes print as a
//! string when they are UTF-8, else as `{"base64": "…"}`; a missing key is
//! null. Reading, `topic` and `offset` are ignored (the log assigns
//! offsets); `partition` and `timestamp_ms`, when present, are kept.

use anyhow::{Context as _, bail};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::record::{LogRecord, NewRecord};

fn bytes_json(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => json!(s),
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(bytes) }),
    }
}

fn json_bytes(value: &Value, what: &str) -> anyhow::Result<Vec<u8>> {
    match value {
        Value::String(s) => Ok(s.clone().into_bytes()),
        Value::Object(o) if o.len() == 1 && o.contains_key("base64") => {
            let text = o["base64"]
                .as_str()
                .with_context(|| format!("{what}: \"base64\" must be a string"))?;
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .with_context(|| format!("{what}: invalid base64"))
        }
        other => bail!("{what} must be a string or {{\"base64\": \"…\"}}, not {other}"),
    }
}

/// One line of `tail` output; fields in the documented order.
#[derive(Serialize)]
struct TailLine<'a> {
    topic: &'a str,
    partition: u32,
    offset: u64,
    key: Option<Value>,
    value: Value,
    timestamp_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    headers: Option<Vec<(&'a str, Value)>>,
}

/// `r` of `topic` as one JSON line, with its headers if `headers`.
pub(super) fn record_json(topic: &str, r: &LogRecord, headers: bool) -> String {
    let line = TailLine {
        topic,
        partition: r.partition,
        offset: r.offset,
        key: r.key.as_deref().map(bytes_json),
        value: bytes_json(&r.value),
        timestamp_ms: r.timestamp_ms,
        headers: headers.then(|| {
            r.headers
                .iter()
                .map(|(k, v)| (k.as_str(), bytes_json(v)))
                .collect()
        }),
    };
    serde_json::to_string(&line).expect("JSON of plain values")
}

/// What `produce --format json` reads of a line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProduceLine {
    #[serde(default, rename = "topic")]
    _topic: Option<String>,
    #[serde(default)]
    partition: Option<u32>,
    #[serde(default, rename = "offset")]
    _offset: Option<u64>,
    #[serde(default)]
    key: Option<Value>,
    value: Value,
    #[serde(default)]
    timestamp_ms: Option<i64>,
    #[serde(default)]
    headers: Vec<(String, Value)>,
}

/// A record from one JSON line, as `tail` prints them.
pub(super) fn parse_record_json(line: &str) -> anyhow::Result<NewRecord> {
    let line: ProduceLine = serde_json::from_str(line).context(
        "expected a JSON object like tail prints: {\"key\", \"value\", \"headers\", \"timestamp_ms\", \"partition\"}",
    )?;
    let key = match &line.key {
        None | Some(Value::Null) => None,
        Some(key) => Some(json_bytes(key, "key")?),
    };
    let headers = line
        .headers
        .iter()
        .map(|(name, value)| {
            Ok((
                name.clone(),
                json_bytes(value, &format!("header `{name}`"))?,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(NewRecord {
        key,
        value: json_bytes(&line.value, "value")?,
        headers,
        partition: line.partition,
        timestamp_ms: line.timestamp_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tailed_record_reads_back_exactly() {
        let record = LogRecord {
            partition: 2,
            offset: 9,
            timestamp_ms: 1_700_000_000_123,
            key: Some(vec![0xff, 0x00, b'k']),
            value: b"caf\xc3\xa9".to_vec(),
            headers: vec![
                ("trace".into(), b"t-1".to_vec()),
                ("bin".into(), vec![0x80]),
                ("trace".into(), b"t-2".to_vec()),
            ],
        };
        let line = record_json("in", &record, true);
        assert!(line.contains(r#""value":"café""#), "{line}");
        assert!(line.contains(r#""key":{"base64":"/wBr"}"#), "{line}");
        let back = parse_record_json(&line).unwrap();
        assert_eq!(back.key, record.key);
        assert_eq!(back.value, record.value);
        assert_eq!(back.headers, record.headers);
        assert_eq!(back.timestamp_ms, Some(record.timestamp_ms));
        assert_eq!(back.partition, Some(2));
        assert!(!record_json("in", &record, false).contains("headers"));
    }

    #[test]
    fn a_bad_line_says_what_is_wrong() {
        let err = |line: &str| format!("{:#}", parse_record_json(line).unwrap_err());
        assert!(err("hello").contains("expected a JSON object"));
        assert!(err(r#"{"value": 3}"#).contains("value must be a string"));
        assert!(err(r#"{"value": {"base64": "!!"}}"#).contains("value: invalid base64"));
        assert!(err(r#"{"value": "v", "colour": 1}"#).contains("unknown field `colour`"));
        let keyless = parse_record_json(r#"{"value": "v", "key": null}"#).unwrap();
        assert_eq!((keyless.key, keyless.timestamp_ms), (None, None));
    }
}
