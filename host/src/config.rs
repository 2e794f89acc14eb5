//! `linecook.toml`: what the host runs, parsed strictly and validated before
//! anything starts. `docs/linecook.example.toml` (what `linecook config-help`
//! prints) is an annotated example; every field is documented below.
//!
//! Relative paths are resolved against the directory of the config file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::log::{validate_partitions, validate_topic_name};

/// Most records one `handle` call may receive; bounds host memory per batch.
pub const MAX_BATCH_LIMIT: u32 = 100_000;
/// librdkafka properties linecook sets from its own settings (or must own
/// for its guarantees); `[source.properties]` may not override them.
pub const MANAGED_KAFKA_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "group.id",
    "group.instance.id",
    "group.protocol",
    "partition.assignment.strategy",
    "session.timeout.ms",
    "auto.offset.reset",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.idempotence",
    "acks",
];

/// The least `limits.cpu_ms`: the CPU limit is enforced by an epoch timer
/// that ticks every few milliseconds, so a smaller limit would be noise.
pub const MIN_CPU_MS: u64 = 10;

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {error}{hint}", hint = if error.kind() == std::io::ErrorKind::NotFound {
        " (write an annotated one with `linecook config-help > linecook.toml`, or name another with --config)"
    } else {
        ""
    })]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// What the parser said, with line and column.
        message: String,
    },
    /// The file parsed but describes something that cannot run.
    #[error("invalid config {path}: {message}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// Which setting is wrong, and why.
        message: String,
    },
}

/// The host configuration (`linecook.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Consumer group this member belongs to. Offsets are tracked per group.
    pub group: String,
    /// Directory holding the redb file (log, state, checkpoints). Created if missing.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Directory of plugins: `<name>.wasm` components of the `linecook:handler` world.
    #[serde(default = "default_plugins_dir")]
    pub plugins_dir: PathBuf,
    /// Most records handed to one `handle` call (1 to 100000).
    #[serde(default = "default_max_batch")]
    pub max_batch: u32,
    /// Most memory, in MiB, the store keeps of its file (1 to 65536;
    /// default 64). The kernel's page cache holds the rest of the file.
    #[serde(default = "default_store_cache_mb")]
    pub store_cache_mb: u64,
    /// Threads that run partitions' handlers (1 to 256); default: one per
    /// core. Every owned partition is a task on them, however many there are.
    #[serde(default)]
    pub worker_threads: Option<usize>,
    /// Address of the admin HTTP API; keep it on loopback. Port 0 picks a free
    /// port, which the running host writes to `<data_dir>/admin.addr`. On any
    /// other address the host refuses to start without `admin_token_file`.
    #[serde(default = "default_admin")]
    pub admin: SocketAddr,
    /// A file holding the admin API's bearer token. When set, every request
    /// but `GET /` (the status page), `/healthz`, `/metrics` and `/status` must carry
    /// `Authorization: Bearer <token>` (the CLI sends it); others get 401
    /// and change nothing.
    #[serde(default)]
    pub admin_token_file: Option<PathBuf>,
    /// Serve the admin API over TLS (rustls): `{ cert_file, key_file }`,
    /// PEM. The CLI trusts exactly `cert_file`. The `metrics` listener has
    /// its own, `metrics_tls`.
    #[serde(default)]
    pub admin_tls: Option<AdminTls>,
    /// An extra listener serving only `GET /` (the status page), `/healthz`, `/metrics` and
    /// `/status`, e.g. `"0.0.0.0:9464"` for a Prometheus on another host,
    /// while `admin` stays on loopback.
    #[serde(default)]
    pub metrics: Option<SocketAddr>,
    /// Serve the `metrics` listener over TLS only: `{ cert_file, key_file }`
    /// (PEM), like `admin_tls`; the certificate may be another one.
    #[serde(default)]
    pub metrics_tls: Option<AdminTls>,
    /// Signed plugins: when set, a version is accepted only with
    /// `<name>.wasm.sig` beside it, signed by one of these keys
    /// (`ed25519:<base64>`, from `linecook plugins keygen`).
    #[serde(default)]
    pub trusted_keys: Vec<String>,
    /// Embedded topics to create at start if they do not exist.
    #[serde(default, rename = "topic")]
    pub topics: Vec<TopicConfig>,
    /// Retention of the embedded log: the default for every topic (outputs
    /// and dead letters too), overridden per `[[topic]]`. Unset: records
    /// are kept forever.
    #[serde(default)]
    pub retention: Retention,
    /// Where records come from: the embedded log (default) or Kafka.
    #[serde(default)]
    pub source: Source,
    /// Routes: which plugin handles which topic.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// The file this config was read from (empty when not read from one).
    #[serde(skip)]
    pub path: PathBuf,
}

/// `admin_tls` and `metrics_tls`: a listener's certificate chain and private
/// key (PEM).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminTls {
    /// Certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// The leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// Where records come from and outputs go.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase", tag = "kind")]
pub enum Source {
    /// The embedded log in the data directory; this process is the only member.
    #[default]
    Embedded,
    /// A Kafka (or any Kafka-protocol) cluster; this process is one member of
    /// a real consumer group named by `group`.
    Kafka(KafkaSource),
}

