//! The admin HTTP API on loopback: status, health, and the embedded log's
//! produce/read/topic endpoints, so the CLI works while the host holds the
//! store.
//!
//! With `admin_token_file`, every endpoint but the three read-only ones
//! (`/healthz`, `/status`, `/metrics`) answers 401 unless the request
//! carries `Authorization: Bearer <token>`; the host refuses a non-loopback
//! `admin` without one. `metrics` serves the read-only ones alone on
//! another address.
//!
//! - `GET  /healthz`
//! - `GET  /status` → [`StatusReport`](crate::status::StatusReport)
//! - `GET  /metrics` → Prometheus / OpenMetrics text
//! - `GET  /topics` → `[TopicReport]`
//! - `POST /topics` ← `CreateTopic`
//! - `POST /topics/{topic}/records` ← `Produce` → `Produced`
//! - `GET  /topics/{topic}/partitions/{p}/records?from=N&max=N` → `[WireRecord]`
//! - `POST /topics/{topic}/partitions/{p}/resume` — resume a paused partition
//! - `POST /topics/{topic}/partitions/{p}/reset` ← `ResetPartition` →
//!   `ResetReport` — move it at its next batch boundary

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::api::{ApiError, CreateTopic, Produce, Produced, Replay, TopicReport, WireRecord};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::plugins::Registry;
use crate::record::NewRecord;
use crate::status::{self, Live, Resume};
use crate::store::{Store, StoreError};

/// Most records one read request returns.
const MAX_READ: usize = 10_000;

