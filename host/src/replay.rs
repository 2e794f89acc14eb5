//! `linecook replay`: runs a plugin version over records already in the
//! embedded log (or a Kafka topic) and prints what it emits, committing nothing — to try a
//! version on real traffic before deploying it, or to see what a range of
//! records would have produced.
//!
//! Each partition runs as the host would run it: batches of `max_batch` in
//! offset order, one instance per partition, the state the handler writes
//! kept (in memory) from batch to batch, timers fired between batches. The
//! state starts empty, or as the partition's committed state (`--state
//! current`). Nothing reaches the store: not state, not outputs, not
//! offsets; a running host is not disturbed (records and state are read
//! through its admin API).

use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

use crate::client::Access;
use crate::config::Limits;
use crate::fixture::{Output, Partition, prepared_has_timers};
use crate::record::now_ms;
use crate::runtime::bindings::Context;
use crate::runtime::{Batch, CallTime, Instance, Labels, Runtime};

/// Which state a replay starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartState {
    /// Nothing: as a new deployment would start.
    Empty,
    /// The partition's committed state now.
    Current,
}

/// What to replay.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The component.
    pub plugin: &'a Path,
    /// Route config given to `init` (`key=value` pairs).
    pub config: Vec<(String, String)>,
    /// Source topic.
    pub topic: &'a str,
    /// One partition, or every one.
    pub partition: Option<u32>,
    /// First offset (per partition); default the first record.
    pub from_offset: u64,
    /// Start instead at each partition's first record with a timestamp at
    /// or after this (ms since the Unix epoch).
    pub from_timestamp: Option<i64>,
    /// Offset to stop before (per partition); default the end of the log.
    pub to_offset: Option<u64>,
    /// Most records per `handle` call.
    pub max_batch: usize,
    /// State to start from.
    pub state: StartState,
}

/// One emitted record, and the batch of source records it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Line {
    /// The emitted record.
    #[serde(flatten)]
    pub output: Output,
    /// Source partition.
    pub source_partition: u32,
    /// Offsets of the source batch's first and last records (a timer
    /// firing's outputs name the batch it followed).
    pub source_offsets: [u64; 2],
}

/// What a replay did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Source records handled.
    pub records: u64,
    /// Records emitted.
    pub outputs: u64,
    /// Failed calls (each printed to standard error): a replay goes on past
    /// them, as the host would after dead-lettering.
    pub failures: u64,
}

/// Where a replay reads its records: the embedded log (through `Access`),
/// or a Kafka topic (`kafka::replay`).
pub trait Records {
    /// The end offset (next to be written) of every partition of `topic`.
    fn ends(&mut self, topic: &str) -> anyhow::Result<Vec<u64>>;
    /// Up to `max` records of `topic`/`partition` from offset `from` on,
    /// none past the end `ends` gave.
    fn read(
        &mut self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> anyhow::Result<Vec<crate::record::LogRecord>>;

    /// The first offset of `partition` whose record has a timestamp at or
    /// after `ms`, or `end` if none does. By default, a scan.
    fn offset_at(&mut self, topic: &str, partition: u32, ms: i64, end: u64) -> anyhow::Result<u64> {
        let mut from = 0;
        loop {
            let records = self.read(topic, partition, from, 10_000)?;
            let Some(last) = records.last() else {
                return Ok(end);
            };
            if let Some(r) = records.iter().find(|r| r.timestamp_ms >= ms) {
                return Ok(r.offset);
            }
            from = last.offset + 1;
        }
    }
}

impl Records for &Access {
    fn ends(&mut self, topic: &str) -> anyhow::Result<Vec<u64>> {
        Ok(self.topic(topic)?.end_offsets)
    }

