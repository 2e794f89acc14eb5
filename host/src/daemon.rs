//! `linecook run`: opens the store, loads plugins, serves the admin API, joins
//! the group and runs one worker per owned partition until shutdown.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::admin::{AdminState, router};
use crate::config::Config;
use crate::config::Source;
use crate::group::{Assignment, EmbeddedMember, GroupEvent, GroupMember, TopicPartition};
use crate::kafka;
use crate::metrics::Metrics;
use crate::plugins::{PluginError, Registry, watcher};
use crate::rollout;
use crate::runtime::Runtime;
use crate::status::Live;
use crate::store::{Store, StoreError};
use crate::worker::{self, WorkerSpec};

/// File in the data directory holding the address the admin API listens on,
/// while the host runs.
pub const ADMIN_ADDR_FILE: &str = "admin.addr";

/// Directory in the data directory holding compiled plugin artifacts.
pub const COMPILED_DIR: &str = "compiled";

/// Directory in the data directory keeping the bytes of accepted plugin
/// versions, by plugin name: what a start falls back to.
pub const KEPT_DIR: &str = "accepted";

/// How long to keep trying when the store is briefly held by a CLI command.
const OPEN_RETRY: Duration = Duration::from_secs(3);

struct Running {
    cancel: CancellationToken,
    task: worker::pool::JoinHandle,
}

/// Where partitions run: a few threads running every owned partition's
/// worker task, and the thread that writes their group commits.
struct Pool {
    workers: Option<worker::Pool>,
    committer: Option<std::thread::JoinHandle<()>>,
    store: Arc<Store>,
}

impl Pool {
    fn start(store: Arc<Store>, threads: usize) -> anyhow::Result<Pool> {
        let workers = worker::Pool::start(threads, tokio::runtime::Handle::current())
            .context("starting the worker pool")?;
        let committer = {
            let store = store.clone();
            std::thread::Builder::new()
                .name("lc-commit".into())
                .spawn(move || store.run_committer())
                .context("starting the committer thread")?
        };
        info!(threads, "worker pool started");
        Ok(Pool {
            workers: Some(workers),
            committer: Some(committer),
            store,
        })
    }

    fn workers(&self) -> &worker::Pool {
        self.workers.as_ref().expect("running")
    }
}

impl Drop for Pool {
    /// After every worker returned: writes what is queued, then stops.
    fn drop(&mut self) {
        drop(self.workers.take());
        self.store.stop_committer();
        if let Some(committer) = self.committer.take() {
            let _ = committer.join();
        }
    }
}

