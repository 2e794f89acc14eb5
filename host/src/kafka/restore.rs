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
use tracing::warn;

use super::ClientSettings;
use crate::checkpoint::RestoredPartition;
use crate::outbox::{batch_headers, changelog_key};
use crate::record::{BatchEffects, TimeDomain};

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
    /// The partition's state, timers and watermark as of `upto` (empty for
    /// `Goal::Plan`). A value already past its expiry is restored too, and
    /// hidden as soon as it is, like any expired one.
    pub partition: RestoredPartition,
    /// What a previous owner did from the start offset on, in order: record
    /// batches to re-form and timer firings to apply again.
    pub plan: Vec<Planned>,
    /// Changelog records read.
    pub records: u64,
    /// Records an older owner delivered after a newer owner's claim.
    pub fenced: u64,
}

/// One step of a previous owner's history past the start offset.
#[derive(Debug, PartialEq, Eq)]
pub enum Planned {
    /// Records `first..end`, handled as one batch.
    Batch {
        /// First source offset.
        first: u64,
        /// Source offset after the batch.
        end: u64,
    },
    /// A timer firing at the batch boundary `at`: applied again exactly,
    /// not fired again (its `now` was the old owner's clock).
    Firing {
        /// The boundary.
        at: u64,
        /// Its sequence number among the firings there.
        seq: u32,
        /// What it did.
        effects: BatchEffects,
    },
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
        /// Written by timer firing `seq` at `first` (= `end`).
        firing: Option<u32>,
    },
    /// A timer set or moved to `due`, or removed (`None`), by batch
    /// `first..end` or a firing.
    Timer {
        /// Its clock.
        domain: TimeDomain,
        /// Its key.
        key: &'a [u8],
        /// When it is due (ms since the Unix epoch).
        due: Option<i64>,
        /// First source offset of the batch.
        first: u64,
        /// Source offset after the batch.
        end: u64,
        /// Written by timer firing `seq` at `first` (= `end`).
        firing: Option<u32>,
    },
    /// The watermark after batch `first..end` (or a firing).
    Watermark {
        /// The watermark, ms.
        value: i64,
        /// First source offset of the batch.
        first: u64,
        /// Source offset after the batch.
        end: u64,
        /// Written by timer firing `seq` at `first` (= `end`).
        firing: Option<u32>,
    },
    /// Batch `first..end` emitted outputs.
    Marker {
        /// First source offset of the batch.
        first: u64,
        /// Source offset after the batch.
        end: u64,
    },
    /// Timer firing `seq` at boundary `at`, whole: written after its other
    /// changelog records and before its outputs, so its presence says every
    /// write of the firing landed.
    Firing {
        /// The boundary.
        at: u64,
        /// Its sequence number there.
        seq: u32,
        /// The encoded `outbox::Firing`.
        record: &'a [u8],
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

/// What a changelog write is to: compaction keeps one record per slot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Slot {
    State(Vec<u8>),
    Timer(TimeDomain, Vec<u8>),
    Watermark,
}

