//! The embedded log: topics of fixed partition count, records at
//! (topic, partition, offset), placed by Kafka's default partitioner.
//!
//! Records are stored in blocks of up to `BLOCK_RECORDS` consecutive
//! records of a partition, one B-tree row each (`LOG_BLOCKS`): a row per
//! record made redb's insert most of what appending cost. Each append
//! transaction closes its blocks, so a block never changes once written
//! (retention cuts the one it starts in).

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::atomic::Ordering;

use redb::{ReadableDatabase, ReadableTable, Table, WriteTransaction};
use rustc_hash::FxHasher;
use serde::{Deserialize, Serialize};

use crate::partitioner::partition_for_key;
use crate::record::{Header, LogRecord, NewRecord, StoredRecord, now_ms};
use crate::store::{
    LOG_BLOCKS, LOG_BYTES, LOG_ENDS, LOG_STARTS, RECORDS, Store, StoreError, TOPICS,
};

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
        let (positions, touched) = {
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
                    info.id,
                    partition,
                    record.timestamp_ms.unwrap_or(now),
                    record.key.as_deref(),
                    &record.value,
                    &record.headers,
                )?;
                positions.push((partition, offset));
            }
            let touched = log.finish()?;
            (positions, touched)
        };
        txn.commit()?;
        self.notify_appended(&touched);
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
        let mut out = Vec::new();
        if max == 0 {
            return Ok(out);
        }
        let (rows, blocks) = (txn.open_table(RECORDS)?, txn.open_table(LOG_BLOCKS)?);
        scan_records(
            &rows,
            &blocks,
            (topic.id, partition),
            from,
            |offset, bytes| {
                let stored = StoredRecord::decode(bytes).map_err(|e| StoreError::Corrupt {
                    topic_id: topic.id,
                    partition,
                    offset,
                    message: e.to_string(),
                })?;
                out.push(stored.into_log_record(partition, offset));
                Ok(out.len() < max)
            },
        )?;
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

