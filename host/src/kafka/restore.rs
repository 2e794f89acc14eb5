//! Rebuilding a partition's state from its route's changelog.
//!
//! The changelog partition holds every state write of the source partition,
//! tagged with the batch (`first..end` source offsets) that made it, and a
//! marker per batch that emitted outputs. Restoring to the group's committed
//! offset `upto` applies, in log order, the writes of batches that ended at
//! or before `upto` — never a write of an uncommitted batch, so no count is
//! applied twice — and returns the batches that start at or after `upto`: those
//! a previous owner handled (and may have delivered) beyond the commit, which
//! the new owner re-forms exactly, so its outputs carry the same origin.

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
/// restore is given up (and retried by the worker).
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What a restore found.
#[derive(Debug, Default)]
pub struct Restored {
    /// The partition's state as of `upto`.
    pub state: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Batches (`first..end`) a previous owner handled at or beyond `upto`,
    /// in offset order, not overlapping.
    pub plan: Vec<(u64, u64)>,
    /// Changelog records read.
    pub records: u64,
}

/// Reads changelog `topic`/`partition` to its end; `progress(read, total)`
/// is called as it goes.
pub fn restore(
    settings: &ClientSettings,
    group: &str,
    topic: &str,
    partition: u32,
    upto: u64,
    cancel: &CancellationToken,
    mut progress: impl FnMut(u64, u64),
) -> anyhow::Result<Restored> {
    // librdkafka assigns partitions only with a group id; this reader never
    // joins or commits, so the id is just a label.
    let consumer: BaseConsumer = settings
        .client_config()
        .set("group.id", format!("{group}-restore"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .context("creating the changelog reader")?;
    let (low, high) = consumer
        .fetch_watermarks(topic, partition as i32, Duration::from_secs(15))
        .with_context(|| format!("reading the watermarks of changelog `{topic}`/{partition}"))?;
    let (low, high) = (low.max(0) as u64, high.max(0) as u64);
    let mut restored = Restored::default();
    let mut batches = BTreeMap::new();
    let total = high.saturating_sub(low);
    progress(0, total);
    if high > low {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition as i32, Offset::Offset(low as i64))?;
        consumer.assign(&tpl)?;
        let mut last_progress = Instant::now();
        let mut position = low;
        while position < high {
            if cancel.is_cancelled() {
                bail!("restore cancelled: the partition was released");
            }
            let Some(message) = consumer.poll(Duration::from_millis(200)) else {
                if last_progress.elapsed() > STALL_TIMEOUT {
                    bail!(
                        "changelog `{topic}`/{partition} delivered nothing for {STALL_TIMEOUT:?} at offset {position} of {high}"
                    );
                }
                continue;
            };
            let message =
                message.with_context(|| format!("reading changelog `{topic}`/{partition}"))?;
            last_progress = Instant::now();
            position = message.offset() as u64 + 1;
            restored.records += 1;
            if restored.records % 1000 == 0 {
                progress(position - low, total);
            }
            let (mut first, mut end) = (None, None);
            if let Some(headers) = message.headers() {
                for h in headers.iter() {
                    let value = h
                        .value
                        .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok());
                    match h.key {
                        batch_headers::FIRST => first = value,
                        batch_headers::END => end = value,
                        _ => {}
                    }
                }
            }
            let (Some(first), Some(end), Some(key)) = (first, end, message.key()) else {
                bail!(
                    "changelog `{topic}`/{partition} offset {} is not a linecook changelog record",
                    message.offset()
                );
            };
            if first >= upto {
                batches.insert(first, end);
            }
            match key.split_first() {
                Some((&changelog_key::STATE, state_key)) if end <= upto => {
                    match message.payload() {
                        Some(value) => {
                            restored.state.insert(state_key.to_vec(), value.to_vec());
                        }
                        None => {
                            restored.state.remove(state_key);
                        }
                    }
                }
                Some((&changelog_key::STATE, _)) => {}
                _ if key == changelog_key::MARKER => {}
                _ => bail!(
                    "changelog `{topic}`/{partition} offset {} has an unknown key kind",
                    message.offset()
                ),
            }
        }
    }
    progress(total, total);
    // Batches of different owners beyond the commit may overlap; the first
    // owner's (in offset order) wins, as the earliest delivered.
    let mut cursor = upto;
    for (first, end) in batches {
        if first >= cursor && end > first {
            restored.plan.push((first, end));
            cursor = end;
        }
    }
    Ok(restored)
}
