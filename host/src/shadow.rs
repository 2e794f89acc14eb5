//! Shadow rollout's comparison: what a candidate version did with a batch
//! against what the serving version did with the same records from the
//! same state. Pure; the worker runs both and throws the candidate's
//! effects away, the rollout (`rollout::Plan`) adds the batches up.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::ShadowCompare;
use crate::fixture::Output;
use crate::record::BatchEffects;

/// Differences kept, per shadow phase.
pub const KEEP: usize = 10;

/// Counts of one partition (or all of them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Batches compared.
    pub batches: u64,
    /// Outputs equal on both sides, at the same place of the batch.
    pub matching: u64,
    /// Outputs at the same place that differ.
    pub differing: u64,
    /// Outputs only the candidate emitted.
    pub extra: u64,
    /// Outputs only the serving version emitted.
    pub missing: u64,
    /// State keys both wrote alike.
    pub state_matching: u64,
    /// State keys written differently (or by one side only).
    pub state_differing: u64,
}

impl Counts {
    /// Differences of every kind: what `max_diff` limits.
    pub fn differences(&self) -> u64 {
        self.differing + self.extra + self.missing + self.state_differing
    }

    fn add(&mut self, other: &Counts) {
        self.batches += other.batches;
        self.matching += other.matching;
        self.differing += other.differing;
        self.extra += other.extra;
        self.missing += other.missing;
        self.state_matching += other.state_matching;
        self.state_differing += other.state_differing;
    }
}

/// One difference: where, and what each side did there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    /// Source partition.
    pub partition: u32,
    /// Offsets of the batch's first and last records.
    pub offsets: [u64; 2],
    /// `output N` (its place among the batch's outputs) or `state KEY`.
    pub at: String,
    /// What the serving version did there (absent: nothing).
    pub active: Option<String>,
    /// What the candidate did there (absent: nothing).
    pub candidate: Option<String>,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "partition {} offsets {}..={} {}: {} -> {}",
            self.partition,
            self.offsets[0],
            self.offsets[1],
            self.at,
            self.active.as_deref().unwrap_or("(nothing)"),
            self.candidate.as_deref().unwrap_or("(nothing)")
        )
    }
}

/// A shadow phase so far: counts in total and per partition, and the first
/// differences.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Every partition together.
    pub total: Counts,
    /// Per partition.
    pub partitions: BTreeMap<u32, Counts>,
    /// The first `KEEP` differences, in the order they were found.
    pub first: Vec<Difference>,
    /// Batches not shadowed because the candidate fell behind its budget.
    #[serde(default)]
    pub skipped: u64,
}

impl Summary {
    /// Adds another summary (a batch's) to this one.
    pub fn merge(&mut self, other: &Summary) {
        self.total.add(&other.total);
        for (p, c) in &other.partitions {
            self.partitions.entry(*p).or_default().add(c);
        }
        let room = KEEP.saturating_sub(self.first.len());
        self.first.extend(other.first.iter().take(room).cloned());
        self.skipped += other.skipped;
    }

    /// One line for logs and rejection reasons.
    pub fn describe(&self) -> String {
        let t = &self.total;
        let mut line = format!(
            "{} batches: outputs {} matching, {} differing, {} extra, {} missing; state keys {} matching, {} differing",
            t.batches,
            t.matching,
            t.differing,
            t.extra,
            t.missing,
            t.state_matching,
            t.state_differing
        );
        if let Some(d) = self.first.first() {
            line.push_str(&format!("; first at {d}"));
        }
        line
    }
}

fn show(o: &Output) -> String {
    let key = o.key.as_ref().map_or("-".to_owned(), |k| k.to_string());
    let mut s = format!("{} {key}={}", o.topic, o.value);
    if let Some(ts) = o.timestamp_ms {
        s.push_str(&format!(" @{ts}"));
    }
    for (k, v) in &o.headers {
        s.push_str(&format!(" [{k}={v}]"));
    }
    s
}

fn show_value(v: &Option<Vec<u8>>) -> String {
    match v {
        Some(v) => crate::fixture::Bytes::of(v).to_string(),
        None => "(deleted)".to_owned(),
    }
}

