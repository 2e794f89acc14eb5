//! Where a partition worker's records come from: the embedded log, or what a
//! Kafka member fetched (`kafka::source`). The worker reads batches through
//! this boundary and never asks which one it has.

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::log::TopicInfo;
use crate::metrics::Metrics;
use crate::record::{BatchEffects, LogRecord};
use crate::status::{Live, PartitionState};
use crate::store::{Store, StoreError};

/// The partition a source serves, and what it may use while preparing.
pub struct PartitionCtx<'a> {
    /// The store: checkpoints, state, the embedded log.
    pub store: &'a Store,
    /// The partition's topic.
    pub topic: &'a TopicInfo,
    /// The partition.
    pub partition: u32,
    /// Status shared with the admin API.
    pub live: &'a Live,
    /// Metrics.
    pub metrics: &'a Metrics,
    /// Cancelled when the partition is released.
    pub cancel: &'a CancellationToken,
    /// Runtime to park on while waiting.
    pub rt: &'a tokio::runtime::Handle,
}

impl PartitionCtx<'_> {
    /// Shows what the partition is doing in `status`.
    pub fn set_state(&self, state: PartitionState, detail: Option<String>) {
        self.live.update(&self.topic.name, self.partition, |l| {
            l.state = state;
            l.detail = detail;
        });
    }
}

/// A partition's records, in offset order.
pub trait Source: Send + std::fmt::Debug {
    /// Changes whenever new records may have arrived.
    fn subscribe(&self, ctx: &PartitionCtx<'_>) -> watch::Receiver<u64>;

    /// Runs once, before the first batch, with the next offset of the local
    /// checkpoint. Returns the offset to start from, or `None` when the
    /// partition was released before it was ready.
    fn prepare(&mut self, _ctx: &PartitionCtx<'_>, checkpoint: u64) -> Option<u64> {
        Some(checkpoint)
    }

    /// Whether `prepare` blocks (reads a changelog, waits on a broker): the
    /// worker then runs it off the pool's threads.
    fn prepare_blocks(&self) -> bool {
        false
    }

    /// Whether the receiver of [`Source::subscribe`] changes for every
    /// record that arrives at the partition: the worker then reads again at
    /// an offset that read empty only once it changed, and an idle worker
    /// with no timer or expiry due sleeps until it changes instead of
    /// polling.
    fn signals_every_append(&self) -> bool {
        false
    }

    /// Up to `max` records from offset `from`. Empty while nothing is ready.
    fn read(
        &mut self,
        ctx: &PartitionCtx<'_>,
        from: u64,
        max: usize,
    ) -> Result<Vec<LogRecord>, StoreError>;

    /// Moves the partition to `to` for an operator's reset, at a batch
    /// boundary, when the source itself must move (Kafka: the group's
    /// offset, and state rebuilt from the changelog as of the new offset);
    /// returns the new offset. `None`: moving the store's checkpoint is all
    /// a reset takes (the embedded log). Blocks.
    fn reset(
        &mut self,
        _ctx: &PartitionCtx<'_>,
        _checkpoint: u64,
        _to: crate::checkpoint::ResetTo,
    ) -> Option<Result<u64, String>> {
        None
    }

    /// The changelog topic the partition's state writes are delivered to
    /// (through the outbox, in the batch's checkpoint), if the source has one.
    fn changelog(&self) -> Option<&str> {
        None
    }

    /// Whether a previous owner's history from offset `from` on is still to
    /// be replayed (Kafka): until it is, the partition fires no timers of its
    /// own — that history was made without them.
    fn replaying(&mut self, _from: u64) -> bool {
        false
    }

    /// A previous owner's timer firing at boundary `at` to apply again now,
    /// before any batch from `at`: its sequence number and effects. It stays
    /// the next one until [`Source::planned_firing_done`].
    fn planned_firing(&self, _at: u64) -> Option<(u32, BatchEffects)> {
        None
    }

    /// The firing [`Source::planned_firing`] gave was committed.
    fn planned_firing_done(&mut self) {}
}

/// The embedded log in the store.
#[derive(Debug, Default)]
pub struct Embedded;

impl Source for Embedded {
    fn subscribe(&self, ctx: &PartitionCtx<'_>) -> watch::Receiver<u64> {
        ctx.store.subscribe_appends(ctx.topic, ctx.partition)
    }

    /// Every append to the store goes through `LogAppender::finish`, whose
    /// partitions are signalled once the transaction committed.
    fn signals_every_append(&self) -> bool {
        true
    }

    fn read(
        &mut self,
        ctx: &PartitionCtx<'_>,
        from: u64,
        max: usize,
    ) -> Result<Vec<LogRecord>, StoreError> {
        let records = ctx.store.read(ctx.topic, ctx.partition, from, max)?;
        // Offsets are dense here, so a gap (or nothing at all) is where
        // retention may have passed the reader: only then is the start read.
        if records.first().is_none_or(|r| r.offset != from) {
            let start = ctx.store.start_offset(ctx.topic, ctx.partition)?;
            if from < start {
                return Err(StoreError::Truncated {
                    topic: ctx.topic.name.clone(),
                    partition: ctx.partition,
                    from,
                    start,
                });
            }
        }
        Ok(records)
    }
}