/// Calls `each` with (offset, encoded record) for the records of
/// `partition` (topic id, partition) from offset `from` on, in offset order
/// — the rows an older linecook wrote a record each, then the blocks —
/// until it returns false.
pub(crate) fn scan_records(
    rows: &impl ReadableTable<(u32, u32, u64), &'static [u8]>,
    blocks: &impl ReadableTable<(u32, u32, u64), &'static [u8]>,
    (topic_id, partition): (u32, u32),
    from: u64,
    mut each: impl FnMut(u64, &[u8]) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    let mut next = from;
    for entry in rows.range((topic_id, partition, from)..=(topic_id, partition, u64::MAX))? {
        let (key, value) = entry?;
        next = key.value().2 + 1;
        if !each(key.value().2, value.value())? {
            return Ok(());
        }
    }
    // The block holding `next` starts at or before it.
    let begin = blocks
        .range((topic_id, partition, 0)..=(topic_id, partition, next))?
        .next_back()
        .transpose()?
        .map_or(next, |(k, _)| k.value().2);
    for entry in blocks.range((topic_id, partition, begin)..=(topic_id, partition, u64::MAX))? {
        let (key, value) = entry?;
        let first = key.value().2;
        for record in Block::records(first, value.value()) {
            let (offset, bytes) = record.map_err(|message| StoreError::Corrupt {
                topic_id,
                partition,
                offset: first,
                message,
            })?;
            if offset >= next && !each(offset, bytes)? {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Most records in one block; a block is also closed once it holds
/// `BLOCK_BYTES`. Reading one record walks at most this many lengths.
pub const BLOCK_RECORDS: u32 = 256;
/// Size past which a block is closed.
const BLOCK_BYTES: usize = 64 * 1024;

/// Consecutive records of one partition, as one row: the record count
/// (u32, little-endian), then per record its length (u32, little-endian)
/// and its encoding (`StoredRecord`).
#[derive(Debug)]
pub(crate) struct Block {
    first: u64,
    count: u32,
    bytes: Vec<u8>,
}

impl Block {
    /// An empty block whose first record will have offset `first`.
    pub(crate) fn starting_at(first: u64) -> Block {
        let mut bytes = Vec::with_capacity(4096);
        bytes.extend_from_slice(&0u32.to_le_bytes());
        Block {
            first,
            count: 0,
            bytes,
        }
    }

    /// Offset of its first record.
    pub(crate) fn first(&self) -> u64 {
        self.first
    }

    /// Appends a record encoded by `encode` (which appends to the buffer it
    /// is given and returns it); returns the record's encoded size.
    fn push_with(&mut self, encode: impl FnOnce(Vec<u8>) -> Vec<u8>) -> u64 {
        let at = self.bytes.len();
        self.bytes.extend_from_slice(&0u32.to_le_bytes());
        self.bytes = encode(std::mem::take(&mut self.bytes));
        let len = self.bytes.len() - at - 4;
        self.bytes[at..at + 4].copy_from_slice(&(len as u32).to_le_bytes());
        self.count += 1;
        len as u64
    }

    /// Appends a record already encoded.
    pub(crate) fn push_encoded(&mut self, record: &[u8]) {
        self.push_with(|mut buf| {
            buf.extend_from_slice(record);
            buf
        });
    }

    fn is_full(&self) -> bool {
        self.count >= BLOCK_RECORDS || self.bytes.len() >= BLOCK_BYTES
    }

    /// The row.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.bytes[..4].copy_from_slice(&self.count.to_le_bytes());
        self.bytes
    }

    /// How many records the row `bytes` holds.
    pub(crate) fn count(bytes: &[u8]) -> Result<u32, String> {
        let head = bytes
            .get(..4)
            .ok_or("a log block shorter than its header")?;
        Ok(u32::from_le_bytes(head.try_into().expect("4 bytes")))
    }

    /// The records of the row `bytes` of the block starting at `first`, as
    /// (offset, encoded record), without decoding them.
    pub(crate) fn records(first: u64, bytes: &[u8]) -> BlockRecords<'_> {
        match Block::count(bytes) {
            Ok(left) => BlockRecords {
                first,
                offset: first,
                left,
                rest: &bytes[4..],
            },
            // A short row fails as a record length cut off.
            Err(_) => BlockRecords {
                first,
                offset: first,
                left: 1,
                rest: &[],
            },
        }
    }
}

/// The records of a block, in offset order (`Block::records`).
#[derive(Debug)]
pub(crate) struct BlockRecords<'a> {
    first: u64,
    offset: u64,
    left: u32,
    rest: &'a [u8],
}

impl<'a> Iterator for BlockRecords<'a> {
    type Item = Result<(u64, &'a [u8]), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let first = self.first;
        let parsed = self
            .rest
            .split_first_chunk::<4>()
            .ok_or_else(|| format!("log block at {first} ends inside a record length"))
            .and_then(|(len, tail)| {
                let len = u32::from_le_bytes(*len) as usize;
                if tail.len() < len {
                    return Err(format!(
                        "log block at {first} ends inside record {}",
                        self.offset
                    ));
                }
                Ok(tail.split_at(len))
            });
        match parsed {
            Ok((record, tail)) => {
                let offset = self.offset;
                self.rest = tail;
                self.offset += 1;
                self.left -= 1;
                Some(Ok((offset, record)))
            }
            Err(e) => {
                self.left = 0;
                Some(Err(e))
            }
        }
    }
}

/// Appends records inside a caller's write transaction, so a checkpoint can
/// append a batch's outputs atomically with everything else it writes.
pub(crate) struct LogAppender<'txn> {
    topics: Table<'txn, &'static str, (u32, u32)>,
    blocks: Table<'txn, (u32, u32, u64), &'static [u8]>,
    ends: Table<'txn, (u32, u32), u64>,
    bytes: Table<'txn, (u32, u32), u64>,
    /// Both maps are looked up per record, so they hash with `FxHasher`:
    /// the default hash resists collisions an attacker chooses, which buys
    /// nothing for topic names and partition numbers.
    known: HashMap<String, TopicInfo, BuildHasherDefault<FxHasher>>,
    /// The partitions appended to, one lookup per record.
    tails: HashMap<(u32, u32), Tail, BuildHasherDefault<FxHasher>>,
}

