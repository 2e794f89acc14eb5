//! Delivering the outbox to the cluster.
//!
//! One thread reads the oldest entries of the partitions this member holds
//! a lease for (`fence`), produces them with an idempotent producer
//! (`acks=all`, so the broker drops the producer's own retries), and removes
//! exactly the acknowledged ones. Within a round, every changelog record is
//! acknowledged — and read back, to be sure no newer owner claimed the
//! partition before it landed — before any output is sent: an output that
//! reached the cluster always has its batch's boundaries in the changelog
//! ahead of any newer claim, which is what lets a new owner replay that
//! batch with the same origin headers.
//!
//! A round belongs to the leases it started under. Its changelog records
//! may be acknowledged long after they were sent (a broker outage), by when
//! the partition may have been lost and claimed again — by this member, at
//! a newer epoch, with the old batches dropped and redone. Such a round
//! delivers and removes nothing more of that partition: its outputs belong
//! to batches the new epoch never saw.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use super::ClientSettings;
use super::fence::Leases;
use super::restore::{Kind, Reader};
use crate::metrics::Metrics;
use crate::outbox::{OutboxEntry, OutboxKey, batch_headers};
use crate::status::Live;
use crate::store::Store;

/// The epoch of each lease a round started under, by (source topic id,
/// partition).
type Epochs = BTreeMap<(u32, u32), u64>;

/// Entries per delivery round.
const ROUND: usize = 5_000;
/// Pause after a failed round.
const BACKOFF: Duration = Duration::from_millis(500);
/// How often a round waiting for acknowledgements looks for a fatal error:
/// after one, librdkafka may never answer the messages it holds.
const FATAL_CHECK: Duration = Duration::from_millis(200);

/// The producer's context: broker states and errors go to status.
struct DeliveryContext(Arc<Live>);

impl ClientContext for DeliveryContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        warn!(target: "librdkafka", "producer: {error}: {reason}");
        self.0.broker_error(
            format!("producer: {error}: {reason}"),
            super::lost_connections(&error),
        );
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        self.0
            .set_brokers("producer", &super::broker_states(&statistics));
    }
}

/// The outbox's producer.
pub struct Deliverer {
    store: Arc<Store>,
    config: ClientConfig,
    producer: FutureProducer<DeliveryContext>,
    leases: Arc<Leases>,
    /// Reads the changelog back; replaced after a failed read (see `check`).
    reader: std::cell::RefCell<Option<Reader>>,
    settings: ClientSettings,
    group: String,
    metrics: Arc<Metrics>,
    live: Arc<Live>,
}

impl Deliverer {
    /// An idempotent producer for the outbox of `store`.
    pub fn new(
        store: Arc<Store>,
        settings: &ClientSettings,
        group: &str,
        leases: Arc<Leases>,
        metrics: Arc<Metrics>,
        live: Arc<Live>,
    ) -> anyhow::Result<Deliverer> {
        let mut config = settings.client_config();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("statistics.interval.ms", "1000");
        // Keyed outputs land where a Java client would put them (murmur2).
        if !settings.properties.contains_key("partitioner") {
            config.set("partitioner", "murmur2_random");
        }
        let producer = config
            .create_with_context(DeliveryContext(live.clone()))
            .context("creating the outbox producer")?;
        Ok(Deliverer {
            store,
            config,
            producer,
            leases,
            reader: std::cell::RefCell::new(Some(Reader::new(settings, group)?)),
            settings: settings.clone(),
            group: group.to_owned(),
            metrics,
            live,
        })
    }

