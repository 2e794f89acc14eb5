//! A Kafka partition as a worker's source: the records the member fetched
//! for it, the claim and restore from the changelog before the first batch,
//! and the replay of a previous owner's batches exactly as they were formed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{error, info};

use super::ClientSettings;
use super::fence::{Leases, StartFrom};
use super::restore::{self, Goal, Planned};
use crate::record::{BatchEffects, LogRecord};
use crate::source::{PartitionCtx, Source};
use crate::status::PartitionState;
use crate::store::StoreError;

/// How long a failed claim or changelog read waits before the next try.
const RESTORE_RETRY: Duration = Duration::from_secs(2);
/// How long a reset waits for the partition's committed outputs to be
/// delivered, and for the consumer thread to move the group's offset.
const RESET_WAIT: Duration = Duration::from_secs(30);

/// One owned Kafka partition.
#[derive(Debug)]
pub struct PartitionSource {
    /// Records fetched for the partition.
    pub buffer: Arc<PartitionBuffer>,
    /// The route's changelog topic: state writes go there through the outbox.
    pub changelog_topic: String,
    /// Where the partition starts: its local checkpoint, or a restore from
    /// the changelog to the group's committed offset.
    pub start: StartFrom,
    /// The ownership epoch: the group generation that assigned it.
    pub epoch: u64,
    /// This member's id in the group, written into its claim.
    pub member_id: String,
    /// Where the worker takes its delivery lease once it claimed the
    /// partition and restored it.
    pub leases: Arc<Leases>,
    /// Client settings for the changelog reader.
    pub client: ClientSettings,
    /// The consumer group.
    pub group: String,
    /// What a previous owner did beyond the group's commit (or the local
    /// checkpoint): batches to re-form exactly and timer firings to apply
    /// again, in order; empty until the restore.
    pub replay: VecDeque<Planned>,
    /// Where an operator's reset asks the consumer thread to move the
    /// group's offset and the fetch position.
    pub moves: std::sync::mpsc::Sender<super::ownership::Move>,
}

impl PartitionSource {
    /// Forgets the steps of the replay plan the partition is past.
    fn drop_replayed(&mut self, from: u64) {
        while self.replay.front().is_some_and(|step| match *step {
            Planned::Batch { end, .. } => end <= from,
            Planned::Firing { at, .. } => at < from,
        }) {
            self.replay.pop_front();
        }
    }

    /// One attempt: claim (once per assignment: a retry reads up to the same
    /// claim), read what `goal` needs, restore state if asked to.
    fn try_restore(
        &self,
        ctx: &PartitionCtx<'_>,
        goal: Goal,
        claimed: &mut Option<u64>,
    ) -> anyhow::Result<(u64, restore::Restored)> {
        let claim = match *claimed {
            Some(offset) => offset,
            None => restore::claim(
                &self.client,
                &self.changelog_topic,
                ctx.partition,
                self.epoch,
                &self.member_id,
                ctx.rt,
            )?,
        };
        *claimed = Some(claim);
        let r = restore::read(
            &self.client,
            &self.group,
            (&self.changelog_topic, ctx.partition),
            goal,
            claim,
            ctx.cancel,
            |read, total| {
                ctx.live.update(&ctx.topic.name, ctx.partition, |l| {
                    l.detail = Some(format!(
                        "{}: {read} of {total} changelog records",
                        goal.describe()
                    ));
                });
            },
        )?;
        if let Goal::Restore { upto } = goal {
            ctx.store
                .restore_partition(ctx.topic, ctx.partition, upto, &r.partition)?;
        }
        Ok((claim, r))
    }
}

