//! Checkpoints: one redb write transaction per batch that makes the batch's
//! state writes, emitted records, the partition's next offset and the version
//! that handled it durable together — or, if anything fails, none of them.
//!
//! **Architecture invariant:** a checkpoint only moves a partition forward
//! from exactly where its previous checkpoint ended (`CheckpointConflict`
//! otherwise), so a batch can never be committed twice or skipped. Every
//! checkpoint write is in this file. Two exceptions move a partition
//! elsewhere, setting offset and state together: a restore from the
//! changelog (`restore_partition`) and an operator's reset
//! (`reset_partition`).

use std::collections::BTreeMap;
use std::sync::Arc;

use redb::{ReadOnlyTable, ReadableDatabase, ReadableTable, WriteTransaction};

use crate::log::{LogAppender, TopicInfo};
use crate::partitioner::partition_for_key;
use crate::record::{BatchEffects, TimeDomain, now_ms};
use crate::store::{
    CHECKPOINTS, EXPIRY, EXPIRY_ORDER, FIRINGS, OUTBOX, STATE, Store, StoreError, TIMER_COUNTS,
    TIMER_KEYS, TIMERS, VERSION_HISTORY, WATERMARKS, state_prefix,
};

/// The version a restored checkpoint names: state came from the changelog,
/// not from a batch handled here.
pub const RESTORED_VERSION: &str = "restored";

/// Where a reset moves a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetTo {
    /// This offset.
    Offset(u64),
    /// The first record with a timestamp at or after this one (ms), or the
    /// end.
    Timestamp(i64),
    /// The first record.
    Earliest,
    /// The end: skip every record not yet handled.
    Latest,
}

/// The version a reset checkpoint names when the partition had none.
pub const RESET_VERSION: &str = "reset";

/// What a reset does with the partition's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetState {
    /// Keep state, timers and watermark as they are.
    Keep,
    /// Start from nothing: no state, no timers, no watermark.
    Clear,
}

/// Where a partition's processing stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Offset of the next record to handle.
    pub next_offset: u64,
    /// Plugin version (digest) that handled the last committed batch.
    pub version: String,
}

/// A batch ready to commit.
#[derive(Debug)]
pub struct BatchCommit<'a> {
    /// Source topic.
    pub topic: &'a TopicInfo,
    /// Source partition.
    pub partition: u32,
    /// Offset of the batch's first record; must equal the committed offset.
    pub first_offset: u64,
    /// Offset after the batch's last record.
    pub next_offset: u64,
    /// Version (digest) of the plugin that handled the batch.
    pub version: &'a str,
    /// What the batch did.
    pub effects: &'a BatchEffects,
    /// Where outputs go: `None` appends them to the embedded log; `Some` puts
    /// them, and the state writes for the named changelog topic, in the outbox.
    pub changelog: Option<&'a str>,
    /// With a changelog, a commit at a batch boundary (`first_offset ==
    /// next_offset`) is a timer firing and gets the next sequence number
    /// there; `Some` gives it this one instead: another owner's recorded
    /// firing applied again.
    pub firing_seq: Option<u32>,
}

/// State entries as (key, value), in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Committed state of one partition, as a handler reads it during a batch.
pub trait StateReader: Send {
    /// The committed value of `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Up to `limit` committed entries with `prefix`, after `start_after`, in
    /// key order.
    fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError>;

    /// When the committed timer of `key` in `domain` is due, if it is set.
    fn timer(&self, _domain: TimeDomain, _key: &[u8]) -> Result<Option<i64>, StoreError> {
        Ok(None)
    }
}

/// The state of a partition that has none: what `plugins check` gives
/// `init`.
#[derive(Debug, Default)]
pub struct NoState;

impl StateReader for NoState {
    fn get(&self, _: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(None)
    }

    fn scan(&self, _: &[u8], _: Option<&[u8]>, _: usize) -> Result<Entries, StoreError> {
        Ok(Vec::new())
    }
}

/// A snapshot of one partition's committed state, as of `now`: entries
/// whose time to live ran out are gone.
pub struct PartitionState {
    table: ReadOnlyTable<&'static [u8], &'static [u8]>,
    prefix: [u8; 8],
    topic_id: u32,
    partition: u32,
    /// Only when the partition has entries that expire: most have none, and
    /// their reads then cost no second lookup.
    expiry: Option<ReadOnlyTable<&'static [u8], i64>>,
    timer_keys: ReadOnlyTable<(u32, u32, u8, &'static [u8]), i64>,
    now: i64,
}

impl PartitionState {
    fn expired(&self, full_key: &[u8]) -> Result<bool, StoreError> {
        Ok(match &self.expiry {
            Some(expiry) => expiry
                .get(full_key)?
                .is_some_and(|at| at.value() <= self.now),
            None => false,
        })
    }
}

fn prefixed(prefix: &[u8], key: &[u8]) -> Vec<u8> {
    let mut full = Vec::with_capacity(prefix.len() + key.len());
    full.extend_from_slice(prefix);
    full.extend_from_slice(key);
    full
}

impl StateReader for PartitionState {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let full = prefixed(&self.prefix, key);
        let Some(value) = self.table.get(full.as_slice())? else {
            return Ok(None);
        };
        if self.expired(&full)? {
            return Ok(None);
        }
        Ok(Some(value.value().to_vec()))
    }

    fn timer(&self, domain: TimeDomain, key: &[u8]) -> Result<Option<i64>, StoreError> {
        Ok(self
            .timer_keys
            .get((self.topic_id, self.partition, domain.tag(), key))?
            .map(|due| due.value()))
    }

    fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        let from = match start_after {
            Some(after) if after > prefix => after,
            _ => prefix,
        };
        let lower = prefixed(&self.prefix, from);
        let mut out = Vec::new();
        for entry in self.table.range(lower.as_slice()..)? {
            let (full, value) = entry?;
            // Keys past this partition's prefix, or past `prefix`, end the scan.
            let Some(key) = full.value().strip_prefix(self.prefix.as_slice()) else {
                break;
            };
            if !key.starts_with(prefix) {
                break;
            }
            if start_after == Some(key) || self.expired(full.value())? {
                continue;
            }
            out.push((key.to_vec(), value.value().to_vec()));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }
}

/// When the keys `effects` sets with a time to live expire, if committed
/// `now`: `ttl` after it.
fn expiry_times(effects: &BatchEffects, now: i64) -> BTreeMap<Vec<u8>, i64> {
    // Most batches set nothing with a TTL: skip walking their state writes.
    if effects.ttl.is_empty() {
        return BTreeMap::new();
    }
    effects
        .state
        .iter()
        .filter(|(_, value)| value.is_some())
        .filter_map(|(key, _)| {
            let ttl = effects.ttl.get(key)?;
            Some((
                key.clone(),
                now.saturating_add(i64::try_from(*ttl).unwrap_or(i64::MAX)),
            ))
        })
        .collect()
}

