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
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Rollout;
use crate::plugins::{PluginVersion, Registry, VersionState, short};

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
    /// `digest`, running in shadow, handled a batch: how it compares.
    Shadowed {
        /// Partition.
        partition: u32,
        /// Version.
        digest: String,
        /// The batch's comparison (or, `skipped`, why not).
        batch: crate::shadow::Summary,
    },
    /// `digest` failed in shadow (init, error, trap, limit).
    ShadowFailed {
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

impl WorkerEvent {
    /// Whether the plan acts on this event with no rollout in flight. The
    /// others (a batch committed or failed, a version adopted) only count
    /// toward a rollout, so a worker sends them only while one is in
    /// flight: each send wakes the controller, and a host with many
    /// partitions would otherwise wake it for every batch.
    pub fn matters_between_rollouts(&self) -> bool {
        matches!(
            self,
            WorkerEvent::Owned { .. } | WorkerEvent::Released { .. } | WorkerEvent::Refused { .. }
        )
    }

    /// Whether, between rollouts, the plan may take this event at its next
    /// wake-up instead of now: ownership, which it only reads when a
    /// rollout starts.
    fn may_wait(&self) -> bool {
        matches!(
            self,
            WorkerEvent::Owned { .. } | WorkerEvent::Released { .. }
        )
    }

    /// Whether the plan acts on this event in `phase`, so that a worker
    /// sends it: each send can wake the controller. Commits count only
    /// toward a canary phase; during a rollout to every partition they
    /// would wake it for every batch of every partition, for nothing.
    pub fn wanted_in(&self, phase: Phase) -> bool {
        match phase {
            Phase::Between => self.matters_between_rollouts(),
            Phase::InFlight => !matches!(self, WorkerEvent::Committed { .. }),
            Phase::CountingCommits => true,
        }
    }
}

/// What the plan listens to, as the controller tells the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No rollout in flight.
    Between,
    /// A rollout in flight, its committed batches not counted.
    InFlight,
    /// A canary phase: committed batches count toward promotion.
    CountingCommits,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Between,
            1 => Phase::InFlight,
            _ => Phase::CountingCommits,
        }
    }
}

/// Where a partition's worker reports to its route's rollout.
#[derive(Debug, Clone)]
pub struct Events {
    tx: mpsc::UnboundedSender<WorkerEvent>,
    /// The plan's `Phase` (as `u8`). Set by the controller before it moves
    /// any target for a rollout, so a worker that adopts the candidate
    /// always sees it in flight; the controller sets it holding
    /// `waiting`'s lock.
    phase: Arc<AtomicU8>,
    /// Ownership changes between rollouts, for the controller to apply
    /// before whatever wakes it next. A send wakes the controller: a
    /// thousand partitions starting woke it a thousand times, two thirds of
    /// the context switches (and ~10% of the CPU) of a 200,000-record
    /// backlog's run over them.
    waiting: Arc<Mutex<Vec<WorkerEvent>>>,
}

impl Events {
    /// Sends `event` if the plan acts on it in its current phase; between
    /// rollouts an ownership change waits, unsent.
    pub fn send(&self, event: WorkerEvent) {
        if event.may_wait() {
            let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            // Under the lock the controller holds while it sets the phase
            // and takes what waits: an event is either taken then or sent
            // below, never left waiting through a rollout.
            if self.phase() == Phase::Between {
                waiting.push(event);
                return;
            }
        }
        if event.wanted_in(self.phase()) {
            // The controller outlives every worker; a send can only fail at
            // shutdown, when nobody needs the event.
            let _ = self.tx.send(event);
        }
    }

    fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }
}

/// A route's rollout: the channels its workers follow and report to.
#[derive(Debug)]
pub struct RouteRollout {
    targets: BTreeMap<u32, watch::Receiver<Arc<PluginVersion>>>,
    shadows: BTreeMap<u32, watch::Receiver<Option<Arc<PluginVersion>>>>,
    events: Events,
}

impl RouteRollout {
    /// The target versions `partition` follows.
    pub fn target(&self, partition: u32) -> Option<watch::Receiver<Arc<PluginVersion>>> {
        self.targets.get(&partition).cloned()
    }

    /// The version `partition` runs in shadow, if any.
    pub fn shadow(&self, partition: u32) -> Option<watch::Receiver<Option<Arc<PluginVersion>>>> {
        self.shadows.get(&partition).cloned()
    }

