//! How commands print: records as JSON lines, status and plugin tables, and
//! what a closed standard output means (the end, quietly).

use std::io::Write;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;

use crate::config::Config;
use crate::plugins::short;
use crate::runtime::Runtime;
use crate::status::{PartitionReport, StatusReport};

#[doc(hidden)]
pub(crate) fn write_out(args: std::fmt::Arguments<'_>) {
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        exit_on_write_error(&e);
    }
}

/// Ends the process after a failed write to standard output: quietly with
/// success when the reader closed the pipe, with the error otherwise.
pub(super) fn exit_on_write_error(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: writing to standard output: {e}");
    std::process::exit(1);
}

/// Whether `error` comes from a reader that closed standard output.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The `dlq list` table.
pub(super) fn print_dead_letters(dlq: &str, letters: &[crate::dlq::DeadLetter]) {
    outln!(
        "{:<12} {:<16} {:<7} {:<14} {:<12} {:<24} REPLAYED TO / MESSAGE",
        "AT",
        "SOURCE",
        "KIND",
        "PLUGIN",
        "VERSION",
        "TIME"
    );
    for l in letters {
        let or = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
        let source = match (l.source_partition, l.source_offset) {
            (Some(p), Some(o)) => format!("{p}/{o}"),
            _ => "-".to_owned(),
        };
        let time = humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + Duration::from_millis(l.timestamp_ms.max(0) as u64),
        );
        let last = match &l.replayed_to {
            Some((t, p, o)) => format!("replayed to {t}/{p}/{o}; {}", or(&l.message)),
            None => or(&l.message),
        };
        outln!(
            "{:<12} {:<16} {:<7} {:<14} {:<12} {:<24} {}",
            format!("{}/{}", l.partition, l.offset),
            source,
            or(&l.kind),
            or(&l.plugin),
            l.version.as_deref().map(short).unwrap_or("-"),
            time,
            last
        );
    }
    if letters.is_empty() {
        eprintln!("`{dlq}` holds no dead letters");
    }
}

/// One partition's line of the `status` table.
fn status_row(p: &PartitionReport) -> String {
    let state = match (&p.state, &p.detail) {
        (Some(s), Some(d)) => format!("{s}: {d}"),
        (Some(s), None) => s.to_string(),
        (None, _) => "-".to_owned(),
    };
    format!(
        "{:<20} {:>4} {:>10} {:>10} {:>10} {:>8} {:>9.1} {:>5} {:>5} {:>6}  {:<14} {:<12} {:<8}  {}",
        p.topic,
        p.partition,
        p.log_start_offset,
        p.committed_offset,
        p.end_offset,
        p.lag,
        p.records_per_sec,
        p.swaps,
        p.dead_letters,
        p.timers_pending,
        p.plugin,
        p.version.as_deref().map(short).unwrap_or("-"),
        p.contract.as_deref().unwrap_or("-"),
        state
    )
}

/// `plugins diff NAME`: the newest version of `name` that ran in shadow.
pub(super) fn print_shadow_diff(
    report: &StatusReport,
    name: &str,
    json: bool,
) -> anyhow::Result<()> {
    if !report.running {
        anyhow::bail!("no host is running: shadow comparisons live in the running host");
    }
    let plugin = report
        .plugins
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| anyhow::anyhow!("the running host has no plugin `{name}`"))?;
    let Some((version, summary)) = plugin
        .versions
        .iter()
        .rev()
        .find_map(|v| v.shadow.as_ref().map(|s| (v, s)))
    else {
        anyhow::bail!("no version of `{name}` has run in shadow on this host");
    };
    if json {
        outln!(
            "{}",
            serde_json::json!({
                "plugin": name,
                "version": version.digest,
                "state": version.state,
                "reason": version.reason,
                "shadow": summary,
            })
        );
        return Ok(());
    }
    outln!(
        "{name} {} ({}){}",
        short(&version.digest),
        version.state,
        version
            .reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default()
    );
    outln!(
        "{:>9} {:>8} {:>9} {:>9} {:>6} {:>8} {:>11} {:>11}",
        "PARTITION",
        "BATCHES",
        "MATCHING",
        "DIFFERING",
        "EXTRA",
        "MISSING",
        "STATE SAME",
        "STATE DIFF"
    );
    let row = |label: String, c: &crate::shadow::Counts| {
        outln!(
            "{label:>9} {:>8} {:>9} {:>9} {:>6} {:>8} {:>11} {:>11}",
            c.batches,
            c.matching,
            c.differing,
            c.extra,
            c.missing,
            c.state_matching,
            c.state_differing
        );
    };
    for (p, c) in &summary.partitions {
        row(p.to_string(), c);
    }
    row("all".to_owned(), &summary.total);
    if summary.skipped > 0 {
        outln!(
            "{} batches skipped: the candidate used up its time budget",
            summary.skipped
        );
    }
    for d in &summary.first {
        outln!("{d}");
    }
    Ok(())
}

