//! Dead letters as a tool: read them back with where they came from and why,
//! and send chosen ones to a topic again — each at most once, since the
//! replay and its mark commit in one transaction.

use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use crate::log::LogAppender;
use crate::partitioner::partition_for_key;
use crate::record::{Header, LogRecord, dead_letter_headers as h, now_ms};
use crate::store::{REPLAYED, Store, StoreError};

/// Header a replayed record carries: `<dead-letter topic>/<partition>/<offset>`.
pub const REPLAY_OF: &str = "linecook.replay.of";

/// Where a record is: (topic, partition, offset).
pub type Position = (String, u32, u64);

/// A dead letter with what its headers say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Partition of the dead-letter topic.
    pub partition: u32,
    /// Offset in it.
    pub offset: u64,
    /// When it was dead-lettered, ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// `linecook.source.topic`.
    pub source_topic: Option<String>,
    /// `linecook.source.partition`.
    pub source_partition: Option<u32>,
    /// `linecook.source.offset`.
    pub source_offset: Option<u64>,
    /// `linecook.plugin`.
    pub plugin: Option<String>,
    /// `linecook.version`.
    pub version: Option<String>,
    /// `linecook.error.kind`.
    pub kind: Option<String>,
    /// `linecook.error.message`.
    pub message: Option<String>,
    /// Where it was replayed to, if it was: (topic, partition, offset).
    pub replayed_to: Option<Position>,
}

