//! The host side of the `linecook:handler` imports: `state`, `emit`, `log`
//! for both contracts, and 0.2.0's `timers`.
//!
//! The logic lives once, in `HostState`'s methods; each contract's traits
//! only convert its types. Each returns `wasmtime::Result<T>`: an `Err` traps
//! the guest (the call fails and is rolled back); an `Ok` is an answer the
//! guest can use.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use wasmtime::bail;
use wasmtime::component::{ResourceTable, WasmList};
use wasmtime::{AsContext, StoreContextMut};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::bindings::v1::linecook::handler as v1;
use super::bindings::v2::linecook::handler as v2;
use super::stdio::{GuestOutput, LastWords, LineBudget};
use crate::checkpoint::{Entries, StateReader};
use crate::config::Limits;
use crate::record;
use crate::record::{BatchEffects, TimeDomain};

/// Most entries one `state.scan` call returns, whatever the guest asks for:
/// the guest never decides how much host memory a call allocates.
pub const MAX_SCAN_PAGE: usize = 1024;
/// Longest guest log line kept; the rest is cut.
const MAX_LOG_LINE: usize = 4096;

/// Who an instance is, for its log lines.
#[derive(Debug, Clone)]
pub struct Labels {
    /// Plugin name.
    pub plugin: String,
    /// Short version digest.
    pub version: String,
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: u32,
}

/// The time a call runs at, as the partition's worker sees it.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallTime {
    /// The wall clock for the whole call, ms since the Unix epoch.
    pub now_ms: i64,
    /// The partition's committed watermark, before this call's records.
    pub watermark: Option<i64>,
    /// The route's allowed lateness.
    pub allowed_lateness_ms: u64,
    /// The route's default time to live for `state.set`.
    pub state_ttl_ms: Option<u64>,
}

/// What one call sees and does while `init`, `handle` or `on-timers` runs.
pub(crate) struct BatchScope {
    pub reader: Box<dyn StateReader>,
    pub effects: BatchEffects,
    /// False during `init`: reads are allowed, writes are not.
    pub writable: bool,
    /// Bytes emitted so far in this batch.
    pub output_bytes: u64,
    pub time: CallTime,
}

impl BatchScope {
    pub(crate) fn new(reader: Box<dyn StateReader>, writable: bool, time: CallTime) -> BatchScope {
        BatchScope {
            reader,
            effects: BatchEffects::default(),
            writable,
            output_bytes: 0,
            time,
        }
    }

    /// `key`'s value as the call sees it: its own writes over the
    /// committed state.
    fn get(&self, key: &[u8]) -> wasmtime::Result<Option<Vec<u8>>> {
        if let Some(written) = self.effects.state.get(key) {
            return Ok(written.clone());
        }
        Ok(self.reader.get(key)?)
    }
}

/// The data of one instance's `Store`.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limits: Limits,
    pub(crate) labels: Labels,
    pub(crate) scope: Option<BatchScope>,
    /// Set when a call trapped because it exceeded a limit: which, and by
    /// how much.
    pub(crate) limit_hit: Option<String>,
    /// Current size of the instance's linear memory.
    pub(crate) memory_bytes: usize,
    /// What the guest wrote to stderr during the current call.
    pub(crate) last_words: Arc<Mutex<LastWords>>,
    http_ctx: WasiHttpCtx,
    /// Outbound HTTP: the route's policy and the current call's start.
    pub(crate) http: crate::egress::Hooks,
    /// The calling thread's CPU time when the current call started: with
    /// outbound HTTP, `limits.cpu_ms` counts CPU, not time spent waiting.
    pub(crate) cpu_started: std::time::Duration,
}

