//! The notifiers against real receivers on loopback (axum), with a real SQLite outbox.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use avmon_core::{Alert, Severity};
use avmon_notify::{
    ChannelConfig, CommandConfig, DeliveryConfig, Notifier, NotifierConfig, OutboxNotifier,
    PagerDutyConfig, Secret, SlackConfig, WebhookConfig,
};
use avmon_store::{OutboxStatus, Store};
use chrono::Utc;
use common::{alert, clear, fast, pairs, raise, serve, serve_on, webhook, Receiver};
use serde_json::{json, Value};

fn store() -> Arc<dyn Store> {
    Arc::from(avmon_store::open("sqlite::memory:").unwrap())
}

fn spawn(
    delivery: DeliveryConfig,
    channel: ChannelConfig,
    store: &Arc<dyn Store>,
) -> OutboxNotifier {
    let mut cfg = NotifierConfig { delivery, channel };
    cfg.delivery.id.get_or_insert_with(|| "n".to_string());
    OutboxNotifier::spawn(cfg, store.clone(), &tokio::runtime::Handle::current()).unwrap()
}

/// Poll `f` until true; panics after `secs`.
async fn until(what: &str, secs: f64, f: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Where `./dev` installs the Standard Webhooks reference verifier (PyPI `standardwebhooks`).
fn pydeps() -> std::path::PathBuf {
    let dir = std::env::var_os("AVMON_PYDEPS").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/pydeps"),
        std::path::PathBuf::from,
    );
    assert!(
        dir.join("standardwebhooks").is_dir(),
        "the standardwebhooks verifier is not in {}: run ./dev test, which installs it",
        dir.display()
    );
    dir
}

/// Each request, as the Standard Webhooks reference library judges it: `ok`, or `rejected: why`.
/// `secret` is as the library takes it (`whsec_` and base64).
fn verify_with_reference(
    secret: &str,
    requests: &[(&axum::http::HeaderMap, &[u8])],
) -> Vec<String> {
    use std::io::Write;
    let input: Vec<Value> = requests
        .iter()
        .map(|(headers, body)| {
            let headers: serde_json::Map<String, Value> = headers
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap())))
                .collect();
            json!({"headers": headers, "body": String::from_utf8_lossy(body)})
        })
        .collect();
    let script = r#"
