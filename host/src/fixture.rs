//! `linecook test`: a handler run against a fixture — route config, initial
//! state, batches of records at given clock times — with no host, log or
//! store, and what it did (outputs, final state, pending timers, errors)
//! compared with the fixture's expectation.
//!
//! The run follows the host's rules for one partition: batches in order,
//! state read-your-writes within a call, effects kept only when a call
//! succeeds, the watermark advanced by each batch, due timers fired after
//! each batch (processing timers by the batch's `now_ms`, event timers by
//! the watermark) in due-time order. A failed call is recorded as an error
//! and its effects dropped; the error policy (retries, dead letters) is the
//! host's and is not played here.
//!
//! Fixture (TOML; bytes are UTF-8 strings or `{ base64 = "…" }`):
//!
//! ```toml
//! plugin = "uppercase.wasm"            # relative to the fixture
//! config = { output = "out" }          # the route's config, for init
//! allowed_lateness_ms = 0              # the route's, for the watermark
//!
//! [[state]]                            # state before the first batch
//! key = "a"
//! value = "1"
//!
//! [[batch]]
//! now_ms = 1000                        # the host clock (default: the previous batch's, from 0)
//! records = [{ key = "k", value = "hello", timestamp_ms = 5 }]
//!
//! [expect]                             # sections left out are not checked
//! outputs = [{ topic = "out", key = "k", value = "HELLO" }]
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{Entries, StateReader};
use crate::config::Limits;
use crate::record::{BatchEffects, LogRecord, TimeDomain, Timer};
use crate::runtime::bindings::Context;
use crate::runtime::{Batch, CallTime, Instance, Labels, Prepared, Runtime};
use crate::store::StoreError;

/// Bytes in a fixture: text when they are UTF-8, else base64.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Bytes {
    /// UTF-8 text.
    Text(String),
    /// Anything else.
    Base64 {
        /// Standard base64 with padding.
        base64: String,
    },
}

impl Bytes {
    fn to_vec(&self) -> anyhow::Result<Vec<u8>> {
        match self {
            Bytes::Text(s) => Ok(s.as_bytes().to_vec()),
            Bytes::Base64 { base64 } => base64::engine::general_purpose::STANDARD
                .decode(base64)
                .with_context(|| format!("`{base64}` is not base64")),
        }
    }

    pub(crate) fn of(bytes: &[u8]) -> Bytes {
        match std::str::from_utf8(bytes) {
            Ok(s) => Bytes::Text(s.to_owned()),
            Err(_) => Bytes::Base64 {
                base64: base64::engine::general_purpose::STANDARD.encode(bytes),
            },
        }
    }
}

impl std::fmt::Display for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bytes::Text(s) => write!(f, "{}", serde_json::Value::String(s.clone())),
            Bytes::Base64 { base64 } => write!(f, "base64:{base64}"),
        }
    }
}

/// A fixture file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    /// The handler, relative to the fixture file.
    pub plugin: PathBuf,
    /// The route's config, as `init` receives it.
    #[serde(default)]
    pub config: BTreeMap<String, toml::Value>,
    /// The route's `allowed_lateness_ms`.
    #[serde(default)]
    pub allowed_lateness_ms: u64,
    /// The topic the records come from (default `in`).
    #[serde(default = "default_topic")]
    pub topic: String,
    /// State before the first batch.
    #[serde(default)]
    pub state: Vec<Entry>,
    /// The batches, in order.
    #[serde(default)]
    pub batch: Vec<FixtureBatch>,
    /// Canned answers to the handler's outbound HTTP requests: no network
    /// is touched, and a request with none is refused.
    #[serde(default)]
    pub http: Vec<CannedHttp>,
    /// What the run must do.
    #[serde(default)]
    pub expect: Expect,
}

fn default_topic() -> String {
    "in".to_owned()
}

/// A state entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Key.
    pub key: Bytes,
    /// Value.
    pub value: Bytes,
}

/// One batch and the clock it runs at.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureBatch {
    /// The host clock, ms since the Unix epoch; default: the previous
    /// batch's (0 for the first).
    pub now_ms: Option<i64>,
    /// The records; none only moves the clock (and fires timers).
    #[serde(default)]
    pub records: Vec<FixtureRecord>,
}

