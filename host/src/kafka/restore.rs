//! Rebuilding a partition's state from its route's changelog, and learning
//! which batches a previous owner handled past the group's commit.
//!
//! The changelog partition holds every state write of the source partition,
//! tagged with the batch (`first..end` source offsets) that made it and the
//! ownership epoch of the member that delivered it, a marker per batch that
//! emitted outputs, and a claim per change of owner (`kafka::fence`).
//!
//! A member claims the partition first, then reads the changelog up to its
//! own claim: that is the true end for it, whatever a broker's high
//! watermark says, and everything after it is a newer owner's business.
//! - Restoring to the group's committed offset `upto` keeps, per key, the
//!   write of the newest epoch, and within it of the latest batch, among
//!   batches that ended at or before `upto` — never a write of an
//!   uncommitted batch, and never an older owner's write that arrived late
//!   over a newer owner's (see `fold`).
//! - Both a restore and a start from a local checkpoint also return the
//!   batches that start at or after the start offset: those another owner
//!   handled (and may have delivered) but did not commit. The new owner
//!   re-forms exactly those batches, so its outputs carry the same origin
//!   headers as any copy already delivered. A marker that arrived after a
//!   newer claim is fenced: its outputs never left (`deliver` checks), so
//!   there is nothing to re-form.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::ClientSettings;
use crate::outbox::{batch_headers, changelog_key};

/// How long the changelog may go without delivering a record before the
/// read is given up (and retried by the worker).
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a claim may take to be acknowledged.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(30);
/// Records read from the changelog's end at first when only the replay plan
/// is needed; grows fourfold until it reaches batches before the start.
const TAIL_WINDOW: u64 = 256;

/// What a partition needs from the changelog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// Its state up to the group's committed offset, and the batches after it.
    Restore {
        /// The committed offset.
        upto: u64,
    },
    /// Only the batches from `from` on: the local state is current.
    Plan {
        /// The local checkpoint.
        from: u64,
    },
}

impl Goal {
    /// What the partition is doing, for `status`.
    pub fn describe(self) -> String {
        match self {
            Goal::Restore { upto } => format!("restoring state up to offset {upto}"),
            Goal::Plan { from } => {
                format!("reading the changelog's recent batches from offset {from}")
            }
        }
    }
}

impl Goal {
    /// The offset processing starts at.
    pub fn start(self) -> u64 {
        match self {
            Goal::Restore { upto } => upto,
            Goal::Plan { from } => from,
        }
    }
}

/// What a read found.
#[derive(Debug, Default)]
pub struct Restored {
    /// The partition's state as of `upto` (empty for `Goal::Plan`).
    pub state: BTreeMap<Vec<u8>, Vec<u8>>,
    /// When keys of `state` written with a time to live expire (ms since
    /// the Unix epoch), as their writers computed it. An entry already past
    /// it is restored too, and hidden as soon as it is, like any expired one.
    pub expiries: BTreeMap<Vec<u8>, i64>,
    /// Batches (`first..end`) a previous owner handled from the start offset
    /// on, in offset order, not overlapping.
    pub plan: Vec<(u64, u64)>,
    /// Changelog records read.
    pub records: u64,
    /// Records an older owner delivered after a newer owner's claim.
    pub fenced: u64,
}

/// What a changelog record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind<'a> {
    /// A state write of batch `first..end`; `None` deletes.
    State {
        /// The state key (without the kind byte).
        key: &'a [u8],
        /// The value.
        value: Option<&'a [u8]>,
        /// When the value expires (ms since the Unix epoch), if it was
        /// written with a time to live.
        expires: Option<i64>,
        /// First source offset of the batch.
        first: u64,
        /// Source offset after the batch.
        end: u64,
    },
    /// Batch `first..end` emitted outputs.
    Marker {
        /// First source offset of the batch.
        first: u64,
        /// Source offset after the batch.
        end: u64,
    },
    /// A member took the partition.
    Claim,
}

/// One changelog record, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Ownership epoch of the member that delivered it.
    pub epoch: u64,
    /// What it is.
    pub kind: Kind<'a>,
}

