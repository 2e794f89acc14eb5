//! What a Kafka member knows of its partitions and does with them in its
//! rebalance callbacks: where an assigned partition starts, how a revoked
//! one is finished and committed, which offsets the group is known to hold,
//! and the periodic commit and sweep of the consumer thread.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use super::fence::{Leases, StartFrom, start_from};
use super::member::MemberContext;
use super::source::{PartitionBuffer, PartitionSource};
use super::{ClientSettings, changelog_topic, group_generation};
use crate::config::{GroupProtocol, OffsetReset};
use crate::group::{Assignment, GroupEvent, TopicPartition};
use crate::log::TopicInfo;
use crate::metrics::Metrics;
use crate::status::Live;
use crate::store::Store;

/// How long to wait for the group's committed offsets on assignment.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(10);

/// What the consumer thread shares with its rebalance callbacks.
pub(super) struct Shared {
    pub(super) store: Arc<Store>,
    /// Every topic this member has been subscribed to since it started: a
    /// reload that drops a route unsubscribes its topic, and the partitions
    /// then revoked still need their topic to commit and release.
    pub(super) topics: Mutex<BTreeMap<String, TopicInfo>>,
    pub(super) group: String,
    pub(super) settings: ClientSettings,
    pub(super) protocol: GroupProtocol,
    pub(super) reset: OffsetReset,
    pub(super) revoke_timeout: Duration,
    pub(super) buffer_limit: usize,
    pub(super) events: mpsc::UnboundedSender<GroupEvent>,
    pub(super) buffers: Mutex<HashMap<(String, u32), Arc<PartitionBuffer>>>,
    pub(super) offsets: Mutex<HashMap<TopicPartition, CommitState>>,
    /// (epoch, member id) each owned partition was assigned with, for a
    /// worker that replaces the one running it (`restart_source`).
    pub(super) claims: Mutex<HashMap<TopicPartition, (u64, String)>>,
    pub(super) leases: Arc<Leases>,
    pub(super) live: Arc<Live>,
    pub(super) metrics: Arc<Metrics>,
    /// Where partition sources ask the consumer thread to move an offset.
    pub(super) moves: std::sync::mpsc::Sender<Move>,
}

/// An operator's reset of an owned partition, for the consumer thread: the
/// group's committed offset and the fetch position go to `to`.
pub struct Move {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// The new offset.
    pub to: u64,
    /// The answer.
    pub done: std::sync::mpsc::SyncSender<Result<(), String>>,
}

/// What the group has of an owned partition's offset.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct CommitState {
    /// The offset the group is known to hold: the committed offset found on
    /// assignment, then every commit it accepted. Never committed below.
    accepted: Option<u64>,
    /// An asynchronous commit in flight.
    sent: Option<u64>,
}

impl CommitState {
    /// The offset to commit, if any, for a partition delivered up to
    /// `delivered`: only forward of what the group holds — a restored
    /// partition may still hold undelivered entries of an older ownership,
    /// which must not move the group back — and, for a periodic
    /// (asynchronous) commit, not the one already in flight.
    fn to_commit(self, delivered: u64, mode: CommitMode) -> Option<u64> {
        if self.accepted.is_some_and(|a| delivered <= a) {
            return None;
        }
        if matches!(mode, CommitMode::Async) && self.sent == Some(delivered) {
            return None;
        }
        Some(delivered)
    }
}

fn tp_list(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| TopicPartition {
            topic: e.topic().to_owned(),
            partition: e.partition() as u32,
        })
        .collect()
}

impl Shared {
    /// The topic `name`, if this member consumes it.
    pub(super) fn topic(&self, name: &str) -> Option<TopicInfo> {
        self.topics.lock().expect("topics lock").get(name).cloned()
    }

