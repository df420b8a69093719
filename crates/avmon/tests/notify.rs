//! Notifications survive a crash: `avmon run` is killed with SIGKILL while a notification is
//! pending in the outbox (its receiver down); after a restart on the same store it is delivered,
//! exactly once per idempotency key.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::{extract::State, http::HeaderMap, routing::post, Json, Router};
use common::*;
use serde_json::Value;

type Received = Arc<Mutex<Vec<(String, Value)>>>;

#[test]
fn a_notification_pending_at_sigkill_is_delivered_once_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let udp = free_udp_port();
    // The receiver's port, with nothing listening on it yet: the receiver is down.
    let hook_port = free_tcp_port();
    let streams = format!(
        r#"
[[streams]]
id = "live"
url = "udp://127.0.0.1:{udp}"
io_timeout_s = 3
[[notifiers]]
kind = "webhook"
id = "hook"
url = "http://127.0.0.1:{hook_port}/hook"
kinds = ["video.*"]
backoff_initial_s = 0.2
backoff_max_s = 0.5
"#
    );
    let (mut service, _http, _base) = start_service(dir.path(), &streams);
    let synth = synth_live(udp, 30, &["black@1-30"]);
    // The black alert is queued in the outbox and attempted (and failing) while the receiver
    // is down.
    let db = format!("sqlite://{}", dir.path().join("avmon.db").display());
    let key = wait_for(
        "the black alert in the outbox",
        Duration::from_secs(30),
        || {
            let store = avmon_store::open(&db).ok()?;
            let rows = store.outbox_rows("hook").ok()?;
            let row = rows
                .iter()
                .find(|r| r.entry.payload["kind"] == "video.black" && r.entry.state == "raised")?;
            (row.attempts >= 1).then(|| row.entry.key.clone())
        },
    );
    service.0.kill().unwrap(); // SIGKILL
    service.0.wait().unwrap();
    drop(synth);
    {
        let store = avmon_store::open(&db).unwrap();
        let row = store.outbox_rows("hook").unwrap();
        let row = row.iter().find(|r| r.entry.key == key).unwrap();
        assert_eq!(
            row.status,
            avmon_store::OutboxStatus::Pending,
            "not delivered before the kill"
        );
    }

    // The receiver comes up; avmon restarts on the same store.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let got: Received = Arc::default();
    let app = Router::new()
        .route(
            "/hook",
            post(
                |State(got): State<Received>, headers: HeaderMap, Json(body): Json<Value>| async move {
                    let key = headers
                        .get("idempotency-key")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    got.lock().unwrap().push((key, body));
                    "ok"
                },
            ),
        )
        .with_state(got.clone());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(("127.0.0.1", hook_port)))
        .unwrap();
    rt.spawn(async move { axum::serve(listener, app).await });
    let (_service, http, base) = start_service(dir.path(), &streams);
    wait_for("the pending notification", Duration::from_secs(20), || {
        got.lock()
            .unwrap()
            .iter()
            .any(|(k, _)| *k == key)
            .then_some(())
    });
    // Time for any duplicate to show up.
    std::thread::sleep(Duration::from_secs(3));
    let got = got.lock().unwrap().clone();
    let mut per_key: BTreeMap<&str, usize> = BTreeMap::new();
    for (k, body) in &got {
        *per_key.entry(k.as_str()).or_default() += 1;
        assert_eq!(body["idempotency_key"], k.as_str());
    }
    assert!(
        per_key.values().all(|n| *n == 1),
        "a key delivered twice: {per_key:?}"
    );
    let black = got.iter().find(|(k, _)| *k == key).unwrap();
    assert_eq!(black.1["kind"], "video.black");
    assert_eq!(black.1["stream_id"], "live");
    assert_eq!(black.1["state"], "raised");

    // The outbox figures are in /metrics.
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let delivered = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("avmon_outbox_notifications{notifier=\"hook\",status=\"delivered\"} ")
        })
        .unwrap_or_else(|| panic!("no outbox figures in:\n{metrics}"));
    assert!(delivered.parse::<u64>().unwrap() >= 1, "{metrics}");
    assert!(metrics.contains("avmon_outbox_notifications{notifier=\"hook\",status=\"pending\"}"));
}