/// What the handlers share.
#[derive(Clone)]
pub struct AdminState {
    /// The bearer token every request but the read-only ones must carry.
    pub token: Option<Arc<str>>,
    /// The store.
    pub store: Arc<Store>,
    /// The config the host runs (replaced when it reloads).
    pub config: Arc<std::sync::RwLock<Arc<Config>>>,
    /// Worker status.
    pub live: Arc<Live>,
    /// Plugin versions and their states.
    pub registry: Arc<Registry>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

impl AdminState {
    /// The config the host runs now.
    pub fn config(&self) -> Arc<Config> {
        self.config.read().expect("config lock").clone()
    }
}

/// The live status page: one self-contained file, polling `/status`.
const STATUS_PAGE: &str = include_str!("status_page.html");

/// The read-only routes: the status page, health, status and metrics.
/// Served without a token, on the admin address and on the `metrics`
/// listener.
pub fn read_only(state: AdminState) -> Router {
    Router::new()
        .route("/", get(|| async { axum::response::Html(STATUS_PAGE) }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/status", get(get_status))
        .route("/metrics", get(get_metrics))
        .with_state(state)
}

/// The admin API: the read-only routes, and the rest behind the token when
/// one is set.
pub fn router(state: AdminState) -> Router {
    let guarded = Router::new()
        .route("/topics", get(list_topics).post(create_topic))
        .route("/topics/{topic}/records", post(produce))
        .route("/topics/{topic}/dead-letters", get(dead_letters))
        .route("/topics/{topic}/replay", post(replay))
        .route("/topics/{topic}/partitions/{partition}/records", get(read))
        .route(
            "/topics/{topic}/partitions/{partition}/resume",
            post(resume),
        )
        .route("/topics/{topic}/partitions/{partition}/reset", post(reset))
        .route(
            "/topics/{topic}/partitions/{partition}/state",
            get(partition_state),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
        .with_state(state.clone());
    read_only(state).merge(guarded)
}

/// Lets a request through when no token is set or it carries the token.
async fn require_token(
    State(s): State<AdminState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match &s.token {
        None => next.run(request).await,
        Some(token) if bearer_matches(request.headers(), token) => next.run(request).await,
        Some(_) => Failure(
            StatusCode::UNAUTHORIZED,
            "this admin API needs `Authorization: Bearer <token>`, the token in the host's `admin_token_file`".into(),
        )
        .into_response(),
    }
}

/// Whether `headers` carry `Authorization: Bearer <token>`, compared in
/// constant time so the answer's timing does not reveal the token.
fn bearer_matches(headers: &axum::http::HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(ApiError { error: self.1 })).into_response()
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        let code = match e {
            StoreError::UnknownTopic(_) => StatusCode::NOT_FOUND,
            StoreError::Invalid(_)
            | StoreError::TopicExists { .. }
            | StoreError::NoSuchPartition { .. } => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Failure(code, e.to_string())
    }
}

/// Runs blocking store work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(Failure::from)
}

async fn get_status(State(s): State<AdminState>) -> Result<impl IntoResponse, Failure> {
    let report = blocking(move || {
        let config = s.config();
        status::report(&s.store, &config, Some(&s.live), s.registry.report())
    })
    .await?;
    Ok(Json(report))
}

/// OpenMetrics unless the scraper asks for the classic text format only
/// (`Accept: text/plain`, as older Prometheus clients and promtool do).
fn wants_classic_text(headers: &axum::http::HeaderMap) -> bool {
    let accept = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    accept.contains("text/plain") && !accept.contains("application/openmetrics-text")
}

async fn get_metrics(
    State(s): State<AdminState>,
    headers: axum::http::HeaderMap,
) -> Result<impl IntoResponse, Failure> {
    let text = blocking(move || {
        let plugins = s.registry.report();
        let status = status::report(&s.store, &s.config(), Some(&s.live), plugins.clone())?;
        Ok(s.metrics.encode(&status, &plugins))
    })
    .await?;
    Ok(if wants_classic_text(&headers) {
        (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            crate::metrics::to_classic_text(&text),
        )
    } else {
        (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
    })
}

async fn list_topics(State(s): State<AdminState>) -> Result<impl IntoResponse, Failure> {
    let topics = blocking(move || {
        s.store
            .topics()?
            .into_iter()
            .map(|t| {
                Ok(TopicReport {
                    end_offsets: s.store.end_offsets(&t)?,
                    start_offsets: s.store.start_offsets(&t)?,
                    bytes: s.store.stored_bytes(&t)?,
                    name: t.name,
                    partitions: t.partitions,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()
    })
    .await?;
    Ok(Json(topics))
}

async fn create_topic(
    State(s): State<AdminState>,
    Json(req): Json<CreateTopic>,
) -> Result<impl IntoResponse, Failure> {
    let info = blocking(move || s.store.create_topic(&req.name, req.partitions)).await?;
    Ok(Json(info))
}

async fn produce(
    State(s): State<AdminState>,
    Path(topic): Path<String>,
    Json(req): Json<Produce>,
) -> Result<impl IntoResponse, Failure> {
    let records: Vec<NewRecord> = req.records.into_iter().map(Into::into).collect();
    let positions = blocking(move || s.store.produce(&topic, &records)).await?;
    Ok(Json(Produced { positions }))
}

async fn dead_letters(
    State(s): State<AdminState>,
    Path(topic): Path<String>,
) -> Result<impl IntoResponse, Failure> {
    Ok(Json(blocking(move || s.store.dead_letters(&topic)).await?))
}

async fn replay(
    State(s): State<AdminState>,
    Path(topic): Path<String>,
    Json(req): Json<Replay>,
) -> Result<impl IntoResponse, Failure> {
    let report = blocking(move || {
        s.store
            .replay_dead_letters(&topic, req.to.as_deref(), &req.filter, req.dry_run)
    })
    .await?;
    Ok(Json(report))
}

async fn resume(
    State(s): State<AdminState>,
    Path((topic, partition)): Path<(String, u32)>,
) -> Result<impl IntoResponse, Failure> {
    match s.live.resume(&topic, partition) {
        Resume::Asked => Ok(Json(serde_json::json!({ "resumed": true }))),
        Resume::NotPaused(state) => Err(Failure(
            StatusCode::CONFLICT,
            format!("{topic}/{partition} is {state}, not paused: nothing to resume"),
        )),
        Resume::NotOwned => Err(Failure(
            StatusCode::NOT_FOUND,
            format!("this host does not own {topic}/{partition}"),
        )),
    }
}

/// Longest a reset waits for the partition's batch in flight.
const RESET_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

async fn reset(
    State(s): State<AdminState>,
    Path((topic, partition)): Path<(String, u32)>,
    Json(req): Json<crate::api::ResetPartition>,
) -> Result<impl IntoResponse, Failure> {
    let Some(answer) = s.live.reset(&topic, partition, req.to, req.state) else {
        return Err(Failure(
            StatusCode::NOT_FOUND,
            format!("this host does not run {topic}/{partition}"),
        ));
    };
    match tokio::time::timeout(RESET_WAIT, answer).await {
        Ok(Ok(Ok((from, to)))) => Ok(Json(crate::api::ResetReport { from, to })),
        Ok(Ok(Err(why))) => Err(Failure(StatusCode::BAD_REQUEST, why)),
        Ok(Err(_)) => Err(Failure(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{topic}/{partition} was released before it could reset; try again"),
        )),
        Err(_) => Err(Failure(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "{topic}/{partition} did not reach a batch boundary within {} s; the reset is still queued",
                RESET_WAIT.as_secs()
            ),
        )),
    }
}

#[derive(Deserialize)]
struct ReadQuery {
    #[serde(default)]
    from: u64,
    max: Option<usize>,
}

/// A partition's committed state, every entry (for `linecook replay
/// --state current`).
async fn partition_state(
    State(s): State<AdminState>,
    Path((topic, partition)): Path<(String, u32)>,
) -> Result<impl IntoResponse, Failure> {
    let entries = blocking(move || {
        let topic = s.store.topic(&topic)?;
        s.store
            .state_entries(&topic, topic.check_partition(partition)?)
    })
    .await?;
    let entries: Vec<(crate::api::B64, crate::api::B64)> = entries
        .into_iter()
        .map(|(k, v)| (crate::api::B64(k), crate::api::B64(v)))
        .collect();
    Ok(Json(entries))
}

async fn read(
    State(s): State<AdminState>,
    Path((topic, partition)): Path<(String, u32)>,
    Query(q): Query<ReadQuery>,
) -> Result<impl IntoResponse, Failure> {
    let max = q.max.unwrap_or(1000).min(MAX_READ);
    let records = blocking(move || {
        let topic = s.store.topic(&topic)?;
        s.store
            .read(&topic, topic.check_partition(partition)?, q.from, max)
    })
    .await?;
    let records: Vec<WireRecord> = records.into_iter().map(Into::into).collect();
    Ok(Json(records))
}
