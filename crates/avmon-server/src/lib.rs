//! avmon's HTTP API.
//!
//! # Contract
//!
//! The service owns the live state; this crate only says what it needs from it, the [`Monitor`]
//! trait, and turns it into routes:
//!
//! | route                       | answer                                                      |
//! |-----------------------------|-------------------------------------------------------------|
//! | `GET /api/streams`          | `200` `[StreamStatus, ...]`                                 |
//! | `POST /api/streams`         | body: a stream's config as JSON; `201` `StreamStatus` + `Location`; `400` invalid, `409` duplicate id |
//! | `GET /api/streams/{id}`     | `200` `StreamStatus`, `404`                                 |
//! | `PATCH /api/streams/{id}`   | body `{"tier": "full\|reference\|keyframes\|transport", "priority": N}` (either or both): `200` `StreamStatus`; `400`, `404`; the tier is the stream's configured tier (the ceiling automatic degradation restores to), applied at its next packet without reconnecting |
//! | `DELETE /api/streams/{id}`  | `204`, `404`                                                |
//! | `POST /api/streams/{id}/mute` | body (optional) `{"until": TIME, "comment": "..."}`: `200` `Mute`; `400`, `404` |
//! | `DELETE /api/streams/{id}/mute` | `204` (muted or not), `404` unknown stream              |
//! | `GET /api/streams/{id}/metrics` | `?since=TIME&until=TIME&names=a,b&limit=N`: `200` `MetricsSeries` |
//! | `GET /api/alerts`           | `?stream=ID&kind=K,K&severity=S,S&state=raised\|cleared&since=TIME&until=TIME&active=BOOL&acked=BOOL&limit=N`: `200` `[Alert, ...]`, newest first |
//! | `GET /api/alerts/{id}`      | `200` `Alert`, `404`                                        |
//! | `POST /api/alerts/{id}/ack` | body (optional) `{"comment": "..."}`: `200` `Alert`; `404`; `409` already acknowledged |
//! | `GET /api/maintenance`      | `200` `[MaintenanceWindow, ...]`                            |
//! | `POST /api/maintenance`     | body `{"streams": [GLOB, ...], "start": TIME, "end": TIME, "comment": "..."}`: `201` `MaintenanceWindow` + `Location`; `400` |
//! | `DELETE /api/maintenance/{id}` | `204`; `404`; `409` for a window of the config file      |
//! | `GET /api/openapi.json`     | the OpenAPI 3.1 document of all this                        |
//! | `GET /api/alerts`           | `?stream=ID&since=TIME&active=BOOL&limit=N`: `200` `[Alert, ...]`, newest first |
//! | `GET /api/alerts/{id}/snapshot.jpg` | `200 image/jpeg`: the picture at the alert's onset; `404` when none was kept |
//! | `GET /api/alerts/{id}/clip.ts` | `200 video/mp2t`: the stream's bytes around a video or transport alert's onset; `404` when none (yet) |
//! | `GET /api/streams/{id}/thumbnail.jpg` | `200 image/jpeg`: the stream's latest picture (refreshed every second; in a cluster, from the node that runs it); `404` |
//! | `GET /api/events`           | `text/event-stream`: `alert`, `stream`, `levels` events (see [`LiveEvent`]) |
//! | `GET /`, `/console/*`       | the web console (assets embedded in the binary)             |
//! | `GET /metrics`              | Prometheus text format 0.0.4                                |
//! | `GET /healthz`              | `200 {"status":"ok"}` or `503 {"status":"unhealthy"}`       |
//!
//! An `Alert` here is the stored alert with `ack` (`{by, comment, at}` or `null`) and
//! `suppressed` (`muted`, `maintenance` or `null`: why it was not notified). Access is by bearer
//! token (see [`auth`]): every `GET` needs a read or admin token, everything else an admin token.
//!
//! Every error, unknown routes included, is JSON `{"error": "...", "errors": [...]}` (see
//! [`ApiError`]); internal details are logged, never sent.
//!
//! [`app`] builds the router without binding anything, so tests drive it with
//! `tower::ServiceExt::oneshot`; [`serve`] runs it on a listener until a shutdown future
//! resolves. Monitor calls that may touch storage (`alerts`, `add_stream`, `remove_stream`) run on
//! tokio's blocking pool; the others must be cheap, in-memory reads.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use avmon_core::{Alert, AlertState, MediaInfo, Severity, StreamId, Tier, WallTime};
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header::{CONTENT_TYPE, LOCATION};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Extension;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

pub mod auth;
mod console;
mod error;

pub use auth::{Auth, Caller, Digest, Role, Secret, Token};
pub use avmon_core::{Ack, AlertRecord, MaintenanceWindow, Mute, Suppressed};
pub use error::ApiError;

/// The OpenAPI 3.1 document served at `/api/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Every route and its methods: what [`app`] serves and the OpenAPI document describes (a test
/// holds all three to the same set).
pub const ROUTES: &[(&str, &[&str])] = &[
    ("/api/streams", &["GET", "POST"]),
    ("/api/streams/{id}", &["GET", "PATCH", "DELETE"]),
    ("/api/streams/{id}/mute", &["POST", "DELETE"]),
    ("/api/streams/{id}/metrics", &["GET"]),
    ("/api/streams/{id}/thumbnail.jpg", &["GET"]),
    ("/api/cluster", &["GET"]),
    ("/api/alerts", &["GET"]),
    ("/api/alerts/{id}", &["GET"]),
    ("/api/alerts/{id}/ack", &["POST"]),
    ("/api/alerts/{id}/snapshot.jpg", &["GET"]),
    ("/api/alerts/{id}/clip.ts", &["GET"]),
    ("/api/events", &["GET"]),
    ("/api/maintenance", &["GET", "POST"]),
    ("/api/maintenance/{id}", &["DELETE"]),
    ("/api/openapi.json", &["GET"]),
    ("/metrics", &["GET"]),
    ("/healthz", &["GET"]),
];