/// The expiry rows of the keys `effects` writes: a key in `expiries` expires
/// then; any other write clears its expiry.
fn write_expiries(
    txn: &redb::WriteTransaction,
    topic_id: u32,
    partition: u32,
    effects: &BatchEffects,
    expiries: &BTreeMap<Vec<u8>, i64>,
) -> Result<(), StoreError> {
    let mut order = txn.open_table(EXPIRY_ORDER)?;
    let had_any = order
        .range((topic_id, partition, i64::MIN, &[][..])..)?
        .next()
        .transpose()?
        .is_some_and(|(k, _)| (k.value().0, k.value().1) == (topic_id, partition));
    // The common case: nothing of the partition expires, nor will.
    if !had_any && expiries.is_empty() {
        return Ok(());
    }
    let prefix = state_prefix(topic_id, partition);
    let mut expiry = txn.open_table(EXPIRY)?;
    for (key, value) in &effects.state {
        let full = prefixed(&prefix, key);
        if had_any && let Some(old) = expiry.remove(full.as_slice())? {
            order.remove((topic_id, partition, old.value(), key.as_slice()))?;
        }
        if let (Some(_), Some(&at)) = (value, expiries.get(key)) {
            expiry.insert(full.as_slice(), at)?;
            order.insert((topic_id, partition, at, key.as_slice()), ())?;
        }
    }
    Ok(())
}

/// Removes every state entry, expiry, timer and the watermark of a
/// partition.
fn clear_partition(
    txn: &redb::WriteTransaction,
    topic_id: u32,
    partition: u32,
) -> Result<(), StoreError> {
    let (from, to) = (
        state_prefix(topic_id, partition),
        state_prefix(topic_id, partition + 1),
    );
    txn.open_table(STATE)?
        .retain_in::<&[u8], _>(from.as_slice()..to.as_slice(), |_, _| false)?;
    txn.open_table(EXPIRY)?
        .retain_in::<&[u8], _>(from.as_slice()..to.as_slice(), |_, _| false)?;
    txn.open_table(EXPIRY_ORDER)?.retain_in(
        (topic_id, partition, i64::MIN, &[][..])..(topic_id, partition + 1, i64::MIN, &[][..]),
        |_, _| false,
    )?;
    txn.open_table(TIMERS)?.retain_in(
        (topic_id, partition, 0u8, i64::MIN, &[][..])
            ..(topic_id, partition + 1, 0u8, i64::MIN, &[][..]),
        |_, _| false,
    )?;
    txn.open_table(TIMER_KEYS)?.retain_in(
        (topic_id, partition, 0u8, &[][..])..(topic_id, partition + 1, 0u8, &[][..]),
        |_, _| false,
    )?;
    txn.open_table(TIMER_COUNTS)?
        .remove((topic_id, partition))?;
    txn.open_table(WATERMARKS)?.remove((topic_id, partition))?;
    Ok(())
}

/// Removes the timers `effects` fired, then applies its timer changes: a
/// timer the call fired and set again stays, at its new time.
fn write_timers(
    txn: &redb::WriteTransaction,
    topic_id: u32,
    partition: u32,
    effects: &BatchEffects,
) -> Result<(), StoreError> {
    if effects.fired.is_empty() && effects.timers.is_empty() {
        return Ok(());
    }
    let mut timers = txn.open_table(TIMERS)?;
    let mut keys = txn.open_table(TIMER_KEYS)?;
    let mut pending: i64 = 0;
    for fired in &effects.fired {
        let tag = fired.domain.tag();
        timers.remove((topic_id, partition, tag, fired.due_ms, fired.key.as_slice()))?;
        let id = (topic_id, partition, tag, fired.key.as_slice());
        if keys.get(id)?.map(|d| d.value()) == Some(fired.due_ms) {
            keys.remove(id)?;
            pending -= 1;
        }
    }
    for ((domain, key), due) in &effects.timers {
        let tag = domain.tag();
        if let Some(old) = keys.remove((topic_id, partition, tag, key.as_slice()))? {
            let old = old.value();
            timers.remove((topic_id, partition, tag, old, key.as_slice()))?;
            pending -= 1;
        }
        if let Some(due) = due {
            keys.insert((topic_id, partition, tag, key.as_slice()), *due)?;
            timers.insert((topic_id, partition, tag, *due, key.as_slice()), ())?;
            pending += 1;
        }
    }
    if pending != 0 {
        let mut counts = txn.open_table(TIMER_COUNTS)?;
        let count = counts.get((topic_id, partition))?.map_or(0, |c| c.value());
        let count = count.saturating_add_signed(pending);
        counts.insert((topic_id, partition), count)?;
    }
    Ok(())
}

/// The sequence number of a timer firing at `offset` of `partition`
/// (topic id, partition): the next one there, or `replayed`, a recorded
/// firing's own. Moves the partition's counter past it.
fn next_firing_seq(
    txn: &redb::WriteTransaction,
    partition: (u32, u32),
    offset: u64,
    replayed: Option<u32>,
) -> Result<u32, StoreError> {
    let mut table = txn.open_table(FIRINGS)?;
    let next = match table.get(partition)?.map(|v| v.value()) {
        Some((at, next)) if at == offset => next,
        _ => 0,
    };
    let seq = replayed.unwrap_or(next);
    table.insert(partition, (offset, next.max(seq + 1)))?;
    Ok(seq)
}

/// A batch's checkpoint that owns what it writes, for
/// [`Store::commit_grouped`].
#[derive(Debug)]
pub struct OwnedCommit {
    /// Source topic.
    pub topic: TopicInfo,
    /// Source partition.
    pub partition: u32,
    /// Offset of the batch's first record; must equal the committed offset.
    pub first_offset: u64,
    /// Offset after the batch's last record.
    pub next_offset: u64,
    /// Version (digest) of the plugin that handled the batch.
    pub version: String,
    /// What the batch did.
    pub effects: BatchEffects,
    /// See [`BatchCommit::changelog`].
    pub changelog: Option<String>,
    /// See [`BatchCommit::firing_seq`].
    pub firing_seq: Option<u32>,
}

impl BatchCommit<'_> {
    /// Whether committing this batch adds outbox entries: whether the
    /// outbox's deliverer must be woken.
    fn outboxes(&self) -> bool {
        self.changelog.is_some() && !self.effects.is_empty()
    }
}

impl OwnedCommit {
    fn borrowed(&self) -> BatchCommit<'_> {
        BatchCommit {
            topic: &self.topic,
            partition: self.partition,
            first_offset: self.first_offset,
            next_offset: self.next_offset,
            version: &self.version,
            effects: &self.effects,
            changelog: self.changelog.as_deref(),
            firing_seq: self.firing_seq,
        }
    }
}

/// Batches waiting for a group commit.
#[derive(Debug, Default)]
pub(crate) struct GroupCommit {
    queue: std::sync::Mutex<GroupQueue>,
    /// Wakes the committer thread, when one runs.
    arrived: std::sync::Condvar,
}

/// What [`Store::commit_grouped`] did with one batch.
#[derive(Debug)]
pub struct Grouped {
    /// Whether the batch committed.
    pub result: Result<(), StoreError>,
    /// The batch's effects, handed back.
    pub effects: BatchEffects,
    /// `Some(n)` when this caller wrote the transaction, of `n` batches.
    pub wrote: Option<usize>,
}

/// A written batch's result and its effects, handed back.
type Answer = (Result<(), StoreError>, BatchEffects);

#[derive(Debug, Default)]
struct GroupQueue {
    /// Batches not yet taken by a leader, with their callers' slots.
    waiting: Vec<(Arc<Slot>, OwnedCommit)>,
    /// Whether some caller is writing a group, or has been asked to.
    leading: bool,
    /// A committer thread writes every group: callers only wait.
    committer: bool,
    /// Asks the committer thread to stop once the queue is empty.
    stopping: bool,
}

