//! Prometheus metrics, served at `/metrics` in the OpenMetrics text format.
//!
//! Names carry their unit; labels stay low-cardinality: topic, partition,
//! plugin, and an error kind. Counters are bumped where things happen
//! (workers, daemon); lag, owned partitions and the registry's version
//! counters are brought up to date when `/metrics` is scraped.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::plugins::PluginReport;
use crate::status::StatusReport;

/// Labels of a per-partition series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    /// Source topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Routed plugin.
    pub plugin: String,
}

/// Labels of a per-partition error series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Source topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Routed plugin.
    pub plugin: String,
    /// `retry`, `poison`, `fatal`, `trap` or `limit`.
    pub kind: String,
}

/// Labels of a per-topic series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    /// Source topic.
    pub topic: String,
}

/// Labels of a per-plugin series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    /// Plugin name.
    pub plugin: String,
}

/// Labels of the lag series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LagLabels {
    /// Source topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
}

type Seconds = Family<TopicLabels, Histogram, fn() -> Histogram>;

/// Every metric the host exposes.
pub struct Metrics {
    registry: Registry,
    /// Records handled and committed.
    pub records_in: Family<PartitionLabels, Counter>,
    /// Records emitted by committed batches.
    pub records_out: Family<PartitionLabels, Counter>,
    /// Batches committed.
    pub batches: Family<PartitionLabels, Counter>,
    /// Time in `handle` per batch.
    pub batch_seconds: Seconds,
    /// Time to commit one checkpoint.
    pub commit_seconds: Seconds,
    /// Checkpoint transactions written (group commits).
    pub checkpoint_transactions: Counter,
    /// Batches per checkpoint transaction.
    pub checkpoint_group_batches: Histogram,
    /// Failed batches by kind.
    pub handler_errors: Family<ErrorLabels, Counter>,
    /// Batches retried.
    pub retries: Family<PartitionLabels, Counter>,
    /// Records written to the dead-letter topic.
    pub dead_letters: Family<PartitionLabels, Counter>,
    /// Version swaps.
    pub swaps: Family<PartitionLabels, Counter>,
    /// Swap pauses.
    pub swap_pause_seconds: Seconds,
    /// Time between a partition's checkpoint and its next batch's read,
    /// records waiting (no swap between).
    pub batch_wait_seconds: Seconds,
    /// Timers fired by committed `on-timers` calls.
    pub timers_fired: Family<PartitionLabels, Counter>,
    /// Timers set and not yet fired.
    pub timers_pending: Family<PartitionLabels, Gauge>,
    /// The partition's event-time watermark, seconds since the Unix epoch
    /// (Prometheus names units in full).
    pub watermark: Family<PartitionLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Linear memory of each partition's instance.
    pub instance_memory: Family<PartitionLabels, Gauge>,
    /// Records a route skipped because retention removed them first.
    pub skipped_records: Family<PartitionLabels, Counter>,
    retention_records: Family<TopicLabels, Counter>,
    retention_bytes: Family<TopicLabels, Counter>,
    /// Group rebalances (assignment changes) seen by this member.
    pub rebalances: Counter,
    /// Kafka: the consumer group generation this member is in.
    pub group_generation: Gauge,
    /// Kafka: outbox entries waiting for delivery.
    pub outbox_pending: Gauge,
    /// Kafka: outbox entries delivered and acknowledged.
    pub outbox_delivered: Counter,
    /// Kafka: changelog records read while restoring partitions.
    pub restored_records: Counter,
    /// Kafka: outbox producers rebuilt after a fatal error.
    pub producer_restarts: Counter,
    /// Outbound HTTP of handlers: requests, latency, denials.
    pub http: crate::egress::HttpMetrics,
    broker_up: Gauge,
    broker_down_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    outbox_stalled_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    lag: Family<LagLabels, Gauge>,
    owned: Gauge,
    rejected: Family<PluginLabels, Counter>,
    rolled_back: Family<PluginLabels, Counter>,
    fallback: Family<PluginLabels, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn latency() -> Histogram {
    // 50 µs to ~13 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 19))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("linecook");
        let m = Metrics {
            records_in: Family::default(),
            records_out: Family::default(),
            batches: Family::default(),
            batch_seconds: Family::new_with_constructor(latency),
            commit_seconds: Family::new_with_constructor(latency),
            checkpoint_transactions: Counter::default(),
            // 1 to 1024 batches.
            checkpoint_group_batches: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            handler_errors: Family::default(),
            retries: Family::default(),
            dead_letters: Family::default(),
            swaps: Family::default(),
            swap_pause_seconds: Family::new_with_constructor(latency),
            batch_wait_seconds: Family::new_with_constructor(latency),
            timers_fired: Family::default(),
            timers_pending: Family::default(),
            watermark: Family::default(),
            instance_memory: Family::default(),
            skipped_records: Family::default(),
            retention_records: Family::default(),
            retention_bytes: Family::default(),
            rebalances: Counter::default(),
            group_generation: Gauge::default(),
            outbox_pending: Gauge::default(),
            outbox_delivered: Counter::default(),
            producer_restarts: Counter::default(),
            broker_up: Gauge::default(),
            broker_down_seconds: Gauge::default(),
            outbox_stalled_seconds: Gauge::default(),
            restored_records: Counter::default(),
            http: crate::egress::HttpMetrics {
                requests: Family::default(),
                seconds: Family::new_with_constructor(latency),
                denied: Family::default(),
            },
            lag: Family::default(),
            owned: Gauge::default(),
            rejected: Family::default(),
            rolled_back: Family::default(),
            fallback: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "records_in",
            "Records handled and committed",
            m.records_in.clone(),
        );
        r.register(
            "records_out",
            "Records emitted by committed batches",
            m.records_out.clone(),
        );
        r.register("batches", "Batches committed", m.batches.clone());
        r.register(
            "checkpoint_transactions",
            "Checkpoint transactions written; each holds the batches of every partition ready to commit then (group commit)",
            m.checkpoint_transactions.clone(),
        );
        r.register(
            "checkpoint_group_batches",
            "Batches per checkpoint transaction",
            m.checkpoint_group_batches.clone(),
        );
        r.register_with_unit(
            "batch_handle",
            "Time in handle per batch",
            Unit::Seconds,
            m.batch_seconds.clone(),
        );
        r.register_with_unit(
            "checkpoint_commit",
            "Time to commit one checkpoint transaction",
            Unit::Seconds,
            m.commit_seconds.clone(),
        );
        r.register(
            "handler_errors",
            "Failed batches, by kind",
            m.handler_errors.clone(),
        );
        r.register("retries", "Failed batches retried", m.retries.clone());
        r.register(
            "dead_letters",
            "Records written to the dead-letter topic",
            m.dead_letters.clone(),
        );
        r.register("swaps", "Plugin version swaps", m.swaps.clone());
        r.register_with_unit(
            "swap_pause",
            "Time between the last batch of the old version and the first of the new",
            Unit::Seconds,
            m.swap_pause_seconds.clone(),
        );
        r.register_with_unit(
            "batch_wait",
            "Time between a partition's checkpoint and reading its next batch while records wait: queueing for a worker thread, plus the read",
            Unit::Seconds,
            m.batch_wait_seconds.clone(),
        );
        r.register(
            "timers_fired",
            "Timers fired by committed on-timers calls (contract 0.2.0)",
            m.timers_fired.clone(),
        );
        r.register(
            "timers_pending",
            "Timers set and not yet fired",
            m.timers_pending.clone(),
        );
        r.register_with_unit(
            "watermark",
            "Event-time watermark of the partition, as a Unix time",
            Unit::Seconds,
            m.watermark.clone(),
        );
        r.register_with_unit(
            "instance_memory",
            "Linear memory of the partition's instance",
            Unit::Bytes,
            m.instance_memory.clone(),
        );
        r.register(
            "skipped_records",
            "Records a route skipped because retention removed them before it handled them (on_truncated = \"earliest\")",
            m.skipped_records.clone(),
        );
        r.register(
            "retention_removed_records",
            "Records removed from the embedded log by retention, by topic",
            m.retention_records.clone(),
        );
        r.register_with_unit(
            "retention_removed",
            "Bytes of records removed from the embedded log by retention, by topic",
            Unit::Bytes,
            m.retention_bytes.clone(),
        );
        r.register(
            "rebalances",
            "Assignment changes seen by this member",
            m.rebalances.clone(),
        );
        r.register(
            "group_generation",
            "Consumer group generation (Kafka source)",
            m.group_generation.clone(),
        );
        r.register(
            "outbox_pending",
            "Outbox entries waiting for delivery to Kafka",
            m.outbox_pending.clone(),
        );
        r.register(
            "outbox_delivered",
            "Outbox entries delivered to Kafka and acknowledged",
            m.outbox_delivered.clone(),
        );
        r.register(
            "restored_records",
            "Changelog records read while restoring partition state",
            m.restored_records.clone(),
        );
        r.register(
            "http_requests",
            "Outbound HTTP requests of handlers, by route, allow entry and status class (error: no response)",
            m.http.requests.clone(),
        );
        r.register_with_unit(
            "http_request_duration",
            "Time from sending an outbound HTTP request to its response's headers",
            Unit::Seconds,
            m.http.seconds.clone(),
        );
        r.register(
            "http_denied",
            "Outbound HTTP requests the host refused, by route and reason",
            m.http.denied.clone(),
        );
        r.register(
            "producer_restarts",
            "Outbox producers rebuilt after a fatal error (Kafka source)",
            m.producer_restarts.clone(),
        );
        r.register(
            "broker_up",
            "1 while every broker this member uses is connected (Kafka source)",
            m.broker_up.clone(),
        );
        r.register(
            "broker_down_seconds",
            "Seconds since every broker was last connected, 0 while up (Kafka source)",
            m.broker_down_seconds.clone(),
        );
        r.register(
            "outbox_stalled_seconds",
            "Seconds the outbox has held entries without delivering any (Kafka source)",
            m.outbox_stalled_seconds.clone(),
        );
        r.register(
            "lag_records",
            "End offset minus committed offset",
            m.lag.clone(),
        );
        r.register(
            "owned_partitions",
            "Partitions this member owns",
            m.owned.clone(),
        );
        r.register(
            "plugin_versions_rejected",
            "Plugin versions rejected",
            m.rejected.clone(),
        );
        r.register(
            "plugin_fallback",
            "1 while a plugin is served by its last good version because its file could not be used at start",
            m.fallback.clone(),
        );
        r.register(
            "plugin_versions_rolled_back",
            "Plugin versions rolled back",
            m.rolled_back.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts what one retention transaction removed from `topic`.
    pub fn retention_removed(&self, topic: &str, records: u64, bytes: u64) {
        let labels = TopicLabels {
            topic: topic.to_owned(),
        };
        self.retention_records
            .get_or_create(&labels)
            .inc_by(records);
        self.retention_bytes.get_or_create(&labels).inc_by(bytes);
    }

    /// Brings the scrape-time series up to date and encodes everything.
    pub fn encode(&self, status: &StatusReport, plugins: &[PluginReport]) -> String {
        self.owned.set(
            status
                .partitions
                .iter()
                .filter(|p| p.state.is_some())
                .count() as i64,
        );
        if let Some(b) = &status.broker {
            self.broker_up.set(i64::from(b.up));
            self.broker_down_seconds.set(b.seconds_since_up);
        }
        if let Some(m) = &status.member {
            self.outbox_stalled_seconds.set(m.outbox_stalled_seconds);
        }
        for p in &status.partitions {
            self.lag
                .get_or_create(&LagLabels {
                    topic: p.topic.clone(),
                    partition: p.partition,
                })
                .set(p.lag as i64);
        }
        for plugin in plugins {
            let labels = PluginLabels {
                plugin: plugin.name.clone(),
            };
            catch_up(&self.rejected.get_or_create(&labels), plugin.rejected_total);
            catch_up(
                &self.rolled_back.get_or_create(&labels),
                plugin.rolled_back_total,
            );
            self.fallback
                .get_or_create(&labels)
                .set(i64::from(plugin.fallback.is_some()));
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encoding into a String cannot fail");
        out
    }
}

/// Raises a counter to `total` (counters kept elsewhere, mirrored here).
fn catch_up(counter: &Counter, total: u64) {
    let current = counter.get();
    if total > current {
        counter.inc_by(total - current);
    }
}
/// The classic Prometheus text format (0.0.4) of an OpenMetrics exposition,
/// for scrapers that ask for it: a counter family is named with its
/// `_total`, and the `# UNIT` and `# EOF` lines go.
pub fn to_classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => out.push_str(&line),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classic_text_names_counters_with_total_and_drops_unit_and_eof() {
        let openmetrics = "# HELP linecook_batches Batches committed.\n# TYPE linecook_batches counter\nlinecook_batches_total{topic=\"in\"} 3\n# HELP linecook_swap_pause_seconds Swap pauses.\n# TYPE linecook_swap_pause_seconds histogram\n# UNIT linecook_swap_pause_seconds seconds\nlinecook_swap_pause_seconds_sum 0.5\n# HELP linecook_owned_partitions Owned.\n# TYPE linecook_owned_partitions gauge\nlinecook_owned_partitions 2\n# EOF\n";
        assert_eq!(
            to_classic_text(openmetrics),
            "# HELP linecook_batches_total Batches committed.\n# TYPE linecook_batches_total counter\nlinecook_batches_total{topic=\"in\"} 3\n# HELP linecook_swap_pause_seconds Swap pauses.\n# TYPE linecook_swap_pause_seconds histogram\nlinecook_swap_pause_seconds_sum 0.5\n# HELP linecook_owned_partitions Owned.\n# TYPE linecook_owned_partitions gauge\nlinecook_owned_partitions 2\n"
        );
    }
}