/// `[source] kind = "kafka"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSource {
    /// Bootstrap servers, `host:port,host:port`.
    pub brokers: String,
    /// Partition assignment strategy of the classic protocol.
    #[serde(default)]
    pub assignment: Assignment,
    /// `classic` (JoinGroup/SyncGroup) or `consumer` (KIP-848, assignment by the broker).
    #[serde(default)]
    pub group_protocol: GroupProtocol,
    /// Static membership (`group.instance.id`): a restart within the session
    /// timeout keeps the assignment instead of rebalancing.
    #[serde(default)]
    pub group_instance_id: Option<String>,
    /// Session timeout in milliseconds (classic protocol only).
    #[serde(default = "default_session_timeout_ms")]
    pub session_timeout_ms: u32,
    /// Where a partition with neither a local checkpoint nor a committed group
    /// offset starts: `earliest` or `latest`.
    #[serde(default)]
    pub auto_offset_reset: OffsetReset,
    /// How long a revocation may take to finish the batch in flight, deliver
    /// its outputs and commit its offset, in milliseconds.
    #[serde(default = "default_revoke_timeout_ms")]
    pub revoke_timeout_ms: u64,
    /// How often delivered progress is committed to the group, in milliseconds.
    #[serde(default = "default_commit_interval_ms")]
    pub commit_interval_ms: u64,
    /// librdkafka properties passed to every client (consumer, producer,
    /// admin) as they are: `security.protocol`, `sasl.*`, `ssl.*`, ...
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// Partition assignment strategy (classic protocol).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Assignment {
    /// Incremental: only moved partitions stop during a rebalance.
    #[default]
    CooperativeSticky,
    /// Eager: every partition is revoked and reassigned.
    Range,
    /// Eager, round robin.
    Roundrobin,
}

impl Assignment {
    /// librdkafka's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Assignment::CooperativeSticky => "cooperative-sticky",
            Assignment::Range => "range",
            Assignment::Roundrobin => "roundrobin",
        }
    }
}

/// Consumer group protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupProtocol {
    /// JoinGroup/SyncGroup with client-side assignment.
    #[default]
    Classic,
    /// KIP-848: the broker assigns partitions.
    Consumer,
}

/// Where to start without any stored position.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OffsetReset {
    /// From the oldest record still in the partition.
    #[default]
    Earliest,
    /// From records produced after the assignment.
    Latest,
}

fn default_session_timeout_ms() -> u32 {
    10_000
}
fn default_revoke_timeout_ms() -> u64 {
    30_000
}
fn default_commit_interval_ms() -> u64 {
    500
}

/// An embedded topic declared in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// Topic name.
    pub name: String,
    /// Number of partitions (1 to 4096). Fixed once the topic exists.
    pub partitions: u32,
    /// Remove records older than this (ms, by record timestamp); overrides
    /// `[retention] ms`.
    #[serde(default)]
    pub retention_ms: Option<u64>,
    /// Remove the oldest records while a partition holds more than this
    /// many bytes; overrides `[retention] bytes`.
    #[serde(default)]
    pub retention_bytes: Option<u64>,
}

impl TopicConfig {
    /// The topic's retention: its own settings, else the default's.
    pub fn retention(&self, default: &Retention) -> RetentionPolicy {
        RetentionPolicy {
            ms: self.retention_ms.or(default.ms),
            bytes: self.retention_bytes.or(default.bytes),
        }
    }
}

/// `[retention]`: how long the embedded log keeps records.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Remove records older than this many milliseconds (by record
    /// timestamp), from the start of each partition.
    #[serde(default)]
    pub ms: Option<u64>,
    /// Remove a partition's oldest records while it holds more than this
    /// many bytes.
    #[serde(default)]
    pub bytes: Option<u64>,
    /// How often retention runs, in milliseconds.
    #[serde(default = "default_retention_check_ms")]
    pub check_interval_ms: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            ms: None,
            bytes: None,
            check_interval_ms: default_retention_check_ms(),
        }
    }
}

impl Retention {
    /// The default policy.
    pub fn policy(&self) -> RetentionPolicy {
        RetentionPolicy {
            ms: self.ms,
            bytes: self.bytes,
        }
    }
}

fn default_retention_check_ms() -> u64 {
    5_000
}

/// What one topic keeps: records younger than `ms`, at most `bytes` per
/// partition. `None` limits nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Age limit in milliseconds.
    pub ms: Option<u64>,
    /// Size limit per partition in bytes.
    pub bytes: Option<u64>,
}

impl RetentionPolicy {
    /// Whether the policy ever removes anything.
    pub fn removes(self) -> bool {
        self.ms.is_some() || self.bytes.is_some()
    }
}

/// `shadow_compare`: what a shadow comparison overlooks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowCompare {
    /// Compare each batch's outputs as sorted lists: their order does not
    /// count.
    #[serde(default)]
    pub unordered: bool,
    /// Headers left out of the comparison (a request id, a timestamp).
    #[serde(default)]
    pub ignore_headers: Vec<String>,
}

