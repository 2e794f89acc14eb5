//! The outbox (Kafka source): records a checkpoint commits for delivery to
//! the cluster — the handler's outputs and the route's state changelog —
//! written in the same redb transaction as the batch's offset, and removed
//! only once the cluster acknowledged them.
//!
//! An entry's key is (source topic id, source partition, first offset of the
//! batch, index within the batch's entries), so entries deliver in batch
//! order and the oldest undelivered entry of a partition says how far its
//! offset may be committed to the group.
//!
//! Like `store`, this module knows nothing of Kafka or WebAssembly.

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};

use crate::log::TopicInfo;
use crate::record::{BatchEffects, Header, TimeDomain};
pub use crate::store::OutboxKey;
use crate::store::{CHECKPOINTS, OUTBOX, STATE, Store, StoreError, state_prefix};

/// Headers every output delivered to Kafka carries, naming where it came
/// from, so consumers downstream can drop duplicates after a crash.
pub mod origin_headers {
    /// Source topic.
    pub const TOPIC: &str = "linecook.origin.topic";
    /// Source partition (decimal).
    pub const PARTITION: &str = "linecook.origin.partition";
    /// Offset of the first record of the batch that emitted it (decimal).
    pub const OFFSET: &str = "linecook.origin.offset";
    /// Its position among that batch's outputs (decimal, from 0).
    pub const INDEX: &str = "linecook.origin.index";

    /// The four headers of the output at `index` of the batch of
    /// `topic`/`partition` that started at `offset`.
    pub fn of(topic: &str, partition: u32, offset: u64, index: u64) -> [crate::record::Header; 4] {
        [
            (TOPIC.to_owned(), topic.as_bytes().to_vec()),
            (PARTITION.to_owned(), partition.to_string().into_bytes()),
            (OFFSET.to_owned(), offset.to_string().into_bytes()),
            (INDEX.to_owned(), index.to_string().into_bytes()),
        ]
    }

    /// The origin index of output `index` of timer firing `seq` at a batch
    /// boundary (Kafka mode): `(seq + 1) * 2^32 + index`. A firing at offset
    /// N shares the origin offset N with the batch that starts there; the
    /// index keeps the four headers unique, so deduplicating by them never
    /// takes a firing's output for a batch's.
    pub fn firing_index(seq: u32, index: usize) -> u64 {
        ((u64::from(seq) + 1) << 32) + index as u64
    }
}

/// Headers of changelog records: the batch (source offsets `first..end`)
/// whose checkpoint wrote them.
pub mod batch_headers {
    /// First source offset of the batch (decimal).
    pub const FIRST: &str = "linecook.batch.first";
    /// Source offset after the batch (decimal).
    pub const END: &str = "linecook.batch.end";
    /// The ownership epoch of the member that delivered it (decimal; see
    /// `kafka::fence`). Records of older linecook versions have none: 0.
    pub const EPOCH: &str = "linecook.epoch";
    /// On a state write with a time to live: when the value expires (ms
    /// since the Unix epoch, decimal), so a restore keeps the expiry.
    pub const EXPIRES: &str = "linecook.expires";
    /// On a firing record (`changelog_key::MARKER` with a value): the
    /// firing's sequence number among the firings at its offset (decimal).
    pub const FIRING: &str = "linecook.firing";
}

/// Changelog keys start with a kind byte: state keys and batch markers share
/// one compacted topic without colliding.
pub mod changelog_key {
    /// `STATE ++ key`: a state write (a null value deletes).
    pub const STATE: u8 = 0;
    /// The key of batch markers, one per batch that emitted outputs: a new
    /// owner re-forms exactly those batches, so replayed outputs carry the
    /// same origin headers as the ones a crashed owner may have delivered.
    pub const MARKER: &[u8] = &[1];
    /// The key of claims: written by a member when it takes a partition,
    /// before it reads the changelog. Everything a previous owner delivers
    /// after a newer claim is fenced (`kafka::fence`).
    pub const CLAIM: &[u8] = &[2];
    /// `TIMER ++ domain tag ++ key`: a timer set or moved (the value is its
    /// due time, 8 bytes big-endian, ms since the Unix epoch), or removed —
    /// cancelled or fired — (a null value).
    pub const TIMER: u8 = 3;
    /// The partition's watermark (8 bytes big-endian) after a batch moved it.
    pub const WATERMARK: &[u8] = &[4];
}