impl HostState {
    pub(crate) fn new(labels: Labels, limits: Limits) -> HostState {
        let budget = LineBudget::shared();
        let last_words = Arc::new(Mutex::new(LastWords::default()));
        HostState {
            // No preopened directories, no environment, no arguments, no
            // sockets, no inherited stdio: the guest reaches nothing of the
            // host through WASI. Its stdout and stderr become log lines.
            wasi: WasiCtx::builder()
                .stdout(GuestOutput::new(
                    "stdout",
                    labels.clone(),
                    budget.clone(),
                    None,
                ))
                .stderr(GuestOutput::new(
                    "stderr",
                    labels.clone(),
                    budget,
                    Some(last_words.clone()),
                ))
                .build(),
            table: ResourceTable::new(),
            limits,
            labels,
            scope: None,
            limit_hit: None,
            memory_bytes: 0,
            last_words,
            http_ctx: WasiHttpCtx::new(),
            http: crate::egress::Hooks::default(),
            cpu_started: std::time::Duration::ZERO,
        }
    }

    /// Marks the start of a call, for the CPU and HTTP budgets.
    pub(crate) fn begin_call(&mut self) {
        if self.http.egress.as_ref().is_some_and(|e| e.allows_any()) {
            self.http.call_started = Some(std::time::Instant::now());
            self.cpu_started = thread_cpu_time();
        }
    }

    /// With outbound HTTP, the epoch deadline is a checkpoint, not the limit:
    /// the call goes on while its thread's CPU time is under `cpu_ms` and its
    /// wall-clock time under the route's `http.call_budget_ms`.
    pub(crate) fn past_deadline(&mut self) -> wasmtime::Result<u64> {
        let cpu = thread_cpu_time().saturating_sub(self.cpu_started);
        let limit = std::time::Duration::from_millis(self.limits.cpu_ms);
        if cpu >= limit {
            return Err(self.exceeded(format!(
                "CPU time limit exceeded: the call used {} ms of CPU, over the limit of {} ms, and was interrupted (time waiting on HTTP does not count)",
                cpu.as_millis(),
                limit.as_millis()
            )));
        }
        let ran = self
            .http
            .call_started
            .map(|s| s.elapsed())
            .unwrap_or_default();
        let budget = self
            .http
            .egress
            .as_ref()
            .map(|e| e.call_budget())
            .unwrap_or(std::time::Duration::MAX);
        if ran >= budget {
            return Err(self.exceeded(format!(
                "HTTP call budget exceeded: the call ran {} ms, over http.call_budget_ms ({} ms), and was interrupted",
                ran.as_millis(),
                budget.as_millis()
            )));
        }
        let left = (limit - cpu).min(budget - ran);
        Ok((left.as_millis() as u64)
            .div_ceil(super::EPOCH_TICK.as_millis() as u64)
            .max(1))
    }

    /// Records that `what` exceeded its limit and traps the guest.
    fn exceeded(&mut self, what: String) -> wasmtime::Error {
        self.limit_hit = Some(what.clone());
        wasmtime::Error::msg(what)
    }

    /// `state.get-many` (0.2.0) reading its keys where they are, in the
    /// guest's memory: the generated binding copies each key into a `Vec`
    /// of its own first, an allocation per key — a thousand per batch for a
    /// handler that prefetches its batch's keys. `Runtime::new` links it in
    /// place of the generated one.
    pub(crate) fn get_many_in_place(
        mut store: StoreContextMut<'_, HostState>,
        keys: WasmList<WasmList<u8>>,
    ) -> wasmtime::Result<Vec<Option<Vec<u8>>>> {
        let keys = keys
            .iter(&mut store)?
            .collect::<wasmtime::Result<Vec<WasmList<u8>>>>()?;
        let store = store.as_context();
        let Some(scope) = store.data().scope.as_ref() else {
            bail!("state.get-many called outside init, handle or on-timers")
        };
        keys.iter()
            .map(|key| scope.get(key.as_le_slice(&store)))
            .collect()
    }

    fn scope(&mut self, call: &str) -> wasmtime::Result<&mut BatchScope> {
        match self.scope.as_mut() {
            Some(scope) => Ok(scope),
            None => bail!("{call} called outside init, handle or on-timers"),
        }
    }

    fn writable_scope(&mut self, call: &str) -> wasmtime::Result<&mut BatchScope> {
        let scope = self.scope(call)?;
        if !scope.writable {
            bail!(
                "{call} is not allowed in init: it has no checkpoint, so the write would never be committed"
            );
        }
        Ok(scope)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http_ctx,
            table: &mut self.table,
            hooks: &mut self.http,
        }
    }
}