    /// A source for `tp`, still owned, whose worker stopped for a route
    /// change: it goes on from the local checkpoint in the same ownership
    /// epoch. Its worker claims the partition again (the same epoch keeps
    /// the lease as it is) and re-reads the changelog's recent batch
    /// markers, so a re-formed previous owner's batch the old worker was in
    /// the middle of is formed the same way.
    pub(super) fn restart_source(&self, tp: &TopicPartition) -> Option<PartitionSource> {
        let buffer = self
            .buffers
            .lock()
            .expect("buffers lock")
            .get(&(tp.topic.clone(), tp.partition))
            .cloned()?;
        let (epoch, member_id) = self.claims.lock().expect("claims lock").get(tp).cloned()?;
        let topic = self.topic(&tp.topic)?;
        let checkpoint = self
            .store
            .checkpoint(&topic, tp.partition)
            .ok()
            .flatten()
            .map_or(0, |c| c.next_offset);
        Some(PartitionSource {
            buffer,
            changelog_topic: changelog_topic(&self.group, &tp.topic),
            start: StartFrom::Local(checkpoint),
            epoch,
            member_id,
            leases: self.leases.clone(),
            client: self.settings.clone(),
            group: self.group.clone(),
            replay: Default::default(),
            moves: self.moves.clone(),
        })
    }

    /// librdkafka says how a commit went: what the group accepted is what
    /// it is known to hold; a refused one is sent again.
    pub(super) fn on_commit(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        let mut states = self.offsets.lock().expect("offsets lock");
        for e in offsets.elements() {
            let tp = TopicPartition {
                topic: e.topic().to_owned(),
                partition: e.partition() as u32,
            };
            let (Some(state), Offset::Offset(offset)) = (states.get_mut(&tp), e.offset()) else {
                continue;
            };
            if result.is_ok() && e.error().is_ok() {
                state.accepted = Some(
                    state
                        .accepted
                        .map_or(offset as u64, |a| a.max(offset as u64)),
                );
            } else {
                // Refused (expected while the group rebalances): the next
                // round sends it again.
                state.sent = None;
            }
        }
        if let Err(e) = result {
            debug!("offset commit not accepted: {e}");
        }
    }

    pub(super) fn assign(
        &self,
        consumer: &BaseConsumer<MemberContext>,
        tpl: &mut TopicPartitionList,
    ) {
        let partitions = tp_list(tpl);
        let committed = self.committed_offsets(consumer, tpl);
        // The generation that gives us these partitions is the epoch every
        // changelog record we deliver for them carries.
        let (epoch, member_id) = group_generation(consumer)
            .map(|(g, m)| (g.max(0) as u64, m))
            .unwrap_or_default();
        let undelivered = self.store.outbox_partitions().unwrap_or_else(|e| {
            error!("reading the outbox: {e}");
            Vec::new()
        });
        let mut assignments = Vec::new();
        for tp in partitions {
            let Some(topic) = self.topic(&tp.topic) else {
                warn!(topic = %tp.topic, "assigned a partition of a topic that is not routed");
                continue;
            };
            let topic = &topic;
            let local = match self.store.checkpoint(topic, tp.partition) {
                Ok(c) => c.map(|c| c.next_offset),
                Err(e) => {
                    error!(
                        "reading the checkpoint of {}/{}: {e}",
                        tp.topic, tp.partition
                    );
                    None
                }
            };
            let group = committed.get(&tp).copied();
            let leftovers = undelivered.contains(&(topic.id, tp.partition));
            let start = start_from(local, group, leftovers, self.reset);
            let offset = match start {
                StartFrom::Local(o) | StartFrom::Restore(o) => Offset::Offset(o as i64),
                StartFrom::Reset(OffsetReset::Earliest) => Offset::Beginning,
                StartFrom::Reset(OffsetReset::Latest) => Offset::End,
            };
            info!(
                topic = %tp.topic,
                partition = tp.partition,
                local = ?local,
                committed = ?group,
                undelivered = leftovers,
                start = ?start,
                epoch,
                "partition assigned"
            );
            if let Err(e) = tpl.set_partition_offset(&tp.topic, tp.partition as i32, offset) {
                error!(
                    "setting the start offset of {}/{}: {e}",
                    tp.topic, tp.partition
                );
            }
            self.offsets.lock().expect("offsets lock").insert(
                tp.clone(),
                CommitState {
                    accepted: group,
                    sent: None,
                },
            );
            self.claims
                .lock()
                .expect("claims lock")
                .insert(tp.clone(), (epoch, member_id.clone()));
            let buffer = Arc::new(PartitionBuffer::default());
            self.buffers
                .lock()
                .expect("buffers lock")
                .insert((tp.topic.clone(), tp.partition), buffer.clone());
            assignments.push(Assignment {
                source: Box::new(PartitionSource {
                    buffer,
                    changelog_topic: changelog_topic(&self.group, &tp.topic),
                    start,
                    epoch,
                    member_id: member_id.clone(),
                    leases: self.leases.clone(),
                    client: self.settings.clone(),
                    group: self.group.clone(),
                    replay: Default::default(),
                    moves: self.moves.clone(),
                }),
                tp,
            });
        }
        if !assignments.is_empty() {
            let _ = self.events.send(GroupEvent::Assigned(assignments));
        }
    }

