//! How CLI commands reach the store: directly when no host is running, or
//! through the running host's admin API when it holds the store.

use std::time::{Duration, Instant};

/// How long to wait for a starting host to publish its admin address.
const HOST_START_WAIT: Duration = Duration::from_secs(30);

use anyhow::{Context as _, anyhow, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{ApiError, CreateTopic, Produce, Produced, Replay, TopicReport, WireRecord};
use crate::checkpoint::Entries;
use crate::config::Config;
use crate::daemon::admin_addr;
use crate::dlq::{DeadLetter, ReplayReport};
use crate::log::TopicInfo;
use crate::record::{LogRecord, NewRecord};
use crate::status::{self, StatusReport};
use crate::store::{Store, StoreError};

/// Access to a data directory's store.
#[derive(Debug)]
pub enum Access {
    /// No host is running: the CLI holds the store itself.
    Direct(Store),
    /// A host holds the store: talk to its admin API.
    Remote(Remote),
}

/// The admin API of a running host.
#[derive(Debug)]
pub struct Remote {
    base: String,
    agent: ureq::Agent,
    /// `Authorization` header value, when the host asks for a token.
    authorization: Option<String>,
}

impl Access {
    /// Opens the store, or finds the running host that holds it.
    pub fn connect(config: &Config) -> anyhow::Result<Access> {
        match Store::open_with_cache(&config.data_dir, config.store_cache_mb) {
            Ok(store) => Ok(Access::Direct(store)),
            Err(StoreError::InUse(dir)) => {
                // A host that is still starting holds the store before it
                // writes its admin address.
                let deadline = Instant::now() + HOST_START_WAIT;
                loop {
                    if let Some(addr) = admin_addr(&dir) {
                        let token = config.admin_token().map_err(anyhow::Error::msg)?;
                        return Ok(Access::Remote(Remote::new(&addr, token, config)?));
                    }
                    if Instant::now() > deadline {
                        bail!(
                            "the data directory {} is held by another process that serves no admin API (is a linecook host still starting?)",
                            dir.display()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Creates a topic.
    pub fn create_topic(&self, name: &str, partitions: u32) -> anyhow::Result<TopicInfo> {
        match self {
            Access::Direct(store) => Ok(store.create_topic(name, partitions)?),
            Access::Remote(r) => r.post(
                "/topics",
                &CreateTopic {
                    name: name.to_owned(),
                    partitions,
                },
            ),
        }
    }

    /// Every topic with its end offsets.
    pub fn topics(&self) -> anyhow::Result<Vec<TopicReport>> {
        match self {
            Access::Direct(store) => store
                .topics()?
                .into_iter()
                .map(|t| {
                    Ok(TopicReport {
                        end_offsets: store.end_offsets(&t)?,
                        start_offsets: store.start_offsets(&t)?,
                        bytes: store.stored_bytes(&t)?,
                        name: t.name,
                        partitions: t.partitions,
                    })
                })
                .collect(),
            Access::Remote(r) => r.get("/topics"),
        }
    }

    /// One topic with its end offsets.
    pub fn topic(&self, name: &str) -> anyhow::Result<TopicReport> {
        self.topics()?
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| anyhow!(StoreError::UnknownTopic(name.to_owned())))
    }

    /// The dead letters of `dlq`.
    pub fn dead_letters(&self, dlq: &str) -> anyhow::Result<Vec<DeadLetter>> {
        match self {
            Access::Direct(store) => Ok(store.dead_letters(dlq)?),
            Access::Remote(r) => r.get(&format!("/topics/{dlq}/dead-letters")),
        }
    }

    /// Sends the matching dead letters of `dlq` to `to` (default: their
    /// source topics), each at most once.
    pub fn replay(
        &self,
        dlq: &str,
        to: Option<&str>,
        filter: Vec<(String, String)>,
        dry_run: bool,
    ) -> anyhow::Result<ReplayReport> {
        match self {
            Access::Direct(store) => Ok(store.replay_dead_letters(dlq, to, &filter, dry_run)?),
            Access::Remote(r) => r.post(
                &format!("/topics/{dlq}/replay"),
                &Replay {
                    to: to.map(str::to_owned),
                    filter,
                    dry_run,
                },
            ),
        }
    }

    /// Appends records to `topic`; returns their (partition, offset).
    pub fn produce(&self, topic: &str, records: Vec<NewRecord>) -> anyhow::Result<Vec<(u32, u64)>> {
        match self {
            Access::Direct(store) => Ok(store.produce(topic, &records)?),
            Access::Remote(r) => {
                let produced: Produced = r.post(
                    &format!("/topics/{topic}/records"),
                    &Produce {
                        records: records.into_iter().map(Into::into).collect(),
                    },
                )?;
                Ok(produced.positions)
            }
        }
    }

    /// Up to `max` records of `topic`/`partition` from `from`.
    pub fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> anyhow::Result<Vec<LogRecord>> {
        match self {
            Access::Direct(store) => {
                let info = store.topic(topic)?;
                Ok(store.read(&info, partition, from, max)?)
            }
            Access::Remote(r) => {
                let records: Vec<WireRecord> = r.get(&format!(
                    "/topics/{topic}/partitions/{partition}/records?from={from}&max={max}"
                ))?;
                Ok(records.into_iter().map(Into::into).collect())
            }
        }
    }

    /// Every committed state entry of `topic`/`partition`.
    pub fn state_entries(&self, topic: &str, partition: u32) -> anyhow::Result<Entries> {
        match self {
            Access::Direct(store) => {
                let info = store.topic(topic)?;
                Ok(store.state_entries(&info, partition)?)
            }
            Access::Remote(r) => {
                let entries: Vec<(crate::api::B64, crate::api::B64)> =
                    r.get(&format!("/topics/{topic}/partitions/{partition}/state"))?;
                Ok(entries.into_iter().map(|(k, v)| (k.0, v.0)).collect())
            }
        }
    }

    /// Asks the running host to resume a paused partition.
    pub fn resume(&self, topic: &str, partition: u32) -> anyhow::Result<()> {
        match self {
            Access::Direct(_) => bail!(
                "no linecook host is running on this data directory; pauses do not outlive a host, so the next `linecook run` retries the partition"
            ),
            Access::Remote(r) => {
                let _: serde_json::Value = r.post(
                    &format!("/topics/{topic}/partitions/{partition}/resume"),
                    &(),
                )?;
                Ok(())
            }
        }
    }

    /// Moves a partition's committed offset: through its worker at a batch
    /// boundary when a host runs it, else in the store. Returns (from, to).
    pub fn reset(
        &self,
        topic: &str,
        partition: u32,
        to: crate::checkpoint::ResetTo,
        state: crate::checkpoint::ResetState,
    ) -> anyhow::Result<(u64, u64)> {
        match self {
            Access::Direct(store) => {
                let topic = store.topic(topic)?;
                let offset = store.reset_offset(&topic, partition, to)?;
                let from = store.reset_partition(&topic, partition, offset, state)?;
                Ok((from, offset))
            }
            Access::Remote(r) => {
                let report: crate::api::ResetReport = r.post(
                    &format!("/topics/{topic}/partitions/{partition}/reset"),
                    &crate::api::ResetPartition { to, state },
                )?;
                Ok((report.from, report.to))
            }
        }
    }

    /// The status of every routed partition.
    pub fn status(&self, config: &Config) -> anyhow::Result<StatusReport> {
        match self {
            Access::Direct(store) => Ok(status::report(store, config, None, Vec::new())?),
            Access::Remote(r) => r.get("/status"),
        }
    }
}

impl Remote {
    fn new(addr: &str, token: Option<String>, config: &Config) -> anyhow::Result<Remote> {
        let mut agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)));
        let scheme = match &config.admin_tls {
            Some(tls) => {
                agent = agent.tls_config(crate::tls::client_config(&tls.cert_file)?);
                "https"
            }
            None => "http",
        };
        // The certificate names the host by name or address; the address
        // file holds an address, so a certificate for `localhost` is reached
        // by that name on loopback.
        let host = match (&config.admin_tls, addr.parse::<std::net::SocketAddr>()) {
            (Some(_), Ok(a)) if a.ip().is_loopback() => format!("localhost:{}", a.port()),
            _ => addr.to_owned(),
        };
        Ok(Remote {
            base: format!("{scheme}://{host}"),
            agent: agent.build().new_agent(),
            authorization: token.map(|t| format!("Bearer {t}")),
        })
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base);
        let mut request = self.agent.get(&url);
        if let Some(auth) = &self.authorization {
            request = request.header("Authorization", auth);
        }
        let response = request.call().with_context(|| self.unreachable())?;
        Self::decode(response)
    }

    fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base);
        let mut request = self.agent.post(&url);
        if let Some(auth) = &self.authorization {
            request = request.header("Authorization", auth);
        }
        let response = request
            .send_json(body)
            .with_context(|| self.unreachable())?;
        Self::decode(response)
    }

    fn unreachable(&self) -> String {
        format!(
            "the data directory is held by a running linecook, but its admin API at {} does not answer",
            self.base
        )
    }

    fn decode<T: DeserializeOwned>(
        mut response: ureq::http::Response<ureq::Body>,
    ) -> anyhow::Result<T> {
        let status = response.status();
        let body = response.body_mut().with_config().limit(256 << 20);
        if status.is_success() {
            return Ok(body.read_json()?);
        }
        match body.read_json::<ApiError>() {
            Ok(e) => bail!("{}", e.error),
            Err(_) => bail!("admin API answered {status}"),
        }
    }
}