/// Runs the host until `shutdown` is cancelled, then releases every partition
/// after its batch in flight is checkpointed.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let config = Arc::new(config);
    // Nothing is created — data directory, topics — before the routes are
    // known to be runnable.
    let fresh = !config.data_dir.join(crate::store::STORE_FILE).exists();
    let token = config.admin_token().map_err(anyhow::Error::msg)?;
    let kept = |plugin: &str| {
        std::fs::read_dir(config.data_dir.join(KEPT_DIR).join(plugin))
            .is_ok_and(|mut entries| entries.next().is_some())
    };
    let plugins_present: HashSet<String> = config
        .routes
        .iter()
        .map(|r| r.plugin.clone())
        .filter(|p| config.plugin_path(p).exists() || kept(p))
        .collect();
    if let Some(problem) = unrunnable_route(&config, fresh.then_some(&[][..]), &plugins_present) {
        anyhow::bail!(problem);
    }
    let store = Arc::new(open_store(&config).await?);
    if matches!(config.source, Source::Embedded) {
        let existing: Vec<String> = store.topics()?.into_iter().map(|t| t.name).collect();
        if let Some(problem) = unrunnable_route(&config, Some(&existing), &plugins_present) {
            anyhow::bail!(problem);
        }
    }
    // A host killed without cleanup leaves its address behind; holding the
    // store proves that host is gone.
    let addr_file = config.data_dir.join(ADMIN_ADDR_FILE);
    let _ = std::fs::remove_file(&addr_file);
    store
        .claim_group(&config.group)
        .context("checking the data directory's group")?;
    match &config.source {
        Source::Embedded => {
            for topic in &config.topics {
                store
                    .create_topic(&topic.name, topic.partitions)
                    .with_context(|| format!("creating topic `{}` from the config", topic.name))?;
            }
            for route in &config.routes {
                let dlq = route.dead_letter_topic();
                if matches!(store.topic(&dlq), Err(StoreError::UnknownTopic(_))) {
                    store
                        .create_topic(&dlq, route.errors.dead_letter_partitions)
                        .with_context(|| format!("creating dead-letter topic `{dlq}`"))?;
                    info!(topic = %dlq, "dead-letter topic created");
                }
            }
        }
        Source::Kafka(source) => {
            // The store keeps a Kafka topic's partition count (and an id for
            // its checkpoints and state); records stay in the cluster.
            for (name, partitions) in kafka::prepare_topics(&config, source).await? {
                store.create_topic(&name, partitions).with_context(|| {
                    format!("recording Kafka topic `{name}` ({partitions} partitions) in the store")
                })?;
            }
        }
    }
    let mut topics = BTreeMap::new();
    for route in &config.routes {
        let topic = store
            .topic(&route.topic)
            .with_context(|| format!("route for topic `{}`", route.topic))?;
        topics.insert(route.topic.clone(), topic);
    }

    let runtime = Arc::new(Runtime::new()?);
    let registry = Arc::new(
        Registry::new(
            runtime,
            config.plugins_dir.clone(),
            Some(config.data_dir.join(COMPILED_DIR)),
            Some(config.data_dir.join(KEPT_DIR)),
        )
        .with_trust(config.trust()),
    );
    let plugins: HashSet<&str> = config.routes.iter().map(|r| r.plugin.as_str()).collect();
    // Versions still to prove in shadow, published once the rollouts run.
    let mut unproven = Vec::new();
    for &name in &plugins {
        let reg = registry.clone();
        let owned = name.to_owned();
        let loaded = tokio::task::spawn_blocking(move || reg.load(&owned)).await?;
        let version = match loaded {
            Ok(version) => version,
            Err(e) => fall_back(&registry, &store, &config, &topics, name, e).await?,
        };
        info!(
            plugin = name,
            version = version.short_digest(),
            size = version.size,
            source = ?version.source,
            prepare_ms = version.prepare_time.as_millis() as u64,
            "plugin loaded"
        );
        if let Some(serving) =
            serving_instead(&registry, &store, &config, &topics, &version).await?
        {
            info!(
                plugin = name,
                "{} is not proven yet: partitions last committed with {}, which serves while {} runs in shadow again",
                version.short_digest(),
                serving.short_digest(),
                version.short_digest()
            );
            registry.publish(serving);
            unproven.push(version);
        } else {
            registry.publish(version);
        }
    }
    let mut rollouts = BTreeMap::new();
    for route in &config.routes {
        let topic = &topics[&route.topic];
        rollouts.insert(
            route.topic.clone(),
            start_rollout(route, topic, &registry, &shutdown),
        );
    }
    for version in unproven {
        registry.publish(version);
    }
    let watched = Arc::new(std::sync::Mutex::new(
        plugins
            .iter()
            .map(|p| p.to_string())
            .collect::<HashSet<String>>(),
    ));
    let watcher = watcher::spawn(registry.clone(), watched.clone(), shutdown.child_token())?;
    let (reload_tx, mut reloads) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
    let _config_watcher = watch_config(&config.path, reload_tx.clone());
    let hangups = tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            let _ = reload_tx.send("SIGHUP");
        }
    });

    let live = Arc::new(Live::default());
    let metrics = Arc::new(Metrics::new());
    let sampler = tokio::spawn({
        let live = live.clone();
        let kafka = matches!(config.source, Source::Kafka(_));
        let (store, metrics) = (store.clone(), metrics.clone());
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut outbox = OutboxWatch::default();
            loop {
                tick.tick().await;
                live.sample();
                if kafka {
                    outbox.sample(&store, &live, &metrics);
                }
            }
        }
    });
    let tls = match &config.admin_tls {
        Some(tls) => Some(crate::tls::acceptor(&tls.cert_file, &tls.key_file)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(config.admin)
        .await
        .with_context(|| format!("binding the admin API to {}", config.admin))?;
    let admin_addr = listener.local_addr()?;
    std::fs::write(&addr_file, admin_addr.to_string())
        .with_context(|| format!("writing {}", addr_file.display()))?;
    let admin_stop = CancellationToken::new();
    let admin_config = Arc::new(std::sync::RwLock::new(config.clone()));
    let state = AdminState {
        token: token.map(Arc::from),
        store: store.clone(),
        config: admin_config.clone(),
        live: live.clone(),
        registry: registry.clone(),
        metrics: metrics.clone(),
    };
    let app = router(state.clone());
    let admin = tokio::spawn(serve(listener, tls, app, admin_stop.clone()));
    let read_only_listener = match config.metrics {
        Some(addr) => {
            let metrics_tls = match &config.metrics_tls {
                Some(tls) => Some(crate::tls::acceptor(&tls.cert_file, &tls.key_file)?),
                None => None,
            };
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the metrics listener to {addr}"))?;
            info!(metrics = %listener.local_addr()?, tls = metrics_tls.is_some(), "serving /metrics, /status and /healthz");
            let app = crate::admin::read_only(state);
            Some(tokio::spawn(serve(
                listener,
                metrics_tls,
                app,
                admin_stop.clone(),
            )))
        }
        None => None,
    };
    info!(group = %config.group, admin = %admin_addr, routes = config.routes.len(), "linecook running");

    let deliver_stop = CancellationToken::new();
    let mut deliverer = None;
    let mut member: Box<dyn GroupMember> = match &config.source {
        Source::Embedded => Box::new(EmbeddedMember::new(
            topics
                .values()
                .flat_map(|t| {
                    (0..t.partitions).map(|partition| TopicPartition {
                        topic: t.name.clone(),
                        partition,
                    })
                })
                .collect(),
        )),
        Source::Kafka(source) => {
            let leases = Arc::new(kafka::fence::Leases::default());
            let member = kafka::member::KafkaMember::start(
                &config,
                source,
                store.clone(),
                topics.clone(),
                leases.clone(),
                live.clone(),
                metrics.clone(),
            )?;
            let d = kafka::deliver::Deliverer::new(
                store.clone(),
                &kafka::ClientSettings::new(source),
                &config.group,
                leases,
                metrics.clone(),
                live.clone(),
            )?;
            let stop = deliver_stop.clone();
            let grace = Duration::from_millis(source.revoke_timeout_ms);
            let rt = tokio::runtime::Handle::current();
            deliverer = Some(
                std::thread::Builder::new()
                    .name("lc-outbox".into())
                    .spawn(move || d.run(stop, grace, rt))?,
            );
            Box::new(member)
        }
    };
    let retention_stop = CancellationToken::new();
    let retention = {
        let plan = crate::retention::Plan::from_config(&config);
        let (store, metrics, stop) = (store.clone(), metrics.clone(), retention_stop.clone());
        (matches!(config.source, Source::Embedded) && plan.any()).then(|| {
            std::thread::Builder::new()
                .name("lc-retention".into())
                .spawn(move || plan.run(&store, &metrics, &stop))
        })
    }
    .transpose()?;
    let mut workers: BTreeMap<TopicPartition, Running> = BTreeMap::new();
    let rt = tokio::runtime::Handle::current();
    let pool = Pool::start(store.clone(), config.worker_threads())?;
    let mut leaving = false;
    let mut config = config;
    let egress = std::sync::Mutex::new(BTreeMap::new());
    let spawn = Spawn {
        store: &store,
        live: &live,
        metrics: &metrics,
        rt: &rt,
        shutdown: &shutdown,
        pool: pool.workers(),
        registry: &registry,
        egress: &egress,
    };
    let outcome = loop {
        let event = tokio::select! {
            _ = shutdown.cancelled(), if !leaving => {
                info!("shutting down: leaving the group");
                leaving = true;
                member.leave();
                continue;
            }
            Some(why) = reloads.recv(), if !leaving => {
                // An editor's save is several events: reload once, after.
                tokio::time::sleep(RELOAD_SETTLE).await;
                while reloads.try_recv().is_ok() {}
                let mut routes = Routes {
                    config: config.clone(),
                    rollouts: &mut rollouts,
                    topics: &mut topics,
                    workers: &mut workers,
                };
                match reload_routes(&mut routes, &spawn, &watched, &*member).await {
                    Ok(Some(new)) => {
                        *admin_config.write().expect("config lock") = new.clone();
                        config = new;
                    }
                    Ok(None) => info!("config reloaded ({why}): no route changed"),
                    Err(e) => error!("config reload ({why}) rejected, the running config stays: {e:#}"),
                }
                continue;
            }
            event = member.next_event() => event,
        };
        match event {
            Ok(None) => break Ok(()),
            Ok(Some(GroupEvent::Assigned(assignments))) => {
                if matches!(config.source, Source::Embedded) {
                    metrics.rebalances.inc();
                }
                for Assignment { tp, source } in assignments {
                    // A reload that removed the route may race with this
                    // assignment: the partition goes back at the rebalance
                    // the new subscription brings.
                    let Some(route) = config.routes.iter().find(|r| r.topic == tp.topic) else {
                        warn!(topic = %tp.topic, partition = tp.partition, "assigned a partition of a route a reload removed; it is not run");
                        continue;
                    };
                    let running = spawn.partition(
                        &config,
                        route,
                        &rollouts[&tp.topic],
                        &topics[&tp.topic],
                        tp.partition,
                        source,
                    );
                    workers.insert(tp, running);
                }
                info!(partitions = workers.len(), "partitions assigned");
            }
            Ok(Some(GroupEvent::Revoked(partitions, done))) => {
                let released: Vec<Running> = partitions
                    .iter()
                    .filter_map(|tp| workers.remove(tp))
                    .collect();
                join_all(released).await;
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
            Err(e) => break Err(e),
        }
    };

    info!("shutting down: finishing batches in flight");
    join_all(std::mem::take(&mut workers).into_values().collect()).await;
    drop(pool);
    // Left the group: the outbox gets until its grace period to empty.
    drop(member);
    deliver_stop.cancel();
    if let Some(d) = deliverer {
        let _ = tokio::task::spawn_blocking(move || d.join()).await;
    }
    retention_stop.cancel();
    if let Some(r) = retention {
        let _ = tokio::task::spawn_blocking(move || r.join()).await;
    }
    watcher.abort();
    hangups.abort();
    sampler.abort();
    admin_stop.cancel();
    if let Err(e) = admin.await? {
        warn!("admin API stopped with an error: {e}");
    }
    if let Some(listener) = read_only_listener
        && let Err(e) = listener.await?
    {
        warn!("metrics listener stopped with an error: {e}");
    }
    let _ = std::fs::remove_file(&addr_file);
    info!("stopped");
    outcome
}

/// Serves `app` on `listener` — over TLS only when `tls` is given — until
/// `stop`.
async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: axum::Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    match tls {
        Some(acceptor) => {
            axum::serve(crate::tls::TlsListener::new(listener, acceptor), app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        }
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        }
    }
}

/// How long a reload waits for the config file to settle after a change.
const RELOAD_SETTLE: Duration = Duration::from_millis(300);

/// Starts the rollout controller of `route` over every partition of `topic`,
/// following its plugin's published versions.
fn start_rollout(
    route: &crate::config::RouteConfig,
    topic: &crate::log::TopicInfo,
    registry: &Arc<Registry>,
    shutdown: &CancellationToken,
) -> rollout::RouteRollout {
    let partitions: Vec<u32> = (0..topic.partitions).collect();
    if let crate::config::Rollout::Canary { canary, .. } = route.rollout.after_shadow()
        && canary >= topic.partitions
    {
        warn!(
            topic = %route.topic,
            "rollout canary = {canary}, but the topic has {} partition(s): every partition is a canary, so a new version goes everywhere at once",
            topic.partitions
        );
    }
    let versions = registry
        .subscribe(&route.plugin)
        .expect("every routed plugin is published before its rollout starts");
    rollout::start(
        &route.topic,
        route.rollout,
        &partitions,
        registry.clone(),
        versions,
        shutdown.child_token(),
    )
}

/// What starting a partition's worker takes.
struct Spawn<'a> {
    store: &'a Arc<Store>,
    live: &'a Arc<Live>,
    metrics: &'a Arc<Metrics>,
    rt: &'a tokio::runtime::Handle,
    shutdown: &'a CancellationToken,
    pool: &'a worker::Pool,
    registry: &'a Arc<Registry>,
    /// Each route's outbound HTTP policy, shared by its partitions, kept
    /// while its `http` table stays the same.
    egress: &'a std::sync::Mutex<BTreeMap<String, Egressing>>,
}

