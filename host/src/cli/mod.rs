//! The `linecook` command line.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};

use crate::client::Access;
use crate::config::Config;

/// `println!` for command output. A reader that went away (`| head`) ends
/// the command quietly with success, as `cat` does, instead of a panic.
macro_rules! outln {
    () => { $crate::cli::output::write_out(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::cli::output::write_out(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` for command output; see `outln!`.
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::output::write_out(format_args!($($arg)*)) };
}

mod commands;
mod json_lines;
mod output;

/// An error that asks for a particular exit status, so scripts can tell
/// failures apart (`plugins check`). Any other error exits with 1.
#[derive(Debug, thiserror::Error)]
#[error("{error:#}")]
pub struct Exit {
    /// The exit status.
    pub code: u8,
    error: anyhow::Error,
}

impl Exit {
    /// `plugins check`: not WebAssembly, a core module, or it does not
    /// compile.
    pub const NOT_A_COMPONENT: u8 = 2;
    /// `plugins check`: a component, but of neither contract's world.
    pub const WRONG_WORLD: u8 = 3;
    /// `plugins check`: instantiation or `init` failed (an error, a trap, a
    /// limit).
    pub const INIT_FAILED: u8 = 4;
    /// `plugins check --trusted-key`: unsigned, or not by a trusted key.
    pub const UNTRUSTED: u8 = 5;

    fn new(code: u8, error: anyhow::Error) -> Exit {
        Exit { code, error }
    }
}

pub use output::is_broken_pipe;

use commands::{produce, run, tail};
use output::{check_plugin, list_plugins, print_status};

/// linecook runs stream handlers written as WebAssembly components.
///
/// It is a member of a consumer group: for every partition it owns of a
/// routed topic it runs one instance of the routed plugin, hands it batches
/// of records in offset order, and commits the handler's state writes, its
/// output records and the partition's next offset in one transaction.
#[derive(Debug, Parser)]
#[command(
    name = "linecook",
    version,
    after_help = "\
Quick start:
  linecook topics create words --partitions 4 --config linecook.toml
  printf 'alice:hello\\nbob:world\\n' | linecook produce --topic words --key-separator : --config linecook.toml
  linecook run --config linecook.toml          # Ctrl-C stops after the batch in flight
  linecook tail --topic shouted --from-beginning --config linecook.toml
  linecook status --config linecook.toml

produce, tail and status work whether or not `linecook run` is running: when it
holds the data directory they go through its admin API.

Logging: RUST_LOG=debug (or e.g. RUST_LOG=linecook=debug,linecook::guest=trace).

Compiled plugins: LINECOOK_COMPILE_CACHE=<dir> keeps every compiled component
in <dir> and reuses it in any linecook command (`test` and `plugins check`
compile on every run otherwise; `run` also keeps its own cache in the data
directory)."
)]
pub struct Cli {
    /// Log format on standard error: `pretty` for people, `json` for log
    /// pipelines. The level comes from RUST_LOG (default info).
    #[arg(long, global = true, value_enum, default_value_t = crate::telemetry::LogFormat::Pretty)]
    log_format: crate::telemetry::LogFormat,
    /// Colour in pretty logs: `auto` (at a terminal, unless NO_COLOR is
    /// set), `always` or `never`.
    #[arg(long, global = true, value_enum, default_value_t = crate::telemetry::Color::Auto)]
    color: crate::telemetry::Color,
    #[command(flatten)]
    config: ConfigArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct ConfigArg {
    /// Path of the config file (TOML), before or after the command. See
    /// `linecook config-help`.
    #[arg(
        long,
        short,
        global = true,
        env = "LINECOOK_CONFIG",
        default_value = "linecook.toml"
    )]
    config: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the host until SIGINT/SIGTERM; on a signal it finishes and
    /// checkpoints the batch in flight on every partition, then exits.
    Run,
    /// Create and list topics of the embedded log.
    Topics {
        #[command(subcommand)]
        command: TopicsCommand,
    },
    /// Append records to a topic: each line of standard input is one record's
    /// value, or with --format json one record as `tail` prints it.
    ///
    /// Keyed records go to the partition Kafka's default partitioner would
    /// pick; keyless records are spread round-robin; a JSON line's
    /// "partition" is kept. A bad JSON line stops the command: the records
    /// before it are in, none after, and the error names the line. To copy
    /// a topic while no host runs, go through a file (`tail … > f; produce …
    /// < f`): only a running host lets two commands use the data directory
    /// at once.
    Produce {
        /// Topic to append to.
        #[arg(long)]
        topic: String,
        /// Split each line at the first SEP: the text before is the key, the rest the value.
        #[arg(long, value_name = "SEP")]
        key_separator: Option<String>,
        /// `lines`: each line is a value. `json`: each line is a record as
        /// `tail --headers` prints it, so `linecook tail --topic a
        /// --from-beginning --headers | linecook produce --topic b --format
        /// json` copies keys, values, headers, timestamps and partitions
        /// exactly.
        #[arg(long, value_enum, default_value = "lines")]
        format: commands::InputFormat,
    },
    /// Print a topic's records as JSON lines:
    /// {"topic","partition","offset","key","value","timestamp_ms"}, and
    /// "headers" with --headers.
    ///
    /// Keys and values print as strings when they are UTF-8, else as
    /// {"base64": "..."}; a missing key prints as null. Records are printed
    /// partition by partition, each in offset order. `produce --format json`
    /// reads these lines back.
    Tail {
        /// Topic to read.
        #[arg(long)]
        topic: String,
        /// Start at the first record instead of the end of each partition.
        #[arg(long)]
        from_beginning: bool,
        /// Stop after this many records.
        #[arg(long, value_name = "N")]
        max_records: Option<u64>,
        /// Keep waiting for new records instead of exiting after the last one.
        #[arg(long)]
        follow: bool,
        /// Print each record's headers too, as "headers": [[name, value], …]
        /// (values like keys: a string, or {"base64": "..."}): a dead
        /// letter's `linecook.error.*` and `linecook.source.*` among them.
        #[arg(long)]
        headers: bool,
    },
    /// Show each routed partition: committed offset, end offset, lag, plugin,
    /// version and, while the host runs, what its worker is doing.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Redraw every second, like `top`, until interrupted.
        #[arg(long, conflicts_with = "json")]
        watch: bool,
    },
    /// See and replay dead letters: the records a route set aside, with
    /// where they came from and why.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Move a partition's offset (reset) or resume a paused one: through
    /// the running host, or, for a reset, directly when none runs (with
    /// Kafka: the group's committed offsets).
    Partitions {
        #[command(subcommand)]
        command: PartitionsCommand,
    },
    /// Inspect plugin modules.
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
    },
    /// Print an annotated example config file.
    ConfigHelp,
    /// Start a handler project: `linecook new NAME --lang rust` writes NAME/
    /// with a working handler (it upper-cases values to route config
    /// `output`) and a build.sh that produces NAME.wasm, ready for
    /// `linecook plugins check` and the plugins directory.
    New {
        /// Plugin name: the project directory and the NAME.wasm it builds.
        name: String,
        /// Language of the handler.
        #[arg(long, value_enum, default_value_t = crate::scaffold::Lang::Rust)]
        lang: crate::scaffold::Lang,
        /// Directory to create the project in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Rust only: use the SDK at this path (a linecook checkout's
        /// guest-sdk) instead of the copy written into the project.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Print the contracts this host accepts (linecook:handler 0.1.0 and
    /// 0.2.0, run side by side), or one with --contract; with --out-dir,
    /// write each to DIR/<version>/handler.wit.
    Wit {
        /// Only this contract.
        #[arg(long, value_enum)]
        contract: Option<ContractArg>,
        /// Write the files here instead of printing them.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// Run a handler against fixtures, with no host, log or store: route
    /// config, initial state and batches of records in a TOML file; the
    /// outputs, final state, pending timers and errors compared with its
    /// `[expect]` table, a diff printed for each mismatch. Exits 1 if any
    /// fixture fails. The format is documented in docs/testing.md.
    Test {
        /// Fixture files.
        #[arg(required = true)]
        fixtures: Vec<PathBuf>,
        /// Rewrite each fixture's `[expect]` from what the run did (the
        /// rest of the file is kept as it is).
        #[arg(long)]
        update: bool,
    },
    /// Run a plugin version over records already in the log and print what
    /// it emits, one JSON line per record — committing nothing: no state, no
    /// outputs, no offsets. Try a version on real traffic before deploying
    /// it, or see what a range of records would have produced.
    ///
    /// Each partition runs as a host runs it (batches of `max_batch`, state
    /// kept from batch to batch in memory, timers fired between batches),
    /// from empty state or the partition's committed state (--state
    /// current). Works beside a running host. With the Kafka source it reads
    /// the topic from the cluster, joining no group and committing nothing
    /// (committed state is this member's local copy). Lines: the emitted record
    /// ({"topic","key","value"}, "timestamp_ms" and "headers" when set;
    /// bytes as text, or {"base64": …}) with "source_partition" and
    /// "source_offsets" [first, last] of its batch. Failed calls are
    /// reported on standard error and the replay goes on; the exit status is
    /// 1 if any failed.
    ///
    /// With --against, nothing is printed per record: the same records go
    /// through a baseline too (a file, or `active`: the version the route's
    /// partitions run, from the copy the host keeps), both from the same
    /// state, and their outputs are compared batch by batch — counts of
    /// matching, differing, extra and missing outputs and the first
    /// differences; exit status 1 when they differ.
    ///
    ///   linecook replay --plugin plugins/uppercase.wasm --topic words --from-offset 1000
    ///   linecook replay --plugin new/uppercase.wasm --topic words --against active
    Replay {
        /// The .wasm file to run.
        #[arg(long, value_name = "FILE")]
        plugin: PathBuf,
        /// Topic whose records it handles.
        #[arg(long)]
        topic: String,
        /// Only this partition (default: every one, in order).
        #[arg(long, value_name = "P")]
        partition: Option<u32>,
        /// First offset, in each partition.
        #[arg(
            long,
            value_name = "N",
            default_value_t = 0,
            conflicts_with = "from_timestamp"
        )]
        from_offset: u64,
        /// Start at each partition's first record with a timestamp at or
        /// after this (ms since the Unix epoch).
        #[arg(long, value_name = "MS")]
        from_timestamp: Option<i64>,
        /// Stop before this offset, in each partition (default: the end of
        /// the log when the replay starts).
        #[arg(long, value_name = "N")]
        to_offset: Option<u64>,
        /// A route config entry for `init`, KEY=VALUE; repeat for several.
        /// Without any, the topic's route in the config file gives them.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// The state the handler starts from.
        #[arg(long, value_enum, default_value = "empty")]
        state: ReplayStateArg,
        /// Compare with this baseline instead of printing: a .wasm file,
        /// `active` for the version the topic's partitions run now (run again
        /// over the same records), or `log` for the outputs that version
        /// actually wrote (needs the route's `origin_headers = true`).
        #[arg(long, value_name = "FILE|active|log")]
        against: Option<String>,
        /// With --against: print the comparison as JSON.
        #[arg(long, requires = "against")]
        json: bool,
    },
    /// What a handler build needs from the contract, with no other tool
    /// installed: the WIT, C bindings, and core module -> component.
    Sdk {
        #[command(subcommand)]
        command: SdkCommand,
    },
}

/// The kept copy of the version the partitions of `topic` run now.
fn active_version_file(config: &Config, access: &Access, topic: &str) -> anyhow::Result<PathBuf> {
    let route = config
        .routes
        .iter()
        .find(|r| r.topic == topic)
        .with_context(|| format!("--against active: the config routes no topic `{topic}`"))?;
    let status = access.status(config)?;
    let mut versions: Vec<&str> = status
        .partitions
        .iter()
        .filter(|p| p.topic == topic)
        .filter_map(|p| p.version.as_deref())
        .collect();
    versions.sort();
    versions.dedup();
    let digest = match versions.as_slice() {
        [one] => *one,
        [] => bail!("--against active: no partition of `{topic}` has run a version yet"),
        _ => bail!(
            "--against active: the partitions of `{topic}` run {} versions (a rollout is under way); pass --against FILE",
            versions.len()
        ),
    };
    let path = config
        .data_dir
        .join(crate::daemon::KEPT_DIR)
        .join(&route.plugin)
        .join(format!("{digest}.wasm"));
    anyhow::ensure!(
        path.exists(),
        "--against active: the host keeps no copy of {} {} at {}; pass --against FILE",
        route.plugin,
        crate::plugins::short(digest),
        path.display()
    );
    Ok(path)
}

/// `replay --against`: the candidate and the baseline over the same records,
/// compared.
/// What `replay --against` compares with.
enum Baseline {
    /// Another version, run over the same records.
    File(PathBuf),
    /// The outputs in the log that name these records as their origin.
    Log,
}

fn replay_against(
    access: &Access,
    records: &mut dyn crate::replay::Records,
    request: crate::replay::Request<'_>,
    baseline: Baseline,
    json: bool,
) -> anyhow::Result<()> {
    let mut run =
        |plugin: &std::path::Path, what: &str| -> anyhow::Result<Vec<crate::replay::Line>> {
            let mut lines = Vec::new();
            let request = crate::replay::Request {
                plugin,
                ..request.clone()
            };
            let summary = crate::replay::replay(
                access,
                &mut *records,
                &request,
                |line| {
                    lines.push(line);
                    Ok(())
                },
                |failure| eprintln!("linecook replay ({what}): {failure}"),
            )?;
            if summary.failures > 0 {
                eprintln!(
                    "linecook replay: {} calls of the {what} failed",
                    summary.failures
                );
            }
            Ok(lines)
        };
    let (diff, baseline_name) = match &baseline {
        Baseline::File(file) => {
            let base = run(file, "baseline")?;
            let cand = run(request.plugin, "candidate")?;
            (
                crate::replay::compare(&base, &cand, 10),
                file.display().to_string(),
            )
        }
        Baseline::Log => {
            let cand = run(request.plugin, "candidate")?;
            let partitions: Vec<u32> = match request.partition {
                Some(p) => vec![p],
                None => (0..access.topic(request.topic)?.partitions).collect(),
            };
            let from = match request.from_timestamp {
                // The candidate's first batch says where the range began.
                Some(_) => cand.iter().map(|l| l.source_offsets[0]).min().unwrap_or(0),
                None => request.from_offset,
            };
            let base = crate::replay::logged_outputs(
                access,
                request.topic,
                &partitions,
                from,
                request.to_offset,
            )?;
            if base.is_empty() {
                bail!(
                    "no output in the log names `{}` as its origin: set `origin_headers = true` on its route (outputs written before that carry no origin)",
                    request.topic
                );
            }
            let mut cand = cand;
            for line in &mut cand {
                line.output.timestamp_ms = None;
            }
            (
                crate::replay::compare_in_order(&base, &cand, 10),
                "what the log holds".to_owned(),
            )
        }
    };
    if json {
        outln!("{}", serde_json::to_string_pretty(&diff)?);
    } else {
        outln!(
            "{} batches of `{}`: {} outputs match, {} differ, {} extra, {} missing",
            diff.batches,
            request.topic,
            diff.matching,
            diff.differing,
            diff.extra,
            diff.missing
        );
        if !diff.first.is_empty() {
            outln!("first differences:");
        }
        for d in &diff.first {
            let show = |o: &Option<crate::fixture::Output>| {
                o.as_ref().map_or("(nothing)".to_owned(), |o| {
                    serde_json::to_string(o).expect("JSON of plain values")
                })
            };
            outln!(
                "  partition {}, offsets {}..={}, output {}:\n    baseline:  {}\n    candidate: {}",
                d.partition,
                d.source_offsets[0],
                d.source_offsets[1],
                d.index,
                show(&d.baseline),
                show(&d.candidate)
            );
        }
    }
    if !diff.same() {
        return Err(Exit::new(
            1,
            anyhow::anyhow!("{} differs from {baseline_name}", request.plugin.display(),),
        )
        .into());
    }
    Ok(())
}

/// `replay --state`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ReplayStateArg {
    /// Nothing, as a new deployment starts.
    Empty,
    /// The partition's committed state now.
    Current,
}