/// A canned answer to one request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CannedHttp {
    /// The method (default `GET`).
    #[serde(default = "default_method")]
    pub method: String,
    /// The full URL the handler asks for.
    pub url: String,
    /// The status code (default 200).
    #[serde(default = "default_status")]
    pub status: u16,
    /// The body (default empty).
    #[serde(default)]
    pub body: Option<Bytes>,
    /// Response headers, by name (`Location` for a redirect).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn default_method() -> String {
    "GET".to_owned()
}

fn default_status() -> u16 {
    200
}

/// A record of a batch.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureRecord {
    /// Key; absent for a keyless record.
    pub key: Option<Bytes>,
    /// Value.
    pub value: Bytes,
    /// Timestamp (event time); default: the batch's `now_ms`.
    pub timestamp_ms: Option<i64>,
    /// Headers, by name.
    #[serde(default)]
    pub headers: BTreeMap<String, Bytes>,
}

/// The expectation; a section left out is not checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Every record emitted, in order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<Output>>,
    /// The state after the last batch, in key order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<Vec<Entry>>,
    /// The timers pending after the last batch, in firing order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timers: Option<Vec<PendingTimer>>,
    /// The calls that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<Failure>>,
}

/// An emitted record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    /// Destination topic.
    pub topic: String,
    /// Key, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<Bytes>,
    /// Value.
    pub value: Bytes,
    /// Timestamp the handler gave it; absent: the commit time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp_ms: Option<i64>,
    /// Headers, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Bytes>,
}

impl From<&crate::record::OutputRecord> for Output {
    fn from(o: &crate::record::OutputRecord) -> Output {
        Output {
            topic: o.topic.clone(),
            key: o.key.as_deref().map(Bytes::of),
            value: Bytes::of(&o.value),
            timestamp_ms: o.timestamp_ms,
            headers: o
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), Bytes::of(v)))
                .collect(),
        }
    }
}

/// A timer still pending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingTimer {
    /// Its key.
    pub key: Bytes,
    /// `processing` or `event`.
    pub domain: String,
    /// When it is due.
    pub due_ms: i64,
}

/// A call that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failure {
    /// The batch (from 0) it happened in, or after (firing timers).
    pub batch: usize,
    /// `handle` or `on-timers`.
    pub call: String,
    /// What the host would report.
    pub message: String,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actual {
    outputs: Vec<Output>,
    state: Vec<Entry>,
    timers: Vec<PendingTimer>,
    errors: Vec<Failure>,
}

impl Actual {
    /// The expectation this run would meet.
    pub fn as_expect(&self) -> Expect {
        Expect {
            outputs: Some(self.outputs.clone()),
            state: Some(self.state.clone()),
            timers: Some(self.timers.clone()),
            errors: Some(self.errors.clone()),
        }
    }
}

/// One partition's state, timers and watermark, in memory (`linecook test`
/// and `linecook replay`: nothing is committed anywhere).
#[derive(Debug, Clone, Default)]
pub(crate) struct Partition {
    pub(crate) state: BTreeMap<Vec<u8>, Vec<u8>>,
    timers: BTreeMap<(TimeDomain, Vec<u8>), i64>,
    pub(crate) watermark: Option<i64>,
}

impl StateReader for Partition {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.state.get(key).cloned())
    }

    fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        Ok(self
            .state
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(k, _)| start_after.is_none_or(|a| k.as_slice() > a))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn timer(&self, domain: TimeDomain, key: &[u8]) -> Result<Option<i64>, StoreError> {
        Ok(self.timers.get(&(domain, key.to_vec())).copied())
    }
}

impl Partition {
    /// Applies a successful call's effects, as a checkpoint would.
    pub(crate) fn apply(&mut self, effects: BatchEffects, outputs: &mut Vec<Output>) {
        for (key, value) in effects.state {
            match value {
                Some(v) => self.state.insert(key, v),
                None => self.state.remove(&key),
            };
        }
        for fired in &effects.fired {
            let id = (fired.domain, fired.key.clone());
            if self.timers.get(&id) == Some(&fired.due_ms) {
                self.timers.remove(&id);
            }
        }
        for (id, due) in effects.timers {
            match due {
                Some(due) => self.timers.insert(id, due),
                None => self.timers.remove(&id),
            };
        }
        if let Some(w) = effects.watermark {
            self.watermark = Some(self.watermark.map_or(w, |c| c.max(w)));
        }
        outputs.extend(effects.outputs.iter().map(Output::from));
    }

