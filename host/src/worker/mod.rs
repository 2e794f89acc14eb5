//! A partition worker: owns one partition of a routed topic and its handler
//! instance. Loop: read a batch from the checkpointed offset → `handle` →
//! checkpoint → between batches, adopt the target plugin version.
//!
//! A worker is a task on the host's worker pool: a runtime of its own with
//! one thread per core (`worker_threads`), whatever the partition count. A
//! task runs `handle` on its pool thread — CPU-bound work that the pool
//! exists for — and yields after every batch, so ready partitions take
//! turns. It never blocks on storage: its checkpoint joins the next group
//! commit, written by the committer thread, and the task waits for the
//! answer without holding its thread. A partition's batches stay strictly
//! sequential: a task has one batch in flight.
//!
//! Failed batches follow the route's error policy: retry with backoff; then
//! either pause, or isolate the failing record — the one the handler names
//! with `poison(index)`, or the one left when the host halves the batch
//! window until a single record fails — and write it to the dead-letter topic
//! in the checkpoint that moves past it.
//!
//! **Architecture invariant:** a batch is read only after the previous batch
//! of the partition committed, and the offset moves only by a checkpoint; a
//! failed batch leaves nothing behind and is read again from the store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, warn};

use crate::checkpoint::OwnedCommit;
use crate::config::{ErrorPolicy, Limits, OnTruncated, TimeSettings};
use crate::log::TopicInfo;
use crate::metrics::{Metrics, PartitionLabels};
use crate::plugins::PluginVersion;
use crate::policy::{self, Attempts, Decision, Failure, TimerDecision};
use crate::record::{BatchEffects, LogRecord, TimeDomain, Timer, now_ms};
use crate::rollout::Events;
use crate::runtime::bindings::{HandlerError, Header, StreamRecord};
use crate::runtime::{Batch, BatchFailure, CallTime, Contract, Instance};
use crate::source::{PartitionCtx, Source};
use crate::status::{Live, PartitionState};
use crate::store::{Store, StoreError};

/// How long an idle worker sleeps between checks when nothing wakes it:
/// with a source that does not signal every append (Kafka), and at most
/// until a processing-time timer (the clock may move).
const IDLE_POLL: Duration = Duration::from_millis(500);
/// Backoff for failures outside the handler (storage, missing topic).
const HOST_RETRY: Duration = Duration::from_millis(500);
/// How often a busy partition removes state whose time to live ran out,
/// and how many entries at most per transaction.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
const SWEEP_LIMIT: usize = 1000;

/// Everything a worker needs.
pub struct WorkerSpec {
    /// The store.
    pub store: Arc<Store>,
    /// Source topic.
    pub topic: TopicInfo,
    /// Owned partition.
    pub partition: u32,
    /// Routed plugin name.
    pub plugin: String,
    /// Route config for `init`.
    pub config: Vec<(String, String)>,
    /// Resource limits of the instance.
    pub limits: Limits,
    /// The route's outbound HTTP policy; `None` refuses every request.
    pub egress: Option<Arc<crate::egress::Egress>>,
    /// What to do with failed batches.
    pub errors: ErrorPolicy,
    /// Watermark lateness and default state TTL.
    pub time: TimeSettings,
    /// What to do when retention removed records before they were handled.
    pub on_truncated: OnTruncated,
    /// Where isolated records go.
    pub dead_letter_topic: String,
    /// The version this partition should run, set by the route's rollout.
    pub versions: watch::Receiver<Arc<PluginVersion>>,
    /// The version to run in shadow beside it, if any.
    pub shadow: watch::Receiver<Option<Arc<PluginVersion>>>,
    /// How much longer than the serving version a shadow may take, in
    /// percent of its time, before it skips batches.
    pub max_shadow_slowdown_percent: u32,
    /// What a shadow comparison overlooks.
    pub shadow_compare: crate::config::ShadowCompare,
    /// Stamp outputs with origin headers (embedded source; Kafka's outbox
    /// always does).
    pub origin_headers: bool,
    /// Where the worker reports swaps and batch outcomes to the rollout.
    pub events: Events,
    /// Changes when an operator asks a paused partition to resume.
    pub resume: watch::Receiver<u64>,
    /// Most records per batch.
    pub max_batch: u32,
    /// Status shared with the admin API.
    pub live: Arc<Live>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Cancelled to release the partition: the worker finishes the batch in
    /// flight, checkpoints it and returns.
    pub cancel: CancellationToken,
    /// Runtime to park on while waiting.
    pub rt: tokio::runtime::Handle,
}

/// Starts the worker as a task of `pool`, reading from `source`.
pub fn spawn(spec: WorkerSpec, source: Box<dyn Source>, pool: &Pool) -> pool::JoinHandle {
    let span =
        tracing::info_span!("partition", topic = %spec.topic.name, partition = spec.partition);
    pool.spawn(Worker::new(spec, source).run().instrument(span))
}

/// What the source may use of the worker's partition.
fn ctx(spec: &WorkerSpec) -> PartitionCtx<'_> {
    PartitionCtx {
        store: &spec.store,
        topic: &spec.topic,
        partition: spec.partition,
        live: &spec.live,
        metrics: &spec.metrics,
        cancel: &spec.cancel,
        rt: &spec.rt,
    }
}

mod background;
mod dead_letter;
pub mod pool;
mod report;
mod shadow;
mod swap;

pub use pool::Pool;

pub use dead_letter::headers as dead_letter_headers;
use report::{Event, Reporter};