/// Compares what the serving version (`active`) and the candidate did with
/// batch `offsets` of `partition`: outputs place by place (after sorting,
/// with `options.unordered`; without the headers `options` ignores), state
/// writes key by key (timers are not compared).
pub fn compare(
    partition: u32,
    offsets: [u64; 2],
    active: &BatchEffects,
    candidate: &BatchEffects,
    options: &ShadowCompare,
) -> Summary {
    let mut counts = Counts {
        batches: 1,
        ..Counts::default()
    };
    let mut first = Vec::new();
    let mut note = |at: String, a: Option<String>, c: Option<String>| {
        if first.len() < KEEP {
            first.push(Difference {
                partition,
                offsets,
                at,
                active: a,
                candidate: c,
            });
        }
    };
    let outputs = |e: &BatchEffects| -> Vec<Output> {
        let mut outputs: Vec<Output> = e
            .outputs
            .iter()
            .map(|o| {
                let mut o = Output::from(o);
                for name in &options.ignore_headers {
                    o.headers.remove(name);
                }
                o
            })
            .collect();
        if options.unordered {
            outputs.sort_by_cached_key(show);
        }
        outputs
    };
    let (a, c) = (outputs(active), outputs(candidate));
    for i in 0..a.len().max(c.len()) {
        match (a.get(i), c.get(i)) {
            (Some(x), Some(y)) if x == y => counts.matching += 1,
            (x, y) => {
                match (x, y) {
                    (Some(_), Some(_)) => counts.differing += 1,
                    (None, _) => counts.extra += 1,
                    (_, None) => counts.missing += 1,
                }
                note(format!("output {i}"), x.map(show), y.map(show));
            }
        }
    }
    let mut keys: Vec<&Vec<u8>> = active.state.keys().chain(candidate.state.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        let (x, y) = (active.state.get(key), candidate.state.get(key));
        if x == y {
            counts.state_matching += 1;
        } else {
            counts.state_differing += 1;
            note(
                format!("state {}", crate::fixture::Bytes::of(key)),
                x.map(show_value),
                y.map(show_value),
            );
        }
    }
    Summary {
        total: counts,
        partitions: BTreeMap::from([(partition, counts)]),
        first,
        skipped: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::OutputRecord;

    fn effects(outputs: &[&str], state: &[(&str, Option<&str>)]) -> BatchEffects {
        BatchEffects {
            outputs: outputs
                .iter()
                .map(|v| OutputRecord {
                    topic: "out".into(),
                    key: None,
                    value: v.as_bytes().to_vec(),
                    headers: vec![],
                    timestamp_ms: None,
                })
                .collect(),
            state: state
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec())))
                .collect(),
            ..BatchEffects::default()
        }
    }

    #[test]
    fn outputs_and_state_are_compared_place_by_place_and_key_by_key() {
        let active = effects(&["A", "B", "C"], &[("k", Some("1")), ("j", Some("2"))]);
        let same = compare(0, [10, 12], &active, &active, &ShadowCompare::default());
        assert_eq!(same.total.differences(), 0);
        assert_eq!((same.total.matching, same.total.state_matching), (3, 2));

        let candidate = effects(&["A", "b"], &[("k", Some("1")), ("j", None)]);
        let diff = compare(3, [10, 12], &active, &candidate, &ShadowCompare::default());
        let t = diff.total;
        assert_eq!(
            (
                t.matching,
                t.differing,
                t.extra,
                t.missing,
                t.state_differing
            ),
            (1, 1, 0, 1, 1)
        );
        assert_eq!(t.differences(), 3);
        assert_eq!(diff.first[0].at, "output 1");
        assert_eq!(diff.first[0].active.as_deref(), Some("out -=\"B\""));
        assert_eq!(diff.first[0].candidate.as_deref(), Some("out -=\"b\""));
        assert_eq!(diff.first[1].candidate, None);
        assert_eq!(diff.first[2].at, "state \"j\"");
        assert_eq!(diff.first[2].candidate.as_deref(), Some("(deleted)"));
        assert_eq!(diff.partitions[&3], t);
    }

    #[test]
    fn order_and_ignored_headers_can_be_left_out() {
        let mut active = effects(&["A", "B"], &[]);
        let mut candidate = effects(&["B", "A"], &[]);
        for (e, id) in [(&mut active, "1"), (&mut candidate, "2")] {
            for o in &mut e.outputs {
                o.headers
                    .push(("request-id".into(), id.as_bytes().to_vec()));
            }
        }
        let strict = ShadowCompare::default();
        assert_eq!(
            compare(0, [0, 1], &active, &candidate, &strict)
                .total
                .differing,
            2
        );
        let unordered = ShadowCompare {
            unordered: true,
            ..ShadowCompare::default()
        };
        assert_eq!(
            compare(0, [0, 1], &active, &candidate, &unordered)
                .total
                .differing,
            2
        );
        let lenient = ShadowCompare {
            unordered: true,
            ignore_headers: vec!["request-id".into()],
        };
        let same = compare(0, [0, 1], &active, &candidate, &lenient);
        assert_eq!((same.total.matching, same.total.differences()), (2, 0));
    }

    #[test]
    fn summaries_add_up_and_keep_the_first_differences() {
        let active = effects(&["A"], &[]);
        let candidate = effects(&["B"], &[]);
        let mut sum = Summary::default();
        for p in 0..(KEEP as u64 + 5) {
            sum.merge(&compare(
                (p % 2) as u32,
                [p, p],
                &active,
                &candidate,
                &ShadowCompare::default(),
            ));
        }
        assert_eq!(sum.total.batches, KEEP as u64 + 5);
        assert_eq!(sum.total.differing, KEEP as u64 + 5);
        assert_eq!(sum.first.len(), KEEP);
        assert_eq!(sum.first[0].offsets, [0, 0]);
        assert_eq!(
            sum.partitions[&0].batches + sum.partitions[&1].batches,
            sum.total.batches
        );
    }
}