/// The newest write of a slot seen so far: compared by (epoch, batch end).
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
///
/// Timer firings at a boundary N share N with the batch that starts there
/// and hold the group's offset at N while undelivered, so the offset cannot
/// say whether one landed. A firing's writes count only once the group is
/// past N; a firing at or past the start is applied again from its record,
/// which lands after all its writes — or, without that record, was never
/// whole and its outputs never left, and its timers fire anew.
#[derive(Debug)]
pub struct Fold {
    goal: Goal,
    claim: u64,
    writes: BTreeMap<Slot, Write>,
    batches: BTreeMap<u64, u64>,
    firings: BTreeMap<(u64, u32), Vec<u8>>,
    /// The highest firing sequence number seen at the start offset.
    last_seq: Option<u32>,
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
            firings: BTreeMap::new(),
            last_seq: None,
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
            Kind::Firing { at, seq, record } => {
                self.saw_firing(at, seq);
                if late {
                    self.fenced += 1;
                } else if at >= self.goal.start() {
                    self.firings
                        .entry((at, seq))
                        .or_insert_with(|| record.to_vec());
                }
            }
            Kind::State {
                key,
                value,
                expires,
                first,
                end,
                firing,
            } => self.write(
                (entry.epoch, late),
                (first, end, firing),
                || Slot::State(key.to_vec()),
                || (value.map(<[u8]>::to_vec), expires),
            ),
            Kind::Timer {
                domain,
                key,
                due,
                first,
                end,
                firing,
            } => self.write(
                (entry.epoch, late),
                (first, end, firing),
                || Slot::Timer(domain, key.to_vec()),
                || (due.map(|d| d.to_be_bytes().to_vec()), None),
            ),
            Kind::Watermark {
                value,
                first,
                end,
                firing,
            } => self.write(
                (entry.epoch, late),
                (first, end, firing),
                || Slot::Watermark,
                || (Some(value.to_be_bytes().to_vec()), None),
            ),
        }
    }

    fn saw_firing(&mut self, at: u64, seq: u32) {
        if at == self.goal.start() {
            self.last_seq = self.last_seq.max(Some(seq));
        }
    }

    /// One write of batch `first..end`, or of firing `firing` at `first`:
    /// its slot and (value, expiry), built only if it is kept (a restore
    /// reads the whole changelog; most writes are overwritten or are not
    /// needed at all).
    fn write(
        &mut self,
        (epoch, late): (u64, bool),
        (first, end, firing): (u64, u64, Option<u32>),
        slot: impl FnOnce() -> Slot,
        value: impl FnOnce() -> (Option<Vec<u8>>, Option<i64>),
    ) {
        if late {
            self.fenced += 1;
        }
        if let Some(seq) = firing {
            self.saw_firing(first, seq);
        } else if first >= self.goal.start() && !late && end > first {
            // A batch past the start is re-formed (or was fenced): its
            // marker, not its writes, is what counts.
            self.batches.insert(first, end);
        }
        let Goal::Restore { upto } = self.goal else {
            return;
        };
        let committed = match firing {
            Some(_) => first < upto,
            None => end <= upto,
        };
        if !committed {
            return;
        }
        let slot = slot();
        let newer = self
            .writes
            .get(&slot)
            .is_none_or(|w| (epoch, end) >= (w.epoch, w.end));
        if newer {
            let (value, expires) = value();
            self.writes.insert(
                slot,
                Write {
                    epoch,
                    end,
                    value,
                    expires,
                },
            );
        }
    }

    /// The state and the replay plan.
    pub fn finish(self) -> Restored {
        let start = self.goal.start();
        // Batches of different owners past the commit may overlap; in offset
        // order, the first wins. A firing at N comes after the batch that
        // ends at N and before the one that starts there.
        let mut steps: Vec<((u64, u8, u32), Planned)> = Vec::new();
        for (first, end) in self.batches {
            steps.push(((first, 1, 0), Planned::Batch { first, end }));
        }
        for ((at, seq), record) in self.firings {
            match postcard::from_bytes::<crate::outbox::Firing>(&record) {
                Ok(firing) => steps.push((
                    (at, 0, seq),
                    Planned::Firing {
                        at,
                        seq,
                        effects: firing.effects,
                    },
                )),
                Err(e) => warn!(
                    at,
                    seq, "a timer firing's changelog record does not decode, skipped: {e}"
                ),
            }
        }
        steps.sort_by_key(|(order, _)| *order);
        let mut plan = Vec::new();
        let mut cursor = start;
        for (_, step) in steps {
            match step {
                Planned::Batch { first, end } if first >= cursor => {
                    cursor = end;
                    plan.push(step);
                }
                Planned::Firing { at, .. } if at >= cursor => {
                    cursor = at;
                    plan.push(step);
                }
                _ => {}
            }
        }
        let mut partition = RestoredPartition {
            next_firing: self.last_seq.map_or(0, |s| s + 1),
            ..Default::default()
        };
        for (slot, write) in self.writes {
            let Some(value) = write.value else { continue };
            match slot {
                Slot::State(key) => {
                    if let Some(at) = write.expires {
                        partition.expiries.insert(key.clone(), at);
                    }
                    partition.state.insert(key, value);
                }
                Slot::Timer(domain, key) => {
                    if let Ok(due) = value.as_slice().try_into() {
                        partition
                            .timers
                            .insert((domain, key), i64::from_be_bytes(due));
                    }
                }
                Slot::Watermark => {
                    partition.watermark = value.as_slice().try_into().ok().map(i64::from_be_bytes);
                }
            }
        }
        Restored {
            partition,
            plan,
            records: self.records,
            fenced: self.fenced,
        }
    }
}