/// A timer firing at a batch boundary, as its changelog record carries it
/// (Kafka mode): everything it did, so a new owner that finds it past the
/// group's committed offset applies exactly this instead of firing again
/// with its own clock. Its outputs, re-delivered, carry the same origin.
#[derive(Debug, Serialize, Deserialize)]
pub struct Firing {
    /// Its sequence number among the firings at its offset.
    pub seq: u32,
    /// What it did.
    pub effects: BatchEffects,
}

/// One record waiting for delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Destination topic.
    pub topic: String,
    /// Destination partition; `None` lets the producer's partitioner decide.
    pub partition: Option<u32>,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Value; `None` is a tombstone.
    pub value: Option<Vec<u8>>,
    /// Headers in order.
    pub headers: Vec<Header>,
    /// A changelog record: delivered before the outputs of its batch.
    pub changelog: bool,
    /// The record's timestamp (ms since the Unix epoch), when the handler
    /// set one (`emit.send-at`); otherwise the producer stamps it.
    pub timestamp_ms: Option<i64>,
}

/// An outbox entry as linecook wrote it before entries had a timestamp:
/// an upgraded host still delivers what an older one left undelivered.
#[derive(Deserialize)]
struct UntimedEntry {
    topic: String,
    partition: Option<u32>,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<Header>,
    changelog: bool,
}

impl OutboxEntry {
    pub(crate) fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("an outbox entry always encodes")
    }

    fn decode(key: OutboxKey, bytes: &[u8]) -> Result<OutboxEntry, StoreError> {
        // postcard is not self-describing: an older entry ends where the
        // timestamp would start, so it fails as this one and reads as that.
        postcard::from_bytes(bytes)
            .or_else(|e| {
                postcard::from_bytes::<UntimedEntry>(bytes)
                    .map(|old| OutboxEntry {
                        topic: old.topic,
                        partition: old.partition,
                        key: old.key,
                        value: old.value,
                        headers: old.headers,
                        changelog: old.changelog,
                        timestamp_ms: None,
                    })
                    .map_err(|_| e)
            })
            .map_err(|e| StoreError::Corrupt {
                topic_id: key.0,
                partition: key.1,
                offset: key.2,
                message: format!("outbox entry {}: {e}", key.3),
            })
    }
}

