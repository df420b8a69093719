//! What the notifier tests share: a webhook receiver on loopback (axum), and alerts and events
//! to send to it. Each test crate uses part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use avmon_core::{Alert, AlertEvent, AlertState, Severity, StreamId, Transition};
use avmon_notify::{ChannelConfig, DeliveryConfig, WebhookConfig};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use chrono::Utc;
use serde_json::{json, Value};

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
pub struct Hit {
    pub at: Instant,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Hit {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
}

/// Two string fields of each hit's JSON body, e.g. `("stream_id", "state")`.
pub fn pairs(hits: &[Hit], a: &str, b: &str) -> Vec<(String, String)> {
    let field = |v: &Value, k: &str| v[k].as_str().unwrap().to_string();
    hits.iter()
        .map(|h| {
            let v = h.json();
            (field(&v, a), field(&v, b))
        })
        .collect()
}

/// A receiver: answers each request with the next status of `script` (then 200), keeps every
/// request and the accepted ones.
#[derive(Clone, Default)]
pub struct Receiver {
    script: Arc<Mutex<Vec<u16>>>,
    hits: Arc<Mutex<Vec<Hit>>>,
    accepted: Arc<Mutex<Vec<Hit>>>,
    ok_status: u16,
    delay: Duration,
}

impl Receiver {
    pub fn answering(script: &[u16]) -> Self {
        Receiver {
            script: Arc::new(Mutex::new(script.iter().rev().copied().collect())),
            ok_status: 200,
            ..Default::default()
        }
    }
    /// Answer this (instead of 200) once the script is done.
    pub fn accepting_with(self, ok_status: u16) -> Self {
        Receiver { ok_status, ..self }
    }
    /// Take this long to answer each request (a slow receiver).
    pub fn delaying(self, delay: Duration) -> Self {
        Receiver { delay, ..self }
    }
    pub fn accepted(&self) -> Vec<Hit> {
        self.accepted.lock().unwrap().clone()
    }
    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let hit = Hit {
        at: Instant::now(),
        headers,
        body,
    };
    r.hits.lock().unwrap().push(hit.clone());
    tokio::time::sleep(r.delay).await;
    let status = r.script.lock().unwrap().pop().unwrap_or(r.ok_status);
    if (200..300).contains(&status) {
        r.accepted.lock().unwrap().push(hit);
    }
    StatusCode::from_u16(status).unwrap()
}

/// Serve `r` on `addr` (port 0: any); returns the hook URL.
pub async fn serve_on(r: Receiver, addr: SocketAddr) -> String {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/hook/{*rest}", post(receive))
        .with_state(r);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/hook/T0/SECRETPATH")
}

pub async fn serve(r: Receiver) -> String {
    serve_on(r, "127.0.0.1:0".parse().unwrap()).await
}

/// Fast retries for tests.
pub fn fast() -> DeliveryConfig {
    DeliveryConfig {
        timeout_s: 2.0,
        backoff_initial_s: 0.05,
        backoff_max_s: 0.2,
        ..Default::default()
    }
}

pub fn webhook(url: &str) -> ChannelConfig {
    ChannelConfig::Webhook(WebhookConfig {
        url: url.to_string(),
        ..Default::default()
    })
}

pub fn alert(n: u32, stream: &str, kind: &str, severity: Severity) -> Alert {
    Alert {
        id: format!("0195a1b2-0000-7000-8000-{n:012}"),
        stream_id: StreamId(stream.into()),
        kind: kind.into(),
        severity,
        state: AlertState::Raised,
        start_s: 8.04,
        end_s: None,
        raised_at: Utc::now(),
        cleared_at: None,
        details: json!({"black_ratio": 0.99}).as_object().unwrap().clone(),
    }
}

pub fn raise(a: &Alert) -> AlertEvent {
    AlertEvent {
        transition: Transition::Raised,
        alert: a.clone(),
    }
}

pub fn clear(a: &Alert) -> AlertEvent {
    let mut a = a.clone();
    a.state = AlertState::Cleared;
    a.end_s = Some(12.5);
    a.cleared_at = Some(Utc::now());
    AlertEvent {
        transition: Transition::Cleared,
        alert: a,
    }
}
