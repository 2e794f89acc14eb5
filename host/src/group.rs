//! Group membership: which partitions this member owns. The daemon turns
//! assignments into partition workers and revocations into drain-then-release.
//!
//! Embedded mode has one member that owns every partition of every routed
//! topic for as long as it runs; `kafka::member::KafkaMember` implements the
//! same trait from librdkafka's rebalance callbacks.

use std::future::Future;
use std::pin::Pin;

use crate::source::Source;

/// What `GroupMember::next_event` returns: boxed, so the daemon holds any
/// member as `Box<dyn GroupMember>`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One partition of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: u32,
}

/// A change of ownership.
#[derive(Debug)]
pub enum GroupEvent {
    /// These partitions are now ours: start from their checkpoints.
    Assigned(Vec<Assignment>),
    /// These partitions must be given back: finish and checkpoint the batch
    /// in flight, then release them, then say so on `done` (if any).
    Revoked(Vec<TopicPartition>, Option<std::sync::mpsc::SyncSender<()>>),
}

/// A newly owned partition and where its records come from.
#[derive(Debug)]
pub struct Assignment {
    /// The partition.
    pub tp: TopicPartition,
    /// Its records.
    pub source: Box<dyn Source>,
}

/// A member of a consumer group.
pub trait GroupMember: Send {
    /// The next ownership change. Pending while nothing changes; `None` once
    /// the member has left the group.
    fn next_event(&mut self) -> BoxFuture<'_, anyhow::Result<Option<GroupEvent>>>;

    /// Starts leaving the group: every owned partition is revoked (through
    /// `next_event`), then `next_event` returns `None`.
    fn leave(&mut self);

    /// A source for a worker that replaces the one that ran `tp` (a reload
    /// changed its route), or `None` if this member no longer owns it.
    fn restart(&self, tp: &TopicPartition) -> Option<Box<dyn crate::source::Source>>;

    /// From now on the routed topics are `topics` (a reload added or
    /// removed routes): their partitions come and go through `next_event`.
    fn subscribe(
        &self,
        topics: std::collections::BTreeMap<String, crate::log::TopicInfo>,
    ) -> anyhow::Result<()>;
}

/// The embedded member: owns all partitions, from start to shutdown.
#[derive(Debug)]
pub struct EmbeddedMember {
    initial: Option<Vec<TopicPartition>>,
    left: bool,
}

impl EmbeddedMember {
    /// A member that will be assigned exactly `partitions`.
    pub fn new(partitions: Vec<TopicPartition>) -> EmbeddedMember {
        EmbeddedMember {
            initial: Some(partitions),
            left: false,
        }
    }
}

impl GroupMember for EmbeddedMember {
    fn next_event(&mut self) -> BoxFuture<'_, anyhow::Result<Option<GroupEvent>>> {
        Box::pin(async {
            if self.left {
                // The daemon releases whatever it still runs when we are gone.
                return Ok(None);
            }
            match self.initial.take() {
                Some(partitions) => Ok(Some(GroupEvent::Assigned(
                    partitions
                        .into_iter()
                        .map(|tp| Assignment {
                            tp,
                            source: Box::new(crate::source::Embedded),
                        })
                        .collect(),
                ))),
                None => std::future::pending().await,
            }
        })
    }

    fn leave(&mut self) {
        self.left = true;
    }

    fn restart(&self, _: &TopicPartition) -> Option<Box<dyn crate::source::Source>> {
        Some(Box::new(crate::source::Embedded))
    }

    /// The embedded member owns every partition of every topic: a reload
    /// starts and stops the routes' workers itself.
    fn subscribe(
        &self,
        _: std::collections::BTreeMap<String, crate::log::TopicInfo>,
    ) -> anyhow::Result<()> {
        Ok(())
    }
}