/// CPU time the calling thread has used.
fn thread_cpu_time() -> std::time::Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes one `timespec` through a pointer to a
    // live, exclusively borrowed one and reads nothing else.
    #[allow(unsafe_code)]
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    if status != 0 {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

impl v1::types::Host for HostState {}
impl v2::types::Host for HostState {}

/// The memory limit's message, in exact bytes: an excess of a few KiB must
/// show, and a rounded MiB would hide it.
pub(crate) fn memory_exceeded(current: u64, desired: u64, limit_mib: u64) -> String {
    let limit = limit_mib << 20;
    format!(
        "memory limit exceeded: linear memory would grow from {current} to {desired} bytes, {} bytes over the limit of {limit} bytes ({limit_mib} MiB)",
        desired.saturating_sub(limit)
    )
}

/// Tables are small in every real handler; this only stops runaway growth.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl wasmtime::ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let limit = self.limits.memory_mib << 20;
        if desired as u64 > limit {
            return Err(self.exceeded(memory_exceeded(
                current as u64,
                desired as u64,
                self.limits.memory_mib,
            )));
        }
        self.memory_bytes = desired;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            return Err(self.exceeded(format!(
                "table limit exceeded: {desired} elements, the limit is {MAX_TABLE_ELEMENTS}"
            )));
        }
        Ok(true)
    }
}

impl HostState {
    fn state_get(&mut self, key: &[u8]) -> wasmtime::Result<Option<Vec<u8>>> {
        self.scope("state.get")?.get(key)
    }

    /// Stores `value`; it expires `ttl_ms` after the commit, or after the
    /// route's default when `ttl_ms` is `None`.
    fn state_set(
        &mut self,
        key: Vec<u8>,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<()> {
        let max = self.limits.max_state_value_bytes;
        if value.len() as u64 > max {
            return Err(self.exceeded(format!(
                "state value limit exceeded: {} bytes, the limit is {max}",
                value.len()
            )));
        }
        let scope = self.writable_scope("state.set")?;
        let ttl = ttl_ms.or(scope.time.state_ttl_ms);
        match ttl {
            Some(ttl) => scope.effects.ttl.insert(key.clone(), ttl),
            None => scope.effects.ttl.remove(&key),
        };
        scope.effects.state.insert(key, Some(value));
        Ok(())
    }

    fn state_delete(&mut self, key: Vec<u8>) -> wasmtime::Result<()> {
        let scope = self.writable_scope("state.delete")?;
        scope.effects.ttl.remove(&key);
        scope.effects.state.insert(key, None);
        Ok(())
    }

    fn state_scan(
        &mut self,
        prefix: Vec<u8>,
        start_after: Option<Vec<u8>>,
        limit: u32,
    ) -> wasmtime::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let limit = (limit as usize).min(MAX_SCAN_PAGE);
        let scope = self.scope("state.scan")?;
        Ok(merged_scan(
            &*scope.reader,
            &scope.effects.state,
            &prefix,
            start_after,
            limit,
        )?)
    }

    fn emit_send(&mut self, output: record::OutputRecord) -> wasmtime::Result<()> {
        let limits = self.limits;
        let bytes = (output.key.as_ref().map_or(0, Vec::len)
            + output.value.len()
            + output
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()) as u64;
        let scope = self.writable_scope("emit.send")?;
        let count = scope.effects.outputs.len() as u64 + 1;
        let total = scope.output_bytes + bytes;
        if count > limits.max_outputs {
            return Err(self.exceeded(format!(
                "output limit exceeded: more than {} records emitted in one batch",
                limits.max_outputs
            )));
        }
        if total > limits.max_output_bytes {
            return Err(self.exceeded(format!(
                "output limit exceeded: {total} bytes emitted in one batch, the limit is {}",
                limits.max_output_bytes
            )));
        }
        scope.output_bytes = total;
        scope.effects.outputs.push(output);
        Ok(())
    }