/// A route's `http` table and the policy built from it.
type Egressing = (crate::config::HttpAccess, Arc<crate::egress::Egress>);

impl Spawn<'_> {
    /// The outbound HTTP policy of `route` (one refusing everything without
    /// an `http` table).
    fn egress(&self, route: &crate::config::RouteConfig) -> Option<Arc<crate::egress::Egress>> {
        let Some(access) = route.http.as_ref() else {
            return Some(Arc::new(crate::egress::Egress::none(
                &route.topic,
                Some(self.metrics.http.clone()),
            )));
        };
        let mut kept = self.egress.lock().expect("egress lock");
        if let Some((kept_access, egress)) = kept.get(&route.topic)
            && kept_access == access
        {
            return Some(egress.clone());
        }
        match crate::egress::Egress::new(&route.topic, access, Some(self.metrics.http.clone())) {
            Ok(egress) => {
                let egress = Arc::new(egress);
                kept.insert(route.topic.clone(), (access.clone(), egress.clone()));
                Some(egress)
            }
            Err(e) => {
                // Checked when the config was read; a credential file removed
                // since refuses the route's requests rather than its start.
                error!(topic = %route.topic, "http: {e}; every request of this route is refused");
                None
            }
        }
    }

    /// Starts the worker of `partition` of `route`'s topic.
    fn partition(
        &self,
        config: &Config,
        route: &crate::config::RouteConfig,
        rollout: &rollout::RouteRollout,
        topic: &crate::log::TopicInfo,
        partition: u32,
        source: Box<dyn crate::source::Source>,
    ) -> Running {
        let cover = "the rollout covers every partition of its topic";
        let cancel = self.shutdown.child_token();
        let task = worker::spawn(
            WorkerSpec {
                store: self.store.clone(),
                topic: topic.clone(),
                partition,
                plugin: route.plugin.clone(),
                config: route.plugin_config(),
                limits: route.limits,
                egress: self.egress(route),
                errors: route.errors.clone(),
                time: route.time(),
                on_truncated: route.on_truncated,
                dead_letter_topic: route.dead_letter_topic(),
                resume: self.live.resume_signal(&topic.name, partition),
                metrics: self.metrics.clone(),
                versions: rollout.target(partition).expect(cover),
                shadow: rollout.shadow(partition).expect(cover),
                max_shadow_slowdown_percent: route.rollout.max_shadow_slowdown_percent(),
                shadow_compare: route.shadow_compare.clone(),
                origin_headers: route.origin_headers,
                events: rollout.events(),
                max_batch: config.max_batch,
                live: self.live.clone(),
                cancel: cancel.clone(),
                rt: self.rt.clone(),
            },
            source,
            self.pool,
        );
        Running { cancel, task }
    }
}