/// The newest write of a key seen so far: compared by (epoch, batch end).
#[derive(Debug)]
struct Write {
    epoch: u64,
    end: u64,
    value: Option<Vec<u8>>,
    expires: Option<i64>,
}

/// The decision part of a read, fed one record at a time in log order.
///
/// Why (epoch, end) and not log order: a member that lost the partition can
/// still deliver a write it made earlier (a zombie, or a restart racing a
/// takeover); it lands after the new owner's writes but belongs to an older
/// owner. Every owner starts from a state at least as new as the commits of
/// the owners before it, so within `..=upto` a newer epoch's write of a key
/// is never older than an older epoch's, and within one epoch the later
/// batch is the newer. A key only an older epoch wrote was not touched by
/// the records after that write (the newer owner would have written it), so
/// its value is still the one to keep.
#[derive(Debug)]
pub struct Fold {
    goal: Goal,
    claim: u64,
    writes: BTreeMap<Vec<u8>, Write>,
    batches: BTreeMap<u64, u64>,
    records: u64,
    fenced: u64,
}

impl Fold {
    /// An empty fold for `goal`.
    pub fn new(goal: Goal) -> Fold {
        Fold {
            goal,
            claim: 0,
            writes: BTreeMap::new(),
            batches: BTreeMap::new(),
            records: 0,
            fenced: 0,
        }
    }

    /// Takes the next record in log order.
    pub fn apply(&mut self, entry: Entry<'_>) {
        self.records += 1;
        let late = entry.epoch < self.claim;
        match entry.kind {
            Kind::Claim => self.claim = self.claim.max(entry.epoch),
            Kind::Marker { first, end } => {
                if late {
                    self.fenced += 1;
                } else if first >= self.goal.start() && end > first {
                    self.batches.insert(first, end);
                }
            }
            Kind::State {
                key,
                value,
                expires,
                first,
                end,
            } => {
                if late {
                    self.fenced += 1;
                }
                // A batch past the start is re-formed (or was fenced): its
                // marker, not its writes, is what counts.
                if first >= self.goal.start() && !late && end > first {
                    self.batches.insert(first, end);
                }
                let Goal::Restore { upto } = self.goal else {
                    return;
                };
                if end > upto {
                    return;
                }
                let newer = self
                    .writes
                    .get(key)
                    .is_none_or(|w| (entry.epoch, end) >= (w.epoch, w.end));
                if newer {
                    self.writes.insert(
                        key.to_vec(),
                        Write {
                            epoch: entry.epoch,
                            end,
                            value: value.map(<[u8]>::to_vec),
                            expires,
                        },
                    );
                }
            }
        }
    }

    /// The state and the replay plan.
    pub fn finish(self) -> Restored {
        let start = self.goal.start();
        // Batches of different owners past the commit may overlap; in offset
        // order, the first wins.
        let mut plan = Vec::new();
        let mut cursor = start;
        for (first, end) in self.batches {
            if first >= cursor {
                plan.push((first, end));
                cursor = end;
            }
        }
        let expiries = self
            .writes
            .iter()
            .filter_map(|(k, w)| Some((k.clone(), w.value.as_ref().and(w.expires)?)))
            .collect();
        Restored {
            state: self
                .writes
                .into_iter()
                .filter_map(|(k, w)| Some((k, w.value?)))
                .collect(),
            expiries,
            plan,
            records: self.records,
            fenced: self.fenced,
        }
    }
}