/// `limit` of `GET /api/alerts` when none is given.
pub const DEFAULT_ALERTS_LIMIT: usize = 1000;
/// The largest `limit` `GET /api/alerts` accepts.
pub const MAX_ALERTS_LIMIT: usize = 10_000;

/// What the API needs from the running service.
pub trait Monitor: Send + Sync + 'static {
    /// Every configured stream, for `GET /api/streams`. Must be cheap (in-memory).
    fn streams(&self) -> Vec<StreamStatus>;

    /// Start monitoring a stream, for `POST /api/streams`. `spec` is a JSON object with the keys
    /// of a TOML `[[streams]]` table (`id`, `url`, ...). Invalid → [`ApiError::BadRequest`] with
    /// every problem; id in use → [`ApiError::Conflict`].
    fn add_stream(&self, spec: serde_json::Value) -> Result<StreamStatus, ApiError>;

    /// Change a running stream's fidelity tier, for `PATCH /api/streams/{id}`, without
    /// reconnecting. Unknown → [`ApiError::NotFound`].
    fn set_tier(&self, id: &str, tier: Tier) -> Result<StreamStatus, ApiError>;

    /// Change a running stream's priority (higher: degraded later, restored first), for
    /// `PATCH /api/streams/{id}`. Unknown → [`ApiError::NotFound`].
    fn set_priority(&self, id: &str, priority: u32) -> Result<StreamStatus, ApiError> {
        let _ = (id, priority);
        Err(ApiError::bad_request(
            "priority: cannot be changed on this monitor",
        ))
    }

    /// Stop monitoring a stream, for `DELETE /api/streams/{id}`. Unknown → [`ApiError::NotFound`].
    fn remove_stream(&self, id: &str) -> Result<(), ApiError>;

    /// Alerts matching `q`, newest first, for `GET /api/alerts`. `q.limit` is already checked;
    /// use [`AlertsQuery::limit_or_default`].
    fn alerts(&self, q: &AlertsQuery) -> Result<Vec<AlertRecord>, ApiError>;

    /// One alert, for `GET /api/alerts/{id}`. Unknown → [`ApiError::NotFound`].
    fn alert(&self, id: &str) -> Result<AlertRecord, ApiError>;

    /// Acknowledge an alert as `by` (a token's name). Unknown → [`ApiError::NotFound`]; already
    /// acknowledged → [`ApiError::Conflict`] (the first acknowledgement is kept).
    fn ack_alert(&self, id: &str, by: &str, comment: String) -> Result<AlertRecord, ApiError>;

    /// Mute a stream until `until` (or until unmuted): its alerts are stored, marked `muted`, and
    /// not notified. Unknown stream → [`ApiError::NotFound`].
    fn mute_stream(
        &self,
        id: &str,
        until: Option<WallTime>,
        by: &str,
        comment: String,
    ) -> Result<Mute, ApiError>;

    /// Unmute a stream (muted or not). Unknown stream → [`ApiError::NotFound`].
    fn unmute_stream(&self, id: &str) -> Result<(), ApiError>;

    /// Every maintenance window (the config file's and the API's), by start.
    fn maintenance_windows(&self) -> Result<Vec<MaintenanceWindow>, ApiError>;

    /// Add a maintenance window (already checked: globs, `start < end`); the monitor gives it its
    /// id. Returns it as stored.
    fn add_maintenance_window(&self, w: MaintenanceWindow) -> Result<MaintenanceWindow, ApiError>;

    /// Delete a window. Unknown → [`ApiError::NotFound`]; one of the config file →
    /// [`ApiError::Conflict`].
    fn remove_maintenance_window(&self, id: &str) -> Result<(), ApiError>;

    /// A stream's stored metrics samples, oldest first, for `GET /api/streams/{id}/metrics`.
    /// Unknown stream → [`ApiError::NotFound`].
    fn stream_metrics(&self, id: &str, q: &MetricsQuery) -> Result<Vec<MetricsPoint>, ApiError>;

    /// The Prometheus exposition (text format 0.0.4), for `GET /metrics`.
    fn prometheus(&self) -> String;

    /// Whether the service is healthy, for `GET /healthz`.
    fn healthy(&self) -> bool;

    /// A stream's latest picture as JPEG, for `GET /api/streams/{id}/thumbnail.jpg`. Unknown
    /// stream, or no picture yet → [`ApiError::NotFound`]. May encode: runs on the blocking pool.
    fn thumbnail(&self, id: &str) -> Result<Vec<u8>, ApiError> {
        Err(ApiError::NotFound(format!(
            "no thumbnail for stream {id:?}"
        )))
    }

    /// An alert's evidence, for `GET /api/alerts/{id}/snapshot.jpg` and `.../clip.ts`. None kept
    /// (or not yet written) → [`ApiError::NotFound`]. Reads files: runs on the blocking pool.
    fn evidence(&self, alert_id: &str, kind: EvidenceKind) -> Result<Vec<u8>, ApiError> {
        let _ = kind;
        Err(ApiError::NotFound(format!(
            "no evidence for alert {alert_id:?}"
        )))
    }

    /// In a cluster: the API addresses (`http://host:port`) of the other live nodes. An alert's
    /// evidence is kept by the node that raised it; asked for it, another node fetches it from
    /// these (with the caller's own token). May read the database: runs on the blocking pool.
    fn peers(&self) -> Vec<String> {
        Vec::new()
    }

    /// In a cluster: the API address of the other live node that monitors `stream` now, if
    /// any. Asked for the thumbnail of a stream it does not run, a node fetches it from there.
    /// May read the database: runs on the blocking pool.
    fn holder_of(&self, _stream: &str) -> Option<String> {
        None
    }

    /// The cluster, for `GET /api/cluster`; a standalone host → [`ApiError::NotFound`].
    fn cluster(&self) -> Result<ClusterView, ApiError> {
        Err(ApiError::NotFound(
            "this node is not part of a cluster (no [cluster] in its config)".into(),
        ))
    }

    /// A new subscription to live events, for `GET /api/events`; `None` when the service
    /// publishes none (the route answers 404).
    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<LiveEvent>> {
        None
    }
}