/// What a route does when retention removed records it had not handled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnTruncated {
    /// Retention waits: it never removes a record this route has not
    /// committed (the log grows while the route is stopped or behind).
    #[default]
    Wait,
    /// Retention may pass the route; the route then skips to the log start
    /// and reports how many records it skipped.
    Earliest,
    /// Retention may pass the route; the route then pauses, saying how many
    /// records are gone, until an operator resets or resumes it.
    Pause,
}

/// A route binds a topic to a plugin: every owned partition of the topic gets
/// its own instance of the plugin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Source topic.
    pub topic: String,
    /// Plugin name: `<plugins_dir>/<plugin>.wasm`.
    pub plugin: String,
    /// Settings handed to the plugin's `init` as string pairs. Values may be
    /// strings, numbers or booleans.
    #[serde(default)]
    pub config: BTreeMap<String, toml::Value>,
    /// How a new plugin version reaches the route's partitions: `"all"`
    /// (default) or `{ canary = N, promote_after_batches = M }`.
    #[serde(default)]
    pub rollout: Rollout,
    /// What one batch of one instance may use.
    #[serde(default)]
    pub limits: Limits,
    /// What happens when a batch fails.
    #[serde(default)]
    pub errors: ErrorPolicy,
    /// How far the partition's event-time watermark trails the highest
    /// record timestamp handled, in milliseconds (contract 0.2.0 timers).
    #[serde(default)]
    pub allowed_lateness_ms: u64,
    /// Time to live of state written with plain `state.set`, in
    /// milliseconds from the batch's commit; unset: forever.
    #[serde(default)]
    pub state_ttl_ms: Option<u64>,
    /// How a shadow's outputs are compared with the serving version's.
    #[serde(default)]
    pub shadow_compare: ShadowCompare,
    /// Embedded source: stamp every output with `linecook.origin.topic`,
    /// `.partition`, `.offset` (its batch's first) and `.index` headers, as
    /// Kafka-mode outputs always are (`replay --against log` needs them).
    #[serde(default)]
    pub origin_headers: bool,
    /// When retention removes records before the route handled them:
    /// `"wait"` (default: retention never does), `"earliest"` (skip to the
    /// log start, counting what was skipped) or `"pause"`.
    #[serde(default)]
    pub on_truncated: OnTruncated,
    /// Outbound HTTP for the route's handlers (`wasi:http`); without it every
    /// request is refused. See `HttpAccess`.
    #[serde(default)]
    pub http: Option<HttpAccess>,
}

/// What a route's handlers may reach over HTTP: nothing but the `allow`
/// entries, with the host adding credentials the guest never sees.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpAccess {
    /// `host:port` entries a request may go to: a name (`api.example.com:443`),
    /// a wildcard for its subdomains (`*.internal.example:8443`) or an IP
    /// address (`127.0.0.1:8080`, `[::1]:8080`). Loopback, private,
    /// link-local and other special addresses are reachable only through an
    /// entry that is that address: a name that resolves to one is refused.
    pub allow: Vec<String>,
    /// One request's time limit, from sending to the end of the response
    /// body, in milliseconds (default 5000).
    #[serde(default = "default_http_timeout_ms")]
    pub timeout_ms: u64,
    /// Largest response body accepted, in bytes (default 1 MiB).
    #[serde(default = "default_http_max_response_bytes")]
    pub max_response_bytes: u64,
    /// Requests of one route in flight at once, across its partitions
    /// (default 8); more wait for a slot within their timeout.
    #[serde(default = "default_http_max_in_flight")]
    pub max_in_flight: u32,
    /// Wall-clock time one call (`handle`, `on-timers`, `init`) may spend,
    /// waiting on HTTP included, in milliseconds (default 30000). Waiting
    /// does not count against `limits.cpu_ms`; this bounds it.
    #[serde(default = "default_http_call_budget_ms")]
    pub call_budget_ms: u64,
    /// PEM certificates trusted for HTTPS besides the built-in Mozilla
    /// roots: a private CA (relative to the config file).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Headers the host adds to requests matching an `allow` entry, keyed by
    /// that entry: `headers."api.example.com:443" = { Authorization = { env =
    /// "PRICES_TOKEN" } }` or `{ file = "token.txt" }`. The guest never sees
    /// them, and they replace any header of the same name it set.
    #[serde(default)]
    pub headers: BTreeMap<String, BTreeMap<String, Secret>>,
}

/// Where a credential's value comes from: read once, when the route starts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, untagged)]
pub enum Secret {
    /// An environment variable of the host process.
    Env {
        /// Its name.
        env: String,
    },
    /// A file (relative to the config file); one trailing newline is dropped.
    File {
        /// Its path.
        file: PathBuf,
    },
}

fn default_http_timeout_ms() -> u64 {
    5_000
}

fn default_http_max_response_bytes() -> u64 {
    1 << 20
}

fn default_http_max_in_flight() -> u32 {
    8
}

fn default_http_call_budget_ms() -> u64 {
    30_000
}