/// The entries one batch puts in the outbox, in delivery order: its state
/// writes for `changelog_topic` (with their expiry times, from `expiries`),
/// its timer changes and watermark, a batch marker if it emitted anything
/// — or, for timer firing `firing` at a boundary, the firing's record — then
/// its outputs with origin headers.
pub(crate) fn entries_for_batch(
    topic: &TopicInfo,
    partition: u32,
    (first_offset, next_offset): (u64, u64),
    changelog_topic: &str,
    effects: &BatchEffects,
    expiries: &std::collections::BTreeMap<Vec<u8>, i64>,
    firing: Option<u32>,
) -> Vec<OutboxEntry> {
    // A firing's writes say so: they count only once the group is past it.
    let batch = || {
        let mut headers = vec![
            (
                batch_headers::FIRST.to_owned(),
                first_offset.to_string().into_bytes(),
            ),
            (
                batch_headers::END.to_owned(),
                next_offset.to_string().into_bytes(),
            ),
        ];
        if let Some(seq) = firing {
            headers.push((
                batch_headers::FIRING.to_owned(),
                seq.to_string().into_bytes(),
            ));
        }
        headers
    };
    let changelog = |key: Vec<u8>, value: Option<Vec<u8>>, headers| OutboxEntry {
        topic: changelog_topic.to_owned(),
        partition: Some(partition),
        key: Some(key),
        value,
        headers,
        changelog: true,
        timestamp_ms: None,
    };
    let mut entries = Vec::with_capacity(effects.state.len() + effects.outputs.len() + 1);
    for (key, value) in &effects.state {
        let mut full = Vec::with_capacity(key.len() + 1);
        full.push(changelog_key::STATE);
        full.extend_from_slice(key);
        let mut headers = batch();
        if let Some(at) = expiries.get(key) {
            headers.push((
                batch_headers::EXPIRES.to_owned(),
                at.to_string().into_bytes(),
            ));
        }
        entries.push(changelog(full, value.clone(), headers));
    }
    let timer_key = |domain: TimeDomain, key: &[u8]| {
        let mut full = Vec::with_capacity(key.len() + 2);
        full.extend_from_slice(&[changelog_key::TIMER, domain.tag()]);
        full.extend_from_slice(key);
        full
    };
    for ((domain, key), due) in &effects.timers {
        let value = due.map(|due| due.to_be_bytes().to_vec());
        entries.push(changelog(timer_key(*domain, key), value, batch()));
    }
    for timer in &effects.fired {
        // A fired timer the call set again stays (`timers` wins).
        if !effects
            .timers
            .contains_key(&(timer.domain, timer.key.clone()))
        {
            entries.push(changelog(
                timer_key(timer.domain, &timer.key),
                None,
                batch(),
            ));
        }
    }
    if let Some(watermark) = effects.watermark {
        entries.push(changelog(
            changelog_key::WATERMARK.to_vec(),
            Some(watermark.to_be_bytes().to_vec()),
            batch(),
        ));
    }
    if let Some(seq) = firing {
        let record =
            postcard::to_allocvec(&FiringRef { seq, effects }).expect("a firing always encodes");
        entries.push(changelog(
            changelog_key::MARKER.to_vec(),
            Some(record),
            batch(),
        ));
    } else if !effects.outputs.is_empty() {
        entries.push(changelog(
            changelog_key::MARKER.to_vec(),
            Some(Vec::new()),
            batch(),
        ));
    }
    for (index, output) in effects.outputs.iter().enumerate() {
        let mut headers = output.headers.clone();
        let index = match firing {
            Some(seq) => origin_headers::firing_index(seq, index),
            None => index as u64,
        };
        headers.extend(origin_headers::of(
            &topic.name,
            partition,
            first_offset,
            index,
        ));
        entries.push(OutboxEntry {
            topic: output.topic.clone(),
            partition: None,
            key: output.key.clone(),
            value: Some(output.value.clone()),
            headers,
            changelog: false,
            timestamp_ms: output.timestamp_ms,
        });
    }
    entries
}

/// [`Firing`], borrowed for encoding (the same bytes).
#[derive(Serialize)]
struct FiringRef<'a> {
    seq: u32,
    effects: &'a BatchEffects,
}

impl Store {
    /// Up to `limit` undelivered entries, oldest batch first.
    pub fn outbox_peek(&self, limit: usize) -> Result<Vec<(OutboxKey, OutboxEntry)>, StoreError> {
        self.outbox_peek_where(limit, |_, _| true)
    }