    fn log_write(&mut self, level: tracing::Level, message: String) {
        let mut message = message;
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let l = &self.labels;
        macro_rules! event {
            ($lvl:expr) => {
                tracing::event!(target: "linecook::guest", $lvl, plugin = %l.plugin, version = %l.version, topic = %l.topic, partition = l.partition, "{message}")
            };
        }
        match level {
            tracing::Level::TRACE => event!(tracing::Level::TRACE),
            tracing::Level::DEBUG => event!(tracing::Level::DEBUG),
            tracing::Level::INFO => event!(tracing::Level::INFO),
            tracing::Level::WARN => event!(tracing::Level::WARN),
            _ => event!(tracing::Level::ERROR),
        }
    }

    fn timer_change(
        &mut self,
        call: &str,
        key: Vec<u8>,
        domain: TimeDomain,
        due: Option<i64>,
    ) -> wasmtime::Result<()> {
        let scope = self.writable_scope(call)?;
        scope.effects.timers.insert((domain, key), due);
        Ok(())
    }

    /// Applies an effects buffer returned by `handle-packed`, entry by
    /// entry through the same checks as the imports (limits, TTL and timer
    /// rules). A malformed buffer fails the call as a trap would.
    pub(crate) fn apply_packed(&mut self, buf: &[u8]) -> wasmtime::Result<()> {
        use super::packed::Effect;
        for effect in super::packed::decode_effects(buf)? {
            match effect {
                Effect::Output {
                    topic,
                    key,
                    value,
                    headers,
                    timestamp_ms,
                } => self.emit_send(record::OutputRecord {
                    topic: topic.to_owned(),
                    key: key.map(<[u8]>::to_vec),
                    value: value.to_vec(),
                    headers: headers
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v.to_vec()))
                        .collect(),
                    timestamp_ms,
                })?,
                Effect::Set { key, value, ttl_ms } => {
                    self.state_set(key.to_vec(), value.to_vec(), ttl_ms)?
                }
                Effect::Delete { key } => self.state_delete(key.to_vec())?,
                Effect::Timer {
                    domain,
                    due_ms,
                    key,
                } => self.timer_change("timers.set", key.to_vec(), domain, Some(due_ms))?,
                Effect::Cancel { domain, key } => {
                    self.timer_change("timers.cancel", key.to_vec(), domain, None)?
                }
            }
        }
        Ok(())
    }

    fn timer_get(&mut self, key: Vec<u8>, domain: TimeDomain) -> wasmtime::Result<Option<i64>> {
        let scope = self.scope("timers.get")?;
        if let Some(change) = scope.effects.timers.get(&(domain, key.clone())) {
            return Ok(*change);
        }
        // A timer this call fired is gone unless set again (above).
        if scope
            .effects
            .fired
            .iter()
            .any(|t| t.domain == domain && t.key == key)
        {
            return Ok(None);
        }
        Ok(scope.reader.timer(domain, &key)?)
    }
}

impl v1::state::Host for HostState {
    fn get(&mut self, key: Vec<u8>) -> wasmtime::Result<Option<Vec<u8>>> {
        self.state_get(&key)
    }

    fn set(&mut self, key: Vec<u8>, value: Vec<u8>) -> wasmtime::Result<()> {
        self.state_set(key, value, None)
    }

    fn delete(&mut self, key: Vec<u8>) -> wasmtime::Result<()> {
        self.state_delete(key)
    }

    fn scan(
        &mut self,
        prefix: Vec<u8>,
        start_after: Option<Vec<u8>>,
        limit: u32,
    ) -> wasmtime::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.state_scan(prefix, start_after, limit)
    }
}

impl v2::state::Host for HostState {
    fn get(&mut self, key: Vec<u8>) -> wasmtime::Result<Option<Vec<u8>>> {
        self.state_get(&key)
    }

    // The trait asks for it; `Runtime::new` links `get_many_in_place` in
    // its place, so components never reach this one.
    fn get_many(&mut self, keys: Vec<Vec<u8>>) -> wasmtime::Result<Vec<Option<Vec<u8>>>> {
        keys.iter().map(|k| self.state_get(k)).collect()
    }

