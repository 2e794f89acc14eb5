//! The embedded log: topics of fixed partition count, records at
//! (topic, partition, offset), placed by Kafka's default partitioner.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use redb::{ReadableDatabase, ReadableTable, Table, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::partitioner::partition_for_key;
use crate::record::{Header, LogRecord, NewRecord, StoredRecord, now_ms};
use crate::store::{LOG_BYTES, LOG_ENDS, LOG_STARTS, RECORDS, Store, StoreError, TOPICS};

/// Most partitions a topic may have.
pub const MAX_PARTITIONS: u32 = 4096;

/// Checks a topic name: 1 to 249 characters of `[A-Za-z0-9._-]`, as in Kafka.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > 249 || !name.chars().all(ok_char) || name == "." {
        return Err(format!(
            "topic name `{name}` is invalid: use 1 to 249 of A-Z a-z 0-9 . _ -"
        ));
    }
    Ok(())
}

/// Checks a partition count.
pub fn validate_partitions(partitions: u32) -> Result<(), String> {
    if !(1..=MAX_PARTITIONS).contains(&partitions) {
        return Err(format!(
            "partitions is {partitions}; it must be between 1 and {MAX_PARTITIONS}"
        ));
    }
    Ok(())
}

/// A topic of the embedded log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    /// Topic name.
    pub name: String,
    /// Store-internal id.
    pub id: u32,
    /// Partition count, fixed at creation.
    pub partitions: u32,
}

impl TopicInfo {
    /// `partition`, if the topic has it.
    pub fn check_partition(&self, partition: u32) -> Result<u32, StoreError> {
        if partition < self.partitions {
            Ok(partition)
        } else {
            Err(StoreError::NoSuchPartition {
                topic: self.name.clone(),
                partitions: self.partitions,
                partition,
            })
        }
    }
}

impl Store {
    /// Creates `name` with `partitions` partitions. Creating a topic that
    /// exists with the same count is a no-op; with another count, an error.
    pub fn create_topic(&self, name: &str, partitions: u32) -> Result<TopicInfo, StoreError> {
        validate_topic_name(name).map_err(StoreError::Invalid)?;
        validate_partitions(partitions).map_err(StoreError::Invalid)?;
        let txn = self.db.begin_write()?;
        let info = {
            let mut topics = txn.open_table(TOPICS)?;
            let existing = topics.get(name)?.map(|v| v.value());
            match existing {
                Some((id, existing)) if existing == partitions => TopicInfo {
                    name: name.to_owned(),
                    id,
                    partitions,
                },
                Some((_, existing)) => {
                    return Err(StoreError::TopicExists {
                        name: name.to_owned(),
                        partitions: existing,
                    });
                }
                None => {
                    let mut next_id = 0;
                    for entry in topics.iter()? {
                        next_id = next_id.max(entry?.1.value().0 + 1);
                    }
                    topics.insert(name, (next_id, partitions))?;
                    TopicInfo {
                        name: name.to_owned(),
                        id: next_id,
                        partitions,
                    }
                }
            }
        };
        txn.commit()?;
        Ok(info)
    }

    /// The topic called `name`.
    pub fn topic(&self, name: &str) -> Result<TopicInfo, StoreError> {
        let txn = self.db.begin_read()?;
        let topics = txn.open_table(TOPICS)?;
        let (id, partitions) = topics
            .get(name)?
            .ok_or_else(|| StoreError::UnknownTopic(name.to_owned()))?
            .value();
        Ok(TopicInfo {
            name: name.to_owned(),
            id,
            partitions,
        })
    }

    /// All topics, by name.
    pub fn topics(&self) -> Result<Vec<TopicInfo>, StoreError> {
        let txn = self.db.begin_read()?;
        let topics = txn.open_table(TOPICS)?;
        let mut out = Vec::new();
        for entry in topics.iter()? {
            let (name, value) = entry?;
            let (id, partitions) = value.value();
            out.push(TopicInfo {
                name: name.value().to_owned(),
                id,
                partitions,
            });
        }
        Ok(out)
    }

