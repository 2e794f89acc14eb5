//! Per-route rollout of new plugin versions: which partition runs which
//! version, decided from what the registry publishes and what the partition
//! workers report.
//!
//! Each partition worker follows its own `watch` channel of target versions
//! and swaps at its next batch boundary (instantiate + `init` first). The
//! controller moves targets:
//! - `all`: every partition targets the new version at once. If any
//!   partition's `init` refuses it, the version is rejected and every
//!   partition goes back to the previous one.
//! - `canary`: the lowest-numbered N partitions target it first. When they
//!   have committed M batches with it and no error, every partition follows;
//!   a handler error, trap or exceeded limit on a canary rolls the canaries
//!   back and marks the version rolled back.
//!
//! One story for the two words: a version is **rejected** when it never
//! handled a batch (not a usable component, or its `init` failed on any
//! partition); **rolled back** when it handled batches and failed there —
//! on a canary, or at any stage when its batches cannot be committed.
//!
//! "Every partition" means every partition this member owns right now: in a
//! Kafka group the other members roll out on their own, and a partition
//! assigned mid-rollout starts on its current target.
//!
//! Group membership, assignments and offsets are never touched: a swap is
//! invisible to the group.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Rollout;
use crate::plugins::{PluginVersion, Registry, VersionState};

/// What a partition worker tells its route's rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerEvent {
    /// This member now owns `partition` and runs a worker for it.
    Owned {
        /// Partition.
        partition: u32,
    },
    /// This member gave `partition` back.
    Released {
        /// Partition.
        partition: u32,
    },
    /// The partition now runs `digest`.
    Adopted {
        /// Partition.
        partition: u32,
        /// Version.
        digest: String,
    },
    /// `init` of `digest` failed on the partition; it kept its old version.
    Refused {
        /// Partition.
        partition: u32,
        /// Version.
        digest: String,
        /// Why.
        reason: String,
    },
    /// A batch handled by `digest` was committed.
    Committed {
        /// Partition.
        partition: u32,
        /// Version.
        digest: String,
    },
    /// Batches handled by `digest` could not be committed, `commit_retries`
    /// times in a row, because of what they emitted.
    CannotCommit {
        /// Partition.
        partition: u32,
        /// Version.
        digest: String,
        /// Why.
        reason: String,
    },
    /// A batch handled by `digest` failed (error or trap).
    Failed {
        /// Partition.
        partition: u32,
        /// Version.
        digest: String,
        /// Why.
        reason: String,
    },
}

/// A route's rollout: the channels its workers follow and report to.
#[derive(Debug)]
pub struct RouteRollout {
    targets: BTreeMap<u32, watch::Receiver<Arc<PluginVersion>>>,
    events: mpsc::UnboundedSender<WorkerEvent>,
}

impl RouteRollout {
    /// The target versions `partition` follows.
    pub fn target(&self, partition: u32) -> Option<watch::Receiver<Arc<PluginVersion>>> {
        self.targets.get(&partition).cloned()
    }

    /// Where `partition`'s worker reports.
    pub fn events(&self) -> mpsc::UnboundedSender<WorkerEvent> {
        self.events.clone()
    }
}

/// Starts the rollout controller of one route over its owned `partitions`,
/// following `versions`, the registry's newest versions of the route's plugin.
pub fn start(
    topic: &str,
    policy: Rollout,
    partitions: &[u32],
    registry: Arc<Registry>,
    versions: watch::Receiver<Arc<PluginVersion>>,
    cancel: CancellationToken,
) -> RouteRollout {
    let stable = versions.borrow().clone();
    let mut senders = BTreeMap::new();
    let mut targets = BTreeMap::new();
    for &p in partitions {
        let (tx, rx) = watch::channel(stable.clone());
        senders.insert(p, tx);
        targets.insert(p, rx);
    }
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let controller = Controller {
        topic: topic.to_owned(),
        policy,
        registry,
        targets: senders,
        owned: BTreeSet::new(),
        stable,
        rollout: None,
    };
    tokio::spawn(controller.run(versions, events_rx, cancel));
    RouteRollout {
        targets,
        events: events_tx,
    }
}