    /// Up to `limit` undelivered entries of the partitions (topic id,
    /// partition) `keep` accepts, oldest batch first.
    pub fn outbox_peek_where(
        &self,
        limit: usize,
        keep: impl Fn(u32, u32) -> bool,
    ) -> Result<Vec<(OutboxKey, OutboxEntry)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(OUTBOX)?;
        let mut out = Vec::new();
        let mut from = (0, 0, 0, 0);
        'partitions: loop {
            let mut rows = table.range(from..)?;
            let Some(first) = rows.next().transpose()? else {
                break;
            };
            let (topic, partition, ..) = first.0.value();
            if !keep(topic, partition) {
                // Skip the whole partition in one seek.
                from = (topic, partition + 1, 0, 0);
                continue;
            }
            for row in std::iter::once(Ok(first)).chain(rows) {
                let (key, value) = row?;
                let key = key.value();
                if (key.0, key.1) != (topic, partition) {
                    from = (key.0, key.1, 0, 0);
                    continue 'partitions;
                }
                if out.len() == limit {
                    break 'partitions;
                }
                out.push((key, OutboxEntry::decode(key, value.value())?));
            }
            break;
        }
        Ok(out)
    }

    /// The partitions (topic id, partition) with undelivered entries.
    pub fn outbox_partitions(&self) -> Result<Vec<(u32, u32)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(OUTBOX)?;
        let mut out = Vec::new();
        let mut from = (0, 0, 0, 0);
        while let Some(row) = table.range(from..)?.next().transpose()? {
            let (topic, partition, ..) = row.0.value();
            out.push((topic, partition));
            from = (topic, partition + 1, 0, 0);
        }
        Ok(out)
    }

    /// Drops the undelivered entries of batches of `topic`/`partition` that
    /// start before `offset`: the group committed past them under another
    /// owner, so delivering them would be stale work.
    pub fn outbox_drop_before(
        &self,
        topic_id: u32,
        partition: u32,
        offset: u64,
    ) -> Result<u64, StoreError> {
        let txn = self.db.begin_write()?;
        let dropped = {
            let mut table = txn.open_table(OUTBOX)?;
            let mut dropped = 0;
            table.retain_in(
                (topic_id, partition, 0, 0)..(topic_id, partition, offset, 0),
                |_, _| {
                    dropped += 1;
                    false
                },
            )?;
            dropped
        };
        txn.commit()?;
        Ok(dropped)
    }

    /// Removes delivered entries.
    pub fn outbox_remove(&self, keys: &[OutboxKey]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(OUTBOX)?;
            for key in keys {
                table.remove(*key)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// How many entries wait for delivery.
    pub fn outbox_len(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(OUTBOX)?.len()?)
    }

    /// How far `topic`/`partition` may be committed to the group: its
    /// checkpoint, held back to the first batch with undelivered entries.
    /// `None` without a checkpoint.
    pub fn deliverable_offset(
        &self,
        topic: &TopicInfo,
        partition: u32,
    ) -> Result<Option<u64>, StoreError> {
        let txn = self.db.begin_read()?;
        let Some(checkpoint) = txn
            .open_table(CHECKPOINTS)?
            .get((topic.id, partition))?
            .map(|v| v.value().0)
        else {
            return Ok(None);
        };
        let outbox = txn.open_table(OUTBOX)?;
        let pending = outbox
            .range((topic.id, partition, 0, 0)..=(topic.id, partition, u64::MAX, u32::MAX))?
            .next()
            .transpose()?
            .map(|(k, _)| k.value().2);
        Ok(Some(pending.map_or(checkpoint, |p| p.min(checkpoint))))
    }

    /// Queues the current values of `keys` of partition `partition` of topic
    /// `topic_id` for its changelog (`changelog` topic and partition), as of
    /// its checkpoint: an older owner's late write of those keys must not be
    /// the one compaction keeps. Returns how many were queued.
    pub fn outbox_repair(
        &self,
        topic_id: u32,
        partition: u32,
        (changelog, changelog_partition): (&str, u32),
        keys: &[Vec<u8>],
    ) -> Result<usize, StoreError> {
        let txn = self.db.begin_write()?;
        let queued = {
            let Some(at) = txn
                .open_table(CHECKPOINTS)?
                .get((topic_id, partition))?
                .map(|v| v.value().0)
            else {
                return Ok(0);
            };
            let state = txn.open_table(STATE)?;
            let mut outbox = txn.open_table(OUTBOX)?;
            // Repairs sort after the entries of the batch that starts at the
            // checkpoint (indexes from 0) and after earlier repairs there.
            let mut index = outbox
                .range(
                    (topic_id, partition, at, REPAIR_INDEX)..=(topic_id, partition, at, u32::MAX),
                )?
                .next()
                .transpose()?
                .map_or(u32::MAX, |(k, _)| k.value().3 - 1);
            let prefix = state_prefix(topic_id, partition);
            let bounds = || {
                vec![
                    (batch_headers::FIRST.to_owned(), at.to_string().into_bytes()),
                    (batch_headers::END.to_owned(), at.to_string().into_bytes()),
                ]
            };
            let mut queued = 0;
            for key in keys {
                let mut full = prefix.to_vec();
                full.extend_from_slice(key);
                let value = state.get(full.as_slice())?.map(|v| v.value().to_vec());
                let mut changelog_key = vec![changelog_key::STATE];
                changelog_key.extend_from_slice(key);
                let entry = OutboxEntry {
                    topic: changelog.to_owned(),
                    partition: Some(changelog_partition),
                    key: Some(changelog_key),
                    value,
                    headers: bounds(),
                    changelog: true,
                    timestamp_ms: None,
                };
                outbox.insert((topic_id, partition, at, index), entry.encode().as_slice())?;
                index = index.saturating_sub(1).max(REPAIR_INDEX);
                queued += 1;
            }
            queued
        };
        txn.commit()?;
        self.notify_outboxed();
        Ok(queued)
    }
}

