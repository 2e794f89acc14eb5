//! A partition worker: owns one partition of a routed topic and its handler
//! instance. Loop: read a batch from the checkpointed offset → `handle` →
//! checkpoint → between batches, adopt the target plugin version.
//!
//! A worker runs on its own OS thread: `handle` and the redb commit are
//! blocking, CPU- or fsync-bound work, and a partition's batches are strictly
//! sequential anyway. It parks on the tokio runtime only to wait.
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

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::checkpoint::BatchCommit;
use crate::config::{ErrorPolicy, Limits};
use crate::log::TopicInfo;
use crate::metrics::{Metrics, PartitionLabels};
use crate::plugins::PluginVersion;
use crate::policy::{self, Attempts, Decision, Failure};
use crate::record::{BatchEffects, LogRecord};
use crate::rollout::WorkerEvent;
use crate::runtime::bindings::{HandlerError, Header, StreamRecord};
use crate::runtime::{BatchFailure, Instance};
use crate::source::{PartitionCtx, Source};
use crate::status::{Live, PartitionState};
use crate::store::{Store, StoreError};

/// How long an idle worker sleeps between checks when nothing wakes it.
const IDLE_POLL: Duration = Duration::from_millis(500);
/// Backoff for failures outside the handler (storage, missing topic).
const HOST_RETRY: Duration = Duration::from_millis(500);

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
    /// What to do with failed batches.
    pub errors: ErrorPolicy,
    /// Where isolated records go.
    pub dead_letter_topic: String,
    /// The version this partition should run, set by the route's rollout.
    pub versions: watch::Receiver<Arc<PluginVersion>>,
    /// Where the worker reports swaps and batch outcomes to the rollout.
    pub events: mpsc::UnboundedSender<WorkerEvent>,
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

/// Starts the worker on its own thread, reading from `source`.
pub fn spawn(
    spec: WorkerSpec,
    source: Box<dyn Source>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("lc-{}-{}", spec.topic.name, spec.partition))
        .spawn(move || Worker::new(spec, source).run())
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

