//! Group membership: which partitions this member owns. The daemon turns
//! assignments into partition workers and revocations into drain-then-release.
//!
//! Embedded mode has one member that owns every partition of every routed
//! topic for as long as it runs. A Kafka member (a later source) implements the
//! same trait from librdkafka's rebalance callbacks.

use std::future::Future;

/// One partition of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: u32,
}

/// A change of ownership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupEvent {
    /// These partitions are now ours: start from their checkpoints.
    Assigned(Vec<TopicPartition>),
    /// These partitions must be given back: finish and checkpoint the batch
    /// in flight, then release them.
    Revoked(Vec<TopicPartition>),
}

/// A member of a consumer group.
pub trait GroupMember: Send {
    /// The next ownership change. Pending while nothing changes.
    fn next_event(&mut self) -> impl Future<Output = anyhow::Result<GroupEvent>> + Send;
}

/// The embedded member: owns all partitions, from start to shutdown.
#[derive(Debug)]
pub struct EmbeddedMember {
    initial: Option<Vec<TopicPartition>>,
}

impl EmbeddedMember {
    /// A member that will be assigned exactly `partitions`.
    pub fn new(partitions: Vec<TopicPartition>) -> EmbeddedMember {
        EmbeddedMember {
            initial: Some(partitions),
        }
    }
}

impl GroupMember for EmbeddedMember {
    async fn next_event(&mut self) -> anyhow::Result<GroupEvent> {
        match self.initial.take() {
            Some(partitions) => Ok(GroupEvent::Assigned(partitions)),
            None => std::future::pending().await,
        }
    }
}
