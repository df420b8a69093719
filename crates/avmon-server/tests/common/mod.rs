//! A fake [`Monitor`] and request helpers shared by the API tests.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use avmon_core::{
    Ack, Alert, AlertRecord, AlertState, MaintenanceWindow, Mute, Severity, StreamId, Tier,
    WallTime,
};
use avmon_server::{
    app_with_auth, AlertsQuery, ApiError, Auth, EvidenceKind, LiveEvent, MetricsPoint,
    MetricsQuery, Monitor, Role, Secret, StreamState, StreamStatus, Token,
};
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use chrono::{TimeZone, Utc};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

pub const ADMIN: &str = "admin-token-0123456789abcdef";
pub const READER: &str = "read-token-0123456789abcdef";

/// An admin token `ops` and a read token `wall`.
pub fn tokens() -> Auth {
    Auth {
        tokens: vec![
            Token::new("ops", Role::Admin, &Secret::new(ADMIN)),
            Token::new("wall", Role::Read, &Secret::new(READER)),
        ],
        metrics_need_token: false,
    }
}

pub fn status(id: &str, url: &str) -> StreamStatus {
    StreamStatus {
        id: id.into(),
        url: url.into(),
        status: StreamState::Starting,
        active_alerts: vec![],
        media_t: 0.0,
        last_data_at: None,
        info: None,
        frames_video: 0,
        frames_audio: 0,
        decode_errors: 0,
        reconnects: 0,
        tier: Tier::Full,
        configured_tier: Tier::Full,
        degraded: false,
        priority: 100,
        lag_s: 0.0,
        node: None,
        muted: None,
        config: None,
    }
}

pub fn t(h: u32, m: u32, s: u32) -> WallTime {
    Utc.with_ymd_and_hms(2025, 3, 1, h, m, s).unwrap()
}

pub fn alert(id: &str, stream: &str) -> Alert {
    Alert {
        id: id.into(),
        stream_id: StreamId(stream.into()),
        kind: "video.black".into(),
        severity: Severity::Major,
        state: AlertState::Raised,
        start_s: 8.04,
        end_s: None,
        raised_at: t(12, 0, 0),
        cleared_at: None,
        details: json!({"black_ratio": 0.99}).as_object().unwrap().clone(),
    }
}

pub struct Fake {
    pub streams: Mutex<Vec<StreamStatus>>,
    pub last_query: Mutex<Option<AlertsQuery>>,
    pub last_metrics_query: Mutex<Option<MetricsQuery>>,
    pub unhealthy: AtomicBool,
    pub records: Mutex<Vec<AlertRecord>>,
    pub mutes: Mutex<BTreeMap<String, Mute>>,
    pub windows: Mutex<Vec<MaintenanceWindow>>,
    pub events: Mutex<Option<tokio::sync::broadcast::Sender<LiveEvent>>>,
}

/// What the fake keeps as evidence and pictures.
pub const JPEG: &[u8] = b"\xFF\xD8 a JPEG \xFF\xD9";
pub const CLIP: &[u8] = b"\x47 a TS";

impl Default for Fake {
    fn default() -> Self {
        let record = |id: &str| AlertRecord {
            alert: alert(id, "news"),
            ack: None,
            suppressed: None,
        };
        Fake {
            streams: Mutex::default(),
            last_query: Mutex::default(),
            last_metrics_query: Mutex::default(),
            unhealthy: AtomicBool::default(),
            records: Mutex::new(vec![record("a2"), record("a1")]),
            mutes: Mutex::default(),
            windows: Mutex::new(vec![MaintenanceWindow {
                id: "config-0".into(),
                streams: vec!["news*".into()],
                start: t(1, 0, 0),
                end: t(2, 0, 0),
                comment: "from the config file".into(),
                by: "config".into(),
            }]),
            events: Mutex::default(),
        }
    }
}

impl Fake {
    fn known(&self, id: &str) -> Result<(), ApiError> {
        if self.streams.lock().unwrap().iter().any(|s| s.id == id) {
            Ok(())
        } else {
            Err(ApiError::NotFound(format!("no stream {id:?}")))
        }
    }
}

impl Monitor for Fake {
    fn streams(&self) -> Vec<StreamStatus> {
        let mutes = self.mutes.lock().unwrap();
        let mut streams = self.streams.lock().unwrap().clone();
        for s in &mut streams {
            s.muted = mutes.get(&s.id).cloned();
        }
        streams
    }

