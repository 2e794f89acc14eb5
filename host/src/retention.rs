//! Retention of the embedded log: removing a partition's oldest records
//! once they are older than `retention_ms` or the partition holds more than
//! `retention_bytes`, so a steady stream does not fill the disk.
//!
//! Records go from the start of a partition only: its log start offset moves
//! forward and everything from it to the end is still there. Removal runs in
//! the background in small transactions (at most `TRIM_LIMIT` records
//! each), so a partition's checkpoint never waits long behind one. A route
//! with `on_truncated = "wait"` (the default) holds retention at its
//! committed offset; the others let it pass and are told when they meet the
//! gap (`worker`).

use std::collections::BTreeMap;
use std::time::Duration;

use redb::{ReadableTable, ReadableTableMetadata as _};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{Config, OnTruncated, RetentionPolicy};
use crate::log::TopicInfo;
use crate::log::{Block, scan_records};
use crate::metrics::Metrics;
use crate::record::{StoredRecord, now_ms};
use crate::store::{CHECKPOINTS, LOG_BLOCKS, LOG_BYTES, LOG_STARTS, RECORDS, Store, StoreError};

/// Most records one retention transaction removes.
pub const TRIM_LIMIT: usize = 4096;

/// How many of a partition's oldest records `policy` removes now: a prefix
/// of `records` (offset, timestamp, size, oldest first), stopping at the
/// first record that is young enough while the partition is within its
/// byte limit, and never at or past `floor` (the committed offset of a route
/// that waits). `total_bytes` is the partition's size before removal.
/// Returns the records and bytes to remove.
pub fn removable(
    policy: RetentionPolicy,
    now_ms: i64,
    records: impl IntoIterator<Item = (u64, i64, u64)>,
    total_bytes: u64,
    floor: u64,
) -> (usize, u64) {
    let cutoff = policy
        .ms
        .map(|ms| now_ms.saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX)));
    let (mut count, mut bytes) = (0, 0);
    for (offset, timestamp, size) in records {
        if offset >= floor {
            break;
        }
        let too_old = cutoff.is_some_and(|c| timestamp < c);
        let too_big = policy.bytes.is_some_and(|max| total_bytes - bytes > max);
        if !(too_old || too_big) {
            break;
        }
        count += 1;
        bytes += size;
    }
    (count, bytes)
}

/// What one retention transaction did to a partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trimmed {
    /// Records removed.
    pub records: u64,
    /// Bytes removed.
    pub bytes: u64,
    /// The partition's log start offset after it.
    pub start: u64,
}

impl Store {
    /// Removes up to `limit` of the oldest records of `topic`/`partition`
    /// that `policy` no longer keeps, below `floor`, in one transaction.
    pub fn trim(
        &self,
        topic: &TopicInfo,
        partition: u32,
        policy: RetentionPolicy,
        now_ms: i64,
        floor: u64,
        limit: usize,
    ) -> Result<Trimmed, StoreError> {
        let txn = self.db.begin_write()?;
        let trimmed = {
            let id = (topic.id, partition);
            let corrupt = |offset, message: String| StoreError::Corrupt {
                topic_id: topic.id,
                partition,
                offset,
                message,
            };
            let mut starts = txn.open_table(LOG_STARTS)?;
            let mut sizes = txn.open_table(LOG_BYTES)?;
            let mut rows = txn.open_table(RECORDS)?;
            let mut blocks = txn.open_table(LOG_BLOCKS)?;
            let start = starts.get(id)?.map_or(0, |v| v.value());
            let total = sizes.get(id)?.map_or(0, |v| v.value());
            let mut oldest = Vec::new();
            if limit > 0 {
                scan_records(&rows, &blocks, id, start, |offset, bytes| {
                    let stored =
                        StoredRecord::decode(bytes).map_err(|e| corrupt(offset, e.to_string()))?;
                    oldest.push((offset, stored.timestamp_ms, bytes.len() as u64));
                    Ok(oldest.len() < limit)
                })?;
            }
            let (count, bytes) = removable(policy, now_ms, oldest.iter().copied(), total, floor);
            if count == 0 {
                return Ok(Trimmed {
                    start,
                    ..Trimmed::default()
                });
            }
            let new_start = oldest[count - 1].0 + 1;
            rows.retain_in(
                (topic.id, partition, start)..(topic.id, partition, new_start),
                |_, _| false,
            )?;
            cut_blocks(&mut blocks, (topic.id, partition), new_start)?;
            starts.insert(id, new_start)?;
            sizes.insert(id, total.saturating_sub(bytes))?;
            Trimmed {
                records: count as u64,
                bytes,
                start: new_start,
            }
        };
        txn.commit()?;
        Ok(trimmed)
    }