    fn set(&mut self, key: Vec<u8>, value: Vec<u8>) -> wasmtime::Result<()> {
        self.state_set(key, value, None)
    }

    fn set_with_ttl(&mut self, key: Vec<u8>, value: Vec<u8>, ttl_ms: u64) -> wasmtime::Result<()> {
        self.state_set(key, value, Some(ttl_ms))
    }

    fn delete(&mut self, key: Vec<u8>) -> wasmtime::Result<()> {
        self.state_delete(key)
    }

    fn write_many(&mut self, writes: Vec<v2::types::StateWrite>) -> wasmtime::Result<()> {
        use v2::types::StateWrite;
        for write in writes {
            match write {
                StateWrite::Set((k, v)) => self.state_set(k, v, None)?,
                StateWrite::SetWithTtl((k, v, ttl)) => self.state_set(k, v, Some(ttl))?,
                StateWrite::Delete(k) => self.state_delete(k)?,
            }
        }
        Ok(())
    }

    fn scan(
        &mut self,
        prefix: Vec<u8>,
        start_after: Option<Vec<u8>>,
        limit: u32,
    ) -> wasmtime::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.state_scan(prefix, start_after, limit)
    }
}

fn domain(d: v2::types::TimeDomain) -> TimeDomain {
    match d {
        v2::types::TimeDomain::Processing => TimeDomain::Processing,
        v2::types::TimeDomain::Event => TimeDomain::Event,
    }
}

impl v2::timers::Host for HostState {
    fn set(&mut self, key: Vec<u8>, d: v2::types::TimeDomain, due_ms: i64) -> wasmtime::Result<()> {
        self.timer_change("timers.set", key, domain(d), Some(due_ms))
    }

    fn cancel(&mut self, key: Vec<u8>, d: v2::types::TimeDomain) -> wasmtime::Result<()> {
        self.timer_change("timers.cancel", key, domain(d), None)
    }

    fn get(&mut self, key: Vec<u8>, d: v2::types::TimeDomain) -> wasmtime::Result<Option<i64>> {
        self.timer_get(key, domain(d))
    }

    fn watermark(&mut self) -> wasmtime::Result<Option<i64>> {
        Ok(self.scope("timers.watermark")?.time.watermark)
    }

    fn allowed_lateness_ms(&mut self) -> wasmtime::Result<u64> {
        Ok(self
            .scope("timers.allowed-lateness-ms")?
            .time
            .allowed_lateness_ms)
    }

    fn now_ms(&mut self) -> wasmtime::Result<i64> {
        Ok(self.scope("timers.now-ms")?.time.now_ms)
    }
}

/// Committed entries overlaid with the batch's own writes (read-your-writes),
/// in key order, skipping deleted keys.
fn merged_scan(
    reader: &dyn StateReader,
    writes: &BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    prefix: &[u8],
    start_after: Option<Vec<u8>>,
    limit: usize,
) -> Result<Entries, crate::store::StoreError> {
    let mut out = Vec::new();
    let mut cursor = start_after;
    while out.len() < limit {
        let page = reader.scan(prefix, cursor.as_deref(), limit)?;
        let exhausted = page.len() < limit;
        // Overlay writes between the cursor and the end of this page (or
        // unbounded, when the committed entries are exhausted).
        let lower = match &cursor {
            Some(c) => Bound::Excluded(c.clone()),
            None => Bound::Included(prefix.to_vec()),
        };
        let upper = match (exhausted, page.last()) {
            (false, Some((last, _))) => Bound::Included(last.clone()),
            _ => Bound::Unbounded,
        };
        let mut overlay = writes
            .range((lower, upper))
            .take_while(|(k, _)| k.starts_with(prefix))
            .peekable();
        let mut committed = page.into_iter().peekable();
        loop {
            if out.len() >= limit {
                return Ok(out);
            }
            let take_overlay = match (committed.peek(), overlay.peek()) {
                (None, None) => break,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some((ck, _)), Some((ok, _))) => *ok <= ck,
            };
            if take_overlay {
                let (key, value) = overlay.next().expect("peeked");
                if committed.peek().is_some_and(|(ck, _)| ck == key) {
                    committed.next();
                }
                cursor = Some(key.clone());
                if let Some(value) = value {
                    out.push((key.clone(), value.clone()));
                }
            } else {
                let entry = committed.next().expect("peeked");
                cursor = Some(entry.0.clone());
                out.push(entry);
            }
        }
        if exhausted {
            break;
        }
    }
    Ok(out)
}