/// `partitions reset --state`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ResetStateArg {
    /// Keep state, timers and watermark.
    Keep,
    /// Forget them: the partition starts as if new from the offset.
    Clear,
}

/// Which contract an `sdk` command serves.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ContractArg {
    /// `linecook:handler@0.1.0`: records in, state and outputs.
    #[value(name = "0.1.0")]
    V0_1,
    /// `linecook:handler@0.2.0`: adds timers, output timestamps, state TTL.
    #[value(name = "0.2.0")]
    V0_2,
}

impl From<ContractArg> for crate::runtime::Contract {
    fn from(c: ContractArg) -> Self {
        match c {
            ContractArg::V0_1 => crate::runtime::Contract::V0_1,
            ContractArg::V0_2 => crate::runtime::Contract::V0_2,
        }
    }
}

#[derive(Debug, Subcommand)]
enum SdkCommand {
    /// Print the WIT contract (`linecook:handler`) this binary checks modules
    /// against; with --out-dir, write it there as handler.wit.
    Wit {
        /// Directory to write handler.wit into.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
        /// Which contract. The host runs both side by side.
        #[arg(long, value_enum, default_value = "0.1.0")]
        contract: ContractArg,
    },
    /// Write C bindings for the handler world (handler.h, handler.c and
    /// handler_component_type.o) into DIR: compile and link all three with
    /// your handler, then `linecook sdk componentize`.
    CBindings {
        /// Directory to write the bindings into (created if missing).
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
        /// Which contract: 0.2.0 exports `guest` (init, handle, on-timers)
        /// and imports `timers`.
        #[arg(long, value_enum, default_value = "0.1.0")]
        contract: ContractArg,
        /// Also export 0.2.0's packed batch path (world `packed-handler`,
        /// files `packed_handler.*`): `handle-packed` gets a batch as one
        /// buffer and returns its effects as one (`plugins/c/packed.h` reads
        /// and writes them).
        #[arg(long)]
        packed: bool,
    },
    /// Make a component of a core WebAssembly module (from clang, zig, asc,
    /// go…) that exports the handler world's functions: embeds the world
    /// unless the module carries it already, adds wasmtime's WASI preview 1
    /// reactor adapter if the module imports `wasi_snapshot_preview1` (Go's
    /// runtime does), encodes and validates the component.
    Componentize {
        /// The core module.
        core: PathBuf,
        /// Where to write the component.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// The contract whose world is embedded when the module carries none.
        #[arg(long, value_enum, default_value = "0.1.0")]
        contract: ContractArg,
        /// Rename the module's export OLD to NEW first, for a language that
        /// cannot name an export after an interface's function
        /// (`--export handle=linecook:handler/guest@0.2.0#handle`); repeat
        /// for several.
        #[arg(long = "export", value_name = "OLD=NEW", value_parser = parse_rename)]
        renames: Vec<(String, String)>,
    },
}