struct Worker {
    spec: WorkerSpec,
    report: Reporter,
    source: Box<dyn Source>,
    appends: watch::Receiver<u64>,
    instance: Option<(Instance, Arc<PluginVersion>)>,
    /// A version whose `init` failed here; not tried again until retargeted.
    refused: Option<String>,
    next_offset: u64,
    /// Failed attempts at the current batch, and the isolation window.
    attempts: Attempts,
    /// Checkpoints refused in a row because of what the batch emitted.
    commit_failures: u32,
    /// The version of the last instance started, kept when a trap discards
    /// the instance: a fresh instance of another version is still a swap.
    last_started: Option<String>,
    /// When the last batch committed, and how long the worker has since
    /// waited for records: what a swap pause is measured against.
    last_batch_end: Option<Instant>,
    idle_since_batch: Duration,
    /// A swap whose pause is not measured yet.
    swap_pending: bool,
    /// A swap's log line, written with its pause at the next batch, or when
    /// the partition goes idle first.
    swap_log: Option<String>,
    /// The committed event-time watermark.
    watermark: Option<i64>,
    /// Failed calls of `on-timers` with the current due list.
    timer_failures: u32,
    /// Timers the partition has pending, as last read; `None` before the
    /// first read or after a failed one. Only this worker's commits and
    /// resets change them, and both read them again, so a known 0 spares
    /// the timer reads before every batch and idle wake-up.
    pending_timers: Option<u64>,
    /// The offset the last read found nothing at, and the append signal's
    /// value before that read (see `read_needed`).
    empty_at: Option<(u64, u64)>,
    /// When expired state was last swept.
    last_sweep: Instant,
    /// The partition's earliest state expiry as the last sweep left it:
    /// `Some(None)` none, `None` unknown (no sweep yet, or a commit or
    /// reset since that may have added one). Only this worker's commits
    /// and resets add expiries, so an idle partition that knows it has
    /// none, and no timers, sleeps until something wakes it.
    next_expiry: Option<Option<i64>>,
    /// Operators' reset requests, handled at batch boundaries.
    resets: tokio::sync::mpsc::UnboundedReceiver<crate::status::ResetRequest>,
    /// A reset request that arrived while the worker waited.
    reset_waiting: Option<crate::status::ResetRequest>,
    /// The version to swap to, being instantiated meanwhile.
    next: Option<swap::Next>,
    /// A candidate running in shadow.
    shadow: Option<shadow::Shadow>,
}

#[derive(Clone, Copy)]
enum Wake {
    /// Idle: new records are what we wait for.
    AnyChange,
    /// Backing off or paused: only a new version, a resume or release ends
    /// it early.
    VersionOrCancel,
}

enum Outcome {
    Committed,
    Idle,
    /// Try again after the delay.
    Retry(String, Duration),
    Pause(String),
}

impl Worker {
    fn new(spec: WorkerSpec, source: Box<dyn Source>) -> Worker {
        let appends = source.subscribe(&ctx(&spec));
        let labels = PartitionLabels {
            topic: spec.topic.name.clone(),
            partition: spec.partition,
            plugin: spec.plugin.clone(),
        };
        let report = Reporter::new(
            labels,
            spec.live.clone(),
            spec.metrics.clone(),
            spec.events.clone(),
        );
        let resets = spec.live.reset_requests(&spec.topic.name, spec.partition);
        Worker {
            report,
            spec,
            source,
            appends,
            instance: None,
            refused: None,
            next_offset: 0,
            attempts: Attempts::default(),
            commit_failures: 0,
            last_started: None,
            last_batch_end: None,
            idle_since_batch: Duration::ZERO,
            swap_pending: false,
            swap_log: None,
            watermark: None,
            timer_failures: 0,
            pending_timers: None,
            empty_at: None,
            last_sweep: Instant::now(),
            next_expiry: None,
            resets,
            reset_waiting: None,
            next: None,
            shadow: None,
        }
    }