    /// Delivers until `stop` is cancelled and the outbox is empty, or until
    /// `stop` is cancelled and `grace` has passed since.
    pub fn run(mut self, stop: CancellationToken, grace: Duration, rt: tokio::runtime::Handle) {
        let mut outboxed = self.store.subscribe_outbox();
        let mut stop_deadline = None;
        loop {
            self.recover_from_fatal();
            if stop.is_cancelled() {
                let deadline =
                    *stop_deadline.get_or_insert_with(|| std::time::Instant::now() + grace);
                if std::time::Instant::now() >= deadline {
                    warn!(
                        "stopping with undelivered outbox entries; they are delivered at the next start"
                    );
                    return;
                }
            }
            outboxed.borrow_and_update();
            let epochs = self.leases.deliverable_all();
            let entries = match self
                .store
                .outbox_peek_where(ROUND, |t, p| epochs.contains_key(&(t, p)))
            {
                Ok(entries) => entries,
                Err(e) => {
                    warn!("reading the outbox failed: {e}");
                    std::thread::sleep(BACKOFF);
                    continue;
                }
            };
            if entries.is_empty() {
                if stop.is_cancelled() {
                    return;
                }
                rt.block_on(async {
                    tokio::select! {
                        _ = outboxed.changed() => {}
                        _ = stop.cancelled() => {}
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                });
                continue;
            }
            if !self.round(&entries, &epochs, &rt) {
                std::thread::sleep(BACKOFF);
            }
        }
    }

    /// After a fatal error (an idempotence sequence desynchronization, a
    /// fenced or unauthorized producer) librdkafka's producer refuses
    /// everything: build a new one. What the old one did not get
    /// acknowledged is still in the outbox and is sent again, in order, by
    /// the next round; a copy that did land keeps its origin headers.
    fn recover_from_fatal(&mut self) {
        let Some((code, reason)) = self.producer.client().fatal_error() else {
            return;
        };
        error!(
            "the outbox producer hit a fatal error ({code}: {reason}); building a new one and sending undelivered entries again"
        );
        self.live
            .broker_error(format!("producer fatal error {code}: {reason}"), false);
        loop {
            match self
                .config
                .create_with_context(DeliveryContext(self.live.clone()))
            {
                Ok(producer) => {
                    self.producer = producer;
                    self.metrics.producer_restarts.inc();
                    self.live.update_group(|g| g.producer_restarts += 1);
                    return;
                }
                Err(e) => {
                    error!("building a new outbox producer failed, retrying: {e}");
                    std::thread::sleep(BACKOFF * 4);
                }
            }
        }
    }

    /// Delivers one round of entries read under the leases of `epochs`;
    /// false if anything failed.
    fn round(
        &self,
        entries: &[(OutboxKey, OutboxEntry)],
        epochs: &Epochs,
        rt: &tokio::runtime::Handle,
    ) -> bool {
        let (changelog, outputs): (Vec<_>, Vec<_>) = entries.iter().partition(|(_, e)| e.changelog);
        let acked = self.send_all(&changelog, epochs, rt);
        let mut ok = acked.len() == changelog.len();
        // The newest changelog record acknowledged per source partition.
        // A source partition's changelog records all go to its route's one
        // changelog topic.
        let changelog_of: BTreeMap<(u32, u32), &str> = changelog
            .iter()
            .map(|(k, e)| ((k.0, k.1), e.topic.as_str()))
            .collect();
        let mut newest: BTreeMap<(u32, u32), (&str, u32, u64)> = BTreeMap::new();
        for (key, partition, offset) in &acked {
            let slot = newest.entry((key.0, key.1)).or_insert((
                changelog_of[&(key.0, key.1)],
                *partition,
                *offset,
            ));
            slot.2 = slot.2.max(*offset);
        }
        let mut checked = BTreeSet::new();
        for ((topic_id, partition), (changelog_topic, changelog_partition, offset)) in newest {
            if self.check(
                (topic_id, partition),
                epochs[&(topic_id, partition)],
                (changelog_topic, changelog_partition),
                offset,
            ) {
                checked.insert((topic_id, partition));
            } else {
                ok = false;
            }
        }
        // A changelog record not read back is sent again next round: the
        // outputs of its batch wait for that.
        let mut removed: Vec<OutboxKey> = acked
            .into_iter()
            .map(|(key, ..)| key)
            .filter(|k| checked.contains(&(k.0, k.1)))
            .collect();
        // Outputs also wait for every changelog record of their partition
        // in this round: a timer firing's record, last of its changelog
        // records, says to a new owner that all of them landed, so no output
        // may leave before it.
        let landed: BTreeSet<OutboxKey> = removed.iter().copied().collect();
        let pending: BTreeSet<(u32, u32)> = changelog
            .iter()
            .filter(|(k, _)| !checked.contains(&(k.0, k.1)) || !landed.contains(k))
            .map(|(k, _)| (k.0, k.1))
            .collect();
        let sendable: Vec<_> = outputs
            .into_iter()
            .filter(|(k, _)| {
                !pending.contains(&(k.0, k.1))
                    && self.leases.deliverable(k.0, k.1) == Some(epochs[&(k.0, k.1)])
            })
            .collect();
        let delivered = self.send_all(&sendable, epochs, rt);
        ok &= delivered.len() == sendable.len();
        removed.extend(delivered.into_iter().map(|(key, ..)| key));
        // Under the leases' lock: once a newer lease of a partition is taken
        // its new batches may reuse these keys, and they are not ours.
        let removing = self.leases.while_held(|held| {
            removed.retain(|k| held(k.0, k.1, epochs[&(k.0, k.1)]));
            self.store.outbox_remove(&removed)
        });
        if let Err(e) = removing {
            // Delivered but still in the outbox: delivered again later, a
            // duplicate with the same origin headers.
            warn!("removing delivered outbox entries failed: {e}");
            return false;
        }
        debug!(delivered = removed.len(), "outbox round");
        ok
    }

    /// Reads changelog `changelog` back from where the lease of `source`
    /// was last checked to `newest`: false if that failed or found a newer
    /// owner's claim (then the lease is fenced). Writes of older owners that
    /// landed after our claim get the key's current value written again, so
    /// compaction keeps ours.
    fn check(&self, source: (u32, u32), epoch: u64, changelog: (&str, u32), newest: u64) -> bool {
        let Some(lease) = self.leases.get(source.0, source.1) else {
            return false;
        };
        if lease.fenced.is_some() {
            return false;
        }
        if lease.epoch != epoch {
            warn!(
                changelog = changelog.0,
                partition = changelog.1,
                "the partition was claimed again (epoch {} → {}) while this round's changelog records were unacknowledged; its outputs are dropped with the batches they came from",
                epoch,
                lease.epoch
            );
            return false;
        }
        let mut newer = None;
        let mut late: Vec<Vec<u8>> = Vec::new();
        let mut reader = self.reader.borrow_mut();
        if reader.is_none() {
            *reader = Reader::new(&self.settings, &self.group)
                .map_err(|e| warn!("creating the changelog reader: {e:#}"))
                .ok();
        }
        let Some(consumer) = reader.as_ref() else {
            return false;
        };
        let read = consumer.read(
            changelog,
            lease.checked..newest + 1,
            &CancellationToken::new(),
            |_| {},
            |e| match e.kind {
                Kind::Claim if e.epoch > lease.epoch => newer = newer.max(Some(e.epoch)),
                Kind::State { key, .. } if e.epoch < lease.epoch => late.push(key.to_vec()),
                _ => {}
            },
        );
        if let Err(e) = read {
            // A fresh client next time: re-assigning a client whose last
            // assignment never started fetching (the broker was gone) trips
            // an assertion in librdkafka's assignment code.
            *reader = None;
            warn!(
                changelog = changelog.0,
                partition = changelog.1,
                "reading the changelog back failed; its outputs wait: {e:#}"
            );
            return false;
        }
        if let Some(epoch) = newer {
            let why = format!(
                "changelog `{}`/{} was claimed by a newer owner (epoch {epoch} > ours, {}): this member lost the partition; nothing more of it is delivered",
                changelog.0, changelog.1, lease.epoch
            );
            error!("{why}");
            self.leases.fence(source.0, source.1, lease.epoch, why);
            return false;
        }
        if !late.is_empty() {
            match self
                .store
                .outbox_repair(source.0, source.1, changelog, &late)
            {
                Ok(n) => warn!(
                    changelog = changelog.0,
                    partition = changelog.1,
                    keys = n,
                    "an older owner's state writes landed after our claim; writing the current values again"
                ),
                Err(e) => {
                    warn!("queueing changelog repairs failed: {e}");
                    return false;
                }
            }
        }
        self.leases
            .checked(source.0, source.1, lease.epoch, newest + 1);
        true
    }

    /// Sends `entries` and waits for every acknowledgement; returns the keys
    /// acknowledged with the partition and offset each landed at. Changelog
    /// records carry the epoch of the lease they are delivered under.
    fn send_all(
        &self,
        entries: &[&(OutboxKey, OutboxEntry)],
        epochs: &Epochs,
        rt: &tokio::runtime::Handle,
    ) -> Vec<(OutboxKey, u32, u64)> {
        let mut pending = Vec::with_capacity(entries.len());
        for (key, entry) in entries {
            let mut headers = OwnedHeaders::new_with_capacity(entry.headers.len() + 1);
            for (name, value) in &entry.headers {
                headers = headers.insert(Header {
                    key: name,
                    value: Some(value),
                });
            }
            if entry.changelog {
                let epoch = epochs[&(key.0, key.1)].to_string();
                headers = headers.insert(Header {
                    key: batch_headers::EPOCH,
                    value: Some(&epoch),
                });
            }
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&entry.topic).headers(headers);
            if let Some(k) = &entry.key {
                record = record.key(k.as_slice());
            }
            if let Some(v) = &entry.value {
                record = record.payload(v.as_slice());
            }
            if let Some(p) = entry.partition {
                record = record.partition(p as i32);
            }
            if let Some(ts) = entry.timestamp_ms {
                record = record.timestamp(ts);
            }
            loop {
                match self.producer.send_result(record) {
                    Ok(future) => {
                        pending.push((*key, future));
                        break;
                    }
                    Err((
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull,
                        ),
                        back,
                    )) => {
                        record = back;
                        self.producer.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => {
                        warn!(topic = %entry.topic, "producing an outbox entry failed: {e}");
                        break;
                    }
                }
            }
        }
        rt.block_on(async {
            let mut acked = Vec::with_capacity(pending.len());
            for (key, mut future) in pending {
                let result = loop {
                    tokio::select! {
                        result = &mut future => break result,
                        _ = tokio::time::sleep(FATAL_CHECK) => {
                            if self.producer.client().fatal_error().is_some() {
                                return acked;
                            }
                        }
                    }
                };
                match result {
                    Ok(Ok(d)) => {
                        // Counted as they come, so status moves during a
                        // long round.
                        self.metrics.outbox_delivered.inc();
                        acked.push((key, d.partition as u32, d.offset as u64));
                    }
                    Ok(Err((e, message))) => {
                        use rdkafka::Message;
                        warn!(topic = %message.topic(), "delivering an outbox entry failed: {e}");
                    }
                    Err(_) => warn!("the producer stopped before acknowledging"),
                }
            }
            acked
        })
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::Message as _;
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::message::Headers as _;
    use rdkafka::mocking::MockCluster;

    use super::*;
    use crate::checkpoint::BatchCommit;
    use crate::record::{BatchEffects, OutputRecord};

    /// Every record of `topic`/0 as (key, value, epoch header).
    fn read_all(brokers: &str, topic: &str) -> Vec<(Vec<u8>, Vec<u8>, Option<String>)> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "read_all")
            .create()
            .unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
            .unwrap();
        consumer.assign(&tpl).unwrap();
        let mut out = Vec::new();
        let until = std::time::Instant::now() + Duration::from_secs(3);
        while std::time::Instant::now() < until {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                let epoch = m.headers().and_then(|h| {
                    h.iter()
                        .find(|h| h.key == batch_headers::EPOCH)
                        .and_then(|h| h.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                });
                out.push((
                    m.key().unwrap_or_default().to_vec(),
                    m.payload().unwrap_or_default().to_vec(),
                    epoch,
                ));
            }
        }
        out
    }

    /// The flake once seen in tests/kafka.rs's long broker outage, made
    /// deterministic: a round's changelog records are stuck in the producer
    /// while the partition is lost and claimed again by this member; when
    /// the broker returns, the old round must deliver none of its outputs
    /// (the new epoch dropped and redoes those batches, formed its own way,
    /// so they would be counted twice under different origins).
    #[test]
    fn a_round_that_outlives_its_lease_delivers_none_of_its_outputs() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("changelog", 1, 1).unwrap();
        mock.create_topic("out", 1, 1).unwrap();
        let brokers = mock.bootstrap_servers();
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let topic = store.create_topic("in", 1).unwrap();
        let effects = BatchEffects {
            state: [(b"k".to_vec(), Some(b"1".to_vec()))].into(),
            outputs: vec![OutputRecord {
                topic: "out".into(),
                key: Some(b"k".to_vec()),
                value: b"k:1".to_vec(),
                headers: vec![],
                timestamp_ms: None,
            }],
            ..BatchEffects::default()
        };
        store
            .commit_batch(BatchCommit {
                topic: &topic,
                partition: 0,
                first_offset: 0,
                next_offset: 1,
                version: "v",
                effects: &effects,
                changelog: Some("changelog"),
                firing_seq: None,
            })
            .unwrap();
        let settings = ClientSettings {
            brokers: brokers.clone(),
            properties: Default::default(),
            session_timeout_ms: None,
        };
        let leases = Arc::new(Leases::default());
        leases.take(topic.id, 0, 2, 0);
        let rt = tokio::runtime::Runtime::new().unwrap();
        let deliverer = Deliverer::new(
            store.clone(),
            &settings,
            "test",
            leases.clone(),
            Arc::new(Metrics::new()),
            Arc::new(Live::default()),
        )
        .unwrap();
        let epochs = leases.deliverable_all();
        let entries = store.outbox_peek(ROUND).unwrap();
        assert_eq!(entries.len(), 3, "state write, marker, output: {entries:?}");

        // As after a read-back that failed when the outage began: the
        // round's check makes a fresh reader, which works once the broker is
        // back.
        *deliverer.reader.borrow_mut() = None;
        // The round sends its changelog records, which wait for the broker.
        mock.broker_down(1).unwrap();
        let round = {
            let rt = rt.handle().clone();
            std::thread::spawn(move || deliverer.round(&entries, &epochs, &rt))
        };
        std::thread::sleep(Duration::from_millis(500));
        // Lost, then claimed again at epoch 3: the restore drops the old
        // batches before the new lease is taken.
        leases.release(topic.id, 0);
        store.outbox_drop_before(topic.id, 0, u64::MAX).unwrap();
        leases.take(topic.id, 0, 3, 0);
        mock.broker_up(1).unwrap();
        let finished = round.join().unwrap();

        let changelog = read_all(&brokers, "changelog");
        assert!(
            changelog
                .iter()
                .any(|(_, v, epoch)| v == b"1" && epoch.as_deref() == Some("2")),
            "the old round's state write did land (under epoch 2): {changelog:?}"
        );
        assert_eq!(
            read_all(&brokers, "out"),
            vec![],
            "an output of a batch the new epoch redoes was delivered"
        );
        assert!(!finished, "the round reports it did not finish");
    }
}
