//! The packed batch path's two layouts (version 1, `docs/contract-0.2.md`):
//! a batch goes into the guest as one buffer and its effects come back as
//! one, instead of a canonical-ABI list per record and a call per output.
//!
//! Both functions are pure; applying decoded effects (with their limits) is
//! `HostState`'s business.

use crate::record::{Header, LogRecord, TimeDomain};

/// Magic of batch layout v1.
pub const BATCH_MAGIC: &[u8; 4] = b"LCB1";
/// Magic of effects layout v1.
pub const EFFECTS_MAGIC: &[u8; 4] = b"LCE1";

/// Whether layout v1 can carry `records`: it counts headers and their names'
/// lengths in 16 bits and lengths in 32. Kafka allows more; such a batch
/// goes through the typed interface instead.
pub fn fits(records: &[LogRecord]) -> bool {
    let small = |n: usize| n < u32::MAX as usize;
    records.iter().all(|r| {
        r.headers.len() <= u16::MAX as usize
            && r.headers
                .iter()
                .all(|(k, v)| k.len() <= u16::MAX as usize && small(v.len()))
            && small(r.value.len())
            && r.key.as_ref().is_none_or(|k| small(k.len()))
    })
}

/// Writes `records` of `topic` in batch layout v1 into `out` (cleared
/// first, so a worker can reuse one buffer). The records must [`fits`].
pub fn encode_batch(topic: &str, partition: u32, records: &[LogRecord], out: &mut Vec<u8>) {
    out.clear();
    let body: usize = records
        .iter()
        .map(|r| {
            26 + r.key.as_ref().map_or(0, Vec::len)
                + r.value.len()
                + r.headers
                    .iter()
                    .map(|(k, v)| 6 + k.len() + v.len())
                    .sum::<usize>()
        })
        .sum();
    out.reserve(16 + topic.len() + body);
    out.extend_from_slice(BATCH_MAGIC);
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    put_bytes(out, topic.as_bytes());
    out.extend_from_slice(&partition.to_le_bytes());
    for r in records {
        out.extend_from_slice(&r.offset.to_le_bytes());
        out.extend_from_slice(&r.timestamp_ms.to_le_bytes());
        put_key(out, r.key.as_deref());
        put_bytes(out, &r.value);
        put_headers(out, &r.headers);
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn put_key(out: &mut Vec<u8>, key: Option<&[u8]>) {
    match key {
        Some(key) => put_bytes(out, key),
        None => out.extend_from_slice(&(-1i32).to_le_bytes()),
    }
}

fn put_headers(out: &mut Vec<u8>, headers: &[Header]) {
    out.extend_from_slice(&(headers.len() as u16).to_le_bytes());
    for (name, value) in headers {
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        put_bytes(out, value);
    }
}

/// One entry of an effects buffer, borrowing its bytes from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect<'a> {
    /// Kind 1: a record to emit.
    Output {
        /// Destination topic.
        topic: &'a str,
        /// Key, if any.
        key: Option<&'a [u8]>,
        /// Value.
        value: &'a [u8],
        /// Headers, in order.
        headers: Vec<(&'a str, &'a [u8])>,
        /// Output timestamp; `None`: the commit time.
        timestamp_ms: Option<i64>,
    },
    /// Kind 2 (`ttl_ms: None`) and 3: a state write.
    Set {
        /// State key.
        key: &'a [u8],
        /// New value.
        value: &'a [u8],
        /// Time to live from the commit, when given.
        ttl_ms: Option<u64>,
    },
    /// Kind 4: a state delete.
    Delete {
        /// State key.
        key: &'a [u8],
    },
    /// Kind 5: set or move a timer.
    Timer {
        /// Its clock.
        domain: TimeDomain,
        /// When it is due.
        due_ms: i64,
        /// Its key.
        key: &'a [u8],
    },
    /// Kind 6: cancel a timer.
    Cancel {
        /// Its clock.
        domain: TimeDomain,
        /// Its key.
        key: &'a [u8],
    },
}

/// Why an effects buffer could not be read: what, and at which byte.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed packed effects at byte {offset}: {what}")]
pub struct Malformed {
    /// Offset into the buffer.
    pub offset: usize,
    /// What was wrong there.
    pub what: String,
}

/// Reads an effects buffer (layout v1) entry by entry.
pub fn decode_effects(buf: &[u8]) -> Result<Vec<Effect<'_>>, Malformed> {
    let mut r = Reader { buf, at: 0 };
    let magic = r.take(4, "magic")?;
    if magic != EFFECTS_MAGIC {
        return Err(Malformed {
            offset: 0,
            what: format!(
                "magic {:?} is not {:?} (an effects layout this host does not know)",
                String::from_utf8_lossy(magic),
                String::from_utf8_lossy(EFFECTS_MAGIC)
            ),
        });
    }
    let mut effects = Vec::new();
    while r.at < buf.len() {
        let start = r.at;
        let effect = match r.u8("kind")? {
            1 => {
                let topic = r.str32("topic")?;
                let key = r.key()?;
                let value = r.bytes32("value")?;
                let count = r.u16("header count")?;
                let mut headers = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    let len = r.u16("header name length")? as usize;
                    let name = r.utf8(len, "header name")?;
                    headers.push((name, r.bytes32("header value")?));
                }
                let timestamp_ms = match r.u8("has_timestamp")? {
                    0 => None,
                    1 => Some(r.i64("timestamp")?),
                    other => return Err(r.bad(format!("has_timestamp is {other}, not 0 or 1"))),
                };
                Effect::Output {
                    topic,
                    key,
                    value,
                    headers,
                    timestamp_ms,
                }
            }
            kind @ (2 | 3) => {
                let key = r.bytes32("state key")?;
                let value = r.bytes32("state value")?;
                let ttl_ms = if kind == 3 { Some(r.u64("ttl")?) } else { None };
                Effect::Set { key, value, ttl_ms }
            }
            4 => Effect::Delete {
                key: r.bytes32("state key")?,
            },
            5 => {
                let domain = r.domain()?;
                let due_ms = r.i64("due time")?;
                Effect::Timer {
                    domain,
                    due_ms,
                    key: r.bytes32("timer key")?,
                }
            }
            6 => {
                let domain = r.domain()?;
                Effect::Cancel {
                    domain,
                    key: r.bytes32("timer key")?,
                }
            }
            other => {
                return Err(Malformed {
                    offset: start,
                    what: format!("unknown entry kind {other}"),
                });
            }
        };
        effects.push(effect);
    }
    Ok(effects)
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn bad(&self, what: String) -> Malformed {
        Malformed {
            offset: self.at,
            what,
        }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], Malformed> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let bytes = &self.buf[self.at..end];
                self.at = end;
                Ok(bytes)
            }
            None => Err(self.bad(format!(
                "{what} needs {n} bytes, {} remain",
                self.buf.len() - self.at
            ))),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], Malformed> {
        Ok(self.take(N, what)?.try_into().expect("took N bytes"))
    }

    fn u8(&mut self, what: &str) -> Result<u8, Malformed> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, Malformed> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, Malformed> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn i64(&mut self, what: &str) -> Result<i64, Malformed> {
        Ok(i64::from_le_bytes(self.array(what)?))
    }

    fn bytes32(&mut self, what: &str) -> Result<&'a [u8], Malformed> {
        let len = u32::from_le_bytes(self.array(what)?) as usize;
        self.take(len, what)
    }

    fn utf8(&mut self, len: usize, what: &str) -> Result<&'a str, Malformed> {
        let at = self.at;
        let bytes = self.take(len, what)?;
        std::str::from_utf8(bytes).map_err(|e| Malformed {
            offset: at,
            what: format!("{what} is not UTF-8: {e}"),
        })
    }

    fn str32(&mut self, what: &str) -> Result<&'a str, Malformed> {
        let len = u32::from_le_bytes(self.array(what)?) as usize;
        self.utf8(len, what)
    }

    fn key(&mut self) -> Result<Option<&'a [u8]>, Malformed> {
        let len = i32::from_le_bytes(self.array("key length")?);
        match len {
            -1 => Ok(None),
            n if n >= 0 => Ok(Some(self.take(n as usize, "key")?)),
            n => Err(self.bad(format!("key length {n}"))),
        }
    }

    fn domain(&mut self) -> Result<TimeDomain, Malformed> {
        match self.u8("time domain")? {
            0 => Ok(TimeDomain::Processing),
            1 => Ok(TimeDomain::Event),
            other => Err(self.bad(format!("time domain {other}, not 0 or 1"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_written_as_the_contract_documents() {
        let records = vec![
            LogRecord {
                partition: 3,
                offset: 7,
                timestamp_ms: -2,
                key: Some(b"k".to_vec()),
                value: b"vv".to_vec(),
                headers: vec![("h".into(), b"x".to_vec())],
            },
            LogRecord {
                partition: 3,
                offset: 8,
                timestamp_ms: 5,
                key: None,
                value: Vec::new(),
                headers: Vec::new(),
            },
        ];
        let mut out = vec![9; 3];
        encode_batch("in", 3, &records, &mut out);
        let mut want = b"LCB1".to_vec();
        want.extend([2, 0, 0, 0, 2, 0, 0, 0, b'i', b'n', 3, 0, 0, 0]);
        want.extend(7u64.to_le_bytes());
        want.extend((-2i64).to_le_bytes());
        want.extend([1, 0, 0, 0, b'k', 2, 0, 0, 0, b'v', b'v']);
        want.extend([1, 0, 1, 0, b'h', 1, 0, 0, 0, b'x']);
        want.extend(8u64.to_le_bytes());
        want.extend(5i64.to_le_bytes());
        want.extend([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0]);
        assert_eq!(out, want);
        assert!(fits(&records));
        let mut many = records[1].clone();
        many.headers = vec![("h".into(), Vec::new()); 70_000];
        assert!(!fits(&[many]));
    }

    #[test]
    fn every_entry_kind_reads_back_in_order() {
        let mut buf = b"LCE1".to_vec();
        buf.push(1);
        buf.extend([3, 0, 0, 0]);
        buf.extend(b"out");
        buf.extend((-1i32).to_le_bytes());
        buf.extend([1, 0, 0, 0, b'v', 1, 0, 2, 0, b'h', b'1', 0, 0, 0, 0, 1]);
        buf.extend(42i64.to_le_bytes());
        buf.extend([2, 1, 0, 0, 0, b'a', 1, 0, 0, 0, b'1']);
        buf.extend([3, 1, 0, 0, 0, b'b', 0, 0, 0, 0]);
        buf.extend(60_000u64.to_le_bytes());
        buf.extend([4, 1, 0, 0, 0, b'a']);
        buf.extend([5, 1]);
        buf.extend(100i64.to_le_bytes());
        buf.extend([1, 0, 0, 0, b'w']);
        buf.extend([6, 0, 1, 0, 0, 0, b's']);
        assert_eq!(
            decode_effects(&buf).unwrap(),
            vec![
                Effect::Output {
                    topic: "out",
                    key: None,
                    value: b"v",
                    headers: vec![("h1", &b""[..])],
                    timestamp_ms: Some(42),
                },
                Effect::Set {
                    key: b"a",
                    value: b"1",
                    ttl_ms: None
                },
                Effect::Set {
                    key: b"b",
                    value: b"",
                    ttl_ms: Some(60_000)
                },
                Effect::Delete { key: b"a" },
                Effect::Timer {
                    domain: TimeDomain::Event,
                    due_ms: 100,
                    key: b"w"
                },
                Effect::Cancel {
                    domain: TimeDomain::Processing,
                    key: b"s"
                },
            ]
        );
        assert_eq!(decode_effects(b"LCE1").unwrap(), vec![]);
    }

    #[test]
    fn a_malformed_buffer_says_what_and_where() {
        let err = |buf: &[u8]| decode_effects(buf).unwrap_err();
        assert_eq!(err(b"LCE2").offset, 0);
        assert!(err(b"LCE2").what.contains("magic"));
        assert_eq!(
            err(b"LCE1\x07"),
            Malformed {
                offset: 4,
                what: "unknown entry kind 7".into()
            }
        );
        // A value length running past the end.
        let e = err(b"LCE1\x02\x01\0\0\0k\x09\0\0\0ab");
        assert_eq!(e.offset, 14);
        assert_eq!(e.what, "state value needs 9 bytes, 2 remain");
        let e = err(b"LCE1\x05\x02");
        assert_eq!(
            (e.offset, e.what.as_str()),
            (6, "time domain 2, not 0 or 1")
        );
        // A topic that is not UTF-8.
        let e = err(b"LCE1\x01\x01\0\0\0\xff");
        assert_eq!(e.offset, 9);
        assert!(e.what.starts_with("topic is not UTF-8"), "{}", e.what);
    }
}
