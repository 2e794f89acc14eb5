//! Kafka source: linecook as one member of a real consumer group.
//!
//! - `member`: the consumer thread. It polls without pause, hands records to
//!   partition workers through `PartitionBuffer`s (pausing partitions whose
//!   buffer is full), turns rebalances into assignments and drain-then-release
//!   revocations, and commits delivered progress to the group.
//! - `deliver`: the producer thread. It delivers the outbox (idempotent,
//!   `acks=all`): changelog records of a batch before its outputs, and removes
//!   entries only once acknowledged.
//! - `restore`: rebuilds a partition's state from the route's changelog when
//!   the local state is not exactly the group's.
//! - `fence`: ownership epochs, claims and delivery leases, which keep a
//!   member that lost a partition from delivering stale work.
//!
//! Guarantees are written down in ARCHITECTURE.md, "Kafka".

pub mod deliver;
pub mod fence;
pub mod member;
mod ownership;
pub mod replay;
pub mod reset;
pub mod restore;
pub mod source;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, bail};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use tracing::{info, warn};

use crate::config::{Config, KafkaSource};

/// How long metadata and admin requests may take at start.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a changelog's cleanup.policy may take to read: a real cluster
/// answers in milliseconds; one that does not answer (librdkafka's mock
/// cluster) costs every start this long.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Connection settings shared by every client this member creates.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Bootstrap servers.
    pub brokers: String,
    /// Pass-through librdkafka properties.
    pub properties: BTreeMap<String, String>,
    /// Session timeout (classic protocol): librdkafka checks consumer
    /// properties such as `max.poll.interval.ms` against it.
    pub session_timeout_ms: Option<u32>,
}

impl ClientSettings {
    /// The settings of `source`.
    pub fn new(source: &KafkaSource) -> ClientSettings {
        ClientSettings {
            brokers: source.brokers.clone(),
            properties: source.properties.clone(),
            session_timeout_ms: (source.group_protocol == crate::config::GroupProtocol::Classic)
                .then_some(source.session_timeout_ms),
        }
    }

    /// A client config with the brokers and pass-through properties set.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }

    /// A client config for a consumer: also the session timeout.
    pub fn consumer_config(&self) -> ClientConfig {
        let mut config = self.client_config();
        if let Some(ms) = self.session_timeout_ms {
            config.set("session.timeout.ms", ms.to_string());
        }
        config
    }
}

/// The connection states of the brokers in `statistics` (bootstrap entries,
/// which have no node id, left out), for status.
pub fn broker_states(statistics: &rdkafka::Statistics) -> Vec<(String, String)> {
    statistics
        .brokers
        .values()
        .filter(|b| b.nodeid >= 0)
        .map(|b| (b.name.clone(), b.state.clone()))
        .collect()
}

/// Whether a client error says it lost its broker connections.
pub fn lost_connections(error: &rdkafka::error::KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure)
    )
}

/// The compacted topic that carries a route's state writes.
pub fn changelog_topic(group: &str, topic: &str) -> String {
    format!("{group}-{topic}-changelog")
}

/// How many partitions `topic` has; `None` when it does not exist.
pub(crate) fn partition_count<C: rdkafka::consumer::ConsumerContext>(
    client: &BaseConsumer<C>,
    brokers: &str,
    topic: &str,
) -> anyhow::Result<Option<u32>> {
    let metadata = client
        .fetch_metadata(Some(topic), ADMIN_TIMEOUT)
        .with_context(|| format!("reading metadata of topic `{topic}` from {brokers}"))?;
    Ok(metadata.topics().first().and_then(|t| {
        if t.error().is_some() || t.partitions().is_empty() {
            None
        } else {
            Some(t.partitions().len() as u32)
        }
    }))
}