    fn read(
        &mut self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> anyhow::Result<Vec<crate::record::LogRecord>> {
        Access::read(self, topic, partition, from, max)
    }
}

/// Replays `request` over the records `records` reads, handing each
/// emitted record to `emit` in order (partition by partition); `failed`
/// gets each failed call's reason. `access` gives the committed state for
/// `--state current`.
pub fn replay(
    access: &Access,
    records_from: &mut dyn Records,
    request: &Request<'_>,
    mut emit: impl FnMut(Line) -> anyhow::Result<()>,
    mut failed: impl FnMut(String),
) -> anyhow::Result<Summary> {
    let bytes = std::fs::read(request.plugin)
        .with_context(|| format!("reading {}", request.plugin.display()))?;
    let runtime = Runtime::new()?;
    let prepared = runtime
        .prepare(&bytes)
        .with_context(|| format!("{} is not a usable plugin", request.plugin.display()))?;
    let digest = crate::plugins::digest(&bytes);
    let name = request
        .plugin
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin")
        .to_owned();
    let ends = records_from.ends(request.topic)?;
    let count = ends.len() as u32;
    let partitions: Vec<u32> = match request.partition {
        Some(p) if p >= count => anyhow::bail!(
            "topic `{}` has {count} partitions; there is no partition {p}",
            request.topic,
        ),
        Some(p) => vec![p],
        None => (0..count).collect(),
    };
    let mut summary = Summary::default();
    for partition in partitions {
        let mut state = Partition::default();
        if request.state == StartState::Current {
            state.state = access
                .state_entries(request.topic, partition)?
                .into_iter()
                .collect();
        }
        let context = Context {
            plugin: name.clone(),
            version: digest.clone(),
            topic: request.topic.to_owned(),
            partition,
            config: request.config.clone(),
        };
        let labels = Labels {
            plugin: name.clone(),
            version: crate::plugins::short(&digest).to_owned(),
            topic: request.topic.to_owned(),
            partition,
        };
        let start = |state: &Partition| {
            Instance::start(
                &prepared,
                labels.clone(),
                Limits::default(),
                &context,
                Box::new(state.clone()),
            )
            .with_context(|| format!("starting {name} on partition {partition}"))
        };
        let mut instance = start(&state)?;
        let end = ends[partition as usize];
        let stop = request.to_offset.map_or(end, |to| to.min(end));
        let mut next = match request.from_timestamp {
            Some(ms) => records_from.offset_at(request.topic, partition, ms, end)?,
            None => request.from_offset,
        };
        while next < stop {
            let want = request.max_batch.min((stop - next) as usize);
            let records = records_from.read(request.topic, partition, next, want)?;
            let Some(last) = records.last().map(|r| r.offset) else {
                break;
            };
            let first = records[0].offset;
            next = last + 1;
            summary.records += records.len() as u64;
            let watermark = crate::timers::advance_watermark(
                state.watermark,
                records.iter().map(|r| r.timestamp_ms),
                0,
            );
            let time = |state: &Partition| CallTime {
                now_ms: now_ms(),
                watermark: state.watermark,
                ..CallTime::default()
            };
            let mut outputs = Vec::new();
            let batch = Batch::new(instance.shape(), request.topic, records);
            match instance.handle(&batch, Box::new(state.clone()), time(&state)) {
                Ok((mut effects, _)) => {
                    effects.watermark = watermark;
                    state.apply(effects, &mut outputs);
                }
                Err(failure) => {
                    summary.failures += 1;
                    failed(format!(
                        "partition {partition}, offsets {first}..={last}: {failure}"
                    ));
                    if failure.discards_instance() {
                        instance = start(&state)?;
                    }
                }
            }
            if prepared_has_timers(&prepared) {
                let due = state.due(now_ms(), request.max_batch);
                if !due.is_empty() {
                    match instance.on_timers(&due, Box::new(state.clone()), time(&state)) {
                        Ok((effects, _)) => state.apply(effects, &mut outputs),
                        Err(failure) => {
                            summary.failures += 1;
                            failed(format!(
                                "partition {partition}, timers after offset {last}: {failure}"
                            ));
                            if failure.discards_instance() {
                                instance = start(&state)?;
                            }
                        }
                    }
                }
            }
            for output in outputs {
                summary.outputs += 1;
                emit(Line {
                    output,
                    source_partition: partition,
                    source_offsets: [first, last],
                })?;
            }
        }
    }
    Ok(summary)
}

/// How a candidate's outputs differ from a baseline's over the same records
/// (`linecook replay --against`).
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct Diff {
    /// Source batches compared.
    pub batches: u64,
    /// Outputs equal in both, at the same place of the same batch.
    pub matching: u64,
    /// Outputs at the same place that differ.
    pub differing: u64,
    /// Outputs only the candidate emitted.
    pub extra: u64,
    /// Outputs only the baseline emitted.
    pub missing: u64,
    /// The first differences, in source order.
    pub first: Vec<Difference>,
}

/// One difference: where, and what each side emitted there.
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// Source partition.
    pub partition: u32,
    /// Offsets of the source batch's first and last records.
    pub source_offsets: [u64; 2],
    /// Position among the batch's outputs.
    pub index: usize,
    /// What the baseline emitted there (absent: nothing).
    pub baseline: Option<Output>,
    /// What the candidate emitted there (absent: nothing).
    pub candidate: Option<Output>,
}

impl Diff {
    /// Whether the candidate emitted exactly what the baseline did.
    pub fn same(&self) -> bool {
        self.differing == 0 && self.extra == 0 && self.missing == 0
    }
}

/// Lines grouped by `key`, each group in order, and the keys of both sides
/// sorted and without repeats.
fn groups<'a, K: Ord + Copy>(
    baseline: &'a [Line],
    candidate: &'a [Line],
    key: impl Fn(&Line) -> K,
) -> Vec<(Vec<&'a Line>, Vec<&'a Line>)> {
    let mut by: std::collections::BTreeMap<K, (Vec<&Line>, Vec<&Line>)> = Default::default();
    for l in baseline {
        by.entry(key(l)).or_default().0.push(l);
    }
    for l in candidate {
        by.entry(key(l)).or_default().1.push(l);
    }
    by.into_values().collect()
}

