//! Group membership: which partitions this member owns. The daemon turns
//! assignments into partition workers and revocations into drain-then-release.
//!
//! Embedded mode has one member that owns every partition of every routed
//! topic for as long as it runs; `kafka::member::KafkaMember` implements the
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
    pub feed: Feed,
}

/// Where a worker's records come from.
#[derive(Debug, Clone)]
pub enum Feed {
    /// Read from the embedded log in the store.
    Embedded,
    /// Fetched by the Kafka member.
    Kafka(KafkaFeed),
}

/// A Kafka partition's feed.
#[derive(Debug, Clone)]
pub struct KafkaFeed {
    /// Records fetched for the partition.
    pub buffer: std::sync::Arc<PartitionBuffer>,
    /// The route's changelog topic: state writes go there through the outbox.
    pub changelog_topic: String,
    /// Where the partition starts: its local checkpoint, or a restore from
    /// the changelog to the group's committed offset.
    pub start: crate::kafka::fence::StartFrom,
    /// The ownership epoch: the group generation that assigned it.
    pub epoch: u64,
    /// This member's id in the group, written into its claim.
    pub member_id: String,
    /// Where the worker takes its delivery lease once it claimed the
    /// partition and restored it.
    pub leases: std::sync::Arc<crate::kafka::fence::Leases>,
    /// Client settings for the changelog reader.
    pub client: crate::kafka::ClientSettings,
    /// The consumer group.
    pub group: String,
}

/// A member of a consumer group.
pub trait GroupMember: Send {
    /// The next ownership change. Pending while nothing changes; `None` once
    /// the member has left the group.
    fn next_event(&mut self) -> impl Future<Output = anyhow::Result<Option<GroupEvent>>> + Send;

    /// Starts leaving the group: every owned partition is revoked (through
    /// `next_event`), then `next_event` returns `None`.
    fn leave(&mut self);
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
    async fn next_event(&mut self) -> anyhow::Result<Option<GroupEvent>> {
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
                        feed: Feed::Embedded,
                    })
                    .collect(),
            ))),
            None => std::future::pending().await,
        }
    }

    fn leave(&mut self) {
        self.left = true;
    }
}

/// Records a group member fetched for one owned partition, waiting for the
/// partition's worker. The member pauses fetching while it is full.
#[derive(Debug)]
pub struct PartitionBuffer {
    inner: std::sync::Mutex<BufferInner>,
    appended: tokio::sync::watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct BufferInner {
    records: std::collections::VecDeque<crate::record::LogRecord>,
    /// Offset of the newest record pushed: a re-fetch after pause/resume may
    /// deliver it again.
    last: Option<u64>,
}

impl Default for PartitionBuffer {
    fn default() -> PartitionBuffer {
        PartitionBuffer {
            inner: Default::default(),
            appended: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl PartitionBuffer {
    /// Adds a fetched record; records at or before the newest are dropped.
    /// Returns how many records wait.
    pub fn push(&self, record: crate::record::LogRecord) -> usize {
        let mut inner = self.inner.lock().expect("buffer lock");
        if inner.last.is_some_and(|last| record.offset <= last) {
            return inner.records.len();
        }
        inner.last = Some(record.offset);
        inner.records.push_back(record);
        let len = inner.records.len();
        drop(inner);
        self.appended.send_modify(|n| *n = n.wrapping_add(1));
        len
    }

    /// Up to `max` records with offsets in `from..bound`, oldest first. Records
    /// before `from` are committed and dropped; the rest stay until a
    /// checkpoint moves past them, so a failed batch can be read again.
    pub fn read(&self, from: u64, max: usize, bound: Option<u64>) -> Vec<crate::record::LogRecord> {
        let mut inner = self.inner.lock().expect("buffer lock");
        while inner.records.front().is_some_and(|r| r.offset < from) {
            inner.records.pop_front();
        }
        inner
            .records
            .iter()
            .take_while(|r| bound.is_none_or(|b| r.offset < b))
            .take(max)
            .cloned()
            .collect()
    }

    /// Offset of the newest record fetched, if any.
    pub fn last_offset(&self) -> Option<u64> {
        self.inner.lock().expect("buffer lock").last
    }

    /// Records waiting.
    pub fn len(&self) -> usize {
        self.inner.lock().expect("buffer lock").records.len()
    }

    /// Whether no record waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Changes whenever a record is pushed.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.appended.subscribe()
    }
}
