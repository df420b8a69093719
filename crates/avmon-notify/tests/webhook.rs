//! The webhook against a real HTTP receiver on loopback.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use avmon_core::{Alert, AlertEvent, AlertState, Severity, StreamId, Transition};
use avmon_notify::{Notifier, Webhook, WebhookConfig};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use chrono::{TimeZone, Utc};
use serde_json::{json, Value};

/// What the receiver does and what it saw.
#[derive(Clone, Default)]
struct Receiver {
    /// (Idempotency-Key, body) of every request answered 2xx.
    accepted: Arc<Mutex<Vec<(String, Value)>>>,
    hits: Arc<AtomicUsize>,
    /// Answer 500 to this many requests first.
    fail_first: usize,
    /// Answer this status (instead of 200) once past `fail_first`.
    status: Option<StatusCode>,
    /// Sleep this long before answering.
    delay: Duration,
}

async fn receive(
    State(r): State<Receiver>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> StatusCode {
    let hit = r.hits.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(r.delay).await;
    if hit < r.fail_first {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let status = r.status.unwrap_or(StatusCode::OK);
    if status.is_success() {
        let key = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        r.accepted.lock().unwrap().push((key, body));
    }
    status
}

/// Serve `r` on 127.0.0.1:0; returns the hook URL.
async fn serve(r: Receiver) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/hook", post(receive)).with_state(r);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/hook")
}

fn config(url: String) -> WebhookConfig {
    WebhookConfig {
        url,
        timeout_s: 2.0,
        max_attempts: 4,
        backoff_initial_s: 0.01,
        backoff_max_s: 0.05,
        ..Default::default()
    }
}

fn alert() -> Alert {
    Alert {
        id: "0195a1b2-0000-7000-8000-000000000001".into(),
        stream_id: StreamId("news-hd".into()),
        kind: "video.black".into(),
        severity: Severity::Major,
        state: AlertState::Raised,
        start_s: 8.04,
        end_s: None,
        raised_at: Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 2).unwrap(),
        cleared_at: None,
        details: json!({"black_ratio": 0.99}).as_object().unwrap().clone(),
    }
}