/// Drops from a plan read for the local checkpoint (`Goal::Plan`) the
/// firings this store already made: `local` is its firing counter (offset,
/// next sequence number), and a firing there numbered below it is in the
/// local state. Another owner numbered its own firings there after every
/// one it found, so those stay.
pub fn drop_local_firings(plan: &mut Vec<Planned>, local: Option<(u64, u32)>) {
    let Some((at, next)) = local else { return };
    plan.retain(
        |step| !matches!(*step, Planned::Firing { at: a, seq, .. } if a == at && seq < next),
    );
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
                        if let Kind::State { end, .. }
                        | Kind::Timer { end, .. }
                        | Kind::Watermark { end, .. }
                        | Kind::Marker { end, .. }
                        | Kind::Firing { at: end, .. } = e.kind
                        {
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
    let (mut first, mut end, mut epoch, mut expires, mut firing) = (None, None, 0, None, None);
    if let Some(headers) = message.headers() {
        for h in headers.iter() {
            let text = h.value.and_then(|v| std::str::from_utf8(v).ok());
            let value = text.and_then(|t| t.parse::<u64>().ok());
            match h.key {
                batch_headers::FIRST => first = value,
                batch_headers::END => end = value,
                batch_headers::EPOCH => epoch = value.unwrap_or(0),
                batch_headers::EXPIRES => expires = text.and_then(|t| t.parse::<i64>().ok()),
                batch_headers::FIRING => firing = text.and_then(|t| t.parse::<u32>().ok()),
                _ => {}
            }
        }
    }
    let key = message.key().unwrap_or_default();
    let (first, end) = match (first, end) {
        (Some(first), Some(end)) => (first, end),
        _ if key == changelog_key::CLAIM => (0, 0),
        _ => bail!("no batch headers"),
    };
    let eight = |value: Option<&[u8]>| -> anyhow::Result<Option<i64>> {
        value
            .map(|v| {
                <[u8; 8]>::try_from(v)
                    .map(i64::from_be_bytes)
                    .map_err(|_| anyhow::anyhow!("a time is 8 bytes, not {}", v.len()))
            })
            .transpose()
    };
    let kind = match key.split_first() {
        Some((&changelog_key::STATE, key)) => Kind::State {
            key,
            value: message.payload(),
            expires,
            first,
            end,
            firing,
        },
        Some((&changelog_key::TIMER, rest)) => {
            let (&tag, key) = rest.split_first().context("a timer key without a domain")?;
            Kind::Timer {
                domain: TimeDomain::from_tag(tag).context("an unknown timer domain")?,
                key,
                due: eight(message.payload())?,
                first,
                end,
                firing,
            }
        }
        _ if key == changelog_key::WATERMARK => Kind::Watermark {
            value: eight(message.payload())?.context("a watermark without a value")?,
            first,
            end,
            firing,
        },
        _ if key == changelog_key::MARKER => match firing {
            Some(seq) => Kind::Firing {
                at: first,
                seq,
                record: message.payload().unwrap_or_default(),
            },
            None => Kind::Marker { first, end },
        },
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
                firing: None,
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

    /// The plan's batches, as (first, end).
    fn batches(r: &Restored) -> Vec<(u64, u64)> {
        r.plan
            .iter()
            .filter_map(|step| match *step {
                Planned::Batch { first, end } => Some((first, end)),
                Planned::Firing { .. } => None,
            })
            .collect()
    }

    fn fold(goal: Goal, entries: &[Entry<'_>]) -> Restored {
        let mut f = Fold::new(goal);
        for e in entries {
            f.apply(*e);
        }
        f.finish()
    }

    fn state(r: &Restored) -> Vec<(String, String)> {
        r.partition
            .state
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
        assert_eq!(
            batches(&r),
            [(20, 30)],
            "the uncommitted batch is re-formed"
        );
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
        assert_eq!(batches(&r), [(10, 20)]);
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
        assert_eq!(batches(&r), [(10, 20), (20, 40), (40, 50)]);
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
                        firing: None,
                    },
                },
                set(1, "k", "3", 10, 20),
            ],
        );
        assert!(r.partition.state.is_empty());
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
                firing: None,
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
            .partition
            .expiries
            .iter()
            .map(|(k, at)| (k.as_slice(), *at))
            .collect();
        assert_eq!(expiries, [(&b"a"[..], 5_000), (&b"c"[..], 7_000)]);
    }

    fn firing_write<'a>(
        epoch: u64,
        key: &'a str,
        value: Option<&'a str>,
        at: u64,
        seq: u32,
    ) -> Entry<'a> {
        Entry {
            epoch,
            kind: Kind::State {
                key: key.as_bytes(),
                value: value.map(str::as_bytes),
                expires: None,
                first: at,
                end: at,
                firing: Some(seq),
            },
        }
    }

    fn timer<'a>(
        epoch: u64,
        key: &'a str,
        due: Option<i64>,
        (first, end): (u64, u64),
        firing: Option<u32>,
    ) -> Entry<'a> {
        Entry {
            epoch,
            kind: Kind::Timer {
                domain: TimeDomain::Processing,
                key: key.as_bytes(),
                due,
                first,
                end,
                firing,
            },
        }
    }

    /// A firing's record, as the outbox encodes it, emitting `outputs`.
    fn record(seq: u32, outputs: &[&str]) -> Vec<u8> {
        let effects = BatchEffects {
            outputs: outputs
                .iter()
                .map(|v| crate::record::OutputRecord {
                    topic: "out".into(),
                    key: None,
                    value: v.as_bytes().to_vec(),
                    headers: Vec::new(),
                    timestamp_ms: Some(7),
                })
                .collect(),
            ..Default::default()
        };
        postcard::to_allocvec(&crate::outbox::Firing { seq, effects }).unwrap()
    }

    fn firing(epoch: u64, at: u64, seq: u32, record: &[u8]) -> Entry<'_> {
        Entry {
            epoch,
            kind: Kind::Firing { at, seq, record },
        }
    }

    /// The plan as (offset, seq) for firings and (first, end) for batches,
    /// tagged.
    fn steps(r: &Restored) -> Vec<(&'static str, u64, u64)> {
        r.plan
            .iter()
            .map(|step| match step {
                Planned::Batch { first, end } => ("batch", *first, *end),
                Planned::Firing { at, seq, .. } => ("firing", *at, u64::from(*seq)),
            })
            .collect()
    }

    #[test]
    fn a_firing_at_the_committed_offset_is_applied_again_from_its_record_not_its_writes() {
        let closed = record(0, &["closed"]);
        let log = [
            claim(1),
            set(1, "k", "1", 0, 10),
            timer(1, "s", Some(100), (0, 10), None),
            firing_write(1, "k", None, 10, 0),
            timer(1, "s", None, (10, 10), Some(0)),
            firing(1, 10, 0, &closed),
        ];
        // The group is at 10 whether or not the firing landed: its writes do
        // not count, its record is replayed.
        let r = fold(Goal::Restore { upto: 10 }, &log);
        assert_eq!(state(&r), [("k".into(), "1".into())]);
        assert_eq!(
            r.partition.timers,
            [((TimeDomain::Processing, b"s".to_vec()), 100)].into()
        );
        assert_eq!(steps(&r), [("firing", 10, 0)]);
        let Planned::Firing { effects, .. } = &r.plan[0] else {
            unreachable!()
        };
        assert_eq!(effects.outputs[0].value, b"closed");
        assert_eq!(effects.outputs[0].timestamp_ms, Some(7));
        assert_eq!(
            r.partition.next_firing, 1,
            "a new firing at 10 is the second"
        );

        // Once the group is past 10, the firing is history like any batch.
        let mut later = log.to_vec();
        later.push(marker(1, 10, 20));
        let r = fold(Goal::Restore { upto: 20 }, &later);
        assert!(r.partition.state.is_empty());
        assert!(r.partition.timers.is_empty());
        assert!(r.plan.is_empty());
        assert_eq!(r.partition.next_firing, 0);
    }

    #[test]
    fn a_firing_whose_record_never_landed_never_happened() {
        let r = fold(
            Goal::Restore { upto: 10 },
            &[
                claim(1),
                set(1, "k", "1", 0, 10),
                timer(1, "s", Some(100), (0, 10), None),
                firing_write(1, "k", None, 10, 0),
            ],
        );
        assert_eq!(state(&r), [("k".into(), "1".into())]);
        assert_eq!(r.partition.timers.len(), 1, "the timer fires anew");
        assert!(r.plan.is_empty());
        assert_eq!(r.partition.next_firing, 1, "its number is not reused");
    }

    #[test]
    fn firings_replay_between_the_batches_around_them() {
        let (a, b, c) = (record(0, &[]), record(0, &[]), record(1, &[]));
        let r = fold(
            Goal::Restore { upto: 10 },
            &[
                claim(1),
                marker(1, 20, 30),
                firing(1, 20, 1, &c),
                marker(1, 10, 20),
                firing(1, 10, 0, &a),
                firing(1, 20, 0, &b),
                // A firing inside a batch another owner formed differently
                // belongs to no history that is replayed.
                firing(1, 25, 0, &a),
            ],
        );
        assert_eq!(
            steps(&r),
            [
                ("firing", 10, 0),
                ("batch", 10, 20),
                ("firing", 20, 0),
                ("firing", 20, 1),
                ("batch", 20, 30),
            ]
        );
    }

    #[test]
    fn a_firing_delivered_after_a_newer_claim_is_fenced() {
        let a = record(0, &["x"]);
        let r = fold(
            Goal::Plan { from: 10 },
            &[claim(1), claim(2), firing(1, 10, 0, &a)],
        );
        assert!(r.plan.is_empty());
        assert_eq!(r.fenced, 1);
    }

    #[test]
    fn timers_and_the_watermark_restore_like_state() {
        let watermark = |value, first, end| Entry {
            epoch: 1,
            kind: Kind::Watermark {
                value,
                first,
                end,
                firing: None,
            },
        };
        let r = fold(
            Goal::Restore { upto: 20 },
            &[
                claim(1),
                timer(1, "a", Some(100), (0, 10), None),
                timer(1, "b", Some(200), (0, 10), None),
                watermark(50, 0, 10),
                // Moved, cancelled; an uncommitted batch changes nothing.
                timer(1, "a", Some(150), (10, 20), None),
                timer(1, "b", None, (10, 20), None),
                watermark(70, 10, 20),
                timer(1, "c", Some(300), (20, 30), None),
                watermark(90, 20, 30),
            ],
        );
        assert_eq!(
            r.partition.timers,
            [((TimeDomain::Processing, b"a".to_vec()), 150)].into()
        );
        assert_eq!(r.partition.watermark, Some(70));
    }

    #[test]
    fn a_plan_for_the_local_checkpoint_skips_the_firings_made_here() {
        let (ours, theirs) = (record(0, &[]), record(1, &[]));
        let mut r = fold(
            Goal::Plan { from: 10 },
            &[
                claim(1),
                firing(1, 10, 0, &ours),
                claim(2),
                firing(2, 10, 0, &ours),
                firing(2, 10, 1, &theirs),
                marker(2, 10, 20),
            ],
        );
        drop_local_firings(&mut r.plan, Some((10, 1)));
        assert_eq!(steps(&r), [("firing", 10, 1), ("batch", 10, 20)]);
        // A counter at another offset says nothing about these.
        let mut plan = fold(Goal::Plan { from: 10 }, &[firing(1, 10, 0, &ours)]).plan;
        drop_local_firings(&mut plan, Some((5, 3)));
        assert_eq!(plan.len(), 1);
    }
}
