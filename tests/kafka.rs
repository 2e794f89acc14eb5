//! linecook as members of a real consumer group on librdkafka's mock cluster
//! (started here, in the test process; the hosts are separate processes).
//!
//! What the mock cannot show, and so these tests do not claim: static
//! membership (not implemented by the mock: a restart is a full rebalance),
//! log compaction of the changelog (the mock never compacts), and commits
//! inside a rebalance (the mock refuses them with RebalanceInProgress, so a
//! graceful handoff here falls back to the last periodic commit and replays;
//! outputs then repeat with identical origin headers, and counts stay exact).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::{MockCluster, MockCoordinator};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use linecook::status::StatusReport;
use support::{Setup, build_plugins, plugins, wait_until, with_custom_section};

const INPUT: &str = "events";
const OUTPUT: &str = "counts";
const PARTITIONS: i32 = 6;
const KEYS: u64 = 24;
/// The broker leading the changelog and output partitions in `start_split`.
const DELIVERY_BROKER: i32 = 2;
/// How long an assignment must hold to count as settled.
const SETTLED: Duration = Duration::from_secs(4);

struct Cluster {
    mock: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
}

impl Cluster {
    fn start() -> Cluster {
        let mock = MockCluster::new(1).expect("starting the mock cluster");
        // The mock does not implement CreateTopics: every topic is made here,
        // including the ones linecook would create on a real cluster.
        mock.create_topic(INPUT, PARTITIONS, 1).unwrap();
        mock.create_topic(OUTPUT, 3, 1).unwrap();
        mock.create_topic(&format!("test-{INPUT}-changelog"), PARTITIONS, 1)
            .unwrap();
        mock.create_topic(&format!("{INPUT}.dlq"), 1, 1).unwrap();
        Cluster { mock }
    }

    /// Three brokers: the input topic and the group's coordinator on broker
    /// 1, the changelog and the output topic on broker `DELIVERY_BROKER`, so
    /// a test can stop every delivery while members go on consuming and
    /// checkpointing — the way an outbox fills up on a real cluster.
    fn start_split() -> Cluster {
        let mock = MockCluster::new(3).expect("starting the mock cluster");
        mock.create_topic(INPUT, PARTITIONS, 1).unwrap();
        mock.create_topic(OUTPUT, 3, 1).unwrap();
        let changelog = format!("test-{INPUT}-changelog");
        mock.create_topic(&changelog, PARTITIONS, 1).unwrap();
        mock.create_topic(&format!("{INPUT}.dlq"), 1, 1).unwrap();
        for p in 0..PARTITIONS {
            mock.partition_leader(INPUT, p, Some(1)).unwrap();
            mock.partition_leader(&changelog, p, Some(DELIVERY_BROKER))
                .unwrap();
        }
        for p in 0..3 {
            mock.partition_leader(OUTPUT, p, Some(DELIVERY_BROKER))
                .unwrap();
        }
        mock.coordinator(MockCoordinator::Group("test".into()), 1)
            .unwrap();
        mock.coordinator(MockCoordinator::Group("test-restore".into()), 1)
            .unwrap();
        Cluster { mock }
    }

    fn brokers(&self) -> String {
        self.mock.bootstrap_servers()
    }

    fn member(&self, protocol: &str, assignment: &str) -> Setup {
        let route = format!(
            "[[route]]\ntopic = \"{INPUT}\"\nplugin = \"counter\"\nconfig = {{ output = \"{OUTPUT}\" }}\n"
        );
        self.member_with(protocol, assignment, "", &route, &["counter"])
    }

    fn member_with(
        &self,
        protocol: &str,
        assignment: &str,
        properties: &str,
        route: &str,
        plugins: &[&str],
    ) -> Setup {
        // KIP-848 moves session and heartbeat settings to the broker.
        let (session, heartbeat) = if protocol == "classic" {
            (
                "session_timeout_ms = 3000\n",
                "\"heartbeat.interval.ms\" = \"500\"\n",
            )
        } else {
            ("", "")
        };
        Setup::new(
            &format!(
                r#"max_batch = 40

[source]
kind = "kafka"
brokers = "{}"
group_protocol = "{protocol}"
assignment = "{assignment}"
{session}commit_interval_ms = 2000

[source.properties]
{heartbeat}{properties}
{route}"#,
                self.brokers()
            ),
            plugins,
        )
    }
}

/// Produces keyed records `k<i % KEYS>` = `v<i>` until stopped.
struct Feeder {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<BTreeMap<String, u64>>,
}

impl Feeder {
    fn start(brokers: String, per_tick: u64) -> Feeder {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let producer = keyed_producer(&brokers);
                let mut counts: BTreeMap<String, u64> = BTreeMap::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..per_tick {
                        let key = format!("k{}", i % KEYS);
                        let value = format!("v{i}");
                        producer
                            .send(BaseRecord::to(INPUT).key(&key).payload(&value))
                            .map_err(|(e, _)| e)
                            .unwrap();
                        *counts.entry(key).or_default() += 1;
                        i += 1;
                    }
                    producer.poll(Duration::ZERO);
                    std::thread::sleep(Duration::from_millis(50));
                }
                // After a broker outage, reconnecting may take librdkafka's
                // reconnect backoff (up to 10 s) first.
                producer.flush(Duration::from_secs(60)).unwrap();
                counts
            }
        });
        Feeder { stop, thread }
    }

    fn finish(self) -> BTreeMap<String, u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// One delivered output: its key, value, origin headers and timestamp.
#[derive(Debug, Clone)]
struct Output {
    headers: BTreeMap<String, String>,
    key: String,
    value: String,
    origin: (String, String, String, String),
    timestamp_ms: Option<i64>,
}

/// Copies of one output are equal in all but the timestamp: a batch formed
/// again is stamped again by the producer unless its handler set one.
impl PartialEq for Output {
    fn eq(&self, other: &Output) -> bool {
        (&self.headers, &self.key, &self.value, &self.origin)
            == (&other.headers, &other.key, &other.value, &other.origin)
    }
}