impl RouteConfig {
    /// The route's time settings, as a worker needs them.
    pub fn time(&self) -> TimeSettings {
        TimeSettings {
            allowed_lateness_ms: self.allowed_lateness_ms,
            state_ttl_ms: self.state_ttl_ms,
        }
    }
}

/// A route's settings for time: watermark and default state TTL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeSettings {
    /// See `RouteConfig::allowed_lateness_ms`.
    pub allowed_lateness_ms: u64,
    /// See `RouteConfig::state_ttl_ms`.
    pub state_ttl_ms: Option<u64>,
}

/// Resource limits of a route's instances. Exceeding one fails the batch,
/// reported with the limit and by how much; the error policy decides next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Wall-clock time one `handle` or `init` call may run, in milliseconds
    /// (enforced by epoch interruption at 10 ms granularity; at least 10).
    pub cpu_ms: u64,
    /// Linear memory one instance may grow to, in MiB.
    pub memory_mib: u64,
    /// Records one batch may emit.
    pub max_outputs: u64,
    /// Bytes (keys + values + headers) one batch may emit.
    pub max_output_bytes: u64,
    /// Size of one state value, in bytes.
    pub max_state_value_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            cpu_ms: 5_000,
            memory_mib: 256,
            max_outputs: 100_000,
            max_output_bytes: 64 << 20,
            max_state_value_bytes: 1 << 20,
        }
    }
}

/// What a route does with a batch that fails (trap, exceeded limit, or the
/// handler's `retry`, `poison` or `fatal`). A failed batch never leaves
/// anything behind; this decides what happens next.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ErrorPolicy {
    /// After the retries: `"dead-letter"` (default) sets the failing record
    /// aside in the dead-letter topic and goes on; `"pause"` stops the
    /// partition until `linecook partitions resume`.
    pub on_error: OnError,
    /// Retries of a failed batch before `on_error` applies.
    pub retries: u32,
    /// First retry delay in milliseconds; doubles per retry.
    pub backoff_base_ms: u64,
    /// Longest retry delay in milliseconds.
    pub backoff_max_ms: u64,
    /// Dead-letter topic; default `<topic>.dlq`, created with
    /// `dead_letter_partitions` partitions if it does not exist.
    pub dead_letter_topic: Option<String>,
    /// Partitions of the dead-letter topic when linecook creates it
    /// (default 1); letters go to the partition their key leads to.
    pub dead_letter_partitions: u32,
    /// Failed checkpoints of one batch because of what the handler emitted
    /// (an output topic that does not exist) before the version that handled
    /// it counts as failing: a version being rolled out is rolled back, like
    /// after a trap. The batch keeps being retried either way. Storage
    /// errors (a full disk) never count: they are not the version's fault.
    pub commit_retries: u32,
}

impl Default for ErrorPolicy {
    fn default() -> Self {
        ErrorPolicy {
            on_error: OnError::DeadLetter,
            retries: 3,
            backoff_base_ms: 100,
            backoff_max_ms: 10_000,
            dead_letter_topic: None,
            dead_letter_partitions: 1,
            commit_retries: 5,
        }
    }
}

/// The last resort for a failing batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// Isolate the failing record and write it to the dead-letter topic in
    /// the checkpoint that moves past it.
    DeadLetter,
    /// Pause the partition.
    Pause,
}

impl RouteConfig {
    /// The route's dead-letter topic.
    pub fn dead_letter_topic(&self) -> String {
        self.errors
            .dead_letter_topic
            .clone()
            .unwrap_or_else(|| format!("{}.dlq", self.topic))
    }
}

/// How a new version of a route's plugin is rolled out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rollout {
    /// Every partition adopts the new version at its next batch boundary.
    #[default]
    All,
    /// `canary` partitions adopt it first; after they commit
    /// `promote_after_batches` batches with it and no handler error, the rest
    /// follow. An error or trap on a canary rolls the canaries back.
    Canary {
        /// Number of canary partitions (the lowest-numbered owned ones).
        canary: u32,
        /// Batches the canaries must commit with the new version.
        promote_after_batches: u64,
    },
    /// The new version first runs in shadow on every owned partition: it
    /// handles the same batches from the same state as the serving version,
    /// its effects compared and thrown away. After `shadow_batches` batches
    /// with at most `max_diff` differences it rolls out as `canary` says
    /// (0: to every partition at once); otherwise it is rejected.
    Shadow {
        /// Batches to compare, over all owned partitions.
        shadow_batches: u64,
        /// Differences allowed (outputs and state writes).
        max_diff: u64,
        /// Canary partitions after the shadow (0: none, all at once).
        canary: u32,
        /// Batches the canaries must commit, when `canary` > 0.
        promote_after_batches: u64,
        /// How much time the candidate may take, in percent of the serving
        /// version's, before it skips batches (and says so).
        max_slowdown_percent: u32,
    },
}

impl Rollout {
    /// How long a shadow may take, in percent of the serving version's
    /// time (only meaningful with a shadow phase).
    pub fn max_shadow_slowdown_percent(self) -> u32 {
        match self {
            Rollout::Shadow {
                max_slowdown_percent,
                ..
            } => max_slowdown_percent,
            _ => 200,
        }
    }