mod dead_letter;
mod report;
mod swap;

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
    swap_pending: bool,
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
        }
    }

    fn run(mut self) {
        let span = tracing::info_span!("partition", topic = %self.spec.topic.name, partition = self.spec.partition);
        let _entered = span.enter();
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
                self.spec.rt.block_on(self.spec.cancel.cancelled());
                return;
            }
        }
        self.report.emit(Event::Owned);
        match self.source.prepare(&ctx(&self.spec), self.next_offset) {
            Some(offset) => self.next_offset = offset,
            None => {
                self.report.emit(Event::Released);
                return;
            }
        }
        debug!(offset = self.next_offset, "partition assigned");
        let mut paused = false;
        self.spec.resume.borrow_and_update();
        while !self.spec.cancel.is_cancelled() {
            if self.adopt_newest() {
                paused = false;
            }
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
                self.wait(None, Wake::VersionOrCancel);
                continue;
            }
            match self.process_batch() {
                Outcome::Committed => {}
                Outcome::Idle => {
                    let idle = Instant::now();
                    self.wait(Some(IDLE_POLL), Wake::AnyChange);
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
                        self.wait(Some(delay), Wake::VersionOrCancel);
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

    fn process_batch(&mut self) -> Outcome {
        // Mark appends seen before reading, so an append racing the read
        // still wakes the wait that follows an empty read.
        self.appends.borrow_and_update();
        let window = self
            .attempts
            .isolating
            .map_or(self.spec.max_batch, |i| i.window)
            .max(1);
        let records = match self
            .source
            .read(&ctx(&self.spec), self.next_offset, window as usize)
        {
            Ok(records) if records.is_empty() => return Outcome::Idle,
            Ok(records) => records,
            Err(e) => return Outcome::Retry(format!("reading the log failed: {e}"), HOST_RETRY),
        };
        if std::mem::take(&mut self.swap_pending)
            && let Some(end) = self.last_batch_end
        {
            let pause = end.elapsed().saturating_sub(self.idle_since_batch);
            self.report.emit(Event::SwapPause(pause));
        }
        let batch: Vec<StreamRecord> = records
            .into_iter()
            .map(|r| to_stream_record(&self.spec.topic.name, r))
            .collect();
        let reader = match self
            .spec
            .store
            .partition_state(&self.spec.topic, self.spec.partition)
        {
            Ok(reader) => reader,
            Err(e) => return Outcome::Retry(format!("reading state failed: {e}"), HOST_RETRY),
        };
        let (instance, version) = self.instance.as_mut().expect("checked by caller");
        let version = version.clone();
        let first = batch[0].offset;
        let last = batch.last().map_or(first, |r| r.offset);
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
        let _batch = span.enter();
        let handled =
            tracing::debug_span!("handle").in_scope(|| instance.handle(&batch, Box::new(reader)));
        self.report.emit(Event::Handled {
            memory_bytes: instance.memory_bytes(),
            took: handled.as_ref().ok().map(|(_, took)| *took),
        });
        match handled {
            Ok((effects, handle_time)) => {
                let next = last + 1;
                let emitted = effects.outputs.len() as u64;
                let outcome = self.commit(next, &version, &effects, batch.len() as u64, emitted);
                if matches!(outcome, Outcome::Committed) {
                    debug!(
                        first_offset = first,
                        next_offset = next,
                        outputs = effects.outputs.len(),
                        ?handle_time,
                        "batch committed"
                    );
                    self.attempts = policy::committed(self.attempts, next);
                }
                outcome
            }
            Err(failure) => self.on_failure(failure, &batch, &version),
        }
    }

    /// Decides what a failed batch leads to, per the route's error policy.
    fn on_failure(
        &mut self,
        failure: BatchFailure,
        records: &[StreamRecord],
        version: &Arc<PluginVersion>,
    ) -> Outcome {
        let reason = failure.to_string();
        self.report.emit(Event::Failed {
            digest: &version.digest,
            kind: failure.kind(),
            reason: &reason,
        });
        if failure.discards_instance() {
            // Guest memory may be corrupt after a trap: the next attempt
            // starts from a fresh instance of the same version.
            self.instance = None;
        }
        let kind = match &failure {
            BatchFailure::Handler(HandlerError::Fatal(_)) => Failure::Fatal,
            BatchFailure::Handler(HandlerError::Poison(p)) => Failure::Poison(p.index as usize),
            _ => Failure::Other,
        };
        let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
        let was_isolating = self.attempts.isolating.is_some();
        let (decision, attempts) = policy::decide(kind, &offsets, self.attempts, &self.spec.errors);
        self.attempts = attempts;
        match decision {
            Decision::Retry { delay } if !was_isolating && attempts.isolating.is_some() => {
                Outcome::Retry(format!("{reason}; isolating the failing record"), delay)
            }
            Decision::Retry { delay } => Outcome::Retry(reason, delay),
            Decision::DeadLetter => self.dead_letter(&records[0], version, &failure),
            Decision::Pause(cause) => Outcome::Pause(format!("{reason}{cause}")),
        }
    }

    /// Writes `record` to the dead-letter topic in the checkpoint that moves
    /// the partition past it.
    fn dead_letter(
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
            state: Default::default(),
            outputs: vec![dead_letter::dead_letter(
                record,
                &self.spec.dead_letter_topic,
                &origin,
            )],
        };
        // The record was consumed (one in) but the handler emitted nothing.
        let outcome = self.commit(record.offset + 1, version, &effects, 1, 0);
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
    fn commit(
        &mut self,
        next_offset: u64,
        version: &Arc<PluginVersion>,
        effects: &BatchEffects,
        handled: u64,
        emitted: u64,
    ) -> Outcome {
        let spec = &self.spec;
        let started = Instant::now();
        let _checkpoint = tracing::debug_span!("checkpoint").entered();
        let commit = spec.store.commit_batch(BatchCommit {
            topic: &spec.topic,
            partition: spec.partition,
            first_offset: self.next_offset,
            next_offset,
            version: &version.digest,
            effects,
            changelog: self.source.changelog(),
        });
        match commit {
            Ok(()) => {
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
    fn wait(&mut self, timeout: Option<Duration>, wake: Wake) {
        let spec = &self.spec;
        let appends = &mut self.appends;
        let mut versions = spec.versions.clone();
        let mut resume = spec.resume.clone();
        spec.rt.block_on(async {
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
                _ = spec.cancel.cancelled() => {}
                _ = appended => {}
                _ = versions.changed() => {}
                _ = resume.changed() => {}
                _ = sleep => {}
            }
        });
    }
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