/// Reads every record of OUTPUT from the beginning.
fn read_outputs(brokers: &str) -> Vec<Output> {
    read_topic(brokers, OUTPUT, 3)
}

/// Reads every record of `topic` from the beginning.
fn read_topic(brokers: &str, topic: &str, partitions: i32) -> Vec<Output> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in 0..partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(5))
            .unwrap();
        ends.insert(p, high);
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut positions: BTreeMap<i32, i64> = (0..partitions).map(|p| (p, 0)).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while positions.iter().any(|(p, pos)| *pos < ends[p]) {
        assert!(Instant::now() < deadline, "reading outputs timed out");
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.unwrap();
        positions.insert(m.partition(), m.offset() + 1);
        let header = |name: &str| {
            m.headers()
                .and_then(|h| {
                    h.iter()
                        .find(|h| h.key == name)
                        .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
                })
                .unwrap_or_else(|| panic!("output without header {name}"))
        };
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        let value = String::from_utf8_lossy(h.value.unwrap_or_default());
                        (h.key.to_owned(), value.into_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(Output {
            headers,
            key: String::from_utf8_lossy(m.key().unwrap()).into_owned(),
            value: String::from_utf8_lossy(m.payload().unwrap()).into_owned(),
            origin: (
                header("linecook.origin.topic"),
                header("linecook.origin.partition"),
                header("linecook.origin.offset"),
                header("linecook.origin.index"),
            ),
            timestamp_ms: m.timestamp().to_millis(),
        });
    }
    out
}

/// Distinct outputs by origin. Panics if two copies of one origin differ:
/// a duplicate must be an exact copy.
fn dedup(outputs: &[Output]) -> BTreeMap<(String, String, String, String), Output> {
    let mut by_origin = BTreeMap::new();
    for o in outputs {
        if let Some(prev) = by_origin.insert(o.origin.clone(), o.clone()) {
            assert_eq!(prev, *o, "two outputs with one origin differ");
        }
    }
    by_origin
}

/// Every count `k:1..=k:N` exactly once per key, where N is how many records
/// of k were produced: nothing lost, no count applied twice.
fn assert_exact_counts(outputs: &[Output], produced: &BTreeMap<String, u64>) {
    let distinct = dedup(outputs);
    let mut seen: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for o in distinct.values() {
        let (key, count) = o.value.rsplit_once(':').expect("counter output");
        assert_eq!(key, o.key);
        let fresh = seen
            .entry(key.to_owned())
            .or_default()
            .insert(count.parse().unwrap());
        assert!(
            fresh,
            "count {} of {key} delivered under two different origins: either state was applied twice or a replayed duplicate cannot be recognised",
            o.value
        );
    }
    for (key, n) in produced {
        let expected: BTreeSet<u64> = (1..=*n).collect();
        assert_eq!(
            seen.get(key),
            Some(&expected),
            "counts of {key}: {n} records produced"
        );
    }
    assert_eq!(distinct.len() as u64, produced.values().sum::<u64>());
}

/// Partitions of INPUT a member's status says it owns.
fn owned(status: &StatusReport) -> BTreeSet<u32> {
    status
        .partitions
        .iter()
        .filter(|p| p.topic == INPUT && p.state.is_some())
        .map(|p| p.partition)
        .collect()
}

/// Waits until `members` own disjoint sets covering every partition, each
/// member at least one, all in the same group generation, and stay so for
/// `SETTLED` — longer than the mock takes for a rebalance round, so a
/// follow-up round (cooperative rebalancing takes two) has shown up by then;
/// returns the statuses.
fn wait_balanced(members: &[&Setup]) -> Vec<StatusReport> {
    type Seen = (Vec<BTreeSet<u32>>, BTreeSet<Option<i32>>);
    let mut stable_since: Option<(Instant, Seen)> = None;
    let mut last = Vec::new();
    wait_until(Duration::from_secs(90), "a balanced assignment", || {
        last = members.iter().map(|m| m.status()).collect::<Vec<_>>();
        let sets: Vec<BTreeSet<u32>> = last.iter().map(owned).collect();
        let total: usize = sets.iter().map(BTreeSet::len).sum();
        let union: BTreeSet<u32> = sets.iter().flatten().copied().collect();
        let generations: BTreeSet<Option<i32>> = last
            .iter()
            .map(|s| s.member.as_ref().and_then(|m| m.generation))
            .collect();
        let balanced = total == PARTITIONS as usize
            && union.len() == PARTITIONS as usize
            && sets.iter().all(|s| !s.is_empty())
            && generations.len() == 1;
        if !balanced {
            stable_since = None;
            return false;
        }
        match &stable_since {
            Some((since, prev)) if *prev == (sets.clone(), generations.clone()) => {
                since.elapsed() > SETTLED
            }
            _ => {
                stable_since = Some((Instant::now(), (sets, generations)));
                false
            }
        }
    });
    last
}

fn total_outputs(brokers: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    (0..3)
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(OUTPUT, p, Duration::from_secs(5))
                .unwrap();
            high - low
        })
        .sum()
}

fn wait_all_counted(brokers: &str, produced: &BTreeMap<String, u64>) -> Vec<Output> {
    wait_all_counted_also_in(brokers, produced, &[])
}

/// `wait_all_counted`, the outputs of OUTPUT and of each (topic, its
/// partition count) of `more` together.
fn wait_all_counted_also_in(
    brokers: &str,
    produced: &BTreeMap<String, u64>,
    more: &[(&str, i32)],
) -> Vec<Output> {
    let total: u64 = produced.values().sum();
    let mut outputs = Vec::new();
    wait_until(
        Duration::from_secs(120),
        "every record to be counted",
        || {
            if more.is_empty() && (total_outputs(brokers) as u64) < total {
                return false;
            }
            outputs = read_outputs(brokers);
            for (topic, partitions) in more {
                outputs.extend(read_topic(brokers, topic, *partitions));
            }
            dedup(&outputs).len() as u64 >= total
        },
    );
    outputs
}