/// Which piece of an alert's evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvidenceKind {
    /// JPEG of the picture at the onset.
    Snapshot,
    /// MPEG-TS bytes around the onset.
    Clip,
}

/// One Server-Sent Event of `GET /api/events`: `event: {name}` and `data: {data}` (JSON).
///
/// | name     | data |
/// |----------|------|
/// | `alert`  | `{"transition": "raised"\|"updated"\|"cleared"\|"acked", "alert": Alert}` |
/// | `stream` | a [`StreamStatus`], when a stream's status, tier or active alerts change, or it is added (`{"id": ..., "removed": true}` when removed) |
/// | `levels` | `{"STREAM_ID": [[rms_dbfs, peak_dbfs], ...per channel], ...}` about 4 times a second |
/// | `resync` | `{}`: this client fell behind and missed events; fetch the state again |
#[derive(Clone, Debug)]
pub struct LiveEvent {
    pub name: &'static str,
    /// The event's data, JSON, serialized once for every subscriber.
    pub data: Arc<str>,
}

impl LiveEvent {
    pub fn new(name: &'static str, data: &impl Serialize) -> Self {
        LiveEvent {
            name,
            data: serde_json::to_string(data)
                .unwrap_or_else(|_| "null".into())
                .into(),
        }
    }
}

/// A stream's condition as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamState {
    /// Connecting, or no media decoded yet.
    Starting,
    /// Media flowing, no active alert.
    Ok,
    /// Media flowing, at least one active alert.
    Alarm,
    /// The source is unreachable or stopped sending.
    Down,
    /// In a cluster: no node monitors it right now (a gap in monitoring; see `/api/cluster`).
    Unwatched,
}

/// One stream as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamStatus {
    pub id: String,
    pub url: String,
    pub status: StreamState,
    pub active_alerts: Vec<Alert>,
    /// Media time reached, seconds.
    pub media_t: f64,
    /// Wall time media was last decoded.
    pub last_data_at: Option<WallTime>,
    /// What the input carries, once opened.
    pub info: Option<MediaInfo>,
    pub frames_video: u64,
    pub frames_audio: u64,
    pub decode_errors: u64,
    pub reconnects: u64,
    /// The fidelity tier the stream is monitored at now.
    pub tier: Tier,
    /// The stream's mute, while one is in force.
    #[serde(default)]
    pub muted: Option<Mute>,
    /// The stream's configuration as JSON (the keys of its `[[streams]]` table), secrets
    /// masked; for the console's stream detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    /// The tier set in its config or by `PATCH`: the ceiling automatic degradation restores to.
    #[serde(default)]
    pub configured_tier: Tier,
    /// Whether the service lowered `tier` below `configured_tier` because the host fell behind
    /// real time (a `monitor.degraded` alert is raised while it is).
    #[serde(default)]
    pub degraded: bool,
    /// Higher is more important: degraded last, restored first.
    #[serde(default)]
    pub priority: u32,
    /// How far the stream's analysis is behind real time, seconds (smoothed; 0 when keeping up).
    #[serde(default)]
    pub lag_s: f64,
    /// In a cluster: the node that monitors the stream (`null` while none does, and on a
    /// standalone host).
    #[serde(default)]
    pub node: Option<String>,
}

/// `GET /api/cluster`: the nodes sharing the work, and the gaps in monitoring.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    /// The node that answered.
    pub node: String,
    /// Seconds a lease lasts without renewal.
    pub lease_ttl_s: f64,
    pub nodes: Vec<ClusterNode>,
    /// Streams no node monitors right now.
    pub unwatched: Vec<UnwatchedStream>,
    /// Times no node monitored a stream, that ended in the last 24 hours, latest first.
    pub gaps: Vec<MonitoringGap>,
}

/// One node of a cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterNode {
    pub name: String,
    /// Where its API and console are.
    pub api_addr: String,
    /// Seen within the lease TTL, and not gone.
    pub alive: bool,
    /// Left cleanly (SIGTERM), its streams handed over.
    pub left: bool,
    /// Streams it holds.
    pub streams: u64,
    /// Its streams' CPU, in cores, as its scheduler measures it.
    pub load: f64,
    /// What it may hold, in cores.
    pub capacity: f64,
    pub started_at: WallTime,
    pub last_seen: WallTime,
    pub seen_ago_s: f64,
}

/// A stream that no node monitors now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnwatchedStream {
    pub stream: String,
    /// Since when (`null`: never monitored yet).
    pub since: Option<WallTime>,
    /// The node that held it last.
    pub prev_node: Option<String>,
    /// The node it is pinned to, if any (it waits for that node).
    pub pinned_node: Option<String>,
}

/// A time during which no node monitored a stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MonitoringGap {
    pub stream: String,
    pub from: WallTime,
    pub to: WallTime,
    pub duration_s: f64,
    pub prev_node: Option<String>,
    pub next_node: String,
    /// `node_lost` (its node died or stalled) or `released` (handed over, claimed late).
    pub reason: String,
}

/// One stored metrics sample of a stream (a metrics period).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsPoint {
    /// Wall time at the end of the period.
    pub at: WallTime,
    /// Media time at the end of the period.
    pub media_t: f64,
    /// `name → value` (`loudness_short_term_lufs`, `blockiness_mean`, `decode_errors`, `bytes`,
    /// `frames_video`, ...).
    pub values: std::collections::BTreeMap<String, f64>,
}

/// The answer of `GET /api/streams/{id}/metrics`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsSeries {
    pub stream_id: String,
    pub since: WallTime,
    pub until: Option<WallTime>,
    pub samples: Vec<MetricsPoint>,
}