/// The running routes a reload changes.
struct Routes<'a> {
    config: Arc<Config>,
    rollouts: &'a mut BTreeMap<String, rollout::RouteRollout>,
    topics: &'a mut BTreeMap<String, crate::log::TopicInfo>,
    workers: &'a mut BTreeMap<TopicPartition, Running>,
}

/// Reads the config file again and applies what changed in its routes.
/// Everything is checked — the file, the new routes' topics and plugins —
/// before anything stops; a config that fails leaves the running one as it
/// was. Returns the new config when a route changed.
///
/// - Embedded source: removed and changed routes drain at a batch boundary
///   and stop, added and changed ones start on every partition.
/// - Kafka: a changed route's workers drain and are replaced on the
///   partitions this member owns, which stay owned (no rebalance). Added
///   and removed routes change the subscription: the group rebalances, and
///   with cooperative assignment only their topics' partitions move — they
///   come and go as assignments and revocations, drained and committed as
///   in any rebalance.
async fn reload_routes(
    routes: &mut Routes<'_>,
    spawn: &Spawn<'_>,
    watched: &std::sync::Mutex<HashSet<String>>,
    member: &dyn GroupMember,
) -> anyhow::Result<Option<Arc<Config>>> {
    let old = routes.config.clone();
    let new = Arc::new(Config::load(&old.path)?);
    let changes = crate::reload::changes(&old, &new).map_err(anyhow::Error::msg)?;
    let store = spawn.store;
    let kafka = match &new.source {
        Source::Kafka(source) => Some(source),
        Source::Embedded => None,
    };
    if kafka.is_none() {
        for topic in &new.topics {
            store
                .create_topic(&topic.name, topic.partitions)
                .with_context(|| format!("creating topic `{}` from the config", topic.name))?;
        }
    }
    if changes.is_empty() {
        return Ok(None);
    }
    let starting: Vec<&crate::config::RouteConfig> = new
        .routes
        .iter()
        .filter(|r| changes.added.contains(&r.topic) || changes.changed.contains(&r.topic))
        .collect();
    let only_starting = Config {
        routes: starting.iter().map(|r| (*r).clone()).collect(),
        ..(*new).clone()
    };
    let existing: Vec<String> = store.topics()?.into_iter().map(|t| t.name).collect();
    let present: HashSet<String> = starting
        .iter()
        .map(|r| r.plugin.clone())
        .filter(|p| new.plugin_path(p).exists() || spawn.registry.subscribe(p).is_some())
        .collect();
    if let Some(problem) = unrunnable_route(&only_starting, Some(&existing), &present) {
        bail!(problem);
    }
    if let Some(source) = kafka {
        // Only once the routes can run: this may create topics in the
        // cluster. The store keeps each consumed topic's partition count;
        // the cluster must have the topic, and gets its changelog and
        // dead-letter topics as at start.
        for (name, partitions) in kafka::prepare_topics(&only_starting, source).await? {
            store.create_topic(&name, partitions).with_context(|| {
                format!("recording Kafka topic `{name}` ({partitions} partitions) in the store")
            })?;
        }
    }
    for route in &starting {
        if spawn.registry.subscribe(&route.plugin).is_none() {
            let (reg, name) = (spawn.registry.clone(), route.plugin.clone());
            let version = tokio::task::spawn_blocking(move || reg.load(&name))
                .await?
                .with_context(|| format!("loading plugin `{}`", route.plugin))?;
            info!(plugin = %route.plugin, version = version.short_digest(), "plugin loaded");
            spawn.registry.publish(version);
        }
        watched
            .lock()
            .expect("names lock")
            .insert(route.plugin.clone());
        let dlq = route.dead_letter_topic();
        if kafka.is_none() && matches!(store.topic(&dlq), Err(StoreError::UnknownTopic(_))) {
            store
                .create_topic(&dlq, route.errors.dead_letter_partitions)
                .with_context(|| format!("creating dead-letter topic `{dlq}`"))?;
        }
    }
    // Checked: now the stopping routes drain. With Kafka a removed route's
    // partitions drain when the group revokes them.
    let stopping: BTreeSet<&String> = match kafka {
        Some(_) => changes.changed.iter().collect(),
        None => changes.removed.iter().chain(&changes.changed).collect(),
    };
    let (leaving, staying): (Vec<_>, Vec<_>) = std::mem::take(routes.workers)
        .into_iter()
        .partition(|(tp, _)| stopping.contains(&tp.topic));
    routes.workers.extend(staying);
    let drained: Vec<TopicPartition> = leaving.iter().map(|(tp, _)| tp.clone()).collect();
    join_all(leaving.into_iter().map(|(_, r)| r).collect()).await;
    for topic in stopping.iter().copied().chain(&changes.removed) {
        routes.rollouts.remove(topic);
        routes.topics.remove(topic);
    }
    for route in starting {
        let topic = store.topic(&route.topic)?;
        let rollout = start_rollout(route, &topic, spawn.registry, spawn.shutdown);
        // Embedded: every partition. Kafka: the owned partitions of a
        // changed route, each still owned (those of an added route come as
        // assignments).
        let partitions: Vec<(u32, Box<dyn crate::source::Source>)> = match kafka {
            None => (0..topic.partitions)
                .map(|p| (p, Box::new(crate::source::Embedded) as _))
                .collect(),
            Some(_) => drained
                .iter()
                .filter(|tp| tp.topic == topic.name)
                .filter_map(|tp| member.restart(tp).map(|source| (tp.partition, source)))
                .collect(),
        };
        for (partition, source) in partitions {
            let running = spawn.partition(&new, route, &rollout, &topic, partition, source);
            routes.workers.insert(
                TopicPartition {
                    topic: topic.name.clone(),
                    partition,
                },
                running,
            );
        }
        routes.rollouts.insert(route.topic.clone(), rollout);
        routes.topics.insert(route.topic.clone(), topic);
    }
    if kafka.is_some() && !(changes.added.is_empty() && changes.removed.is_empty()) {
        let mut topics = BTreeMap::new();
        for route in &new.routes {
            topics.insert(route.topic.clone(), store.topic(&route.topic)?);
        }
        member.subscribe(topics)?;
    }
    info!(
        added = ?changes.added,
        removed = ?changes.removed,
        changed = ?changes.changed,
        "config reloaded"
    );
    Ok(Some(new))
}