pub(super) fn print_status(report: &StatusReport) {
    outln!(
        "group {} · host {}",
        report.group,
        if report.running {
            "running"
        } else {
            "not running"
        }
    );
    if let Some(m) = &report.member {
        outln!(
            "kafka member {} · protocol {} · generation {} · {} rebalances · {} outbox entries undelivered · owns {} partitions (state `-`: owned by another member)",
            m.member_id.as_deref().unwrap_or("-"),
            m.protocol.as_deref().unwrap_or("-"),
            m.generation.map_or("-".to_owned(), |g| g.to_string()),
            m.rebalances,
            m.outbox_pending,
            report
                .partitions
                .iter()
                .filter(|p| p.state.is_some())
                .count(),
        );
    }
    outln!(
        "{:<20} {:>4} {:>10} {:>10} {:>10} {:>8} {:>9} {:>5} {:>5} {:>6}  {:<14} {:<12} {:<8}  STATE",
        "TOPIC",
        "PART",
        "START",
        "COMMITTED",
        "END",
        "LAG",
        "REC/S",
        "SWAPS",
        "DLQ",
        "TIMERS",
        "PLUGIN",
        "VERSION",
        "CONTRACT"
    );
    for p in &report.partitions {
        outln!("{}", status_row(p));
    }
    if let Some(b) = &report.broker
        && !b.up
    {
        outln!(
            "broker trouble for {:.0} s: cannot reach {}{}",
            b.seconds_since_up,
            b.unreachable.join(", "),
            b.last_error
                .as_deref()
                .map(|e| format!(" (last error: {e})"))
                .unwrap_or_default()
        );
    }
    for plugin in &report.plugins {
        if let Some(fallback) = &plugin.fallback {
            outln!("plugin {}: {fallback}", plugin.name);
        }
        for v in &plugin.versions {
            if let Some(reason) = &v.reason {
                outln!(
                    "plugin {} version {} {}: {reason}",
                    plugin.name,
                    short(&v.digest),
                    v.state
                );
            }
            if let (crate::plugins::VersionState::Shadow, Some(summary)) = (v.state, &v.shadow) {
                outln!(
                    "plugin {} version {} in shadow: {} (`linecook plugins diff {}`)",
                    plugin.name,
                    short(&v.digest),
                    summary.describe(),
                    plugin.name
                );
            }
        }
    }
}

