//! What `linecook status` and `GET /status` report: per routed partition, the
//! committed offset, the log end, the lag, and — while the host runs — what
//! the partition's worker is doing.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::Config;
use crate::plugins::PluginReport;
use crate::store::{Store, StoreError};

/// What a partition worker is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartitionState {
    /// Instantiating its handler.
    Starting,
    /// Handling batches, or waiting for records.
    Running,
    /// The last batch failed; it will be retried after a backoff.
    Retrying,
    /// Stopped until a new plugin version arrives or the host restarts.
    Paused,
    /// Rebuilding its state from the changelog (Kafka source).
    Restoring,
    /// Would be running, but a broker it needs cannot be reached (Kafka
    /// source): nothing is fetched or delivered until it comes back.
    WaitingForBroker,
}

impl std::fmt::Display for PartitionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PartitionState::Starting => "starting",
            PartitionState::Running => "running",
            PartitionState::Retrying => "retrying",
            PartitionState::Paused => "paused",
            PartitionState::Restoring => "restoring",
            PartitionState::WaitingForBroker => "waiting-for-broker",
        })
    }
}

/// One routed partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionReport {
    /// Source topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Next offset to handle: everything before it is committed.
    pub committed_offset: u64,
    /// Next offset to be appended to the log.
    pub end_offset: u64,
    /// First offset still in the log: retention removed the records before
    /// it (embedded source; 0 with Kafka).
    #[serde(default)]
    pub log_start_offset: u64,
    /// Records the route skipped since the host started because retention
    /// removed them before it handled them.
    #[serde(default)]
    pub skipped_records: u64,
    /// `end_offset - committed_offset`.
    pub lag: u64,
    /// Routed plugin.
    pub plugin: String,
    /// Version (digest) that handled the last committed batch, if any.
    pub version: Option<String>,
    /// What the worker is doing; absent when the host is not running.
    pub state: Option<PartitionState>,
    /// Why the partition is retrying or paused.
    pub detail: Option<String>,
    /// Batches committed since the host started.
    pub batches: u64,
    /// Records committed since the host started.
    pub records: u64,
    /// Version swaps since the host started.
    #[serde(default)]
    pub swaps: u64,
    /// Records dead-lettered since the host started.
    #[serde(default)]
    pub dead_letters: u64,
    /// Records committed per second over the last few seconds.
    #[serde(default)]
    pub records_per_sec: f64,
    /// The last swap's pause between the old version's last batch and the new
    /// version's first, excluding time waiting for records (microseconds).
    #[serde(default)]
    pub last_swap_pause_us: Option<u64>,
    /// Contract of the running version (`0.1.0`, `0.2.0`).
    #[serde(default)]
    pub contract: Option<String>,
    /// Timers set and not yet fired.
    #[serde(default)]
    pub timers_pending: u64,
    /// Timers fired since the host started.
    #[serde(default)]
    pub timers_fired: u64,
    /// The event-time watermark, ms since the Unix epoch.
    #[serde(default)]
    pub watermark_ms: Option<i64>,
    /// Where the route writes records it gives up on (absent when its
    /// errors pause the partition instead).
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
}

/// The whole status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    /// Consumer group.
    pub group: String,
    /// Whether a host is running on the data directory.
    pub running: bool,
    /// Routed partitions, by topic and partition.
    pub partitions: Vec<PartitionReport>,
    /// Plugins and every version the running host has seen, with their
    /// states (empty when the host is not running).
    #[serde(default)]
    pub plugins: Vec<PluginReport>,
    /// The consumer group as this member sees it (Kafka source, while running).
    #[serde(default)]
    pub member: Option<GroupReport>,
    /// The brokers as this member's clients see them (Kafka source, while
    /// running).
    #[serde(default)]
    pub broker: Option<BrokerReport>,
    /// The last swaps of running versions on this host, newest first (at
    /// most [`RECENT_SWAPS`]).
    #[serde(default)]
    pub recent_swaps: Vec<SwapEvent>,
}

/// How many swaps `status` remembers: enough for a day of deploys across a
/// few routes, small enough to send every second to the status page.
pub const RECENT_SWAPS: usize = 64;

