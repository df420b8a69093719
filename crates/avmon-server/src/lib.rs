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
//! | `GET /api/alerts`           | `?stream=ID&since=TIME&active=BOOL&limit=N`: `200` `[Alert, ...]`, newest first |
//! | `GET /metrics`              | Prometheus text format 0.0.4                                |
//! | `GET /healthz`              | `200 {"status":"ok"}` or `503 {"status":"unhealthy"}`       |
//!
//! Every error, unknown routes included, is JSON `{"error": "...", "errors": [...]}` (see
//! [`ApiError`]); internal details are logged, never sent.
//!
//! [`app`] builds the router without binding anything, so tests drive it with
//! `tower::ServiceExt::oneshot`; [`serve`] runs it on a listener until a shutdown future
//! resolves. Monitor calls that may touch storage (`alerts`, `add_stream`, `remove_stream`) run on
//! tokio's blocking pool; the others must be cheap, in-memory reads.

use std::future::Future;
use std::sync::Arc;

use avmon_core::{Alert, MediaInfo, StreamId, Tier, WallTime};
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header::{CONTENT_TYPE, LOCATION};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

mod error;

pub use error::ApiError;

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
    fn alerts(&self, q: &AlertsQuery) -> Result<Vec<Alert>, ApiError>;

    /// The Prometheus exposition (text format 0.0.4), for `GET /metrics`.
    fn prometheus(&self) -> String;

    /// Whether the service is healthy, for `GET /healthz`.
    fn healthy(&self) -> bool;
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
                "active" => match value.to_ascii_lowercase().as_str() {
                    "" | "true" | "1" | "yes" => q.active = Some(true),
                    "false" | "0" | "no" => q.active = Some(false),
                    _ => errors.push(format!("active: expected true or false, got {value:?}")),
                },
                "limit" => match value.parse::<usize>() {
                    Ok(n) if (1..=MAX_ALERTS_LIMIT).contains(&n) => q.limit = Some(n),
                    _ => errors.push(format!(
                        "limit: expected a number from 1 to {MAX_ALERTS_LIMIT}, got {value:?}"
                    )),
                },
                other => errors.push(format!(
                    "unknown query parameter {other:?} (expected stream, since, active, limit)"
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

/// The API router over `monitor`. Binds nothing.
pub fn app(monitor: Arc<dyn Monitor>) -> Router {
    Router::new()
        .route("/api/streams", get(list_streams).post(add_stream))
        .route(
            "/api/streams/{id}",
            get(get_stream).patch(patch_stream).delete(remove_stream),
        )
        .route("/api/alerts", get(list_alerts))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(monitor)
}

/// Serve the API on `listener` until `shutdown` resolves, then finish in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    monitor: Arc<dyn Monitor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "HTTP API listening");
    }
    axum::serve(listener, app(monitor))
        .with_graceful_shutdown(shutdown)
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

async fn list_streams(State(m): State<AppState>) -> Json<Vec<StreamStatus>> {
    Json(m.streams())
}

async fn get_stream(
    State(m): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<StreamStatus>, ApiError> {
    m.streams()
        .into_iter()
        .find(|s| s.id == id)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no stream {id:?}")))
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
    let mut status = None;
    if let Some(p) = priority {
        status = Some(m.set_priority(&id, p)?);
    }
    if let Some(t) = tier {
        status = Some(m.set_tier(&id, t)?);
    }
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
) -> Result<Json<Vec<Alert>>, ApiError> {
    let Query(pairs) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let q = AlertsQuery::from_pairs(&pairs).map_err(ApiError::BadRequest)?;
    Ok(Json(blocking(m, move |m| m.alerts(&q)).await?))
}

async fn metrics(State(m): State<AppState>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        m.prometheus(),
    )
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