    /// What follows a passed shadow phase.
    pub fn after_shadow(self) -> Rollout {
        match self {
            Rollout::Shadow {
                canary,
                promote_after_batches,
                ..
            } if canary > 0 => Rollout::Canary {
                canary,
                promote_after_batches,
            },
            Rollout::Shadow { .. } => Rollout::All,
            other => other,
        }
    }
}

impl<'de> Deserialize<'de> for Rollout {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Canary {
            canary: u32,
            promote_after_batches: u64,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Shadow {
            shadow_batches: u64,
            #[serde(default)]
            max_diff: u64,
            #[serde(default)]
            canary: u32,
            #[serde(default = "default_promote_after")]
            promote_after_batches: u64,
            #[serde(default = "default_slowdown")]
            max_slowdown_percent: u32,
        }
        fn default_slowdown() -> u32 {
            200
        }
        fn default_promote_after() -> u64 {
            100
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Name(String),
            Canary(Canary),
            Shadow(Shadow),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "`rollout` must be \"all\", { canary = N, promote_after_batches = M } or { shadow_batches = N, max_diff = D [, canary = C, promote_after_batches = M] }",
            )
        })? {
            Raw::Shadow(s) => Ok(Rollout::Shadow {
                shadow_batches: s.shadow_batches,
                max_diff: s.max_diff,
                canary: s.canary,
                promote_after_batches: s.promote_after_batches,
                max_slowdown_percent: s.max_slowdown_percent,
            }),
            Raw::Name(name) if name == "all" => Ok(Rollout::All),
            Raw::Name(other) => Err(serde::de::Error::custom(format!(
                "unknown rollout `{other}`: use \"all\" or {{ canary = N, promote_after_batches = M }}"
            ))),
            Raw::Canary(c) => Ok(Rollout::Canary {
                canary: c.canary,
                promote_after_batches: c.promote_after_batches,
            }),
        }
    }
}

impl RouteConfig {
    /// The route config as the string pairs a plugin receives.
    pub fn plugin_config(&self) -> Vec<(String, String)> {
        plugin_config(&self.config)
    }
}

/// A `config` table as the string pairs a plugin's `init` receives: strings
/// as they are, numbers and booleans as TOML writes them.
pub fn plugin_config(config: &BTreeMap<String, toml::Value>) -> Vec<(String, String)> {
    config
        .iter()
        .map(|(k, v)| {
            let v = match v {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), v)
        })
        .collect()
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}
fn default_plugins_dir() -> PathBuf {
    PathBuf::from("plugins")
}
fn default_max_batch() -> u32 {
    500
}
fn default_store_cache_mb() -> u64 {
    crate::store::DEFAULT_CACHE_MB
}
fn default_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7420))
}