#[test]
fn a_group_of_hosts_shares_partitions_through_joins_swaps_leaves_and_a_kill() {
    build_plugins(None);
    let cluster = Cluster::start();
    let brokers = cluster.brokers();
    let a = cluster.member("classic", "cooperative-sticky");
    let b = cluster.member("classic", "cooperative-sticky");
    let c = cluster.member("classic", "cooperative-sticky");
    let feeder = Feeder::start(brokers.clone(), 8);

    // Two members split the six partitions.
    let mut host_a = a.start();
    host_a.wait_ready();
    let mut host_b = b.start();
    host_b.wait_ready();
    wait_balanced(&[&a, &b]);

    // A third joins: the partitions spread over three, processing goes on.
    let mut host_c = c.start();
    host_c.wait_ready();
    let before = wait_balanced(&[&a, &b, &c]);
    let generations: Vec<(Option<i32>, u64)> = before
        .iter()
        .map(|s| {
            let m = s.member.as_ref().expect("a kafka member reports its group");
            (m.generation, m.rebalances)
        })
        .collect();
    assert!(generations.iter().all(|(g, _)| g.is_some()));

    // A hot swap on one member: its partitions change version, the group
    // does not notice.
    let counter = std::fs::read(plugins().join("counter.wasm")).unwrap();
    let swapped = with_custom_section(&counter, 7);
    let staging = a.dir.path().join("counter.wasm.tmp");
    std::fs::write(&staging, &swapped).unwrap();
    std::fs::rename(&staging, a.dir.path().join("plugins/counter.wasm")).unwrap();
    let a_owned = owned(&before[0]);
    let new_digest = linecook::plugins::digest(&swapped);
    wait_until(
        Duration::from_secs(30),
        "member A to run the new version",
        || {
            let status = a.status();
            let on_new: BTreeSet<u32> = status
                .partitions
                .iter()
                .filter(|p| p.state.is_some() && p.version.as_deref() == Some(new_digest.as_str()))
                .map(|p| p.partition)
                .collect();
            on_new == a_owned
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    let after: Vec<(Option<i32>, u64)> = [&a, &b, &c]
        .iter()
        .map(|m| {
            let s = m.status();
            let g = s.member.expect("group report");
            (g.generation, g.rebalances)
        })
        .collect();
    assert_eq!(
        after, generations,
        "a hot swap changed the group generation or caused a rebalance"
    );
    let a_status = a.status();
    assert_eq!(owned(&a_status), a_owned, "the swap moved partitions");

    // B leaves gracefully; A and C take its partitions.
    host_b.stop();
    wait_balanced(&[&a, &c]);

    // C is killed: A takes everything, restoring C's state from the changelog.
    host_c.kill();
    wait_until(Duration::from_secs(60), "A to own every partition", || {
        owned(&a.status()).len() == PARTITIONS as usize
    });

    let produced = feeder.finish();
    let outputs = wait_all_counted(&brokers, &produced);
    assert_exact_counts(&outputs, &produced);
    let duplicates = outputs.len() - dedup(&outputs).len();
    eprintln!(
        "{} records in, {} outputs delivered, {duplicates} duplicates (identical origin headers)",
        produced.values().sum::<u64>(),
        outputs.len()
    );
    let log = std::fs::read_to_string(&host_a.log).unwrap();
    let restores: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("state restored from the changelog"))
        .collect();
    assert!(!restores.is_empty(), "A never restored a partition's state");
    for line in restores {
        eprintln!("A: {line}");
    }
    host_a.stop();
    drop(cluster);
}

/// Two members split the work, one leaves, the other finishes it: counts
/// exact.
fn two_members_then_one(protocol: &str, assignment: &str) {
    build_plugins(None);
    let cluster = Cluster::start();
    let brokers = cluster.brokers();
    let a = cluster.member(protocol, assignment);
    let b = cluster.member(protocol, assignment);
    let feeder = Feeder::start(brokers.clone(), 4);
    let mut host_a = a.start();
    host_a.wait_ready();
    let mut host_b = b.start();
    host_b.wait_ready();
    let balanced = wait_balanced(&[&a, &b]);
    member_shown_on_the_status_page(&a, &balanced[0]);
    host_b.stop();
    wait_until(Duration::from_secs(60), "A to own every partition", || {
        owned(&a.status()).len() == PARTITIONS as usize
    });
    let produced = feeder.finish();
    let outputs = wait_all_counted(&brokers, &produced);
    assert_exact_counts(&outputs, &produced);
    host_a.stop();
}

/// The status page of a member, read in a browser, shows its generation,
/// the partitions it owns and its outbox backlog as `status` reports them.
fn member_shown_on_the_status_page(setup: &Setup, status: &StatusReport) {
    use support::browser::{attribute, browse, chromium};
    let addr = std::fs::read_to_string(setup.data_dir().join("admin.addr")).unwrap();
    let dom = browse(
        &chromium(),
        &format!("http://{}/", addr.trim()),
        2000,
        &["--dump-dom".to_owned()],
    );
    let member = status.member.as_ref().expect("a member section");
    let marker = "id=\"member\"";
    assert_eq!(
        attribute(&dom, marker, "data-generation"),
        member.generation.unwrap().to_string()
    );
    assert_eq!(
        attribute(&dom, marker, "data-owned"),
        owned(status).len().to_string()
    );
    assert!(
        attribute(&dom, marker, "data-outbox")
            .parse::<u64>()
            .is_ok()
    );
    for p in owned(status) {
        assert!(
            dom.contains(&format!("data-partition=\"{INPUT}/{p}\"")),
            "owned partition {p} is listed"
        );
    }
}

#[test]
fn kip_848_members_share_the_work() {
    two_members_then_one("consumer", "cooperative-sticky");
}

#[test]
fn eager_range_members_share_the_work() {
    two_members_then_one("classic", "range");
}

#[test]
fn a_handler_stuck_past_max_poll_interval_costs_no_rebalance_and_is_dead_lettered() {
    build_plugins(None);
    let cluster = Cluster::start();
    let brokers = cluster.brokers();
    // One batch spins for 4 s, past max.poll.interval.ms: polling must go on.
    let route = format!(
        "[[route]]\ntopic = \"{INPUT}\"\nplugin = \"hostile\"\nconfig = {{ output = \"{OUTPUT}\" }}\nlimits = {{ cpu_ms = 4000 }}\nerrors = {{ retries = 0 }}\n"
    );
    let a = cluster.member_with(
        "classic",
        "cooperative-sticky",
        "\"max.poll.interval.ms\" = \"3000\"\n",
        &route,
        &["hostile"],
    );
    let mut host = a.start();
    host.wait_ready();
    let before = wait_balanced(&[&a]).remove(0).member.unwrap();

    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let send = |key: &str, value: &str| {
        producer
            .send(BaseRecord::to(INPUT).partition(0).key(key).payload(value))
            .map_err(|(e, _)| e)
            .unwrap();
        producer.flush(Duration::from_secs(5)).unwrap();
    };
    send("stuck", "loop");
    wait_until(
        Duration::from_secs(20),
        "the loop record to be dead-lettered",
        || !read_topic(&brokers, &format!("{INPUT}.dlq"), 1).is_empty(),
    );
    for i in 0..20 {
        send("k", &format!("v{i}"));
    }
    let mut outputs = Vec::new();
    wait_until(Duration::from_secs(30), "the records after it", || {
        outputs = read_outputs(&brokers);
        outputs.len() >= 20
    });
    let values: Vec<&str> = outputs.iter().map(|o| o.value.as_str()).collect();
    let expected: Vec<String> = (0..20).map(|i| format!("ok:v{i}")).collect();
    assert_eq!(
        values, expected,
        "records after the stuck one, in order, once"
    );

    let dead = read_topic(&brokers, &format!("{INPUT}.dlq"), 1);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].value, "loop");
    assert_eq!(dead[0].headers["linecook.source.offset"], "0");
    assert_eq!(dead[0].headers["linecook.error.kind"], "limit");

    let after = a.status().member.unwrap();
    assert_eq!(
        (after.generation, after.rebalances),
        (before.generation, before.rebalances),
        "a handler stuck past max.poll.interval.ms cost a rebalance"
    );
    assert_eq!(owned(&a.status()).len(), PARTITIONS as usize);
    host.stop();
}