import json, sys
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
wh = Webhook(sys.argv[1])
for r in json.load(sys.stdin):
    try:
        wh.verify(r["body"], r["headers"])
        print("ok")
    except WebhookVerificationError as e:
        print("rejected:", e)
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script, secret])
        .env("PYTHONPATH", pydeps())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (installed by ./dev)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(Value::Array(input).to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the verifier failed: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_is_signed_keyed_and_in_order() {
    let r = Receiver::answering(&[]);
    let url = serve(r.clone()).await;
    let store = store();
    // A secret in the specification's form, as its libraries generate them.
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let channel = ChannelConfig::Webhook(WebhookConfig {
        url,
        secret: Some(Secret::new(secret)),
        secret_env: None,
    });
    let n = spawn(fast(), channel, &store);
    let a = alert(1, "news-hd", "video.black", Severity::Major);
    n.notify(&raise(&a));
    n.notify(&clear(&a));
    // A replayed event is not queued twice.
    n.notify(&raise(&a));
    until("two deliveries", 5.0, || r.accepted().len() == 2).await;
    assert!(n.flush(Duration::from_secs(2)));
    let got = r.accepted();
    let keys: Vec<&str> = got.iter().map(|h| h.header("idempotency-key")).collect();
    let id = &a.id;
    assert_eq!(keys, [format!("{id}:raised"), format!("{id}:cleared")]);
    for h in &got {
        assert_eq!(h.header("webhook-id"), h.header("idempotency-key"));
        let ts: i64 = h.header("webhook-timestamp").parse().unwrap();
        assert!((Utc::now().timestamp() - ts).abs() < 10);
        assert_eq!(h.json()["idempotency_key"], h.header("idempotency-key"));
    }
    // The reference verifier accepts what was sent, and refuses it with the timestamp moved (a
    // captured request replayed as new), with the body changed, or under another secret.
    let sent: Vec<_> = got.iter().map(|h| (&h.headers, &h.body[..])).collect();
    assert_eq!(verify_with_reference(secret, &sent), ["ok", "ok"]);
    let mut moved = got[0].headers.clone();
    let later = (Utc::now().timestamp() + 30).to_string();
    moved.insert("webhook-timestamp", later.parse().unwrap());
    let changed = got[0].body.iter().rev().copied().collect::<Vec<u8>>();
    let other = "whsec_aGVsbG8gd29ybGQ=";
    let verdicts = [
        verify_with_reference(secret, &[(&moved, &got[0].body[..])]),
        verify_with_reference(secret, &[(&got[0].headers, &changed[..])]),
        verify_with_reference(other, &sent[..1]),
    ];
    for v in &verdicts {
        assert!(v.len() == 1 && v[0].starts_with("rejected"), "{verdicts:?}");
    }
    // A request signed correctly but long ago is refused too: the replay window.
    let key = avmon_notify::signing_key(secret).unwrap();
    let old = Utc::now().timestamp() - 600;
    let mut stale = got[0].headers.clone();
    stale.insert("webhook-timestamp", old.to_string().parse().unwrap());
    let signature = avmon_notify::sign(&key, got[0].header("webhook-id"), old, &got[0].body);
    stale.insert("webhook-signature", signature.parse().unwrap());
    let v = verify_with_reference(secret, &[(&stale, &got[0].body[..])]);
    assert!(
        v[0].starts_with("rejected") && v[0].contains("old"),
        "{v:?}"
    );
    let raised = got[0].json();
    assert_eq!(raised["state"], "raised");
    assert_eq!(raised["stream_id"], "news-hd");
    assert_eq!(raised["severity"], "major");
    assert_eq!(raised["end_s"], Value::Null);
    assert_eq!(got[1].json()["state"], "cleared");
    assert_eq!(got[1].json()["end_s"], 12.5);
    let c = store.outbox_counts("n").unwrap();
    assert_eq!((c.pending, c.delivered, c.failed), (0, 2, 0));
    assert_eq!(n.stats().delivered, 2);
    // Its name shows the host, never the path (a token) or the secret.
    assert!(!n.name().contains("SECRETPATH") && !format!("{n:?}").contains("s3cr3t"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_with_growing_backoff_and_logged() {
    let r = Receiver::answering(&[500, 503, 429]);
    let url = serve(r.clone()).await;
    let store = store();
    let delivery = DeliveryConfig {
        backoff_initial_s: 0.1,
        backoff_max_s: 5.0,
        ..fast()
    };
    let n = spawn(delivery, webhook(&url), &store);
    let a = alert(2, "s", "audio.silence", Severity::Warning);
    n.notify(&raise(&a));
    until("delivery after three failures", 10.0, || {
        r.accepted().len() == 1
    })
    .await;
    let hits = r.hits();
    assert_eq!(hits.len(), 4);
    let gaps: Vec<f64> = hits
        .windows(2)
        .map(|w| w[1].at.duration_since(w[0].at).as_secs_f64())
        .collect();
    // Backoff 0.1, 0.2, 0.4 s with equal jitter: each wait is in [b/2, b] (plus the request).
    for (gap, b) in gaps.iter().zip([0.1, 0.2, 0.4]) {
        assert!(*gap >= b / 2.0 - 0.005 && *gap < b + 0.3, "gaps {gaps:?}");
    }
    assert!(gaps[2] > gaps[0], "the waits grow: {gaps:?}");
    let keys: Vec<&str> = hits.iter().map(|h| h.header("idempotency-key")).collect();
    assert!(
        keys.iter().all(|k| *k == keys[0]),
        "the same key on every attempt"
    );
    until("the attempt log", 2.0, || {
        store.outbox_attempts("n").unwrap().len() == 4
    })
    .await;
    let log = store.outbox_attempts("n").unwrap();
    let outcomes: Vec<(&str, &Value)> = log
        .iter()
        .map(|a| (a.outcome.as_str(), &a.detail["status"]))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("retry", &json!(500)),
            ("retry", &json!(503)),
            ("retry", &json!(429)),
            ("delivered", &json!(200))
        ]
    );
    let rows = store.outbox_rows("n").unwrap();
    assert_eq!(
        (rows[0].status, rows[0].attempts),
        (OutboxStatus::Delivered, 4)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_is_not_retried_and_the_next_event_goes_on() {
    let r = Receiver::answering(&[400]);
    let url = serve(r.clone()).await;
    let store = store();
    let n = spawn(fast(), webhook(&url), &store);
    let (a, b) = (
        alert(3, "s", "video.freeze", Severity::Major),
        alert(4, "s", "video.black", Severity::Major),
    );
    n.notify(&raise(&a));
    n.notify(&raise(&b));
    until("the second event", 5.0, || r.accepted().len() == 1).await;
    assert!(n.flush(Duration::from_secs(2)));
    assert_eq!(r.hits().len(), 2, "the 400 was not retried");
    assert_eq!(r.accepted()[0].json()["alert_id"], b.id);
    let c = store.outbox_counts("n").unwrap();
    assert_eq!((c.delivered, c.failed), (1, 1));
    assert_eq!(n.stats().failed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_then_back_gets_everything_once_in_order() {
    // A port that nothing listens on, until the receiver starts on it.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{addr}/hook/x");
    let store = store();
    let delivery = DeliveryConfig {
        backoff_initial_s: 0.05,
        backoff_max_s: 0.3,
        ..fast()
    };
    let n = spawn(delivery, webhook(&url), &store);
    let alerts: Vec<Alert> = (10..15)
        .map(|i| alert(i, &format!("s{i}"), "source.down", Severity::Critical))
        .collect();
    let mut sent = Vec::new();
    for a in &alerts {
        n.notify(&raise(a));
        sent.push(format!("{}:raised", a.id));
    }
    for a in &alerts[..2] {
        n.notify(&clear(a));
        sent.push(format!("{}:cleared", a.id));
    }
    // Down for a while: attempts fail and are logged, nothing is lost.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let failed_attempts = store.outbox_attempts("n").unwrap().len();
    assert!(
        failed_attempts >= 4,
        "{failed_attempts} attempts while down"
    );
    assert_eq!(store.outbox_counts("n").unwrap().pending, 7);
    assert_eq!(n.stats().pending, 7);

    let r = Receiver::answering(&[]);
    serve_on(r.clone(), addr).await;
    until("everything after the receiver is back", 10.0, || {
        r.accepted().len() == 7
    })
    .await;
    assert!(n.flush(Duration::from_secs(2)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let keys: Vec<String> = r
        .accepted()
        .iter()
        .map(|h| h.header("idempotency-key").to_string())
        .collect();
    assert_eq!(keys, sent, "each once, in the order raised");
    assert_eq!(store.outbox_counts("n").unwrap().delivered, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_rows_of_an_earlier_run_are_delivered_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("avmon.db").display());
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{addr}/hook/x");
    let a = alert(20, "s", "video.black", Severity::Major);
    {
        // First run: the receiver is down; the event is queued, then the runtime goes away.
        let rt = tokio::runtime::Runtime::new().unwrap();
        let store: Arc<dyn Store> = Arc::from(avmon_store::open(&db).unwrap());
        let cfg = NotifierConfig {
            delivery: DeliveryConfig {
                id: Some("n".into()),
                ..fast()
            },
            channel: webhook(&url),
        };
        let n = OutboxNotifier::spawn(cfg, store, rt.handle()).unwrap();
        n.notify(&raise(&a));
        std::thread::sleep(Duration::from_millis(200));
        tokio::task::block_in_place(|| rt.shutdown_timeout(Duration::from_millis(100)));
    }
    let r = Receiver::answering(&[]);
    serve_on(r.clone(), addr).await;
    let store: Arc<dyn Store> = Arc::from(avmon_store::open(&db).unwrap());
    assert_eq!(store.outbox_counts("n").unwrap().pending, 1);
    let n = spawn(fast(), webhook(&url), &store);
    assert_eq!(n.stats().pending, 1, "counted from the outbox at start");
    until("the earlier run's event", 5.0, || r.accepted().len() == 1).await;
    assert_eq!(
        r.accepted()[0].header("idempotency-key"),
        format!("{}:raised", a.id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_choose_streams_kinds_and_severity() {
    let r = Receiver::answering(&[]);
    let url = serve(r.clone()).await;
    let store = store();
    let delivery = DeliveryConfig {
        streams: vec!["news-*".into()],
        kinds: vec!["video.*".into(), "source.down".into()],
        min_severity: Some(Severity::Major),
        ..fast()
    };
    let n = spawn(delivery, webhook(&url), &store);
    let taken = alert(30, "news-hd", "video.black", Severity::Major);
    let cases = [
        alert(31, "sport", "video.black", Severity::Major), // stream
        alert(32, "news-sd", "audio.silence", Severity::Critical), // kind
        alert(33, "news-sd", "video.freeze", Severity::Minor), // severity
    ];
    let down = alert(34, "news-4k", "source.down", Severity::Critical);
    for a in cases.iter().chain([&taken, &down]) {
        n.notify(&raise(a));
    }
    for a in cases.iter().chain([&taken]) {
        n.notify(&clear(a));
    }
    until("the wanted events", 5.0, || r.accepted().len() == 3).await;
    assert!(n.flush(Duration::from_secs(2)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = pairs(&r.accepted(), "stream_id", "state");
    // The clears of filtered-out alerts are not sent either.
    assert_eq!(
        got,
        [
            ("news-hd".to_string(), "raised".to_string()),
            ("news-4k".to_string(), "raised".to_string()),
            ("news-hd".to_string(), "cleared".to_string())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_many_streams_is_one_grouped_webhook() {
    let r = Receiver::answering(&[]);
    let url = serve(r.clone()).await;
    let store = store();
    let delivery = DeliveryConfig {
        group_window_s: 0.5,
        ..fast()
    };
    let n = spawn(delivery, webhook(&url), &store);
    let alerts: Vec<Alert> = (100..200)
        .map(|i| alert(i, &format!("s{i}"), "source.down", Severity::Critical))
        .collect();
    for a in &alerts {
        n.notify(&raise(a));
    }
    until("the group", 5.0, || !r.accepted().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = r.accepted();
    assert_eq!(got.len(), 1, "one message for 100 alerts");
    let body = got[0].json();
    assert_eq!(body["count"], 100);
    assert_eq!(body["events"].as_array().unwrap().len(), 100);
    assert_eq!(body["events"][99]["stream_id"], "s199");
    let key = format!("group:{}:raised:100", alerts[0].id);
    assert_eq!(got[0].header("idempotency-key"), key);
    assert_eq!(body["idempotency_key"], key);
    assert_eq!(store.outbox_counts("n").unwrap().delivered, 100);
    // Later events open a new window.
    n.notify(&clear(&alerts[0]));
    until("the next message", 5.0, || r.accepted().len() == 2).await;
    assert_eq!(r.accepted()[1].json()["state"], "cleared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_messages_have_text_and_coloured_attachments() {
    let r = Receiver::answering(&[]);
    let url = serve(r.clone()).await;
    let store = store();
    let channel = ChannelConfig::Slack(SlackConfig {
        url: Some(Secret::new(url.clone())),
        url_env: None,
    });
    let n = spawn(fast(), channel.clone(), &store);
    let a = alert(40, "news-hd", "video.black", Severity::Critical);
    n.notify(&raise(&a));
    n.notify(&clear(&a));
    until("two messages", 5.0, || r.accepted().len() == 2).await;
    let raised = r.accepted()[0].json();
    assert_eq!(
        raised["text"],
        "avmon: RAISED news-hd video.black (critical) at 8.04 s"
    );
    let att = &raised["attachments"][0];
    assert_eq!(att["color"], "#a30200");
    assert_eq!(att["blocks"][0]["type"], "section");
    assert_eq!(att["blocks"][0]["text"]["type"], "mrkdwn");
    assert!(att["blocks"][0]["text"]["text"]
        .as_str()
        .unwrap()
        .contains(&a.id));
    let cleared = r.accepted()[1].json();
    assert!(cleared["text"]
        .as_str()
        .unwrap()
        .starts_with("avmon: CLEARED"));
    assert_eq!(cleared["attachments"][0]["color"], "#2eb67d");
    assert!(!n.name().contains("SECRETPATH"), "{}", n.name());
    assert!(!format!("{channel:?}").contains("SECRETPATH"));

    // Grouped: one message, a summary line, 20 attachments and a count of the rest.
    let r2 = Receiver::answering(&[]);
    let url2 = serve(r2.clone()).await;
    let grouped = DeliveryConfig {
        id: Some("g".into()),
        group_window_s: 0.3,
        ..fast()
    };
    let channel = ChannelConfig::Slack(SlackConfig {
        url: Some(Secret::new(url2)),
        url_env: None,
    });
    let g = spawn(grouped, channel, &store);
    for i in 0..30 {
        g.notify(&raise(&alert(
            50 + i,
            &format!("s{i}"),
            "source.down",
            Severity::Major,
        )));
    }
    until("the grouped message", 5.0, || r2.accepted().len() == 1).await;
    let m = r2.accepted()[0].json();
    assert_eq!(
        m["text"],
        "avmon: 30 alert events on 30 stream(s) (30 raised, 0 cleared)"
    );
    assert_eq!(m["attachments"].as_array().unwrap().len(), 21);
    assert!(m["attachments"][20]["fallback"]
        .as_str()
        .unwrap()
        .contains("10 more"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagerduty_triggers_and_resolves_one_incident_per_group() {
    let r = Receiver::answering(&[]).accepting_with(202);
    let url = serve(r.clone()).await;
    let store = store();
    let pd = |id: &str, window: f64| {
        (
            DeliveryConfig {
                id: Some(id.into()),
                group_window_s: window,
                ..fast()
            },
            ChannelConfig::PagerDuty(PagerDutyConfig {
                routing_key: Some(Secret::new("R0UTING")),
                url: url.clone(),
                ..Default::default()
            }),
        )
    };
    // Alone: dedup key = alert id; trigger then resolve.
    let (d, c) = pd("pd", 0.0);
    let n = spawn(d, c, &store);
    let a = alert(70, "news-hd", "video.freeze", Severity::Major);
    n.notify(&raise(&a));
    n.notify(&clear(&a));
    until("trigger and resolve", 5.0, || r.accepted().len() == 2).await;
    let t = r.accepted()[0].json();
    assert_eq!(t["routing_key"], "R0UTING");
    assert_eq!(t["event_action"], "trigger");
    assert_eq!(t["dedup_key"], a.id);
    assert_eq!(t["payload"]["severity"], "error");
    assert_eq!(t["payload"]["source"], "avmon");
    assert_eq!(t["payload"]["component"], "news-hd");
    assert_eq!(t["payload"]["summary"], "video.freeze on news-hd (major)");
    assert_eq!(t["payload"]["custom_details"]["alert_id"], a.id);
    let res = r.accepted()[1].json();
    assert_eq!(
        res,
        json!({"routing_key": "R0UTING", "event_action": "resolve", "dedup_key": a.id})
    );
    assert!(!format!("{n:?}").contains("R0UTING"));

    // Grouped: 50 streams down at once make one incident, resolved when the last one clears.
    let (d, c) = pd("pd-grouped", 0.3);
    let g = spawn(d, c, &store);
    let alerts: Vec<Alert> = (0..50)
        .map(|i| alert(200 + i, &format!("s{i}"), "source.down", Severity::Critical))
        .collect();
    for a in &alerts {
        g.notify(&raise(a));
    }
    until("one trigger", 5.0, || r.accepted().len() == 3).await;
    let t = r.accepted()[2].json();
    assert_eq!(t["event_action"], "trigger");
    assert_eq!(t["dedup_key"], alerts[0].id);
    assert_eq!(t["payload"]["severity"], "critical");
    assert_eq!(
        t["payload"]["summary"],
        "50 alerts on 50 stream(s): source.down"
    );
    assert_eq!(t["payload"]["custom_details"]["count"], 50);
    // 49 clear: no resolve yet. Then the last one: the group's incident resolves.
    for a in &alerts[1..] {
        g.notify(&clear(a));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(g.flush(Duration::from_secs(2)));
    assert_eq!(r.accepted().len(), 3, "no resolve while one alert is open");
    g.notify(&clear(&alerts[0]));
    until("the resolve", 5.0, || r.accepted().len() == 4).await;
    let res = r.accepted()[3].json();
    assert_eq!(res["event_action"], "resolve");
    assert_eq!(res["dedup_key"], alerts[0].id);
    drop(g);

    // Open groups survive a restart: they are read back from the outbox.
    let (d, c) = pd("pd-restart", 0.3);
    let g = spawn(d.clone(), c.clone(), &store);
    let (x, y) = (
        alert(300, "a", "video.black", Severity::Minor),
        alert(301, "b", "video.black", Severity::Minor),
    );
    g.notify(&raise(&x));
    g.notify(&raise(&y));
    until("the trigger", 5.0, || r.accepted().len() == 5).await;
    assert!(g.flush(Duration::from_secs(2)));
    let again = spawn(d, c, &store);
    again.notify(&clear(&x));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(r.accepted().len(), 5, "y still holds the incident open");
    again.notify(&clear(&y));
    until("the resolve", 5.0, || r.accepted().len() == 6).await;
    assert_eq!(r.accepted()[5].json()["dedup_key"], x.id);
}

fn script(dir: &std::path::Path, name: &str, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p.to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_gets_the_alert_on_stdin_and_its_output_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("got.jsonl");
    let prog = script(
        dir.path(),
        "act.sh",
        &format!(
            "cat >> '{}'\necho \"switched for $AVMON_IDEMPOTENCY_KEY\"\necho warn >&2",
            out.display()
        ),
    );
    let store = store();
    let channel = ChannelConfig::Command(CommandConfig {
        command: vec![prog],
        ..Default::default()
    });
    let n = spawn(fast(), channel, &store);
    let a = alert(80, "news-hd", "video.black", Severity::Major);
    n.notify(&raise(&a));
    n.notify(&clear(&a));
    until("two runs", 5.0, || {
        store.outbox_counts("n").unwrap().delivered == 2
    })
    .await;
    let lines: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["alert_id"], a.id);
    assert_eq!(lines[0]["state"], "raised");
    assert_eq!(lines[1]["state"], "cleared");
    let log = store.outbox_attempts("n").unwrap();
    assert_eq!(log[0].outcome, "delivered");
    assert_eq!(log[0].detail["exit_code"], 0);
    assert_eq!(
        log[0].detail["stdout"],
        format!("switched for {}:raised\n", a.id)
    );
    assert_eq!(log[0].detail["stderr"], "warn\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_is_retried_and_a_hung_one_killed() {
    let dir = tempfile::tempdir().unwrap();
    let count = dir.path().join("count");
    // Fails twice, then succeeds.
    let flaky = script(
        dir.path(),
        "flaky.sh",
        &format!(
            "echo x >> '{c}'\nn=$(wc -l < '{c}')\n[ \"$n\" -ge 3 ] || {{ echo \"try $n\" >&2; exit 7; }}",
            c = count.display()
        ),
    );
    let store = store();
    let mk = |prog: String| {
        ChannelConfig::Command(CommandConfig {
            command: vec![prog],
            ..Default::default()
        })
    };
    let n = spawn(
        DeliveryConfig {
            max_attempts: Some(3),
            ..fast()
        },
        mk(flaky),
        &store,
    );
    n.notify(&raise(&alert(90, "s", "video.black", Severity::Major)));
    until("the third run", 5.0, || {
        store.outbox_counts("n").unwrap().delivered == 1
    })
    .await;
    let log = store.outbox_attempts("n").unwrap();
    let codes: Vec<(&str, &Value)> = log
        .iter()
        .map(|a| (a.outcome.as_str(), &a.detail["exit_code"]))
        .collect();
    assert_eq!(
        codes,
        [
            ("retry", &json!(7)),
            ("retry", &json!(7)),
            ("delivered", &json!(0))
        ]
    );
    assert_eq!(log[1].detail["stderr"], "try 2\n");

    // Hangs (with a child of its own): killed at the timeout, twice, then given up on.
    let marker = dir.path().join("survived");
    // A sleep no other process has: its processes are found by their command lines.
    let token = format!("30.{}", std::process::id());
    let hung = script(
        dir.path(),
        "hung.sh",
        &format!(
            "sleep {token} && touch '{}' &\nsleep {token}",
            marker.display()
        ),
    );
    let h = spawn(
        DeliveryConfig {
            id: Some("hung".into()),
            timeout_s: 0.5,
            max_attempts: Some(2),
            ..fast()
        },
        mk(hung),
        &store,
    );
    let started = Instant::now();
    h.notify(&raise(&alert(91, "s", "video.black", Severity::Major)));
    until("giving up", 10.0, || {
        store.outbox_counts("hung").unwrap().failed == 1
    })
    .await;
    let took = started.elapsed().as_secs_f64();
    assert!(took < 3.0, "two 0.5 s timeouts took {took} s");
    let log = store.outbox_attempts("hung").unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].outcome, "retry");
    assert_eq!(log[1].outcome, "failed");
    assert_eq!(log[1].detail["timed_out"], true);
    assert_eq!(log[1].detail["signal"], 9);
    // The whole process group was killed: neither shell (`sh …/hung.sh`) nor either `sleep`
    // is left. Every process's command line is in /proc.
    let ours =
        |cmdline: &str| cmdline.contains(dir.path().to_str().unwrap()) || cmdline.contains(&token);
    let survivors = || -> Vec<String> {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| {
                let pid = e.ok()?.file_name().into_string().ok()?;
                pid.parse::<u32>().ok()?;
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                ours(&cmdline).then(|| format!("{pid}: {cmdline}"))
            })
            .collect()
    };
    let started = Instant::now();
    while !survivors().is_empty() && started.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        survivors(),
        Vec::<String>::new(),
        "a process of the command survived"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_spaces_messages_and_drops_none() {
    let r = Receiver::answering(&[]);
    let url = serve(r.clone()).await;
    let store = store();
    let delivery = DeliveryConfig {
        rate_limit_per_min: 300, // one every 0.2 s
        ..fast()
    };
    let n = spawn(delivery, webhook(&url), &store);
    for i in 0..5 {
        n.notify(&raise(&alert(400 + i, "s", "video.black", Severity::Major)));
    }
    until("all five", 5.0, || r.accepted().len() == 5).await;
    let got = r.accepted();
    let gaps: Vec<f64> = got
        .windows(2)
        .map(|w| w[1].at.duration_since(w[0].at).as_secs_f64())
        .collect();
    assert!(
        gaps.iter().all(|g| *g >= 0.19),
        "spaced 0.2 s apart: {gaps:?}"
    );
    let span = got[4].at.duration_since(got[0].at).as_secs_f64();
    assert!(span < 1.5, "not slower than the rate: {span} s");
}