/// Compares groups place by place into a `Diff` of `batches` batches,
/// keeping the first `keep` differences, each named by the batch of the
/// baseline's line there (or the candidate's).
fn align(groups: Vec<(Vec<&Line>, Vec<&Line>)>, batches: u64, keep: usize) -> Diff {
    let mut diff = Diff {
        batches,
        ..Diff::default()
    };
    for (b, c) in groups {
        for index in 0..b.len().max(c.len()) {
            let (bo, co) = (b.get(index).copied(), c.get(index).copied());
            match (bo, co) {
                (Some(x), Some(y)) if x.output == y.output => {
                    diff.matching += 1;
                    continue;
                }
                (Some(_), Some(_)) => diff.differing += 1,
                (None, Some(_)) => diff.extra += 1,
                (Some(_), None) => diff.missing += 1,
                (None, None) => unreachable!("index below the longer side"),
            }
            if diff.first.len() < keep {
                let at = bo.or(co).expect("one side has a line here");
                diff.first.push(Difference {
                    partition: at.source_partition,
                    source_offsets: at.source_offsets,
                    index,
                    baseline: bo.map(|l| l.output.clone()),
                    candidate: co.map(|l| l.output.clone()),
                });
            }
        }
    }
    diff
}

/// Compares two replays of the same records, batch by batch and output by
/// output, keeping the first `keep` differences.
pub fn compare(baseline: &[Line], candidate: &[Line], keep: usize) -> Diff {
    let groups = groups(baseline, candidate, |l| {
        (l.source_partition, l.source_offsets)
    });
    let batches = groups.len() as u64;
    align(groups, batches, keep)
}