/// Stops every delivery (changelog and outputs) for a while, so members keep
/// checkpointing batches whose outbox entries cannot leave.
fn hold_deliveries(cluster: &Cluster) {
    cluster.mock.broker_down(DELIVERY_BROKER).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
}

/// Stops every member, then starts a fresh one (empty data directory) that
/// restores all state from the changelog alone, feeds one more record per
/// key and checks it continues every count exactly: `n + 1` for a key seen
/// `n` times, which only a changelog holding every key's final count gives.
fn a_fresh_member_restores_every_final_count(
    cluster: &Cluster,
    hosts: Vec<support::Host>,
    mut produced: BTreeMap<String, u64>,
) {
    for host in hosts {
        host.stop();
    }
    let fresh = cluster.member("classic", "range");
    let mut host = fresh.start();
    host.wait_ready();
    wait_balanced(&[&fresh]);
    let producer = keyed_producer(&cluster.brokers());
    for (key, n) in produced.iter_mut() {
        producer
            .send(BaseRecord::to(INPUT).key(key.as_str()).payload("last"))
            .map_err(|(e, _)| e)
            .unwrap();
        *n += 1;
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let outputs = wait_all_counted(&cluster.brokers(), &produced);
    assert_exact_counts(&outputs, &produced);
    host.stop();
}

/// A split cluster, three eager members of one group sharing the input
/// under a steady feed, balanced.
fn three_members_under_load() -> (Cluster, Vec<Setup>, Vec<support::Host>, Feeder) {
    build_plugins(None);
    let cluster = Cluster::start_split();
    let members: Vec<Setup> = (0..3).map(|_| cluster.member("classic", "range")).collect();
    let feeder = Feeder::start(cluster.brokers(), 8);
    let mut hosts: Vec<support::Host> = members.iter().map(Setup::start).collect();
    for host in &mut hosts {
        host.wait_ready();
    }
    wait_balanced(&members.iter().collect::<Vec<_>>());
    (cluster, members, hosts, feeder)
}

#[test]
fn a_member_restarted_on_its_old_data_directory_delivers_no_stale_work() {
    let (cluster, members, mut hosts, feeder) = three_members_under_load();
    let brokers = cluster.brokers();

    // C is killed while its outbox holds batches nobody has seen.
    hold_deliveries(&cluster);
    let victim = hosts.pop().unwrap();
    victim.kill();
    let stale = members[2].store().outbox_len().unwrap();
    assert!(stale > 0, "the killed member's outbox was empty");
    cluster.mock.broker_up(DELIVERY_BROKER).unwrap();

    // The survivors take its partitions over, replay and commit past them.
    let survivors = [&members[0], &members[1]];
    wait_balanced(&survivors);
    std::thread::sleep(Duration::from_secs(5));

    // C comes back on its old data directory and gets partitions again.
    let mut restarted = members[2].start();
    restarted.wait_ready();
    wait_balanced(&members.iter().collect::<Vec<_>>());
    hosts.push(restarted);
    std::thread::sleep(Duration::from_secs(3));

    let produced = feeder.finish();
    let outputs = wait_all_counted(&brokers, &produced);
    assert_exact_counts(&outputs, &produced);
    eprintln!(
        "{stale} entries left in the killed member's outbox; {} records in, {} outputs, {} duplicates",
        produced.values().sum::<u64>(),
        outputs.len(),
        outputs.len() - dedup(&outputs).len()
    );
    a_fresh_member_restores_every_final_count(&cluster, hosts, produced);
}

#[test]
fn a_zombie_member_that_lost_its_session_cannot_deliver_stale_work() {
    let (cluster, members, hosts, feeder) = three_members_under_load();
    let brokers = cluster.brokers();

    // C freezes with undelivered batches, past its session timeout (3 s):
    // the group gives its partitions to A and B, which go on past them.
    hold_deliveries(&cluster);
    hosts[2].freeze();
    cluster.mock.broker_up(DELIVERY_BROKER).unwrap();
    wait_balanced(&[&members[0], &members[1]]);
    std::thread::sleep(Duration::from_secs(4));

    // C wakes up still believing it owns its partitions.
    hosts[2].thaw();
    wait_balanced(&members.iter().collect::<Vec<_>>());
    std::thread::sleep(Duration::from_secs(3));

    let produced = feeder.finish();
    let outputs = wait_all_counted(&brokers, &produced);
    assert_exact_counts(&outputs, &produced);
    let zombie = members[2].host_log();
    eprintln!(
        "{} records in, {} outputs, {} duplicates; the zombie was fenced {} time(s), dropped stale entries {} time(s)",
        produced.values().sum::<u64>(),
        outputs.len(),
        outputs.len() - dedup(&outputs).len(),
        zombie.matches("claimed by a newer owner").count(),
        zombie.matches("partitions lost").count(),
    );
    a_fresh_member_restores_every_final_count(&cluster, hosts, produced);
}

#[test]
fn static_members_stopped_with_sigterm_fifty_times_never_hang() {
    build_plugins(None);
    let cluster = Cluster::start();
    let feeder = Feeder::start(cluster.brokers(), 4);
    const MEMBERS: usize = 5;
    const STOPS: usize = 10;
    let members: Vec<Setup> = (0..MEMBERS)
        .map(|i| {
            let route = format!(
                "[[route]]\ntopic = \"{INPUT}\"\nplugin = \"counter\"\nconfig = {{ output = \"{OUTPUT}\" }}\n"
            );
            let setup = cluster.member_with("classic", "cooperative-sticky", "", &route, &["counter"]);
            let text = std::fs::read_to_string(&setup.config).unwrap().replace(
                "[source]\n",
                &format!("[source]\ngroup_instance_id = \"static-{i}\"\nrevoke_timeout_ms = 5000\n"),
            );
            std::fs::write(&setup.config, text).unwrap();
            setup
        })
        .collect();
    std::thread::scope(|scope| {
        for (i, member) in members.iter().enumerate() {
            scope.spawn(move || {
                for round in 0..STOPS {
                    let mut host = member.start();
                    host.wait_ready();
                    // Stop at different moments: mid-join, mid-rebalance,
                    // while processing.
                    std::thread::sleep(Duration::from_millis(
                        300 + ((i * 7 + round * 13) % 10) as u64 * 250,
                    ));
                    let started = Instant::now();
                    host.stop();
                    let took = started.elapsed();
                    let log = member.host_log();
                    assert!(
                        !log.contains("did not finish in time"),
                        "member {i}, stop {round}: leaving the group hung ({took:?})"
                    );
                    assert!(
                        took < Duration::from_secs(20),
                        "member {i}, stop {round}: {took:?}"
                    );
                }
            });
        }
    });
    feeder.finish();
    let stops = members
        .iter()
        .map(|m| m.host_log().matches("left the consumer group").count())
        .sum::<usize>();
    assert_eq!(stops, MEMBERS * STOPS, "every stop left the group cleanly");
}

#[test]
fn a_fatal_producer_error_rebuilds_the_producer_and_loses_nothing() {
    build_plugins(None);
    let cluster = Cluster::start_split();
    let brokers = cluster.brokers();
    let a = cluster.member("classic", "cooperative-sticky");
    let mut host = a.start();
    host.wait_ready();
    wait_balanced(&[&a]);

    // Outputs pile up while their broker is away; the first produce request
    // after it returns is answered with a sequence desynchronization, which
    // is fatal for an idempotent producer.
    cluster.mock.broker_down(DELIVERY_BROKER).unwrap();
    let feeder = Feeder::start(brokers.clone(), 8);
    std::thread::sleep(Duration::from_secs(2));
    let produced = feeder.finish();
    cluster.mock.request_errors(
        rdkafka::types::RDKafkaApiKey::Produce,
        &[rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER],
    );
    cluster.mock.broker_up(DELIVERY_BROKER).unwrap();

    let outputs = wait_all_counted(&brokers, &produced);
    assert_exact_counts(&outputs, &produced);
    let member = a.status().member.unwrap();
    assert!(
        member.producer_restarts >= 1,
        "the fatal error was not seen: {member:?}"
    );
    assert!(a.host_log().contains("fatal error"));
    eprintln!(
        "{} records in, {} outputs, {} duplicates, producer rebuilt {} time(s)",
        produced.values().sum::<u64>(),
        outputs.len(),
        outputs.len() - dedup(&outputs).len(),
        member.producer_restarts
    );
    host.stop();
}

#[test]
fn a_broker_outage_longer_than_the_session_shows_in_status_and_loses_nothing() {
    build_plugins(None);
    let cluster = Cluster::start();
    let brokers = cluster.brokers();
    let a = cluster.member("classic", "cooperative-sticky");
    let b = cluster.member("classic", "cooperative-sticky");
    let feeder = Feeder::start(brokers.clone(), 4);
    let mut host_a = a.start();
    host_a.wait_ready();
    let mut host_b = b.start();
    host_b.wait_ready();
    wait_balanced(&[&a, &b]);

    cluster.mock.broker_down(1).unwrap();
    let down = Instant::now();
    let mut status = None;
    wait_until(
        Duration::from_secs(10),
        "status to report the broker outage",
        || {
            let s = a.status();
            // Owned partitions say they wait; past the session timeout
            // there may be none left to say it.
            let none_running = s
                .partitions
                .iter()
                .all(|p| p.state != Some(linecook::status::PartitionState::Running));
            let reported = s.broker.as_ref().is_some_and(|b| !b.up) && none_running;
            status = Some(s);
            reported
        },
    );
    let seen_after = down.elapsed();
    let broker = status.unwrap().broker.unwrap();
    eprintln!("outage shown after {seen_after:?}: {broker:?}");
    assert!(!broker.unreachable.is_empty());
    // Past the session timeout (3 s): the group falls apart and re-forms.
    std::thread::sleep(Duration::from_secs(6));
    cluster.mock.broker_up(1).unwrap();
    wait_balanced(&[&a, &b]);
    // The producer may still be in librdkafka's reconnect backoff.
    wait_until(
        Duration::from_secs(30),
        "status to report the broker back",
        || a.status().broker.is_some_and(|b| b.up),
    );

    let produced = feeder.finish();
    let outputs = wait_all_counted(&brokers, &produced);
    assert_exact_counts(&outputs, &produced);
    host_a.stop();
    host_b.stop();
}

/// A producer that partitions keyed records as Kafka's Java client does
/// (and as linecook's embedded log does).
fn keyed_producer(brokers: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap()
}

/// Sends `per_key` records for every key and adds them to `produced`.
fn produce_per_key(brokers: &str, per_key: u64, produced: &mut BTreeMap<String, u64>) {
    let producer = keyed_producer(brokers);
    for i in 0..KEYS * per_key {
        let key = format!("k{}", i % KEYS);
        producer
            .send(BaseRecord::to(INPUT).key(&key).payload("x"))
            .map_err(|(e, _)| e)
            .unwrap();
        *produced.entry(key).or_default() += 1;
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

#[test]
fn offsets_reset_while_stopped_are_honoured_and_a_running_member_resets_at_a_batch_boundary() {
    build_plugins(None);
    let cluster = Cluster::start();
    let brokers = cluster.brokers();
    let member = cluster.member("classic", "range");
    let reset = |to: &str| member.cli(&["partitions", "reset", "--topic", INPUT, to]);

    let mut produced = BTreeMap::new();
    let mut host = member.start();
    host.wait_ready();
    wait_balanced(&[&member]);
    produce_per_key(&brokers, 2, &mut produced);
    wait_all_counted(&brokers, &produced);
    host.stop();

    // Forward, while stopped: a record per key is skipped. Its local
    // checkpoint is behind the group's now; the skipped records are never
    // counted, and state is what it was.
    produce_per_key(&brokers, 1, &mut BTreeMap::new());
    let out = reset("--to-latest");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(said.lines().count(), PARTITIONS as usize, "{said}");
    let mut host = member.start();
    host.wait_ready();
    wait_balanced(&[&member]);
    produce_per_key(&brokers, 1, &mut produced);
    let outputs = wait_all_counted(&brokers, &produced);
    assert_exact_counts(&outputs, &produced);
    host.stop();

    // Backward, while stopped: the local checkpoint is ahead of the group's
    // (what used to be ignored). Everything is handled again from state as
    // of offset 0, so every key counts up to its 4 records — the skipped one
    // included this time — and never past.
    let out = reset("--to-earliest");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut host = member.start();
    host.wait_ready();
    let highest = |outputs: &[Output]| -> BTreeMap<String, u64> {
        let mut highest: BTreeMap<String, u64> = BTreeMap::new();
        for o in outputs {
            let count: u64 = o.value.rsplit_once(':').unwrap().1.parse().unwrap();
            let h = highest.entry(o.key.clone()).or_default();
            *h = (*h).max(count);
        }
        highest
    };
    let all_four: BTreeMap<String, u64> = (0..KEYS).map(|k| (format!("k{k}"), 4)).collect();
    wait_until(
        Duration::from_secs(90),
        "every key counted again to 4",
        || highest(&read_outputs(&brokers)) == all_four,
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        highest(&read_outputs(&brokers)),
        all_four,
        "state as of offset 0, not kept"
    );

    // Backward again, with the member running: each partition moves at a
    // batch boundary, with no rebalance. Every record is handled again
    // (more outputs) from state as of offset 0 (counts stay at 4), and a
    // record per key afterwards counts 5.
    wait_balanced(&[&member]);
    let generation = member.status().member.and_then(|m| m.generation);
    let before = total_outputs(&brokers);
    let out = reset("--to-earliest");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        PARTITIONS as usize
    );
    let handled_again = KEYS as i64 * 4;
    wait_until(
        Duration::from_secs(90),
        "every record handled again",
        || total_outputs(&brokers) >= before + handled_again,
    );
    assert_eq!(
        highest(&read_outputs(&brokers)),
        all_four,
        "state rebuilt, not kept"
    );
    produce_per_key(&brokers, 1, &mut BTreeMap::new());
    let all_five: BTreeMap<String, u64> = (0..KEYS).map(|k| (format!("k{k}"), 5)).collect();
    wait_until(Duration::from_secs(60), "every key counted to 5", || {
        highest(&read_outputs(&brokers)) == all_five
    });
    let status = member.status();
    assert_eq!(
        status.member.as_ref().and_then(|m| m.generation),
        generation,
        "no rebalance"
    );
    assert_eq!(owned(&status).len(), PARTITIONS as usize);
    host.stop();
}

#[test]
fn replay_reads_a_kafka_topic_without_joining_the_group() {
    build_plugins(None);
    let cluster = Cluster::start();
    let brokers = cluster.brokers();
    let member = cluster.member("classic", "range");
    let mut produced = BTreeMap::new();
    produce_per_key(&brokers, 3, &mut produced);
    let plugin = plugins().join("counter.wasm");
    let out = member.cli(&[
        "replay",
        "--plugin",
        plugin.to_str().unwrap(),
        "--topic",
        INPUT,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every key counted 1, 2, 3 in offset order, as the route would.
    let mut counts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let line: serde_json::Value = serde_json::from_str(line).unwrap();
        let value = line["value"].as_str().unwrap();
        let (key, n) = value.rsplit_once(':').unwrap();
        counts
            .entry(key.to_owned())
            .or_default()
            .push(n.parse().unwrap());
    }
    let expected: BTreeMap<String, Vec<u64>> = produced
        .keys()
        .map(|k| (k.clone(), vec![1, 2, 3]))
        .collect();
    assert_eq!(counts, expected);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("replayed {} records", KEYS * 3))
    );
    // Nothing was committed for the group.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "test")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(INPUT, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(5))
        .unwrap();
    assert!(
        committed
            .elements()
            .iter()
            .all(|e| !matches!(e.offset(), Offset::Offset(_))),
        "{committed:?}"
    );
}

#[test]
fn routes_reload_on_a_running_member_with_nothing_lost_or_repeated() {
    const SECOND: &str = "second";
    const SECOND_OUT: &str = "second-out";
    const MOVED_OUT: &str = "counts-moved";
    // `tag` built with the default tag, `v1`.
    build_plugins(None);
    let cluster = Cluster::start();
    let brokers = cluster.brokers();
    // The topics of the route the reload adds (the mock cannot create any).
    cluster.mock.create_topic(SECOND, 2, 1).unwrap();
    cluster.mock.create_topic(SECOND_OUT, 1, 1).unwrap();
    cluster.mock.create_topic(MOVED_OUT, 3, 1).unwrap();
    cluster
        .mock
        .create_topic(&format!("test-{SECOND}-changelog"), 2, 1)
        .unwrap();
    cluster
        .mock
        .create_topic(&format!("{SECOND}.dlq"), 1, 1)
        .unwrap();
    let member = cluster.member_with(
        "classic",
        "cooperative-sticky",
        "",
        &format!(
            "[[route]]\ntopic = \"{INPUT}\"\nplugin = \"counter\"\nconfig = {{ output = \"{OUTPUT}\" }}\n"
        ),
        &["counter", "tag"],
    );
    let original = std::fs::read_to_string(&member.config).unwrap();
    let feeder = Feeder::start(brokers.clone(), 4);
    let mut host = member.start();
    host.wait_ready();
    wait_balanced(&[&member]);
    let reloads = || member.host_log().matches("config reloaded").count();
    let generation = || member.status().member.unwrap().generation;
    let before = generation();

    // Changed: the counter writes to another topic from now on. Its
    // partitions drain at a batch boundary and go on under new workers,
    // still owned: no rebalance.
    std::fs::write(
        &member.config,
        original.replace(
            &format!("output = \"{OUTPUT}\" }}"),
            &format!("output = \"{MOVED_OUT}\" }}"),
        ),
    )
    .unwrap();
    wait_until(
        Duration::from_secs(30),
        "the changed route to reload",
        || reloads() == 1,
    );
    wait_until(Duration::from_secs(30), "counts in the new topic", || {
        !read_topic(&brokers, MOVED_OUT, 3).is_empty()
    });
    assert_eq!(generation(), before, "a changed route rebalanced the group");
    let changed = std::fs::read_to_string(&member.config).unwrap();

    // Added: a route on a second topic; the member subscribes to it and the
    // group hands its partitions over.
    let added = format!(
        "{changed}[[route]]\ntopic = \"{SECOND}\"\nplugin = \"tag\"\nconfig = {{ output = \"{SECOND_OUT}\" }}\n"
    );
    std::fs::write(&member.config, &added).unwrap();
    wait_until(Duration::from_secs(60), "the added route to run", || {
        member
            .status()
            .partitions
            .iter()
            .filter(|p| p.topic == SECOND && p.state.is_some())
            .count()
            == 2
    });
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    for i in 0..20 {
        let value = format!("s{i}");
        producer
            .send(BaseRecord::to(SECOND).key(&value).payload(&value))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let mut tagged = Vec::new();
    wait_until(Duration::from_secs(60), "the added route's outputs", || {
        tagged = read_topic(&brokers, SECOND_OUT, 1);
        tagged.len() >= 20
    });
    let mut values: Vec<String> = tagged.iter().map(|o| o.value.clone()).collect();
    values.sort();
    let mut want: Vec<String> = (0..20).map(|i| format!("v1:s{i}")).collect();
    want.sort();
    assert_eq!(values, want);

    // A bad edit (a plugin that is not there) is refused; the routes run on.
    std::fs::write(
        &member.config,
        added.replace("plugin = \"tag\"", "plugin = \"missing\""),
    )
    .unwrap();
    wait_until(
        Duration::from_secs(30),
        "the bad edit to be refused",
        || {
            member
                .host_log()
                .contains("rejected, the running config stays")
        },
    );

    // Removed: the second route goes; the member unsubscribes and its
    // partitions are drained, committed and given back.
    std::fs::write(&member.config, &changed).unwrap();
    wait_until(Duration::from_secs(60), "the removed route to stop", || {
        !member
            .status()
            .partitions
            .iter()
            .any(|p| p.topic == SECOND && p.state.is_some())
    });
    assert_eq!(reloads(), 3, "{}", member.host_log());

    // The counter ran through all of it: every count exactly once, in one
    // topic or the other.
    let produced = feeder.finish();
    let outputs = wait_all_counted_also_in(&brokers, &produced, &[(MOVED_OUT, 3)]);
    assert_exact_counts(&outputs, &produced);
    host.stop();
}

/// Outputs of OUTPUT per key, each origin once, in the order delivered.
fn values_per_key(brokers: &str) -> BTreeMap<String, Vec<String>> {
    let mut seen = BTreeSet::new();
    let mut per_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for o in read_outputs(brokers) {
        if seen.insert(o.origin.clone()) {
            per_key.entry(o.key).or_default().push(o.value);
        }
    }
    per_key
}

/// A counter whose route sets `state_ttl_ms = ttl_ms` counts two records
/// per key on one member, which stops; `pause` later a fresh member (an
/// empty data directory) restores the partitions from the changelog and
/// counts one more. Returns each key's counts.
fn counts_across_a_move(ttl_ms: u64, pause: Duration) -> BTreeMap<String, Vec<String>> {
    build_plugins(None);
    let cluster = Cluster::start();
    let brokers = cluster.brokers();
    let route = format!(
        "[[route]]\ntopic = \"{INPUT}\"\nplugin = \"counter\"\nstate_ttl_ms = {ttl_ms}\nconfig = {{ output = \"{OUTPUT}\" }}\n"
    );
    let distinct = |n: u64| {
        wait_until(Duration::from_secs(90), "every count delivered", || {
            dedup(&read_outputs(&brokers)).len() as u64 >= n
        })
    };
    let mut produced = BTreeMap::new();
    let first = cluster.member_with("classic", "range", "", &route, &["counter"]);
    let mut host = first.start();
    host.wait_ready();
    wait_balanced(&[&first]);
    produce_per_key(&brokers, 2, &mut produced);
    distinct(KEYS * 2);
    host.stop();
    std::thread::sleep(pause);

    let fresh = cluster.member_with("classic", "range", "", &route, &["counter"]);
    let mut host = fresh.start();
    host.wait_ready();
    wait_balanced(&[&fresh]);
    produce_per_key(&brokers, 1, &mut produced);
    distinct(KEYS * 3);
    host.stop();
    let counts = values_per_key(&brokers);
    assert_eq!(counts.len() as u64, KEYS);
    counts
}

#[test]
fn state_written_with_a_time_to_live_keeps_it_when_the_partition_moves() {
    // Ten minutes: still running on the new member, which counts on.
    for (key, counts) in counts_across_a_move(600_000, Duration::ZERO) {
        assert_eq!(
            counts,
            [format!("{key}:1"), format!("{key}:2"), format!("{key}:3")]
        );
    }
}

#[test]
fn state_past_its_time_to_live_is_not_brought_back_by_a_restore() {
    // Two seconds, and the move takes longer: the restored counts are
    // already expired, so the new member starts every key over. A restore
    // that kept the values but not their expiry would count on to 3.
    for (key, counts) in counts_across_a_move(2_000, Duration::from_millis(2_500)) {
        assert_eq!(
            counts,
            [format!("{key}:1"), format!("{key}:2"), format!("{key}:1")]
        );
    }
}

/// Sends one record per key with timestamp `ts` for each of `timestamps`.
fn produce_at(brokers: &str, timestamps: &[i64]) {
    let producer = keyed_producer(brokers);
    for &ts in timestamps {
        for i in 0..KEYS {
            let key = format!("k{i}");
            producer
                .send(BaseRecord::to(INPUT).key(&key).payload("x").timestamp(ts))
                .map_err(|(e, _)| e)
                .unwrap();
        }
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

#[test]
fn pending_timers_move_with_the_partition_and_fire_exactly_once() {
    build_plugins(None);
    let cluster = Cluster::start();
    let brokers = cluster.brokers();
    let route = format!(
        "[[route]]\ntopic = \"{INPUT}\"\nplugin = \"window_count\"\nconfig = {{ output = \"{OUTPUT}\", window_ms = 1000 }}\n"
    );
    let distinct = |n: u64| {
        wait_until(Duration::from_secs(90), "every window delivered", || {
            dedup(&read_outputs(&brokers)).len() as u64 >= n
        })
    };
    // Two records per key in window 0..1000, then one in 1000..2000: the
    // watermark passes 1000, window 0 fires, window 1000's timers wait.
    let first = cluster.member_with("classic", "range", "", &route, &["window_count"]);
    let mut host = first.start();
    host.wait_ready();
    wait_balanced(&[&first]);
    produce_at(&brokers, &[100, 200, 1_500]);
    distinct(KEYS);
    // No chance to commit anything more: the group's offset is at most the
    // boundary where window 0 fired, so the new owner finds that firing in
    // the changelog past its start.
    host.kill();

    let fresh = cluster.member_with("classic", "range", "", &route, &["window_count"]);
    let mut host = fresh.start();
    host.wait_ready();
    wait_balanced(&[&fresh]);
    // Window 1000's timers come with the partitions.
    let pending = || -> u64 {
        fresh
            .status()
            .partitions
            .iter()
            .map(|p| p.timers_pending)
            .sum()
    };
    wait_until(Duration::from_secs(60), "the timers restored", || {
        pending() == KEYS
    });
    produce_at(&brokers, &[2_500]);
    distinct(KEYS * 2);
    host.stop();
    // Duplicates (same origin) are exact copies (`dedup` checks); distinct
    // origins are distinct windows: none lost, none fired twice.
    for (key, windows) in values_per_key(&brokers) {
        assert_eq!(windows, [format!("{key}:0:2"), format!("{key}:1000:1")]);
    }
    let log = fresh.host_log();
    assert!(
        log.contains("applied again as recorded"),
        "the new owner applied the old owner's firings from their records:\n{log}"
    );
    // Each window's output carries the timestamp its handler gave it, its
    // end, through the outbox (and a firing's record).
    for o in read_outputs(&brokers) {
        let end = if o.value.ends_with(":0:2") {
            1_000
        } else {
            2_000
        };
        assert_eq!(o.timestamp_ms, Some(end), "{}", o.value);
    }
}
