//! A Kafka topic as the records of `linecook replay`: read with a consumer
//! that joins no group and commits nothing, so the group's members and
//! offsets are untouched.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::ClientSettings;
use crate::config::KafkaSource;
use crate::record::LogRecord;

const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a read may wait for a record it knows is there.
const FETCH_WAIT: Duration = Duration::from_secs(30);

/// Reads a topic's partitions for a replay.
pub struct TopicReader {
    consumer: BaseConsumer,
    brokers: String,
    /// The partition assigned and the offset the next poll returns.
    at: Option<(u32, u64)>,
    ends: Vec<u64>,
}

impl TopicReader {
    /// A reader of the cluster `source` names.
    pub fn new(source: &KafkaSource) -> anyhow::Result<TopicReader> {
        let mut config = ClientSettings::new(source).client_config();
        // Assigned partitions only: no group is joined, nothing committed.
        config
            .set("group.id", "linecook-replay")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest");
        Ok(TopicReader {
            consumer: config.create().context("creating a Kafka client")?,
            brokers: source.brokers.clone(),
            at: None,
            ends: Vec::new(),
        })
    }
}

impl crate::replay::Records for TopicReader {
    fn ends(&mut self, topic: &str) -> anyhow::Result<Vec<u64>> {
        let count = super::partition_count(&self.consumer, &self.brokers, topic)?
            .with_context(|| format!("topic `{topic}` does not exist on {}", self.brokers))?;
        self.ends = (0..count)
            .map(|p| {
                let (_, high) = self
                    .consumer
                    .fetch_watermarks(topic, p as i32, TIMEOUT)
                    .with_context(|| format!("reading the end of {topic}/{p}"))?;
                Ok(high.max(0) as u64)
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(self.ends.clone())
    }

    fn offset_at(&mut self, topic: &str, partition: u32, ms: i64, end: u64) -> anyhow::Result<u64> {
        let mut times = TopicPartitionList::new();
        times.add_partition_offset(topic, partition as i32, Offset::Offset(ms))?;
        let found = self
            .consumer
            .offsets_for_times(times, TIMEOUT)
            .context("looking up offsets by timestamp")?;
        Ok(found
            .find_partition(topic, partition as i32)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) if o >= 0 => Some(o as u64),
                _ => None,
            })
            .unwrap_or(end))
    }

    fn read(
        &mut self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> anyhow::Result<Vec<LogRecord>> {
        let end = self.ends.get(partition as usize).copied().unwrap_or(0);
        if from >= end {
            return Ok(Vec::new());
        }
        if self.at != Some((partition, from)) {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, partition as i32, Offset::Offset(from as i64))?;
            self.consumer.assign(&tpl)?;
        }
        let mut out = Vec::new();
        let deadline = Instant::now() + FETCH_WAIT;
        while out.len() < max {
            let Some(message) = self.consumer.poll(Duration::from_millis(200)) else {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "{topic}/{partition}: no record at offset {from} or after within {FETCH_WAIT:?}"
                );
                continue;
            };
            let m = message.with_context(|| format!("reading {topic}/{partition}"))?;
            let offset = m.offset() as u64;
            if offset >= end {
                break;
            }
            out.push(LogRecord {
                partition,
                offset,
                timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().unwrap_or_default().to_vec(),
                headers: m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default(),
            });
            if offset + 1 >= end {
                break;
            }
        }
        self.at = out.last().map(|r| (partition, r.offset + 1));
        Ok(out)
    }
}