fn parse_rename(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((old, new)) if !old.is_empty() && !new.is_empty() => {
            Ok((old.to_owned(), new.to_owned()))
        }
        _ => Err(format!("`{s}` is not OLD=NEW")),
    }
}

#[derive(Debug, Subcommand)]
enum TopicsCommand {
    /// Create a topic with a fixed number of partitions (idempotent).
    Create {
        /// Topic name: 1 to 249 of A-Z a-z 0-9 . _ -
        name: String,
        /// Number of partitions, 1 to 4096. Fixed once created.
        #[arg(long)]
        partitions: u32,
    },
    /// List topics with their partition counts and the records each holds
    /// (the sum of its partitions' end offsets).
    List,
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// A table of a topic's dead letters: where each is, its source
    /// partition and offset, plugin, version, error kind and message, and
    /// where it was replayed to.
    List {
        /// A routed topic (its route's dead-letter topic is listed) or a
        /// dead-letter topic.
        #[arg(long)]
        topic: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Send dead letters back — once the cause is fixed — to their source
    /// topic (or --to another), with their own key, value and headers and a
    /// `linecook.replay.of` header. Each letter is replayed at most once:
    /// a second replay skips it.
    Replay {
        /// A routed topic (its route's dead-letter topic is replayed) or a
        /// dead-letter topic.
        #[arg(long)]
        topic: String,
        /// Topic to send them to, instead of each one's source topic.
        #[arg(long)]
        to: Option<String>,
        /// Only letters with NAME=VALUE, NAME one of kind, plugin, version
        /// (a prefix), partition, offset (of the source record). Repeat to
        /// require several.
        #[arg(long = "where", value_name = "NAME=VALUE")]
        filter: Vec<String>,
        /// Say what would be replayed; replay nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
enum PartitionsCommand {
    /// Move partitions' committed offsets — replay from earlier, or skip a
    /// stretch (embedded source). With a host running, each partition moves
    /// at its next batch boundary, without a rebalance; without one, in the
    /// store. `--state clear` also forgets the partitions' state, timers
    /// and watermark; `keep` (default) leaves them as they are.
    Reset {
        /// Topic.
        #[arg(long)]
        topic: String,
        /// Only this partition (default: every partition of the topic).
        #[arg(long)]
        partition: Option<u32>,
        /// To this offset.
        #[arg(long, group = "to", value_name = "OFFSET")]
        to_offset: Option<u64>,
        /// To the first record with a timestamp at or after this one (ms
        /// since the Unix epoch), or the end.
        #[arg(long, group = "to", value_name = "MS")]
        to_timestamp: Option<i64>,
        /// To the first record.
        #[arg(long, group = "to")]
        to_earliest: bool,
        /// To the end: skip every record not yet handled.
        #[arg(long, group = "to")]
        to_latest: bool,
        /// What happens to the partitions' state (embedded source; default
        /// keep). With Kafka, members rebuild it from the changelog as of
        /// the new offset when they next take the partitions.
        #[arg(long, value_enum)]
        state: Option<ResetStateArg>,
    },
    /// Resume a paused partition: it retries the batch it stopped at.
    ///
    /// A partition pauses when its handler returns `fatal`, or when a batch
    /// keeps failing and the route's `errors.on_error` is "pause".
    Resume {
        /// Topic of the partition.
        #[arg(long)]
        topic: String,
        /// Partition number.
        #[arg(long)]
        partition: u32,
    },
}

#[derive(Debug, Subcommand)]
enum PluginsCommand {
    /// Show each routed plugin: the version each partition runs, and every
    /// version the running host has seen with its state (active, canary,
    /// pending, rejected, rolled-back, retired), when it was seen and why it
    /// was refused. Without a running host: the file on disk and the
    /// versions recorded in checkpoints.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show how the newest version of NAME that ran in shadow compares with
    /// the serving version: matching, differing, extra and missing outputs
    /// and state writes, per partition, and the first differences with the
    /// offsets of their batches. Needs the running host.
    Diff {
        /// Plugin name.
        name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check that FILE is a component of the linecook:handler world, without a
    /// running host: compiles it, links it, and starts one instance — `init`
    /// included — as a partition would. Prints its contract, digest, imports
    /// and exports; exits non-zero with the reason if it is not usable: 2 not
    /// a component (or does not compile), 3 not the linecook:handler world
    /// of either contract, 4 `init` failed (an error, a trap or an exceeded
    /// limit), 1 anything else (an unreadable file).
    Check {
        /// The .wasm file.
        file: PathBuf,
        /// A route config entry for `init`, KEY=VALUE; repeat for several.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Take `init`'s config and the limits from this topic's route in
        /// the config file (and its `trusted_keys`: the signature is
        /// checked too).
        #[arg(long, value_name = "TOPIC")]
        route: Option<String>,
        /// Check FILE.sig against this key (`ed25519:…`), as a host with
        /// `trusted_keys` would; repeat for several.
        #[arg(long = "trusted-key", value_name = "KEY")]
        trusted_keys: Vec<String>,
    },
    /// Make a key pair for signing plugins: writes the secret key to FILE
    /// (keep it off the hosts) and prints the public key for `trusted_keys`.
    Keygen {
        /// Where to write the secret key (refused if it exists).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Sign a plugin: writes FILE.sig, a detached ed25519 signature over
    /// FILE's bytes. Deploy FILE.sig before (or with) FILE.
    Sign {
        /// The .wasm file.
        file: PathBuf,
        /// The secret key file from `plugins keygen`.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
}

/// `config` if its source is the embedded log: commands that read or write
/// the embedded log mean nothing against a Kafka cluster.
/// `partitions reset` with the Kafka source: the group's offsets move, with
/// no member running (as Kafka requires); members rebuild state from the
/// changelog as of the new offsets when they take the partitions again.
fn reset_kafka(
    config: &Config,
    source: &crate::config::KafkaSource,
    topic: &str,
    partition: Option<u32>,
    to: crate::checkpoint::ResetTo,
    state: Option<ResetStateArg>,
) -> anyhow::Result<()> {
    if state.is_some() {
        bail!(
            "--state applies to the embedded log; with Kafka, a member rebuilds each partition's state from the changelog as of the new offset (the state it had there)"
        );
    }
    let access = Access::connect(config)?;
    if matches!(access, Access::Remote(_)) {
        // A running member resets the partitions it owns, each at a batch
        // boundary: no rebalance.
        let partitions: Vec<u32> = match partition {
            Some(p) => vec![p],
            None => (0..access.topic(topic)?.partitions).collect(),
        };
        let mut elsewhere = Vec::new();
        for p in partitions {
            match access.reset(topic, p, to, crate::checkpoint::ResetState::Keep) {
                Ok((from, to)) => outln!(
                    "{topic}/{p}: {from} -> {to} (group offset moved; state rebuilt from the changelog as of {to})"
                ),
                Err(e) if e.to_string().contains("does not run") => elsewhere.push(p),
                Err(e) => return Err(e.context(format!("resetting {topic}/{p}"))),
            }
        }
        if !elsewhere.is_empty() {
            bail!(
                "partitions {elsewhere:?} of `{topic}` are owned by other members of group `{}`: run the reset against the member that owns them (`status` shows it), or stop every member and run it again",
                config.group
            );
        }
        return Ok(());
    }
    drop(access);
    for (p, from, to) in crate::kafka::reset::reset(source, &config.group, topic, partition, to)? {
        let from = from.map_or("none".to_owned(), |f| f.to_string());
        outln!("{topic}/{p}: group offset {from} -> {to}");
    }
    eprintln!(
        "members rebuild the state of these partitions from the changelog as of the new offsets when they next take them"
    );
    Ok(())
}

fn embedded(config: Config, command: &str) -> anyhow::Result<Config> {
    match &config.source {
        crate::config::Source::Embedded => Ok(config),
        crate::config::Source::Kafka(k) => anyhow::bail!(
            "`linecook {command}` works on the embedded log, but this config's source is the Kafka cluster at {}; use Kafka's own tools (kafka-topics, kafka-console-producer/consumer)",
            k.brokers
        ),
    }
}

/// Parses the command line and runs the command.
pub fn main() -> anyhow::Result<()> {
    let Cli {
        log_format,
        color,
        config,
        command,
    } = Cli::parse();
    let _telemetry = crate::telemetry::init_tracing(log_format, color)?;
    match command {
        Command::Run => run(&load(&config)?),
        Command::Topics {
            command: TopicsCommand::Create { name, partitions },
        } => {
            let access = Access::connect(&embedded(load(&config)?, "topics create")?)?;
            let topic = access.create_topic(&name, partitions)?;
            eprintln!(
                "topic `{}` has {} partition{}",
                topic.name,
                topic.partitions,
                if topic.partitions == 1 { "" } else { "s" }
            );
            Ok(())
        }
        Command::Topics {
            command: TopicsCommand::List,
        } => {
            let access = Access::connect(&embedded(load(&config)?, "topics list")?)?;
            outln!(
                "{:<24} {:>10} {:>16} {:>12} {:>12} {:>12}",
                "TOPIC",
                "PARTITIONS",
                "LOG START",
                "STORED",
                "BYTES",
                "RECORDS"
            );
            for t in access.topics()? {
                let total: u64 = t.end_offsets.iter().sum();
                let removed: u64 = t.start_offsets.iter().sum();
                outln!(
                    "{:<24} {:>10} {:>16} {:>12} {:>12} {:>12}",
                    t.name,
                    t.partitions,
                    commands::log_starts(&t.start_offsets),
                    total - removed,
                    t.bytes.iter().sum::<u64>(),
                    total
                );
            }
            Ok(())
        }
        Command::Produce {
            topic,
            key_separator,
            format,
        } => produce(
            &embedded(load(&config)?, "produce")?,
            &topic,
            key_separator.as_deref(),
            format,
        ),
        Command::Tail {
            topic,
            from_beginning,
            max_records,
            follow,
            headers,
        } => tail(
            &embedded(load(&config)?, "tail")?,
            &topic,
            from_beginning,
            max_records,
            follow,
            headers,
        ),
        Command::Status { json, watch } => {
            let config = load(&config)?;
            if watch {
                loop {
                    // Reconnect each round: the host may start or stop meanwhile.
                    let report = Access::connect(&config)?.status(&config)?;
                    out!("\x1b[2J\x1b[H");
                    outln!(
                        "{}",
                        humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                    );
                    print_status(&report);
                    std::io::stdout().flush()?;
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
            let report = Access::connect(&config)?.status(&config)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_status(&report);
            }
            Ok(())
        }
        Command::Partitions {
            command: PartitionsCommand::Resume { topic, partition },
        } => {
            Access::connect(&load(&config)?)?.resume(&topic, partition)?;
            eprintln!("{topic}/{partition} resumes: it retries the batch it stopped at");
            Ok(())
        }
        Command::Plugins {
            command:
                PluginsCommand::Check {
                    file,
                    set,
                    route,
                    mut trusted_keys,
                },
        } => {
            let mut init = output::CheckInit {
                config: Vec::new(),
                limits: crate::config::Limits::default(),
                given: !set.is_empty() || route.is_some(),
            };
            if let Some(topic) = route {
                let config = load(&config)?;
                trusted_keys.extend(config.trusted_keys.iter().cloned());
                let route = config
                    .routes
                    .iter()
                    .find(|r| r.topic == topic)
                    .with_context(|| format!("the config routes no topic `{topic}`"))?;
                init.config = route.plugin_config();
                init.limits = route.limits;
            }
            for entry in set {
                let (k, v) = entry
                    .split_once('=')
                    .with_context(|| format!("--set {entry}: expected KEY=VALUE"))?;
                init.config.retain(|(key, _)| key != k);
                init.config.push((k.to_owned(), v.to_owned()));
            }
            if !trusted_keys.is_empty() {
                let trust = crate::plugins::trust::Trust::parse(&trusted_keys)
                    .map_err(anyhow::Error::msg)?;
                let bytes =
                    std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                let mut sig = file.as_os_str().to_owned();
                sig.push(".sig");
                let signature = std::fs::read_to_string(PathBuf::from(sig)).ok();
                trust.verify(&bytes, signature.as_deref()).map_err(|e| {
                    Exit::new(
                        Exit::UNTRUSTED,
                        anyhow::anyhow!("{} is not trusted: {e}", file.display()),
                    )
                })?;
                eprintln!("signature ok: signed by a trusted key");
            }
            check_plugin(&file, init)
        }
        Command::Plugins {
            command: PluginsCommand::Keygen { out },
        } => {
            let (secret, public) = crate::plugins::trust::keygen();
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut f = options
                .open(&out)
                .with_context(|| format!("creating {} (it must not exist)", out.display()))?;
            std::io::Write::write_all(&mut f, secret.as_bytes())
                .with_context(|| format!("writing {}", out.display()))?;
            eprintln!(
                "wrote the secret key to {}; add the public key to trusted_keys:",
                out.display()
            );
            outln!("{public}");
            Ok(())
        }
        Command::Plugins {
            command: PluginsCommand::Sign { file, key },
        } => {
            let secret = std::fs::read_to_string(&key)
                .with_context(|| format!("reading {}", key.display()))?;
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let (signature, public) =
                crate::plugins::trust::sign(&secret, &bytes).map_err(anyhow::Error::msg)?;
            let mut sig = file.as_os_str().to_owned();
            sig.push(".sig");
            let sig = PathBuf::from(sig);
            std::fs::write(&sig, signature)
                .with_context(|| format!("writing {}", sig.display()))?;
            eprintln!("wrote {} (verifies with {public})", sig.display());
            Ok(())
        }
        Command::Partitions {
            command:
                PartitionsCommand::Reset {
                    topic,
                    partition,
                    to_offset,
                    to_timestamp,
                    to_earliest,
                    to_latest,
                    state,
                },
        } => {
            let config = load(&config)?;
            use crate::checkpoint::ResetTo;
            let to = match (to_offset, to_timestamp, to_earliest, to_latest) {
                (Some(o), ..) => ResetTo::Offset(o),
                (_, Some(ms), ..) => ResetTo::Timestamp(ms),
                (_, _, true, _) => ResetTo::Earliest,
                (_, _, _, true) => ResetTo::Latest,
                _ => {
                    bail!("say where to: --to-offset, --to-timestamp, --to-earliest or --to-latest")
                }
            };
            if let crate::config::Source::Kafka(source) = &config.source {
                return reset_kafka(&config, source, &topic, partition, to, state);
            }
            let access = Access::connect(&config)?;
            let info = access.topic(&topic)?;
            let partitions: Vec<u32> = match partition {
                Some(p) if p < info.partitions => vec![p],
                Some(p) => bail!(
                    "topic `{topic}` has {} partitions; there is no {p}",
                    info.partitions
                ),
                None => (0..info.partitions).collect(),
            };
            let state = match state.unwrap_or(ResetStateArg::Keep) {
                ResetStateArg::Keep => crate::checkpoint::ResetState::Keep,
                ResetStateArg::Clear => crate::checkpoint::ResetState::Clear,
            };
            for p in partitions {
                let (from, to) = access.reset(&topic, p, to, state)?;
                outln!(
                    "{topic}/{p}: {from} -> {to} ({}; state {})",
                    match to.cmp(&from) {
                        std::cmp::Ordering::Less =>
                            format!("{} records will be handled again", from - to),
                        std::cmp::Ordering::Greater => format!("{} records skipped", to - from),
                        std::cmp::Ordering::Equal => "unchanged".to_owned(),
                    },
                    match state {
                        crate::checkpoint::ResetState::Keep => "kept",
                        crate::checkpoint::ResetState::Clear => "cleared",
                    }
                );
            }
            Ok(())
        }
        Command::Plugins {
            command: PluginsCommand::Diff { name, json },
        } => {
            let config = load(&config)?;
            let report = Access::connect(&config)?.status(&config)?;
            output::print_shadow_diff(&report, &name, json)
        }
        Command::Plugins {
            command: PluginsCommand::List { json },
        } => {
            let config = load(&config)?;
            let report = Access::connect(&config)?.status(&config)?;
            list_plugins(&config, &report, json)
        }
        Command::ConfigHelp => {
            out!("{}", EXAMPLE_CONFIG);
            Ok(())
        }
        Command::New {
            name,
            lang,
            dir,
            sdk,
        } => {
            let root = crate::scaffold::new_project(&name, lang, &dir, sdk.as_deref())?;
            eprintln!(
                "created {root}; next:\n  cd {root} && ./build.sh && linecook plugins check {name}.wasm --set output=out && linecook test test.toml",
                root = root.display()
            );
            Ok(())
        }
        Command::Sdk { command } => sdk(command),
        Command::Wit { contract, out_dir } => {
            use crate::runtime::Contract;
            let contracts = match contract {
                Some(c) => vec![Contract::from(c)],
                None => vec![Contract::V0_1, Contract::V0_2],
            };
            for contract in contracts {
                let text = crate::sdk::wit(contract);
                match &out_dir {
                    Some(dir) => {
                        let dir = dir.join(contract.version());
                        std::fs::create_dir_all(&dir)
                            .with_context(|| format!("creating {}", dir.display()))?;
                        let path = dir.join("handler.wit");
                        std::fs::write(&path, text)
                            .with_context(|| format!("writing {}", path.display()))?;
                        eprintln!("wrote {}", path.display());
                    }
                    None => outln!("// linecook:handler@{contract}\n{text}"),
                }
            }
            Ok(())
        }
        Command::Replay {
            plugin,
            topic,
            partition,
            from_offset,
            from_timestamp,
            to_offset,
            set,
            state,
            against,
            json,
        } => {
            let config = load(&config)?;
            let mut init: Vec<(String, String)> = config
                .routes
                .iter()
                .find(|r| r.topic == topic)
                .map(|r| r.plugin_config())
                .unwrap_or_default();
            for entry in set {
                let (k, v) = entry
                    .split_once('=')
                    .with_context(|| format!("--set {entry}: expected KEY=VALUE"))?;
                init.retain(|(key, _)| key != k);
                init.push((k.to_owned(), v.to_owned()));
            }
            let request = crate::replay::Request {
                plugin: &plugin,
                config: init,
                topic: &topic,
                partition,
                from_offset,
                from_timestamp,
                to_offset,
                max_batch: config.max_batch as usize,
                state: match state {
                    ReplayStateArg::Empty => crate::replay::StartState::Empty,
                    ReplayStateArg::Current => crate::replay::StartState::Current,
                },
            };
            let access = Access::connect(&config)?;
            let mut kafka;
            let mut embedded_log;
            let records: &mut dyn crate::replay::Records = match &config.source {
                crate::config::Source::Kafka(source) => {
                    kafka = crate::kafka::replay::TopicReader::new(source)?;
                    &mut kafka
                }
                crate::config::Source::Embedded => {
                    embedded_log = &access;
                    &mut embedded_log
                }
            };
            if let Some(against) = against {
                let baseline = match against.as_str() {
                    "log" => Baseline::Log,
                    "active" => Baseline::File(active_version_file(&config, &access, &topic)?),
                    file => Baseline::File(PathBuf::from(file)),
                };
                return replay_against(&access, records, request, baseline, json);
            }
            let summary = crate::replay::replay(
                &access,
                records,
                &request,
                |line| {
                    outln!("{}", serde_json::to_string(&line)?);
                    Ok(())
                },
                |failure| eprintln!("linecook replay: {failure}"),
            )?;
            eprintln!(
                "replayed {} records of `{topic}`: {} outputs, {} failed calls; nothing was committed",
                summary.records, summary.outputs, summary.failures
            );
            if summary.failures > 0 {
                bail!("{} calls failed (see above)", summary.failures);
            }
            Ok(())
        }
        Command::Test { fixtures, update } => {
            if crate::fixture::test_all(&fixtures, update, |line| outln!("{line}"))? {
                Ok(())
            } else {
                bail!("not every fixture passed (see above)")
            }
        }
        Command::Dlq { command } => dlq(&embedded(load(&config)?, "dlq")?, command),
    }
}

/// The dead-letter topic `topic` names: its route's, if it is routed.
fn dead_letter_topic(config: &Config, topic: &str) -> String {
    config
        .routes
        .iter()
        .find(|r| r.topic == topic)
        .map_or_else(|| topic.to_owned(), |r| r.dead_letter_topic())
}

fn dlq(config: &Config, command: DlqCommand) -> anyhow::Result<()> {
    let access = Access::connect(config)?;
    match command {
        DlqCommand::List { topic, json } => {
            let dlq = dead_letter_topic(config, &topic);
            let letters = access.dead_letters(&dlq)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&letters)?);
            } else {
                output::print_dead_letters(&dlq, &letters);
            }
            Ok(())
        }
        DlqCommand::Replay {
            topic,
            to,
            filter,
            dry_run,
        } => {
            let dlq = dead_letter_topic(config, &topic);
            let filter = filter
                .iter()
                .map(|f| {
                    f.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .with_context(|| format!("--where {f}: expected NAME=VALUE"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let report = access.replay(&dlq, to.as_deref(), filter, dry_run)?;
            for ((p, o), (topic, tp, to)) in &report.replayed {
                outln!(
                    "{dlq}/{p}/{o} -> {topic}/{tp}/{to}{}",
                    if dry_run { " (dry run)" } else { "" }
                );
            }
            eprintln!(
                "{} {} dead letter(s) of `{dlq}`; {} replayed before, {} not matching",
                if dry_run { "would replay" } else { "replayed" },
                report.replayed.len(),
                report.already_replayed,
                report.not_matching
            );
            Ok(())
        }
    }
}

fn sdk(command: SdkCommand) -> anyhow::Result<()> {
    match command {
        SdkCommand::Wit {
            out_dir: None,
            contract,
        } => {
            out!("{}", crate::sdk::wit(contract.into()));
            Ok(())
        }
        SdkCommand::Wit {
            out_dir: Some(dir),
            contract,
        } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let path = dir.join("handler.wit");
            std::fs::write(&path, crate::sdk::wit(contract.into()))
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
            Ok(())
        }
        SdkCommand::CBindings {
            out_dir,
            contract,
            packed,
        } => {
            let names = crate::sdk::write_c_bindings(&out_dir, contract.into(), packed)?;
            eprintln!("wrote {} into {}", names.join(", "), out_dir.display());
            Ok(())
        }
        SdkCommand::Componentize {
            core,
            output,
            contract,
            renames,
        } => {
            let bytes =
                std::fs::read(&core).with_context(|| format!("reading {}", core.display()))?;
            let component = crate::sdk::componentize_renamed(&bytes, contract.into(), &renames)
                .with_context(|| format!("{} cannot be made a component", core.display()))?;
            std::fs::write(&output, &component)
                .with_context(|| format!("writing {}", output.display()))?;
            eprintln!("wrote {} ({} bytes)", output.display(), component.len());
            Ok(())
        }
    }
}

/// The annotated example config: `config-help` prints it, the README points
/// at it, and a test parses it.
const EXAMPLE_CONFIG: &str = include_str!("../../../docs/linecook.example.toml");

fn load(arg: &ConfigArg) -> anyhow::Result<Config> {
    Ok(Config::load(&arg.config)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("linecook.toml");
        std::fs::write(&path, EXAMPLE_CONFIG).unwrap();
        Config::load(&path).unwrap();
    }
}