    /// Appends `records` to `topic` in one durable transaction and returns
    /// each record's (partition, offset). Keyed records go where Kafka would
    /// put them; keyless ones round-robin.
    pub fn produce(
        &self,
        topic: &str,
        records: &[NewRecord],
    ) -> Result<Vec<(u32, u64)>, StoreError> {
        let txn = self.db.begin_write()?;
        let positions = {
            let mut log = LogAppender::new(&txn)?;
            let info = log.topic(topic)?;
            let now = now_ms();
            let mut positions = Vec::with_capacity(records.len());
            for record in records {
                let partition = match (record.partition, &record.key) {
                    (Some(p), _) => info.check_partition(p)?,
                    (None, Some(key)) => partition_for_key(key, info.partitions),
                    (None, None) => {
                        self.round_robin.fetch_add(1, Ordering::Relaxed) % info.partitions
                    }
                };
                let offset = log.append(
                    &info,
                    partition,
                    record.timestamp_ms.unwrap_or(now),
                    record.key.as_deref(),
                    &record.value,
                    &record.headers,
                )?;
                positions.push((partition, offset));
            }
            log.finish()?;
            positions
        };
        txn.commit()?;
        self.notify_appended();
        Ok(positions)
    }

    /// Up to `max` records of `topic`/`partition` from offset `from` on.
    pub fn read(
        &self,
        topic: &TopicInfo,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<LogRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let records = txn.open_table(RECORDS)?;
        let mut out = Vec::new();
        let range = records.range((topic.id, partition, from)..=(topic.id, partition, u64::MAX))?;
        for entry in range.take(max) {
            let (key, value) = entry?;
            let (_, _, offset) = key.value();
            let stored = StoredRecord::decode(value.value()).map_err(|e| StoreError::Corrupt {
                topic_id: topic.id,
                partition,
                offset,
                message: e.to_string(),
            })?;
            out.push(stored.into_log_record(partition, offset));
        }
        Ok(out)
    }

    /// The offset of the first record of `topic`/`partition` with a
    /// timestamp at or after `ms`, if any.
    pub fn first_offset_at(
        &self,
        topic: &TopicInfo,
        partition: u32,
        ms: i64,
    ) -> Result<Option<u64>, StoreError> {
        let mut from = 0;
        loop {
            let records = self.read(topic, partition, from, 10_000)?;
            let Some(last) = records.last() else {
                return Ok(None);
            };
            from = last.offset + 1;
            if let Some(r) = records.iter().find(|r| r.timestamp_ms >= ms) {
                return Ok(Some(r.offset));
            }
        }
    }

    /// The first offset still stored, per partition of `topic`: 0 until
    /// retention removes records.
    pub fn start_offsets(&self, topic: &TopicInfo) -> Result<Vec<u64>, StoreError> {
        let txn = self.db.begin_read()?;
        let starts = txn.open_table(LOG_STARTS)?;
        (0..topic.partitions)
            .map(|p| Ok(starts.get((topic.id, p))?.map_or(0, |v| v.value())))
            .collect()
    }

    /// The first offset still stored of one partition.
    pub fn start_offset(&self, topic: &TopicInfo, partition: u32) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let starts = txn.open_table(LOG_STARTS)?;
        Ok(starts.get((topic.id, partition))?.map_or(0, |v| v.value()))
    }

    /// Bytes of records stored, per partition of `topic`.
    pub fn stored_bytes(&self, topic: &TopicInfo) -> Result<Vec<u64>, StoreError> {
        let txn = self.db.begin_read()?;
        let bytes = txn.open_table(LOG_BYTES)?;
        (0..topic.partitions)
            .map(|p| Ok(bytes.get((topic.id, p))?.map_or(0, |v| v.value())))
            .collect()
    }

    /// The next offset to be appended, per partition of `topic`.
    pub fn end_offsets(&self, topic: &TopicInfo) -> Result<Vec<u64>, StoreError> {
        let txn = self.db.begin_read()?;
        let ends = txn.open_table(LOG_ENDS)?;
        (0..topic.partitions)
            .map(|p| Ok(ends.get((topic.id, p))?.map(|v| v.value()).unwrap_or(0)))
            .collect()
    }
}

/// Appends records inside a caller's write transaction, so a checkpoint can
/// append a batch's outputs atomically with everything else it writes.
pub(crate) struct LogAppender<'txn> {
    topics: Table<'txn, &'static str, (u32, u32)>,
    records: Table<'txn, (u32, u32, u64), &'static [u8]>,
    ends: Table<'txn, (u32, u32), u64>,
    bytes: Table<'txn, (u32, u32), u64>,
    known: HashMap<String, TopicInfo>,
    /// Log ends moved by this appender, and bytes it added, written to
    /// `ends` and `bytes` once at the end instead of on every record (a
    /// B-tree write per record saved).
    moved: HashMap<(u32, u32), (u64, u64)>,
}

impl<'txn> LogAppender<'txn> {
    pub(crate) fn new(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        Ok(LogAppender {
            topics: txn.open_table(TOPICS)?,
            records: txn.open_table(RECORDS)?,
            ends: txn.open_table(LOG_ENDS)?,
            bytes: txn.open_table(LOG_BYTES)?,
            known: HashMap::new(),
            moved: HashMap::new(),
        })
    }