/// Writes a claim of `changelog`/`partition` for `epoch` and returns its
/// offset: the end of what this owner reads, and the fence for every older
/// owner's later deliveries.
pub fn claim(
    settings: &ClientSettings,
    changelog: &str,
    partition: u32,
    epoch: u64,
    member: &str,
    rt: &tokio::runtime::Handle,
) -> anyhow::Result<u64> {
    let producer: FutureProducer = settings
        .client_config()
        .set("acks", "all")
        .set("message.timeout.ms", CLAIM_TIMEOUT.as_millis().to_string())
        .create()
        .context("creating the claim producer")?;
    let epoch_text = epoch.to_string();
    let record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(changelog)
        .partition(partition as i32)
        .key(changelog_key::CLAIM)
        .payload(member.as_bytes())
        .headers(OwnedHeaders::new().insert(Header {
            key: batch_headers::EPOCH,
            value: Some(&epoch_text),
        }));
    let delivery = rt.block_on(producer.send(record, CLAIM_TIMEOUT));
    match delivery {
        Ok(delivered) => Ok(delivered.offset as u64),
        Err((e, _)) => Err(e).with_context(|| {
            format!("claiming changelog `{changelog}`/{partition} for epoch {epoch}")
        }),
    }
}

/// Reads changelog `topic`/`partition` up to and including this owner's
/// claim at `claimed` for `goal`; `progress(read, total)` is called as it
/// goes.
pub fn read(
    settings: &ClientSettings,
    group: &str,
    (topic, partition): (&str, u32),
    goal: Goal,
    claimed: u64,
    cancel: &CancellationToken,
    mut progress: impl FnMut(u64, u64),
) -> anyhow::Result<Restored> {
    let reader = Reader::new(settings, group)?;
    let low = reader.low(topic, partition)?;
    let end = claimed + 1;
    match goal {
        Goal::Restore { .. } => {
            let mut fold = Fold::new(goal);
            let total = end.saturating_sub(low);
            progress(0, total);
            reader.read(
                (topic, partition),
                low..end,
                cancel,
                |n| progress(n, total),
                |e| fold.apply(e),
            )?;
            progress(total, total);
            Ok(fold.finish())
        }
        Goal::Plan { .. } => {
            // Batches past `from` were written last: read back from the end
            // until a batch that ended at or before `from` shows up.
            let mut window = TAIL_WINDOW;
            loop {
                let begin = end.saturating_sub(window).max(low);
                let mut fold = Fold::new(goal);
                let mut reached = false;
                reader.read(
                    (topic, partition),
                    begin..end,
                    cancel,
                    |_| {},
                    |e| {
                        if let Kind::State { end, .. } | Kind::Marker { end, .. } = e.kind {
                            reached |= end <= goal.start();
                        }
                        fold.apply(e)
                    },
                )?;
                if reached || begin == low {
                    return Ok(fold.finish());
                }
                window *= 4;
            }
        }
    }
}

/// A changelog partition reader that never joins the group.
pub(crate) struct Reader {
    consumer: BaseConsumer,
}

impl Reader {
    pub(crate) fn new(settings: &ClientSettings, group: &str) -> anyhow::Result<Reader> {
        // librdkafka assigns partitions only with a group id; this reader
        // never joins or commits, so the id is just a label.
        let consumer: BaseConsumer = settings
            .consumer_config()
            .set("group.id", format!("{group}-restore"))
            .set("enable.auto.commit", "false")
            .create()
            .context("creating the changelog reader")?;
        Ok(Reader { consumer })
    }

    /// The partition's first offset.
    fn low(&self, topic: &str, partition: u32) -> anyhow::Result<u64> {
        let (low, _) = self
            .consumer
            .fetch_watermarks(topic, partition as i32, Duration::from_secs(15))
            .with_context(|| {
                format!("reading the watermarks of changelog `{topic}`/{partition}")
            })?;
        Ok(low.max(0) as u64)
    }