    /// The partitions this member owns.
    pub(super) fn owned(&self) -> Vec<TopicPartition> {
        let offsets = self.offsets.lock().expect("offsets lock");
        offsets.keys().cloned().collect()
    }

    /// Drops outbox entries of partitions this member does not own that the
    /// group has committed past: left by an earlier run, redone by another
    /// owner since.
    pub(super) fn sweep(&self, consumer: &BaseConsumer<MemberContext>) {
        let Ok(partitions) = self.store.outbox_partitions() else {
            return;
        };
        let owned = self.owned();
        let mut tpl = TopicPartitionList::new();
        for (id, partition) in partitions {
            let Some(topic) = self
                .topics
                .lock()
                .expect("topics lock")
                .values()
                .find(|t| t.id == id)
                .cloned()
            else {
                continue;
            };
            if !owned
                .iter()
                .any(|o| o.topic == topic.name && o.partition == partition)
            {
                tpl.add_partition(&topic.name, partition as i32);
            }
        }
        if tpl.count() == 0 {
            return;
        }
        let Ok(committed) = consumer.committed_offsets(tpl, Duration::from_secs(5)) else {
            return;
        };
        for e in committed.elements() {
            let (Some(topic), Offset::Offset(c)) = (self.topic(e.topic()), e.offset()) else {
                continue;
            };
            match self
                .store
                .outbox_drop_before(topic.id, e.partition() as u32, c.max(0) as u64)
            {
                Ok(0) => {}
                Ok(dropped) => warn!(
                    topic = %topic.name,
                    partition = e.partition(),
                    committed = c,
                    dropped,
                    "dropped undelivered outbox entries the group has since committed past under another owner"
                ),
                Err(e) => warn!("dropping stale outbox entries: {e}"),
            }
        }
    }