/// Where one caller of `commit_grouped` waits: for its answer, or for the
/// lead. A slot per caller, so that finishing a group wakes its callers
/// and the next leader, not every partition's worker.
#[derive(Debug, Default)]
struct Slot {
    state: std::sync::Mutex<SlotState>,
    /// Wakes the caller (it keeps a permit when set before the caller
    /// waits, so no wake-up is lost).
    notify: tokio::sync::Notify,
}

#[derive(Debug, Default)]
enum SlotState {
    #[default]
    Waiting,
    /// Write the next group.
    Lead,
    /// The batch's answer, and the size of its group for the group's first
    /// batch when a committer thread wrote it.
    Done(Box<Answer>, Option<usize>),
}

impl Slot {
    fn set(&self, state: SlotState) {
        *self.state.lock().expect("group commit slot") = state;
        self.notify.notify_one();
    }
}

/// Runs `future` on the calling thread, parked between polls: how a thread
/// (rather than a task) waits for its group commit.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        // A spurious unpark only costs another poll.
        std::thread::park();
    }
}

/// Held by the caller writing a group, so that a panic there still answers
/// every caller of the group and passes the lead on.
struct Leading<'a> {
    store: &'a Store,
    slots: Vec<Arc<Slot>>,
}

impl Leading<'_> {
    /// Every caller of the group was answered.
    fn done(mut self) {
        self.slots.clear();
    }
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        if self.slots.is_empty() {
            return;
        }
        for slot in self.slots.drain(..) {
            let failed = StoreError::GroupFailed("the group commit panicked".into());
            slot.set(SlotState::Done(
                Box::new((Err(failed), BatchEffects::default())),
                None,
            ));
        }
        self.store.pass_lead();
    }
}

/// Writes one batch's checkpoint into `txn`. Every check that can refuse
/// the batch alone — a checkpoint conflict, an output topic that does not
/// exist — runs before its first write, so a refused batch leaves `txn` as
/// it was and the other batches of a group go on.
///
/// Outputs go through `log`, opened on first need: a group's batches share
/// it, so they fill blocks together rather than each starting a row per
/// destination partition, and the caller finishes it — learning which
/// partitions to wake — before committing.
fn write_batch<'t>(
    txn: &'t WriteTransaction,
    batch: &BatchCommit<'_>,
    now: i64,
    log: &mut Option<LogAppender<'t>>,
) -> Result<(), StoreError> {
    let BatchCommit {
        topic,
        partition,
        first_offset,
        next_offset,
        version,
        effects,
        changelog,
        firing_seq,
    } = *batch;
    let previous = txn
        .open_table(CHECKPOINTS)?
        .get((topic.id, partition))?
        .map(|v| (v.value().0, v.value().1.to_owned()));
    let committed = previous.as_ref().map_or(0, |p| p.0);
    if committed != first_offset {
        return Err(StoreError::CheckpointConflict {
            topic: topic.name.clone(),
            partition,
            batch_start: first_offset,
            committed,
        });
    }
    let log = if changelog.is_none() && !effects.outputs.is_empty() {
        let appender = match log {
            Some(appender) => appender,
            None => log.insert(LogAppender::new(txn)?),
        };
        for output in &effects.outputs {
            appender.topic_ref(&output.topic)?;
        }
        Some(appender)
    } else {
        None
    };

    let mut checkpoints = txn.open_table(CHECKPOINTS)?;
    if previous.as_ref().map(|p| p.1.as_str()) != Some(version) {
        txn.open_table(VERSION_HISTORY)?
            .insert((topic.id, partition, first_offset), version)?;
    }
    checkpoints.insert((topic.id, partition), (next_offset, version))?;
    drop(checkpoints);

    let prefix = state_prefix(topic.id, partition);
    let mut state = txn.open_table(STATE)?;
    for (key, value) in &effects.state {
        let full = prefixed(&prefix, key);
        match value {
            Some(value) => state.insert(full.as_slice(), value.as_slice())?,
            None => state.remove(full.as_slice())?,
        };
    }
    drop(state);
    let expiries = expiry_times(effects, now_ms());
    write_expiries(txn, topic.id, partition, effects, &expiries)?;
    write_timers(txn, topic.id, partition, effects)?;
    if let Some(watermark) = effects.watermark {
        let mut table = txn.open_table(WATERMARKS)?;
        let stored = table.get((topic.id, partition))?.map(|w| w.value());
        if stored.is_none_or(|w| watermark > w) {
            table.insert((topic.id, partition), watermark)?;
        }
    }

    if let Some(changelog_topic) = changelog {
        let firing = if first_offset == next_offset {
            Some(next_firing_seq(
                txn,
                (topic.id, partition),
                first_offset,
                firing_seq,
            )?)
        } else {
            None
        };
        let entries = crate::outbox::entries_for_batch(
            topic,
            partition,
            (first_offset, next_offset),
            changelog_topic,
            effects,
            &expiries,
            firing,
        );
        let mut table = txn.open_table(OUTBOX)?;
        // After the undelivered entries of earlier commits at this offset:
        // timer firings at the boundary the batch starts at.
        let base = table
            .range(
                (topic.id, partition, first_offset, 0)
                    ..(
                        topic.id,
                        partition,
                        first_offset,
                        crate::outbox::REPAIR_INDEX,
                    ),
            )?
            .next_back()
            .transpose()?
            .map_or(0, |(k, _)| k.value().3 + 1);
        for (index, entry) in entries.iter().enumerate() {
            table.insert(
                (topic.id, partition, first_offset, base + index as u32),
                entry.encode().as_slice(),
            )?;
        }
    } else if let Some(log) = log {
        // Keyless outputs of one batch stick to one partition, chosen from
        // the batch's position so a replay after a crash puts them exactly
        // where the first attempt would have.
        let sticky_seed = format!("{}/{partition}/{first_offset}", topic.id);
        for output in &effects.outputs {
            let dest = log.topic_ref(&output.topic)?;
            let (dest_id, dest_partitions) = (dest.id, dest.partitions);
            let key = output.key.as_deref().unwrap_or(sticky_seed.as_bytes());
            let dest_partition = partition_for_key(key, dest_partitions);
            log.append(
                dest_id,
                dest_partition,
                output.timestamp_ms.unwrap_or(now),
                output.key.as_deref(),
                &output.value,
                &output.headers,
            )?;
        }
    }
    Ok(())
}