/// One partition moving from one version of its plugin to another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwapEvent {
    /// When the new version handled its first batch, ms since the Unix epoch.
    pub at_ms: i64,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Plugin.
    pub plugin: String,
    /// The version that stopped (full digest).
    pub from: Option<String>,
    /// The version that took over (full digest).
    pub to: Option<String>,
    /// Time between the old version's last batch and the new one's first,
    /// not counting time spent waiting for records, in microseconds.
    pub pause_us: u64,
}

/// Whether the brokers this member uses can be reached (Kafka source).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BrokerReport {
    /// Every broker the consumer or the producer uses is connected.
    pub up: bool,
    /// Brokers a client tried to reach and is not connected to, with their
    /// connection state (`DOWN`, `TRY_CONNECT`, …).
    pub unreachable: Vec<String>,
    /// The last error a client reported (e.g. `AllBrokersDown`, a fatal
    /// producer error), if any since start.
    pub last_error: Option<String>,
    /// Seconds since every broker was last connected (0 while up).
    pub seconds_since_up: f64,
}

/// This member's view of its consumer group (Kafka source).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupReport {
    /// `classic` or `consumer` (KIP-848).
    pub protocol: Option<String>,
    /// Member id the group coordinator gave this member.
    pub member_id: Option<String>,
    /// Group generation after the last rebalance this member took part in.
    pub generation: Option<i32>,
    /// Rebalance callbacks (assignments and revocations) since start.
    pub rebalances: u64,
    /// Outbox entries waiting for delivery to the cluster.
    pub outbox_pending: u64,
    /// Seconds the outbox has held entries without delivering any (0 when
    /// it is empty or moving).
    #[serde(default)]
    pub outbox_stalled_seconds: f64,
    /// Outbox producers rebuilt after a fatal error.
    #[serde(default)]
    pub producer_restarts: u64,
}

/// What asking a partition to resume did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// It was paused; its worker retries the batch it stopped at.
    Asked,
    /// It is not paused: nothing to resume.
    NotPaused(PartitionState),
    /// This host does not run it.
    NotOwned,
}

/// A reset asked of the worker running a partition: it moves at its next
/// batch boundary and answers (from, to) or why not.
#[derive(Debug)]
pub struct ResetRequest {
    /// Where to.
    pub to: crate::checkpoint::ResetTo,
    /// What happens to state.
    pub state: crate::checkpoint::ResetState,
    /// The answer.
    pub done: oneshot::Sender<Result<(u64, u64), String>>,
}

/// What the running workers report about themselves, and the resume and
/// reset requests for them.
#[derive(Debug, Default)]
pub struct Live {
    partitions: Mutex<BTreeMap<(String, u32), LivePartition>>,
    resumes: Mutex<BTreeMap<(String, u32), watch::Sender<u64>>>,
    resets: Mutex<BTreeMap<(String, u32), mpsc::UnboundedSender<ResetRequest>>>,
    group: Mutex<Option<GroupReport>>,
    /// High watermarks of Kafka partitions, as the consumer last saw them.
    ends: Mutex<BTreeMap<(String, u32), u64>>,
    brokers: Mutex<Option<Brokers>>,
    /// Newest last.
    swaps: Mutex<VecDeque<SwapEvent>>,
}