    /// The timers due at `now`, in firing order, at most `limit`.
    pub(crate) fn due(&self, now: i64, limit: usize) -> Vec<Timer> {
        let (mut processing, mut event) = (Vec::new(), Vec::new());
        for ((domain, key), due) in &self.timers {
            let timer = Timer {
                key: key.clone(),
                domain: *domain,
                due_ms: *due,
            };
            match domain {
                TimeDomain::Processing if *due <= now => processing.push(timer),
                TimeDomain::Event if self.watermark.is_some_and(|w| *due <= w) => event.push(timer),
                _ => {}
            }
        }
        crate::timers::firing_order(processing, event, limit)
    }
}

/// Most `on-timers` rounds after one batch: a handler that keeps setting
/// timers already due would otherwise never let the run end.
const MAX_TIMER_ROUNDS: usize = 1000;

/// Reads a fixture file.
pub fn load(path: &Path) -> anyhow::Result<Fixture> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{} is not a valid fixture", path.display()))
}

/// Runs `fixture` (read from `path`) with `runtime`.
pub fn run(runtime: &Runtime, path: &Path, fixture: &Fixture) -> anyhow::Result<Actual> {
    let plugin = path
        .parent()
        .unwrap_or(Path::new("."))
        .join(&fixture.plugin);
    let bytes = std::fs::read(&plugin)
        .with_context(|| format!("reading the plugin {}", plugin.display()))?;
    let prepared = runtime
        .prepare(&bytes)
        .with_context(|| format!("{} is not a usable plugin", plugin.display()))?;
    let name = plugin
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin")
        .to_owned();
    let digest = crate::plugins::digest(&bytes);
    let context = Context {
        plugin: name.clone(),
        version: digest.clone(),
        topic: fixture.topic.clone(),
        partition: 0,
        config: crate::config::plugin_config(&fixture.config),
    };
    let canned = fixture
        .http
        .iter()
        .map(|c| {
            Ok(crate::egress::Canned {
                method: c.method.to_ascii_uppercase(),
                url: c.url.clone(),
                status: c.status,
                headers: c.headers.clone().into_iter().collect(),
                body: match &c.body {
                    Some(b) => b.to_vec()?,
                    None => Vec::new(),
                },
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let egress = Arc::new(crate::egress::Egress::canned(canned));
    let start = |partition: &Partition| -> anyhow::Result<Instance> {
        let labels = Labels {
            plugin: name.clone(),
            version: crate::plugins::short(&digest).to_owned(),
            topic: fixture.topic.clone(),
            partition: 0,
        };
        let mut instance =
            Instance::instantiate(&prepared, labels, Limits::default(), Some(egress.clone()))?;
        instance.init(&context, Box::new(partition.clone()))?;
        Ok(instance)
    };

    let mut partition = Partition::default();
    for entry in &fixture.state {
        partition
            .state
            .insert(entry.key.to_vec()?, entry.value.to_vec()?);
    }
    let mut instance = start(&partition)?;
    let mut actual = Actual::default();
    let mut now = 0;
    let mut offset = 0;
    for (index, batch) in fixture.batch.iter().enumerate() {
        now = batch.now_ms.unwrap_or(now);
        let time = |partition: &Partition| CallTime {
            now_ms: now,
            watermark: partition.watermark,
            allowed_lateness_ms: fixture.allowed_lateness_ms,
            state_ttl_ms: None,
        };
        if !batch.records.is_empty() {
            let records = records(batch, now, &mut offset)?;
            let watermark = crate::timers::advance_watermark(
                partition.watermark,
                records.iter().map(|r| r.timestamp_ms),
                fixture.allowed_lateness_ms,
            );
            let batch = Batch::new(instance.shape(), &fixture.topic, records);
            match instance.handle(&batch, Box::new(partition.clone()), time(&partition)) {
                Ok((mut effects, _)) => {
                    effects.watermark = watermark;
                    partition.apply(effects, &mut actual.outputs);
                }
                Err(failure) => {
                    actual.errors.push(Failure {
                        batch: index,
                        call: "handle".into(),
                        message: failure.to_string(),
                    });
                    if failure.discards_instance() {
                        instance = start(&partition)?;
                    }
                }
            }
        }
        if prepared_has_timers(&prepared) {
            for _ in 0..MAX_TIMER_ROUNDS {
                let due = partition.due(now, 1000);
                if due.is_empty() {
                    break;
                }
                match instance.on_timers(&due, Box::new(partition.clone()), time(&partition)) {
                    Ok((effects, _)) => partition.apply(effects, &mut actual.outputs),
                    Err(failure) => {
                        actual.errors.push(Failure {
                            batch: index,
                            call: "on-timers".into(),
                            message: failure.to_string(),
                        });
                        if failure.discards_instance() {
                            instance = start(&partition)?;
                        }
                        break;
                    }
                }
            }
        }
    }
    actual.state = partition
        .state
        .iter()
        .map(|(k, v)| Entry {
            key: Bytes::of(k),
            value: Bytes::of(v),
        })
        .collect();
    let pending = partition
        .timers
        .iter()
        .map(|((domain, key), due)| Timer {
            key: key.clone(),
            domain: *domain,
            due_ms: *due,
        })
        .collect();
    actual.timers = crate::timers::firing_order(pending, Vec::new(), usize::MAX)
        .into_iter()
        .map(|t| PendingTimer {
            key: Bytes::of(&t.key),
            domain: t.domain.name().to_owned(),
            due_ms: t.due_ms,
        })
        .collect();
    Ok(actual)
}

pub(crate) fn prepared_has_timers(prepared: &Prepared) -> bool {
    prepared.contract() == crate::runtime::Contract::V0_2
}

fn records(batch: &FixtureBatch, now: i64, offset: &mut u64) -> anyhow::Result<Vec<LogRecord>> {
    batch
        .records
        .iter()
        .map(|r| {
            let record = LogRecord {
                partition: 0,
                offset: *offset,
                timestamp_ms: r.timestamp_ms.unwrap_or(now),
                key: r.key.as_ref().map(Bytes::to_vec).transpose()?,
                value: r.value.to_vec()?,
                headers: r
                    .headers
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), v.to_vec()?)))
                    .collect::<anyhow::Result<_>>()?,
            };
            *offset += 1;
            Ok(record)
        })
        .collect()
}