/// `limit` of `GET /api/streams/{id}/metrics` when none is given.
pub const DEFAULT_METRICS_LIMIT: usize = 1000;
/// The largest `limit` it accepts.
pub const MAX_METRICS_LIMIT: usize = 100_000;
/// How far back it looks when no `since` is given.
pub const DEFAULT_METRICS_SPAN: chrono::Duration = chrono::Duration::hours(1);

/// The parsed query of `GET /api/streams/{id}/metrics`.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsQuery {
    pub since: WallTime,
    pub until: Option<WallTime>,
    /// Only these values (empty: all). `bitrate_bps` is derived from `bytes` (see [`app`]).
    pub names: Vec<String>,
    /// At most this many samples, the latest.
    pub limit: usize,
}

impl MetricsQuery {
    fn from_pairs(pairs: &[(String, String)], now: WallTime) -> Result<Self, Vec<String>> {
        let mut q = MetricsQuery {
            since: now - DEFAULT_METRICS_SPAN,
            until: None,
            names: Vec::new(),
            limit: DEFAULT_METRICS_LIMIT,
        };
        let mut errors = Vec::new();
        for (key, value) in pairs {
            match key.as_str() {
                "since" => match parse_time(value) {
                    Ok(t) => q.since = t,
                    Err(e) => errors.push(format!("since: {e}")),
                },
                "until" => match parse_time(value) {
                    Ok(t) => q.until = Some(t),
                    Err(e) => errors.push(format!("until: {e}")),
                },
                "names" => q.names.extend(list(value)),
                "limit" => match value.parse::<usize>() {
                    Ok(n) if (1..=MAX_METRICS_LIMIT).contains(&n) => q.limit = n,
                    _ => errors.push(format!(
                        "limit: expected a number from 1 to {MAX_METRICS_LIMIT}, got {value:?}"
                    )),
                },
                "access_token" => {}
                other => errors.push(format!(
                    "unknown query parameter {other:?} (expected since, until, names, limit)"
                )),
            }
        }
        if q.until.is_some_and(|u| u < q.since) {
            errors.push("until: must not be before since".into());
        }
        if errors.is_empty() {
            Ok(q)
        } else {
            Err(errors)
        }
    }
}

/// A comma-separated list, without empty items.
fn list(value: &str) -> impl Iterator<Item = String> + '_ {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// The parsed query of `GET /api/alerts`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AlertsQuery {
    /// Only this stream's alerts.
    pub stream: Option<String>,
    /// Only alerts raised or cleared at or after this time (`since=` RFC 3339 or unix seconds).
    pub since: Option<WallTime>,
    /// `Some(true)`: only alerts still raised. `Some(false)` or `None`: all alerts (the store can
    /// filter on "still raised" only, and "not active" is rarely what one wants).
    pub active: Option<bool>,
    /// At most this many (1..=[`MAX_ALERTS_LIMIT`]).
    pub limit: Option<usize>,
    /// Only alerts raised at or before this time.
    pub until: Option<WallTime>,
    /// Only these kinds (`kind=video.black,video.freeze`); empty: all.
    pub kinds: Vec<String>,
    /// Only these severities (`severity=major,critical`); empty: all.
    pub severities: Vec<Severity>,
    /// Only alerts in this state (`state=raised|cleared`).
    pub state: Option<AlertState>,
    /// `Some(true)`: only acknowledged alerts; `Some(false)`: only unacknowledged ones.
    pub acked: Option<bool>,
}

impl AlertsQuery {
    /// `limit`, or [`DEFAULT_ALERTS_LIMIT`].
    pub fn limit_or_default(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_ALERTS_LIMIT)
    }

    /// Parse query-string pairs, gathering every problem.
    fn from_pairs(pairs: &[(String, String)]) -> Result<Self, Vec<String>> {
        let mut q = AlertsQuery::default();
        let mut errors = Vec::new();
        for (key, value) in pairs {
            match key.as_str() {
                "stream" => match StreamId::problem(value) {
                    None => q.stream = Some(value.clone()),
                    Some(p) => errors.push(format!("stream: {p}")),
                },
                "since" => match parse_time(value) {
                    Ok(t) => q.since = Some(t),
                    Err(e) => errors.push(format!("since: {e}")),
                },
                "active" => match parse_bool(value) {
                    Some(b) => q.active = Some(b),
                    None => errors.push(format!("active: expected true or false, got {value:?}")),
                },
                "acked" => match parse_bool(value) {
                    Some(b) => q.acked = Some(b),
                    None => errors.push(format!("acked: expected true or false, got {value:?}")),
                },
                "until" => match parse_time(value) {
                    Ok(t) => q.until = Some(t),
                    Err(e) => errors.push(format!("until: {e}")),
                },
                "kind" => q.kinds.extend(list(value)),
                "severity" => {
                    for s in list(value) {
                        match s.parse::<Severity>() {
                            Ok(sev) => q.severities.push(sev),
                            Err(e) => errors.push(format!("severity: {e}")),
                        }
                    }
                }
                "state" => match value.as_str() {
                    "raised" => q.state = Some(AlertState::Raised),
                    "cleared" => q.state = Some(AlertState::Cleared),
                    _ => errors.push(format!("state: expected raised or cleared, got {value:?}")),
                },
                // Taken by the token check (for clients that cannot set headers).
                "access_token" => {}
                "limit" => match value.parse::<usize>() {
                    Ok(n) if (1..=MAX_ALERTS_LIMIT).contains(&n) => q.limit = Some(n),
                    _ => errors.push(format!(
                        "limit: expected a number from 1 to {MAX_ALERTS_LIMIT}, got {value:?}"
                    )),
                },
                other => errors.push(format!(
                    "unknown query parameter {other:?} (expected stream, kind, severity, state, \
                     since, until, active, acked, limit)"
                )),
            }
        }
        if errors.is_empty() {
            Ok(q)
        } else {
            Err(errors)
        }
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "" | "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

/// An RFC 3339 time (`2025-03-01T12:00:00Z`, any offset) or unix seconds (`1740830400`,
/// fractions allowed).
fn parse_time(s: &str) -> Result<WallTime, String> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    // An unescaped `+02:00` in a query string arrives as ` 02:00`.
    if s.contains(' ') {
        if let Ok(t) = DateTime::parse_from_rfc3339(&s.replace(' ', "+")) {
            return Ok(t.with_timezone(&Utc));
        }
    }
    if let Ok(secs) = s.parse::<f64>() {
        if let Some(t) = secs
            .is_finite()
            .then(|| DateTime::from_timestamp_millis((secs * 1000.0).round() as i64))
            .flatten()
        {
            return Ok(t);
        }
    }
    Err(format!(
        "expected an RFC 3339 time (2025-03-01T12:00:00Z) or unix seconds, got {s:?}"
    ))
}