/// What an appender holds for a partition it appended to. The log end
/// moved and the bytes added are written to `ends` and `bytes` once at the
/// end instead of on every record (a B-tree write per record saved).
struct Tail {
    /// The offset the next record gets.
    end: u64,
    /// Bytes appended.
    added: u64,
    /// The block being filled, written once full or at the end.
    block: Option<Block>,
}

impl<'txn> LogAppender<'txn> {
    pub(crate) fn new(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        Ok(LogAppender {
            topics: txn.open_table(TOPICS)?,
            blocks: txn.open_table(LOG_BLOCKS)?,
            ends: txn.open_table(LOG_ENDS)?,
            bytes: txn.open_table(LOG_BYTES)?,
            known: HashMap::default(),
            tails: HashMap::default(),
        })
    }

    /// Writes the blocks still open and the log ends the appends moved.
    /// Call it before committing; dropping the appender does it too (the
    /// appender borrows the transaction, so it is always dropped before a
    /// commit), but only `finish` reports a failure.
    /// Returns the (topic id, partition) pairs appended to, whose readers
    /// [`Store::notify_appended`] wakes once the transaction committed.
    pub(crate) fn finish(mut self) -> Result<Vec<(u32, u32)>, StoreError> {
        self.write_ends()
    }

    fn write_ends(&mut self) -> Result<Vec<(u32, u32)>, StoreError> {
        let mut touched = Vec::with_capacity(self.tails.len());
        for ((topic, partition), tail) in self.tails.drain() {
            if let Some(block) = tail.block {
                self.blocks
                    .insert((topic, partition, block.first), block.finish().as_slice())?;
            }
            let key = (topic, partition);
            self.ends.insert(key, tail.end)?;
            let before = self.bytes.get(key)?.map_or(0, |b| b.value());
            self.bytes.insert(key, before + tail.added)?;
            touched.push(key);
        }
        Ok(touched)
    }

    pub(crate) fn topic(&mut self, name: &str) -> Result<TopicInfo, StoreError> {
        self.topic_ref(name).cloned()
    }