/// The lines of each section the expectation checks, expected against
/// actual: empty when the run meets it.
pub fn compare(expect: &Expect, actual: &Actual) -> Vec<String> {
    let mut out = Vec::new();
    let mut section = |name: &str, want: Option<Vec<String>>, got: Vec<String>| {
        if let Some(want) = want
            && want != got
        {
            out.push(format!("{name}: (- expected, + actual)"));
            out.extend(diff(&want, &got).into_iter().map(|l| format!("  {l}")));
        }
    };
    section(
        "outputs",
        expect
            .outputs
            .as_ref()
            .map(|o| o.iter().map(output_line).collect()),
        actual.outputs.iter().map(output_line).collect(),
    );
    section(
        "state",
        expect.state.as_ref().map(|s| {
            s.iter()
                .map(|e| format!("{} = {}", e.key, e.value))
                .collect()
        }),
        actual
            .state
            .iter()
            .map(|e| format!("{} = {}", e.key, e.value))
            .collect(),
    );
    section(
        "timers",
        expect
            .timers
            .as_ref()
            .map(|t| t.iter().map(timer_line).collect()),
        actual.timers.iter().map(timer_line).collect(),
    );
    section(
        "errors",
        expect
            .errors
            .as_ref()
            .map(|e| e.iter().map(error_line).collect()),
        actual.errors.iter().map(error_line).collect(),
    );
    out
}

fn output_line(o: &Output) -> String {
    let mut line = format!(
        "{} key={} value={}",
        o.topic,
        o.key.as_ref().map_or("none".into(), |k| k.to_string()),
        o.value
    );
    if let Some(ts) = o.timestamp_ms {
        line.push_str(&format!(" timestamp_ms={ts}"));
    }
    for (k, v) in &o.headers {
        line.push_str(&format!(" header {k}={v}"));
    }
    line
}

fn timer_line(t: &PendingTimer) -> String {
    format!("{} {} key={}", t.domain, t.due_ms, t.key)
}

fn error_line(e: &Failure) -> String {
    format!("batch {} {}: {}", e.batch, e.call, e.message)
}