type AppState = Arc<dyn Monitor>;

/// The API router over `monitor`, open to anyone (no tokens). Binds nothing.
pub fn app(monitor: Arc<dyn Monitor>) -> Router {
    app_with_auth(monitor, Auth::open())
}

/// The API router over `monitor`, with `auth`'s tokens checked on every request. Binds nothing.
pub fn app_with_auth(monitor: Arc<dyn Monitor>, auth: Auth) -> Router {
    Router::new()
        .route("/api/streams", get(list_streams).post(add_stream))
        .route(
            "/api/streams/{id}",
            get(get_stream).patch(patch_stream).delete(remove_stream),
        )
        .route(
            "/api/streams/{id}/mute",
            post(mute_stream).delete(unmute_stream),
        )
        .route("/api/streams/{id}/metrics", get(stream_metrics))
        .route("/api/cluster", get(cluster))
        .route("/api/alerts", get(list_alerts))
        .route("/api/alerts/{id}", get(get_alert))
        .route("/api/alerts/{id}/ack", post(ack_alert))
        .route("/api/maintenance", get(list_windows).post(add_window))
        .route("/api/maintenance/{id}", delete(remove_window))
        .route("/api/openapi.json", get(openapi))
        .route("/api/alerts/{id}/snapshot.jpg", get(alert_snapshot))
        .route("/api/alerts/{id}/clip.ts", get(alert_clip))
        .route("/api/streams/{id}/thumbnail.jpg", get(thumbnail))
        .route("/api/events", get(events))
        .route("/", get(console::index))
        .route("/console/{file}", get(console::asset))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(monitor)
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(auth::Guard {
                auth,
                failures: Default::default(),
            }),
            auth::check,
        ))
        .layer(axum::middleware::map_response(security_headers))
}

/// What every answer says to a browser: the console runs only its own script and style, loads
/// only from its own origin, and is never framed (`Content-Security-Policy`); types are not
/// sniffed; no referrer leaves.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

async fn security_headers(mut resp: Response) -> Response {
    use axum::http::header::{
        CONTENT_SECURITY_POLICY as CSP, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
    };
    let h = resp.headers_mut();
    h.insert(CSP, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}

/// A server's TLS configuration (rustls, with ring).
pub use rustls::ServerConfig as TlsConfig;

/// Load a certificate chain and its private key (PEM files) for [`serve`]. The error names the
/// file and what is wrong with it.
pub fn tls_config(cert: &std::path::Path, key: &std::path::Path) -> Result<Arc<TlsConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = TlsConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("the key does not fit the certificate, or is not supported: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serve the API on `listener` (over TLS with `tls`) until `shutdown` resolves, then finish
/// in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    monitor: Arc<dyn Monitor>,
    auth: Auth,
    tls: Option<Arc<TlsConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, tokens = auth.tokens.len(), tls = tls.is_some(), "HTTP API listening");
    }
    // The peer's address: wrong tokens are counted per address.
    let app = app_with_auth(monitor, auth).into_make_service_with_connect_info::<SocketAddr>();
    let Some(tls) = tls else {
        return axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
    };
    let handle = axum_server::Handle::new();
    let stop = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stop.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
    });
    let config = axum_server::tls_rustls::RustlsConfig::from_config(tls);
    axum_server::from_tcp_rustls(listener.into_std()?, config)
        .handle(handle)
        .serve(app)
        .await
}

/// Run a monitor call that may block (storage) on the blocking pool.
async fn blocking<T: Send + 'static>(
    monitor: AppState,
    f: impl FnOnce(&dyn Monitor) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(move || f(monitor.as_ref()))
        .await
        .unwrap_or_else(|e| Err(ApiError::Internal(format!("monitor call failed: {e}"))))
}

async fn list_streams(State(m): State<AppState>) -> Result<Json<Vec<StreamStatus>>, ApiError> {
    // In a cluster the list is read from the database.
    Ok(Json(blocking(m, |m| Ok(m.streams())).await?))
}