    /// The committed offset of every partition of `topic` (0 without a
    /// checkpoint).
    fn committed_offsets(&self, topic: &TopicInfo) -> Result<Vec<u64>, StoreError> {
        use redb::ReadableDatabase as _;
        let txn = self.db.begin_read()?;
        let checkpoints = txn.open_table(CHECKPOINTS)?;
        (0..topic.partitions)
            .map(|p| Ok(checkpoints.get((topic.id, p))?.map_or(0, |v| v.value().0)))
            .collect()
    }

    /// Records stored in the log, all topics (for the soak bench's report).
    pub fn stored_records(&self) -> Result<u64, StoreError> {
        use redb::ReadableDatabase as _;
        let txn = self.db.begin_read()?;
        let mut count = txn.open_table(RECORDS)?.len()?;
        for entry in txn.open_table(LOG_BLOCKS)?.iter()? {
            let (key, value) = entry?;
            let (topic_id, partition, first) = key.value();
            count +=
                u64::from(
                    Block::count(value.value()).map_err(|message| StoreError::Corrupt {
                        topic_id,
                        partition,
                        offset: first,
                        message,
                    })?,
                );
        }
        Ok(count)
    }
}

/// Removes the blocks of `partition` (topic id, partition) that end at or
/// before `new_start` and cuts the one it falls in, so exactly the records
/// from `new_start` on stay.
fn cut_blocks(
    blocks: &mut redb::Table<'_, (u32, u32, u64), &'static [u8]>,
    (topic_id, partition): (u32, u32),
    new_start: u64,
) -> Result<(), StoreError> {
    let corrupt = |offset, message| StoreError::Corrupt {
        topic_id,
        partition,
        offset,
        message,
    };
    let mut gone = Vec::new();
    let mut kept = None;
    for entry in blocks.range((topic_id, partition, 0)..(topic_id, partition, new_start))? {
        let (key, value) = entry?;
        let first = key.value().2;
        gone.push(first);
        let count = Block::count(value.value()).map_err(|e| corrupt(first, e))?;
        if first + u64::from(count) > new_start {
            let mut rest = Block::starting_at(new_start);
            for record in Block::records(first, value.value()) {
                let (offset, bytes) = record.map_err(|e| corrupt(first, e))?;
                if offset >= new_start {
                    rest.push_encoded(bytes);
                }
            }
            kept = Some(rest);
        }
    }
    for first in gone {
        blocks.remove((topic_id, partition, first))?;
    }
    if let Some(rest) = kept {
        blocks.insert(
            (topic_id, partition, rest.first()),
            rest.finish().as_slice(),
        )?;
    }
    Ok(())
}

/// Which topics retention applies to and how: per embedded topic, its
/// policy and whether a route on it waits (`on_truncated = "wait"`).
#[derive(Debug, Clone, Default)]
pub struct Plan {
    default: RetentionPolicy,
    topics: BTreeMap<String, RetentionPolicy>,
    waiting: Vec<String>,
    every: Duration,
}

impl Plan {
    /// The retention the config asks for.
    pub fn from_config(config: &Config) -> Plan {
        Plan {
            default: config.retention.policy(),
            topics: config
                .topics
                .iter()
                .map(|t| (t.name.clone(), t.retention(&config.retention)))
                .collect(),
            waiting: config
                .routes
                .iter()
                .filter(|r| r.on_truncated == OnTruncated::Wait)
                .map(|r| r.topic.clone())
                .collect(),
            every: Duration::from_millis(config.retention.check_interval_ms.max(10)),
        }
    }

    /// The policy of `topic`.
    pub fn policy(&self, topic: &str) -> RetentionPolicy {
        self.topics.get(topic).copied().unwrap_or(self.default)
    }

    /// Whether any topic has a policy that removes anything.
    pub fn any(&self) -> bool {
        self.default.removes() || self.topics.values().any(|p| p.removes())
    }

    /// One pass over every topic: removes what retention no longer keeps,
    /// `TRIM_LIMIT` records per transaction.
    pub fn enforce(&self, store: &Store, metrics: &Metrics) -> Result<u64, StoreError> {
        let mut removed = 0;
        for topic in store.topics()? {
            let policy = self.policy(&topic.name);
            if !policy.removes() {
                continue;
            }
            // The topic's series exist from the first pass, at zero.
            metrics.retention_removed(&topic.name, 0, 0);
            let floors = if self.waiting.contains(&topic.name) {
                store.committed_offsets(&topic)?
            } else {
                vec![u64::MAX; topic.partitions as usize]
            };
            for partition in 0..topic.partitions {
                loop {
                    let trimmed = store.trim(
                        &topic,
                        partition,
                        policy,
                        now_ms(),
                        floors[partition as usize],
                        TRIM_LIMIT,
                    )?;
                    if trimmed.records > 0 {
                        debug!(
                            topic = %topic.name,
                            partition,
                            records = trimmed.records,
                            bytes = trimmed.bytes,
                            start = trimmed.start,
                            "retention removed records"
                        );
                        metrics.retention_removed(&topic.name, trimmed.records, trimmed.bytes);
                        removed += trimmed.records;
                    }
                    if trimmed.records < TRIM_LIMIT as u64 {
                        break;
                    }
                }
            }
        }
        Ok(removed)
    }

