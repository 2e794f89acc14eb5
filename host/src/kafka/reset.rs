//! `linecook partitions reset` with the Kafka source: moves the consumer
//! group's committed offsets, as `kafka-consumer-groups --reset-offsets`
//! does, while no member runs. Members honour the move when they next take
//! the partitions: a local checkpoint that is not exactly the group's
//! offset is never trusted (`fence::start_from`), so state is rebuilt from
//! the changelog as of the new offset.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::ClientSettings;
use crate::checkpoint::ResetTo;
use crate::config::KafkaSource;

const TIMEOUT: Duration = Duration::from_secs(10);
/// How long joining the group may take (a broker may delay the first
/// assignment of an empty group by seconds).
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Where `to` puts a partition whose log holds offsets `low..high`: an
/// offset outside them is refused, since Kafka would move it to
/// `auto.offset.reset` at the next fetch.
pub fn target(to: ResetTo, low: i64, high: i64, at_time: Option<i64>) -> Result<i64, String> {
    match to {
        ResetTo::Offset(o) => {
            let o = i64::try_from(o).unwrap_or(i64::MAX);
            if o < low || o > high {
                return Err(format!(
                    "offset {o} is outside the partition's log ({low}..{high})"
                ));
            }
            Ok(o)
        }
        ResetTo::Earliest => Ok(low),
        ResetTo::Latest => Ok(high),
        ResetTo::Timestamp(_) => Ok(at_time.unwrap_or(high)),
    }
}

/// The offset `to` means for `topic`/`partition` now.
pub fn resolve(
    settings: &ClientSettings,
    topic: &str,
    partition: u32,
    to: ResetTo,
) -> anyhow::Result<u64> {
    let consumer: BaseConsumer = settings
        .client_config()
        .create()
        .context("creating a Kafka client")?;
    let at = position(&consumer, topic, partition, to)?;
    Ok(at as u64)
}

/// Where `to` puts `topic`/`partition`, read from the cluster.
fn position<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: u32,
    to: ResetTo,
) -> anyhow::Result<i64> {
    let (low, high) = consumer
        .fetch_watermarks(topic, partition as i32, TIMEOUT)
        .with_context(|| format!("reading the offsets of {topic}/{partition}"))?;
    let at_time = match to {
        ResetTo::Timestamp(ms) => {
            let mut times = TopicPartitionList::new();
            times.add_partition_offset(topic, partition as i32, Offset::Offset(ms))?;
            consumer
                .offsets_for_times(times, TIMEOUT)
                .context("looking up offsets by timestamp")?
                .find_partition(topic, partition as i32)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
        }
        _ => None,
    };
    target(to, low, high, at_time).map_err(|e| anyhow::anyhow!("{topic}/{partition}: {e}"))
}

/// Commits `to` as `group`'s offset of `topic`'s `partitions` (all when
/// `None`); returns (partition, from, to) per partition, `from` being the
/// committed offset before (`None` without one).
pub fn reset(
    source: &KafkaSource,
    group: &str,
    topic: &str,
    partition: Option<u32>,
    to: ResetTo,
) -> anyhow::Result<Vec<(u32, Option<i64>, i64)>> {
    let mut config = ClientSettings::new(source).client_config();
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    if source.group_protocol == crate::config::GroupProtocol::Consumer {
        config.set("group.protocol", "consumer");
    } else {
        // Should the leave get lost, the group forgets this brief member
        // soon rather than after the default 45 s.
        config
            .set("partition.assignment.strategy", source.assignment.as_str())
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500");
    }
    let consumer: BaseConsumer = config.create().context("creating a Kafka client")?;
    let count = super::partition_count(&consumer, &source.brokers, topic)?
        .with_context(|| format!("topic `{topic}` does not exist on {}", source.brokers))?;
    let partitions: Vec<u32> = match partition {
        Some(p) if p < count => vec![p],
        Some(p) => bail!("topic `{topic}` has {count} partitions; there is no {p}"),
        None => (0..count).collect(),
    };
    let mut asked = TopicPartitionList::new();
    for p in &partitions {
        asked.add_partition(topic, *p as i32);
    }
    let committed = consumer
        .committed_offsets(asked.clone(), TIMEOUT)
        .context("reading the group's committed offsets")?;
    let mut moves = Vec::new();
    let mut commit = TopicPartitionList::new();
    for p in partitions {
        let at = position(&consumer, topic, p, to)?;
        let from = committed
            .find_partition(topic, p as i32)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
        commit.add_partition_offset(topic, p as i32, Offset::Offset(at))?;
        moves.push((p, from, at));
    }
    // Commit as the group's only member: a brief join that must be handed
    // every partition asked for, which proves no other member holds them
    // (and is what a broker that checks members, like librdkafka's mock,
    // accepts).
    consumer.subscribe(&[topic])?;
    let deadline = Instant::now() + JOIN_TIMEOUT;
    loop {
        // Polling drives the join; whatever it fetches is ignored.
        let _ = consumer.poll(Duration::from_millis(100));
        let assigned = consumer.assignment()?;
        let held = moves
            .iter()
            .all(|(p, ..)| assigned.find_partition(topic, *p as i32).is_some());
        if held {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "group `{group}` did not hand its partitions over within {JOIN_TIMEOUT:?}: another member holds them; stop every member of the group first"
            );
        }
    }
    consumer
        .commit(&commit, CommitMode::Sync)
        .with_context(|| format!("committing group `{group}`'s new offsets"))?;
    // Dropping the consumer closes it: it leaves the group.
    drop(consumer);
    Ok(moves)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_stay_inside_the_log() {
        assert_eq!(target(ResetTo::Earliest, 5, 20, None), Ok(5));
        assert_eq!(target(ResetTo::Latest, 5, 20, None), Ok(20));
        assert_eq!(target(ResetTo::Offset(7), 5, 20, None), Ok(7));
        assert!(target(ResetTo::Offset(3), 5, 20, None).is_err());
        assert!(target(ResetTo::Offset(21), 5, 20, None).is_err());
        assert_eq!(target(ResetTo::Timestamp(1), 5, 20, Some(9)), Ok(9));
        // No record at or after the time: the end, as in the embedded log.
        assert_eq!(target(ResetTo::Timestamp(1), 5, 20, None), Ok(20));
    }
}