    async fn run(mut self) {
        match self
            .spec
            .store
            .checkpoint(&self.spec.topic, self.spec.partition)
        {
            Ok(checkpoint) => self.next_offset = checkpoint.map_or(0, |c| c.next_offset),
            Err(e) => {
                error!("cannot read checkpoint: {e}");
                self.report.emit(Event::State(
                    PartitionState::Paused,
                    Some(format!("cannot read checkpoint: {e}")),
                ));
                self.spec.cancel.cancelled().await;
                return;
            }
        }
        self.report.emit(Event::Owned);
        let prepared = if self.source.prepare_blocks() {
            self.prepare_off_the_pool().await
        } else {
            self.source.prepare(&ctx(&self.spec), self.next_offset)
        };
        match prepared {
            Some(offset) => self.next_offset = offset,
            None => {
                self.report.emit(Event::Released);
                return;
            }
        }
        // After `prepare`: a restore from the changelog brings its own.
        match self
            .spec
            .store
            .watermark(&self.spec.topic, self.spec.partition)
        {
            Ok(watermark) => self.watermark = watermark,
            Err(e) => warn!("cannot read the watermark, starting without one: {e}"),
        }
        debug!(offset = self.next_offset, "partition assigned");
        let mut paused = false;
        self.spec.resume.borrow_and_update();
        while !self.spec.cancel.is_cancelled() {
            // A batch boundary: resets asked for meanwhile happen here.
            while let Some(request) = self
                .reset_waiting
                .take()
                .or_else(|| self.resets.try_recv().ok())
            {
                if self.reset(request).await {
                    paused = false;
                }
            }
            if self.adopt_newest() {
                paused = false;
            }
            self.adopt_shadow();
            // A resume asked for while running is consumed and means nothing.
            if self.spec.resume.has_changed().unwrap_or(false) {
                self.spec.resume.borrow_and_update();
                if paused {
                    info!("resumed at offset {}", self.next_offset);
                    paused = false;
                    self.attempts = Attempts::default();
                    self.report
                        .emit(Event::State(PartitionState::Running, None));
                }
            }
            if paused || self.instance.is_none() {
                self.wait(None, Wake::VersionOrCancel).await;
                continue;
            }
            // Due timers fire between batches, before the next one; a
            // previous owner's firing replayed here comes before either.
            let outcome = match self.replay_firing().await {
                Some(outcome) => outcome,
                None => match self.fire_timers().await {
                    Some(outcome) => outcome,
                    None => self.process_batch().await,
                },
            };
            if sweep_in(self.last_sweep.elapsed(), self.next_expiry, now_ms())
                == Some(Duration::ZERO)
            {
                self.sweep_expired();
            }
            match outcome {
                // Other ready partitions of this pool thread take their turn.
                Outcome::Committed => tokio::task::yield_now().await,
                Outcome::Idle => {
                    if let Some(line) = self.swap_log.take() {
                        info!("{line}");
                    }
                    let idle = Instant::now();
                    self.wait(self.idle_timeout(), Wake::AnyChange).await;
                    self.idle_since_batch += idle.elapsed();
                }
                Outcome::Retry(reason, delay) => {
                    warn!(
                        attempt = self.attempts.failed.max(self.commit_failures),
                        ?delay,
                        "batch at offset {} failed, will retry: {reason}",
                        self.next_offset
                    );
                    self.report.emit(Event::Retrying { reason });
                    if !delay.is_zero() {
                        self.wait(Some(delay), Wake::VersionOrCancel).await;
                    }
                }
                Outcome::Pause(reason) => {
                    error!("partition paused at offset {}: {reason}", self.next_offset);
                    self.report.emit(Event::State(
                        PartitionState::Paused,
                        Some(format!(
                            "{reason} (`linecook partitions resume`, a new plugin version or a restart retries it)"
                        )),
                    ));
                    paused = true;
                }
            }
        }
        debug!(offset = self.next_offset, "partition released");
        self.report.emit(Event::Released);
    }

    /// Runs the source's `prepare` on a blocking thread of the host runtime:
    /// restoring from a changelog blocks for as long as it reads, and the
    /// pool's few threads are needed by other partitions meanwhile.
    async fn prepare_off_the_pool(&mut self) -> Option<u64> {
        let checkpoint = self.next_offset;
        self.off_the_pool(move |source, ctx| source.prepare(ctx, checkpoint))
            .await
            .flatten()
    }