    /// Enforces retention every `check_interval_ms` until `cancel`, on the
    /// calling thread (a thread of its own: removal writes to the store).
    pub fn run(&self, store: &Store, metrics: &Metrics, cancel: &CancellationToken) {
        if !self.any() {
            return;
        }
        info!(every = ?self.every, "retention enforced in the background");
        while !cancel.is_cancelled() {
            match self.enforce(store, metrics) {
                Ok(0) => {}
                Ok(n) => debug!(records = n, "retention pass"),
                Err(e) => warn!("retention pass failed, will try again: {e}"),
            }
            let deadline = std::time::Instant::now() + self.every;
            while !cancel.is_cancelled() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50).min(self.every));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000;

    fn policy(ms: Option<u64>, bytes: Option<u64>) -> RetentionPolicy {
        RetentionPolicy { ms, bytes }
    }

    /// Records at offsets 0.. with these timestamps, 10 bytes each.
    fn records(timestamps: &[i64]) -> Vec<(u64, i64, u64)> {
        timestamps
            .iter()
            .enumerate()
            .map(|(i, t)| (i as u64, *t, 10))
            .collect()
    }

    #[test]
    fn time_removes_the_old_prefix_and_stops_at_the_first_young_record() {
        let now = 10 * HOUR as i64;
        let old = now - 2 * HOUR as i64;
        let young = now - 10;
        let r = records(&[old, old, young, old, young]);
        // The old record after a young one stays: the log start only moves
        // forward over a prefix.
        assert_eq!(
            removable(policy(Some(HOUR), None), now, r.clone(), 50, u64::MAX),
            (2, 20)
        );
        assert_eq!(removable(policy(None, None), now, r, 50, u64::MAX), (0, 0));
    }

    #[test]
    fn size_removes_just_enough_to_fit() {
        let r = records(&[0; 10]);
        assert_eq!(
            removable(policy(None, Some(35)), 0, r.clone(), 100, u64::MAX),
            (7, 70)
        );
        assert_eq!(
            removable(policy(None, Some(100)), 0, r.clone(), 100, u64::MAX),
            (0, 0)
        );
        assert_eq!(
            removable(policy(None, Some(0)), 0, r, 100, u64::MAX),
            (10, 100)
        );
    }

    #[test]
    fn a_waiting_route_holds_retention_at_its_committed_offset() {
        let r = records(&[0; 10]);
        assert_eq!(
            removable(policy(Some(1), Some(0)), HOUR as i64, r.clone(), 100, 4),
            (4, 40)
        );
        assert_eq!(
            removable(policy(Some(1), Some(0)), HOUR as i64, r, 100, 0),
            (0, 0)
        );
    }

    #[test]
    fn trim_moves_the_log_start_and_keeps_the_rest_readable() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let topic = store.create_topic("t", 1).unwrap();
        let rec = |ts: i64| crate::record::NewRecord {
            timestamp_ms: Some(ts),
            key: None,
            value: vec![b'x'; 20],
            headers: vec![],
            partition: Some(0),
        };
        // Timestamps of one encoded size, so every record has the same size.
        let batch: Vec<_> = [1, 2, 3, 60, 61].into_iter().map(rec).collect();
        store.produce("t", &batch).unwrap();
        let before = store.stored_bytes(&topic).unwrap()[0];
        let trimmed = store
            .trim(&topic, 0, policy(Some(50), None), 62, u64::MAX, 2)
            .unwrap();
        assert_eq!((trimmed.records, trimmed.start), (2, 2));
        let trimmed = store
            .trim(&topic, 0, policy(Some(50), None), 62, u64::MAX, 2)
            .unwrap();
        assert_eq!((trimmed.records, trimmed.start), (1, 3));
        assert_eq!(store.start_offsets(&topic).unwrap(), vec![3]);
        let left: Vec<u64> = store
            .read(&topic, 0, 0, 10)
            .unwrap()
            .iter()
            .map(|r| r.offset)
            .collect();
        assert_eq!(left, vec![3, 4]);
        assert_eq!(store.stored_bytes(&topic).unwrap()[0], before * 2 / 5);
        assert_eq!(store.end_offsets(&topic).unwrap(), vec![5]);
        // Reopening keeps the start and the size.
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.start_offsets(&topic).unwrap(), vec![3]);
        assert_eq!(store.stored_bytes(&topic).unwrap()[0], before * 2 / 5);
    }
}
