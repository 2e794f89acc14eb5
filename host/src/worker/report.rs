//! What a worker tells the rest of the host, in one place: every `Event`
//! updates the metrics, the partition's line in `status` and the route's
//! rollout controller together, so the three never disagree.

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::{ErrorLabels, Metrics, PartitionLabels, TopicLabels};
use crate::plugins::short;
use crate::rollout::{Events, WorkerEvent};
use crate::runtime::Contract;
use crate::status::{Live, PartitionState, SwapEvent};

/// Something that happened on a partition.
#[derive(Debug)]
pub(super) enum Event<'a> {
    /// The worker owns the partition (before its source is prepared).
    Owned,
    /// The worker gave the partition back.
    Released,
    /// What the partition is doing now, and why.
    State(PartitionState, Option<String>),
    /// An instance of `digest` runs; `swapped` when it replaced another
    /// version's.
    Started {
        digest: &'a str,
        contract: Contract,
        swapped: bool,
    },
    /// The target was set again to the version already running.
    Kept { digest: &'a str },
    /// `init` refused `digest`; `paused` when no instance runs at all.
    Refused {
        digest: &'a str,
        reason: &'a str,
        paused: bool,
    },
    /// `handle` returned; the time when it succeeded.
    Handled {
        memory_bytes: usize,
        took: Option<Duration>,
    },
    /// A batch failed in the handler.
    Failed {
        digest: &'a str,
        kind: &'static str,
        reason: &'a str,
    },
    /// The batch will be read again.
    Retrying { reason: String },
    /// The time between the old version's last batch and the new one's first.
    SwapPause(Duration),
    /// The time between the last batch and this one, no swap between.
    BatchWait(Duration),
    /// A checkpoint committed.
    Committed {
        digest: &'a str,
        handled: u64,
        emitted: u64,
        took: Duration,
    },
    /// A record went to the dead-letter topic (in a committed checkpoint).
    DeadLettered,
    /// The partition skipped this many records retention had removed.
    Skipped(u64),
    /// This worker wrote a checkpoint transaction holding `batches` batches
    /// (its own and other partitions').
    GroupCommit { batches: usize },
    /// A firing of this many timers committed.
    TimersFired(u64),
    /// The partition's timers and watermark, as committed.
    Time {
        pending: u64,
        watermark: Option<i64>,
    },
    /// The partition's watermark moved (timers unchanged).
    Watermark(i64),
    /// `digest`'s batches cannot be committed (what they emit is refused).
    CannotCommit { digest: &'a str, reason: String },
}

/// Where a worker's events go.
pub(super) struct Reporter {
    labels: PartitionLabels,
    topic_labels: TopicLabels,
    live: Arc<Live>,
    metrics: Arc<Metrics>,
    rollout: Events,
}

impl Reporter {
    pub(super) fn new(
        labels: PartitionLabels,
        live: Arc<Live>,
        metrics: Arc<Metrics>,
        rollout: Events,
    ) -> Reporter {
        Reporter {
            topic_labels: TopicLabels {
                topic: labels.topic.clone(),
            },
            labels,
            live,
            metrics,
            rollout,
        }
    }

    pub(super) fn emit(&self, event: Event<'_>) {
        let partition = self.labels.partition;
        let m = &*self.metrics;
        match event {
            Event::Owned => {
                self.zero_series();
                self.tell(WorkerEvent::Owned { partition });
            }
            Event::Released => {
                self.tell(WorkerEvent::Released { partition });
                self.live.remove(&self.labels.topic, partition);
            }
            Event::State(state, detail) => self.update(|l| {
                l.state = state;
                l.detail = detail;
            }),
            Event::Started {
                digest,
                contract,
                swapped,
            } => {
                if swapped {
                    m.swaps.get_or_create(&self.labels).inc();
                }
                self.update(|l| {
                    let previous = l.version.replace(digest.to_owned());
                    l.contract = Some(contract);
                    if swapped {
                        l.swaps += 1;
                        l.swapped_from = previous;
                    }
                    if l.state == PartitionState::Starting {
                        l.state = PartitionState::Running;
                        l.detail = None;
                    }
                });
                self.adopted(digest);
            }
            Event::Kept { digest } => self.adopted(digest),
            Event::Refused {
                digest,
                reason,
                paused,
            } => {
                self.tell(WorkerEvent::Refused {
                    partition,
                    digest: digest.to_owned(),
                    reason: reason.to_owned(),
                });
                if paused {
                    let detail = format!("{} {}: {reason}", self.labels.plugin, short(digest));
                    self.update(|l| {
                        l.state = PartitionState::Paused;
                        l.detail = Some(detail);
                    });
                }
            }
            Event::Handled { memory_bytes, took } => {
                m.instance_memory
                    .get_or_create(&self.labels)
                    .set(memory_bytes as i64);
                if let Some(took) = took {
                    m.batch_seconds
                        .get_or_create(&self.topic_labels)
                        .observe(took.as_secs_f64());
                }
            }
            Event::Failed {
                digest,
                kind,
                reason,
            } => {
                m.handler_errors
                    .get_or_create(&ErrorLabels {
                        topic: self.labels.topic.clone(),
                        partition,
                        plugin: self.labels.plugin.clone(),
                        kind: kind.to_owned(),
                    })
                    .inc();
                self.tell(WorkerEvent::Failed {
                    partition,
                    digest: digest.to_owned(),
                    reason: reason.to_owned(),
                });
            }
            Event::Retrying { reason } => {
                m.retries.get_or_create(&self.labels).inc();
                self.update(|l| {
                    l.state = PartitionState::Retrying;
                    l.detail = Some(reason);
                });
            }
            Event::BatchWait(wait) => m
                .batch_wait_seconds
                .get_or_create(&self.topic_labels)
                .observe(wait.as_secs_f64()),
            Event::SwapPause(pause) => {
                m.swap_pause_seconds
                    .get_or_create(&self.topic_labels)
                    .observe(pause.as_secs_f64());
                let pause_us = pause.as_micros() as u64;
                let mut swap = None;
                self.update(|l| {
                    l.last_swap_pause_us = Some(pause_us);
                    swap = Some((l.swapped_from.take(), l.version.clone()));
                });
                if let Some((from, to)) = swap {
                    self.live.swapped(SwapEvent {
                        at_ms: crate::record::now_ms(),
                        topic: self.labels.topic.clone(),
                        partition,
                        plugin: self.labels.plugin.clone(),
                        from,
                        to,
                        pause_us,
                    });
                }
            }
            Event::Committed {
                digest,
                handled,
                emitted,
                took,
            } => {
                m.commit_seconds
                    .get_or_create(&self.topic_labels)
                    .observe(took.as_secs_f64());
                m.records_in.get_or_create(&self.labels).inc_by(handled);
                m.records_out.get_or_create(&self.labels).inc_by(emitted);
                m.batches.get_or_create(&self.labels).inc();
                self.tell(WorkerEvent::Committed {
                    partition,
                    digest: digest.to_owned(),
                });
                self.update(|l| {
                    l.state = PartitionState::Running;
                    l.detail = None;
                    l.version = Some(digest.to_owned());
                    l.batches += 1;
                    l.records += handled;
                });
            }
            Event::GroupCommit { batches } => {
                m.checkpoint_transactions.inc();
                m.checkpoint_group_batches.observe(batches as f64);
            }
            Event::DeadLettered => {
                m.dead_letters.get_or_create(&self.labels).inc();
                self.update(|l| l.dead_letters += 1);
            }
            Event::Skipped(n) => {
                m.skipped_records.get_or_create(&self.labels).inc_by(n);
                self.update(|l| l.skipped += n);
            }
            Event::TimersFired(n) => {
                m.timers_fired.get_or_create(&self.labels).inc_by(n);
                self.update(|l| l.timers_fired += n);
            }
            Event::Time { pending, watermark } => {
                m.timers_pending
                    .get_or_create(&self.labels)
                    .set(pending as i64);
                if let Some(w) = watermark {
                    self.emit(Event::Watermark(w));
                }
            }
            Event::Watermark(w) => {
                m.watermark
                    .get_or_create(&self.labels)
                    .set(w as f64 / 1000.0);
            }
            Event::CannotCommit { digest, reason } => self.tell(WorkerEvent::CannotCommit {
                partition,
                digest: digest.to_owned(),
                reason,
            }),
        }
    }

    /// Creates the partition's series at zero, so a scrape shows them (and
    /// `rate()` and `increase()` work) before the first record, error,
    /// dead letter or swap.
    fn zero_series(&self) {
        let m = &*self.metrics;
        for family in [
            &m.records_in,
            &m.records_out,
            &m.batches,
            &m.retries,
            &m.dead_letters,
            &m.swaps,
            &m.timers_fired,
            &m.skipped_records,
        ] {
            drop(family.get_or_create(&self.labels));
        }
        for kind in ["retry", "poison", "fatal", "trap", "limit"] {
            drop(m.handler_errors.get_or_create(&ErrorLabels {
                topic: self.labels.topic.clone(),
                partition: self.labels.partition,
                plugin: self.labels.plugin.clone(),
                kind: kind.to_owned(),
            }));
        }
        for family in [
            &m.batch_seconds,
            &m.commit_seconds,
            &m.swap_pause_seconds,
            &m.batch_wait_seconds,
        ] {
            drop(family.get_or_create(&self.topic_labels));
        }
    }

    fn adopted(&self, digest: &str) {
        self.tell(WorkerEvent::Adopted {
            partition: self.labels.partition,
            digest: digest.to_owned(),
        });
    }

    fn update(&self, f: impl FnOnce(&mut crate::status::LivePartition)) {
        self.live
            .update(&self.labels.topic, self.labels.partition, f);
    }

    fn tell(&self, event: WorkerEvent) {
        self.rollout.send(event);
    }
}