    /// Calls `each` for every record in `begin..end`, `progress` every
    /// thousand.
    pub(crate) fn read(
        &self,
        (topic, partition): (&str, u32),
        range: std::ops::Range<u64>,
        cancel: &CancellationToken,
        mut progress: impl FnMut(u64),
        mut each: impl FnMut(Entry<'_>),
    ) -> anyhow::Result<()> {
        let std::ops::Range { start: begin, end } = range;
        if begin >= end {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition as i32, Offset::Offset(begin as i64))?;
        self.consumer.assign(&tpl)?;
        let mut last_record = Instant::now();
        let mut position = begin;
        let mut read = 0u64;
        while position < end {
            if cancel.is_cancelled() {
                bail!("changelog read cancelled: the partition was released");
            }
            let Some(message) = self.consumer.poll(Duration::from_millis(200)) else {
                if last_record.elapsed() > STALL_TIMEOUT {
                    bail!(
                        "changelog `{topic}`/{partition} delivered nothing for {STALL_TIMEOUT:?} at offset {position} of {end}"
                    );
                }
                continue;
            };
            let message =
                message.with_context(|| format!("reading changelog `{topic}`/{partition}"))?;
            last_record = Instant::now();
            position = message.offset() as u64 + 1;
            read += 1;
            if read.is_multiple_of(1000) {
                progress(read);
            }
            each(parse(&message).with_context(|| {
                format!(
                    "changelog `{topic}`/{partition} offset {} is not a linecook changelog record",
                    message.offset()
                )
            })?);
        }
        Ok(())
    }
}

/// A changelog record's meaning, from its key and headers.
fn parse<'a>(message: &'a rdkafka::message::BorrowedMessage<'a>) -> anyhow::Result<Entry<'a>> {
    let (mut first, mut end, mut epoch, mut expires) = (None, None, 0, None);
    if let Some(headers) = message.headers() {
        for h in headers.iter() {
            let text = h.value.and_then(|v| std::str::from_utf8(v).ok());
            let value = text.and_then(|t| t.parse::<u64>().ok());
            match h.key {
                batch_headers::FIRST => first = value,
                batch_headers::END => end = value,
                batch_headers::EPOCH => epoch = value.unwrap_or(0),
                batch_headers::EXPIRES => expires = text.and_then(|t| t.parse::<i64>().ok()),
                _ => {}
            }
        }
    }
    let key = message.key().unwrap_or_default();
    let batch = || match (first, end) {
        (Some(first), Some(end)) => Ok((first, end)),
        _ => bail!("no batch headers"),
    };
    let kind = match key.split_first() {
        Some((&changelog_key::STATE, key)) => {
            let (first, end) = batch()?;
            Kind::State {
                key,
                value: message.payload(),
                expires,
                first,
                end,
            }
        }
        _ if key == changelog_key::MARKER => {
            let (first, end) = batch()?;
            Kind::Marker { first, end }
        }
        _ if key == changelog_key::CLAIM => Kind::Claim,
        _ => bail!("unknown key kind"),
    };
    Ok(Entry { epoch, kind })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set<'a>(epoch: u64, key: &'a str, value: &'a str, first: u64, end: u64) -> Entry<'a> {
        Entry {
            epoch,
            kind: Kind::State {
                key: key.as_bytes(),
                value: Some(value.as_bytes()),
                expires: None,
                first,
                end,
            },
        }
    }

    fn marker(epoch: u64, first: u64, end: u64) -> Entry<'static> {
        Entry {
            epoch,
            kind: Kind::Marker { first, end },
        }
    }

