//! Delivering the outbox to the cluster.
//!
//! One thread reads the oldest entries, produces them with an idempotent
//! producer (`acks=all`, so the broker drops the producer's own retries),
//! and removes exactly the acknowledged ones. Within a round, every changelog
//! record is acknowledged before any output is sent: an output that reached
//! the cluster always has its batch's boundaries in the changelog, which is
//! what lets a new owner replay that batch with the same origin headers.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::ClientSettings;
use crate::metrics::Metrics;
use crate::outbox::{OutboxEntry, OutboxKey};
use crate::status::Live;
use crate::store::Store;

/// Entries per delivery round.
const ROUND: usize = 5_000;
/// Pause after a failed round.
const BACKOFF: Duration = Duration::from_millis(500);

/// The outbox's producer.
pub struct Deliverer {
    store: Arc<Store>,
    producer: FutureProducer,
    metrics: Arc<Metrics>,
    live: Arc<Live>,
}

impl Deliverer {
    /// An idempotent producer for the outbox of `store`.
    pub fn new(
        store: Arc<Store>,
        settings: &ClientSettings,
        metrics: Arc<Metrics>,
        live: Arc<Live>,
    ) -> anyhow::Result<Deliverer> {
        let mut config = settings.client_config();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5");
        // Keyed outputs land where a Java client would put them (murmur2).
        if !settings.properties.contains_key("partitioner") {
            config.set("partitioner", "murmur2_random");
        }
        let producer = config.create().context("creating the outbox producer")?;
        Ok(Deliverer {
            store,
            producer,
            metrics,
            live,
        })
    }

    /// Delivers until `stop` is cancelled and the outbox is empty, or until
    /// `stop` is cancelled and `grace` has passed since.
    pub fn run(self, stop: CancellationToken, grace: Duration, rt: tokio::runtime::Handle) {
        let mut outboxed = self.store.subscribe_outbox();
        let mut stop_deadline = None;
        loop {
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
            let entries = match self.store.outbox_peek(ROUND) {
                Ok(entries) => entries,
                Err(e) => {
                    warn!("reading the outbox failed: {e}");
                    std::thread::sleep(BACKOFF);
                    continue;
                }
            };
            let pending = self.store.outbox_len().unwrap_or(entries.len() as u64);
            self.metrics.outbox_pending.set(pending as i64);
            self.live.update_group(|g| g.outbox_pending = pending);
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
            if !self.round(&entries, &rt) {
                std::thread::sleep(BACKOFF);
            }
        }
    }

    /// Delivers one round; false if anything failed.
    fn round(&self, entries: &[(OutboxKey, OutboxEntry)], rt: &tokio::runtime::Handle) -> bool {
        let (changelog, outputs): (Vec<_>, Vec<_>) = entries.iter().partition(|(_, e)| e.changelog);
        let delivered = self.send_all(&changelog, rt);
        let complete = delivered.len() == changelog.len();
        let mut removed = delivered;
        let mut ok = complete;
        if complete {
            let delivered = self.send_all(&outputs, rt);
            ok = delivered.len() == outputs.len();
            removed.extend(delivered);
        }
        if let Err(e) = self.store.outbox_remove(&removed) {
            // Delivered but still in the outbox: delivered again later, a
            // duplicate with the same origin headers.
            warn!("removing delivered outbox entries failed: {e}");
            return false;
        }
        self.metrics.outbox_delivered.inc_by(removed.len() as u64);
        debug!(delivered = removed.len(), "outbox round");
        ok
    }

    /// Sends `entries` and waits for every acknowledgement; returns the keys
    /// acknowledged.
    fn send_all(
        &self,
        entries: &[&(OutboxKey, OutboxEntry)],
        rt: &tokio::runtime::Handle,
    ) -> Vec<OutboxKey> {
        let mut pending = Vec::with_capacity(entries.len());
        for (key, entry) in entries {
            let mut headers = OwnedHeaders::new_with_capacity(entry.headers.len());
            for (name, value) in &entry.headers {
                headers = headers.insert(Header {
                    key: name,
                    value: Some(value),
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
            for (key, future) in pending {
                match future.await {
                    Ok(Ok(_)) => acked.push(key),
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