impl DeadLetter {
    fn of(record: &LogRecord, replayed_to: Option<Position>) -> DeadLetter {
        let text = |name: &str| {
            record
                .headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        DeadLetter {
            partition: record.partition,
            offset: record.offset,
            timestamp_ms: record.timestamp_ms,
            source_topic: text(h::TOPIC),
            source_partition: text(h::PARTITION).and_then(|p| p.parse().ok()),
            source_offset: text(h::OFFSET).and_then(|o| o.parse().ok()),
            plugin: text(h::PLUGIN),
            version: text(h::VERSION),
            kind: text(h::ERROR_KIND),
            message: text(h::ERROR_MESSAGE),
            replayed_to,
        }
    }

    /// Whether it matches every `name=value` of `filter`: `kind`, `plugin`,
    /// `version` (a prefix), `partition` and `offset` (of the source).
    pub fn matches(&self, filter: &[(String, String)]) -> Result<bool, String> {
        for (name, value) in filter {
            let hit = match name.as_str() {
                "kind" => self.kind.as_deref() == Some(value),
                "plugin" => self.plugin.as_deref() == Some(value),
                "version" => self
                    .version
                    .as_deref()
                    .is_some_and(|v| v.starts_with(value.as_str())),
                "partition" => self.source_partition.map(|p| p.to_string()).as_ref() == Some(value),
                "offset" => self.source_offset.map(|o| o.to_string()).as_ref() == Some(value),
                other => {
                    return Err(format!(
                        "cannot filter on `{other}`: use kind, plugin, version, partition or offset"
                    ));
                }
            };
            if !hit {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// What a replay did (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplayReport {
    /// Letters sent: (dead-letter partition, offset) → (topic, partition, offset).
    pub replayed: Vec<((u32, u64), Position)>,
    /// Matching letters left alone because they were replayed before.
    pub already_replayed: u64,
    /// Letters the filter left out.
    pub not_matching: u64,
}

/// The record a dead letter becomes again: its own key, value and headers,
/// without what dead-lettering added, plus where it was replayed from.
fn replayed_record(dlq: &str, letter: &LogRecord) -> Vec<Header> {
    let added = [
        h::TOPIC,
        h::PARTITION,
        h::OFFSET,
        h::PLUGIN,
        h::VERSION,
        h::ERROR_KIND,
        h::ERROR_MESSAGE,
    ];
    let mut headers: Vec<Header> = letter
        .headers
        .iter()
        .filter(|(k, _)| !added.contains(&k.as_str()))
        .cloned()
        .collect();
    headers.push((
        REPLAY_OF.to_owned(),
        format!("{dlq}/{}/{}", letter.partition, letter.offset).into_bytes(),
    ));
    headers
}

impl Store {
    /// Every dead letter of `dlq`, partition by partition.
    pub fn dead_letters(&self, dlq: &str) -> Result<Vec<DeadLetter>, StoreError> {
        let info = self.topic(dlq)?;
        let names: std::collections::HashMap<u32, String> =
            self.topics()?.into_iter().map(|t| (t.id, t.name)).collect();
        let txn = self.db.begin_read()?;
        let marks = txn.open_table(REPLAYED)?;
        let mut out = Vec::new();
        for partition in 0..info.partitions {
            for record in self.read(&info, partition, 0, usize::MAX)? {
                let mark = marks
                    .get((info.id, partition, record.offset))?
                    .map(|m| m.value());
                let to = mark.map(|(id, p, o)| (names.get(&id).cloned().unwrap_or_default(), p, o));
                out.push(DeadLetter::of(&record, to));
            }
        }
        Ok(out)
    }

    /// Appends the dead letters of `dlq` that match `filter` and were never
    /// replayed to `to` (default: each one's source topic), marking each in
    /// the same transaction. With `dry_run`, says what it would do.
    pub fn replay_dead_letters(
        &self,
        dlq: &str,
        to: Option<&str>,
        filter: &[(String, String)],
        dry_run: bool,
    ) -> Result<ReplayReport, StoreError> {
        let info = self.topic(dlq)?;
        let mut letters = Vec::new();
        for partition in 0..info.partitions {
            letters.extend(self.read(&info, partition, 0, usize::MAX)?);
        }
        let txn = self.db.begin_write()?;
        let mut report = ReplayReport::default();
        let touched = {
            let mut marks = txn.open_table(REPLAYED)?;
            let mut log = LogAppender::new(&txn)?;
            let now = now_ms();
            for letter in &letters {
                let seen = DeadLetter::of(letter, None);
                if !seen.matches(filter).map_err(StoreError::Invalid)? {
                    report.not_matching += 1;
                    continue;
                }
                if marks
                    .get((info.id, letter.partition, letter.offset))?
                    .is_some()
                {
                    report.already_replayed += 1;
                    continue;
                }
                let target_name = match (to, &seen.source_topic) {
                    (Some(to), _) => to.to_owned(),
                    (None, Some(source)) => source.clone(),
                    (None, None) => {
                        return Err(StoreError::Invalid(format!(
                            "{dlq}/{}/{} has no {} header; name a topic with --to",
                            letter.partition,
                            letter.offset,
                            h::TOPIC
                        )));
                    }
                };
                let target = log.topic(&target_name)?;
                // Back where it came from when that is where it goes;
                // elsewhere, where its key leads.
                let partition = match (&seen.source_topic, seen.source_partition, &letter.key) {
                    (Some(s), Some(p), _) if *s == target_name && p < target.partitions => p,
                    (_, _, Some(key)) => partition_for_key(key, target.partitions),
                    _ => 0,
                };
                let offset = if dry_run {
                    log.end(&target, partition)?
                } else {
                    let headers = replayed_record(dlq, letter);
                    let offset = log.append(
                        target.id,
                        partition,
                        now,
                        letter.key.as_deref(),
                        &letter.value,
                        &headers,
                    )?;
                    marks.insert(
                        (info.id, letter.partition, letter.offset),
                        (target.id, partition, offset),
                    )?;
                    offset
                };
                report.replayed.push((
                    (letter.partition, letter.offset),
                    (target_name, partition, offset),
                ));
            }
            log.finish()?
        };
        if dry_run {
            txn.abort()?;
        } else {
            txn.commit()?;
            self.notify_appended(&touched);
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::NewRecord;

    fn letter(store: &Store, value: &str, kind: &str, source_offset: u64) {
        let headers = [
            (h::TOPIC, "in".to_owned()),
            (h::PARTITION, "1".to_owned()),
            (h::OFFSET, source_offset.to_string()),
            (h::PLUGIN, "p".to_owned()),
            (h::VERSION, "abcdef".to_owned()),
            (h::ERROR_KIND, kind.to_owned()),
            (h::ERROR_MESSAGE, "boom".to_owned()),
        ];
        let mut all = vec![("own".to_owned(), b"kept".to_vec())];
        all.extend(
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone().into_bytes())),
        );
        store
            .produce(
                "in.dlq",
                &[NewRecord {
                    key: Some(b"k".to_vec()),
                    value: value.as_bytes().to_vec(),
                    headers: all,
                    partition: None,
                    timestamp_ms: None,
                }],
            )
            .unwrap();
    }

    #[test]
    fn a_dead_letter_is_replayed_once_to_where_it_came_from() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let input = store.create_topic("in", 2).unwrap();
        store.create_topic("in.dlq", 1).unwrap();
        letter(&store, "bad", "trap", 7);
        letter(&store, "worse", "poison", 9);

        let filter = vec![("kind".to_owned(), "trap".to_owned())];
        let dry = store
            .replay_dead_letters("in.dlq", None, &filter, true)
            .unwrap();
        assert_eq!(dry.replayed, [((0, 0), ("in".to_owned(), 1, 0))]);
        assert!(
            store.read(&input, 1, 0, 10).unwrap().is_empty(),
            "a dry run writes nothing"
        );

        let done = store
            .replay_dead_letters("in.dlq", None, &filter, false)
            .unwrap();
        assert_eq!(done.replayed, dry.replayed);
        assert_eq!(done.not_matching, 1);
        let again = store
            .replay_dead_letters("in.dlq", None, &filter, false)
            .unwrap();
        assert_eq!((again.replayed.len(), again.already_replayed), (0, 1));

        let replayed = store.read(&input, 1, 0, 10).unwrap();
        assert_eq!(replayed.len(), 1);
        assert_eq!(
            (replayed[0].key.as_deref(), replayed[0].value.as_slice()),
            (Some(&b"k"[..]), &b"bad"[..])
        );
        assert_eq!(
            replayed[0].headers,
            [
                ("own".to_owned(), b"kept".to_vec()),
                (REPLAY_OF.to_owned(), b"in.dlq/0/0".to_vec()),
            ]
        );
        let letters = store.dead_letters("in.dlq").unwrap();
        assert_eq!(letters[0].replayed_to, Some(("in".to_owned(), 1, 0)));
        assert_eq!(
            (letters[0].kind.as_deref(), letters[0].source_offset),
            (Some("trap"), Some(7))
        );
        assert_eq!(letters[1].replayed_to, None);

        let err = store
            .replay_dead_letters("in.dlq", None, &[("colour".into(), "red".into())], false)
            .unwrap_err();
        assert!(
            err.to_string().contains("cannot filter on `colour`"),
            "{err}"
        );
    }
}
