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

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaResult;
use rdkafka::message::{Headers, Message};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, TopicPartitionList};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use super::ClientSettings;
use super::fence::Leases;
use super::ownership::Shared;
use crate::config::{Config, GroupProtocol, KafkaSource, OffsetReset};
use crate::group::{BoxFuture, GroupEvent, GroupMember};
use crate::log::TopicInfo;
use crate::metrics::Metrics;
use crate::record::LogRecord;
use crate::status::Live;
use crate::store::Store;

/// Poll timeout: also how often pauses, resumes and commits are looked at.
const POLL: Duration = Duration::from_millis(100);
/// How often outbox entries of partitions this member does not own are
/// checked against the group's offsets.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// A member of a Kafka consumer group.
pub struct KafkaMember {
    events: mpsc::UnboundedReceiver<GroupEvent>,
    /// Weak: `Shared` holds the events' sender, and `events` must end once
    /// the consumer thread has left.
    shared: std::sync::Weak<Shared>,
    /// Topic sets for the consumer thread to subscribe to (a reload).
    subscriptions: std::sync::mpsc::Sender<BTreeMap<String, TopicInfo>>,
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

/// The consumer's callbacks: librdkafka runs them on the consumer thread.
pub(super) struct MemberContext(Arc<Shared>);

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
        self.0.on_commit(result, offsets);
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
        let (moves_tx, moves) = std::sync::mpsc::channel();
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
            topics: Mutex::new(topics),
            claims: Mutex::default(),
            moves: moves_tx,
        });
        let consumer: BaseConsumer<MemberContext> = client
            .create_with_context(MemberContext(shared.clone()))
            .context("creating the Kafka consumer")?;
        let names: Vec<String> = shared
            .topics
            .lock()
            .expect("topics lock")
            .keys()
            .cloned()
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        consumer
            .subscribe(&names)
            .context("subscribing to the routed topics")?;
        let (subscriptions_tx, subscriptions) = std::sync::mpsc::channel();
        shared
            .live
            .update_group(|g| g.protocol = Some(format!("{:?}", shared.protocol).to_lowercase()));
        let stop = Arc::new(AtomicBool::new(false));
        let commit_every = Duration::from_millis(source.commit_interval_ms);
        let (left_tx, left) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("lc-consumer".into())
            .spawn({
                let (stop, shared) = (stop.clone(), shared.clone());
                move || {
                    poll_loop(consumer, shared, stop, commit_every, moves, subscriptions);
                    drop(left_tx);
                }
            })?;
        Ok(KafkaMember {
            events,
            shared: Arc::downgrade(&shared),
            subscriptions: subscriptions_tx,
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

    fn restart(&self, tp: &crate::group::TopicPartition) -> Option<Box<dyn crate::source::Source>> {
        self.shared
            .upgrade()?
            .restart_source(tp)
            .map(|s| Box::new(s) as Box<dyn crate::source::Source>)
    }

    fn subscribe(&self, topics: BTreeMap<String, TopicInfo>) -> anyhow::Result<()> {
        self.subscriptions
            .send(topics)
            .map_err(|_| anyhow::anyhow!("the consumer has stopped"))
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
    moves: std::sync::mpsc::Receiver<super::ownership::Move>,
    subscriptions: std::sync::mpsc::Receiver<BTreeMap<String, TopicInfo>>,
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
        for m in moves.try_iter() {
            shared.move_offset(&consumer, m);
        }
        if let Some(topics) = subscriptions.try_iter().last() {
            // Known topics are kept (see `Shared::topics`); the subscription
            // is exactly the routed ones. With cooperative assignment only
            // the partitions of added and dropped topics move.
            let names: Vec<&str> = topics.keys().map(String::as_str).collect();
            match consumer.subscribe(&names) {
                Ok(()) => info!(topics = ?names, "subscribed to the routed topics"),
                Err(e) => error!("subscribing to {names:?} failed: {e}"),
            }
            shared.topics.lock().expect("topics lock").extend(topics);
        }
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
