//! The consumer thread of a Kafka member.
//!
//! It never stops polling: records go into per-partition buffers, and a
//! partition whose buffer is full is paused (and resumed once its worker
//! caught up), so a slow handler or a swap never lets `max.poll.interval.ms`
//! run out. Rebalance callbacks run on this thread:
//! - assignment: each partition starts where `fence::start_from` says: its
//!   local checkpoint only if that is exactly the group's committed offset
//!   with nothing undelivered; otherwise the committed offset, after its
//!   worker claimed the partition and restored the state from the
//!   changelog; with neither, `auto_offset_reset`.
//! - revocation: the workers finish and checkpoint their batch in flight,
//!   the outbox delivers what those batches emitted, the offsets are
//!   committed, and only then is the partition given back — all bounded by
//!   `revoke_timeout_ms`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaResult;
use rdkafka::message::{Headers, Message};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use super::fence::{Leases, StartFrom, start_from};
use super::source::{PartitionBuffer, PartitionSource};
use super::{ClientSettings, changelog_topic, group_generation};
use crate::config::{Config, GroupProtocol, KafkaSource, OffsetReset};
use crate::group::{Assignment, BoxFuture, GroupEvent, GroupMember, TopicPartition};
use crate::log::TopicInfo;
use crate::metrics::Metrics;
use crate::record::LogRecord;
use crate::status::Live;
use crate::store::Store;

/// Poll timeout: also how often pauses, resumes and commits are looked at.
const POLL: Duration = Duration::from_millis(100);
/// How long to wait for the group's committed offsets on assignment.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(10);
/// How often outbox entries of partitions this member does not own are
/// checked against the group's offsets.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// A member of a Kafka consumer group.
pub struct KafkaMember {
    events: mpsc::UnboundedReceiver<GroupEvent>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Closed when the consumer thread has left the group.
    left: std::sync::mpsc::Receiver<()>,
    /// How long leaving may take before shutdown goes on without it.
    leave_timeout: Duration,
}

/// Beyond `revoke_timeout_ms`, what closing the consumer may take: the
/// LeaveGroup round trip and librdkafka's own teardown.
const LEAVE_GRACE: Duration = Duration::from_secs(10);

/// What the consumer thread shares with its rebalance callbacks.
struct Shared {
    store: Arc<Store>,
    topics: BTreeMap<String, TopicInfo>,
    group: String,
    settings: ClientSettings,
    protocol: GroupProtocol,
    reset: OffsetReset,
    revoke_timeout: Duration,
    buffer_limit: usize,
    events: mpsc::UnboundedSender<GroupEvent>,
    buffers: Mutex<HashMap<(String, u32), Arc<PartitionBuffer>>>,
    offsets: Mutex<HashMap<TopicPartition, CommitState>>,
    leases: Arc<Leases>,
    live: Arc<Live>,
    metrics: Arc<Metrics>,
}

/// What the group has of an owned partition's offset.
#[derive(Debug, Default, Clone, Copy)]
struct CommitState {
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

struct MemberContext(Arc<Shared>);

impl ClientContext for MemberContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => {
                error!(target: "librdkafka", "{fac}: {message}")
            }
            L::Warning => warn!(target: "librdkafka", "{fac}: {message}"),
            L::Notice | L::Info => info!(target: "librdkafka", "{fac}: {message}"),
            L::Debug => debug!(target: "librdkafka", "{fac}: {message}"),
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        warn!(target: "librdkafka", "{error}: {reason}");
        self.0.live.broker_error(
            format!("consumer: {error}: {reason}"),
            super::lost_connections(&error),
        );
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        self.0
            .live
            .set_brokers("consumer", &super::broker_states(&statistics));
        // The broker's end offsets, for lag in status and metrics.
        for (name, topic) in &statistics.topics {
            for (partition, p) in &topic.partitions {
                if *partition >= 0 && p.hi_offset >= 0 {
                    self.0
                        .live
                        .set_end(name, *partition as u32, p.hi_offset as u64);
                }
            }
        }
    }
}