impl v1::emit::Host for HostState {
    fn send(&mut self, output: v1::types::OutputRecord) -> wasmtime::Result<()> {
        self.emit_send(record::OutputRecord {
            topic: output.topic,
            key: output.key,
            value: output.value,
            headers: output
                .headers
                .into_iter()
                .map(|h| (h.key, h.value))
                .collect(),
            timestamp_ms: None,
        })
    }
}

fn v2_output(output: v2::types::OutputRecord) -> record::OutputRecord {
    record::OutputRecord {
        topic: output.topic,
        key: output.key,
        value: output.value,
        headers: output
            .headers
            .into_iter()
            .map(|h| (h.key, h.value))
            .collect(),
        timestamp_ms: output.timestamp_ms,
    }
}

impl v2::emit::Host for HostState {
    fn send(&mut self, output: v2::types::OutputRecord) -> wasmtime::Result<()> {
        self.emit_send(v2_output(output))
    }

    fn send_many(&mut self, outputs: Vec<v2::types::OutputRecord>) -> wasmtime::Result<()> {
        for output in outputs {
            self.emit_send(v2_output(output))?;
        }
        Ok(())
    }
}

/// Both contracts' `log.write`: the same levels under two generated types.
macro_rules! log_host {
    ($contract:ident) => {
        impl $contract::log::Host for HostState {
            fn write(
                &mut self,
                level: $contract::log::Level,
                message: String,
            ) -> wasmtime::Result<()> {
                use $contract::log::Level as L;
                let level = match level {
                    L::Trace => tracing::Level::TRACE,
                    L::Debug => tracing::Level::DEBUG,
                    L::Info => tracing::Level::INFO,
                    L::Warn => tracing::Level::WARN,
                    L::Error => tracing::Level::ERROR,
                };
                self.log_write(level, message);
                Ok(())
            }
        }
    };
}

log_host!(v1);
log_host!(v2);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    struct Committed(BTreeMap<Vec<u8>, Vec<u8>>);

    impl StateReader for Committed {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(self.0.get(key).cloned())
        }
        fn scan(
            &self,
            prefix: &[u8],
            start_after: Option<&[u8]>,
            limit: usize,
        ) -> Result<Entries, StoreError> {
            Ok(self
                .0
                .range(prefix.to_vec()..)
                .filter(|(k, _)| start_after.is_none_or(|a| k.as_slice() > a))
                .take_while(|(k, _)| k.starts_with(prefix))
                .take(limit)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect())
        }
    }

    fn keys(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<String> {
        entries
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    String::from_utf8_lossy(k),
                    String::from_utf8_lossy(v)
                )
            })
            .collect()
    }

    #[test]
    fn scan_sees_the_batch_writes_over_committed_state() {
        let committed = Committed(
            [
                ("a1", "c"),
                ("a2", "c"),
                ("a3", "c"),
                ("a4", "c"),
                ("b1", "c"),
            ]
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect(),
        );
        let writes: BTreeMap<Vec<u8>, Option<Vec<u8>>> = [
            ("a1", None),
            ("a2", Some("w")),
            ("a25", Some("w")),
            ("a3", None),
            ("a9", Some("w")),
        ]
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec())))
        .collect();

        let all = merged_scan(&committed, &writes, b"a", None, 100).unwrap();
        assert_eq!(keys(&all), ["a2=w", "a25=w", "a4=c", "a9=w"]);

        // Paging with a small limit yields the same sequence.
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let page = merged_scan(&committed, &writes, b"a", after.clone(), 1).unwrap();
            let Some(last) = page.last() else { break };
            after = Some(last.0.clone());
            paged.extend(page);
        }
        assert_eq!(keys(&paged), keys(&all));
    }
}