struct InFlight {
    candidate: Arc<PluginVersion>,
    /// Canary partitions, while still in the canary phase.
    canaries: Option<BTreeSet<u32>>,
    canary_batches: u64,
    adopted: BTreeSet<u32>,
}

struct Controller {
    topic: String,
    policy: Rollout,
    registry: Arc<Registry>,
    targets: BTreeMap<u32, watch::Sender<Arc<PluginVersion>>>,
    /// Partitions with a running worker.
    owned: BTreeSet<u32>,
    stable: Arc<PluginVersion>,
    rollout: Option<InFlight>,
}

impl Controller {
    async fn run(
        mut self,
        mut versions: watch::Receiver<Arc<PluginVersion>>,
        mut events: mpsc::UnboundedReceiver<WorkerEvent>,
        cancel: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                changed = versions.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let newest = versions.borrow_and_update().clone();
                    self.on_published(newest);
                }
                Some(event) = events.recv() => self.on_event(event),
            }
        }
    }

    fn on_published(&mut self, version: Arc<PluginVersion>) {
        if let Some(previous) = self.rollout.take()
            && previous.candidate.digest != version.digest
        {
            self.set_state(
                &previous.candidate,
                VersionState::Retired,
                Some(format!("superseded by {}", version.short_digest())),
            );
        }
        if version.digest == self.stable.digest {
            // Back to the version that was serving: every partition returns.
            self.retarget(self.targets.keys().copied().collect(), &self.stable.clone());
            self.set_state(&self.stable.clone(), VersionState::Active, None);
            return;
        }
        match self.policy {
            Rollout::All => self.roll_out_to_all(version, BTreeSet::new()),
            Rollout::Canary { canary, .. } => {
                let canaries: BTreeSet<u32> =
                    self.owned.iter().copied().take(canary as usize).collect();
                if canaries.is_empty() {
                    // Nothing owned to try it on: it becomes the version
                    // partitions start with.
                    self.roll_out_to_all(version, BTreeSet::new());
                    return;
                }
                info!(
                    topic = %self.topic,
                    plugin = %version.name,
                    version = version.short_digest(),
                    ?canaries,
                    "canary rollout started"
                );
                self.retarget(canaries.clone(), &version);
                self.set_state(&version, VersionState::Canary, None);
                self.rollout = Some(InFlight {
                    candidate: version,
                    canaries: Some(canaries),
                    canary_batches: 0,
                    adopted: BTreeSet::new(),
                });
            }
        }
    }

    fn roll_out_to_all(&mut self, version: Arc<PluginVersion>, adopted: BTreeSet<u32>) {
        info!(
            topic = %self.topic,
            plugin = %version.name,
            version = version.short_digest(),
            "rolling out to every partition"
        );
        self.retarget(self.targets.keys().copied().collect(), &version);
        self.set_state(&version, VersionState::Active, None);
        self.rollout = Some(InFlight {
            candidate: version,
            canaries: None,
            canary_batches: 0,
            adopted,
        });
        self.finish_if_done();
    }

    fn on_event(&mut self, event: WorkerEvent) {
        tracing::trace!(topic = %self.topic, ?event, "rollout event");
        match event {
            WorkerEvent::Owned { partition } => {
                self.owned.insert(partition);
                return;
            }
            WorkerEvent::Released { partition } => {
                self.owned.remove(&partition);
                if let Some(flight) = self.rollout.as_mut() {
                    flight.adopted.remove(&partition);
                    if flight
                        .canaries
                        .as_ref()
                        .is_some_and(|c| c.contains(&partition))
                    {
                        // A canary left with the partition: judge the version
                        // on the canaries still owned, or on all if none is.
                        let canaries = flight.canaries.as_mut().expect("checked");
                        canaries.remove(&partition);
                        if canaries.is_empty() {
                            let flight = self.rollout.take().expect("in flight");
                            self.roll_out_to_all(flight.candidate, flight.adopted);
                            return;
                        }
                    }
                }
                self.finish_if_done();
                return;
            }
            _ => {}
        }
        let Some(flight) = self.rollout.as_mut() else {
            if let WorkerEvent::Refused { digest, reason, .. } = &event
                && *digest == self.stable.digest
            {
                let stable = self.stable.clone();
                self.set_state(&stable, VersionState::Rejected, Some(reason.clone()));
            }
            return;
        };
        match event {
            WorkerEvent::Adopted { partition, digest } if digest == flight.candidate.digest => {
                flight.adopted.insert(partition);
                self.finish_if_done();
            }
            WorkerEvent::Committed { partition, digest } if digest == flight.candidate.digest => {
                let Rollout::Canary {
                    promote_after_batches,
                    ..
                } = self.policy
                else {
                    return;
                };
                let Some(canaries) = &flight.canaries else {
                    return;
                };
                if canaries.contains(&partition) {
                    flight.canary_batches += 1;
                    if flight.canary_batches >= promote_after_batches {
                        let flight = self.rollout.take().expect("in flight");
                        info!(
                            topic = %self.topic,
                            version = flight.candidate.short_digest(),
                            batches = flight.canary_batches,
                            "canaries healthy: promoting"
                        );
                        self.roll_out_to_all(flight.candidate, flight.adopted);
                    }
                }
            }
            WorkerEvent::Failed {
                partition,
                digest,
                reason,
            } if digest == flight.candidate.digest
                && flight
                    .canaries
                    .as_ref()
                    .is_some_and(|c| c.contains(&partition)) =>
            {
                let reason = format!("failed on canary partition {partition}: {reason}");
                self.abort(VersionState::RolledBack, reason);
            }
            // A version whose batches cannot be committed is rolled back at
            // any stage of its rollout: it would stall every partition.
            WorkerEvent::CannotCommit {
                partition,
                digest,
                reason,
            } if digest == flight.candidate.digest => {
                self.abort(
                    VersionState::RolledBack,
                    format!("cannot commit on partition {partition}: {reason}"),
                );
            }
            WorkerEvent::Refused {
                partition,
                digest,
                reason,
            } if digest == flight.candidate.digest => {
                // It never handled a batch: rejected, at any stage.
                self.abort(
                    VersionState::Rejected,
                    format!("init failed on partition {partition}: {reason}"),
                );
            }
            _ => {}
        }
    }

    /// Sends every partition back to the stable version.
    fn abort(&mut self, state: VersionState, reason: String) {
        let flight = self.rollout.take().expect("in flight");
        error!(
            topic = %self.topic,
            plugin = %flight.candidate.name,
            version = flight.candidate.short_digest(),
            back_to = self.stable.short_digest(),
            "version {}: {reason}",
            if state == VersionState::RolledBack { "rolled back" } else { "rejected" }
        );
        self.set_state(&flight.candidate, state, Some(reason));
        let stable = self.stable.clone();
        self.retarget(self.targets.keys().copied().collect(), &stable);
        self.set_state(&stable, VersionState::Active, None);
    }

    fn finish_if_done(&mut self) {
        let Some(flight) = &self.rollout else { return };
        if flight.canaries.is_some() || !self.owned.is_subset(&flight.adopted) {
            return;
        }
        let flight = self.rollout.take().expect("in flight");
        let old = std::mem::replace(&mut self.stable, flight.candidate);
        if old.digest != self.stable.digest {
            self.set_state(&old, VersionState::Retired, None);
        }
        info!(
            topic = %self.topic,
            plugin = %self.stable.name,
            version = self.stable.short_digest(),
            "every partition runs the new version"
        );
    }

    fn retarget(&self, partitions: BTreeSet<u32>, version: &Arc<PluginVersion>) {
        for p in partitions {
            if let Some(tx) = self.targets.get(&p) {
                tx.send_replace(version.clone());
            } else {
                warn!(partition = p, "no such partition in rollout");
            }
        }
    }

    fn set_state(&self, version: &PluginVersion, state: VersionState, reason: Option<String>) {
        self.registry
            .set_state(&version.name, &version.digest, state, reason);
    }
}