    fn claim(epoch: u64) -> Entry<'static> {
        Entry {
            epoch,
            kind: Kind::Claim,
        }
    }

    fn fold(goal: Goal, entries: &[Entry<'_>]) -> Restored {
        let mut f = Fold::new(goal);
        for e in entries {
            f.apply(*e);
        }
        f.finish()
    }

    fn state(r: &Restored) -> Vec<(String, String)> {
        r.state
            .iter()
            .map(|(k, v)| {
                (
                    String::from_utf8(k.clone()).unwrap(),
                    String::from_utf8(v.clone()).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn only_writes_of_committed_batches_are_restored() {
        let r = fold(
            Goal::Restore { upto: 20 },
            &[
                claim(1),
                set(1, "k", "1", 0, 10),
                set(1, "k", "2", 10, 20),
                set(1, "k", "3", 20, 30),
                marker(1, 20, 30),
            ],
        );
        assert_eq!(state(&r), [("k".into(), "2".into())]);
        assert_eq!(r.plan, [(20, 30)], "the uncommitted batch is re-formed");
    }

    #[test]
    fn an_older_owners_late_write_never_wins_over_a_newer_owners() {
        // Owner 1 handled 0..10 and 10..20 but its second batch's writes
        // arrive only after owner 2 restored to 10, redid 10..20 and 20..30.
        let r = fold(
            Goal::Restore { upto: 30 },
            &[
                claim(1),
                set(1, "k", "5", 0, 10),
                claim(2),
                set(2, "k", "7", 10, 20),
                set(2, "k", "9", 20, 30),
                set(1, "k", "7", 10, 20),
            ],
        );
        assert_eq!(state(&r), [("k".into(), "9".into())]);
        assert_eq!(r.fenced, 1);
    }

    #[test]
    fn a_late_write_survives_compaction_of_the_newer_one_only_if_nothing_newer_exists() {
        // Compaction kept only the late write of "a" (the newer owner never
        // touched "a", so the late value is still right) and the newer
        // owner's repair of "k" after the late one.
        let r = fold(
            Goal::Restore { upto: 30 },
            &[
                claim(2),
                set(1, "a", "1", 10, 20),
                set(1, "k", "7", 10, 20),
                set(2, "k", "9", 30, 30),
            ],
        );
        assert_eq!(
            state(&r),
            [("a".into(), "1".into()), ("k".into(), "9".into())]
        );
    }

    #[test]
    fn a_marker_delivered_after_a_newer_claim_is_not_replayed() {
        let r = fold(
            Goal::Plan { from: 10 },
            &[
                claim(1),
                marker(1, 10, 20),
                claim(2),
                marker(1, 20, 30),
                claim(3),
            ],
        );
        assert_eq!(r.plan, [(10, 20)]);
        assert_eq!(r.fenced, 1);
    }

    #[test]
    fn overlapping_batches_of_two_owners_replay_in_offset_order_first_wins() {
        let r = fold(
            Goal::Restore { upto: 10 },
            &[
                claim(1),
                marker(1, 10, 30),
                claim(2),
                marker(2, 10, 20),
                marker(2, 20, 40),
                marker(2, 40, 50),
            ],
        );
        // 10..20 replaced 10..30 (same first offset, later wins); 20..40 and
        // 40..50 follow.
        assert_eq!(r.plan, [(10, 20), (20, 40), (40, 50)]);
    }

    #[test]
    fn a_delete_of_the_newest_epoch_removes_the_key() {
        let r = fold(
            Goal::Restore { upto: 20 },
            &[
                set(1, "k", "1", 0, 10),
                Entry {
                    epoch: 2,
                    kind: Kind::State {
                        key: b"k",
                        value: None,
                        expires: None,
                        first: 10,
                        end: 20,
                    },
                },
                set(1, "k", "3", 10, 20),
            ],
        );
        assert!(r.state.is_empty());
    }

    #[test]
    fn a_value_keeps_the_expiry_it_was_written_with_and_a_newer_write_decides() {
        let ttl = |key: &'static str, value: &'static str, expires, first, end| Entry {
            epoch: 1,
            kind: Kind::State {
                key: key.as_bytes(),
                value: Some(value.as_bytes()),
                expires: Some(expires),
                first,
                end,
            },
        };
        let r = fold(
            Goal::Restore { upto: 30 },
            &[
                claim(1),
                ttl("a", "1", 5_000, 0, 10),
                ttl("b", "1", 6_000, 0, 10),
                // A plain write after a TTL write: b never expires now.
                set(1, "b", "2", 10, 20),
                ttl("c", "1", 7_000, 10, 20),
                // An uncommitted batch's expiry is not restored either.
                ttl("c", "2", 9_000, 30, 40),
            ],
        );
        assert_eq!(
            state(&r),
            [
                ("a".into(), "1".into()),
                ("b".into(), "2".into()),
                ("c".into(), "1".into())
            ]
        );
        let expiries: Vec<(&[u8], i64)> = r
            .expiries
            .iter()
            .map(|(k, at)| (k.as_slice(), *at))
            .collect();
        assert_eq!(expiries, [(&b"a"[..], 5_000), (&b"c"[..], 7_000)]);
    }
}