    fn add_stream(&self, spec: Value) -> Result<StreamStatus, ApiError> {
        let mut errors = Vec::new();
        let id = spec["id"].as_str().unwrap_or_default();
        let url = spec["url"].as_str().unwrap_or_default();
        if let Some(p) = StreamId::problem(id) {
            errors.push(format!("id: {p}"));
        }
        if !url.starts_with("srt://") && !url.starts_with("udp://") {
            errors.push(format!("url: unsupported scheme in {url:?}"));
        }
        if !errors.is_empty() {
            return Err(ApiError::BadRequest(errors));
        }
        let mut streams = self.streams.lock().unwrap();
        if streams.iter().any(|s| s.id == id) {
            return Err(ApiError::Conflict(format!("stream {id:?} already exists")));
        }
        let s = status(id, url);
        streams.push(s.clone());
        Ok(s)
    }

    fn set_tier(&self, id: &str, tier: Tier) -> Result<StreamStatus, ApiError> {
        let mut streams = self.streams.lock().unwrap();
        let s = streams
            .iter_mut()
            .find(|s| s.id == id)
            .ok_or_else(|| ApiError::NotFound(format!("no stream {id:?}")))?;
        s.tier = tier;
        Ok(s.clone())
    }

    fn remove_stream(&self, id: &str) -> Result<(), ApiError> {
        let mut streams = self.streams.lock().unwrap();
        let before = streams.len();
        streams.retain(|s| s.id != id);
        if streams.len() == before {
            return Err(ApiError::NotFound(format!("no stream {id:?}")));
        }
        Ok(())
    }

    fn alerts(&self, q: &AlertsQuery) -> Result<Vec<AlertRecord>, ApiError> {
        *self.last_query.lock().unwrap() = Some(q.clone());
        if q.stream.as_deref() == Some("boom") {
            return Err(ApiError::Internal(
                "SELECT failed on /var/lib/avmon/secret.db".into(),
            ));
        }
        Ok(self.records.lock().unwrap().clone())
    }

    fn alert(&self, id: &str) -> Result<AlertRecord, ApiError> {
        self.records
            .lock()
            .unwrap()
            .iter()
            .find(|r| r.alert.id == id)
            .cloned()
            .ok_or_else(|| ApiError::NotFound(format!("no alert {id:?}")))
    }

    fn ack_alert(&self, id: &str, by: &str, comment: String) -> Result<AlertRecord, ApiError> {
        let mut records = self.records.lock().unwrap();
        let r = records
            .iter_mut()
            .find(|r| r.alert.id == id)
            .ok_or_else(|| ApiError::NotFound(format!("no alert {id:?}")))?;
        if let Some(a) = &r.ack {
            return Err(ApiError::Conflict(format!(
                "alert {id:?} was already acknowledged by {:?}",
                a.by
            )));
        }
        r.ack = Some(Ack {
            by: by.into(),
            comment,
            at: Utc::now(),
        });
        Ok(r.clone())
    }

    fn mute_stream(
        &self,
        id: &str,
        until: Option<WallTime>,
        by: &str,
        comment: String,
    ) -> Result<Mute, ApiError> {
        self.known(id)?;
        let m = Mute {
            stream_id: id.into(),
            until,
            by: by.into(),
            comment,
            at: Utc::now(),
        };
        self.mutes.lock().unwrap().insert(id.into(), m.clone());
        Ok(m)
    }

    fn unmute_stream(&self, id: &str) -> Result<(), ApiError> {
        self.known(id)?;
        self.mutes.lock().unwrap().remove(id);
        Ok(())
    }

    fn maintenance_windows(&self) -> Result<Vec<MaintenanceWindow>, ApiError> {
        Ok(self.windows.lock().unwrap().clone())
    }

    fn add_maintenance_window(
        &self,
        mut w: MaintenanceWindow,
    ) -> Result<MaintenanceWindow, ApiError> {
        let mut windows = self.windows.lock().unwrap();
        w.id = format!("w{}", windows.len());
        windows.push(w.clone());
        Ok(w)
    }

    fn remove_maintenance_window(&self, id: &str) -> Result<(), ApiError> {
        if id.starts_with("config-") {
            return Err(ApiError::Conflict(format!(
                "window {id:?} is defined in the config file; remove it there"
            )));
        }
        let mut windows = self.windows.lock().unwrap();
        let before = windows.len();
        windows.retain(|w| w.id != id);
        if windows.len() == before {
            return Err(ApiError::NotFound(format!("no maintenance window {id:?}")));
        }
        Ok(())
    }