impl PartitionSource {
    /// An operator's reset at a batch boundary: the committed outputs leave
    /// first (the restore drops what the outbox holds of the partition), the
    /// group's offset and the fetch position move, then state is rebuilt
    /// from the changelog as of the new offset, as a new owner would.
    fn move_to(
        &mut self,
        ctx: &PartitionCtx<'_>,
        checkpoint: u64,
        to: crate::checkpoint::ResetTo,
    ) -> anyhow::Result<u64> {
        let to = super::reset::resolve(&self.client, &ctx.topic.name, ctx.partition, to)?;
        let deadline = Instant::now() + RESET_WAIT;
        while ctx.store.deliverable_offset(ctx.topic, ctx.partition)? != Some(checkpoint) {
            anyhow::ensure!(!ctx.cancel.is_cancelled(), "the partition was released");
            anyhow::ensure!(
                Instant::now() < deadline,
                "the partition's outputs have waited {RESET_WAIT:?} for delivery; try again once the outbox drains"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let (done, moved) = std::sync::mpsc::sync_channel(1);
        self.moves
            .send(super::ownership::Move {
                topic: ctx.topic.name.clone(),
                partition: ctx.partition,
                to,
                done,
            })
            .map_err(|_| anyhow::anyhow!("the consumer has stopped"))?;
        moved
            .recv_timeout(RESET_WAIT)
            .map_err(|_| anyhow::anyhow!("the consumer did not move the group's offset in time"))?
            .map_err(anyhow::Error::msg)?;
        // From here on the group holds `to`: should the partition go before
        // the restore ends, its next owner starts there.
        self.start = StartFrom::Restore(to);
        self.replay.clear();
        match self.prepare(ctx, to) {
            Some(offset) => Ok(offset),
            None => anyhow::bail!(
                "the partition was released while its state was rebuilt; its next owner starts from offset {to}"
            ),
        }
    }
}

impl Source for PartitionSource {
    fn subscribe(&self, _: &PartitionCtx<'_>) -> watch::Receiver<u64> {
        self.buffer.subscribe()
    }

    /// Claims the partition in its changelog, reads what it needs from there
    /// — its state up to the group's committed offset, or only the batches a
    /// previous owner handled past the local checkpoint — and takes the
    /// delivery lease; retries until it succeeds or the partition is
    /// released.
    fn prepare_blocks(&self) -> bool {
        true
    }

    fn prepare(&mut self, ctx: &PartitionCtx<'_>, checkpoint: u64) -> Option<u64> {
        let goal = match self.start {
            StartFrom::Restore(upto) => Goal::Restore { upto },
            StartFrom::Local(_) | StartFrom::Reset(_) => Goal::Plan { from: checkpoint },
        };
        let (from, restoring) = match goal {
            Goal::Restore { upto } => (upto, true),
            Goal::Plan { from } => (from, false),
        };
        let started = Instant::now();
        let mut claimed = None;
        loop {
            ctx.set_state(PartitionState::Restoring, Some(goal.describe()));
            match self.try_restore(ctx, goal, &mut claimed) {
                Ok((claim, r)) => {
                    ctx.metrics.restored_records.inc_by(r.records);
                    let took_ms = started.elapsed().as_millis() as u64;
                    info!(
                        from,
                        keys = restoring.then_some(r.partition.state.len()),
                        timers = restoring.then_some(r.partition.timers.len()),
                        changelog_records = r.records,
                        fenced_records = r.fenced,
                        replay_steps = r.plan.len(),
                        epoch = self.epoch,
                        took_ms,
                        "{}",
                        if restoring {
                            "state restored from the changelog"
                        } else {
                            "local state is current; recent batches read from the changelog"
                        }
                    );
                    self.leases
                        .take(ctx.topic.id, ctx.partition, self.epoch, claim);
                    let mut plan = r.plan;
                    if !restoring {
                        let local = ctx.store.next_firing(ctx.topic, ctx.partition);
                        restore::drop_local_firings(&mut plan, local.ok().flatten());
                    }
                    self.replay = plan.into();
                    ctx.set_state(PartitionState::Starting, None);
                    return Some(from);
                }
                Err(_) if ctx.cancel.is_cancelled() => return None,
                Err(e) => {
                    error!("reading the changelog failed, retrying: {e:#}");
                    ctx.set_state(
                        PartitionState::Restoring,
                        Some(format!("reading the changelog failed, retrying: {e:#}")),
                    );
                    ctx.rt.block_on(async {
                        tokio::select! {
                            _ = ctx.cancel.cancelled() => {}
                            _ = tokio::time::sleep(RESTORE_RETRY) => {}
                        }
                    });
                    if ctx.cancel.is_cancelled() {
                        return None;
                    }
                }
            }
        }
    }

    /// While replaying a previous owner's batches, exactly the next one — or
    /// nothing until all of it has been fetched, or while a firing comes
    /// first.
    fn read(
        &mut self,
        _: &PartitionCtx<'_>,
        from: u64,
        max: usize,
    ) -> Result<Vec<LogRecord>, StoreError> {
        self.drop_replayed(from);
        Ok(match self.replay.front() {
            Some(&Planned::Batch { first, end }) if first <= from => {
                // The previous owner's batch ended with the record at end - 1.
                if self.buffer.last_offset().is_none_or(|last| last + 1 < end) {
                    return Ok(Vec::new());
                }
                self.buffer.read(from, usize::MAX, Some(end))
            }
            Some(&Planned::Firing { at, .. }) if at <= from => Vec::new(),
            Some(&Planned::Batch { first: bound, .. } | &Planned::Firing { at: bound, .. }) => {
                self.buffer.read(from, max, Some(bound))
            }
            None => self.buffer.read(from, max, None),
        })
    }

    fn replaying(&mut self, from: u64) -> bool {
        self.drop_replayed(from);
        !self.replay.is_empty()
    }

    fn planned_firing(&self, at: u64) -> Option<(u32, BatchEffects)> {
        match self.replay.front()? {
            Planned::Firing {
                at: a,
                seq,
                effects,
            } if *a == at => Some((*seq, effects.clone())),
            _ => None,
        }
    }

    fn planned_firing_done(&mut self) {
        if matches!(self.replay.front(), Some(Planned::Firing { .. })) {
            self.replay.pop_front();
        }
    }

    fn reset(
        &mut self,
        ctx: &PartitionCtx<'_>,
        checkpoint: u64,
        to: crate::checkpoint::ResetTo,
    ) -> Option<Result<u64, String>> {
        Some(
            self.move_to(ctx, checkpoint, to)
                .map_err(|e| format!("{e:#}")),
        )
    }

    fn changelog(&self) -> Option<&str> {
        Some(&self.changelog_topic)
    }
}

/// Records the member fetched for one owned partition, waiting for the
/// partition's worker. The member pauses fetching while it is full.
#[derive(Debug)]
pub struct PartitionBuffer {
    inner: Mutex<BufferInner>,
    appended: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct BufferInner {
    records: VecDeque<LogRecord>,
    /// Offset of the newest record pushed: a re-fetch after pause/resume may
    /// deliver it again.
    last: Option<u64>,
}

impl Default for PartitionBuffer {
    fn default() -> PartitionBuffer {
        PartitionBuffer {
            inner: Default::default(),
            appended: watch::Sender::new(0),
        }
    }
}

impl PartitionBuffer {
    /// Adds a fetched record; records at or before the newest are dropped.
    /// Returns how many records wait.
    pub fn push(&self, record: LogRecord) -> usize {
        let mut inner = self.inner.lock().expect("buffer lock");
        if inner.last.is_some_and(|last| record.offset <= last) {
            return inner.records.len();
        }
        inner.last = Some(record.offset);
        inner.records.push_back(record);
        let len = inner.records.len();
        drop(inner);
        self.appended.send_modify(|n| *n = n.wrapping_add(1));
        len
    }

    /// Up to `max` records with offsets in `from..bound`, oldest first. Records
    /// before `from` are committed and dropped; the rest stay until a
    /// checkpoint moves past them, so a failed batch can be read again.
    pub fn read(&self, from: u64, max: usize, bound: Option<u64>) -> Vec<LogRecord> {
        let mut inner = self.inner.lock().expect("buffer lock");
        while inner.records.front().is_some_and(|r| r.offset < from) {
            inner.records.pop_front();
        }
        inner
            .records
            .iter()
            .take_while(|r| bound.is_none_or(|b| r.offset < b))
            .take(max)
            .cloned()
            .collect()
    }

    /// Forgets every record: the consumer is moving to another offset.
    pub fn clear(&self) {
        let mut inner = self.inner.lock().expect("buffer lock");
        inner.records.clear();
        inner.last = None;
    }

    /// Offset of the newest record fetched, if any.
    pub fn last_offset(&self) -> Option<u64> {
        self.inner.lock().expect("buffer lock").last
    }

    /// Records waiting.
    pub fn len(&self) -> usize {
        self.inner.lock().expect("buffer lock").records.len()
    }

    /// Whether no record waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Changes whenever a record is pushed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }
}