    /// [`LogAppender::topic`] without a copy, for a lookup per record.
    pub(crate) fn topic_ref(&mut self, name: &str) -> Result<&TopicInfo, StoreError> {
        // Two lookups on a hit: returning `get`'s borrow would keep `known`
        // borrowed for the insert below (a limit of today's borrow checker).
        if self.known.contains_key(name) {
            return Ok(&self.known[name]);
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
        Ok(self.known.entry(name.to_owned()).or_insert(info))
    }

    /// Appends one record to partition `partition` of the topic with id
    /// `topic_id` and returns its offset.
    pub(crate) fn append(
        &mut self,
        topic_id: u32,
        partition: u32,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[Header],
    ) -> Result<u64, StoreError> {
        let id = (topic_id, partition);
        let tail = match self.tails.entry(id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => v.insert(Tail {
                end: self.ends.get(id)?.map_or(0, |e| e.value()),
                added: 0,
                block: None,
            }),
        };
        let offset = tail.end;
        let block = tail.block.get_or_insert_with(|| Block::starting_at(offset));
        let size =
            block.push_with(|buf| StoredRecord::encode(buf, timestamp_ms, key, value, headers));
        if block.is_full() {
            let block = tail.block.take().expect("just filled");
            self.blocks.insert(
                (topic_id, partition, block.first),
                block.finish().as_slice(),
            )?;
        }
        tail.end = offset + 1;
        tail.added += size;
        Ok(offset)
    }

    /// The offset the next record of `topic`/`partition` gets.
    pub(crate) fn end(&self, topic: &TopicInfo, partition: u32) -> Result<u64, StoreError> {
        if let Some(tail) = self.tails.get(&(topic.id, partition)) {
            return Ok(tail.end);
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
    use redb::ReadableTableMetadata as _;

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

    fn values(n: usize, from: usize) -> Vec<NewRecord> {
        (from..from + n)
            .map(|i| NewRecord {
                timestamp_ms: Some(i as i64),
                key: None,
                value: format!("v{i}").into_bytes(),
                headers: vec![("h".into(), vec![i as u8])],
                partition: Some(0),
            })
            .collect()
    }

    fn offsets_and_values(records: &[LogRecord]) -> Vec<(u64, String)> {
        records
            .iter()
            .map(|r| (r.offset, String::from_utf8(r.value.clone()).unwrap()))
            .collect()
    }

    #[test]
    fn records_read_back_from_any_offset_across_blocks_and_transactions() {
        let (_dir, store) = store();
        let topic = store.create_topic("t", 1).unwrap();
        // 600 in one transaction: blocks of 256, 256 and 88; then 10 more.
        store.produce("t", &values(600, 0)).unwrap();
        store.produce("t", &values(10, 600)).unwrap();
        let all = store.read(&topic, 0, 0, usize::MAX).unwrap();
        assert_eq!(all.len(), 610);
        for (i, r) in all.iter().enumerate() {
            assert_eq!(r.offset, i as u64);
            assert_eq!(r.value, format!("v{i}").into_bytes());
            assert_eq!(r.timestamp_ms, i as i64);
            assert_eq!(r.headers, vec![("h".to_owned(), vec![i as u8])]);
        }
        let window = |from, max| offsets_and_values(&store.read(&topic, 0, from, max).unwrap());
        assert_eq!(window(250, 10), offsets_and_values(&all[250..260]));
        assert_eq!(
            window(255, 3),
            offsets_and_values(&all[255..258]),
            "across a block end"
        );
        assert_eq!(
            window(598, 5),
            offsets_and_values(&all[598..603]),
            "across transactions"
        );
        assert_eq!(window(609, 5), offsets_and_values(&all[609..]));
        assert!(window(610, 5).is_empty());
        assert!(window(0, 0).is_empty());
        let rows: u64 = {
            let txn = store.db.begin_read().unwrap();
            txn.open_table(LOG_BLOCKS).unwrap().len().unwrap()
        };
        assert_eq!(rows, 4, "a row per block, not per record");
        assert_eq!(store.stored_records().unwrap(), 610);
    }

    #[test]
    fn records_an_older_version_stored_a_row_each_come_before_the_blocks() {
        let (_dir, store) = store();
        let topic = store.create_topic("t", 1).unwrap();
        {
            // As linecook wrote the log before blocks.
            let txn = store.db.begin_write().unwrap();
            {
                let mut rows = txn.open_table(RECORDS).unwrap();
                for i in 0..5u64 {
                    let bytes = StoredRecord::encode(
                        Vec::new(),
                        i as i64,
                        None,
                        format!("v{i}").as_bytes(),
                        &[],
                    );
                    rows.insert((topic.id, 0, i), bytes.as_slice()).unwrap();
                }
                txn.open_table(LOG_ENDS)
                    .unwrap()
                    .insert((topic.id, 0), 5)
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        store.produce("t", &values(3, 5)).unwrap();
        let read = |from, max| offsets_and_values(&store.read(&topic, 0, from, max).unwrap());
        let expected: Vec<(u64, String)> = (0..8).map(|i| (i, format!("v{i}"))).collect();
        assert_eq!(read(0, 100), expected);
        assert_eq!(read(3, 3), expected[3..6]);
        assert_eq!(read(0, 5), expected[..5]);
        assert_eq!(store.stored_records().unwrap(), 8);
    }

    #[test]
    fn a_damaged_block_is_reported_not_misread() {
        let (_dir, store) = store();
        let topic = store.create_topic("t", 1).unwrap();
        store.produce("t", &values(3, 0)).unwrap();
        {
            let txn = store.db.begin_write().unwrap();
            {
                let mut blocks = txn.open_table(LOG_BLOCKS).unwrap();
                let row = blocks
                    .get((topic.id, 0, 0))
                    .unwrap()
                    .unwrap()
                    .value()
                    .to_vec();
                blocks
                    .insert((topic.id, 0, 0), &row[..row.len() - 2])
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        let err = store.read(&topic, 0, 0, 10).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("ends inside record 2"), "{err}");
    }
}