    fn stream_metrics(&self, id: &str, q: &MetricsQuery) -> Result<Vec<MetricsPoint>, ApiError> {
        self.known(id)?;
        *self.last_metrics_query.lock().unwrap() = Some(q.clone());
        // Three 10 s periods of 250 000 bytes each: 200 kbit/s.
        Ok((0..3)
            .map(|i| {
                let mut values = BTreeMap::new();
                for (k, v) in [
                    ("bytes", 250_000.0),
                    ("loudness_short_term_lufs", -23.0 - i as f64),
                    ("blockiness_mean", 1.5),
                    ("decode_errors", i as f64),
                ] {
                    if q.names.is_empty() || q.names.iter().any(|n| n == k) {
                        values.insert(k.to_string(), v);
                    }
                }
                MetricsPoint {
                    at: t(12, 0, 10 * i),
                    media_t: 10.0 * i as f64,
                    values,
                }
            })
            .collect())
    }

    fn prometheus(&self) -> String {
        "# TYPE avmon_streams gauge\navmon_streams 1\n".into()
    }

    fn healthy(&self) -> bool {
        !self.unhealthy.load(Ordering::SeqCst)
    }

    /// Two nodes, one of them gone, and the gap its stream had.
    fn cluster(&self) -> Result<avmon_server::ClusterView, ApiError> {
        let t = |s: i64| Utc.timestamp_opt(1_764_000_000 + s, 0).unwrap();
        let node = |name: &str, alive: bool| avmon_server::ClusterNode {
            name: name.into(),
            api_addr: format!("http://{name}.example:8080"),
            alive,
            left: false,
            streams: u64::from(alive),
            load: 0.12,
            capacity: 1.6,
            started_at: t(0),
            last_seen: t(100),
            seen_ago_s: 0.5,
        };
        Ok(avmon_server::ClusterView {
            node: "n1".into(),
            lease_ttl_s: 8.0,
            nodes: vec![node("n1", true), node("n2", false)],
            unwatched: vec![avmon_server::UnwatchedStream {
                stream: "pinned".into(),
                since: Some(t(40)),
                prev_node: Some("n2".into()),
                pinned_node: Some("n2".into()),
            }],
            gaps: vec![avmon_server::MonitoringGap {
                stream: "news".into(),
                from: t(40),
                to: t(49),
                duration_s: 9.0,
                prev_node: Some("n2".into()),
                next_node: "n1".into(),
                reason: "node_lost".into(),
            }],
        })
    }

    fn thumbnail(&self, id: &str) -> Result<Vec<u8>, ApiError> {
        match id {
            "news" => Ok(JPEG.to_vec()),
            _ => Err(ApiError::NotFound(format!("no stream {id:?}"))),
        }
    }

    fn evidence(&self, alert_id: &str, kind: EvidenceKind) -> Result<Vec<u8>, ApiError> {
        match (alert_id, kind) {
            ("a1", EvidenceKind::Snapshot) => Ok(JPEG.to_vec()),
            ("a1", EvidenceKind::Clip) => Ok(CLIP.to_vec()),
            _ => Err(ApiError::NotFound(format!("no evidence for {alert_id:?}"))),
        }
    }

    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<LiveEvent>> {
        self.events
            .lock()
            .unwrap()
            .as_ref()
            .map(|tx| tx.subscribe())
    }
}

/// A fake with one stream, `news`, and the router over it with `auth`.
pub fn setup_with(auth: Auth) -> (Arc<Fake>, Router) {
    let fake = Arc::new(Fake::default());
    fake.streams
        .lock()
        .unwrap()
        .push(status("news", "srt://10.0.0.1:9000"));
    let router = app_with_auth(fake.clone(), auth);
    (fake, router)
}

/// [`setup_with`] no tokens: everything open.
pub fn setup() -> (Arc<Fake>, Router) {
    setup_with(Auth::open())
}

/// Send one request; returns status, content type and body (JSON when it parses, else a string).
pub async fn call(
    router: &Router,
    method: Method,
    uri: &str,
    body: Option<&str>,
) -> (StatusCode, String, Value) {
    call_as(router, None, method, uri, body).await
}

/// [`call`] with `Authorization: Bearer TOKEN` when `token` is given.
pub async fn call_as(
    router: &Router,
    token: Option<&str>,
    method: Method,
    uri: &str,
    body: Option<&str>,
) -> (StatusCode, String, Value) {
    let (status, headers, json) = call_full(router, token, method, uri, body).await;
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ctype, json)
}

pub async fn call_full(
    router: &Router,
    token: Option<&str>,
    method: Method,
    uri: &str,
    body: Option<&str>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if body.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, json)
}