/// Watches the config file: a change asks for a reload. `None` when there
/// is no file (a config built in code) or it cannot be watched (logged).
fn watch_config(
    path: &std::path::Path,
    reloads: tokio::sync::mpsc::UnboundedSender<&'static str>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    let dir = path.parent().filter(|_| !path.as_os_str().is_empty())?;
    let file = path.file_name()?.to_owned();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && !matches!(event.kind, notify::EventKind::Access(_))
            && event
                .paths
                .iter()
                .any(|p| p.file_name() == Some(file.as_os_str()))
        {
            let _ = reloads.send("file changed");
        }
    })
    .map_err(|e| warn!("cannot watch the config file: {e}"))
    .ok()?;
    // The directory, not the file: editors replace files by renaming.
    match watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
        Ok(()) => Some(watcher),
        Err(e) => {
            warn!(path = %path.display(), "cannot watch the config file: {e}");
            None
        }
    }
}

/// At start, `name`'s file could not be used (`error`): serve the last
/// version its partitions committed with, from the bytes this host kept
/// when it accepted it (or the newest kept version, if no partition ever
/// committed), and say so loudly. Only a plugin never accepted here fails
/// the start. A bad deploy must not take the route down across a restart.
async fn fall_back(
    registry: &Arc<Registry>,
    store: &Store,
    config: &Config,
    topics: &BTreeMap<String, crate::log::TopicInfo>,
    name: &str,
    error: PluginError,
) -> anyhow::Result<crate::plugins::PluginVersion> {
    // Reported exactly as a rejection at run time would be.
    match &error {
        PluginError::Rejected {
            digest,
            size,
            error: why,
            ..
        } => registry.reject(name, digest, *size, &why.to_string()),
        PluginError::NotFound { .. } => registry.set_file_present(name, false),
        PluginError::Read { .. } => {}
    }
    let committed = last_good_version(committed_versions(store, config, topics, name)?);
    let reg = registry.clone();
    let (owned, wanted) = (name.to_owned(), committed.as_ref().map(|(d, _)| d.clone()));
    let kept =
        tokio::task::spawn_blocking(move || reg.load_kept(&owned, wanted.as_deref())).await?;
    let Some(version) = kept else {
        return Err(anyhow::Error::new(error)).with_context(|| {
            format!(
                "loading plugin `{name}`: no earlier version of it was ever accepted in {}, so its route cannot start",
                config.data_dir.display()
            )
        });
    };
    let why = match committed {
        Some((digest, partitions)) if digest == version.digest => format!(
            "serving last good version {} (the one {partitions} partition(s) last committed with) because {error}",
            version.short_digest()
        ),
        _ => format!(
            "serving last good version {} (the newest this host accepted) because {error}",
            version.short_digest()
        ),
    };
    tracing::error!(plugin = name, "{why}");
    registry.set_fallback(name, Some(why));
    Ok(version)
}

