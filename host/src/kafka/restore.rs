//! Rebuilding a partition's state from its route's changelog, and learning
//! which batches a previous owner handled past the group's commit.
//!
//! The changelog partition holds every state write of the source partition,
//! tagged with the batch (`first..end` source offsets) that made it, and a
//! marker per batch that emitted outputs.
//! - Restoring to the group's committed offset `upto` applies, in log order,
//!   the writes of batches that ended at or before `upto` — never a write of
//!   an uncommitted batch, so no count is applied twice.
//! - Both a restore and a start from a local checkpoint also return the
//!   batches that start at or after the start offset: those another owner
//!   handled (and may have delivered) but did not commit. The new owner
//!   re-forms exactly those batches, so its outputs carry the same origin
//!   headers as any copy already delivered.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::ClientSettings;
use crate::outbox::{batch_headers, changelog_key};

/// How long the changelog may go without delivering a record before the
/// read is given up (and retried by the worker).
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Records read from the changelog's end at first when only the replay plan
/// is needed; grows fourfold until it reaches batches before the start.
const TAIL_WINDOW: u64 = 256;

/// What a partition needs from the changelog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// Its state up to the group's committed offset, and the batches after it.
    Restore {
        /// The committed offset.
        upto: u64,
    },
    /// Only the batches from `from` on: the local state is current.
    Plan {
        /// The local checkpoint.
        from: u64,
    },
}

/// What a read found.
#[derive(Debug, Default)]
pub struct Restored {
    /// The partition's state as of `upto` (empty for `Goal::Plan`).
    pub state: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Batches (`first..end`) a previous owner handled from the start offset
    /// on, in offset order, not overlapping.
    pub plan: Vec<(u64, u64)>,
    /// Changelog records read.
    pub records: u64,
}

/// One changelog record, parsed.
struct Entry<'a> {
    first: u64,
    end: u64,
    key: &'a [u8],
    value: Option<&'a [u8]>,
}

/// Reads changelog `topic`/`partition` for `goal`; `progress(read, total)` is
/// called as it goes.
pub fn read(
    settings: &ClientSettings,
    group: &str,
    topic: &str,
    partition: u32,
    goal: Goal,
    cancel: &CancellationToken,
    mut progress: impl FnMut(u64, u64),
) -> anyhow::Result<Restored> {
    let reader = Reader::new(settings, group, topic, partition)?;
    let (low, high) = reader.watermarks()?;
    let mut restored = Restored::default();
    let mut batches = BTreeMap::new();
    let start = match goal {
        Goal::Restore { upto } => {
            let total = high - low;
            progress(0, total);
            reader.read(
                low,
                high,
                cancel,
                |n| progress(n, total),
                |e| {
                    restored.records += 1;
                    if e.first >= upto {
                        batches.insert(e.first, e.end);
                    }
                    match e.key.split_first() {
                        Some((&changelog_key::STATE, key)) if e.end <= upto => match e.value {
                            Some(value) => {
                                restored.state.insert(key.to_vec(), value.to_vec());
                            }
                            None => {
                                restored.state.remove(key);
                            }
                        },
                        _ => {}
                    }
                },
            )?;
            progress(total, total);
            upto
        }
        Goal::Plan { from } => {
            // Batches past `from` were written last: read back from the end
            // until a batch that ended at or before `from` shows up.
            let mut window = TAIL_WINDOW;
            loop {
                let begin = high.saturating_sub(window).max(low);
                let mut reached = false;
                batches.clear();
                reader.read(
                    begin,
                    high,
                    cancel,
                    |_| {},
                    |e| {
                        restored.records += 1;
                        if e.first >= from {
                            batches.insert(e.first, e.end);
                        } else if e.end <= from {
                            reached = true;
                        }
                    },
                )?;
                if reached || begin == low {
                    break;
                }
                window *= 4;
            }
            from
        }
    };
    // Batches of different owners past the commit may overlap; in offset
    // order, the first wins.
    let mut cursor = start;
    for (first, end) in batches {
        if first >= cursor && end > first {
            restored.plan.push((first, end));
            cursor = end;
        }
    }
    Ok(restored)
}

struct Reader<'a> {
    consumer: BaseConsumer,
    topic: &'a str,
    partition: u32,
}

impl<'a> Reader<'a> {
    fn new(
        settings: &ClientSettings,
        group: &str,
        topic: &'a str,
        partition: u32,
    ) -> anyhow::Result<Reader<'a>> {
        // librdkafka assigns partitions only with a group id; this reader
        // never joins or commits, so the id is just a label.
        let consumer: BaseConsumer = settings
            .consumer_config()
            .set("group.id", format!("{group}-restore"))
            .set("enable.auto.commit", "false")
            .create()
            .context("creating the changelog reader")?;
        Ok(Reader {
            consumer,
            topic,
            partition,
        })
    }

    fn watermarks(&self) -> anyhow::Result<(u64, u64)> {
        let (low, high) = self
            .consumer
            .fetch_watermarks(self.topic, self.partition as i32, Duration::from_secs(15))
            .with_context(|| {
                format!(
                    "reading the watermarks of changelog `{}`/{}",
                    self.topic, self.partition
                )
            })?;
        let low = low.max(0) as u64;
        Ok((low, (high.max(0) as u64).max(low)))
    }

    /// Calls `each` for every record in `begin..end`, `progress` every
    /// thousand.
    fn read(
        &self,
        begin: u64,
        end: u64,
        cancel: &CancellationToken,
        mut progress: impl FnMut(u64),
        mut each: impl FnMut(Entry<'_>),
    ) -> anyhow::Result<()> {
        if begin >= end {
            return Ok(());
        }
        let (topic, partition) = (self.topic, self.partition);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition as i32, Offset::Offset(begin as i64))?;
        self.consumer.assign(&tpl)?;
        let mut last_record = Instant::now();
        let mut position = begin;
        let mut read = 0u64;
        while position < end {
            if cancel.is_cancelled() {
                bail!("changelog read cancelled: the partition was released");
            }
            let Some(message) = self.consumer.poll(Duration::from_millis(200)) else {
                if last_record.elapsed() > STALL_TIMEOUT {
                    bail!(
                        "changelog `{topic}`/{partition} delivered nothing for {STALL_TIMEOUT:?} at offset {position} of {end}"
                    );
                }
                continue;
            };
            let message =
                message.with_context(|| format!("reading changelog `{topic}`/{partition}"))?;
            last_record = Instant::now();
            position = message.offset() as u64 + 1;
            read += 1;
            if read.is_multiple_of(1000) {
                progress(read);
            }
            let (mut first, mut batch_end) = (None, None);
            if let Some(headers) = message.headers() {
                for h in headers.iter() {
                    let value = h
                        .value
                        .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok());
                    match h.key {
                        batch_headers::FIRST => first = value,
                        batch_headers::END => batch_end = value,
                        _ => {}
                    }
                }
            }
            let (Some(first), Some(batch_end), Some(key)) = (first, batch_end, message.key())
            else {
                bail!(
                    "changelog `{topic}`/{partition} offset {} is not a linecook changelog record",
                    message.offset()
                );
            };
            if key.first() != Some(&changelog_key::STATE) && key != changelog_key::MARKER {
                bail!(
                    "changelog `{topic}`/{partition} offset {} has an unknown key kind",
                    message.offset()
                );
            }
            each(Entry {
                first,
                end: batch_end,
                key,
                value: message.payload(),
            });
        }
        Ok(())
    }
}