/// A line diff of `want` against `got` (longest common subsequence):
/// `  ` same, `- ` only expected, `+ ` only actual.
pub fn diff(want: &[String], got: &[String]) -> Vec<String> {
    let (n, m) = (want.len(), got.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if want[i] == got[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < n || j < m {
        if i < n && j < m && want[i] == got[j] {
            out.push(format!("  {}", want[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push(format!("- {}", want[i]));
            i += 1;
        } else {
            out.push(format!("+ {}", got[j]));
            j += 1;
        }
    }
    out
}

/// Rewrites the `[expect]` table of the fixture at `path` with `expect`,
/// keeping everything else of the file as it is.
pub fn update(path: &Path, expect: &Expect) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("{} is not TOML", path.display()))?;
    let table = toml::to_string(expect).context("writing the expectation")?;
    let table: toml_edit::DocumentMut = table.parse().context("re-reading the expectation")?;
    // One inline table per line, as a person writes them, sections in a
    // fixed order, and the table placed at the end of the file rather than
    // where the parser of the text above happened to number it.
    let mut fresh = toml_edit::Table::new();
    for key in ["outputs", "state", "timers", "errors"] {
        let Some(item) = table.get(key) else { continue };
        let item = match item.as_array_of_tables() {
            Some(rows) => {
                let mut array = rows.clone().into_array();
                for row in array.iter_mut() {
                    row.decor_mut().set_prefix("\n  ");
                }
                array.set_trailing("\n");
                array.set_trailing_comma(true);
                toml_edit::value(array)
            }
            None => item.clone(),
        };
        fresh.insert(key, item);
    }
    doc["expect"] = toml_edit::Item::Table(fresh);
    std::fs::write(path, doc.to_string()).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Runs every fixture in `paths` (and with `update_expectations`, rewrites
/// each one's `[expect]` from its run); `say` gets a line per fixture and
/// the diff of each mismatch. Returns whether all passed.
pub fn test_all(
    paths: &[PathBuf],
    update_expectations: bool,
    mut say: impl FnMut(String),
) -> anyhow::Result<bool> {
    if paths.is_empty() {
        bail!("name at least one fixture file");
    }
    let runtime = Runtime::new()?;
    let mut passed = true;
    for path in paths {
        let result = load(path).and_then(|fixture| Ok((run(&runtime, path, &fixture)?, fixture)));
        let (actual, fixture) = match result {
            Ok(ran) => ran,
            Err(e) => {
                say(format!("ERROR {}: {e:#}", path.display()));
                passed = false;
                continue;
            }
        };
        if update_expectations {
            update(path, &actual.as_expect())?;
            say(format!("updated {}", path.display()));
            continue;
        }
        let mismatches = compare(&fixture.expect, &actual);
        if mismatches.is_empty() {
            say(format!(
                "ok    {} ({} batches, {} outputs)",
                path.display(),
                fixture.batch.len(),
                actual.outputs.len()
            ));
        } else {
            passed = false;
            say(format!("FAIL  {}", path.display()));
            for line in mismatches {
                say(format!("  {line}"));
            }
        }
    }
    Ok(passed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_diff_marks_what_is_missing_and_what_is_extra() {
        let want = lines(&["a", "b", "c", "d"]);
        let got = lines(&["a", "c", "x", "d"]);
        assert_eq!(
            diff(&want, &got),
            lines(&["  a", "- b", "  c", "+ x", "  d"])
        );
        assert_eq!(
            diff(&want, &want)
                .iter()
                .filter(|l| !l.starts_with("  "))
                .count(),
            0
        );
        assert_eq!(diff(&[], &lines(&["n"])), lines(&["+ n"]));
        // A changed line reads as the old one, then the new one.
        assert_eq!(
            diff(&lines(&["a:3"]), &lines(&["a:2"])),
            lines(&["- a:3", "+ a:2"])
        );
    }

    #[test]
    fn bytes_are_text_when_they_can_be() {
        assert_eq!(Bytes::of(b"hi"), Bytes::Text("hi".into()));
        let binary = Bytes::of(&[0xff, 0]);
        assert_eq!(binary.to_string(), "base64:/wA=");
        assert_eq!(binary.to_vec().unwrap(), vec![0xff, 0]);
    }

    #[test]
    fn only_the_sections_the_expectation_names_are_checked() {
        let actual = Actual {
            outputs: vec![Output {
                topic: "out".into(),
                key: None,
                value: Bytes::Text("A".into()),
                timestamp_ms: None,
                headers: BTreeMap::new(),
            }],
            ..Actual::default()
        };
        assert!(compare(&Expect::default(), &actual).is_empty());
        let expect = Expect {
            outputs: Some(vec![]),
            ..Expect::default()
        };
        assert_eq!(
            compare(&expect, &actual),
            lines(&[
                "outputs: (- expected, + actual)",
                "  + out key=none value=\"A\""
            ])
        );
        assert!(compare(&actual.as_expect(), &actual).is_empty());
    }
}