/// Raised, updated (severity up), cleared: one alert's life.
fn life() -> [AlertEvent; 3] {
    let a = alert();
    let mut u = a.clone();
    u.severity = Severity::Critical;
    u.details = json!({"black_ratio": 1.0}).as_object().unwrap().clone();
    let mut c = u.clone();
    c.state = AlertState::Cleared;
    c.end_s = Some(14.5);
    c.cleared_at = Some(Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 9).unwrap());
    [
        AlertEvent {
            transition: Transition::Raised,
            alert: a,
        },
        AlertEvent {
            transition: Transition::Updated,
            alert: u,
        },
        AlertEvent {
            transition: Transition::Cleared,
            alert: c,
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raised_and_cleared_arrive_in_order_with_the_exact_shape() {
    let r = Receiver::default();
    let hook = Arc::new(Webhook::spawn(
        config(serve(r.clone()).await),
        &tokio::runtime::Handle::current(),
    ));
    assert!(hook.name().starts_with("webhook http://127.0.0.1:"));
    assert!(!hook.name().contains("/hook"), "no path in the name");

    // Notified from a plain thread, as the alert engine does; flushed blocking, as at exit.
    let h = hook.clone();
    let drained = tokio::task::spawn_blocking(move || {
        for ev in life() {
            h.notify(&ev);
        }
        h.flush(Duration::from_secs(10))
    })
    .await
    .unwrap();
    assert!(drained);

    let got = r.accepted.lock().unwrap().clone();
    let id = "0195a1b2-0000-7000-8000-000000000001";
    assert_eq!(got.len(), 2, "the update is not sent by default: {got:#?}");
    assert_eq!(got[0].0, format!("{id}:raised"));
    assert_eq!(
        got[0].1,
        json!({"alert_id": id, "stream_id": "news-hd", "kind": "video.black",
               "state": "raised", "severity": "major", "start_s": 8.04, "end_s": null,
               "raised_at": "2025-03-01T12:00:02.000Z", "cleared_at": null,
               "details": {"black_ratio": 0.99}})
    );
    assert_eq!(got[1].0, format!("{id}:cleared"));
    assert_eq!(
        got[1].1,
        json!({"alert_id": id, "stream_id": "news-hd", "kind": "video.black",
               "state": "cleared", "severity": "critical", "start_s": 8.04, "end_s": 14.5,
               "raised_at": "2025-03-01T12:00:02.000Z",
               "cleared_at": "2025-03-01T12:00:09.000Z",
               "details": {"black_ratio": 1.0}})
    );
    assert_eq!((hook.delivered(), hook.failed(), hook.dropped()), (2, 0, 0));
    assert_eq!(hook.stats().pending, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_are_sent_when_asked_for() {
    let r = Receiver::default();
    let cfg = WebhookConfig {
        send_updates: true,
        ..config(serve(r.clone()).await)
    };
    let hook = Webhook::spawn(cfg, &tokio::runtime::Handle::current());
    for ev in life() {
        hook.notify(&ev);
    }
    assert!(hook.flush_async(Duration::from_secs(10)).await);
    let got = r.accepted.lock().unwrap().clone();
    let states: Vec<&str> = got
        .iter()
        .map(|(_, b)| b["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["raised", "raised", "cleared"]);
    assert_eq!(got[1].1["severity"], "critical");
    assert_eq!(got[1].1["end_s"], Value::Null);
    // Each update has a key of its own, so receivers that deduplicate keep it.
    assert!(got[1].0.contains(":updated:"), "{}", got[1].0);
    assert_ne!(got[1].0, got[0].0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_until_accepted() {
    let r = Receiver {
        fail_first: 2,
        ..Default::default()
    };
    let hook = Webhook::spawn(
        config(serve(r.clone()).await),
        &tokio::runtime::Handle::current(),
    );
    hook.notify(&life()[0]);
    assert!(hook.flush_async(Duration::from_secs(10)).await);
    assert_eq!(r.hits.load(Ordering::SeqCst), 3);
    let got = r.accepted.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert!(got[0].0.ends_with(":raised"), "same key on every attempt");
    assert_eq!((hook.delivered(), hook.failed()), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_are_not_retried() {
    let r = Receiver {
        status: Some(StatusCode::BAD_REQUEST),
        ..Default::default()
    };
    let hook = Webhook::spawn(
        config(serve(r.clone()).await),
        &tokio::runtime::Handle::current(),
    );
    hook.notify(&life()[0]);
    assert!(hook.flush_async(Duration::from_secs(10)).await);
    assert_eq!(r.hits.load(Ordering::SeqCst), 1);
    assert_eq!((hook.delivered(), hook.failed()), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_requests_is_retried() {
    let r = Receiver {
        fail_first: 0,
        status: Some(StatusCode::TOO_MANY_REQUESTS),
        ..Default::default()
    };
    let hook = Webhook::spawn(
        WebhookConfig {
            max_attempts: 3,
            ..config(serve(r.clone()).await)
        },
        &tokio::runtime::Handle::current(),
    );
    hook.notify(&life()[0]);
    assert!(hook.flush_async(Duration::from_secs(10)).await);
    assert_eq!(r.hits.load(Ordering::SeqCst), 3, "every attempt used");
    assert_eq!((hook.delivered(), hook.failed()), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_never_slows_notify() {
    let r = Receiver {
        delay: Duration::from_secs(10),
        ..Default::default()
    };
    let cfg = WebhookConfig {
        timeout_s: 30.0,
        queue_capacity: 100,
        ..config(serve(r.clone()).await)
    };
    let hook = Webhook::spawn(cfg, &tokio::runtime::Handle::current());
    let ev = &life()[0];
    hook.notify(ev);
    // Let the first request reach the receiver, where it hangs.
    let t = Instant::now();
    while r.hits.load(Ordering::SeqCst) == 0 && t.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(r.hits.load(Ordering::SeqCst), 1);

    let start = Instant::now();
    for _ in 0..1000 {
        hook.notify(ev);
    }
    let took = start.elapsed();
    // A behavioural bound (notify queues and returns), generous for a loaded CI machine: it
    // typically takes about a millisecond, while one blocking delivery would take 10 s.
    assert!(
        took < Duration::from_millis(250),
        "1000 notify calls took {took:?}"
    );
    // The queue holds 100; the rest were dropped and counted, none lost silently.
    assert_eq!(hook.dropped(), 900);
    assert_eq!(hook.pending(), 101);
    assert!(!hook.flush_async(Duration::from_millis(50)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_receiver_counts_failed_and_does_not_hang() {
    let url = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hook", l.local_addr().unwrap())
    }; // dropped: nothing listens there any more
    let hook = Webhook::spawn(
        WebhookConfig {
            max_attempts: 3,
            ..config(url)
        },
        &tokio::runtime::Handle::current(),
    );
    let [raised, _, cleared] = life();
    hook.notify(&raised);
    hook.notify(&cleared);
    assert!(hook.flush_async(Duration::from_secs(20)).await);
    assert_eq!((hook.delivered(), hook.failed(), hook.dropped()), (0, 2, 0));
}