    /// Runs `f` with the source on a blocking thread of the host runtime.
    /// `None` if it panicked: the source is gone with it.
    async fn off_the_pool<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Box<dyn Source>, &PartitionCtx<'_>) -> T + Send + 'static,
    ) -> Option<T> {
        let mut source = std::mem::replace(&mut self.source, Box::new(crate::source::Embedded));
        let spec = &self.spec;
        let (store, topic, live, metrics, cancel, rt) = (
            spec.store.clone(),
            spec.topic.clone(),
            spec.live.clone(),
            spec.metrics.clone(),
            spec.cancel.clone(),
            spec.rt.clone(),
        );
        let partition = spec.partition;
        let done = spec.rt.spawn_blocking(move || {
            let ctx = PartitionCtx {
                store: &store,
                topic: &topic,
                partition,
                live: &live,
                metrics: &metrics,
                cancel: &cancel,
                rt: &rt,
            };
            let out = f(&mut source, &ctx);
            (source, out)
        });
        match done.await {
            Ok((source, out)) => {
                self.source = source;
                Some(out)
            }
            Err(e) => {
                error!("the partition's source failed: {e}");
                None
            }
        }
    }

    async fn process_batch(&mut self) -> Outcome {
        // Mark appends seen before reading, so an append racing the read
        // still wakes the wait that follows an empty read.
        // The value, not `has_changed`: the wait that woke this worker has
        // already marked the change seen.
        let signal = *self.appends.borrow_and_update();
        if !read_needed(
            self.source.signals_every_append(),
            self.empty_at,
            (self.next_offset, signal),
        ) {
            return Outcome::Idle;
        }
        let window = self
            .attempts
            .isolating
            .map_or(self.spec.max_batch, |i| i.window)
            .max(1);
        let records = match self
            .source
            .read(&ctx(&self.spec), self.next_offset, window as usize)
        {
            Ok(records) if records.is_empty() => {
                self.empty_at = Some((self.next_offset, signal));
                return Outcome::Idle;
            }
            Ok(records) => {
                self.empty_at = None;
                records
            }
            Err(StoreError::Truncated { from, start, .. }) => return self.truncated(from, start),
            Err(e) => return Outcome::Retry(format!("reading the log failed: {e}"), HOST_RETRY),
        };
        let swapped = std::mem::take(&mut self.swap_pending);
        let pause = self
            .last_batch_end
            .map(|end| end.elapsed().saturating_sub(self.idle_since_batch));
        match pause {
            Some(pause) if swapped => self.report.emit(Event::SwapPause(pause)),
            Some(pause) => self.report.emit(Event::BatchWait(pause)),
            None => {}
        }
        if let Some(line) = self.swap_log.take() {
            match pause {
                Some(pause) => info!("{line} (pause {} µs)", pause.as_micros()),
                None => info!("{line}"),
            }
        }
        let now = now_ms();
        let reader =
            match self
                .spec
                .store
                .partition_state_at(&self.spec.topic, self.spec.partition, now)
            {
                Ok(reader) => reader,
                Err(e) => return Outcome::Retry(format!("reading state failed: {e}"), HOST_RETRY),
            };
        let watermark = crate::timers::advance_watermark(
            self.watermark,
            records.iter().map(|r| r.timestamp_ms),
            self.spec.time.allowed_lateness_ms,
        );
        let time = self.call_time(now, self.watermark);
        let shadow_records = self.shadow.is_some().then(|| records.clone());
        let (instance, version) = self.instance.as_mut().expect("checked by caller");
        let version = version.clone();
        let batch = Batch::new(instance.shape(), &self.spec.topic.name, records);
        let offsets = batch.offsets();
        let first = offsets[0];
        let last = *offsets.last().expect("a batch is never empty");
        // A root of its own, linked to the partition's span: a trace per
        // batch, complete when the batch is, instead of children of a span
        // that lasts as long as the partition is owned.
        let span = tracing::info_span!(
            parent: None,
            "batch",
            topic = %self.spec.topic.name,
            partition = self.spec.partition,
            first_offset = first,
            last_offset = last,
            plugin = %self.spec.plugin,
            version = version.short_digest()
        );
        span.follows_from(tracing::Span::current());
        let handled = span.in_scope(|| {
            tracing::debug_span!("handle")
                .in_scope(|| instance.handle(&batch, Box::new(reader), time))
        });
        self.report.emit(Event::Handled {
            memory_bytes: instance.memory_bytes(),
            took: handled.as_ref().ok().map(|(_, took)| *took),
        });
        match handled {
            Ok((mut effects, handle_time)) => {
                if let Some(records) = shadow_records {
                    self.run_shadow(records, &effects, handle_time, now, time);
                }
                let next = last + 1;
                if watermark != self.watermark {
                    effects.watermark = watermark;
                }
                let emitted = effects.outputs.len() as u64;
                let handled = batch.len() as u64;
                // The records and their packed copy are not needed past the
                // call: freed now, they are not held while the commit waits
                // — with a thousand partitions, by hundreds of batches at
                // once.
                drop(batch);
                let outcome = self
                    .commit(next, &version, effects, (handled, emitted), None)
                    .instrument(span.clone())
                    .await;
                if matches!(outcome, Outcome::Committed) {
                    let _batch = span.enter();
                    debug!(
                        first_offset = first,
                        next_offset = next,
                        outputs = emitted,
                        ?handle_time,
                        "batch committed"
                    );
                    self.attempts = policy::committed(self.attempts, next);
                    self.watermark = watermark;
                }
                outcome
            }
            Err(failure) => {
                self.on_failure(failure, &batch, &version)
                    .instrument(span)
                    .await
            }
        }
    }

    /// Retention removed offsets `from..start` before this route handled
    /// them: skip to the log start (`earliest`), keeping state, in a
    /// checkpoint of its own, or pause and say what is gone.
    fn truncated(&mut self, from: u64, start: u64) -> Outcome {
        let skipped = start - from;
        let gone = format!(
            "retention removed offsets {from}..{start} ({skipped} records) before this route handled them"
        );
        if self.spec.on_truncated != OnTruncated::Earliest {
            return Outcome::Pause(format!(
                "{gone}; `linecook partitions reset --topic {} --partition {} --to-earliest` skips them",
                self.spec.topic.name, self.spec.partition
            ));
        }
        let spec = &self.spec;
        match spec.store.reset_partition(
            &spec.topic,
            spec.partition,
            start,
            crate::checkpoint::ResetState::Keep,
        ) {
            Ok(_) => {
                warn!("{gone}; skipped to offset {start} (on_truncated = \"earliest\")");
                self.next_offset = start;
                self.attempts = Attempts::default();
                self.report.emit(Event::Skipped(skipped));
                Outcome::Committed
            }
            Err(e) => Outcome::Retry(format!("{gone}; skipping them failed: {e}"), HOST_RETRY),
        }
    }

    /// Deletes a bounded number of state entries whose time to live ran
    /// out. They are already invisible to handlers; this frees the space.
    fn sweep_expired(&mut self) {
        self.last_sweep = Instant::now();
        let spec = &self.spec;
        match spec
            .store
            .sweep_expired(&spec.topic, spec.partition, now_ms(), SWEEP_LIMIT)
        {
            Ok(swept) => {
                self.next_expiry = Some(swept.next);
                if swept.removed > 0 {
                    debug!(entries = swept.removed, "expired state removed");
                }
            }
            Err(e) => {
                self.next_expiry = None;
                warn!("removing expired state failed, will try again: {e}")
            }
        }
    }

    /// Moves the partition as an operator asked, at a batch boundary, and
    /// answers; returns whether it moved. The worker is the partition's only
    /// writer, so nothing races the move.
    async fn reset(&mut self, request: crate::status::ResetRequest) -> bool {
        use crate::checkpoint::ResetState;
        let result = if self.source.changelog().is_some() {
            if request.state == ResetState::Clear {
                Err("with Kafka, a reset rebuilds the partition's state from the changelog as of the new offset; --state clear does not apply".to_owned())
            } else {
                let (from, to) = (self.next_offset, request.to);
                match self
                    .off_the_pool(move |source, ctx| source.reset(ctx, from, to))
                    .await
                {
                    Some(Some(result)) => result.map(|to| (from, to)),
                    Some(None) => Err("this source cannot reset".to_owned()),
                    None => {
                        // The source went down with a panic: give the
                        // partition up, its next owner starts cleanly.
                        self.spec.cancel.cancel();
                        Err(
                            "the reset failed inside the host; the partition is released"
                                .to_owned(),
                        )
                    }
                }
            }
        } else {
            let spec = &self.spec;
            spec.store
                .reset_offset(&spec.topic, spec.partition, request.to)
                .and_then(|to| {
                    let from = spec.store.reset_partition(
                        &spec.topic,
                        spec.partition,
                        to,
                        request.state,
                    )?;
                    Ok((from, to))
                })
                .map_err(|e| e.to_string())
        };
        let moved = result.is_ok();
        if let Ok((from, to)) = result {
            info!(state = ?request.state, "reset from offset {from} to {to}");
            self.next_offset = to;
            self.attempts = Attempts::default();
            self.commit_failures = 0;
            self.timer_failures = 0;
            self.next_expiry = None;
            if request.state == ResetState::Clear || self.source.changelog().is_some() {
                // Guest memory may cache what was just forgotten (or, with
                // Kafka, rebuilt as of another offset).
                self.watermark = None;
                self.instance = None;
            }
            self.report.emit(Event::State(
                PartitionState::Running,
                Some(format!("reset from offset {from} to {to}")),
            ));
            self.report_timers();
        }
        let _ = request.done.send(result);
        moved
    }

    /// Reports the partition's committed timers and watermark.
    fn report_timers(&mut self) {
        let spec = &self.spec;
        match spec.store.pending_timers(&spec.topic, spec.partition) {
            Ok(pending) => {
                self.pending_timers = Some(pending.timers);
                self.report.emit(Event::Time {
                    pending: pending.timers,
                    watermark: spec
                        .store
                        .watermark(&spec.topic, spec.partition)
                        .ok()
                        .flatten(),
                })
            }
            Err(e) => {
                self.pending_timers = None;
                debug!("cannot read pending timers: {e}")
            }
        }
    }

    /// What a call sees of time: `now`, the watermark it runs with, and
    /// whether it may set timers.
    fn call_time(&self, now: i64, watermark: Option<i64>) -> CallTime {
        CallTime {
            now_ms: now,
            watermark,
            allowed_lateness_ms: self.spec.time.allowed_lateness_ms,
            state_ttl_ms: self.spec.time.state_ttl_ms,
        }
    }

    /// How long an idle partition waits before something time-driven is
    /// due (`None`: until something wakes it; see `idle_wait`).
    fn idle_timeout(&self) -> Option<Duration> {
        let now = now_ms();
        let timers = matches!(&self.instance, Some((i, _)) if i.contract() == Contract::V0_2);
        let timer_in = if !timers || !timers_may_be_pending(self.pending_timers) {
            None
        } else {
            match self
                .spec
                .store
                .pending_timers(&self.spec.topic, self.spec.partition)
            {
                Ok(pending) => pending
                    .next_processing
                    .map(|due| Duration::from_millis(due.saturating_sub(now).max(0) as u64)),
                Err(_) => Some(IDLE_POLL),
            }
        };
        idle_wait(
            self.source.signals_every_append(),
            timer_in,
            sweep_in(self.last_sweep.elapsed(), self.next_expiry, now),
        )
    }

    /// Applies a previous owner's timer firing at this boundary again, as
    /// it was recorded (Kafka): `None` when the replay plan has none here.
    async fn replay_firing(&mut self) -> Option<Outcome> {
        let (seq, effects) = self.source.planned_firing(self.next_offset)?;
        let version = self.instance.as_ref()?.1.clone();
        let (fired, emitted) = (effects.fired.len() as u64, effects.outputs.len() as u64);
        let outcome = self
            .commit(self.next_offset, &version, effects, (0, emitted), Some(seq))
            .await;
        if matches!(outcome, Outcome::Committed) {
            info!(
                offset = self.next_offset,
                seq,
                timers = fired,
                outputs = emitted,
                "a previous owner's timer firing applied again as recorded"
            );
            self.source.planned_firing_done();
            self.report.emit(Event::TimersFired(fired));
        }
        Some(outcome)
    }

    /// Fires the partition's due timers, when its instance can receive them
    /// (0.2.0): `None` when nothing is due.
    async fn fire_timers(&mut self) -> Option<Outcome> {
        let (instance, _) = self.instance.as_ref()?;
        if instance.contract() != Contract::V0_2
            || self.source.replaying(self.next_offset)
            || !timers_may_be_pending(self.pending_timers)
        {
            return None;
        }
        let spec = &self.spec;
        let now = now_ms();
        let limit = spec.max_batch as usize;
        let due = (|| {
            let processing = spec.store.due_timers(
                &spec.topic,
                spec.partition,
                TimeDomain::Processing,
                now,
                limit,
            )?;
            let event = match self.watermark {
                Some(w) => spec.store.due_timers(
                    &spec.topic,
                    spec.partition,
                    TimeDomain::Event,
                    w,
                    limit,
                )?,
                None => Vec::new(),
            };
            Ok::<_, StoreError>(crate::timers::firing_order(processing, event, limit))
        })();
        let due = match due {
            Ok(due) if due.is_empty() => return None,
            Ok(due) => due,
            Err(e) => {
                return Some(Outcome::Retry(
                    format!("reading timers failed: {e}"),
                    HOST_RETRY,
                ));
            }
        };
        let reader = match spec
            .store
            .partition_state_at(&spec.topic, spec.partition, now)
        {
            Ok(reader) => reader,
            Err(e) => {
                return Some(Outcome::Retry(
                    format!("reading state failed: {e}"),
                    HOST_RETRY,
                ));
            }
        };
        let time = self.call_time(now, self.watermark);
        let (instance, version) = self.instance.as_mut().expect("checked above");
        let version = version.clone();
        let span = tracing::info_span!(
            parent: None,
            "timers",
            topic = %self.spec.topic.name,
            partition = self.spec.partition,
            due = due.len(),
            plugin = %self.spec.plugin,
            version = version.short_digest()
        );
        span.follows_from(tracing::Span::current());
        let fired = span.in_scope(|| instance.on_timers(&due, Box::new(reader), time));
        self.report.emit(Event::Handled {
            memory_bytes: instance.memory_bytes(),
            took: None,
        });
        Some(match fired {
            Ok((effects, _)) => {
                let emitted = effects.outputs.len() as u64;
                let outcome = self
                    .commit(self.next_offset, &version, effects, (0, emitted), None)
                    .instrument(span.clone())
                    .await;
                if matches!(outcome, Outcome::Committed) {
                    let _timers = span.enter();
                    debug!(timers = due.len(), outputs = emitted, "timers fired");
                    self.timer_failures = 0;
                    self.report.emit(Event::TimersFired(due.len() as u64));
                }
                outcome
            }
            Err(failure) => {
                self.on_timer_failure(failure, &due, &version)
                    .instrument(span)
                    .await
            }
        })
    }

    /// Decides what a failed `on-timers` call leads to.
    async fn on_timer_failure(
        &mut self,
        failure: BatchFailure,
        due: &[Timer],
        version: &Arc<PluginVersion>,
    ) -> Outcome {
        let reason = format!("firing {} timers: {failure}", due.len());
        let kind = self.failed(&failure, &reason, version);
        let (decision, failed) =
            policy::decide_timers(kind, due.len(), self.timer_failures, &self.spec.errors);
        self.timer_failures = failed;
        match decision {
            TimerDecision::Retry { delay } => Outcome::Retry(reason, delay),
            TimerDecision::Pause(cause) => Outcome::Pause(format!("{reason}{cause}")),
            TimerDecision::DeadLetter(index) => {
                let timer = &due[index];
                let origin = dead_letter::Origin {
                    plugin: &self.spec.plugin,
                    version: &version.digest,
                    kind: failure.kind(),
                    message: &failure.to_string(),
                };
                let effects = BatchEffects {
                    outputs: vec![dead_letter::dead_timer(
                        timer,
                        &self.spec.topic.name,
                        self.spec.partition,
                        &self.spec.dead_letter_topic,
                        &origin,
                    )],
                    fired: vec![timer.clone()],
                    ..Default::default()
                };
                let outcome = self
                    .commit(self.next_offset, version, effects, (0, 0), None)
                    .await;
                if matches!(outcome, Outcome::Committed) {
                    warn!(
                        domain = timer.domain.name(),
                        due_ms = timer.due_ms,
                        topic = %self.spec.dead_letter_topic,
                        "timer dead-lettered: {failure}"
                    );
                    self.report.emit(Event::DeadLettered);
                }
                outcome
            }
        }
    }

    /// Reports a failed call, drops the instance if the failure may have
    /// left its memory corrupt, and says what failed as the policy sees it.
    fn failed(
        &mut self,
        failure: &BatchFailure,
        reason: &str,
        version: &Arc<PluginVersion>,
    ) -> Failure {
        self.report.emit(Event::Failed {
            digest: &version.digest,
            kind: failure.kind(),
            reason,
        });
        if failure.discards_instance() {
            // Guest memory may be corrupt after a trap: the next attempt
            // starts from a fresh instance of the same version.
            self.instance = None;
        }
        match failure {
            BatchFailure::Handler(HandlerError::Fatal(_)) => Failure::Fatal,
            BatchFailure::Handler(HandlerError::Poison(p)) => Failure::Poison(p.index as usize),
            _ => Failure::Other,
        }
    }

    /// Decides what a failed batch leads to, per the route's error policy.
    async fn on_failure(
        &mut self,
        failure: BatchFailure,
        batch: &Batch,
        version: &Arc<PluginVersion>,
    ) -> Outcome {
        let reason = failure.to_string();
        let kind = self.failed(&failure, &reason, version);
        let offsets = batch.offsets();
        let was_isolating = self.attempts.isolating.is_some();
        let (decision, attempts) = policy::decide(kind, &offsets, self.attempts, &self.spec.errors);
        self.attempts = attempts;
        match decision {
            Decision::Retry { delay } if !was_isolating && attempts.isolating.is_some() => {
                Outcome::Retry(format!("{reason}; isolating the failing record"), delay)
            }
            Decision::Retry { delay } => Outcome::Retry(reason, delay),
            Decision::DeadLetter => self.dead_letter(&batch.record(0), version, &failure).await,
            Decision::Pause(cause) => Outcome::Pause(format!("{reason}{cause}")),
        }
    }

    /// Writes `record` to the dead-letter topic in the checkpoint that moves
    /// the partition past it.
    async fn dead_letter(
        &mut self,
        record: &StreamRecord,
        version: &Arc<PluginVersion>,
        failure: &BatchFailure,
    ) -> Outcome {
        let origin = dead_letter::Origin {
            plugin: &self.spec.plugin,
            version: &version.digest,
            kind: failure.kind(),
            message: &failure.to_string(),
        };
        let effects = BatchEffects {
            outputs: vec![dead_letter::dead_letter(
                record,
                &self.spec.dead_letter_topic,
                &origin,
            )],
            ..Default::default()
        };
        // The record was consumed (one in) but the handler emitted nothing.
        let outcome = self
            .commit(record.offset + 1, version, effects, (1, 0), None)
            .await;
        if matches!(outcome, Outcome::Committed) {
            warn!(
                offset = record.offset,
                topic = %self.spec.dead_letter_topic,
                "record dead-lettered: {failure}"
            );
            self.report.emit(Event::DeadLettered);
            self.attempts = policy::committed(self.attempts, record.offset + 1);
        }
        outcome
    }

    /// One checkpoint: effects, offset and version in one transaction. It
    /// starts at the committed offset, not at the first record's: Kafka
    /// offsets may have gaps (compaction, transaction markers).
    async fn commit(
        &mut self,
        next_offset: u64,
        version: &Arc<PluginVersion>,
        mut effects: BatchEffects,
        (handled, emitted): (u64, u64),
        firing_seq: Option<u32>,
    ) -> Outcome {
        let spec = &self.spec;
        if spec.origin_headers && self.source.changelog().is_none() {
            for (index, output) in effects.outputs.iter_mut().enumerate() {
                // Dead letters carry their own `linecook.source.*`.
                if output.topic != spec.dead_letter_topic {
                    output.headers.extend(crate::outbox::origin_headers::of(
                        &spec.topic.name,
                        spec.partition,
                        self.next_offset,
                        index as u64,
                    ));
                }
            }
        }
        let started = Instant::now();
        let timers_changed = !effects.timers.is_empty() || !effects.fired.is_empty();
        let expiries_added = !effects.ttl.is_empty();
        let watermark = effects.watermark;
        // Other partitions' batches ready now commit in the same transaction.
        let grouped = spec
            .store
            .commit_grouped_async(OwnedCommit {
                topic: spec.topic.clone(),
                partition: spec.partition,
                first_offset: self.next_offset,
                next_offset,
                version: version.digest.clone(),
                effects,
                changelog: self.source.changelog().map(str::to_owned),
                firing_seq,
            })
            .instrument(tracing::debug_span!("checkpoint"))
            .await;
        if let Some(batches) = grouped.wrote {
            self.report.emit(Event::GroupCommit { batches });
        }
        match grouped.result {
            Ok(()) => {
                // Timers changed: count them again (a read). The watermark
                // alone, which moves with nearly every batch, is known here.
                if expiries_added {
                    self.next_expiry = None;
                }
                if timers_changed {
                    self.report_timers();
                } else if let Some(watermark) = watermark {
                    self.report.emit(Event::Watermark(watermark));
                }
                self.report.emit(Event::Committed {
                    digest: &version.digest,
                    handled,
                    emitted,
                    took: started.elapsed(),
                });
                self.next_offset = next_offset;
                self.commit_failures = 0;
                self.last_batch_end = Some(Instant::now());
                self.idle_since_batch = Duration::ZERO;
                Outcome::Committed
            }
            Err(StoreError::UnknownTopic(topic)) => {
                let reason = format!(
                    "the batch writes to topic `{topic}`, which does not exist; create it and the batch is retried"
                );
                self.commit_failures += 1;
                if self.commit_failures == spec.errors.commit_retries.max(1) {
                    self.report.emit(Event::CannotCommit {
                        digest: &version.digest,
                        reason: format!("{} checkpoints failed: {reason}", self.commit_failures),
                    });
                }
                // Backs off like a failing batch: until someone creates the
                // topic, this repeats.
                let delay = policy::backoff(self.commit_failures, &spec.errors).max(HOST_RETRY);
                Outcome::Retry(reason, delay)
            }
            Err(e @ StoreError::CheckpointConflict { .. }) => Outcome::Pause(e.to_string()),
            Err(e) => {
                error!("checkpoint failed, nothing of the batch was committed: {e}");
                Outcome::Retry(
                    format!("checkpoint failed, nothing was committed: {e}"),
                    HOST_RETRY,
                )
            }
        }
    }

    /// Parks until the worker is cancelled, a new version is published, a
    /// resume is asked for, `timeout` passes, or (with `Wake::AnyChange`)
    /// records are appended.
    async fn wait(&mut self, timeout: Option<Duration>, wake: Wake) {
        let spec = &self.spec;
        let appends = &mut self.appends;
        let resets = &mut self.resets;
        let mut versions = spec.versions.clone();
        let mut resume = spec.resume.clone();
        let next_ready = self.next.as_ref().map(|n| n.ready.clone());
        self.reset_waiting = async {
            let next_ready = async {
                match next_ready {
                    Some(ready) => ready.notified().await,
                    None => std::future::pending().await,
                }
            };
            let sleep = tokio::time::sleep(timeout.unwrap_or(Duration::from_secs(3600)));
            let appended = async {
                match wake {
                    Wake::AnyChange => {
                        let _ = appends.changed().await;
                    }
                    Wake::VersionOrCancel => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = spec.cancel.cancelled() => None,
                _ = appended => None,
                _ = versions.changed() => None,
                _ = resume.changed() => None,
                _ = next_ready => None,
                request = resets.recv() => request,
                _ = sleep => None,
            }
        }
        .await;
    }
}