impl Config {
    /// How many threads run partitions: `worker_threads`, or one per core.
    pub fn worker_threads(&self) -> usize {
        self.worker_threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
        })
    }

    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut config = Config::parse(&text, base).map_err(|e| match e {
            ParseError::Syntax(message) => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            ParseError::Invalid(message) => ConfigError::Invalid {
                path: path.to_owned(),
                message,
            },
        })?;
        config.path = path.to_owned();
        Ok(config)
    }

    fn parse(text: &str, base: &Path) -> Result<Config, ParseError> {
        let mut config: Config =
            toml::from_str(text).map_err(|e| ParseError::Syntax(e.to_string()))?;
        config.data_dir = base.join(&config.data_dir);
        config.plugins_dir = base.join(&config.plugins_dir);
        config.admin_token_file = config.admin_token_file.map(|f| base.join(f));
        for tls in [&mut config.admin_tls, &mut config.metrics_tls]
            .into_iter()
            .flatten()
        {
            tls.cert_file = base.join(&tls.cert_file);
            tls.key_file = base.join(&tls.key_file);
        }
        for http in config.routes.iter_mut().filter_map(|r| r.http.as_mut()) {
            http.ca_file = http.ca_file.as_ref().map(|f| base.join(f));
        }
        let secrets = config
            .routes
            .iter_mut()
            .filter_map(|r| r.http.as_mut())
            .flat_map(|h| h.headers.values_mut())
            .flat_map(|headers| headers.values_mut());
        for secret in secrets {
            if let Secret::File { file } = secret {
                *file = base.join(&*file);
            }
        }
        config.validate().map_err(ParseError::Invalid)?;
        Ok(config)
    }

    /// The trust policy for plugin versions, if `trusted_keys` sets one.
    pub fn trust(&self) -> Option<crate::plugins::trust::Trust> {
        if self.trusted_keys.is_empty() {
            return None;
        }
        Some(crate::plugins::trust::Trust::parse(&self.trusted_keys).expect("checked by validate"))
    }

    /// The admin API's bearer token, read from `admin_token_file`.
    pub fn admin_token(&self) -> Result<Option<String>, String> {
        let Some(file) = &self.admin_token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("`admin_token_file` {}: {e}", file.display()))?;
        let token = text.trim();
        if token.len() < 16 {
            return Err(format!(
                "`admin_token_file` {} holds {} characters; use a token of at least 16 (e.g. `openssl rand -hex 32`)",
                file.display(),
                token.len()
            ));
        }
        Ok(Some(token.to_owned()))
    }

    /// Checks everything that can be checked without opening the store.
    pub fn validate(&self) -> Result<(), String> {
        if self.group.trim().is_empty() {
            return Err("`group` must not be empty".into());
        }
        if !self.admin.ip().is_loopback() && self.admin_token_file.is_none() {
            return Err(format!(
                "`admin` is {}, not a loopback address, and `admin_token_file` is not set: anyone who reaches it could write to topics and resume partitions. Set `admin_token_file`, or keep `admin` on 127.0.0.1 and serve /metrics to other hosts with `metrics = \"0.0.0.0:9464\"`",
                self.admin
            ));
        }
        if self.metrics_tls.is_some() && self.metrics.is_none() {
            return Err(
                "`metrics_tls` is set but `metrics` is not: there is no metrics listener to serve it on"
                    .into(),
            );
        }
        crate::plugins::trust::Trust::parse(&self.trusted_keys)
            .map_err(|e| format!("`trusted_keys`: {e}"))?;
        if !(1..=MAX_BATCH_LIMIT).contains(&self.max_batch) {
            return Err(format!(
                "`max_batch` is {}; it must be between 1 and {MAX_BATCH_LIMIT}",
                self.max_batch
            ));
        }
        if !(1..=65536).contains(&self.store_cache_mb) {
            return Err(format!(
                "`store_cache_mb` is {}; it must be between 1 and 65536 (MiB)",
                self.store_cache_mb
            ));
        }
        if let Some(n) = self.worker_threads
            && !(1..=256).contains(&n)
        {
            return Err(format!(
                "`worker_threads` is {n}; it must be between 1 and 256 (leave it out for one per core)"
            ));
        }
        let mut names = std::collections::HashSet::new();
        for topic in &self.topics {
            validate_topic_name(&topic.name).map_err(|e| format!("[[topic]] {e}"))?;
            validate_partitions(topic.partitions)
                .map_err(|e| format!("[[topic]] `{}`: {e}", topic.name))?;
            if !names.insert(topic.name.as_str()) {
                return Err(format!("[[topic]] `{}` is declared twice", topic.name));
            }
        }
        if let Source::Kafka(k) = &self.source {
            if k.brokers.trim().is_empty() {
                return Err("[source] `brokers` must not be empty".into());
            }
            if !self.topics.is_empty() {
                return Err(
                    "[[topic]] declares embedded topics, but the source is kafka; create topics in the cluster"
                        .into(),
                );
            }
            if k.group_instance_id
                .as_deref()
                .is_some_and(|i| i.trim().is_empty())
            {
                return Err("[source] `group_instance_id` must not be empty when set".into());
            }
            if k.revoke_timeout_ms == 0 || k.commit_interval_ms == 0 {
                return Err(
                    "[source] `revoke_timeout_ms` and `commit_interval_ms` must be above 0".into(),
                );
            }
            for key in k.properties.keys() {
                if MANAGED_KAFKA_PROPERTIES.contains(&key.as_str()) {
                    return Err(format!(
                        "[source.properties] `{key}` is set by linecook itself; use the [source] setting for it"
                    ));
                }
            }
        }
        let policies = std::iter::once(("[retention]".to_owned(), self.retention.policy())).chain(
            self.topics.iter().map(|t| {
                (
                    format!("[[topic]] `{}`", t.name),
                    RetentionPolicy {
                        ms: t.retention_ms,
                        bytes: t.retention_bytes,
                    },
                )
            }),
        );
        for (place, policy) in policies {
            if policy.ms == Some(0) || policy.bytes == Some(0) {
                return Err(format!(
                    "{place}: a retention of 0 would remove every record at once; leave it out to keep records forever"
                ));
            }
        }
        if self.retention.check_interval_ms == 0 {
            return Err("[retention] `check_interval_ms` must be above 0".into());
        }
        if matches!(self.source, Source::Kafka(_)) && self.retention.policy().removes() {
            return Err(
                "[retention] applies to the embedded log; with the kafka source, the cluster's topic settings (retention.ms, retention.bytes) decide"
                    .into(),
            );
        }
        let mut routed = std::collections::HashSet::new();
        for route in &self.routes {
            validate_topic_name(&route.topic).map_err(|e| format!("[[route]] {e}"))?;
            validate_plugin_name(&route.plugin)
                .map_err(|e| format!("[[route]] for topic `{}`: {e}", route.topic))?;
            if route.state_ttl_ms == Some(0) {
                return Err(format!(
                    "[[route]] for topic `{}`: `state_ttl_ms` is 0; leave it out for state that never expires",
                    route.topic
                ));
            }
            if !routed.insert(route.topic.as_str()) {
                return Err(format!(
                    "[[route]] topic `{}` is routed twice; a topic has one plugin",
                    route.topic
                ));
            }
            if let Rollout::Shadow { shadow_batches, .. } = route.rollout
                && shadow_batches == 0
            {
                return Err(format!(
                    "[[route]] for topic `{}`: rollout shadow_batches must be at least 1",
                    route.topic
                ));
            }
            if let Rollout::Canary {
                canary,
                promote_after_batches,
            } = route.rollout.after_shadow()
                && (canary == 0 || promote_after_batches == 0)
            {
                return Err(format!(
                    "[[route]] for topic `{}`: rollout needs canary >= 1 and promote_after_batches >= 1",
                    route.topic
                ));
            }
            let l = &route.limits;
            for (field, value, least) in [
                ("cpu_ms", l.cpu_ms, MIN_CPU_MS),
                ("memory_mib", l.memory_mib, 1),
                ("max_outputs", l.max_outputs, 1),
            ] {
                if value < least {
                    return Err(format!(
                        "[[route]] for topic `{}`: limits.{field} is {value}; it must be at least {least}",
                        route.topic
                    ));
                }
            }
            if route.errors.on_error == OnError::Pause && route.errors.dead_letter_topic.is_some() {
                return Err(format!(
                    "[[route]] for topic `{}`: errors.dead_letter_topic is set, but errors.on_error is \"pause\", which never dead-letters; remove one",
                    route.topic
                ));
            }
            if route.errors.backoff_base_ms > route.errors.backoff_max_ms {
                return Err(format!(
                    "[[route]] for topic `{}`: errors.backoff_base_ms is above backoff_max_ms",
                    route.topic
                ));
            }
            validate_partitions(route.errors.dead_letter_partitions).map_err(|e| {
                format!(
                    "[[route]] for topic `{}`: errors.dead_letter_partitions: {e}",
                    route.topic
                )
            })?;
            validate_topic_name(&route.dead_letter_topic())
                .map_err(|e| format!("[[route]] for topic `{}`: dead-letter {e}", route.topic))?;
            if let Some(http) = &route.http {
                crate::egress::validate(http)
                    .map_err(|e| format!("[[route]] for topic `{}`: http: {e}", route.topic))?;
            }
            for (key, value) in &route.config {
                if matches!(value, toml::Value::Array(_) | toml::Value::Table(_)) {
                    return Err(format!(
                        "[[route]] for topic `{}`: config `{key}` must be a string, number or boolean",
                        route.topic
                    ));
                }
            }
        }
        Ok(())
    }

    /// Path of the plugin file for `name`.
    pub fn plugin_path(&self, name: &str) -> PathBuf {
        self.plugins_dir.join(format!("{name}.wasm"))
    }
}