async fn get_stream(
    State(m): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<StreamStatus>, ApiError> {
    blocking(m, |m| Ok(m.streams()))
        .await?
        .into_iter()
        .find(|s| s.id == id)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no stream {id:?}")))
}

async fn cluster(State(m): State<AppState>) -> Result<Json<ClusterView>, ApiError> {
    Ok(Json(blocking(m, |m| m.cluster()).await?))
}

async fn add_stream(State(m): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let spec: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    if !spec.is_object() {
        return Err(ApiError::bad_request(
            "the body must be a JSON object: a stream's config, e.g. {\"id\": \"news\", \"url\": \"srt://host:9000\"}",
        ));
    }
    let status = blocking(m, move |m| m.add_stream(spec)).await?;
    let location = format!("/api/streams/{}", status.id);
    Ok((StatusCode::CREATED, [(LOCATION, location)], Json(status)).into_response())
}

/// `PATCH /api/streams/{id}`: the settings that can change while a stream runs (its tier).
async fn patch_stream(
    State(m): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<StreamStatus>, ApiError> {
    let spec: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    let Some(obj) = spec.as_object() else {
        return Err(ApiError::bad_request(
            "the body must be a JSON object, e.g. {\"tier\": \"keyframes\"}",
        ));
    };
    let mut errors = Vec::new();
    for key in obj
        .keys()
        .filter(|k| !matches!(k.as_str(), "tier" | "priority"))
    {
        errors.push(format!(
            "{key}: cannot be changed while the stream runs (only tier and priority)"
        ));
    }
    let tier = match obj.get("tier") {
        Some(serde_json::Value::String(s)) => match s.parse::<Tier>() {
            Ok(t) => Some(t),
            Err(e) => {
                errors.push(format!("tier: {e}"));
                None
            }
        },
        Some(other) => {
            errors.push(format!("tier: must be a string (got {other})"));
            None
        }
        None => None,
    };
    let priority = match obj.get("priority") {
        Some(v) => match v.as_u64().and_then(|p| u32::try_from(p).ok()) {
            Some(p) => Some(p),
            None => {
                errors.push(format!(
                    "priority: must be a whole number from 0 to 4294967295 (got {v})"
                ));
                None
            }
        },
        None => None,
    };
    if obj.get("tier").is_none() && obj.get("priority").is_none() {
        errors.push("tier or priority: missing (the settings PATCH changes)".into());
    }
    if !errors.is_empty() {
        return Err(ApiError::BadRequest(errors));
    }
    // In a cluster these write the database: off the async workers.
    let status = blocking(m, move |m| {
        let mut status = None;
        if let Some(p) = priority {
            status = Some(m.set_priority(&id, p)?);
        }
        if let Some(t) = tier {
            status = Some(m.set_tier(&id, t)?);
        }
        Ok(status)
    })
    .await?;
    match status {
        Some(s) => Ok(Json(s)),
        None => Err(ApiError::bad_request("nothing to change")),
    }
}

async fn remove_stream(
    State(m): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    blocking(m, move |m| m.remove_stream(&id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_alerts(
    State(m): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Vec<AlertRecord>>, ApiError> {
    let Query(pairs) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let q = AlertsQuery::from_pairs(&pairs).map_err(ApiError::BadRequest)?;
    Ok(Json(blocking(m, move |m| m.alerts(&q)).await?))
}

async fn get_alert(
    State(m): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<AlertRecord>, ApiError> {
    Ok(Json(blocking(m, move |m| m.alert(&id)).await?))
}

/// A JSON object body; an empty body is an empty object. Keys other than `allowed` are refused.
fn object_body(
    body: &Bytes,
    allowed: &[&str],
    example: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    let serde_json::Value::Object(obj) = value else {
        return Err(ApiError::bad_request(format!(
            "the body must be a JSON object, e.g. {example}"
        )));
    };
    let unknown: Vec<String> = obj
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .map(|k| format!("{k}: unknown field (expected {})", allowed.join(", ")))
        .collect();
    if unknown.is_empty() {
        Ok(obj)
    } else {
        Err(ApiError::BadRequest(unknown))
    }
}

/// The longest comment accepted, in characters.
pub const MAX_COMMENT_CHARS: usize = 2000;

fn comment_field(
    obj: &serde_json::Map<String, serde_json::Value>,
    errors: &mut Vec<String>,
) -> String {
    match obj.get("comment") {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(c)) if c.chars().count() <= MAX_COMMENT_CHARS => c.clone(),
        Some(serde_json::Value::String(_)) => {
            errors.push(format!(
                "comment: must be at most {MAX_COMMENT_CHARS} characters"
            ));
            String::new()
        }
        Some(other) => {
            errors.push(format!("comment: must be a string (got {other})"));
            String::new()
        }
    }
}

/// A time field: an RFC 3339 string, or unix seconds as a number or string.
fn time_field(
    obj: &serde_json::Map<String, serde_json::Value>,
    key: &str,
    errors: &mut Vec<String>,
) -> Option<WallTime> {
    let parsed = match obj.get(key)? {
        serde_json::Value::Null => return None,
        serde_json::Value::String(s) => parse_time(s),
        serde_json::Value::Number(n) => parse_time(&n.to_string()),
        other => Err(format!(
            "expected an RFC 3339 time or unix seconds, got {other}"
        )),
    };
    match parsed {
        Ok(t) => Some(t),
        Err(e) => {
            errors.push(format!("{key}: {e}"));
            None
        }
    }
}

async fn ack_alert(
    State(m): State<AppState>,
    Path(id): Path<String>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Json<AlertRecord>, ApiError> {
    let obj = object_body(&body, &["comment"], r#"{"comment": "switched to backup"}"#)?;
    let mut errors = Vec::new();
    let comment = comment_field(&obj, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::BadRequest(errors));
    }
    let record = blocking(m, move |m| m.ack_alert(&id, &caller.name, comment)).await?;
    Ok(Json(record))
}

async fn mute_stream(
    State(m): State<AppState>,
    Path(id): Path<String>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Json<Mute>, ApiError> {
    let obj = object_body(
        &body,
        &["until", "comment"],
        r#"{"until": "2026-01-01T06:00:00Z", "comment": "rehearsal"}"#,
    )?;
    let mut errors = Vec::new();
    let comment = comment_field(&obj, &mut errors);
    let until = time_field(&obj, "until", &mut errors);
    if until.is_some_and(|u| u <= Utc::now()) {
        errors.push("until: must be in the future".into());
    }
    if !errors.is_empty() {
        return Err(ApiError::BadRequest(errors));
    }
    let mute = blocking(m, move |m| m.mute_stream(&id, until, &caller.name, comment)).await?;
    Ok(Json(mute))
}

async fn unmute_stream(
    State(m): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    blocking(m, move |m| m.unmute_stream(&id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_windows(State(m): State<AppState>) -> Result<Json<Vec<MaintenanceWindow>>, ApiError> {
    Ok(Json(blocking(m, |m| m.maintenance_windows()).await?))
}

async fn add_window(
    State(m): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let example = r#"{"streams": ["news-*"], "start": "2026-01-01T02:00:00Z", "end": "2026-01-01T04:00:00Z"}"#;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(format!(
            "the body must be a JSON object, e.g. {example}"
        )));
    }
    let obj = object_body(&body, &["streams", "start", "end", "comment"], example)?;
    let mut errors = Vec::new();
    let comment = comment_field(&obj, &mut errors);
    let mut streams = Vec::new();
    match obj.get("streams") {
        Some(serde_json::Value::Array(items)) if !items.is_empty() => {
            for (i, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some(g) => match avmon_core::glob_problem(g) {
                        None => streams.push(g.to_string()),
                        Some(p) => errors.push(format!("streams[{i}]: {p}")),
                    },
                    None => errors.push(format!("streams[{i}]: must be a string (got {item})")),
                }
            }
        }
        Some(serde_json::Value::Array(_)) => errors.push("streams: must not be empty".into()),
        Some(other) => errors.push(format!(
            "streams: must be an array of stream id globs (got {other})"
        )),
        None => {
            errors.push("streams: missing (an array of stream id globs, e.g. [\"news-*\"])".into())
        }
    }
    let start = time_field(&obj, "start", &mut errors).unwrap_or_else(Utc::now);
    let end = time_field(&obj, "end", &mut errors);
    match end {
        None if !obj.contains_key("end") => errors.push("end: missing".into()),
        Some(end) if end <= start => errors.push("end: must be after start".into()),
        _ => {}
    }
    let (Some(end), true) = (end, errors.is_empty()) else {
        return Err(ApiError::BadRequest(errors));
    };
    let w = MaintenanceWindow {
        id: String::new(),
        streams,
        start,
        end,
        comment,
        by: caller.name,
    };
    let w = blocking(m, move |m| m.add_maintenance_window(w)).await?;
    let location = format!("/api/maintenance/{}", w.id);
    Ok((StatusCode::CREATED, [(LOCATION, location)], Json(w)).into_response())
}

async fn remove_window(
    State(m): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    blocking(m, move |m| m.remove_maintenance_window(&id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/streams/{id}/metrics`. `bitrate_bps` is derived: a sample's `bytes` × 8 over the
/// wall seconds since the sample before it (so the first sample returned has none).
async fn stream_metrics(
    State(m): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<MetricsSeries>, ApiError> {
    let Query(pairs) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let q = MetricsQuery::from_pairs(&pairs, Utc::now()).map_err(ApiError::BadRequest)?;
    let wanted = q.names.clone();
    let mut store_q = q.clone();
    let bitrate = wanted.is_empty() || wanted.iter().any(|n| n == "bitrate_bps");
    if bitrate && !wanted.is_empty() && !wanted.iter().any(|n| n == "bytes") {
        store_q.names.push("bytes".into());
    }
    store_q.names.retain(|n| n != "bitrate_bps");
    if !wanted.is_empty() && store_q.names.is_empty() {
        store_q.names.push("bytes".into());
    }
    let stream = id.clone();
    let mut samples = blocking(m, move |m| m.stream_metrics(&stream, &store_q)).await?;
    if bitrate {
        let mut prev: Option<WallTime> = None;
        for s in &mut samples {
            if let (Some(p), Some(bytes)) = (prev, s.values.get("bytes").copied()) {
                let secs = (s.at - p).num_milliseconds() as f64 / 1000.0;
                if secs > 0.0 {
                    s.values
                        .insert("bitrate_bps".into(), (bytes * 8.0 / secs).round());
                }
            }
            prev = Some(s.at);
        }
    }
    if !wanted.is_empty() {
        for s in &mut samples {
            s.values.retain(|k, _| wanted.contains(k));
        }
    }
    Ok(Json(MetricsSeries {
        stream_id: id,
        since: q.since,
        until: q.until,
        samples,
    }))
}

async fn openapi() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], OPENAPI)
}

fn binary(content_type: &'static str, data: Vec<u8>) -> Response {
    (
        [
            (CONTENT_TYPE, content_type),
            (axum::http::header::CACHE_CONTROL, "no-cache"),
        ],
        data,
    )
        .into_response()
}

async fn alert_snapshot(
    State(m): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let data = evidence_anywhere(m, id, EvidenceKind::Snapshot, &headers, &uri).await?;
    Ok(binary("image/jpeg", data))
}

/// Marks a request one node makes to another for evidence, so that it is not passed on again.
const FORWARDED: &str = "x-avmon-forwarded";

/// An alert's evidence from this node, or else (in a cluster) from the node that keeps it:
/// each other live node is asked in turn, with the caller's own token.
async fn evidence_anywhere(
    m: AppState,
    id: String,
    kind: EvidenceKind,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Vec<u8>, ApiError> {
    let local = {
        let id = id.clone();
        blocking(m.clone(), move |m| m.evidence(&id, kind)).await
    };
    let not_found = match local {
        Err(ApiError::NotFound(why)) if !headers.contains_key(FORWARDED) => why,
        other => return other,
    };
    let peers = blocking(m, |m| Ok(m.peers())).await.unwrap_or_default();
    if peers.is_empty() {
        return Err(ApiError::NotFound(not_found));
    }
    let file = match kind {
        EvidenceKind::Snapshot => "snapshot.jpg",
        EvidenceKind::Clip => "clip.ts",
    };
    match from_peers(&peers, &format!("/api/alerts/{id}/{file}"), headers, uri).await? {
        Some(body) => Ok(body),
        None => Err(ApiError::NotFound(format!(
            "{not_found} (on any live node of the cluster)"
        ))),
    }
}

/// `path` from the first of `peers` (API addresses) that has it, asked in turn with the
/// caller's own token and marked [`FORWARDED`]; `None` when none has it.
async fn from_peers(
    peers: &[String],
    path: &str,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Option<Vec<u8>>, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
        .or_else(|| {
            Query::<Vec<(String, String)>>::try_from_uri(uri)
                .ok()
                .and_then(|Query(p)| p.into_iter().find(|(k, _)| k == "access_token"))
                .map(|(_, v)| format!("Bearer {v}"))
        });
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| ApiError::Internal(format!("an HTTP client: {e}")))?;
    for peer in peers {
        let url = format!("{}{path}", peer.trim_end_matches('/'));
        let mut req = client.get(&url).header(FORWARDED, "1");
        if let Some(t) = &token {
            req = req.header(header::AUTHORIZATION, t);
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => {
                if let Ok(body) = r.bytes().await {
                    return Ok(Some(body.to_vec()));
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!("{path} from {peer}: {e}"),
        }
    }
    Ok(None)
}

async fn alert_clip(
    State(m): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let name = format!("attachment; filename=\"{}.ts\"", id.replace('"', ""));
    let data = evidence_anywhere(m, id, EvidenceKind::Clip, &headers, &uri).await?;
    let mut r = binary("video/mp2t", data);
    if let Ok(v) = axum::http::HeaderValue::from_str(&name) {
        r.headers_mut()
            .insert(axum::http::header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

/// A stream's thumbnail from this node, or else (in a cluster) from the node that runs it.
async fn thumbnail(
    State(m): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let local = {
        let id = id.clone();
        blocking(m.clone(), move |m| m.thumbnail(&id)).await
    };
    let not_found = match local {
        Ok(data) => return Ok(binary("image/jpeg", data)),
        Err(ApiError::NotFound(why)) if !headers.contains_key(FORWARDED) => why,
        Err(e) => return Err(e),
    };
    let holder = {
        let id = id.clone();
        blocking(m, move |m| Ok(m.holder_of(&id))).await?
    };
    let Some(holder) = holder else {
        return Err(ApiError::NotFound(not_found));
    };
    let path = format!("/api/streams/{id}/thumbnail.jpg");
    match from_peers(std::slice::from_ref(&holder), &path, &headers, &uri).await? {
        Some(data) => Ok(binary("image/jpeg", data)),
        None => Err(ApiError::NotFound(format!(
            "no picture of stream {id:?} from the node that runs it"
        ))),
    }
}

/// `GET /api/events`: live events as Server-Sent Events. A client that falls behind (the
/// channel is bounded) gets a `resync` event and carries on from the newest.
async fn events(State(m): State<AppState>) -> Result<Response, ApiError> {
    use tokio::sync::broadcast::error::RecvError;
    let rx = m
        .subscribe()
        .ok_or_else(|| ApiError::NotFound("this service publishes no live events".into()))?;
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let ev = match rx.recv().await {
            Ok(ev) => Event::default().event(ev.name).data(&*ev.data),
            Err(RecvError::Lagged(_)) => Event::default().event("resync").data("{}"),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok::<_, std::convert::Infallible>(ev), rx))
    });
    let hello = futures_util::stream::once(async {
        Ok::<_, std::convert::Infallible>(Event::default().event("hello").data("{}"))
    });
    use futures_util::StreamExt;
    Ok(Sse::new(hello.chain(stream))
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn metrics(State(m): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    // Reads the outbox's counts from the store: off the async workers (PostgreSQL's
    // synchronous client must not run on them).
    let text = blocking(m, |m| Ok(m.prometheus())).await?;
    Ok((
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    ))
}

async fn healthz(State(m): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    if m.healthy() {
        (StatusCode::OK, Json(json!({"status": "ok"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unhealthy"})),
        )
    }
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let msg = format!("method {method} not allowed on {}", uri.path());
    error::error_response(StatusCode::METHOD_NOT_ALLOWED, msg.clone(), vec![msg])
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn times_parse_in_every_accepted_form() {
        let t = Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap();
        assert_eq!(parse_time("2025-03-01T12:00:00Z"), Ok(t));
        assert_eq!(parse_time("2025-03-01T14:00:00+02:00"), Ok(t));
        assert_eq!(
            parse_time("2025-03-01T14:00:00 02:00"),
            Ok(t),
            "unescaped +"
        );
        assert_eq!(parse_time("1740830400"), Ok(t));
        assert_eq!(
            parse_time("1740830400.25"),
            Ok(t + chrono::Duration::milliseconds(250))
        );
        for bad in ["yesterday", "", "NaN", "inf", "2025-03-01", "1e300"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn alert_queries_gather_every_problem() {
        let q = AlertsQuery::from_pairs(&pairs(&[
            ("stream", "news-hd"),
            ("since", "1740830400"),
            ("active", "true"),
            ("limit", "50"),
        ]))
        .unwrap();
        assert_eq!(q.stream.as_deref(), Some("news-hd"));
        assert_eq!(q.active, Some(true));
        assert_eq!(q.limit_or_default(), 50);
        assert_eq!(
            AlertsQuery::from_pairs(&[]).unwrap().limit_or_default(),
            DEFAULT_ALERTS_LIMIT
        );

        let errors = AlertsQuery::from_pairs(&pairs(&[
            ("stream", "a b"),
            ("since", "soon"),
            ("active", "maybe"),
            ("limit", "10001"),
            ("steam", "x"),
        ]))
        .unwrap_err();
        assert_eq!(errors.len(), 5, "{errors:#?}");
        assert!(errors[1].starts_with("since: expected an RFC 3339 time"));
        assert!(errors[4].contains("\"steam\""));
        assert!(AlertsQuery::from_pairs(&pairs(&[("limit", "0")])).is_err());
    }
}
