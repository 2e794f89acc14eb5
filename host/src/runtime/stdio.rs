//! A guest's stdout and stderr: never the host's own streams, but log lines
//! with the guest's plugin, topic and partition, rate-limited so a chatty or
//! hostile handler cannot flood the host's log.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime_wasi::async_trait;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use super::host::Labels;

/// Lines a guest may log at once before the rate applies.
const BURST_LINES: f64 = 100.0;
/// Sustained lines per second.
const LINES_PER_SEC: f64 = 20.0;
/// Longest line kept; the rest is cut.
const MAX_LINE: usize = 4096;

/// Lines of the guest's stderr kept for a trap's one-line reason.
const LAST_WORDS: usize = 8;

/// The last lines a guest wrote to stderr during the current call: a trap's
/// reason quotes them (a panic message is written there just before the
/// trap). Kept even when the rate limit drops them from the log.
#[derive(Debug, Default)]
pub(crate) struct LastWords {
    lines: std::collections::VecDeque<String>,
}

impl LastWords {
    fn push(&mut self, line: String) {
        if self.lines.len() == LAST_WORDS {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    /// Forgets what was said before this call.
    pub(crate) fn clear(&mut self) {
        self.lines.clear();
    }

    /// What was said, oldest first.
    pub(crate) fn lines(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().map(String::as_str)
    }
}

/// A token bucket shared by an instance's stdout and stderr.
#[derive(Debug)]
pub(crate) struct LineBudget {
    tokens: f64,
    refilled: Instant,
    dropped: u64,
}

impl LineBudget {
    pub(crate) fn shared() -> Arc<Mutex<LineBudget>> {
        Arc::new(Mutex::new(LineBudget {
            tokens: BURST_LINES,
            refilled: Instant::now(),
            dropped: 0,
        }))
    }

    /// Takes one line's worth; returns how many lines were dropped before
    /// it, or `None` if this line must be dropped too.
    fn take(&mut self) -> Option<u64> {
        let now = Instant::now();
        let refill = now.duration_since(self.refilled).as_secs_f64() * LINES_PER_SEC;
        self.tokens = (self.tokens + refill).min(BURST_LINES);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Some(std::mem::take(&mut self.dropped))
        } else {
            self.dropped += 1;
            None
        }
    }
}

/// stdout or stderr of one instance.
#[derive(Clone)]
pub(crate) struct GuestOutput {
    stream: &'static str,
    labels: Labels,
    budget: Arc<Mutex<LineBudget>>,
    /// Where stderr's lines are also kept (none for stdout).
    last_words: Option<Arc<Mutex<LastWords>>>,
}

impl GuestOutput {
    pub(crate) fn new(
        stream: &'static str,
        labels: Labels,
        budget: Arc<Mutex<LineBudget>>,
        last_words: Option<Arc<Mutex<LastWords>>>,
    ) -> GuestOutput {
        GuestOutput {
            stream,
            labels,
            budget,
            last_words,
        }
    }

    fn log(&self, line: &[u8]) {
        if let Some(words) = &self.last_words {
            let line = String::from_utf8_lossy(line).into_owned();
            words.lock().expect("last words").push(line);
        }
        let Some(dropped) = self.budget.lock().expect("line budget").take() else {
            return;
        };
        let l = &self.labels;
        if dropped > 0 {
            tracing::warn!(target: "linecook::guest", plugin = %l.plugin, topic = %l.topic, partition = l.partition,
                "{dropped} lines of guest output dropped by the rate limit");
        }
        let text = String::from_utf8_lossy(line);
        tracing::info!(target: "linecook::guest", stream = self.stream, plugin = %l.plugin, version = %l.version,
            topic = %l.topic, partition = l.partition, "{text}");
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(LineWriter {
            output: self.clone(),
            line: Vec::new(),
        })
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only WASIp2 is linked; nothing asks for the async stream.
        Box::new(tokio::io::sink())
    }
}

/// Splits what the guest writes into lines.
struct LineWriter {
    output: GuestOutput,
    line: Vec<u8>,
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        for chunk in bytes.split_inclusive(|&b| b == b'\n') {
            let room = MAX_LINE.saturating_sub(self.line.len());
            let (body, complete) = match chunk.strip_suffix(b"\n") {
                Some(body) => (body, true),
                None => (chunk, false),
            };
            self.line.extend_from_slice(&body[..body.len().min(room)]);
            if complete {
                self.output.log(&self.line);
                self.line.clear();
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_LINE)
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.output.log(&self.line);
        }
    }
}

#[async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_allows_a_burst_then_counts_what_it_drops() {
        let budget = LineBudget::shared();
        let mut b = budget.lock().unwrap();
        let allowed = (0..1000).filter(|_| b.take().is_some()).count();
        // The burst, plus whatever refilled while the loop ran.
        assert!((100..110).contains(&allowed), "{allowed}");
        assert!(b.dropped > 850);
    }
}