/// With a shadow rollout, a restart must not promote a version whose
/// shadow never finished: when `loaded` is not the version the plugin's
/// partitions last committed with, that one (from the host's kept copy)
/// serves and `loaded` is shadowed again from the start.
async fn serving_instead(
    registry: &Arc<Registry>,
    store: &Store,
    config: &Config,
    topics: &BTreeMap<String, crate::log::TopicInfo>,
    loaded: &crate::plugins::PluginVersion,
) -> anyhow::Result<Option<crate::plugins::PluginVersion>> {
    let shadowed = config.routes.iter().any(|r| {
        r.plugin == loaded.name && matches!(r.rollout, crate::config::Rollout::Shadow { .. })
    });
    if !shadowed {
        return Ok(None);
    }
    let Some((committed, _)) =
        last_good_version(committed_versions(store, config, topics, &loaded.name)?)
    else {
        return Ok(None);
    };
    if committed == loaded.digest {
        return Ok(None);
    }
    let reg = registry.clone();
    let name = loaded.name.clone();
    Ok(
        tokio::task::spawn_blocking(move || reg.load_kept(&name, Some(&committed)))
            .await?
            .filter(|kept| kept.digest != loaded.digest),
    )
}

/// The versions the partitions of `name`'s routes last committed with.
fn committed_versions(
    store: &Store,
    config: &Config,
    topics: &BTreeMap<String, crate::log::TopicInfo>,
    name: &str,
) -> anyhow::Result<Vec<String>> {
    let mut versions = Vec::new();
    for route in config.routes.iter().filter(|r| r.plugin == name) {
        let topic = &topics[&route.topic];
        for partition in 0..topic.partitions {
            if let Some(c) = store.checkpoint(topic, partition)? {
                versions.push(c.version);
            }
        }
    }
    Ok(versions)
}