/// Whether to read the log at `now`, (next offset, append signal's value):
/// unless the last read found nothing at that offset and the source, which
/// signals every append, signalled none since. An idle partition otherwise
/// reads the log on every wake-up.
fn read_needed(signals_every_append: bool, empty_at: Option<(u64, u64)>, now: (u64, u64)) -> bool {
    !(signals_every_append && empty_at == Some(now))
}

/// How long until expired state should be swept (`Some(ZERO)`: now): at
/// most every `SWEEP_EVERY`, and only once an expiry may have passed —
/// never when the partition is known to have none (`next_expiry`:
/// `Worker::next_expiry`).
fn sweep_in(since_last: Duration, next_expiry: Option<Option<i64>>, now: i64) -> Option<Duration> {
    let cadence = SWEEP_EVERY.saturating_sub(since_last);
    match next_expiry {
        None => Some(cadence),
        Some(None) => None,
        Some(Some(at)) => {
            Some(cadence.max(Duration::from_millis(at.saturating_sub(now).max(0) as u64)))
        }
    }
}

/// How long an idle worker sleeps (`None`: until a signal wakes it — an
/// append, a version, a reset, a resume, the end): until a processing-time
/// timer is due (`timer_in`, at most `IDLE_POLL`, as the clock may move)
/// or a sweep (`sweep_in`), and no longer than `IDLE_POLL` with a source
/// whose appends are not all signalled. An idle partition with neither
/// costs nothing: a thousand of them used to wake twice a second each.
fn idle_wait(
    signals_every_append: bool,
    timer_in: Option<Duration>,
    sweep_in: Option<Duration>,
) -> Option<Duration> {
    let poll = (!signals_every_append).then_some(IDLE_POLL);
    [timer_in.map(|t| t.min(IDLE_POLL)), sweep_in, poll]
        .into_iter()
        .flatten()
        .min()
}