    /// Writes the log ends the appends moved. Call it before committing;
    /// dropping the appender does it too (the appender borrows the
    /// transaction, so it is always dropped before a commit), but only
    /// `finish` reports a failure.
    pub(crate) fn finish(mut self) -> Result<(), StoreError> {
        self.write_ends()
    }

    fn write_ends(&mut self) -> Result<(), StoreError> {
        for (key, (end, added)) in self.moved.drain() {
            self.ends.insert(key, end)?;
            let before = self.bytes.get(key)?.map_or(0, |b| b.value());
            self.bytes.insert(key, before + added)?;
        }
        Ok(())
    }

    pub(crate) fn topic(&mut self, name: &str) -> Result<TopicInfo, StoreError> {
        if let Some(info) = self.known.get(name) {
            return Ok(info.clone());
        }
        let (id, partitions) = self
            .topics
            .get(name)?
            .ok_or_else(|| StoreError::UnknownTopic(name.to_owned()))?
            .value();
        let info = TopicInfo {
            name: name.to_owned(),
            id,
            partitions,
        };
        self.known.insert(name.to_owned(), info.clone());
        Ok(info)
    }

    /// Appends one record and returns its offset.
    pub(crate) fn append(
        &mut self,
        topic: &TopicInfo,
        partition: u32,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[Header],
    ) -> Result<u64, StoreError> {
        let offset = self.end(topic, partition)?;
        let bytes = StoredRecord::encode(timestamp_ms, key, value, headers);
        self.records
            .insert((topic.id, partition, offset), bytes.as_slice())?;
        let moved = self.moved.entry((topic.id, partition)).or_default();
        *moved = (offset + 1, moved.1 + bytes.len() as u64);
        Ok(offset)
    }

    /// The offset the next record of `topic`/`partition` gets.
    pub(crate) fn end(&self, topic: &TopicInfo, partition: u32) -> Result<u64, StoreError> {
        if let Some((end, _)) = self.moved.get(&(topic.id, partition)) {
            return Ok(*end);
        }
        Ok(self
            .ends
            .get((topic.id, partition))?
            .map(|v| v.value())
            .unwrap_or(0))
    }
}

impl Drop for LogAppender<'_> {
    fn drop(&mut self) {
        // After `finish` this writes nothing. On an error path the
        // transaction is abandoned, so whether this fails does not matter.
        let _ = self.write_ends();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn keyed_records_land_where_kafka_puts_them_in_order() {
        let (_dir, store) = store();
        let topic = store.create_topic("t", 3).unwrap();
        let rec = |k: &str, v: &str| NewRecord {
            timestamp_ms: None,
            key: Some(k.into()),
            value: v.into(),
            headers: vec![],
            partition: None,
        };
        let positions = store
            .produce("t", &[rec("a", "1"), rec("a", "2"), rec("b", "3")])
            .unwrap();
        let pa = partition_for_key(b"a", 3);
        assert_eq!(positions[0], (pa, 0));
        assert_eq!(positions[1], (pa, 1));
        let read = store.read(&topic, pa, 0, 10).unwrap();
        let values: Vec<_> = read
            .iter()
            .filter(|r| r.key.as_deref() == Some(b"a"))
            .map(|r| r.value.clone())
            .collect();
        assert_eq!(values, vec![b"1".to_vec(), b"2".to_vec()]);
        let ends = store.end_offsets(&topic).unwrap();
        assert_eq!(ends.iter().sum::<u64>(), 3);
    }

    #[test]
    fn creating_a_topic_again_with_other_partitions_fails() {
        let (_dir, store) = store();
        store.create_topic("t", 3).unwrap();
        assert!(store.create_topic("t", 3).is_ok());
        let err = store.create_topic("t", 4).unwrap_err();
        assert!(err.to_string().contains("3 partitions"), "{err}");
    }

    #[test]
    fn keyless_records_spread_round_robin() {
        let (_dir, store) = store();
        store.create_topic("t", 4).unwrap();
        let recs: Vec<_> = (0..8)
            .map(|i| NewRecord {
                timestamp_ms: None,
                key: None,
                value: vec![i],
                headers: vec![],
                partition: None,
            })
            .collect();
        let positions = store.produce("t", &recs).unwrap();
        let mut per_partition = [0; 4];
        for (p, _) in positions {
            per_partition[p as usize] += 1;
        }
        assert_eq!(per_partition, [2, 2, 2, 2]);
    }
}