impl ConsumerContext for MemberContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let shared = &self.0;
        shared.metrics.rebalances.inc();
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                shared.assign(consumer, tpl);
                let result = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = result {
                    error!("assigning partitions failed: {e}");
                }
            }
            other => {
                if other != RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS {
                    error!("rebalance error {other:?}: releasing the assignment");
                }
                shared.revoke(consumer, tpl);
                let result = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = result {
                    error!("releasing partitions failed: {e}");
                }
            }
        }
        // Not the generation: in the final revocation of a closing static
        // member, librdkafka tears the group handle down and silently drops
        // a metadata request, which would wait forever. The poll loop reads
        // it every round instead.
        shared.live.update_group(|g| g.rebalances += 1);
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        let mut states = self.0.offsets.lock().expect("offsets lock");
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
    fn assign(&self, consumer: &BaseConsumer<MemberContext>, tpl: &mut TopicPartitionList) {
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
            let Some(topic) = self.topics.get(&tp.topic) else {
                warn!(topic = %tp.topic, "assigned a partition of a topic that is not routed");
                continue;
            };
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
                }),
                tp,
            });
        }
        if !assignments.is_empty() {
            let _ = self.events.send(GroupEvent::Assigned(assignments));
        }
    }

    /// The partitions this member owns.
    fn owned(&self) -> Vec<TopicPartition> {
        let offsets = self.offsets.lock().expect("offsets lock");
        offsets.keys().cloned().collect()
    }

    /// Drops outbox entries of partitions this member does not own that the
    /// group has committed past: left by an earlier run, redone by another
    /// owner since.
    fn sweep(&self, consumer: &BaseConsumer<MemberContext>) {
        let Ok(partitions) = self.store.outbox_partitions() else {
            return;
        };
        let owned = self.owned();
        let mut tpl = TopicPartitionList::new();
        for (id, partition) in partitions {
            let Some(topic) = self.topics.values().find(|t| t.id == id) else {
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
            let (Some(topic), Offset::Offset(c)) = (self.topics.get(e.topic()), e.offset()) else {
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
    fn committed_offsets(
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

    fn revoke(&self, consumer: &BaseConsumer<MemberContext>, tpl: &TopicPartitionList) {
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

    fn release_leases(&self, partitions: &[TopicPartition]) {
        for tp in partitions {
            if let Some(topic) = self.topics.get(&tp.topic) {
                self.leases.release(topic.id, tp.partition);
            }
        }
    }

    /// Waits until the outbox holds nothing of `partitions` it may deliver,
    /// or `deadline`.
    fn wait_delivered(&self, partitions: &[TopicPartition], deadline: Instant) -> bool {
        loop {
            let pending = partitions.iter().any(|tp| {
                self.topics.get(&tp.topic).is_some_and(|topic| {
                    if self.leases.deliverable(topic.id, tp.partition).is_none() {
                        return false;
                    }
                    let checkpoint = self.store.checkpoint(topic, tp.partition).ok().flatten();
                    let deliverable = self
                        .store
                        .deliverable_offset(topic, tp.partition)
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
    fn commit(
        &self,
        consumer: &BaseConsumer<MemberContext>,
        partitions: &[TopicPartition],
        mode: CommitMode,
    ) {
        let mut tpl = TopicPartitionList::new();
        {
            let mut states = self.offsets.lock().expect("offsets lock");
            for tp in partitions {
                let Some(topic) = self.topics.get(&tp.topic) else {
                    continue;
                };
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

    fn record_generation(&self, consumer: &BaseConsumer<MemberContext>) {
        if let Some((generation, member_id)) = group_generation(consumer) {
            self.metrics.group_generation.set(generation as i64);
            self.live.update_group(|g| {
                g.generation = Some(generation);
                g.member_id = Some(member_id);
            });
        }
    }
}

impl KafkaMember {
    /// Joins the group of `config` and starts consuming its routed topics.
    pub fn start(
        config: &Config,
        source: &KafkaSource,
        store: Arc<Store>,
        topics: BTreeMap<String, TopicInfo>,
        leases: Arc<Leases>,
        live: Arc<Live>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<KafkaMember> {
        let settings = ClientSettings::new(source);
        let mut client = settings.consumer_config();
        client
            .set("group.id", &config.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("statistics.interval.ms", "1000")
            .set(
                "auto.offset.reset",
                match source.auto_offset_reset {
                    OffsetReset::Earliest => "earliest",
                    OffsetReset::Latest => "latest",
                },
            );
        match source.group_protocol {
            GroupProtocol::Classic => {
                client
                    .set("partition.assignment.strategy", source.assignment.as_str())
                    .set("session.timeout.ms", source.session_timeout_ms.to_string());
            }
            GroupProtocol::Consumer => {
                client.set("group.protocol", "consumer");
            }
        }
        if let Some(id) = &source.group_instance_id {
            client.set("group.instance.id", id);
        }
        let (events_tx, events) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            store,
            group: config.group.clone(),
            settings,
            protocol: source.group_protocol,
            reset: source.auto_offset_reset,
            revoke_timeout: Duration::from_millis(source.revoke_timeout_ms),
            buffer_limit: (config.max_batch as usize * 4).max(1000),
            events: events_tx,
            buffers: Mutex::default(),
            offsets: Mutex::default(),
            leases,
            live,
            metrics,
            topics,
        });
        let consumer: BaseConsumer<MemberContext> = client
            .create_with_context(MemberContext(shared.clone()))
            .context("creating the Kafka consumer")?;
        let names: Vec<&str> = shared.topics.keys().map(String::as_str).collect();
        consumer
            .subscribe(&names)
            .context("subscribing to the routed topics")?;
        shared
            .live
            .update_group(|g| g.protocol = Some(format!("{:?}", shared.protocol).to_lowercase()));
        let stop = Arc::new(AtomicBool::new(false));
        let commit_every = Duration::from_millis(source.commit_interval_ms);
        let (left_tx, left) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("lc-consumer".into())
            .spawn({
                let stop = stop.clone();
                move || {
                    poll_loop(consumer, shared, stop, commit_every);
                    drop(left_tx);
                }
            })?;
        Ok(KafkaMember {
            events,
            stop,
            thread: Some(thread),
            left,
            leave_timeout: Duration::from_millis(source.revoke_timeout_ms) + LEAVE_GRACE,
        })
    }
}

impl GroupMember for KafkaMember {
    fn next_event(&mut self) -> BoxFuture<'_, anyhow::Result<Option<GroupEvent>>> {
        Box::pin(async { Ok(self.events.recv().await) })
    }

    fn leave(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Drop for KafkaMember {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let Some(thread) = self.thread.take() else {
            return;
        };
        // Every librdkafka call on the way out has its own bound, but the
        // client's close is librdkafka's: shutdown must not hang on it.
        match self.left.recv_timeout(self.leave_timeout) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => error!(
                timeout_ms = self.leave_timeout.as_millis() as u64,
                "leaving the consumer group did not finish in time; shutting down without waiting (the group notices at the session timeout)"
            ),
            _ => {
                let _ = thread.join();
            }
        }
    }
}

fn poll_loop(
    consumer: BaseConsumer<MemberContext>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    commit_every: Duration,
) {
    let mut paused: Vec<(String, u32)> = Vec::new();
    let mut last_commit = Instant::now();
    let mut last_sweep = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        match consumer.poll(POLL) {
            Some(Ok(message)) => {
                let key = (message.topic().to_owned(), message.partition() as u32);
                let buffer = shared
                    .buffers
                    .lock()
                    .expect("buffers lock")
                    .get(&key)
                    .cloned();
                // A record of a partition just revoked has nowhere to go.
                if let Some(buffer) = buffer {
                    let headers = message
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                                .collect()
                        })
                        .unwrap_or_default();
                    let waiting = buffer.push(LogRecord {
                        partition: key.1,
                        offset: message.offset() as u64,
                        timestamp_ms: message.timestamp().to_millis().unwrap_or(0),
                        key: message.key().map(<[u8]>::to_vec),
                        value: message.payload().unwrap_or_default().to_vec(),
                        headers,
                    });
                    if waiting >= shared.buffer_limit && !paused.contains(&key) {
                        let mut tpl = TopicPartitionList::new();
                        tpl.add_partition(&key.0, key.1 as i32);
                        match consumer.pause(&tpl) {
                            Ok(()) => paused.push(key),
                            Err(e) => warn!("pausing {}/{} failed: {e}", key.0, key.1),
                        }
                    }
                }
            }
            Some(Err(e)) => warn!("consumer error: {e}"),
            None => {}
        }
        // Resume partitions whose workers caught up (or were released).
        paused.retain(|key| {
            let buffers = shared.buffers.lock().expect("buffers lock");
            let drained = buffers
                .get(key)
                .is_none_or(|b| b.len() < shared.buffer_limit / 2);
            if drained {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(&key.0, key.1 as i32);
                if buffers.contains_key(key)
                    && let Err(e) = consumer.resume(&tpl)
                {
                    warn!("resuming {}/{} failed: {e}", key.0, key.1);
                }
            }
            !drained
        });
        // The generation can move without a callback here (a rebalance that
        // changes nothing for this member), so it is read every round.
        shared.record_generation(&consumer);
        if last_commit.elapsed() >= commit_every {
            last_commit = Instant::now();
            let owned = shared.owned();
            shared.commit(&consumer, &owned, CommitMode::Async);
        }
        if last_sweep.elapsed() >= SWEEP_EVERY {
            last_sweep = Instant::now();
            shared.sweep(&consumer);
        }
    }
    info!("leaving the consumer group");
    // Closing runs the final revocation (drain, deliver, commit) through the
    // rebalance callback on this thread.
    drop(consumer);
    info!("left the consumer group");
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