/// Whether the store must be read for timers: unless the worker knows the
/// partition has none.
fn timers_may_be_pending(known: Option<u64>) -> bool {
    known != Some(0)
}

/// A log record as the handler receives it (moved, not copied).
pub fn to_stream_record(topic: &str, r: LogRecord) -> StreamRecord {
    StreamRecord {
        topic: topic.to_owned(),
        partition: r.partition,
        offset: r.offset,
        timestamp_ms: r.timestamp_ms,
        key: r.key,
        value: r.value,
        headers: r
            .headers
            .into_iter()
            .map(|(key, value)| Header { key, value })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::{IDLE_POLL, SWEEP_EVERY, idle_wait, read_needed, sweep_in, timers_may_be_pending};
    use std::time::Duration;

    #[test]
    fn an_offset_that_read_empty_is_read_again_only_after_an_append() {
        // Read empty at 7 with the signal at 2, nothing appended since.
        assert!(!read_needed(true, Some((7, 2)), (7, 2)));
        assert!(
            read_needed(true, Some((7, 2)), (7, 3)),
            "an append was signalled"
        );
        assert!(
            read_needed(true, Some((7, 2)), (3, 2)),
            "a reset moved the offset"
        );
        assert!(
            read_needed(true, None, (7, 2)),
            "the last read found records"
        );
        assert!(
            read_needed(false, Some((7, 2)), (7, 2)),
            "a source that may not signal every record (Kafka)"
        );
    }

    #[test]
    fn timers_are_read_unless_known_to_be_none() {
        assert!(
            timers_may_be_pending(None),
            "never read, or the read failed"
        );
        assert!(timers_may_be_pending(Some(3)));
        assert!(!timers_may_be_pending(Some(0)));
    }

    #[test]
    fn a_sweep_is_due_once_an_expiry_may_have_passed_and_at_most_every_second() {
        let ms = Duration::from_millis;
        let now = 10_000;
        // Unknown: on the cadence.
        assert_eq!(sweep_in(ms(0), None, now), Some(SWEEP_EVERY));
        assert_eq!(sweep_in(ms(400), None, now), Some(ms(600)));
        assert_eq!(sweep_in(ms(1500), None, now), Some(Duration::ZERO));
        // None left: never.
        assert_eq!(sweep_in(ms(60_000), Some(None), now), None);
        // One pending: when it passes, not before the cadence allows.
        assert_eq!(
            sweep_in(ms(1500), Some(Some(now + 5000)), now),
            Some(ms(5000))
        );
        assert_eq!(
            sweep_in(ms(1500), Some(Some(now - 1)), now),
            Some(Duration::ZERO)
        );
        assert_eq!(sweep_in(ms(200), Some(Some(now - 1)), now), Some(ms(800)));
    }

    #[test]
    fn an_idle_partition_sleeps_until_signalled_unless_something_is_due() {
        let ms = Duration::from_millis;
        // The embedded log signals every append: nothing due, no timeout.
        assert_eq!(idle_wait(true, None, None), None);
        assert_eq!(idle_wait(true, Some(ms(30)), None), Some(ms(30)));
        assert_eq!(idle_wait(true, None, Some(ms(700))), Some(ms(700)));
        assert_eq!(idle_wait(true, Some(ms(90)), Some(ms(70))), Some(ms(70)));
        // A timer far off is looked at again within the poll.
        assert_eq!(idle_wait(true, Some(ms(60_000)), None), Some(IDLE_POLL));
        // A source that does not signal every append is polled.
        assert_eq!(idle_wait(false, None, None), Some(IDLE_POLL));
        assert_eq!(idle_wait(false, None, Some(ms(5))), Some(ms(5)));
    }
}