    /// Where `partition`'s worker reports.
    pub fn events(&self) -> Events {
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
    let mut shadow_senders = BTreeMap::new();
    let mut shadows = BTreeMap::new();
    for &p in partitions {
        let (tx, rx) = watch::channel(stable.clone());
        senders.insert(p, tx);
        targets.insert(p, rx);
        let (tx, rx) = watch::channel(None);
        shadow_senders.insert(p, tx);
        shadows.insert(p, rx);
    }
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let phase = Arc::new(AtomicU8::new(Phase::Between as u8));
    let waiting = Arc::new(Mutex::new(Vec::new()));
    let controller = Controller {
        plan: Plan::new(topic, policy, partitions, stable),
        registry,
        targets: senders,
        shadows: shadow_senders,
        phase: phase.clone(),
        waiting: waiting.clone(),
    };
    tokio::spawn(controller.run(versions, events_rx, cancel));
    RouteRollout {
        targets,
        shadows,
        events: Events {
            tx: events_tx,
            phase,
            waiting,
        },
    }
}

/// Carries out the plan: moves the partitions' targets and records version
/// states in the registry.
struct Controller {
    plan: Plan<Arc<PluginVersion>>,
    registry: Arc<Registry>,
    targets: BTreeMap<u32, watch::Sender<Arc<PluginVersion>>>,
    shadows: BTreeMap<u32, watch::Sender<Option<Arc<PluginVersion>>>>,
    /// What the workers' `Events` read.
    phase: Arc<AtomicU8>,
    /// Ownership changes the workers left for the next wake-up.
    waiting: Arc<Mutex<Vec<WorkerEvent>>>,
}

enum Wake {
    Published(Arc<PluginVersion>),
    Event(WorkerEvent),
}

impl Controller {
    /// Publishes whether a rollout is in flight, and applies the ownership
    /// changes that waited for it, until none is left.
    fn settle(&mut self, actions: &mut Vec<Action<Arc<PluginVersion>>>) {
        loop {
            let waited = {
                let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
                self.phase.store(self.plan.phase() as u8, Ordering::Release);
                std::mem::take(&mut *waiting)
            };
            if waited.is_empty() {
                return;
            }
            for event in waited {
                actions.extend(self.plan.on_event(event));
            }
        }
    }

    async fn run(
        mut self,
        mut versions: watch::Receiver<Arc<PluginVersion>>,
        mut events: mpsc::UnboundedReceiver<WorkerEvent>,
        cancel: CancellationToken,
    ) {
        loop {
            let wake = tokio::select! {
                _ = cancel.cancelled() => return,
                changed = versions.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    Wake::Published(versions.borrow_and_update().clone())
                }
                Some(event) = events.recv() => Wake::Event(event),
            };
            // Ownership changes first: they happened before what woke us.
            let mut actions = Vec::new();
            self.settle(&mut actions);
            actions.extend(match wake {
                Wake::Published(newest) => self.plan.on_published(newest),
                Wake::Event(event) => self.plan.on_event(event),
            });
            // Before the actions: a worker retargeted below must see the
            // rollout in flight.
            self.settle(&mut actions);
            for action in actions {
                match action {
                    Action::Retarget(partitions, version) => {
                        for p in partitions {
                            match self.targets.get(&p) {
                                Some(tx) => {
                                    tx.send_replace(version.clone());
                                }
                                None => warn!(partition = p, "no such partition in rollout"),
                            }
                        }
                    }
                    Action::SetState(version, state, reason) => {
                        self.registry
                            .set_state(&version.name, &version.digest, state, reason);
                    }
                    Action::Shadow(partitions, version) => {
                        for p in partitions {
                            if let Some(tx) = self.shadows.get(&p) {
                                tx.send_replace(version.clone());
                            }
                        }
                    }
                    Action::ShadowReport(version, summary) => {
                        self.registry
                            .set_shadow(&version.name, &version.digest, summary);
                    }
                }
            }
        }
    }
}

/// What the plan needs to know of a version.
pub trait Version: Clone {
    /// The version's identity.
    fn digest(&self) -> &str;
    /// Plugin name and short digest, for the log.
    fn label(&self) -> String;
}

impl Version for Arc<PluginVersion> {
    fn digest(&self) -> &str {
        &self.digest
    }

    fn label(&self) -> String {
        format!("{} {}", self.name, self.short_digest())
    }
}

/// What the controller is to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<V> {
    /// These partitions now target this version.
    Retarget(BTreeSet<u32>, V),
    /// The registry records this state of the version, and why.
    SetState(V, VersionState, Option<String>),
    /// These partitions run this version in shadow (`None`: none).
    Shadow(BTreeSet<u32>, Option<V>),
    /// The candidate's shadow comparison so far.
    ShadowReport(V, crate::shadow::Summary),
}

#[derive(Debug)]
struct InFlight<V> {
    candidate: V,
    /// Canary partitions, while still in the canary phase.
    canaries: Option<BTreeSet<u32>>,
    canary_batches: u64,
    adopted: BTreeSet<u32>,
    /// The comparison so far, while the candidate runs in shadow.
    shadow: Option<crate::shadow::Summary>,
}