/// Outbox indexes from here on hold repairs (`Store::outbox_repair`), far
/// above any batch's entry count.
pub(crate) const REPAIR_INDEX: u32 = 1 << 31;

#[cfg(test)]
mod tests {

    use super::*;
    use crate::checkpoint::{BatchCommit, RestoredPartition, StateReader as _};
    use crate::record::OutputRecord;

    fn effects(writes: &[(&str, Option<&str>)], outputs: &[&str]) -> BatchEffects {
        BatchEffects {
            state: writes
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec())))
                .collect(),
            outputs: outputs
                .iter()
                .map(|v| OutputRecord {
                    topic: "out".into(),
                    key: None,
                    value: v.as_bytes().to_vec(),
                    headers: vec![("h".into(), b"1".to_vec())],
                    timestamp_ms: None,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn commit(store: &Store, topic: &TopicInfo, first: u64, next: u64, fx: &BatchEffects) {
        store
            .commit_batch(BatchCommit {
                topic,
                partition: 2,
                first_offset: first,
                next_offset: next,
                version: "v1",
                effects: fx,
                changelog: Some("cl"),
                firing_seq: None,
            })
            .unwrap();
    }

    #[test]
    fn a_write_with_a_time_to_live_carries_its_expiry_to_the_changelog() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let topic = store.create_topic("in", 4).unwrap();
        let mut fx = effects(&[("a", Some("1")), ("b", Some("2"))], &[]);
        fx.ttl.insert(b"a".to_vec(), 60_000);
        let before = crate::record::now_ms();
        commit(&store, &topic, 0, 10, &fx);
        let after = crate::record::now_ms();
        let expires = |entry: &OutboxEntry| {
            entry
                .headers
                .iter()
                .find(|(k, _)| k == batch_headers::EXPIRES)
                .map(|(_, v)| {
                    String::from_utf8(v.clone())
                        .unwrap()
                        .parse::<i64>()
                        .unwrap()
                })
        };
        let entries = store.outbox_peek(100).unwrap();
        let a = expires(&entries[0].1).expect("a was written with a time to live");
        assert!((before + 60_000..=after + 60_000).contains(&a), "{a}");
        assert_eq!(expires(&entries[1].1), None, "b never expires");
        // The local expiry is the same instant: a restore elsewhere and this
        // store agree on when `a` goes.
        let local = store.partition_state_at(&topic, 2, a - 1).unwrap();
        assert_eq!(local.get(b"a").unwrap(), Some(b"1".to_vec()));
        let local = store.partition_state_at(&topic, 2, a).unwrap();
        assert_eq!(local.get(b"a").unwrap(), None);
    }

    #[test]
    fn a_batch_outboxes_changelog_then_marker_then_outputs_with_origin() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let topic = store.create_topic("in", 4).unwrap();
        commit(
            &store,
            &topic,
            0,
            10,
            &effects(&[("a", Some("1")), ("b", None)], &["x", "y"]),
        );
        let entries = store.outbox_peek(100).unwrap();
        let kinds: Vec<(bool, Option<Vec<u8>>)> = entries
            .iter()
            .map(|(_, e)| (e.changelog, e.key.clone()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (true, Some(b"\0a".to_vec())),
                (true, Some(b"\0b".to_vec())),
                (true, Some(changelog_key::MARKER.to_vec())),
                (false, None),
                (false, None),
            ]
        );
        assert_eq!(entries[1].1.value, None, "a delete is a tombstone");
        assert!(
            entries[..3]
                .iter()
                .all(|(_, e)| e.partition == Some(2) && e.topic == "cl")
        );
        let y = &entries[4].1;
        assert_eq!(y.value.as_deref(), Some(&b"y"[..]));
        let header = |name: &str| {
            y.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
        };
        assert_eq!(
            header("h").as_deref(),
            Some("1"),
            "the handler's own headers stay"
        );
        assert_eq!(header(origin_headers::TOPIC).as_deref(), Some("in"));
        assert_eq!(header(origin_headers::PARTITION).as_deref(), Some("2"));
        assert_eq!(header(origin_headers::OFFSET).as_deref(), Some("0"));
        assert_eq!(header(origin_headers::INDEX).as_deref(), Some("1"));
        // Nothing went to the embedded log.
        assert!(matches!(
            store.topic("out"),
            Err(StoreError::UnknownTopic(_))
        ));
    }

    #[test]
    fn the_group_offset_waits_for_the_oldest_undelivered_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let topic = store.create_topic("in", 4).unwrap();
        assert_eq!(store.deliverable_offset(&topic, 2).unwrap(), None);
        commit(&store, &topic, 0, 10, &effects(&[], &["x"]));
        commit(&store, &topic, 10, 20, &effects(&[], &[]));
        commit(&store, &topic, 20, 30, &effects(&[], &["z"]));
        assert_eq!(store.deliverable_offset(&topic, 2).unwrap(), Some(0));
        let keys: Vec<OutboxKey> = store
            .outbox_peek(100)
            .unwrap()
            .iter()
            .map(|(k, _)| *k)
            .collect();
        store.outbox_remove(&keys[..2]).unwrap();
        assert_eq!(store.deliverable_offset(&topic, 2).unwrap(), Some(20));
        store.outbox_remove(&keys[2..]).unwrap();
        assert_eq!(store.deliverable_offset(&topic, 2).unwrap(), Some(30));
        assert_eq!(store.outbox_len().unwrap(), 0);
    }

    #[test]
    fn a_restore_replaces_only_its_partitions_state_and_sets_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let topic = store.create_topic("in", 4).unwrap();
        commit(
            &store,
            &topic,
            0,
            10,
            &effects(&[("stale", Some("1"))], &[]),
        );
        let other = store.create_topic("other", 4).unwrap();
        store
            .commit_batch(BatchCommit {
                topic: &other,
                partition: 2,
                first_offset: 0,
                next_offset: 1,
                version: "v1",
                effects: &effects(&[("keep", Some("1"))], &[]),
                changelog: None,
                firing_seq: None,
            })
            .unwrap();
        let restored = RestoredPartition {
            state: [(b"k".to_vec(), b"7".to_vec())].into(),
            ..Default::default()
        };
        store.restore_partition(&topic, 2, 42, &restored).unwrap();
        assert_eq!(
            store.state_entries(&topic, 2).unwrap(),
            vec![(b"k".to_vec(), b"7".to_vec())]
        );
        assert_eq!(store.state_entries(&other, 2).unwrap().len(), 1);
        assert_eq!(
            store.checkpoint(&topic, 2).unwrap().unwrap().next_offset,
            42
        );

        // Restored with expiries: each value goes when its writer said.
        let restored = RestoredPartition {
            state: [
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"2".to_vec()),
            ]
            .into(),
            expiries: [(b"a".to_vec(), 5_000)].into(),
            ..Default::default()
        };
        store.restore_partition(&topic, 2, 50, &restored).unwrap();
        let at = |now| {
            let state = store.partition_state_at(&topic, 2, now).unwrap();
            (state.get(b"a").unwrap(), state.get(b"b").unwrap())
        };
        assert_eq!(at(4_999), (Some(b"1".to_vec()), Some(b"2".to_vec())));
        assert_eq!(at(5_000), (None, Some(b"2".to_vec())));
        // Swept like any expired entry.
        store.sweep_expired(&topic, 2, 5_000, 100).unwrap();
        assert_eq!(store.state_entries(&topic, 2).unwrap().len(), 1);
    }

    fn header(entry: &OutboxEntry, name: &str) -> Option<String> {
        entry
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
    }

    #[test]
    fn timer_firings_at_a_boundary_outbox_between_the_batches_around_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let topic = store.create_topic("in", 4).unwrap();
        let mut batch = effects(&[("k", Some("1"))], &["b1"]);
        batch
            .timers
            .insert((TimeDomain::Processing, b"s".to_vec()), Some(100));
        batch.watermark = Some(5);
        commit(&store, &topic, 0, 10, &batch);
        let timer = crate::record::Timer {
            key: b"s".to_vec(),
            domain: TimeDomain::Processing,
            due_ms: 100,
        };
        let mut fired = effects(&[("k", None)], &["closed"]);
        fired.fired = vec![timer];
        commit(&store, &topic, 10, 10, &fired);
        commit(&store, &topic, 10, 10, &effects(&[], &["again"]));
        commit(&store, &topic, 10, 20, &effects(&[], &["b2"]));

        let entries = store.outbox_peek(100).unwrap();
        let keys: Vec<(u64, u32)> = entries.iter().map(|(k, _)| (k.2, k.3)).collect();
        let summary: Vec<(u64, Vec<u8>, Option<String>)> = entries
            .iter()
            .map(|(k, e)| {
                (
                    k.2,
                    e.key.clone().unwrap_or_else(|| e.value.clone().unwrap()),
                    header(e, batch_headers::FIRING),
                )
            })
            .collect();
        let (timer_key, watermark) = (
            [&[changelog_key::TIMER, 0][..], b"s"].concat(),
            changelog_key::WATERMARK.to_vec(),
        );
        let marker = changelog_key::MARKER.to_vec();
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(
            summary,
            vec![
                (0, b"\0k".to_vec(), None),
                (0, timer_key.clone(), None),
                (0, watermark, None),
                (0, marker.clone(), None),
                (0, b"b1".to_vec(), None),
                // The first firing at 10: its writes (the fired timer's
                // removal too), its record, its output.
                (10, b"\0k".to_vec(), some("0")),
                (10, timer_key, some("0")),
                (10, marker.clone(), some("0")),
                (10, b"closed".to_vec(), None),
                (10, marker.clone(), some("1")),
                (10, b"again".to_vec(), None),
                // The batch from 10 after them, at the indexes after theirs.
                (10, marker, None),
                (10, b"b2".to_vec(), None),
            ]
        );
        assert_eq!(
            keys[5..].iter().map(|k| k.1).collect::<Vec<_>>(),
            (0..8).collect::<Vec<_>>()
        );
        assert_eq!(entries[6].1.value, None, "the fired timer is removed");

        // Outputs of firings have origin indexes of their own.
        let origin = |i: usize| header(&entries[i].1, origin_headers::INDEX).unwrap();
        assert_eq!(origin(8), (1u64 << 32).to_string());
        assert_eq!(origin(10), (2u64 << 32).to_string());
        assert_eq!(origin(12), "0");
        assert_eq!(
            header(&entries[8].1, origin_headers::OFFSET).as_deref(),
            Some("10")
        );

        // The record carries the firing whole.
        let record: Firing = postcard::from_bytes(entries[7].1.value.as_deref().unwrap()).unwrap();
        assert_eq!(record.seq, 0);
        assert_eq!(record.effects, fired);

        // Undelivered firings hold the group's offset at their boundary.
        let delivered: Vec<OutboxKey> = entries[..5].iter().map(|(k, _)| *k).collect();
        store.outbox_remove(&delivered).unwrap();
        assert_eq!(store.deliverable_offset(&topic, 2).unwrap(), Some(10));
        assert_eq!(store.next_firing(&topic, 2).unwrap(), Some((10, 2)));
    }

    #[test]
    fn a_replayed_firing_keeps_its_number_and_the_next_one_follows_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let topic = store.create_topic("in", 4).unwrap();
        commit(&store, &topic, 0, 10, &effects(&[], &[]));
        store
            .commit_batch(BatchCommit {
                topic: &topic,
                partition: 2,
                first_offset: 10,
                next_offset: 10,
                version: "v1",
                effects: &effects(&[], &["x"]),
                changelog: Some("cl"),
                firing_seq: Some(4),
            })
            .unwrap();
        commit(&store, &topic, 10, 10, &effects(&[], &["y"]));
        let entries = store.outbox_peek(100).unwrap();
        let seqs: Vec<Option<String>> = entries
            .iter()
            .filter(|(_, e)| e.changelog)
            .map(|(_, e)| header(e, batch_headers::FIRING))
            .collect();
        assert_eq!(seqs, [Some("4".to_owned()), Some("5".to_owned())]);
        assert_eq!(store.next_firing(&topic, 2).unwrap(), Some((10, 6)));
    }

    #[test]
    fn outputs_keep_their_timestamps_and_older_entries_still_decode() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let topic = store.create_topic("in", 4).unwrap();
        let mut fx = effects(&[], &["x", "y"]);
        fx.outputs[0].timestamp_ms = Some(7_000);
        commit(&store, &topic, 0, 10, &fx);
        let entries = store.outbox_peek(100).unwrap();
        let stamps: Vec<Option<i64>> = entries.iter().map(|(_, e)| e.timestamp_ms).collect();
        assert_eq!(stamps, [None, Some(7_000), None], "marker, x, y");

        // An entry an older linecook left undelivered, without the field.
        #[derive(Serialize)]
        struct Untimed<'a> {
            topic: &'a str,
            partition: Option<u32>,
            key: Option<Vec<u8>>,
            value: Option<Vec<u8>>,
            headers: Vec<Header>,
            changelog: bool,
        }
        let old = postcard::to_allocvec(&Untimed {
            topic: "out",
            partition: None,
            key: Some(b"k".to_vec()),
            value: Some(b"v".to_vec()),
            headers: vec![("h".into(), b"1".to_vec())],
            changelog: false,
        })
        .unwrap();
        let txn = store.db.begin_write().unwrap();
        txn.open_table(OUTBOX)
            .unwrap()
            .insert((topic.id, 3, 0, 0), old.as_slice())
            .unwrap();
        txn.commit().unwrap();
        let entries = store.outbox_peek(100).unwrap();
        let (_, old) = entries.iter().find(|(k, _)| k.1 == 3).unwrap();
        assert_eq!(old.value.as_deref(), Some(&b"v"[..]));
        assert_eq!(old.headers, [("h".to_owned(), b"1".to_vec())]);
        assert_eq!(old.timestamp_ms, None);
    }
}