/// The outputs in the log that carry origin headers naming `topic` (a
/// route with `origin_headers`), of `partitions`, from batches starting at
/// offsets in `from..to`: as `replay` lines, in origin order, without the
/// origin headers and timestamps (a replay cannot know the commit time).
pub fn logged_outputs(
    access: &Access,
    topic: &str,
    partitions: &[u32],
    from: u64,
    to: Option<u64>,
) -> anyhow::Result<Vec<Line>> {
    use crate::outbox::origin_headers as o;
    let mut found = Vec::new();
    for t in access.topics()? {
        if t.name == topic {
            continue;
        }
        for partition in 0..t.partitions {
            let mut next = 0;
            loop {
                let records = access.read(&t.name, partition, next, 10_000)?;
                let Some(last) = records.last() else { break };
                next = last.offset + 1;
                for r in records {
                    let header = |name: &str| {
                        r.headers
                            .iter()
                            .find(|(k, _)| k == name)
                            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                    };
                    if header(o::TOPIC).as_deref() != Some(topic) {
                        continue;
                    }
                    let number = |name: &str| header(name).and_then(|v| v.parse::<u64>().ok());
                    let (Some(p), Some(offset), Some(index)) =
                        (number(o::PARTITION), number(o::OFFSET), number(o::INDEX))
                    else {
                        continue;
                    };
                    let p = p as u32;
                    if !partitions.contains(&p) || offset < from || to.is_some_and(|t| offset >= t)
                    {
                        continue;
                    }
                    let mut output = Output::from(&crate::record::OutputRecord {
                        topic: t.name.clone(),
                        key: r.key,
                        value: r.value,
                        headers: r
                            .headers
                            .into_iter()
                            .filter(|(k, _)| !k.starts_with("linecook.origin."))
                            .collect(),
                        timestamp_ms: None,
                    });
                    output.timestamp_ms = None;
                    found.push(((p, offset, index), output));
                }
            }
        }
    }
    found.sort_by_key(|(at, _)| *at);
    Ok(found
        .into_iter()
        .map(|((p, offset, _), output)| Line {
            output,
            source_partition: p,
            source_offsets: [offset, offset],
        })
        .collect())
}

/// Compares two output sequences partition by partition, position by
/// position: for `--against log`, whose batches need not be the replay's.
/// A difference names the baseline's batch (or the candidate's).
pub fn compare_in_order(baseline: &[Line], candidate: &[Line], keep: usize) -> Diff {
    let mut batches: Vec<(u32, [u64; 2])> = candidate
        .iter()
        .map(|l| (l.source_partition, l.source_offsets))
        .collect();
    batches.dedup();
    align(
        groups(baseline, candidate, |l| l.source_partition),
        batches.len() as u64,
        keep,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::Bytes;

    fn line(partition: u32, offsets: [u64; 2], value: &str) -> Line {
        Line {
            output: Output {
                topic: "out".into(),
                key: None,
                value: Bytes::Text(value.into()),
                timestamp_ms: None,
                headers: Default::default(),
            },
            source_partition: partition,
            source_offsets: offsets,
        }
    }

    #[test]
    fn replays_compare_output_by_output_within_each_batch() {
        let base = [
            line(0, [0, 1], "a"),
            line(0, [0, 1], "b"),
            line(0, [2, 3], "c"),
            line(1, [0, 0], "x"),
        ];
        let same = compare(&base, &base, 10);
        assert!(same.same());
        assert_eq!((same.batches, same.matching), (3, 4));

        let cand = [
            line(0, [0, 1], "a"),
            line(0, [0, 1], "B"),
            line(0, [0, 1], "extra"),
            // batch [2, 3] emitted nothing
            line(1, [0, 0], "x"),
        ];
        let diff = compare(&base, &cand, 2);
        assert!(!diff.same());
        assert_eq!(
            (diff.matching, diff.differing, diff.extra, diff.missing),
            (2, 1, 1, 1)
        );
        assert_eq!(diff.first.len(), 2, "only the first two are kept");
        assert_eq!(diff.first[0].index, 1);
        assert_eq!(
            diff.first[0].candidate.as_ref().unwrap().value,
            Bytes::Text("B".into())
        );
        assert_eq!(diff.first[1].baseline, None);
    }

    #[test]
    fn the_log_compares_in_order_whatever_the_batches() {
        // The log's batches were [0..1] and [2..3]; the replay's one [0..3].
        let log = [
            line(0, [0, 0], "a"),
            line(0, [0, 0], "b"),
            line(0, [2, 2], "c"),
        ];
        let same = [
            line(0, [0, 3], "a"),
            line(0, [0, 3], "b"),
            line(0, [0, 3], "c"),
        ];
        let diff = compare_in_order(&log, &same, 10);
        assert!(diff.same());
        assert_eq!((diff.batches, diff.matching), (1, 3));
        let changed = [
            line(0, [0, 3], "a"),
            line(0, [0, 3], "b"),
            line(0, [0, 3], "C"),
        ];
        let diff = compare_in_order(&log, &changed, 10);
        assert_eq!(diff.differing, 1);
        assert_eq!(
            diff.first[0].source_offsets,
            [2, 2],
            "named by the log's batch"
        );
        assert_eq!(diff.first[0].index, 2);
    }
}