/// A route's rollout decisions, pure: given what the registry published and
/// what the workers reported, which partitions target which version and
/// which state each version is in.
#[derive(Debug)]
pub struct Plan<V> {
    topic: String,
    policy: Rollout,
    /// Every partition of the route (each has a target).
    partitions: BTreeSet<u32>,
    /// Partitions with a running worker.
    owned: BTreeSet<u32>,
    stable: V,
    rollout: Option<InFlight<V>>,
    actions: Vec<Action<V>>,
}

impl<V: Version> Plan<V> {
    /// A plan whose every partition runs `stable`.
    pub fn new(topic: &str, policy: Rollout, partitions: &[u32], stable: V) -> Plan<V> {
        Plan {
            topic: topic.to_owned(),
            policy,
            partitions: partitions.iter().copied().collect(),
            owned: BTreeSet::new(),
            stable,
            rollout: None,
            actions: Vec::new(),
        }
    }

    /// Whether a rollout is in flight: only then does the plan act on the
    /// events that are not [`WorkerEvent::matters_between_rollouts`].
    pub fn in_flight(&self) -> bool {
        self.rollout.is_some()
    }

    /// Whether committed batches count now: only a canary phase's do.
    pub fn counts_commits(&self) -> bool {
        self.rollout
            .as_ref()
            .is_some_and(|f| f.canaries.is_some() && f.shadow.is_none())
    }

    /// What the plan listens to now.
    pub fn phase(&self) -> Phase {
        if self.counts_commits() {
            Phase::CountingCommits
        } else if self.in_flight() {
            Phase::InFlight
        } else {
            Phase::Between
        }
    }

    /// The registry published `version` as the newest.
    pub fn on_published(&mut self, version: V) -> Vec<Action<V>> {
        if let Some(previous) = self.rollout.take() {
            if previous.shadow.is_some() {
                self.actions
                    .push(Action::Shadow(self.partitions.clone(), None));
            }
            if previous.candidate.digest() != version.digest() {
                let reason = format!("superseded by {}", short(version.digest()));
                self.set_state(&previous.candidate, VersionState::Retired, Some(reason));
            }
        }
        if version.digest() == self.stable.digest() {
            // Back to the version that was serving: every partition returns.
            let stable = self.stable.clone();
            self.retarget(self.partitions.clone(), &stable);
            self.set_state(&stable, VersionState::Active, None);
            return self.take();
        }
        self.begin(version, self.policy);
        self.take()
    }

