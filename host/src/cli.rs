//! The `linecook` command line.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::client::Access;
use crate::config::Config;
use crate::plugins::short;
use crate::record::{LogRecord, NewRecord};
use crate::runtime::Runtime;
use crate::status::StatusReport;

/// `println!` for command output. A reader that went away (`| head`) ends
/// the command quietly with success, as `cat` does, instead of a panic.
macro_rules! outln {
    () => { write_out(format_args!("\n")) };
    ($($arg:tt)*) => { write_out(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` for command output; see `outln!`.
macro_rules! out {
    ($($arg:tt)*) => { write_out(format_args!($($arg)*)) };
}

fn write_out(args: std::fmt::Arguments<'_>) {
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        exit_on_write_error(&e);
    }
}

/// Ends the process after a failed write to standard output: quietly with
/// success when the reader closed the pipe, with the error otherwise.
fn exit_on_write_error(e: &std::io::Error) -> ! {
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

/// Records per produce transaction / request.
const PRODUCE_CHUNK: usize = 1000;
/// Records per read while tailing.
const TAIL_CHUNK: usize = 1000;

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

Logging: RUST_LOG=debug (or e.g. RUST_LOG=linecook=debug,linecook::guest=trace)."
)]
pub struct Cli {
    /// Log format on standard error: `pretty` for people, `json` for log
    /// pipelines. The level comes from RUST_LOG (default info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty)]
    log_format: LogFormat,
    #[command(flatten)]
    config: ConfigArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
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
    /// Append records to a topic: each line of standard input is one record's value.
    ///
    /// Keyed records go to the partition Kafka's default partitioner would
    /// pick; keyless records are spread round-robin.
    Produce {
        /// Topic to append to.
        #[arg(long)]
        topic: String,
        /// Split each line at the first SEP: the text before is the key, the rest the value.
        #[arg(long, value_name = "SEP")]
        key_separator: Option<String>,
    },
    /// Print a topic's records as JSON lines:
    /// {"topic","partition","offset","key","value","timestamp_ms"}.
    ///
    /// Keys and values print as strings when they are UTF-8, else as
    /// {"base64": "..."}; a missing key prints as null. Records are printed
    /// partition by partition, each in offset order.
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
    /// Operate on partitions of a running host.
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
        /// Rust only: path of linecook's guest-sdk directory (defaults to
        /// where it was when this binary was built).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// What a handler build needs from the contract, with no other tool
    /// installed: the WIT, C bindings, and core module -> component.
    Sdk {
        #[command(subcommand)]
        command: SdkCommand,
    },
}

#[derive(Debug, Subcommand)]
enum SdkCommand {
    /// Print the WIT contract (`linecook:handler`) this binary checks modules
    /// against; with --out-dir, write it there as handler.wit.
    Wit {
        /// Directory to write handler.wit into.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// Write C bindings for the handler world (handler.h, handler.c and
    /// handler_component_type.o) into DIR: compile and link all three with
    /// your handler, then `linecook sdk componentize`.
    CBindings {
        /// Directory to write the bindings into (created if missing).
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
    },
    /// Make a component of a core WebAssembly module (from clang, zig, asc…)
    /// that exports the handler world's functions: embeds the world unless
    /// the module carries it already, encodes and validates the component.
    Componentize {
        /// The core module.
        core: PathBuf,
        /// Where to write the component.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
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
    /// List topics with their partitions and end offsets.
    List,
}

#[derive(Debug, Subcommand)]
enum PartitionsCommand {
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
    /// Check that FILE is a component of the linecook:handler world, without a
    /// running host. Prints its digest, imports and exports; exits non-zero
    /// with the reason if it is not usable.
    Check {
        /// The .wasm file.
        file: PathBuf,
    },
}

/// `config` if its source is the embedded log: commands that read or write
/// the embedded log mean nothing against a Kafka cluster.
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
        config,
        command,
    } = Cli::parse();
    let _telemetry = init_tracing(log_format)?;
    match command {
        Command::Run => run(&load(&config)?),
        Command::Topics {
            command: TopicsCommand::Create { name, partitions },
        } => {
            let access = Access::connect(&embedded(load(&config)?, "topics create")?)?;
            let topic = access.create_topic(&name, partitions)?;
            eprintln!("topic `{}` has {} partitions", topic.name, topic.partitions);
            Ok(())
        }
        Command::Topics {
            command: TopicsCommand::List,
        } => {
            let access = Access::connect(&embedded(load(&config)?, "topics list")?)?;
            outln!("{:<24} {:>10} {:>12}", "TOPIC", "PARTITIONS", "RECORDS");
            for t in access.topics()? {
                let total: u64 = t.end_offsets.iter().sum();
                outln!("{:<24} {:>10} {:>12}", t.name, t.partitions, total);
            }
            Ok(())
        }
        Command::Produce {
            topic,
            key_separator,
        } => produce(
            &embedded(load(&config)?, "produce")?,
            &topic,
            key_separator.as_deref(),
        ),
        Command::Tail {
            topic,
            from_beginning,
            max_records,
            follow,
        } => tail(
            &embedded(load(&config)?, "tail")?,
            &topic,
            from_beginning,
            max_records,
            follow,
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
            eprintln!("asked {topic}/{partition} to resume");
            Ok(())
        }
        Command::Plugins {
            command: PluginsCommand::Check { file },
        } => check_plugin(&file),
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
                "created {root}; next:\n  cd {root} && ./build.sh && linecook plugins check {name}.wasm",
                root = root.display()
            );
            Ok(())
        }
        Command::Sdk { command } => sdk(command),
    }
}

fn sdk(command: SdkCommand) -> anyhow::Result<()> {
    match command {
        SdkCommand::Wit { out_dir: None } => {
            out!("{}", crate::sdk::WIT);
            Ok(())
        }
        SdkCommand::Wit { out_dir: Some(dir) } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let path = dir.join("handler.wit");
            std::fs::write(&path, crate::sdk::WIT)
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
            Ok(())
        }
        SdkCommand::CBindings { out_dir } => {
            let names = crate::sdk::write_c_bindings(&out_dir)?;
            eprintln!("wrote {} into {}", names.join(", "), out_dir.display());
            Ok(())
        }
        SdkCommand::Componentize { core, output } => {
            let bytes =
                std::fs::read(&core).with_context(|| format!("reading {}", core.display()))?;
            let component = crate::sdk::componentize(&bytes)
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
const EXAMPLE_CONFIG: &str = include_str!("../../docs/linecook.example.toml");

fn load(arg: &ConfigArg) -> anyhow::Result<Config> {
    Ok(Config::load(&arg.config)?)
}

/// Flushes exported spans when dropped, at exit.
struct Telemetry {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

fn init_tracing(format: LogFormat) -> anyhow::Result<Telemetry> {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal: a log file or a pipe gets
    // plain text, and NO_COLOR (any value) turns it off everywhere.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let log = match format {
        LogFormat::Pretty => fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(colour)
            .with_target(false)
            .boxed(),
        // One JSON object per line, with the fields of every enclosing span
        // (partition, batch) so a guest's log line carries its offsets.
        LogFormat::Json => fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let registry = tracing_subscriber::registry().with(filter).with(log);
    #[cfg(feature = "otlp")]
    {
        let (layer, provider) = match std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT") {
            Some(_) => {
                let (layer, provider) = otlp_layer()?;
                (Some(layer), Some(provider))
            }
            None => (None, None),
        };
        registry.with(layer).init();
        Ok(Telemetry { provider })
    }
    #[cfg(not(feature = "otlp"))]
    {
        registry.init();
        Ok(Telemetry {})
    }
}

/// Spans exported over OTLP/HTTP to `OTEL_EXPORTER_OTLP_ENDPOINT`, batched
/// on a background thread.
#[cfg(feature = "otlp")]
fn otlp_layer<S>() -> anyhow::Result<(
    impl tracing_subscriber::Layer<S>,
    opentelemetry_sdk::trace::SdkTracerProvider,
)>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    use opentelemetry::trace::TracerProvider as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .context("building the OTLP span exporter")?;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("linecook")
                .build(),
        )
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("linecook"));
    Ok((layer, provider))
}

fn run(config: &Config) -> anyhow::Result<()> {
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

fn produce(config: &Config, topic: &str, key_separator: Option<&str>) -> anyhow::Result<()> {
    if key_separator == Some("") {
        bail!("--key-separator must not be empty");
    }
    let access = Access::connect(config)?;
    // Fail before reading stdin if the topic does not exist.
    access.topic(topic)?;
    let stdin = std::io::stdin().lock();
    let mut chunk = Vec::with_capacity(PRODUCE_CHUNK);
    let mut total = 0usize;
    for line in stdin.split(b'\n') {
        let mut line = line.context("reading standard input")?;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        chunk.push(split_line(line, key_separator));
        if chunk.len() == PRODUCE_CHUNK {
            total += access.produce(topic, std::mem::take(&mut chunk))?.len();
        }
    }
    if !chunk.is_empty() {
        total += access.produce(topic, chunk)?.len();
    }
    eprintln!("produced {total} records to `{topic}`");
    Ok(())
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
        key,
        value,
        headers: Vec::new(),
        partition: None,
    }
}

fn tail(
    config: &Config,
    topic: &str,
    from_beginning: bool,
    max_records: Option<u64>,
    follow: bool,
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
                    writeln!(out, "{}", record_json(topic, record))?;
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

fn bytes_json(bytes: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => json!(s),
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(bytes) }),
    }
}

/// One line of `tail` output; fields in the documented order.
#[derive(serde::Serialize)]
struct TailLine<'a> {
    topic: &'a str,
    partition: u32,
    offset: u64,
    key: Option<serde_json::Value>,
    value: serde_json::Value,
    timestamp_ms: i64,
}

fn record_json(topic: &str, r: &LogRecord) -> String {
    let line = TailLine {
        topic,
        partition: r.partition,
        offset: r.offset,
        key: r.key.as_deref().map(bytes_json),
        value: bytes_json(&r.value),
        timestamp_ms: r.timestamp_ms,
    };
    serde_json::to_string(&line).expect("JSON of plain values")
}

fn print_status(report: &StatusReport) {
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
        "{:<20} {:>4} {:>10} {:>10} {:>8} {:>9}  {:<14} {:<12}  STATE",
        "TOPIC",
        "PART",
        "COMMITTED",
        "END",
        "LAG",
        "REC/S",
        "PLUGIN",
        "VERSION"
    );
    for p in &report.partitions {
        let state = match (&p.state, &p.detail) {
            (Some(s), Some(d)) => format!("{s}: {d}"),
            (Some(s), None) => s.to_string(),
            (None, _) => "-".to_owned(),
        };
        outln!(
            "{:<20} {:>4} {:>10} {:>10} {:>8} {:>9.0}  {:<14} {:<12}  {}",
            p.topic,
            p.partition,
            p.committed_offset,
            p.end_offset,
            p.lag,
            p.records_per_sec,
            p.plugin,
            p.version.as_deref().map(short).unwrap_or("-"),
            state
        );
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
        }
    }
}

fn list_plugins(config: &Config, report: &StatusReport, json: bool) -> anyhow::Result<()> {
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
                "  {:<12}  {:<11}  seen {}  {}{}",
                short(&v.digest),
                v.state.to_string(),
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

fn check_plugin(file: &std::path::Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let runtime = Runtime::new()?;
    let (imports, exports) = runtime
        .describe(&bytes)
        .with_context(|| format!("{} is not a usable plugin", file.display()))?;
    runtime
        .prepare(&bytes)
        .with_context(|| format!("{} is not a usable plugin", file.display()))?;
    outln!("{}: ok, a linecook:handler component", file.display());
    outln!("digest  {}", crate::plugins::digest(&bytes));
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

    #[test]
    fn key_separator_splits_at_the_first_occurrence() {
        let r = split_line(b"k:v:w".to_vec(), Some(":"));
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(r.value, b"v:w");
        let r = split_line(b"novalue".to_vec(), Some(":"));
        assert_eq!(r.key, None);
        assert_eq!(r.value, b"novalue");
    }

    #[test]
    fn non_utf8_bytes_print_as_base64() {
        assert_eq!(bytes_json(b"hi"), json!("hi"));
        assert_eq!(bytes_json(&[0xff]), json!({"base64": "/w=="}));
    }

    #[test]
    fn the_example_config_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("linecook.toml");
        std::fs::write(&path, EXAMPLE_CONFIG).unwrap();
        Config::load(&path).unwrap();
    }
}
