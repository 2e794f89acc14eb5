//! A partition worker: owns one partition of a routed topic and its handler
//! instance. Loop: read a batch from the checkpointed offset → `handle` →
//! checkpoint → between batches, adopt a newer plugin version.
//!
//! A worker runs on its own OS thread: `handle` and the redb commit are
//! blocking, CPU- or fsync-bound work, and a partition's batches are strictly
//! sequential anyway. It parks on the tokio runtime only to wait.
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
use crate::log::TopicInfo;
use crate::plugins::{PluginVersion, short};
use crate::record::LogRecord;
use crate::rollout::WorkerEvent;
use crate::runtime::bindings::{Context, HandlerError, Header, StreamRecord};
use crate::runtime::{BatchFailure, Instance, Labels};
use crate::status::{Live, PartitionState};
use crate::store::{Store, StoreError};

/// First retry delay after a failed batch; doubles per attempt.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How long an idle worker sleeps between checks when nothing wakes it.
const IDLE_POLL: Duration = Duration::from_millis(500);

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
    /// The version this partition should run, set by the route's rollout.
    pub versions: watch::Receiver<Arc<PluginVersion>>,
    /// Where the worker reports swaps and batch outcomes to the rollout.
    pub events: mpsc::UnboundedSender<WorkerEvent>,
    /// Most records per batch.
    pub max_batch: u32,
    /// Status shared with the admin API.
    pub live: Arc<Live>,
    /// Cancelled to release the partition: the worker finishes the batch in
    /// flight, checkpoints it and returns.
    pub cancel: CancellationToken,
    /// Runtime to park on while waiting.
    pub rt: tokio::runtime::Handle,
}

/// Starts the worker on its own thread.
pub fn spawn(spec: WorkerSpec) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("lc-{}-{}", spec.topic.name, spec.partition))
        .spawn(move || Worker::new(spec).run())
}

struct Worker {
    spec: WorkerSpec,
    appends: watch::Receiver<u64>,
    instance: Option<(Instance, Arc<PluginVersion>)>,
    /// A version whose `init` failed here; not tried again.
    refused: Option<String>,
    next_offset: u64,
    attempts: u32,
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
    /// Backing off or paused: only a new version or release ends it early.
    VersionOrCancel,
}

enum Outcome {
    Committed,
    Idle,
    Retry(String),
    Pause(String),
}