/// [`Store::checkpoint`] of (topic id, partition) in a table already open,
/// so a caller reading every partition (status) does it in one transaction.
pub(crate) fn checkpoint_in(
    table: &impl ReadableTable<(u32, u32), (u64, &'static str)>,
    key: (u32, u32),
) -> Result<Option<Checkpoint>, StoreError> {
    Ok(table.get(key)?.map(|v| {
        let (next_offset, version) = v.value();
        Checkpoint {
            next_offset,
            version: version.to_owned(),
        }
    }))
}

impl Store {
    /// The committed checkpoint of `topic`/`partition`, if it has one.
    pub fn checkpoint(
        &self,
        topic: &TopicInfo,
        partition: u32,
    ) -> Result<Option<Checkpoint>, StoreError> {
        let txn = self.db.begin_read()?;
        checkpoint_in(&txn.open_table(CHECKPOINTS)?, (topic.id, partition))
    }

    /// A snapshot of the committed state of `topic`/`partition`, now.
    pub fn partition_state(
        &self,
        topic: &TopicInfo,
        partition: u32,
    ) -> Result<PartitionState, StoreError> {
        self.partition_state_at(topic, partition, now_ms())
    }

    /// A snapshot of the committed state of `topic`/`partition` as of `now`
    /// (ms since the Unix epoch), the time entries expire by.
    pub fn partition_state_at(
        &self,
        topic: &TopicInfo,
        partition: u32,
        now: i64,
    ) -> Result<PartitionState, StoreError> {
        let txn = self.db.begin_read()?;
        let order = txn.open_table(EXPIRY_ORDER)?;
        let expiring = order
            .range((topic.id, partition, i64::MIN, &[][..])..)?
            .next()
            .transpose()?
            .is_some_and(|(k, _)| {
                let (t, p, _, _) = k.value();
                (t, p) == (topic.id, partition)
            });
        Ok(PartitionState {
            table: txn.open_table(STATE)?,
            prefix: state_prefix(topic.id, partition),
            topic_id: topic.id,
            partition,
            expiry: if expiring {
                Some(txn.open_table(EXPIRY)?)
            } else {
                None
            },
            timer_keys: txn.open_table(TIMER_KEYS)?,
            now,
        })
    }

    /// Every committed state entry of `topic`/`partition`, in key order.
    pub fn state_entries(&self, topic: &TopicInfo, partition: u32) -> Result<Entries, StoreError> {
        self.partition_state(topic, partition)?
            .scan(&[], None, usize::MAX)
    }

    /// (first offset, version) for each version that handled `topic`/`partition`.
    pub fn version_history(
        &self,
        topic: &TopicInfo,
        partition: u32,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(VERSION_HISTORY)?;
        let range = table.range((topic.id, partition, 0)..=(topic.id, partition, u64::MAX))?;
        let mut out = Vec::new();
        for entry in range {
            let (key, value) = entry?;
            out.push((key.value().2, value.value().to_owned()));
        }
        Ok(out)
    }

    /// Commits one batch atomically: state writes, outputs, next offset,
    /// version — in a transaction of its own.
    pub fn commit_batch(&self, batch: BatchCommit<'_>) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        let touched = {
            let mut log = None;
            write_batch(&txn, &batch, now_ms(), &mut log)?;
            log.map(LogAppender::finish).transpose()?
        };
        txn.commit()?;
        self.notify_appended(&touched.unwrap_or_default());
        if batch.outboxes() {
            self.notify_outboxed();
        }
        Ok(())
    }

    /// Commits one batch like [`Store::commit_batch`], in one transaction
    /// with the batches other partitions (and routes) are committing at the
    /// same time: one fsync for all of them. Each batch stays atomic — all of
    /// it or none — and a batch refused alone (a checkpoint conflict, an
    /// output topic that does not exist) leaves the others to commit. The
    /// caller waits at most for the group being written when it arrived and
    /// then its own. Hands `commit.effects` back.
    pub fn commit_grouped(&self, commit: OwnedCommit) -> Grouped {
        block_on(self.commit_grouped_async(commit))
    }

    /// [`Store::commit_grouped`] for a task: it waits without holding its
    /// thread. With a committer thread running ([`Store::run_committer`])
    /// the task never writes; without one it leads like a thread would,
    /// writing on its own thread.
    pub async fn commit_grouped_async(&self, commit: OwnedCommit) -> Grouped {
        let (slot, lead_now) = self.enqueue(commit);
        let mut wrote = None;
        if lead_now {
            wrote = Some(self.lead());
        }
        loop {
            let state = std::mem::take(&mut *slot.state.lock().expect("group commit slot"));
            match state {
                SlotState::Done(answer, group) => {
                    let (result, effects) = *answer;
                    return Grouped {
                        result,
                        effects,
                        wrote: wrote.or(group),
                    };
                }
                SlotState::Lead => wrote = Some(self.lead()),
                SlotState::Waiting => slot.notify.notified().await,
            }
        }
    }

    /// Queues `commit`; true when the caller must write the group now.
    fn enqueue(&self, commit: OwnedCommit) -> (Arc<Slot>, bool) {
        let slot = Arc::new(Slot::default());
        let mut queue = self.group.queue.lock().expect("group commit queue");
        queue.waiting.push((slot.clone(), commit));
        let lead_now = if queue.committer {
            self.group.arrived.notify_one();
            false
        } else {
            !std::mem::replace(&mut queue.leading, true)
        };
        (slot, lead_now)
    }

    /// Writes every group on the calling thread until
    /// [`Store::stop_committer`]: while it runs, callers of
    /// `commit_grouped` only wait, so a pool of worker threads never blocks
    /// on an fsync and the next group gathers while this one is written.
    pub fn run_committer(&self) {
        {
            let mut queue = self.group.queue.lock().expect("group commit queue");
            queue.committer = true;
            queue.stopping = false;
        }
        loop {
            {
                let mut queue = self.group.queue.lock().expect("group commit queue");
                while queue.waiting.is_empty() && !queue.stopping {
                    queue = self.group.arrived.wait(queue).expect("group commit queue");
                }
                if queue.waiting.is_empty() {
                    queue.committer = false;
                    return;
                }
                // A caller that queued before the committer started may
                // still be writing its group.
                if queue.leading {
                    drop(queue);
                    std::thread::sleep(std::time::Duration::from_micros(100));
                    continue;
                }
            }
            // A panic writing a group has answered its callers (`Leading`);
            // the committer goes on with the next one.
            let wrote =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.write_group(true)));
            if wrote.is_err() {
                tracing::error!("a group commit panicked; its batches will be retried");
            }
        }
    }

    /// Ends [`Store::run_committer`] once every queued batch is written.
    pub fn stop_committer(&self) {
        let mut queue = self.group.queue.lock().expect("group commit queue");
        queue.stopping = true;
        self.group.arrived.notify_all();
    }

    /// Writes every batch waiting in one transaction, answers each caller,
    /// and passes the lead to one caller that arrived meanwhile (or gives it
    /// up): only the callers concerned wake. Returns how many it wrote.
    fn lead(&self) -> usize {
        let written = self.write_group(false);
        self.pass_lead();
        written
    }

    /// Writes every batch waiting in one transaction and answers each
    /// caller; `tell_size` tells the group's first caller how many batches
    /// the transaction held (a committer thread has no report of its own).
    fn write_group(&self, tell_size: bool) -> usize {
        let batches =
            std::mem::take(&mut self.group.queue.lock().expect("group commit queue").waiting);
        let written = batches.len();
        let guard = Leading {
            store: self,
            slots: batches.iter().map(|(slot, _)| slot.clone()).collect(),
        };
        for (i, (slot, answer)) in self.commit_together(batches).into_iter().enumerate() {
            let size = (tell_size && i == 0).then_some(written);
            slot.set(SlotState::Done(Box::new(answer), size));
        }
        guard.done();
        written
    }

    fn pass_lead(&self) {
        let mut queue = self.group.queue.lock().expect("group commit queue");
        match queue.waiting.first() {
            // A committer that started meanwhile takes the queue over.
            Some(_) if queue.committer => {
                queue.leading = false;
                self.group.arrived.notify_one();
            }
            Some((next, _)) => next.set(SlotState::Lead),
            None => queue.leading = false,
        }
    }

    /// One transaction for `batches`; each one's result and effects, with
    /// the tag it came with.
    fn commit_together<K>(&self, batches: Vec<(K, OwnedCommit)>) -> Vec<(K, Answer)> {
        let now = now_ms();
        let written = self
            .db
            .begin_write()
            .map_err(StoreError::from)
            .and_then(|txn| {
                let (refusals, touched) = {
                    let mut log = None;
                    let refusals: Vec<Option<StoreError>> = batches
                        .iter()
                        .map(
                            |(_, c)| match write_batch(&txn, &c.borrowed(), now, &mut log) {
                                Ok(()) => Ok(None),
                                Err(e) if e.refuses_batch_only() => Ok(Some(e)),
                                Err(e) => Err(e),
                            },
                        )
                        .collect::<Result<_, _>>()?;
                    (refusals, log.map(LogAppender::finish).transpose()?)
                };
                txn.commit()?;
                Ok((refusals, touched.unwrap_or_default()))
            });
        match written {
            Ok((refusals, touched)) => {
                // One wake-up per group and partition, not per batch.
                let mut outboxed = false;
                let answers = batches
                    .into_iter()
                    .zip(refusals)
                    .map(|((ticket, commit), refused)| {
                        let result = match refused {
                            Some(e) => Err(e),
                            None => {
                                outboxed |= commit.borrowed().outboxes();
                                Ok(())
                            }
                        };
                        (ticket, (result, commit.effects))
                    })
                    .collect();
                self.notify_appended(&touched);
                if outboxed {
                    self.notify_outboxed();
                }
                answers
            }
            Err(e) => {
                // Nothing of the group was written; each batch is retried
                // by its own worker.
                let message = e.to_string();
                batches
                    .into_iter()
                    .map(|(ticket, commit)| {
                        (
                            ticket,
                            (
                                Err(StoreError::GroupFailed(message.clone())),
                                commit.effects,
                            ),
                        )
                    })
                    .collect()
            }
        }
    }

    /// The end of `topic`/`partition`'s log: the offset its next record
    /// gets.
    fn log_end(&self, topic: &TopicInfo, partition: u32) -> Result<u64, StoreError> {
        self.end_offsets(topic)?
            .get(partition as usize)
            .copied()
            .ok_or_else(|| StoreError::NoSuchPartition {
                topic: topic.name.clone(),
                partitions: topic.partitions,
                partition,
            })
    }

    /// The offset `to` means for `topic`/`partition` now.
    pub fn reset_offset(
        &self,
        topic: &TopicInfo,
        partition: u32,
        to: ResetTo,
    ) -> Result<u64, StoreError> {
        let end = || self.log_end(topic, partition);
        Ok(match to {
            ResetTo::Offset(o) => o,
            ResetTo::Earliest => self.start_offset(topic, partition)?,
            ResetTo::Latest => end()?,
            ResetTo::Timestamp(ms) => match self.first_offset_at(topic, partition, ms)? {
                Some(o) => o,
                None => end()?,
            },
        })
    }

    /// Moves the checkpoint of `topic`/`partition` to `to` (at most the log
    /// end), keeping or clearing its state, in one transaction; returns the
    /// offset it moved from. The other checkpoint write that does not
    /// follow on from the previous one: an operator's decision to replay or
    /// skip records, taken while no host runs. The version recorded stays
    /// the last one that handled a batch.
    pub fn reset_partition(
        &self,
        topic: &TopicInfo,
        partition: u32,
        to: u64,
        state: ResetState,
    ) -> Result<u64, StoreError> {
        let end = self.log_end(topic, partition)?;
        if to > end {
            return Err(StoreError::Invalid(format!(
                "{}/{partition} ends at offset {end}; it cannot be reset to {to}",
                topic.name
            )));
        }
        let start = self.start_offset(topic, partition)?;
        if to < start {
            return Err(StoreError::Invalid(format!(
                "{}/{partition} starts at offset {start} (retention removed the records before it); it cannot be reset to {to}",
                topic.name
            )));
        }
        let txn = self.db.begin_write()?;
        let from;
        {
            let mut checkpoints = txn.open_table(CHECKPOINTS)?;
            let previous = checkpoints
                .get((topic.id, partition))?
                .map(|v| (v.value().0, v.value().1.to_owned()));
            from = previous.as_ref().map_or(0, |p| p.0);
            let version = previous.map_or_else(|| RESET_VERSION.to_owned(), |p| p.1);
            checkpoints.insert((topic.id, partition), (to, version.as_str()))?;
            if state == ResetState::Clear {
                clear_partition(&txn, topic.id, partition)?;
            }
        }
        txn.commit()?;
        Ok(from)
    }

    /// Replaces the state of `topic`/`partition` — values, expiries, timers,
    /// watermark — with `restored`, sets its checkpoint to `next_offset` and
    /// drops its undelivered outbox entries, in one transaction: what
    /// restoring from the changelog ends with.
    /// Whatever this member did past the group's offset is redone from
    /// there, so none of it may be delivered.
    ///
    /// The one checkpoint write that does not follow on from the previous
    /// one: the group's committed offset may be behind (or ahead of) the
    /// local checkpoint, and the state comes with it, so the pair stays
    /// consistent. It names `RESTORED_VERSION` and no batch.
    pub fn restore_partition(
        &self,
        topic: &TopicInfo,
        partition: u32,
        next_offset: u64,
        restored: &RestoredPartition,
    ) -> Result<(), StoreError> {
        let prefix = state_prefix(topic.id, partition);
        let txn = self.db.begin_write()?;
        {
            clear_partition(&txn, topic.id, partition)?;
            let mut table = txn.open_table(STATE)?;
            for (key, value) in &restored.state {
                let mut full = prefix.to_vec();
                full.extend_from_slice(key);
                table.insert(full.as_slice(), value.as_slice())?;
            }
            let mut expiry = txn.open_table(EXPIRY)?;
            let mut order = txn.open_table(EXPIRY_ORDER)?;
            for (key, &at) in &restored.expiries {
                let full = prefixed(&prefix, key);
                expiry.insert(full.as_slice(), at)?;
                order.insert((topic.id, partition, at, key.as_slice()), ())?;
            }
            drop((table, expiry, order));
            let timers = BatchEffects {
                timers: restored
                    .timers
                    .iter()
                    .map(|(k, &due)| (k.clone(), Some(due)))
                    .collect(),
                ..Default::default()
            };
            write_timers(&txn, topic.id, partition, &timers)?;
            if let Some(watermark) = restored.watermark {
                txn.open_table(WATERMARKS)?
                    .insert((topic.id, partition), watermark)?;
            }
            txn.open_table(FIRINGS)?
                .insert((topic.id, partition), (next_offset, restored.next_firing))?;
            txn.open_table(CHECKPOINTS)?
                .insert((topic.id, partition), (next_offset, RESTORED_VERSION))?;
            txn.open_table(OUTBOX)?.retain_in(
                (topic.id, partition, 0, 0)..=(topic.id, partition, u64::MAX, u32::MAX),
                |_, _| false,
            )?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Kafka source: the offset of the partition's latest timer firing at a
    /// batch boundary and the sequence number the next one there takes.
    pub fn next_firing(
        &self,
        topic: &TopicInfo,
        partition: u32,
    ) -> Result<Option<(u64, u32)>, StoreError> {
        let txn = self.db.begin_read()?;
        Ok(txn
            .open_table(FIRINGS)?
            .get((topic.id, partition))?
            .map(|v| v.value()))
    }
}

/// A partition's durable state as a restore rebuilt it (Kafka source).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RestoredPartition {
    /// State entries.
    pub state: BTreeMap<Vec<u8>, Vec<u8>>,
    /// When keys of `state` written with a time to live expire (ms since
    /// the Unix epoch).
    pub expiries: BTreeMap<Vec<u8>, i64>,
    /// Pending timers: due time by (domain, key).
    pub timers: BTreeMap<(TimeDomain, Vec<u8>), i64>,
    /// The event-time watermark.
    pub watermark: Option<i64>,
    /// The sequence number the next timer firing at the restored offset
    /// takes: past every firing an owner made there.
    pub next_firing: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::OutputRecord;
    use crate::store::LOG_BLOCKS;
    use tokio::sync::watch;

    /// A disk that loses power: writes land in `live`; only `sync_data`
    /// makes them `durable`; after `writes_left` writes every call fails, as
    /// if the machine stopped there, and what survives is `durable`.
    #[derive(Debug, Default)]
    struct Disk {
        live: Vec<u8>,
        durable: Vec<u8>,
        writes_left: Option<u64>,
    }

    #[derive(Debug, Clone, Default)]
    struct PowerLoss(std::sync::Arc<std::sync::Mutex<Disk>>);

    impl PowerLoss {
        fn after(durable: Vec<u8>, writes: Option<u64>) -> PowerLoss {
            PowerLoss(std::sync::Arc::new(std::sync::Mutex::new(Disk {
                live: durable.clone(),
                durable,
                writes_left: writes,
            })))
        }

        fn disk(&self) -> std::sync::MutexGuard<'_, Disk> {
            self.0.lock().unwrap()
        }

        /// Counts a write; fails once the power is gone.
        fn spend(disk: &mut Disk) -> std::io::Result<()> {
            match &mut disk.writes_left {
                Some(0) => Err(std::io::Error::other("power lost")),
                Some(n) => {
                    *n -= 1;
                    Ok(())
                }
                None => Ok(()),
            }
        }
    }

    impl redb::StorageBackend for PowerLoss {
        fn len(&self) -> std::io::Result<u64> {
            Ok(self.disk().live.len() as u64)
        }

        fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
            let disk = self.disk();
            let start = offset as usize;
            let data = disk
                .live
                .get(start..start + out.len())
                .ok_or_else(|| std::io::Error::other("read past the end"))?;
            out.copy_from_slice(data);
            Ok(())
        }

        fn set_len(&self, len: u64) -> std::io::Result<()> {
            let mut disk = self.disk();
            PowerLoss::spend(&mut disk)?;
            disk.live.resize(len as usize, 0);
            Ok(())
        }

        fn sync_data(&self) -> std::io::Result<()> {
            let mut disk = self.disk();
            PowerLoss::spend(&mut disk)?;
            disk.durable = disk.live.clone();
            Ok(())
        }

        fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            let mut disk = self.disk();
            PowerLoss::spend(&mut disk)?;
            let start = offset as usize;
            disk.live[start..start + data.len()].copy_from_slice(data);
            Ok(())
        }
    }

    /// Commits batches of 3 records (a count in state, one output per
    /// record) until the power goes; returns how many committed.
    fn run_until_power_loss(store: &Store, batches: u64) -> u64 {
        let input = store.topic("in").unwrap();
        let from = store
            .checkpoint(&input, 0)
            .unwrap()
            .map_or(0, |c| c.next_offset);
        let mut next = from;
        for _ in 0..batches {
            let end = next + 3;
            let outputs: Vec<(String, String)> = (next..end)
                .map(|o| ("k".to_owned(), o.to_string()))
                .collect();
            let outputs: Vec<(&str, &str)> = outputs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let count = end.to_string();
            let fx = effects(&[("count", Some(&count))], &outputs);
            let commit = store.commit_batch(BatchCommit {
                topic: &input,
                partition: 0,
                first_offset: next,
                next_offset: end,
                version: "v1",
                effects: &fx,
                changelog: None,
                firing_seq: None,
            });
            if commit.is_err() {
                break;
            }
            next = end;
        }
        next
    }

    #[test]
    fn power_lost_at_any_write_leaves_whole_batches_only() {
        // The store with its topics, as it is on disk before any batch.
        let setup = PowerLoss::default();
        {
            let store = Store::with_backend(setup.clone(), "setup".into()).unwrap();
            store.create_topic("in", 1).unwrap();
            store.create_topic("out", 1).unwrap();
        }
        let image = setup.disk().durable.clone();
        // Count the writes of an uninterrupted run, then cut the power at
        // each of them in turn.
        {
            let full = PowerLoss::after(image.clone(), None);
            let store = Store::with_backend(full, "full".into()).unwrap();
            assert_eq!(run_until_power_loss(&store, 4), 12);
        }
        let mut writes = 0;
        loop {
            let disk = PowerLoss::after(image.clone(), Some(writes));
            let committed = match Store::with_backend(disk.clone(), "cut".into()) {
                Ok(store) => run_until_power_loss(&store, 4),
                Err(_) => 0,
            };
            let survived = disk.disk().durable.clone();
            let store = Store::with_backend(PowerLoss::after(survived, None), "after".into())
                .unwrap_or_else(|e| panic!("write {writes}: the store does not open: {e}"));
            let input = store.topic("in").unwrap();
            let out = store.topic("out").unwrap();
            let next = store
                .checkpoint(&input, 0)
                .unwrap()
                .map_or(0, |c| c.next_offset);
            assert_eq!(next % 3, 0, "write {writes}: half a batch committed");
            // An acknowledged batch survives; at most the one in flight may
            // have made it without its acknowledgement.
            assert!(
                (committed..=committed + 3).contains(&next),
                "write {writes}: {committed} acknowledged, {next} survived"
            );
            let state = store.state_entries(&input, 0).unwrap();
            let count = state
                .iter()
                .find(|(k, _)| k == b"count")
                .map(|(_, v)| v.clone());
            assert_eq!(
                count,
                (next > 0).then(|| next.to_string().into_bytes()),
                "write {writes}: state and offset disagree"
            );
            let outputs: Vec<Vec<u8>> = store
                .read(&out, 0, 0, 100)
                .unwrap()
                .into_iter()
                .map(|r| r.value)
                .collect();
            let expected: Vec<Vec<u8>> = (0..next).map(|o| o.to_string().into_bytes()).collect();
            assert_eq!(
                outputs, expected,
                "write {writes}: outputs and offset disagree"
            );
            // Work goes on from the checkpoint and ends where it would have.
            let finished = run_until_power_loss(&store, (12 - next) / 3);
            assert_eq!(finished, 12, "write {writes}");
            if committed == 12 {
                break;
            }
            writes += 1;
        }
        eprintln!("power cut at each of {writes} writes");
        assert!(writes > 4, "the run made {writes} writes");
    }

    fn effects(writes: &[(&str, Option<&str>)], outputs: &[(&str, &str)]) -> BatchEffects {
        BatchEffects {
            state: writes
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec())))
                .collect(),
            outputs: outputs
                .iter()
                .map(|(k, v)| OutputRecord {
                    topic: "out".into(),
                    key: Some(k.as_bytes().to_vec()),
                    value: v.as_bytes().to_vec(),
                    headers: vec![],
                    timestamp_ms: None,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn owned(
        topic: &TopicInfo,
        partition: u32,
        from: u64,
        to: u64,
        fx: BatchEffects,
    ) -> OwnedCommit {
        OwnedCommit {
            topic: topic.clone(),
            partition,
            first_offset: from,
            next_offset: to,
            version: "v1".into(),
            effects: fx,
            changelog: None,
            firing_seq: None,
        }
    }

    #[test]
    fn a_group_commits_each_batch_whole_and_refuses_only_the_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let input = store.create_topic("in", 4).unwrap();
        let out = store.create_topic("out", 1).unwrap();
        let mut missing = effects(&[("m", Some("1"))], &[("m", "never")]);
        missing.outputs[0].topic = "nowhere".into();
        let results = store.commit_together(vec![
            (
                1,
                owned(
                    &input,
                    0,
                    0,
                    3,
                    effects(&[("a", Some("1"))], &[("a", "p0")]),
                ),
            ),
            // Starts at 7, but partition 1 has committed nothing.
            (
                2,
                owned(
                    &input,
                    1,
                    7,
                    9,
                    effects(&[("c", Some("1"))], &[("c", "conflict")]),
                ),
            ),
            // Writes state and an output before the topic turns out missing:
            // none of it may stay.
            (3, owned(&input, 2, 0, 1, missing)),
            (
                4,
                owned(
                    &input,
                    3,
                    0,
                    2,
                    effects(&[("d", Some("4"))], &[("d", "p3")]),
                ),
            ),
        ]);
        let outcome: Vec<(u64, String)> = results
            .iter()
            .map(|(t, (r, _))| {
                let r = match r {
                    Ok(()) => "ok".to_owned(),
                    Err(StoreError::CheckpointConflict { .. }) => "conflict".into(),
                    Err(StoreError::UnknownTopic(t)) => format!("unknown {t}"),
                    Err(e) => format!("{e}"),
                };
                (*t, r)
            })
            .collect();
        assert_eq!(
            outcome,
            [
                (1, "ok".into()),
                (2, "conflict".into()),
                (3, "unknown nowhere".into()),
                (4, "ok".into())
            ]
        );
        let next = |p| store.checkpoint(&input, p).unwrap().map(|c| c.next_offset);
        assert_eq!(
            [next(0), next(1), next(2), next(3)],
            [Some(3), None, None, Some(2)]
        );
        assert!(store.state_entries(&input, 1).unwrap().is_empty());
        assert!(store.state_entries(&input, 2).unwrap().is_empty());
        let values: Vec<Vec<u8>> = store
            .read(&out, 0, 0, 10)
            .unwrap()
            .into_iter()
            .map(|r| r.value)
            .collect();
        assert_eq!(values, [b"p0".to_vec(), b"p3".to_vec()]);
        // Effects come back to their callers.
        assert_eq!(results[1].1.1.outputs[0].value, b"conflict");
    }

    #[test]
    fn a_commit_wakes_the_readers_of_the_partitions_it_appended_to_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let input = store.create_topic("in", 2).unwrap();
        let out = store.create_topic("out", 4).unwrap();
        let mut readers: Vec<_> = (0..4).map(|p| store.subscribe_appends(&out, p)).collect();
        let idle_input = store.subscribe_appends(&input, 1);
        let woken = |readers: &mut [watch::Receiver<u64>]| -> Vec<u32> {
            (0..4u32)
                .filter(|&p| {
                    let r = &mut readers[p as usize];
                    let changed = r.has_changed().unwrap();
                    r.borrow_and_update();
                    changed
                })
                .collect()
        };

        let results = store.commit_together(vec![(
            1,
            owned(&input, 0, 0, 1, effects(&[], &[("a", "x")])),
        )]);
        assert!(results[0].1.0.is_ok());
        assert_eq!(woken(&mut readers), [partition_for_key(b"a", 4)]);

        store
            .commit_batch(owned(&input, 0, 1, 2, effects(&[], &[("b", "y")])).borrowed())
            .unwrap();
        assert_eq!(woken(&mut readers), [partition_for_key(b"b", 4)]);

        // State alone appends nothing.
        store
            .commit_batch(owned(&input, 0, 2, 3, effects(&[("k", Some("v"))], &[])).borrowed())
            .unwrap();
        assert_eq!(woken(&mut readers), Vec::<u32>::new());

        let produced = store
            .produce(
                "out",
                &[crate::record::NewRecord {
                    key: None,
                    value: b"z".to_vec(),
                    headers: vec![],
                    partition: Some(3),
                    timestamp_ms: None,
                }],
            )
            .unwrap();
        assert_eq!(produced, [(3, 0)]);
        assert_eq!(woken(&mut readers), [3]);
        assert!(!idle_input.has_changed().unwrap());
    }

    #[test]
    fn the_batches_of_a_group_share_log_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let input = store.create_topic("in", 3).unwrap();
        let out = store.create_topic("out", 1).unwrap();
        let results = store.commit_together(
            (0..3)
                .map(|p| (p, owned(&input, p, 0, 1, effects(&[], &[("k", "v")]))))
                .collect(),
        );
        assert!(results.iter().all(|(_, (r, _))| r.is_ok()));
        let txn = store.db.begin_read().unwrap();
        let blocks = txn.open_table(LOG_BLOCKS).unwrap();
        let rows = blocks
            .range((out.id, 0, 0)..=(out.id, 0, u64::MAX))
            .unwrap()
            .count();
        // A block per batch before: three rows of one record.
        assert_eq!(rows, 1);
        let values: Vec<Vec<u8>> = store
            .read(&out, 0, 0, 10)
            .unwrap()
            .into_iter()
            .map(|r| r.value)
            .collect();
        assert_eq!(values, [b"v".to_vec(), b"v".to_vec(), b"v".to_vec()]);
    }

    #[test]
    fn concurrent_commits_each_land_once_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let input = store.create_topic("in", 6).unwrap();
        store.create_topic("out", 1).unwrap();
        const BATCHES: u64 = 40;
        let written: usize = std::thread::scope(|s| {
            let workers: Vec<_> = (0..6)
                .map(|p| {
                    let (store, input) = (&store, &input);
                    s.spawn(move || {
                        let mut written = 0;
                        for b in 0..BATCHES {
                            let value = format!("{p}:{b}");
                            let fx = effects(&[("n", Some(&value))], &[("k", &value)]);
                            let grouped = store.commit_grouped(owned(input, p, b, b + 1, fx));
                            grouped.result.unwrap();
                            assert_eq!(grouped.effects.outputs[0].value, value.as_bytes());
                            written += grouped.wrote.unwrap_or(0);
                        }
                        written
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        // Every batch was written by exactly one transaction.
        assert_eq!(written as u64, 6 * BATCHES);
        for p in 0..6 {
            assert_eq!(
                store.checkpoint(&input, p).unwrap().unwrap().next_offset,
                BATCHES
            );
            let state = store.partition_state(&input, p).unwrap();
            assert_eq!(
                state.get(b"n").unwrap(),
                Some(format!("{p}:{}", BATCHES - 1).into_bytes())
            );
        }
        let out = store.topic("out").unwrap();
        let mut seen: Vec<String> = store
            .read(&out, 0, 0, 1000)
            .unwrap()
            .into_iter()
            .map(|r| String::from_utf8(r.value).unwrap())
            .collect();
        assert_eq!(seen.len() as u64, 6 * BATCHES);
        // Per partition, in commit order.
        for p in 0..6 {
            let mine: Vec<&String> = seen
                .iter()
                .filter(|v| v.starts_with(&format!("{p}:")))
                .collect();
            let want: Vec<String> = (0..BATCHES).map(|b| format!("{p}:{b}")).collect();
            assert_eq!(mine, want.iter().collect::<Vec<_>>());
        }
        seen.dedup();
        assert_eq!(seen.len() as u64, 6 * BATCHES);
    }

    #[test]
    fn tasks_on_one_thread_commit_together_through_a_committer_thread() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        const PARTITIONS: u32 = 64;
        const BATCHES: u64 = 20;
        let input = store.create_topic("in", PARTITIONS).unwrap();
        let out = store.create_topic("out", 1).unwrap();
        let committer = {
            let store = store.clone();
            std::thread::spawn(move || store.run_committer())
        };
        // One thread runs every partition: a task that waits for its commit
        // must not hold it, or nothing else would run.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let groups: Vec<usize> = rt.block_on(async {
            let tasks: Vec<_> = (0..PARTITIONS)
                .map(|p| {
                    let (store, input) = (store.clone(), input.clone());
                    tokio::spawn(async move {
                        let mut groups = Vec::new();
                        for b in 0..BATCHES {
                            let value = format!("{p}:{b}");
                            let fx = effects(&[("n", Some(&value))], &[("k", &value)]);
                            let grouped = store
                                .commit_grouped_async(owned(&input, p, b, b + 1, fx))
                                .await;
                            grouped.result.unwrap();
                            groups.extend(grouped.wrote);
                        }
                        groups
                    })
                })
                .collect();
            let mut groups = Vec::new();
            for t in tasks {
                groups.extend(t.await.unwrap());
            }
            groups
        });
        store.stop_committer();
        committer.join().unwrap();
        // Each transaction's size was told once, and they add up to every
        // batch; far fewer transactions than batches.
        let total = u64::from(PARTITIONS) * BATCHES;
        assert_eq!(groups.iter().sum::<usize>() as u64, total);
        assert!(
            (groups.len() as u64) < total / 4,
            "{} transactions for {total} batches",
            groups.len()
        );
        for p in 0..PARTITIONS {
            assert_eq!(
                store.checkpoint(&input, p).unwrap().unwrap().next_offset,
                BATCHES
            );
        }
        let seen: Vec<String> = store
            .read(&out, 0, 0, 10_000)
            .unwrap()
            .into_iter()
            .map(|r| String::from_utf8(r.value).unwrap())
            .collect();
        assert_eq!(seen.len() as u64, total);
        for p in 0..PARTITIONS {
            let mine: Vec<&String> = seen
                .iter()
                .filter(|v| v.starts_with(&format!("{p}:")))
                .collect();
            let want: Vec<String> = (0..BATCHES).map(|b| format!("{p}:{b}")).collect();
            assert_eq!(mine, want.iter().collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_batch_commits_state_outputs_and_offset_together() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let input = store.create_topic("in", 2).unwrap();
        let out = store.create_topic("out", 1).unwrap();
        let fx = effects(&[("a", Some("1")), ("b", Some("2"))], &[("a", "x")]);
        store
            .commit_batch(BatchCommit {
                topic: &input,
                partition: 1,
                first_offset: 0,
                next_offset: 5,
                version: "v1",
                effects: &fx,
                changelog: None,
                firing_seq: None,
            })
            .unwrap();
        assert_eq!(
            store.checkpoint(&input, 1).unwrap(),
            Some(Checkpoint {
                next_offset: 5,
                version: "v1".into()
            })
        );
        assert_eq!(store.checkpoint(&input, 0).unwrap(), None);
        assert_eq!(store.read(&out, 0, 0, 10).unwrap()[0].value, b"x");
        // Partition 0 sees none of partition 1's state.
        assert!(store.state_entries(&input, 0).unwrap().is_empty());
        assert_eq!(store.state_entries(&input, 1).unwrap().len(), 2);

        let fx = effects(&[("a", None)], &[]);
        store
            .commit_batch(BatchCommit {
                topic: &input,
                partition: 1,
                first_offset: 5,
                next_offset: 6,
                version: "v2",
                effects: &fx,
                changelog: None,
                firing_seq: None,
            })
            .unwrap();
        let state = store.partition_state(&input, 1).unwrap();
        assert_eq!(state.get(b"a").unwrap(), None);
        assert_eq!(state.get(b"b").unwrap(), Some(b"2".to_vec()));
        assert_eq!(
            store.version_history(&input, 1).unwrap(),
            vec![(0, "v1".to_string()), (5, "v2".to_string())]
        );
    }

    #[test]
    fn a_batch_that_does_not_start_at_the_checkpoint_is_refused_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let input = store.create_topic("in", 1).unwrap();
        let out = store.create_topic("out", 1).unwrap();
        let fx = effects(&[("a", Some("1"))], &[("a", "x")]);
        let err = store
            .commit_batch(BatchCommit {
                topic: &input,
                partition: 0,
                first_offset: 3,
                next_offset: 4,
                version: "v1",
                effects: &fx,
                changelog: None,
                firing_seq: None,
            })
            .unwrap_err();
        assert!(
            matches!(err, StoreError::CheckpointConflict { .. }),
            "{err}"
        );
        assert!(store.state_entries(&input, 0).unwrap().is_empty());
        assert!(store.read(&out, 0, 0, 10).unwrap().is_empty());
    }

    #[test]
    fn emitting_to_a_missing_topic_commits_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let input = store.create_topic("in", 1).unwrap();
        let fx = effects(&[("a", Some("1"))], &[("a", "x")]);
        let err = store
            .commit_batch(BatchCommit {
                topic: &input,
                partition: 0,
                first_offset: 0,
                next_offset: 1,
                version: "v1",
                effects: &fx,
                changelog: None,
                firing_seq: None,
            })
            .unwrap_err();
        assert!(matches!(err, StoreError::UnknownTopic(_)), "{err}");
        assert_eq!(store.checkpoint(&input, 0).unwrap(), None);
        assert!(store.state_entries(&input, 0).unwrap().is_empty());
    }

    #[test]
    fn scan_pages_through_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let input = store.create_topic("in", 1).unwrap();
        store.create_topic("out", 1).unwrap();
        let fx = effects(
            &[
                ("a1", Some("1")),
                ("a2", Some("2")),
                ("a3", Some("3")),
                ("b1", Some("4")),
            ],
            &[],
        );
        store
            .commit_batch(BatchCommit {
                topic: &input,
                partition: 0,
                first_offset: 0,
                next_offset: 1,
                version: "v",
                effects: &fx,
                changelog: None,
                firing_seq: None,
            })
            .unwrap();
        let state = store.partition_state(&input, 0).unwrap();
        let page = state.scan(b"a", None, 2).unwrap();
        assert_eq!(page.len(), 2);
        let rest = state.scan(b"a", Some(b"a2"), 10).unwrap();
        assert_eq!(rest, vec![(b"a3".to_vec(), b"3".to_vec())]);
    }
}