/// The version most of a plugin's partitions last committed with, and how
/// many did (ties: the greatest digest, so the choice is stable). Restored
/// checkpoints name no version.
fn last_good_version(versions: Vec<String>) -> Option<(String, usize)> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for v in versions {
        if v != crate::checkpoint::RESTORED_VERSION {
            *counts.entry(v).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)))
}

/// The outbox's figures, taken every second whatever the deliverer is
/// doing: a round can wait long for a slow or absent broker.
#[derive(Default)]
struct OutboxWatch {
    delivered: u64,
    stalled_since: Option<std::time::Instant>,
}

impl OutboxWatch {
    fn sample(&mut self, store: &Store, live: &Live, metrics: &Metrics) {
        let Ok(pending) = store.outbox_len() else {
            return;
        };
        let delivered = metrics.outbox_delivered.get();
        if pending == 0 || delivered != self.delivered {
            self.stalled_since = None;
        } else {
            self.stalled_since
                .get_or_insert_with(std::time::Instant::now);
        }
        self.delivered = delivered;
        metrics.outbox_pending.set(pending as i64);
        live.update_group(|g| {
            g.outbox_pending = pending;
            g.outbox_stalled_seconds = self
                .stalled_since
                .map_or(0.0, |t| t.elapsed().as_secs_f64());
        });
    }
}