/// Partition counts of the routed topics, after making sure their changelog
/// and dead-letter topics exist (creating missing ones where the cluster
/// allows it).
pub async fn prepare_topics(
    config: &Config,
    source: &KafkaSource,
) -> anyhow::Result<BTreeMap<String, u32>> {
    let settings = ClientSettings::new(source);
    let probe: BaseConsumer = settings
        .consumer_config()
        .create()
        .context("creating a Kafka client")?;
    let partitions_of = |topic: &str| partition_count(&probe, &settings.brokers, topic);
    let mut sources = BTreeMap::new();
    let mut missing = Vec::new();
    for route in &config.routes {
        let Some(n) = partitions_of(&route.topic)? else {
            bail!(
                "topic `{}` does not exist in the Kafka cluster at {}; create it first",
                route.topic,
                settings.brokers
            );
        };
        sources.insert(route.topic.clone(), n);
        let changelog = changelog_topic(&config.group, &route.topic);
        if partitions_of(&changelog)?.is_none() {
            missing.push((changelog, n, true));
        }
        let dlq = route.dead_letter_topic();
        if partitions_of(&dlq)?.is_none() {
            missing.push((dlq, 1, false));
        }
    }
    if !missing.is_empty() {
        let admin: AdminClient<DefaultClientContext> = settings
            .client_config()
            .create()
            .context("creating a Kafka admin client")?;
        let topics: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|(name, partitions, compacted)| {
                let topic = NewTopic::new(name, *partitions as i32, TopicReplication::Fixed(-1));
                if *compacted {
                    // Batch markers of the last hour must survive compaction:
                    // a new owner reads them to re-form a crashed owner's batches.
                    topic
                        .set("cleanup.policy", "compact")
                        .set("min.compaction.lag.ms", "3600000")
                } else {
                    topic
                }
            })
            .collect();
        let results = admin
            .create_topics(
                &topics,
                &AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT)),
            )
            .await
            .context("asking the cluster to create topics")?;
        for (result, (name, partitions, compacted)) in results.into_iter().zip(&missing) {
            match created(result.err().map(|(_, code)| code)) {
                Ok(true) => info!(topic = %name, partitions, "created Kafka topic"),
                Ok(false) => {
                    info!(topic = %name, "Kafka topic created meanwhile by another member")
                }
                Err(code) => bail!(
                    "topic `{name}` is missing and could not be created ({code}); create it with {partitions} partition(s){}",
                    if *compacted {
                        " and cleanup.policy=compact"
                    } else {
                        ""
                    }
                ),
            }
        }
    }
    // A changelog someone else created (another member racing us, or an
    // operator) must still fit: same partition count, compacted.
    for route in &config.routes {
        let changelog = changelog_topic(&config.group, &route.topic);
        let want = sources[&route.topic];
        let partitions = partitions_of(&changelog)?.unwrap_or(0);
        let policy = cleanup_policy(&settings, &changelog).await;
        if let Some(problem) = changelog_mismatch(
            &changelog,
            &route.topic,
            want,
            partitions,
            policy.as_deref(),
        ) {
            bail!("{problem}");
        }
    }
    Ok(sources)
}

/// The `cleanup.policy` of `topic`, if the cluster says (librdkafka's mock
/// cluster, for one, does not answer DescribeConfigs).
async fn cleanup_policy(settings: &ClientSettings, topic: &str) -> Option<String> {
    let admin: AdminClient<DefaultClientContext> = settings.client_config().create().ok()?;
    let resource = ResourceSpecifier::Topic(topic);
    let described = admin
        .describe_configs(
            [&resource],
            &AdminOptions::new().request_timeout(Some(DESCRIBE_TIMEOUT)),
        )
        .await;
    match described {
        Ok(results) => results
            .into_iter()
            .next()?
            .ok()?
            .get("cleanup.policy")?
            .value
            .clone(),
        Err(e) => {
            warn!(topic, "could not read the topic's cleanup.policy: {e}");
            None
        }
    }
}

/// Whether a CreateTopics answer for one topic means it exists now: `true`
/// if we created it, `false` if it already existed (another member starting
/// at the same moment won the race), the error otherwise.
fn created(error: Option<RDKafkaErrorCode>) -> Result<bool, RDKafkaErrorCode> {
    match error {
        None => Ok(true),
        Some(RDKafkaErrorCode::TopicAlreadyExists) => Ok(false),
        Some(code) => Err(code),
    }
}

