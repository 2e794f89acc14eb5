//! The commands that move records: `run`, `produce`, `tail`.

use std::io::{BufRead, Write};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio_util::sync::CancellationToken;

use super::json_lines::{parse_record_json, record_json};
use crate::client::Access;
use crate::config::Config;
use crate::record::NewRecord;

/// Most records and value bytes per produce transaction when `produce`
/// writes the data directory itself: large, so a million lines cost a few
/// dozen fsyncs, not a thousand.
const PRODUCE_CHUNK: Chunk = Chunk {
    records: 65_536,
    bytes: 8 << 20,
    weigh: raw_size,
};

/// The same through a running host's admin API, whose request bodies stop
/// at 2 MB: counted as they are sent (JSON, base64 bytes), which is a third
/// more than raw and more again for small records.
const PRODUCE_CHUNK_REMOTE: Chunk = Chunk {
    records: 10_000,
    bytes: 3 << 19,
    weigh: wire_size,
};

/// Lines the reader thread hands over at once, at most.
const READ_BLOCK: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Chunk {
    records: usize,
    bytes: usize,
    /// What a record counts against `bytes`.
    weigh: fn(&NewRecord) -> usize,
}

fn raw_size(r: &NewRecord) -> usize {
    r.value.len() + r.key.as_ref().map_or(0, Vec::len)
}

/// An upper bound of what `r` adds to a JSON produce request.
fn wire_size(r: &NewRecord) -> usize {
    let b64 = |n: usize| n.div_ceil(3) * 4;
    // Field names, quotes, a partition and a timestamp.
    96 + r.key.as_ref().map_or(0, |k| b64(k.len()))
        + b64(r.value.len())
        + r.headers
            .iter()
            // A name's characters may each become a `\u00XX` escape.
            .map(|(name, v)| 8 + 6 * name.len() + b64(v.len()))
            .sum::<usize>()
}

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
    let limit = match access {
        Access::Direct(_) => PRODUCE_CHUNK,
        Access::Remote(_) => PRODUCE_CHUNK_REMOTE,
    };
    // Lines arrive from a reader thread in blocks, so a slow stream
    // (`tail -f … |`) is produced as it is read: a chunk goes when it is
    // full, or as soon as no line has come for a moment.
    let (blocks, arrived) = std::sync::mpsc::sync_channel(16);
    std::thread::spawn(move || {
        read_blocks(
            std::io::BufReader::with_capacity(1 << 20, std::io::stdin()),
            blocks,
        )
    });
    let mut chunk = Vec::new();
    let mut chunk_bytes = 0;
    let mut total = 0usize;
    let mut number = 0;
    let mut pending = Vec::new().into_iter();
    loop {
        let line = match pending.next() {
            Some(line) => line,
            None => match arrived.recv_timeout(PRODUCE_LINGER) {
                Ok(block) => {
                    pending = Vec::into_iter(block);
                    continue;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if !chunk.is_empty() {
                        chunk_bytes = 0;
                        total += access.produce(topic, std::mem::take(&mut chunk))?.len();
                    }
                    continue;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            },
        };
        number += 1;
        let mut line: Vec<u8> = line.context("reading standard input")?;
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
        let weight = (limit.weigh)(&record);
        // Sent before it would go over, so a request stays under the
        // limit unless one record alone is over it.
        if !chunk.is_empty() && chunk_bytes + weight > limit.bytes {
            chunk_bytes = 0;
            total += access.produce(topic, std::mem::take(&mut chunk))?.len();
        }
        chunk_bytes += weight;
        chunk.push(record);
        if chunk.len() >= limit.records {
            chunk_bytes = 0;
            total += access.produce(topic, std::mem::take(&mut chunk))?.len();
        }
    }
    if !chunk.is_empty() {
        total += access.produce(topic, chunk)?.len();
    }
    eprintln!("produced {} to `{topic}`", records(total));
    Ok(())
}

/// Reads lines from `input` and sends them in blocks: a block goes when it
/// is full or when the reader has no more buffered input (the next read may
/// wait), so lines of a slow stream are not held back. A read error ends
/// the last block.
fn read_blocks<R: std::io::Read>(
    mut input: std::io::BufReader<R>,
    blocks: std::sync::mpsc::SyncSender<Vec<std::io::Result<Vec<u8>>>>,
) {
    let mut block = Vec::with_capacity(READ_BLOCK);
    loop {
        let mut line = Vec::new();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                block.push(Ok(line));
            }
            Err(e) => {
                block.push(Err(e));
                break;
            }
        }
        // Nothing buffered: the next read may wait for the writer.
        if block.len() == READ_BLOCK || input.buffer().is_empty() {
            let full = std::mem::replace(&mut block, Vec::with_capacity(READ_BLOCK));
            if blocks.send(full).is_err() {
                return;
            }
        }
    }
    if !block.is_empty() {
        let _ = blocks.send(block);
    }
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
    let mut line = line;
    let key = separator.and_then(|sep| {
        let sep = sep.as_bytes();
        let at = line.windows(sep.len()).position(|w| w == sep)?;
        // The value keeps the line's allocation; only the key is copied.
        let key = line[..at].to_vec();
        line.drain(..at + sep.len());
        Some(key)
    });
    let value = line;
    NewRecord {
        timestamp_ms: None,
        key,
        value,
        headers: Vec::new(),
        partition: None,
    }
}

/// Per-partition log starts for a table cell: each of up to 8 partitions,
/// else the range.
pub(super) fn log_starts(starts: &[u64]) -> String {
    if starts.len() <= 8 {
        return starts
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",");
    }
    let min = starts.iter().min().copied().unwrap_or(0);
    let max = starts.iter().max().copied().unwrap_or(0);
    format!("{min}..{max}")
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
        if info.start_offsets.iter().any(|s| *s > 0) {
            eprintln!(
                "retention removed the oldest records: the log starts at offset {} (by partition)",
                log_starts(&info.start_offsets)
            );
        }
        info.start_offsets
            .iter()
            .copied()
            .chain(std::iter::repeat(0))
            .take(info.partitions as usize)
            .collect()
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
    fn a_records_wire_size_bounds_its_json_from_above() {
        let record =
            |key: Option<&[u8]>, value: &[u8], headers: Vec<(String, Vec<u8>)>| NewRecord {
                timestamp_ms: Some(i64::MIN),
                key: key.map(<[u8]>::to_vec),
                value: value.to_vec(),
                headers,
                partition: Some(u32::MAX),
            };
        for r in [
            record(None, b"", vec![]),
            record(Some(b"k"), b"x", vec![]),
            record(Some(&[0xff; 7]), &[b'a'; 100], vec![]),
            record(
                Some(b"key"),
                &[0; 4096],
                vec![("\u{1}\"".repeat(5), vec![1; 10])],
            ),
        ] {
            let json = serde_json::to_vec(&crate::api::WireNewRecord::from(r.clone())).unwrap();
            assert!(
                json.len() < wire_size(&r),
                "{} >= {}",
                json.len(),
                wire_size(&r)
            );
        }
    }

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