pub(super) fn list_plugins(
    config: &Config,
    report: &StatusReport,
    json: bool,
) -> anyhow::Result<()> {
    let partitions: Vec<serde_json::Value> = report
        .partitions
        .iter()
        .map(|p| {
            json!({
                "topic": p.topic,
                "partition": p.partition,
                "plugin": p.plugin,
                "version": p.version,
                "swaps": p.swaps,
                "last_swap_pause_us": p.last_swap_pause_us,
            })
        })
        .collect();
    // Without a host, say what is on disk for each routed plugin.
    let on_disk: Vec<serde_json::Value> = if report.running {
        Vec::new()
    } else {
        let mut names: Vec<&str> = config.routes.iter().map(|r| r.plugin.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names
            .into_iter()
            .map(|name| {
                let digest = std::fs::read(config.plugin_path(name))
                    .ok()
                    .map(|b| crate::plugins::digest(&b));
                json!({ "name": name, "file_digest": digest })
            })
            .collect()
    };
    if json {
        let out = json!({
            "running": report.running,
            "plugins": report.plugins,
            "on_disk": on_disk,
            "partitions": partitions,
        });
        outln!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if !report.running {
        outln!("host not running: showing files on disk and versions in checkpoints");
        for p in &on_disk {
            let digest = p["file_digest"].as_str().map(short).unwrap_or("(missing)");
            outln!(
                "plugin {}  file {digest}",
                p["name"].as_str().unwrap_or("?")
            );
        }
    }
    for plugin in &report.plugins {
        if let Some(fallback) = &plugin.fallback {
            outln!("plugin {}: {fallback}", plugin.name);
        }
        outln!(
            "plugin {}{}  (rejected {}, rolled back {})",
            plugin.name,
            if plugin.file_present {
                ""
            } else {
                " [file deleted]"
            },
            plugin.rejected_total,
            plugin.rolled_back_total
        );
        for v in &plugin.versions {
            let seen = std::time::UNIX_EPOCH + Duration::from_millis(v.seen_at_ms.max(0) as u64);
            outln!(
                "  {:<12}  {:<11}  {:<14}  seen {}  {}{}",
                short(&v.digest),
                v.state.to_string(),
                v.contract
                    .as_deref()
                    .map(|c| format!(
                        "contract {c}{}{}",
                        if v.packed { "+packed" } else { "" },
                        if v.http { "+http" } else { "" }
                    ))
                    .unwrap_or_default(),
                humantime::format_rfc3339_seconds(seen),
                v.source
                    .map(|s| format!(
                        "{} in {} ms",
                        if s == crate::plugins::Source::Cache {
                            "from cache"
                        } else {
                            "compiled"
                        },
                        v.prepare_ms.unwrap_or(0)
                    ))
                    .unwrap_or_default(),
                v.reason
                    .as_deref()
                    .map(|r| format!("  — {r}"))
                    .unwrap_or_default()
            );
        }
    }
    outln!("partitions:");
    for p in &report.partitions {
        outln!(
            "  {}/{}  {}  {}  swaps {}{}",
            p.topic,
            p.partition,
            p.plugin,
            p.version.as_deref().map(short).unwrap_or("-"),
            p.swaps,
            p.last_swap_pause_us
                .map(|us| format!(", last swap pause {:.2} ms", us as f64 / 1000.0))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// What `plugins check` runs `init` with.
pub(super) struct CheckInit {
    /// The route config, as `init` receives it.
    pub config: Vec<(String, String)>,
    /// The route's limits.
    pub limits: crate::config::Limits,
    /// Whether the config came from the user (`--set`, `--route`): then a
    /// refusal fails the check; without, it is reported.
    pub given: bool,
}

/// Compiles `file` once, checks it against the world, and starts one
/// instance of it — `init` included — as a partition would.
pub(super) fn check_plugin(file: &std::path::Path, init: CheckInit) -> anyhow::Result<()> {
    use crate::runtime::{Instance, InstanceError, Labels};
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let unusable = || format!("{} is not a usable plugin", file.display());
    let runtime = Runtime::new()?;
    let component = runtime
        .compile(&bytes)
        .with_context(unusable)
        .map_err(|e| super::Exit::new(super::Exit::NOT_A_COMPONENT, e))?;
    let (imports, exports) = runtime.describe(&component);
    let prepared = runtime
        .link(&component)
        .with_context(unusable)
        .map_err(|e| super::Exit::new(super::Exit::WRONG_WORLD, e))?;
    let name = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin")
        .to_owned();
    let digest = crate::plugins::digest(&bytes);
    let context = crate::runtime::bindings::Context {
        plugin: name.clone(),
        version: digest.clone(),
        topic: "check".into(),
        partition: 0,
        config: init.config,
    };
    let labels = Labels {
        plugin: name,
        version: short(&digest).to_owned(),
        topic: "check".into(),
        partition: 0,
    };
    let init_line = match Instance::start(
        &prepared,
        labels,
        init.limits,
        &context,
        Box::new(crate::checkpoint::NoState),
    ) {
        Ok(_) => "ok".to_owned(),
        Err(InstanceError::Init(why)) if !init.given => format!(
            "refused without the route's config: {why} (check again with --set KEY=VALUE or --route TOPIC)"
        ),
        Err(e) => {
            let e = anyhow::Error::new(e).context(unusable());
            return Err(super::Exit::new(super::Exit::INIT_FAILED, e).into());
        }
    };
    outln!(
        "{}: ok, a linecook:handler@{} component{}{}",
        file.display(),
        prepared.contract(),
        if prepared.packed() {
            " with the packed batch path (the host calls handle-packed)"
        } else {
            ""
        },
        if prepared.http() {
            "; it makes outbound HTTP requests (wasi:http), which its route's `http` table must allow"
        } else {
            ""
        }
    );
    outln!("init    {init_line}");
    outln!("digest  {digest}");
    outln!("size    {} bytes", bytes.len());
    outln!("imports:");
    for i in imports {
        outln!("  {i}");
    }
    outln!("exports:");
    for e in exports {
        outln!("  {e}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::PartitionState;

    #[test]
    fn a_status_row_shows_rate_swaps_dead_letters_timers_and_contract() {
        let row = status_row(&PartitionReport {
            topic: "words".into(),
            partition: 2,
            committed_offset: 90,
            end_offset: 100,
            log_start_offset: 40,
            skipped_records: 0,
            lag: 10,
            plugin: "uppercase".into(),
            version: Some("0123456789abcdef".into()),
            state: Some(PartitionState::Running),
            detail: None,
            batches: 4,
            records: 90,
            swaps: 3,
            dead_letters: 1,
            records_per_sec: 12.34,
            last_swap_pause_us: None,
            contract: Some("0.2.0".into()),
            timers_pending: 7,
            timers_fired: 0,
            watermark_ms: None,
            dead_letter_topic: None,
        });
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "words",
                "2",
                "40",
                "90",
                "100",
                "10",
                "12.3",
                "3",
                "1",
                "7",
                "uppercase",
                "0123456789ab",
                "0.2.0",
                "running"
            ]
        );
    }
}