/// Broker connection states by client, from librdkafka's statistics.
#[derive(Debug)]
struct Brokers {
    /// (client, broker name) → state.
    states: BTreeMap<(&'static str, String), String>,
    last_error: Option<String>,
    /// When every broker was last seen connected.
    last_up: Instant,
    /// A client said it lost its connections (AllBrokersDown, a transport
    /// failure) since statistics last showed every broker connected:
    /// statistics come once a second, the error at once.
    lost: bool,
}

impl Brokers {
    fn new() -> Brokers {
        Brokers {
            states: BTreeMap::new(),
            last_error: None,
            last_up: Instant::now(),
            lost: false,
        }
    }
}

/// Broker states that mean "not connected, and a client wants to be":
/// everything but `UP` and the states of a broker never needed (`INIT`) or
/// being (re)checked while connected.
fn unreachable_state(state: &str) -> bool {
    !matches!(state, "UP" | "INIT" | "UPDATE")
}

/// One worker's view of its partition.
#[derive(Debug, Clone)]
pub struct LivePartition {
    /// Running version (full digest).
    pub version: Option<String>,
    /// Worker state.
    pub state: PartitionState,
    /// Why retrying or paused.
    pub detail: Option<String>,
    /// Batches committed.
    pub batches: u64,
    /// Records committed.
    pub records: u64,
    /// Version swaps since start.
    pub swaps: u64,
    /// Records written to the dead-letter topic since start.
    pub dead_letters: u64,
    /// Contract of the running version.
    pub contract: Option<crate::runtime::Contract>,
    /// Timers fired since start.
    pub timers_fired: u64,
    /// Records skipped since start because retention removed them.
    pub skipped: u64,
    /// (when, records) samples for the throughput, oldest first.
    pub samples: VecDeque<(Instant, u64)>,
    /// Time between the last batch of the old version and the first batch of
    /// the new one at the last swap, not counting time spent waiting for
    /// records, in microseconds.
    pub last_swap_pause_us: Option<u64>,
    /// The version the last swap replaced, until its pause is known.
    pub swapped_from: Option<String>,
}

/// Samples kept per partition: the throughput is over the last five seconds.
const RATE_SAMPLES: usize = 6;

impl LivePartition {
    /// Records per second over the kept samples.
    pub fn rate(&self) -> f64 {
        match (self.samples.front(), self.samples.back()) {
            (Some((t0, r0)), Some((t1, r1))) if t1 > t0 => {
                (r1 - r0) as f64 / t1.duration_since(*t0).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

impl Live {
    /// Applies `f` to the entry of `topic`/`partition`, creating it if needed.
    pub fn update(&self, topic: &str, partition: u32, f: impl FnOnce(&mut LivePartition)) {
        let mut parts = self.partitions.lock().expect("status lock");
        let entry = parts
            .entry((topic.to_owned(), partition))
            .or_insert(LivePartition {
                version: None,
                state: PartitionState::Starting,
                detail: None,
                batches: 0,
                records: 0,
                swaps: 0,
                dead_letters: 0,
                contract: None,
                timers_fired: 0,
                skipped: 0,
                samples: VecDeque::new(),
                last_swap_pause_us: None,
                swapped_from: None,
            });
        f(entry);
    }

    /// Takes a throughput sample of every partition; call it every second.
    pub fn sample(&self) {
        let now = Instant::now();
        let mut parts = self.partitions.lock().expect("status lock");
        for p in parts.values_mut() {
            p.samples.push_back((now, p.records));
            while p.samples.len() > RATE_SAMPLES {
                p.samples.pop_front();
            }
        }
    }

    /// The reset requests a partition's new worker follows (replacing any
    /// earlier worker's).
    pub fn reset_requests(
        &self,
        topic: &str,
        partition: u32,
    ) -> mpsc::UnboundedReceiver<ResetRequest> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.resets
            .lock()
            .expect("status lock")
            .insert((topic.to_owned(), partition), tx);
        rx
    }

    /// Asks the worker of `topic`/`partition` to reset; `None` if no worker
    /// of this host runs it.
    pub fn reset(
        &self,
        topic: &str,
        partition: u32,
        to: crate::checkpoint::ResetTo,
        state: crate::checkpoint::ResetState,
    ) -> Option<oneshot::Receiver<Result<(u64, u64), String>>> {
        let (done, answer) = oneshot::channel();
        let resets = self.resets.lock().expect("status lock");
        let tx = resets.get(&(topic.to_owned(), partition))?;
        tx.send(ResetRequest { to, state, done }).ok()?;
        Some(answer)
    }

    /// The resume signal a partition's worker follows.
    pub fn resume_signal(&self, topic: &str, partition: u32) -> watch::Receiver<u64> {
        let mut resumes = self.resumes.lock().expect("status lock");
        resumes
            .entry((topic.to_owned(), partition))
            .or_insert_with(|| watch::Sender::new(0))
            .subscribe()
    }

    /// Asks a paused partition to resume; a partition this host does not
    /// own, or one that is not paused, is left alone and said to be so.
    pub fn resume(&self, topic: &str, partition: u32) -> Resume {
        let key = (topic.to_owned(), partition);
        let state = self
            .partitions
            .lock()
            .expect("status lock")
            .get(&key)
            .map(|p| p.state);
        let resumes = self.resumes.lock().expect("status lock");
        match (resumes.get(&key), state) {
            (Some(tx), Some(PartitionState::Paused)) => {
                tx.send_modify(|n| *n += 1);
                Resume::Asked
            }
            (Some(_), Some(state)) => Resume::NotPaused(state),
            _ => Resume::NotOwned,
        }
    }

    /// Applies `f` to the group report, creating it if needed.
    pub fn update_group(&self, f: impl FnOnce(&mut GroupReport)) {
        let mut group = self.group.lock().expect("status lock");
        f(group.get_or_insert_with(GroupReport::default));
    }

    /// Records the broker's end offset of a Kafka partition.
    pub fn set_end(&self, topic: &str, partition: u32, end: u64) {
        let mut ends = self.ends.lock().expect("status lock");
        ends.insert((topic.to_owned(), partition), end);
    }

    fn end(&self, topic: &str, partition: u32) -> Option<u64> {
        let ends = self.ends.lock().expect("status lock");
        ends.get(&(topic.to_owned(), partition)).copied()
    }

    /// Records the connection state of `client`'s brokers (from its
    /// statistics; brokers without a node id are bootstrap entries).
    pub fn set_brokers(&self, client: &'static str, brokers: &[(String, String)]) {
        let mut guard = self.brokers.lock().expect("status lock");
        let b = guard.get_or_insert_with(Brokers::new);
        b.states.retain(|(c, _), _| *c != client);
        for (name, state) in brokers {
            b.states.insert((client, name.clone()), state.clone());
        }
        if !b.states.values().any(|s| unreachable_state(s)) {
            b.last_up = Instant::now();
            b.lost = false;
        }
    }

    /// Records an error a Kafka client reported; `lost` if it says the
    /// client lost its broker connections.
    pub fn broker_error(&self, error: String, lost: bool) {
        let mut guard = self.brokers.lock().expect("status lock");
        let b = guard.get_or_insert_with(Brokers::new);
        if lost && !b.lost {
            b.lost = true;
            b.last_up = Instant::now();
        }
        b.last_error = Some(error);
    }

    /// The broker report, if a Kafka client reported anything.
    pub fn broker(&self) -> Option<BrokerReport> {
        let guard = self.brokers.lock().expect("status lock");
        let b = guard.as_ref()?;
        let mut unreachable: Vec<String> = b
            .states
            .iter()
            .filter(|(_, s)| unreachable_state(s))
            .map(|((client, name), s)| format!("{name} ({client}: {s})"))
            .collect();
        if b.lost && unreachable.is_empty() {
            unreachable.push("every broker (the client reported its connections lost)".into());
        }
        Some(BrokerReport {
            up: unreachable.is_empty(),
            seconds_since_up: if unreachable.is_empty() {
                0.0
            } else {
                b.last_up.elapsed().as_secs_f64()
            },
            unreachable,
            last_error: b.last_error.clone(),
        })
    }

    /// The group report, if this member is in a Kafka group.
    pub fn group(&self) -> Option<GroupReport> {
        self.group.lock().expect("status lock").clone()
    }

    /// Forgets a partition the host no longer owns.
    pub fn remove(&self, topic: &str, partition: u32) {
        let mut parts = self.partitions.lock().expect("status lock");
        parts.remove(&(topic.to_owned(), partition));
    }

    /// Remembers a finished swap, forgetting the oldest beyond
    /// [`RECENT_SWAPS`].
    pub fn swapped(&self, event: SwapEvent) {
        let mut swaps = self.swaps.lock().expect("status lock");
        swaps.push_back(event);
        while swaps.len() > RECENT_SWAPS {
            swaps.pop_front();
        }
    }

    fn recent_swaps(&self) -> Vec<SwapEvent> {
        let swaps = self.swaps.lock().expect("status lock");
        swaps.iter().rev().cloned().collect()
    }

    fn get(&self, topic: &str, partition: u32) -> Option<LivePartition> {
        let parts = self.partitions.lock().expect("status lock");
        parts.get(&(topic.to_owned(), partition)).cloned()
    }
}

/// Builds the status of every routed partition from the store, adding what
/// `live` workers report when the host is running.
pub fn report(
    store: &Store,
    config: &Config,
    live: Option<&Live>,
    plugins: Vec<PluginReport>,
) -> Result<StatusReport, StoreError> {
    let broker = live.and_then(Live::broker);
    let mut partitions = Vec::new();
    for route in &config.routes {
        let topic = match store.topic(&route.topic) {
            Ok(topic) => topic,
            Err(StoreError::UnknownTopic(_)) => continue,
            Err(e) => return Err(e),
        };
        for (partition, at_rest) in (0..topic.partitions).zip(at_rest(store, &topic)?) {
            let AtRest {
                checkpoint,
                pending,
                watermark_ms,
                end_offset,
                log_start_offset,
            } = at_rest;
            let committed_offset = checkpoint.as_ref().map_or(0, |c| c.next_offset);
            let end_offset = live
                .and_then(|l| l.end(&topic.name, partition))
                .map_or(end_offset, |e| e.max(end_offset));
            let live = live.and_then(|l| l.get(&topic.name, partition));
            let contract = live.as_ref().and_then(|l| l.contract);
            let version = live
                .as_ref()
                .and_then(|l| l.version.clone())
                .or(checkpoint.map(|c| c.version));
            let stranded = (contract == Some(crate::runtime::Contract::V0_1) && pending.timers > 0)
                .then(|| {
                    format!(
                        "{} timers pending; version {} is 0.1.0 and cannot fire them",
                        pending.timers,
                        version.as_deref().map(crate::plugins::short).unwrap_or("-")
                    )
                });
            partitions.push(PartitionReport {
                topic: topic.name.clone(),
                partition,
                committed_offset,
                end_offset,
                log_start_offset,
                skipped_records: live.as_ref().map_or(0, |l| l.skipped),
                lag: end_offset.saturating_sub(committed_offset),
                plugin: route.plugin.clone(),
                version,
                state: live
                    .as_ref()
                    .map(|l| shown_state(l.state, broker.as_ref())),
                detail: match (&live, &broker) {
                    (Some(l), Some(b)) if shown_state(l.state, Some(b)) != l.state => Some(format!(
                        "cannot reach {} for {:.0} s; nothing is fetched or delivered meanwhile",
                        b.unreachable.join(", "),
                        b.seconds_since_up
                    )),
                    _ => live.as_ref().and_then(|l| l.detail.clone()).or(stranded),
                },
                batches: live.as_ref().map_or(0, |l| l.batches),
                records: live.as_ref().map_or(0, |l| l.records),
                swaps: live.as_ref().map_or(0, |l| l.swaps),
                dead_letters: live.as_ref().map_or(0, |l| l.dead_letters),
                records_per_sec: live.as_ref().map_or(0.0, LivePartition::rate),
                last_swap_pause_us: live.as_ref().and_then(|l| l.last_swap_pause_us),
                contract: contract.map(|c| c.version().to_owned()),
                timers_pending: pending.timers,
                timers_fired: live.as_ref().map_or(0, |l| l.timers_fired),
                watermark_ms,
                dead_letter_topic: (route.errors.on_error == crate::config::OnError::DeadLetter)
                    .then(|| route.dead_letter_topic()),
            });
        }
    }
    Ok(StatusReport {
        group: config.group.clone(),
        running: live.is_some(),
        partitions,
        plugins,
        member: live.and_then(Live::group),
        broker,
        recent_swaps: live.map(Live::recent_swaps).unwrap_or_default(),
    })
}

/// A running partition is shown as waiting while a broker is unreachable:
/// it can neither fetch nor deliver, whatever its worker thinks.
/// What the store holds of one partition for its status row.
struct AtRest {
    checkpoint: Option<crate::checkpoint::Checkpoint>,
    pending: crate::timers::Pending,
    watermark_ms: Option<i64>,
    end_offset: u64,
    log_start_offset: u64,
}

/// Every partition of `topic` as the store holds it, read in one
/// transaction: a transaction per partition and table cost a host with
/// 1,024 partitions ~11 ms of CPU per status request.
fn at_rest(store: &Store, topic: &crate::log::TopicInfo) -> Result<Vec<AtRest>, StoreError> {
    use crate::store::{CHECKPOINTS, LOG_ENDS, LOG_STARTS, TIMER_COUNTS, TIMERS, WATERMARKS};
    use redb::ReadableDatabase;
    let txn = store.db.begin_read()?;
    let checkpoints = txn.open_table(CHECKPOINTS)?;
    let (timers, counts) = (txn.open_table(TIMERS)?, txn.open_table(TIMER_COUNTS)?);
    let watermarks = txn.open_table(WATERMARKS)?;
    let (ends, starts) = (txn.open_table(LOG_ENDS)?, txn.open_table(LOG_STARTS)?);
    (0..topic.partitions)
        .map(|p| {
            let key = (topic.id, p);
            Ok(AtRest {
                checkpoint: crate::checkpoint::checkpoint_in(&checkpoints, key)?,
                pending: crate::timers::pending_in(&timers, &counts, topic, p)?,
                watermark_ms: watermarks.get(key)?.map(|w| w.value()),
                end_offset: ends.get(key)?.map_or(0, |v| v.value()),
                log_start_offset: starts.get(key)?.map_or(0, |v| v.value()),
            })
        })
        .collect()
}

fn shown_state(state: PartitionState, broker: Option<&BrokerReport>) -> PartitionState {
    match (state, broker) {
        (PartitionState::Running, Some(b)) if !b.up => PartitionState::WaitingForBroker,
        (state, _) => state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_print_as_their_json_names() {
        use PartitionState as S;
        for state in [
            S::Starting,
            S::Running,
            S::Retrying,
            S::Paused,
            S::Restoring,
            S::WaitingForBroker,
        ] {
            assert_eq!(serde_json::to_value(state).unwrap(), state.to_string());
        }
        use crate::plugins::VersionState as V;
        for state in [
            V::Pending,
            V::Active,
            V::Canary,
            V::Rejected,
            V::RolledBack,
            V::Retired,
        ] {
            assert_eq!(serde_json::to_value(state).unwrap(), state.to_string());
        }
    }

    #[test]
    fn a_broker_that_is_not_connected_makes_running_partitions_wait() {
        let live = Live::default();
        assert!(
            live.broker().is_none(),
            "embedded mode has no broker section"
        );
        live.set_brokers(
            "consumer",
            &[
                ("b1:9092/1".into(), "UP".into()),
                ("b2:9092/2".into(), "INIT".into()),
            ],
        );
        let up = live.broker().unwrap();
        assert!(up.up, "a broker never needed is not a problem");
        assert_eq!(
            shown_state(PartitionState::Running, Some(&up)),
            PartitionState::Running
        );
        live.set_brokers("producer", &[("b2:9092/2".into(), "TRY_CONNECT".into())]);
        let down = live.broker().unwrap();
        assert!(!down.up);
        assert_eq!(down.unreachable, ["b2:9092/2 (producer: TRY_CONNECT)"]);
        assert_eq!(
            shown_state(PartitionState::Running, Some(&down)),
            PartitionState::WaitingForBroker
        );
        assert_eq!(
            shown_state(PartitionState::Paused, Some(&down)),
            PartitionState::Paused
        );
        live.set_brokers("producer", &[("b2:9092/2".into(), "UP".into())]);
        assert!(live.broker().unwrap().up);
        // An error saying the connections are gone counts at once, until
        // statistics show every broker connected again.
        live.broker_error("AllBrokersDown".into(), true);
        assert!(!live.broker().unwrap().up);
        live.broker_error("some other error".into(), false);
        assert!(!live.broker().unwrap().up);
        live.set_brokers("consumer", &[("b1:9092/1".into(), "UP".into())]);
        assert!(live.broker().unwrap().up);
    }
}