async fn join_all(workers: Vec<Running>) {
    for w in &workers {
        w.cancel.cancel();
    }
    for w in workers {
        if let Err(e) = w.task.await {
            warn!("partition worker panicked: {e}");
        }
    }
}

/// Why the config's routes cannot run, if they cannot: a routed plugin with
/// neither a file nor a kept version, or (embedded, when the store's topics
/// are known) a routed topic that neither exists nor is declared.
fn unrunnable_route(
    config: &Config,
    existing_topics: Option<&[String]>,
    plugins_present: &HashSet<String>,
) -> Option<String> {
    for route in &config.routes {
        if !plugins_present.contains(&route.plugin) {
            return Some(format!(
                "route for topic `{}`: plugin `{}` has no file at {} and no earlier version kept in the data directory",
                route.topic,
                route.plugin,
                config.plugin_path(&route.plugin).display()
            ));
        }
        let declared = config.topics.iter().any(|t| t.name == route.topic);
        if let (Source::Embedded, Some(existing)) = (&config.source, existing_topics)
            && !declared
            && !existing.contains(&route.topic)
        {
            return Some(format!(
                "route for topic `{}`: no such topic; declare it in a [[topic]] table or create it with `linecook topics create`",
                route.topic
            ));
        }
    }
    None
}

async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let deadline = tokio::time::Instant::now() + OPEN_RETRY;
    loop {
        match Store::open_with_cache(&config.data_dir, config.store_cache_mb) {
            Ok(store) => return Ok(store),
            // A CLI command may hold the store for a moment; a running host
            // holds it for good.
            Err(StoreError::InUse(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(StoreError::InUse(dir)) => {
                let addr = admin_addr(&dir)
                    .map(|a| format!(" (its admin API is at {a})"))
                    .unwrap_or_default();
                bail!(
                    "another linecook process is running on data directory {}{addr}; only one host may use a data directory",
                    dir.display()
                );
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The admin address a running host wrote into `data_dir`.
pub fn admin_addr(data_dir: &std::path::Path) -> Option<String> {
    let path: PathBuf = data_dir.join(ADMIN_ADDR_FILE);
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_without_its_plugin_or_topic_cannot_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("linecook.toml");
        std::fs::write(
            &path,
            "group = \"g\"\n[[topic]]\nname = \"d\"\npartitions = 1\n\
             [[route]]\ntopic = \"d\"\nplugin = \"p\"\n[[route]]\ntopic = \"e\"\nplugin = \"p\"\n",
        )
        .unwrap();
        let config = Config::load(&path).unwrap();
        let present: HashSet<String> = ["p".to_owned()].into();
        let none = HashSet::new();
        let problem = unrunnable_route(&config, None, &none).unwrap();
        assert!(problem.contains("plugin `p` has no file"), "{problem}");
        // Topics unknown yet (store not opened): only plugins are judged.
        assert_eq!(unrunnable_route(&config, None, &present), None);
        let problem = unrunnable_route(&config, Some(&[]), &present).unwrap();
        assert!(
            problem.contains("route for topic `e`: no such topic"),
            "{problem}"
        );
        assert_eq!(
            unrunnable_route(&config, Some(&["e".to_owned()]), &present),
            None
        );
    }

    #[test]
    fn the_last_good_version_is_the_one_most_partitions_committed_with() {
        let v = |s: &str| s.to_owned();
        assert_eq!(last_good_version(vec![]), None);
        assert_eq!(
            last_good_version(vec![v("a"), v("b"), v("b"), v("restored")]),
            Some((v("b"), 2))
        );
        assert_eq!(
            last_good_version(vec![v("restored"), v("restored")]),
            None,
            "a restore names no version"
        );
        assert_eq!(last_good_version(vec![v("a"), v("b")]), Some((v("b"), 1)));
    }
}