impl Worker {
    fn new(spec: WorkerSpec) -> Worker {
        let appends = spec.store.subscribe_appends();
        Worker {
            spec,
            appends,
            instance: None,
            refused: None,
            next_offset: 0,
            attempts: 0,
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
                self.set_state(
                    PartitionState::Paused,
                    Some(format!("cannot read checkpoint: {e}")),
                );
                self.spec.rt.block_on(self.spec.cancel.cancelled());
                return;
            }
        }
        debug!(offset = self.next_offset, "partition assigned");
        let mut paused = false;
        while !self.spec.cancel.is_cancelled() {
            if self.adopt_newest() {
                paused = false;
            }
            if paused || self.instance.is_none() {
                self.wait(None, Wake::VersionOrCancel);
                continue;
            }
            match self.process_batch() {
                Outcome::Committed => self.attempts = 0,
                Outcome::Idle => {
                    let idle = Instant::now();
                    self.wait(Some(IDLE_POLL), Wake::AnyChange);
                    self.idle_since_batch += idle.elapsed();
                }
                Outcome::Retry(reason) => {
                    let delay = BACKOFF_BASE
                        .saturating_mul(1 << self.attempts.min(16))
                        .min(BACKOFF_MAX);
                    self.attempts += 1;
                    warn!(
                        attempt = self.attempts,
                        ?delay,
                        "batch at offset {} failed, will retry: {reason}",
                        self.next_offset
                    );
                    self.set_state(PartitionState::Retrying, Some(reason));
                    self.wait(Some(delay), Wake::VersionOrCancel);
                }
                Outcome::Pause(reason) => {
                    error!("partition paused at offset {}: {reason}", self.next_offset);
                    self.set_state(
                        PartitionState::Paused,
                        Some(format!(
                            "{reason} (deploy a new plugin version or restart to retry)"
                        )),
                    );
                    paused = true;
                }
            }
        }
        debug!(offset = self.next_offset, "partition released");
        self.spec
            .live
            .remove(&self.spec.topic.name, self.spec.partition);
    }

    /// Swaps in the target version if it differs from the running one:
    /// instantiate + `init` first, replace only on success. Returns whether a
    /// new instance was started.
    fn adopt_newest(&mut self) -> bool {
        // A fresh target (even of a digest refused before) deserves a try.
        let fresh = self.spec.versions.has_changed().unwrap_or(false);
        let newest = self.spec.versions.borrow_and_update().clone();
        if fresh {
            self.refused = None;
        }
        let running = self.instance.as_ref().map(|(_, v)| v.digest.clone());
        if running.as_deref() == Some(newest.digest.as_str()) {
            if fresh {
                self.report(WorkerEvent::Adopted {
                    partition: self.spec.partition,
                    digest: newest.digest.clone(),
                });
            }
            return false;
        }
        if self.refused.as_deref() == Some(newest.digest.as_str()) {
            return false;
        }
        if running.is_none() {
            self.set_state(PartitionState::Starting, None);
        }
        match self.start_instance(&newest) {
            Ok(instance) => {
                match &running {
                    Some(old) => {
                        info!(
                            "swapped {} {} -> {}",
                            newest.name,
                            short(old),
                            newest.short_digest()
                        );
                        self.swap_pending = true;
                    }
                    None => info!("running {} {}", newest.name, newest.short_digest()),
                }
                self.instance = Some((instance, newest.clone()));
                let digest = newest.digest.clone();
                let swapped = running.is_some();
                self.spec
                    .live
                    .update(&self.spec.topic.name, self.spec.partition, |l| {
                        l.version = Some(digest);
                        if swapped {
                            l.swaps += 1;
                        }
                        if l.state == PartitionState::Starting {
                            l.state = PartitionState::Running;
                            l.detail = None;
                        }
                    });
                self.report(WorkerEvent::Adopted {
                    partition: self.spec.partition,
                    digest: newest.digest.clone(),
                });
                true
            }
            Err(reason) => {
                error!(
                    "version {} of {} refused: {reason}",
                    newest.short_digest(),
                    newest.name
                );
                self.refused = Some(newest.digest.clone());
                self.report(WorkerEvent::Refused {
                    partition: self.spec.partition,
                    digest: newest.digest.clone(),
                    reason: reason.clone(),
                });
                if self.instance.is_none() {
                    self.set_state(
                        PartitionState::Paused,
                        Some(format!(
                            "{} {}: {reason}",
                            newest.name,
                            newest.short_digest()
                        )),
                    );
                }
                false
            }
        }
    }

    fn report(&self, event: WorkerEvent) {
        // The rollout outlives every worker; a send can only fail at
        // shutdown, when nobody needs the event.
        let _ = self.spec.events.send(event);
    }

    fn start_instance(&self, version: &PluginVersion) -> Result<Instance, String> {
        let spec = &self.spec;
        let reader = spec
            .store
            .partition_state(&spec.topic, spec.partition)
            .map_err(|e| e.to_string())?;
        let labels = Labels {
            plugin: spec.plugin.clone(),
            version: version.short_digest().to_owned(),
            topic: spec.topic.name.clone(),
            partition: spec.partition,
        };
        let context = Context {
            plugin: spec.plugin.clone(),
            version: version.digest.clone(),
            topic: spec.topic.name.clone(),
            partition: spec.partition,
            config: spec.config.clone(),
        };
        Instance::start(&version.prepared, labels, &context, Box::new(reader))
            .map_err(|e| e.to_string())
    }

    fn process_batch(&mut self) -> Outcome {
        let spec = &self.spec;
        // Mark appends seen before reading, so an append racing the read
        // still wakes the wait that follows an empty read.
        self.appends.borrow_and_update();
        let records = match spec.store.read(
            &spec.topic,
            spec.partition,
            self.next_offset,
            spec.max_batch as usize,
        ) {
            Ok(records) if records.is_empty() => return Outcome::Idle,
            Ok(records) => records,
            Err(e) => return Outcome::Retry(format!("reading the log failed: {e}")),
        };
        if std::mem::take(&mut self.swap_pending)
            && let Some(end) = self.last_batch_end
        {
            let pause = end.elapsed().saturating_sub(self.idle_since_batch);
            spec.live.update(&spec.topic.name, spec.partition, |l| {
                l.last_swap_pause_us = Some(pause.as_micros() as u64);
            });
        }
        let first_offset = self.next_offset;
        let next_offset = records.last().map_or(first_offset, |r| r.offset + 1);
        let count = records.len() as u64;
        let batch: Vec<StreamRecord> = records
            .into_iter()
            .map(|r| to_stream_record(&spec.topic.name, r))
            .collect();
        let reader = match spec.store.partition_state(&spec.topic, spec.partition) {
            Ok(reader) => reader,
            Err(e) => return Outcome::Retry(format!("reading state failed: {e}")),
        };
        let (instance, version) = self.instance.as_mut().expect("checked by caller");
        let (effects, handle_time) = match instance.handle(&batch, Box::new(reader)) {
            Ok(done) => done,
            Err(failure) => {
                let reason = failure.to_string();
                let _ = spec.events.send(WorkerEvent::Failed {
                    partition: spec.partition,
                    digest: version.digest.clone(),
                    reason: reason.clone(),
                });
                return match failure {
                    BatchFailure::Trap(_) => {
                        // Guest memory may be corrupt after a trap: start
                        // the next attempt from a fresh instance.
                        self.instance = None;
                        Outcome::Retry(reason)
                    }
                    BatchFailure::Handler(HandlerError::Retry(_)) => Outcome::Retry(reason),
                    BatchFailure::Handler(HandlerError::Fatal(_)) => Outcome::Pause(reason),
                    BatchFailure::Handler(HandlerError::Poison(_)) => Outcome::Pause(format!(
                        "{reason}; dead-lettering is not available yet, so the partition stops here"
                    )),
                };
            }
        };
        let commit = spec.store.commit_batch(BatchCommit {
            topic: &spec.topic,
            partition: spec.partition,
            first_offset,
            next_offset,
            version: &version.digest,
            effects: &effects,
        });
        match commit {
            Ok(()) => {
                debug!(
                    first_offset,
                    next_offset,
                    outputs = effects.outputs.len(),
                    ?handle_time,
                    "batch committed"
                );
                self.next_offset = next_offset;
                self.last_batch_end = Some(Instant::now());
                self.idle_since_batch = Duration::ZERO;
                let _ = spec.events.send(WorkerEvent::Committed {
                    partition: spec.partition,
                    digest: version.digest.clone(),
                });
                let digest = version.digest.clone();
                spec.live.update(&spec.topic.name, spec.partition, |l| {
                    l.state = PartitionState::Running;
                    l.detail = None;
                    l.version = Some(digest);
                    l.batches += 1;
                    l.records += count;
                });
                Outcome::Committed
            }
            Err(StoreError::UnknownTopic(topic)) => Outcome::Retry(format!(
                "the handler emitted to topic `{topic}`, which does not exist; create it and the batch is retried"
            )),
            Err(e @ StoreError::CheckpointConflict { .. }) => Outcome::Pause(e.to_string()),
            Err(e) => Outcome::Retry(format!("checkpoint failed, nothing was committed: {e}")),
        }
    }

    /// Parks until the worker is cancelled, a new version is published,
    /// `timeout` passes, or (with `Wake::AnyChange`) records are appended.
    fn wait(&mut self, timeout: Option<Duration>, wake: Wake) {
        let spec = &self.spec;
        let appends = &mut self.appends;
        let mut versions = spec.versions.clone();
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
                _ = sleep => {}
            }
        });
    }

    fn set_state(&self, state: PartitionState, detail: Option<String>) {
        self.spec
            .live
            .update(&self.spec.topic.name, self.spec.partition, |l| {
                l.state = state;
                l.detail = detail;
            });
    }
}

fn to_stream_record(topic: &str, r: LogRecord) -> StreamRecord {
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
