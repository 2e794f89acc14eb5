//! The commands that move records: `run`, `produce`, `tail`.

use std::io::{BufRead, Write};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio_util::sync::CancellationToken;

use super::json_lines::{parse_record_json, record_json};
use crate::client::Access;
use crate::config::Config;
use crate::record::NewRecord;

/// Records per produce transaction / request.
const PRODUCE_CHUNK: usize = 1000;

/// How long `produce` holds an unfilled chunk while no line arrives.
const PRODUCE_LINGER: Duration = Duration::from_millis(50);

/// Records per read while tailing.
const TAIL_CHUNK: usize = 1000;

/// How `produce` reads standard input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum InputFormat {
    /// One record per line: the line is the value (or `KEY<SEP>VALUE` with
    /// --key-separator).
    Lines,
    /// One record per line as `tail` prints it: key, value, headers,
    /// timestamp_ms and partition kept exactly.
    Json,
}

pub(super) fn produce(
    config: &Config,
    topic: &str,
    key_separator: Option<&str>,
    format: InputFormat,
) -> anyhow::Result<()> {
    if key_separator == Some("") {
        bail!("--key-separator must not be empty");
    }
    if key_separator.is_some() && format == InputFormat::Json {
        bail!("--key-separator applies to --format lines; JSON lines carry their key");
    }
    let access = Access::connect(config)?;
    // Fail before reading stdin if the topic does not exist.
    access.topic(topic)?;
    // Lines arrive from a reader thread, so a slow stream (`tail -f … |`)
    // is produced as it is read: a chunk goes when it is full, or as soon as
    // no line has come for a moment.
    let (lines, arrived) = std::sync::mpsc::sync_channel(PRODUCE_CHUNK);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().split(b'\n') {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let mut chunk = Vec::with_capacity(PRODUCE_CHUNK);
    let mut total = 0usize;
    let mut number = 0;
    loop {
        let line = match arrived.recv_timeout(PRODUCE_LINGER) {
            Ok(line) => line,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if !chunk.is_empty() {
                    total += access.produce(topic, std::mem::take(&mut chunk))?.len();
                }
                continue;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        };
        number += 1;
        let mut line = line.context("reading standard input")?;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let record = match format {
            InputFormat::Lines => split_line(line, key_separator),
            InputFormat::Json if line.iter().all(u8::is_ascii_whitespace) => continue,
            InputFormat::Json => {
                match std::str::from_utf8(&line)
                    .context("not UTF-8")
                    .and_then(parse_record_json)
                {
                    Ok(record) => record,
                    Err(e) => {
                        // Everything before the bad line goes in; the rest
                        // does not, so a rerun from that line is exact.
                        if !chunk.is_empty() {
                            total += access.produce(topic, std::mem::take(&mut chunk))?.len();
                        }
                        return Err(e.context(format!(
                            "line {number} of standard input; the {} before it went to `{topic}`, none after",
                            records(total)
                        )));
                    }
                }
            }
        };
        chunk.push(record);
        if chunk.len() == PRODUCE_CHUNK {
            total += access.produce(topic, std::mem::take(&mut chunk))?.len();
        }
    }
    if !chunk.is_empty() {
        total += access.produce(topic, chunk)?.len();
    }
    eprintln!("produced {} to `{topic}`", records(total));
    Ok(())
}

/// "1 record", "2 records".
fn records(n: usize) -> String {
    if n == 1 {
        "1 record".to_owned()
    } else {
        format!("{n} records")
    }
}

fn split_line(line: Vec<u8>, separator: Option<&str>) -> NewRecord {
    let split = separator.and_then(|sep| {
        let sep = sep.as_bytes();
        line.windows(sep.len())
            .position(|w| w == sep)
            .map(|at| (line[..at].to_vec(), line[at + sep.len()..].to_vec()))
    });
    let (key, value) = match split {
        Some((key, value)) => (Some(key), value),
        None => (None, line),
    };
    NewRecord {
        timestamp_ms: None,
        key,
        value,
        headers: Vec::new(),
        partition: None,
    }
}

pub(super) fn tail(
    config: &Config,
    topic: &str,
    from_beginning: bool,
    max_records: Option<u64>,
    follow: bool,
    headers: bool,
) -> anyhow::Result<()> {
    let info = Access::connect(config)?.topic(topic)?;
    let mut positions: Vec<u64> = if from_beginning {
        vec![0; info.partitions as usize]
    } else {
        info.end_offsets.clone()
    };
    let mut printed = 0u64;
    let mut out = std::io::stdout().lock();
    loop {
        // Reconnect per round so a tail --follow without a host never keeps
        // the store from a `linecook run` that starts meanwhile.
        let access = Access::connect(config)?;
        for partition in 0..info.partitions {
            loop {
                let records =
                    access.read(topic, partition, positions[partition as usize], TAIL_CHUNK)?;
                let Some(last) = records.last() else { break };
                positions[partition as usize] = last.offset + 1;
                for record in &records {
                    if max_records.is_some_and(|max| printed >= max) {
                        return Ok(());
                    }
                    writeln!(out, "{}", record_json(topic, record, headers))?;
                    printed += 1;
                }
                if records.len() < TAIL_CHUNK {
                    break;
                }
            }
        }
        out.flush()?;
        if !follow || max_records.is_some_and(|max| printed >= max) {
            return Ok(());
        }
        drop(access);
        std::thread::sleep(Duration::from_millis(250));
    }
}

pub(super) fn run(config: &Config) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("linecook-io")
        .build()?;
    let shutdown = CancellationToken::new();
    rt.block_on(async {
        let signals = tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                wait_for_signal().await;
                tracing::info!("signal received");
                shutdown.cancel();
            }
        });
        let result = crate::daemon::run(config.clone(), shutdown).await;
        signals.abort();
        result
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_separator_splits_at_the_first_occurrence() {
        let r = split_line(b"k:v:w".to_vec(), Some(":"));
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(r.value, b"v:w");
        let r = split_line(b"novalue".to_vec(), Some(":"));
        assert_eq!(r.key, None);
        assert_eq!(r.value, b"novalue");
    }
}