    /// The group's committed offsets of `tpl`'s partitions (absent where the
    /// group has none). Retried until `COMMITTED_TIMEOUT`: starting without
    /// them could replay a partition from a stale local checkpoint.
    pub(super) fn committed_offsets(
        &self,
        consumer: &BaseConsumer<MemberContext>,
        tpl: &TopicPartitionList,
    ) -> HashMap<TopicPartition, u64> {
        let deadline = Instant::now() + COMMITTED_TIMEOUT;
        loop {
            match consumer.committed_offsets(tpl.clone(), Duration::from_secs(5)) {
                Ok(list) => {
                    return list
                        .elements()
                        .iter()
                        .filter_map(|e| match e.offset() {
                            Offset::Offset(o) if o >= 0 => Some((
                                TopicPartition {
                                    topic: e.topic().to_owned(),
                                    partition: e.partition() as u32,
                                },
                                o as u64,
                            )),
                            _ => None,
                        })
                        .collect();
                }
                Err(e) if Instant::now() < deadline => {
                    warn!("reading the group's committed offsets failed, retrying: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => {
                    error!(
                        "reading the group's committed offsets failed; starting from local checkpoints: {e}"
                    );
                    return HashMap::new();
                }
            }
        }
    }

    pub(super) fn revoke(&self, consumer: &BaseConsumer<MemberContext>, tpl: &TopicPartitionList) {
        let partitions = tp_list(tpl);
        if partitions.is_empty() {
            return;
        }
        let lost = consumer.assignment_lost();
        let started = Instant::now();
        let deadline = started + self.revoke_timeout;
        {
            let mut buffers = self.buffers.lock().expect("buffers lock");
            for tp in &partitions {
                buffers.remove(&(tp.topic.clone(), tp.partition));
            }
        }
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
        let _ = self
            .events
            .send(GroupEvent::Revoked(partitions.clone(), Some(done_tx)));
        if done_rx.recv_timeout(self.revoke_timeout).is_err() {
            warn!(
                ?partitions,
                "workers did not finish their batches within revoke_timeout_ms; releasing anyway"
            );
        }
        if lost {
            self.release_leases(&partitions);
            let mut states = self.offsets.lock().expect("offsets lock");
            for tp in &partitions {
                states.remove(tp);
            }
            // Another member may already own them: committing would be refused
            // and could move the group's offsets under the new owner.
            warn!(
                ?partitions,
                "partitions lost (session timed out); released without committing"
            );
            return;
        }
        let delivered = self.wait_delivered(&partitions, deadline);
        self.commit(consumer, &partitions, CommitMode::Sync);
        self.release_leases(&partitions);
        let mut states = self.offsets.lock().expect("offsets lock");
        for tp in &partitions {
            states.remove(tp);
        }
        info!(
            ?partitions,
            delivered,
            took_ms = started.elapsed().as_millis() as u64,
            "partitions released"
        );
    }

    pub(super) fn release_leases(&self, partitions: &[TopicPartition]) {
        for tp in partitions {
            if let Some(topic) = self.topic(&tp.topic) {
                self.leases.release(topic.id, tp.partition);
            }
            self.claims.lock().expect("claims lock").remove(tp);
        }
    }

    /// Waits until the outbox holds nothing of `partitions` it may deliver,
    /// or `deadline`.
    pub(super) fn wait_delivered(&self, partitions: &[TopicPartition], deadline: Instant) -> bool {
        loop {
            let pending = partitions.iter().any(|tp| {
                self.topic(&tp.topic).is_some_and(|topic| {
                    if self.leases.deliverable(topic.id, tp.partition).is_none() {
                        return false;
                    }
                    let checkpoint = self.store.checkpoint(&topic, tp.partition).ok().flatten();
                    let deliverable = self
                        .store
                        .deliverable_offset(&topic, tp.partition)
                        .ok()
                        .flatten();
                    checkpoint.map(|c| c.next_offset) != deliverable
                })
            });
            if !pending {
                return true;
            }
            if Instant::now() >= deadline {
                warn!("outputs of released partitions not yet delivered; committing what was");
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Commits the delivered progress of `partitions` to the group, where it
    /// moved past what the group holds.
    pub(super) fn commit(
        &self,
        consumer: &BaseConsumer<MemberContext>,
        partitions: &[TopicPartition],
        mode: CommitMode,
    ) {
        let mut tpl = TopicPartitionList::new();
        {
            let mut states = self.offsets.lock().expect("offsets lock");
            for tp in partitions {
                let Some(topic) = self.topic(&tp.topic) else {
                    continue;
                };
                let topic = &topic;
                // Only a partition whose worker claimed and restored it, and
                // that no newer owner fenced, has progress of its own.
                if self.leases.deliverable(topic.id, tp.partition).is_none() {
                    continue;
                }
                let Ok(Some(offset)) = self.store.deliverable_offset(topic, tp.partition) else {
                    continue;
                };
                let state = states.entry(tp.clone()).or_default();
                let Some(offset) = state.to_commit(offset, mode) else {
                    continue;
                };
                state.sent = Some(offset);
                let _ = tpl.add_partition_offset(
                    &tp.topic,
                    tp.partition as i32,
                    Offset::Offset(offset as i64),
                );
            }
        }
        if tpl.count() == 0 {
            return;
        }
        let result = match mode {
            CommitMode::Async => consumer.commit(&tpl, mode).map_err(|e| e.to_string()),
            // Bounded: librdkafka's synchronous commit waits without end.
            CommitMode::Sync => super::commit_within(consumer, &tpl, self.revoke_timeout),
        };
        if matches!(mode, CommitMode::Sync) && result.is_ok() {
            let mut states = self.offsets.lock().expect("offsets lock");
            for e in tpl.elements() {
                if let (Some(state), Offset::Offset(o)) = (
                    states.get_mut(&TopicPartition {
                        topic: e.topic().to_owned(),
                        partition: e.partition() as u32,
                    }),
                    e.offset(),
                ) {
                    state.accepted = Some(o as u64);
                }
            }
        }
        if let Err(e) = result {
            // The mock cluster (and a broker mid-rebalance) refuses commits
            // during a rebalance; the next owner then starts from the last
            // accepted commit and replays — outputs may repeat, state does not.
            warn!("committing offsets failed: {e}");
        }
    }

    /// Moves an owned partition for an operator's reset: what was fetched
    /// goes, the consumer seeks to the new offset (librdkafka discards
    /// fetches of the old position), and the group commits it — the one
    /// commit allowed to move the group back.
    pub(super) fn move_offset(&self, consumer: &BaseConsumer<MemberContext>, m: Move) {
        let tp = TopicPartition {
            topic: m.topic.clone(),
            partition: m.partition,
        };
        let result = (|| {
            if !self.offsets.lock().expect("offsets lock").contains_key(&tp) {
                return Err(format!(
                    "{}/{} is no longer owned here",
                    m.topic, m.partition
                ));
            }
            if let Some(buffer) = self
                .buffers
                .lock()
                .expect("buffers lock")
                .get(&(m.topic.clone(), m.partition))
            {
                buffer.clear();
            }
            let offset = Offset::Offset(m.to as i64);
            consumer
                .seek(
                    &m.topic,
                    m.partition as i32,
                    offset,
                    Duration::from_secs(10),
                )
                .map_err(|e| format!("moving the fetch position: {e}"))?;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&m.topic, m.partition as i32, offset)
                .map_err(|e| e.to_string())?;
            super::commit_within(consumer, &tpl, self.revoke_timeout)
                .map_err(|e| format!("committing offset {} to the group: {e}", m.to))?;
            self.offsets.lock().expect("offsets lock").insert(
                tp.clone(),
                CommitState {
                    accepted: Some(m.to),
                    sent: None,
                },
            );
            info!(topic = %m.topic, partition = m.partition, to = m.to, "group offset moved by a reset");
            Ok(())
        })();
        let _ = m.done.send(result);
    }

    pub(super) fn record_generation(&self, consumer: &BaseConsumer<MemberContext>) {
        if let Some((generation, member_id)) = group_generation(consumer) {
            self.metrics.group_generation.set(generation as i64);
            self.live.update_group(|g| {
                g.generation = Some(generation);
                g.member_id = Some(member_id);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_only_move_the_group_forward_and_are_not_sent_twice() {
        let state = |accepted, sent| CommitState { accepted, sent };
        let (sync, periodic) = (CommitMode::Sync, CommitMode::Async);
        let table = [
            // nothing known of the group: commit what was delivered
            (state(None, None), 10, periodic, Some(10)),
            // behind or at what the group holds: never
            (state(Some(10), None), 9, periodic, None),
            (state(Some(10), None), 10, sync, None),
            (state(Some(10), None), 11, sync, Some(11)),
            // the same offset already in flight: not again, unless on revoke
            (state(Some(10), Some(12)), 12, periodic, None),
            (state(Some(10), Some(12)), 12, sync, Some(12)),
            (state(Some(10), Some(12)), 13, periodic, Some(13)),
        ];
        for (i, (state, delivered, mode, want)) in table.into_iter().enumerate() {
            assert_eq!(state.to_commit(delivered, mode), want, "row {i}");
        }
    }
}