    /// Starts rolling `version` out as `policy` says.
    fn begin(&mut self, version: V, policy: Rollout) {
        match policy {
            // With nothing owned yet (a host starting, a Kafka member between
            // assignments) it waits in shadow: partitions shadow it as they
            // come.
            Rollout::Shadow { .. } => {
                info!(
                    topic = %self.topic,
                    version = %version.label(),
                    partitions = ?self.owned,
                    "shadow rollout started"
                );
                self.actions
                    .push(Action::Shadow(self.owned.clone(), Some(version.clone())));
                self.set_state(&version, VersionState::Shadow, None);
                self.rollout = Some(InFlight {
                    candidate: version,
                    canaries: None,
                    canary_batches: 0,
                    adopted: BTreeSet::new(),
                    shadow: Some(crate::shadow::Summary::default()),
                });
            }
            Rollout::All => self.roll_out_to_all(version, BTreeSet::new()),
            Rollout::Canary { canary, .. } => {
                let canaries: BTreeSet<u32> =
                    self.owned.iter().copied().take(canary as usize).collect();
                if canaries.is_empty() {
                    // Nothing owned to try it on: it becomes the version
                    // partitions start with.
                    self.roll_out_to_all(version, BTreeSet::new());
                } else {
                    info!(
                        topic = %self.topic,
                        version = %version.label(),
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
                        shadow: None,
                    });
                }
            }
        }
    }

    /// A worker reported `event`.
    pub fn on_event(&mut self, event: WorkerEvent) -> Vec<Action<V>> {
        tracing::trace!(topic = %self.topic, ?event, "rollout event");
        self.apply(event);
        self.take()
    }

    fn apply(&mut self, event: WorkerEvent) {
        match event {
            WorkerEvent::Owned { partition } => {
                self.owned.insert(partition);
                if let Some(flight) = &self.rollout
                    && flight.shadow.is_some()
                {
                    let candidate = flight.candidate.clone();
                    self.actions
                        .push(Action::Shadow(BTreeSet::from([partition]), Some(candidate)));
                }
                return;
            }
            WorkerEvent::Released { partition } => {
                self.owned.remove(&partition);
                if let Some(flight) = self.rollout.as_mut() {
                    flight.adopted.remove(&partition);
                    if let Some(canaries) = flight.canaries.as_mut()
                        && canaries.remove(&partition)
                        && canaries.is_empty()
                    {
                        // The last canary left with its partition: judge the
                        // version on every partition instead.
                        let flight = self.rollout.take().expect("in flight");
                        self.roll_out_to_all(flight.candidate, flight.adopted);
                        return;
                    }
                }
                self.finish_if_done();
                return;
            }
            _ => {}
        }
        let Some(flight) = self.rollout.as_mut() else {
            if let WorkerEvent::Refused { digest, reason, .. } = &event
                && digest == self.stable.digest()
            {
                let stable = self.stable.clone();
                self.set_state(&stable, VersionState::Rejected, Some(reason.clone()));
            }
            return;
        };
        let candidate = flight.candidate.digest().to_owned();
        if let Some(summary) = flight.shadow.as_mut() {
            match event {
                WorkerEvent::Shadowed { digest, batch, .. } if digest == candidate => {
                    summary.merge(&batch);
                    let summary = summary.clone();
                    let candidate = flight.candidate.clone();
                    self.actions
                        .push(Action::ShadowReport(candidate, summary.clone()));
                    let Rollout::Shadow {
                        shadow_batches,
                        max_diff,
                        ..
                    } = self.policy
                    else {
                        return;
                    };
                    if summary.total.differences() > max_diff {
                        self.end_shadow(format!(
                            "differs from {} in shadow ({} differences, {max_diff} allowed): {}",
                            short(self.stable.digest()),
                            summary.total.differences(),
                            summary.describe()
                        ));
                    } else if summary.total.batches >= shadow_batches {
                        let flight = self.rollout.take().expect("in flight");
                        self.actions
                            .push(Action::Shadow(self.partitions.clone(), None));
                        info!(
                            topic = %self.topic,
                            version = %flight.candidate.label(),
                            "shadow passed: {}",
                            summary.describe()
                        );
                        self.begin(flight.candidate, self.policy.after_shadow());
                    }
                }
                WorkerEvent::ShadowFailed {
                    partition,
                    digest,
                    reason,
                } if digest == candidate => {
                    self.end_shadow(format!(
                        "failed in shadow on partition {partition}: {reason}"
                    ));
                }
                _ => {}
            }
            return;
        }
        match event {
            WorkerEvent::Adopted { partition, digest } if digest == candidate => {
                flight.adopted.insert(partition);
                self.finish_if_done();
            }
            WorkerEvent::Committed { partition, digest } if digest == candidate => {
                let Rollout::Canary {
                    promote_after_batches,
                    ..
                } = self.policy.after_shadow()
                else {
                    return;
                };
                if !flight
                    .canaries
                    .as_ref()
                    .is_some_and(|c| c.contains(&partition))
                {
                    return;
                }
                flight.canary_batches += 1;
                if flight.canary_batches >= promote_after_batches {
                    let flight = self.rollout.take().expect("in flight");
                    info!(
                        topic = %self.topic,
                        version = %flight.candidate.label(),
                        batches = flight.canary_batches,
                        "canaries healthy: promoting"
                    );
                    self.roll_out_to_all(flight.candidate, flight.adopted);
                }
            }
            WorkerEvent::Failed {
                partition,
                digest,
                reason,
            } if digest == candidate
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
            } if digest == candidate => {
                self.abort(
                    VersionState::RolledBack,
                    format!("cannot commit on partition {partition}: {reason}"),
                );
            }
            WorkerEvent::Refused {
                partition,
                digest,
                reason,
            } if digest == candidate => {
                // It never handled a batch: rejected, at any stage.
                self.abort(
                    VersionState::Rejected,
                    format!("init failed on partition {partition}: {reason}"),
                );
            }
            _ => {}
        }
    }

    fn roll_out_to_all(&mut self, version: V, adopted: BTreeSet<u32>) {
        info!(
            topic = %self.topic,
            version = %version.label(),
            "rolling out to every partition"
        );
        self.retarget(self.partitions.clone(), &version);
        self.set_state(&version, VersionState::Active, None);
        self.rollout = Some(InFlight {
            candidate: version,
            canaries: None,
            canary_batches: 0,
            adopted,
            shadow: None,
        });
        self.finish_if_done();
    }

    /// Rejects the candidate in shadow: it stops shadowing; the partitions
    /// never left the stable version.
    fn end_shadow(&mut self, reason: String) {
        let flight = self.rollout.take().expect("in flight");
        error!(
            topic = %self.topic,
            version = %flight.candidate.label(),
            "version rejected: {reason}"
        );
        self.actions
            .push(Action::Shadow(self.partitions.clone(), None));
        self.set_state(&flight.candidate, VersionState::Rejected, Some(reason));
    }

    /// Sends every partition back to the stable version.
    fn abort(&mut self, state: VersionState, reason: String) {
        let flight = self.rollout.take().expect("in flight");
        error!(
            topic = %self.topic,
            version = %flight.candidate.label(),
            back_to = short(self.stable.digest()),
            "version {}: {reason}",
            if state == VersionState::RolledBack { "rolled back" } else { "rejected" }
        );
        self.set_state(&flight.candidate, state, Some(reason));
        let stable = self.stable.clone();
        self.retarget(self.partitions.clone(), &stable);
        self.set_state(&stable, VersionState::Active, None);
    }

    fn finish_if_done(&mut self) {
        let Some(flight) = &self.rollout else { return };
        if flight.canaries.is_some() || !self.owned.is_subset(&flight.adopted) {
            return;
        }
        let flight = self.rollout.take().expect("in flight");
        let old = std::mem::replace(&mut self.stable, flight.candidate);
        if old.digest() != self.stable.digest() {
            self.set_state(&old, VersionState::Retired, None);
        }
        info!(
            topic = %self.topic,
            version = %self.stable.label(),
            "every partition runs the new version"
        );
    }

    fn retarget(&mut self, partitions: BTreeSet<u32>, version: &V) {
        self.actions
            .push(Action::Retarget(partitions, version.clone()));
    }

    fn set_state(&mut self, version: &V, state: VersionState, reason: Option<String>) {
        self.actions
            .push(Action::SetState(version.clone(), state, reason));
    }

    fn take(&mut self) -> Vec<Action<V>> {
        std::mem::take(&mut self.actions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::{Retarget, SetState};
    use VersionState::*;

    #[test]
    fn ownership_waits_unsent_between_rollouts_and_is_sent_during_one() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let phase = Arc::new(AtomicU8::new(Phase::Between as u8));
        let waiting = Arc::new(Mutex::new(Vec::new()));
        let events = Events {
            tx,
            phase: phase.clone(),
            waiting: waiting.clone(),
        };
        events.send(WorkerEvent::Owned { partition: 0 });
        events.send(WorkerEvent::Refused {
            partition: 1,
            digest: "d".into(),
            reason: "r".into(),
        });
        events.send(WorkerEvent::Released { partition: 2 });
        assert!(matches!(
            rx.try_recv(),
            Ok(WorkerEvent::Refused { partition: 1, .. })
        ));
        assert!(rx.try_recv().is_err(), "ownership woke the controller");
        assert!(matches!(
            waiting.lock().unwrap().as_slice(),
            [
                WorkerEvent::Owned { partition: 0 },
                WorkerEvent::Released { partition: 2 }
            ]
        ));
        phase.store(Phase::InFlight as u8, Ordering::Release);
        events.send(WorkerEvent::Owned { partition: 3 });
        assert!(matches!(
            rx.try_recv(),
            Ok(WorkerEvent::Owned { partition: 3 })
        ));
    }

    /// A version is its digest.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct V(&'static str);

    impl Version for V {
        fn digest(&self) -> &str {
            self.0
        }
        fn label(&self) -> String {
            self.0.to_owned()
        }
    }

    const ALL: [u32; 4] = [0, 1, 2, 3];

    fn set(partitions: &[u32]) -> BTreeSet<u32> {
        partitions.iter().copied().collect()
    }

    /// A plan over four partitions, all owned, running v1.
    fn plan(policy: Rollout) -> Plan<V> {
        let mut plan = Plan::new("t", policy, &ALL, V("v1"));
        for partition in ALL {
            assert!(plan.on_event(WorkerEvent::Owned { partition }).is_empty());
        }
        plan
    }

    fn canary(canary: u32, promote_after_batches: u64) -> Rollout {
        Rollout::Canary {
            canary,
            promote_after_batches,
        }
    }

    fn adopted(partition: u32, digest: &str) -> WorkerEvent {
        WorkerEvent::Adopted {
            partition,
            digest: digest.into(),
        }
    }

    fn committed(partition: u32, digest: &str) -> WorkerEvent {
        WorkerEvent::Committed {
            partition,
            digest: digest.into(),
        }
    }

    fn failed(partition: u32, digest: &str) -> WorkerEvent {
        WorkerEvent::Failed {
            partition,
            digest: digest.into(),
            reason: "trap".into(),
        }
    }

    /// `partitions` adopt v2 in turn; with the last, v1 is retired.
    fn every_partition_adopts_v2(plan: &mut Plan<V>, partitions: &[u32]) {
        let (last, first) = partitions.split_last().unwrap();
        for &partition in first {
            assert_eq!(plan.on_event(adopted(partition, "v2")), []);
        }
        assert_eq!(
            plan.on_event(adopted(*last, "v2")),
            [SetState(V("v1"), Retired, None)]
        );
    }

    fn back_to_v1(state: VersionState, reason: &str) -> Vec<Action<V>> {
        vec![
            SetState(V("v2"), state, Some(reason.into())),
            Retarget(set(&ALL), V("v1")),
            SetState(V("v1"), Active, None),
        ]
    }

    #[test]
    fn all_moves_every_partition_and_retires_the_old_version_once_all_adopted() {
        let mut plan = plan(Rollout::All);
        assert_eq!(
            plan.on_published(V("v2")),
            [
                Retarget(set(&ALL), V("v2")),
                SetState(V("v2"), Active, None)
            ]
        );
        every_partition_adopts_v2(&mut plan, &ALL);
    }

    #[test]
    fn canaries_go_first_and_are_promoted_after_their_batches() {
        let mut plan = plan(canary(1, 2));
        assert_eq!(
            plan.on_published(V("v2")),
            [
                Retarget(set(&[0]), V("v2")),
                SetState(V("v2"), Canary, None)
            ]
        );
        assert_eq!(plan.on_event(adopted(0, "v2")), []);
        // Batches of other partitions, or of the old version, do not count.
        assert_eq!(plan.on_event(committed(1, "v2")), []);
        assert_eq!(plan.on_event(committed(0, "v1")), []);
        assert_eq!(plan.on_event(committed(0, "v2")), []);
        assert_eq!(
            plan.on_event(committed(0, "v2")),
            [
                Retarget(set(&ALL), V("v2")),
                SetState(V("v2"), Active, None)
            ]
        );
        every_partition_adopts_v2(&mut plan, &[1, 2, 3]);
    }

    #[test]
    fn a_failing_canary_rolls_back_and_a_failure_elsewhere_does_not() {
        let mut plan = plan(canary(2, 10));
        plan.on_published(V("v2"));
        assert_eq!(plan.on_event(failed(3, "v2")), [], "not a canary");
        assert_eq!(plan.on_event(failed(1, "v1")), [], "not the candidate");
        assert_eq!(
            plan.on_event(failed(1, "v2")),
            back_to_v1(RolledBack, "failed on canary partition 1: trap")
        );
    }

    #[test]
    fn a_refused_init_rejects_and_a_commit_that_cannot_happen_rolls_back_at_any_stage() {
        let mut plan = plan(Rollout::All);
        plan.on_published(V("v2"));
        let refused = WorkerEvent::Refused {
            partition: 2,
            digest: "v2".into(),
            reason: "init: no config".into(),
        };
        assert_eq!(
            plan.on_event(refused),
            back_to_v1(Rejected, "init failed on partition 2: init: no config")
        );
        plan.on_published(V("v3"));
        let stuck = WorkerEvent::CannotCommit {
            partition: 0,
            digest: "v3".into(),
            reason: "no topic".into(),
        };
        let mut want = back_to_v1(RolledBack, "cannot commit on partition 0: no topic");
        want[0] = SetState(V("v3"), RolledBack, want[0].reason());
        assert_eq!(plan.on_event(stuck), want);
    }

    #[test]
    fn a_newer_version_supersedes_the_candidate_and_the_old_one_brings_everyone_back() {
        let mut plan = plan(canary(1, 5));
        plan.on_published(V("v2"));
        assert_eq!(
            plan.on_published(V("v3")),
            [
                SetState(V("v2"), Retired, Some("superseded by v3".into())),
                Retarget(set(&[0]), V("v3")),
                SetState(V("v3"), Canary, None),
            ]
        );
        assert_eq!(
            plan.on_published(V("v1")),
            [
                SetState(V("v3"), Retired, Some("superseded by v1".into())),
                Retarget(set(&ALL), V("v1")),
                SetState(V("v1"), Active, None),
            ]
        );
    }

    #[test]
    fn when_the_last_canary_leaves_the_version_is_judged_on_every_partition() {
        let mut plan = plan(canary(1, 5));
        plan.on_published(V("v2"));
        assert_eq!(
            plan.on_event(WorkerEvent::Released { partition: 0 }),
            [
                Retarget(set(&ALL), V("v2")),
                SetState(V("v2"), Active, None)
            ]
        );
        every_partition_adopts_v2(&mut plan, &[1, 2, 3]);
    }

    #[test]
    fn with_nothing_owned_a_canary_version_becomes_the_start_version() {
        let mut plan = Plan::new("t", canary(1, 5), &ALL, V("v1"));
        assert_eq!(
            plan.on_published(V("v2")),
            [
                Retarget(set(&ALL), V("v2")),
                SetState(V("v2"), Active, None),
                SetState(V("v1"), Retired, None),
            ]
        );
    }

    #[test]
    fn the_serving_version_refused_on_a_new_partition_is_marked_rejected() {
        let mut plan = plan(Rollout::All);
        let refused = WorkerEvent::Refused {
            partition: 1,
            digest: "v1".into(),
            reason: "init: bad".into(),
        };
        assert_eq!(
            plan.on_event(refused),
            [SetState(V("v1"), Rejected, Some("init: bad".into()))]
        );
    }

    impl Action<V> {
        fn reason(&self) -> Option<String> {
            match self {
                SetState(_, _, reason) => reason.clone(),
                _ => None,
            }
        }
    }

    fn shadow(shadow_batches: u64, max_diff: u64, canary: u32) -> Rollout {
        Rollout::Shadow {
            shadow_batches,
            max_diff,
            canary,
            promote_after_batches: 2,
            max_slowdown_percent: 100,
        }
    }

    /// Partition `partition` compared a batch: `differing` outputs differ.
    fn shadowed(partition: u32, differing: u64) -> WorkerEvent {
        let active = crate::record::BatchEffects::default();
        let mut batch = crate::shadow::compare(
            partition,
            [0, 9],
            &active,
            &active,
            &crate::config::ShadowCompare::default(),
        );
        batch.total.differing = differing;
        WorkerEvent::Shadowed {
            partition,
            digest: "v2".into(),
            batch,
        }
    }

    /// The actions other than shadow reports.
    fn decisions(actions: Vec<Action<V>>) -> Vec<Action<V>> {
        actions
            .into_iter()
            .filter(|a| !matches!(a, Action::ShadowReport(..)))
            .collect()
    }

    #[test]
    fn a_shadow_that_matches_for_enough_batches_rolls_out_as_configured() {
        let mut plan = plan(shadow(3, 0, 0));
        assert_eq!(
            plan.on_published(V("v2")),
            [
                Action::Shadow(set(&ALL), Some(V("v2"))),
                SetState(V("v2"), Shadow, None)
            ]
        );
        assert_eq!(decisions(plan.on_event(shadowed(0, 0))), []);
        let report = plan.on_event(shadowed(1, 0));
        assert!(
            matches!(&report[..], [Action::ShadowReport(V("v2"), s)] if s.total.batches == 2),
            "{report:?}"
        );
        assert_eq!(
            decisions(plan.on_event(shadowed(2, 0))),
            [
                Action::Shadow(set(&ALL), None),
                Retarget(set(&ALL), V("v2")),
                SetState(V("v2"), Active, None)
            ]
        );
        every_partition_adopts_v2(&mut plan, &ALL);
    }

    #[test]
    fn a_shadow_goes_on_to_canaries_when_asked() {
        let mut plan = plan(shadow(1, 0, 1));
        plan.on_published(V("v2"));
        assert_eq!(
            decisions(plan.on_event(shadowed(3, 0))),
            [
                Action::Shadow(set(&ALL), None),
                Retarget(set(&[0]), V("v2")),
                SetState(V("v2"), Canary, None)
            ]
        );
    }

    #[test]
    fn canaries_after_a_shadow_are_promoted_like_any_canary() {
        let mut plan = plan(shadow(1, 0, 1));
        plan.on_published(V("v2"));
        plan.on_event(shadowed(0, 0));
        assert_eq!(plan.on_event(adopted(0, "v2")), []);
        assert_eq!(plan.on_event(committed(0, "v2")), []);
        assert_eq!(
            plan.on_event(committed(0, "v2")),
            [
                Retarget(set(&ALL), V("v2")),
                SetState(V("v2"), Active, None)
            ]
        );
    }

    #[test]
    fn a_shadow_over_its_diff_budget_or_failing_is_rejected_and_nothing_moves() {
        let mut plan = plan(shadow(100, 2, 0));
        plan.on_published(V("v2"));
        assert_eq!(decisions(plan.on_event(shadowed(0, 2))), []);
        let actions = decisions(plan.on_event(shadowed(1, 1)));
        assert_eq!(actions[0], Action::Shadow(set(&ALL), None));
        assert!(matches!(&actions[1], SetState(V("v2"), Rejected, _)));
        let reason = actions[1].reason().unwrap();
        assert!(reason.contains("3 differences, 2 allowed"), "{reason}");
        assert_eq!(actions.len(), 2, "no partition retargeted");

        let mut plan = plan_with_shadow_failure();
        let failed = WorkerEvent::ShadowFailed {
            partition: 2,
            digest: "v2".into(),
            reason: "trap".into(),
        };
        let actions = plan.on_event(failed);
        assert_eq!(actions[0], Action::Shadow(set(&ALL), None));
        assert_eq!(
            actions[1].reason().as_deref(),
            Some("failed in shadow on partition 2: trap")
        );
    }

    fn plan_with_shadow_failure() -> Plan<V> {
        let mut plan = plan(shadow(10, 0, 0));
        plan.on_published(V("v2"));
        plan
    }

    #[test]
    fn a_partition_owned_during_a_shadow_shadows_too() {
        let mut plan = Plan::new("t", shadow(5, 0, 0), &ALL, V("v1"));
        plan.on_event(WorkerEvent::Owned { partition: 0 });
        assert_eq!(
            plan.on_published(V("v2"))[0],
            Action::Shadow(set(&[0]), Some(V("v2")))
        );
        assert_eq!(
            plan.on_event(WorkerEvent::Owned { partition: 1 }),
            [Action::Shadow(set(&[1]), Some(V("v2")))]
        );
    }

    #[test]
    fn between_rollouts_the_plan_ignores_every_event_a_worker_holds_back_then() {
        let cannot_commit = |digest: &str| WorkerEvent::CannotCommit {
            partition: 0,
            digest: digest.into(),
            reason: "too large".into(),
        };
        let shadow_failed = WorkerEvent::ShadowFailed {
            partition: 0,
            digest: "v2".into(),
            reason: "trap".into(),
        };
        for policy in [Rollout::All, canary(1, 1), shadow(1, 0, 0)] {
            let mut plan = plan(policy);
            assert!(!plan.in_flight());
            for event in [
                adopted(0, "v1"),
                adopted(0, "v2"),
                committed(0, "v1"),
                committed(0, "v2"),
                failed(0, "v1"),
                failed(0, "v2"),
                cannot_commit("v1"),
                cannot_commit("v2"),
                shadowed(0, 0),
                shadow_failed.clone(),
            ] {
                assert!(!event.matters_between_rollouts(), "{event:?}");
                assert_eq!(plan.on_event(event), [], "{policy:?}");
                assert!(!plan.in_flight());
            }
            assert!(!plan.on_published(V("v2")).is_empty());
            assert!(plan.in_flight(), "{policy:?}");
        }
        let refused = WorkerEvent::Refused {
            partition: 0,
            digest: "v1".into(),
            reason: "init failed".into(),
        };
        assert!(refused.matters_between_rollouts());
        assert!(WorkerEvent::Owned { partition: 0 }.matters_between_rollouts());
        assert!(WorkerEvent::Released { partition: 0 }.matters_between_rollouts());
    }

    #[test]
    fn a_phase_reads_back_as_stored() {
        for phase in [Phase::Between, Phase::InFlight, Phase::CountingCommits] {
            assert_eq!(Phase::from_u8(phase as u8), phase);
        }
    }

    #[test]
    fn committed_batches_are_sent_only_while_they_count() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let phase = Arc::new(AtomicU8::new(Phase::InFlight as u8));
        let events = Events {
            tx,
            phase: phase.clone(),
            waiting: Arc::new(Mutex::new(Vec::new())),
        };
        events.send(committed(0, "v2"));
        events.send(adopted(0, "v2"));
        assert_eq!(rx.try_recv(), Ok(adopted(0, "v2")), "a commit woke it");
        phase.store(Phase::CountingCommits as u8, Ordering::Release);
        events.send(committed(0, "v2"));
        assert_eq!(rx.try_recv(), Ok(committed(0, "v2")));
    }

    #[test]
    fn only_a_canary_phase_counts_committed_batches() {
        // A rollout to every partition: commits change nothing.
        let mut all = plan(Rollout::All);
        all.on_published(V("v2"));
        assert!(all.in_flight() && !all.counts_commits());
        assert_eq!(all.on_event(committed(0, "v2")), []);
        assert!(all.in_flight());

        // Canaries count until they are promoted.
        let mut canaries = plan(canary(1, 2));
        canaries.on_published(V("v2"));
        assert!(canaries.counts_commits());
        assert_eq!(canaries.on_event(committed(0, "v2")), []);
        assert!(!canaries.on_event(committed(0, "v2")).is_empty());
        assert!(canaries.in_flight() && !canaries.counts_commits());
        assert_eq!(canaries.on_event(committed(0, "v2")), []);

        // In shadow nothing counts; the canary phase after it does.
        let mut shadowed_first = plan(shadow(1, 0, 1));
        shadowed_first.on_published(V("v2"));
        assert!(shadowed_first.in_flight() && !shadowed_first.counts_commits());
        assert_eq!(shadowed_first.on_event(committed(0, "v2")), []);
        shadowed_first.on_event(shadowed(0, 0));
        assert!(shadowed_first.counts_commits());
    }

    #[test]
    fn a_rollout_is_in_flight_until_every_partition_adopted_the_version() {
        let mut plan = plan(Rollout::All);
        plan.on_published(V("v2"));
        assert!(plan.in_flight());
        every_partition_adopts_v2(&mut plan, &ALL);
        assert!(!plan.in_flight());
    }
}