/// What is wrong with changelog `changelog` of source `source` (`want`
/// partitions), if anything. An unknown cleanup policy is not an error: not
/// every cluster says.
fn changelog_mismatch(
    changelog: &str,
    source: &str,
    want: u32,
    partitions: u32,
    cleanup_policy: Option<&str>,
) -> Option<String> {
    if partitions != want {
        return Some(format!(
            "changelog topic `{changelog}` has {partitions} partitions but `{source}` has {want}; they must match"
        ));
    }
    match cleanup_policy {
        Some(policy) if !policy.split(',').any(|p| p.trim() == "compact") => Some(format!(
            "changelog topic `{changelog}` has cleanup.policy={policy}; it must be compact, or old state is deleted by retention (kafka-configs --alter --entity-type topics --entity-name {changelog} --add-config cleanup.policy=compact)"
        )),
        _ => None,
    }
}

/// Commits `offsets` for `consumer`'s group and waits at most `timeout` for
/// the coordinator's answer. librdkafka's own synchronous commit waits
/// without end, and a revocation must not hang on a coordinator that is
/// gone.
#[allow(unsafe_code)]
pub fn commit_within<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    offsets: &rdkafka::TopicPartitionList,
    timeout: Duration,
) -> Result<(), String> {
    use rdkafka::bindings as sys;
    use rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR as NO_ERROR;
    // SAFETY: the queue is created from a live client and destroyed here;
    // the offsets list outlives the call (librdkafka copies it); the event,
    // if one arrives, is read and destroyed before the queue. A commit still
    // in flight when the queue is destroyed holds its own reference to it.
    unsafe {
        let rk = consumer.client().native_ptr();
        let queue = sys::rd_kafka_queue_new(rk);
        let err = sys::rd_kafka_commit_queue(rk, offsets.ptr(), queue, None, std::ptr::null_mut());
        let result = if err != NO_ERROR {
            Err(RDKafkaErrorCode::from(err).to_string())
        } else {
            let event =
                sys::rd_kafka_queue_poll(queue, timeout.as_millis().min(i32::MAX as u128) as i32);
            if event.is_null() {
                Err(format!(
                    "no answer from the group coordinator within {timeout:?}"
                ))
            } else {
                let err = sys::rd_kafka_event_error(event);
                sys::rd_kafka_event_destroy(event);
                if err == NO_ERROR {
                    Ok(())
                } else {
                    Err(RDKafkaErrorCode::from(err).to_string())
                }
            }
        };
        sys::rd_kafka_queue_destroy(queue);
        result
    }
}

/// The group generation and member id librdkafka holds for `consumer`, if it
/// is in a group.
#[allow(unsafe_code)]
pub fn group_generation<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
) -> Option<(i32, String)> {
    use rdkafka::bindings as sys;
    // SAFETY: rdkafka exposes no accessor for the generation. The metadata
    // handle is created from a live client, read, and destroyed here; the
    // member id string is owned by the handle and copied before destroying it.
    unsafe {
        let metadata = sys::rd_kafka_consumer_group_metadata(consumer.client().native_ptr());
        if metadata.is_null() {
            return None;
        }
        let generation = sys::rd_kafka_consumer_group_metadata_generation_id(metadata);
        let member = sys::rd_kafka_consumer_group_metadata_member_id(metadata);
        let member = if member.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(member)
                .to_string_lossy()
                .into_owned()
        };
        sys::rd_kafka_consumer_group_metadata_destroy(metadata);
        Some((generation, member))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_another_member_created_first_is_a_success() {
        assert_eq!(created(None), Ok(true));
        assert_eq!(
            created(Some(RDKafkaErrorCode::TopicAlreadyExists)),
            Ok(false)
        );
        assert_eq!(
            created(Some(RDKafkaErrorCode::TopicAuthorizationFailed)),
            Err(RDKafkaErrorCode::TopicAuthorizationFailed)
        );
    }

    #[test]
    fn a_changelog_must_match_its_source_and_be_compacted() {
        assert_eq!(changelog_mismatch("cl", "in", 6, 6, Some("compact")), None);
        assert_eq!(
            changelog_mismatch("cl", "in", 6, 6, Some("compact,delete")),
            None
        );
        assert_eq!(changelog_mismatch("cl", "in", 6, 6, None), None);
        let wrong = changelog_mismatch("cl", "in", 6, 3, Some("compact")).unwrap();
        assert!(wrong.contains("has 3 partitions but `in` has 6"), "{wrong}");
        let deleting = changelog_mismatch("cl", "in", 6, 6, Some("delete")).unwrap();
        assert!(deleting.contains("cleanup.policy=delete"), "{deleting}");
    }
}