enum ParseError {
    Syntax(String),
    Invalid(String),
}

/// Checks a plugin name: the file stem of `<name>.wasm`.
pub fn validate_plugin_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-');
    if name.is_empty() || !name.chars().all(ok_char) {
        return Err(format!(
            "plugin name `{name}` is invalid: use A-Z a-z 0-9 _ - (the file stem of <name>.wasm)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("/base")).map_err(|e| match e {
            ParseError::Syntax(m) | ParseError::Invalid(m) => m,
        })
    }

    #[test]
    fn minimal_config_gets_defaults_and_resolves_paths() {
        let c = parse("group = \"g\"").unwrap();
        assert_eq!(c.max_batch, 500);
        assert_eq!(c.store_cache_mb, 64);
        assert_eq!(c.data_dir, Path::new("/base/data"));
        assert_eq!(c.admin.ip().to_string(), "127.0.0.1");
    }

    #[test]
    fn kafka_source_parses_with_defaults_and_properties() {
        let c = parse(
            "group = \"g\"\n[source]\nkind = \"kafka\"\nbrokers = \"b:9092\"\ngroup_protocol = \"consumer\"\n[source.properties]\n\"security.protocol\" = \"SSL\"",
        )
        .unwrap();
        let Source::Kafka(k) = c.source else {
            panic!("not a kafka source")
        };
        assert_eq!(k.assignment, Assignment::CooperativeSticky);
        assert_eq!(k.group_protocol, GroupProtocol::Consumer);
        assert_eq!(k.auto_offset_reset, OffsetReset::Earliest);
        assert_eq!(k.properties["security.protocol"], "SSL");
    }

    #[test]
    fn kafka_source_refuses_what_linecook_must_own() {
        let base = "group = \"g\"\n[source]\nkind = \"kafka\"\nbrokers = \"b:9092\"\n";
        let err = parse(&format!(
            "{base}[source.properties]\n\"enable.auto.commit\" = \"true\""
        ))
        .unwrap_err();
        assert!(
            err.contains("enable.auto.commit") && err.contains("set by linecook"),
            "{err}"
        );
        let err = parse(&format!("{base}assignment = \"sticky\"")).unwrap_err();
        assert!(err.contains("sticky"), "{err}");
        let err = parse(&format!("{base}[[topic]]\nname = \"a\"\npartitions = 1")).unwrap_err();
        assert!(err.contains("source is kafka"), "{err}");
    }

    #[test]
    fn the_store_cache_is_at_least_one_mib() {
        assert_eq!(
            parse("group = \"g\"\nstore_cache_mb = 1")
                .unwrap()
                .store_cache_mb,
            1
        );
        let err = parse("group = \"g\"\nstore_cache_mb = 0").unwrap_err();
        assert!(
            err.contains("`store_cache_mb` is 0; it must be between 1 and 65536"),
            "{err}"
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse("group = \"g\"\nmax_btach = 3").unwrap_err();
        assert!(err.contains("max_btach"), "{err}");
    }

    #[test]
    fn zero_partitions_is_rejected() {
        let err = parse("group = \"g\"\n[[topic]]\nname = \"a\"\npartitions = 0").unwrap_err();
        assert!(err.contains("partitions is 0"), "{err}");
    }

    #[test]
    fn route_config_values_become_strings() {
        let c = parse(
            "group = \"g\"\n[[route]]\ntopic = \"a\"\nplugin = \"p\"\nconfig = { output = \"b\", n = 3, on = true }",
        )
        .unwrap();
        let pairs = c.routes[0].plugin_config();
        assert_eq!(
            pairs,
            vec![
                ("n".to_string(), "3".to_string()),
                ("on".to_string(), "true".to_string()),
                ("output".to_string(), "b".to_string())
            ]
        );
    }

    #[test]
    fn rollout_is_all_or_a_canary_table() {
        let route = |r: &str| {
            parse(&format!(
                "group = \"g\"\n[[route]]\ntopic = \"a\"\nplugin = \"p\"\n{r}"
            ))
        };
        assert_eq!(route("").unwrap().routes[0].rollout, Rollout::All);
        assert_eq!(
            route("rollout = \"all\"").unwrap().routes[0].rollout,
            Rollout::All
        );
        assert_eq!(
            route("rollout = { canary = 1, promote_after_batches = 5 }")
                .unwrap()
                .routes[0]
                .rollout,
            Rollout::Canary {
                canary: 1,
                promote_after_batches: 5
            }
        );
        let err = route("rollout = \"some\"").unwrap_err();
        assert!(err.contains("unknown rollout `some`"), "{err}");
        let err = route("rollout = { canary = 2 }").unwrap_err();
        assert!(err.contains("promote_after_batches"), "{err}");
        let err = route("rollout = { canary = 0, promote_after_batches = 1 }").unwrap_err();
        assert!(err.contains("canary >= 1"), "{err}");
    }

    #[test]
    fn limits_and_error_policy_have_defaults_and_reject_unknown_keys() {
        let c = parse("group = \"g\"\n[[route]]\ntopic = \"a\"\nplugin = \"p\"").unwrap();
        assert_eq!(c.routes[0].limits, Limits::default());
        assert_eq!(c.routes[0].errors.on_error, OnError::DeadLetter);
        assert_eq!(c.routes[0].dead_letter_topic(), "a.dlq");
        let c = parse(
            "group = \"g\"\n[[route]]\ntopic = \"a\"\nplugin = \"p\"\nlimits = { cpu_ms = 50 }\nerrors = { on_error = \"pause\", retries = 0 }",
        )
        .unwrap();
        assert_eq!(c.routes[0].limits.cpu_ms, 50);
        assert_eq!(c.routes[0].limits.memory_mib, 256);
        assert_eq!(c.routes[0].errors.on_error, OnError::Pause);
        let err = parse(
            "group = \"g\"\n[[route]]\ntopic = \"a\"\nplugin = \"p\"\nlimits = { cpu_secs = 5 }",
        )
        .unwrap_err();
        assert!(err.contains("cpu_secs"), "{err}");
    }

    #[test]
    fn an_invalid_setting_is_named_with_its_value() {
        let route = |extra: &str| {
            parse(&format!(
                "group = \"g\"\n[[route]]\ntopic = \"a\"\nplugin = \"p\"\n{extra}"
            ))
            .unwrap_err()
        };
        assert!(
            route("limits = { cpu_ms = 5 }").contains("limits.cpu_ms is 5; it must be at least 10")
        );
        assert!(route("limits = { memory_mib = 0 }").contains("limits.memory_mib is 0"));
        assert!(route("limits = { max_outputs = 0 }").contains("limits.max_outputs is 0"));
        let both = route("errors = { on_error = \"pause\", dead_letter_topic = \"x\" }");
        assert!(
            both.contains("dead_letter_topic is set, but errors.on_error is \"pause\""),
            "{both}"
        );
    }

    #[test]
    fn a_missing_config_file_points_at_config_help() {
        let err = Config::load(Path::new("/nonexistent/linecook.toml")).unwrap_err();
        assert!(
            err.to_string()
                .contains("linecook config-help > linecook.toml"),
            "{err}"
        );
    }

    #[test]
    fn a_topic_routed_twice_is_rejected() {
        let err = parse(
            "group = \"g\"\n[[route]]\ntopic = \"a\"\nplugin = \"p\"\n[[route]]\ntopic = \"a\"\nplugin = \"q\"",
        )
        .unwrap_err();
        assert!(err.contains("routed twice"), "{err}");
    }
}
