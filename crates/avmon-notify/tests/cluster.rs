//! Cluster delivery against a real PostgreSQL (avmon-testpg, one database per test) and a real
//! webhook receiver on loopback: nodes share one outbox, and every notification reaches the
//! receiver once, whichever node queued it and whichever nodes live.
//!
//! The tests run on plain threads with a runtime of their own: the PostgreSQL store is
//! synchronous, so `notify` and the fenced writes are called as the service's hub thread does,
//! off the runtime.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use avmon_core::{Alert, AlertEvent, Severity, StreamId, Transition};
use avmon_notify::{
    idempotency_key, payload, ChannelConfig, Claim, DeliveryConfig, Notifier, NotifierConfig,
    OutboxNotifier, PagerDutyConfig, Secret,
};
use avmon_store::cluster::{Coordinator, NodeInfo};
use avmon_store::{OutboxEntry, OutboxStatus, PostgresStore, Store, StreamRecord};
use avmon_testpg::TestPg;
use common::{alert, clear, fast, pairs, raise, serve, webhook, Receiver};
use serde_json::{json, Value};

/// The notifier's id on every node.
const ID: &str = "hook";
/// Claim TTL of the live nodes: longer than `fast()`'s 2 s timeout, as required.
const TTL: Duration = Duration::from_secs(3);
/// How often an idle node looks for rows it was not woken for.
const POLL: Duration = Duration::from_millis(100);
const LEASE: Duration = Duration::from_secs(60);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A receiver on loopback, served on `rt`; returns it and its URL.
fn receiver(rt: &tokio::runtime::Runtime) -> (Receiver, String) {
    let r = Receiver::answering(&[]);
    let url = rt.block_on(serve(r.clone()));
    (r, url)
}

/// One node's notifier (`ID` unless `delivery` names another), on a store (a connection pool)
/// of its own, as a separate process would have.
fn node(
    rt: &tokio::runtime::Runtime,
    db: &str,
    name: &str,
    channel: ChannelConfig,
    delivery: DeliveryConfig,
    ttl: Duration,
) -> (OutboxNotifier, PostgresStore) {
    let store = PostgresStore::open(db).unwrap();
    let mut cfg = NotifierConfig { delivery, channel };
    cfg.delivery.id.get_or_insert_with(|| ID.into());
    let claim = Claim::Cluster {
        coordinator: store.coordinator(),
        node: name.into(),
        ttl,
        poll: POLL,
    };
    let n = OutboxNotifier::spawn_with(cfg, Arc::new(store.clone()), claim, rt.handle()).unwrap();
    (n, store)
}

/// Poll `f` until true; panics after `secs`.
fn until(what: &str, secs: f64, f: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// The idempotency keys the receiver accepted, in arrival order.
fn keys(r: &Receiver) -> Vec<String> {
    r.accepted()
        .iter()
        .map(|h| h.header("idempotency-key").to_string())
        .collect()
}

/// How many times each key arrived.
fn tally(keys: &[String]) -> BTreeMap<&str, usize> {
    let mut t = BTreeMap::new();
    for k in keys {
        *t.entry(k.as_str()).or_default() += 1;
    }
    t
}

/// The stream `id`, held by `node` under the epoch returned.
fn hold_stream(c: &Coordinator, node: &NodeInfo, id: &str) -> i64 {
    c.store()
        .upsert_stream(&StreamRecord {
            id: StreamId(id.into()),
            url: format!("http://origin/{id}.m3u8"),
            config: json!({}),
            created_at: chrono::Utc::now(),
        })
        .unwrap();
    c.register(node, LEASE).unwrap();
    let got = c
        .claim(node, LEASE, 10, &mut |s: &StreamRecord| s.id.0 == id)
        .unwrap();
    assert_eq!(got.len(), 1, "{id} claimed");
    got[0].epoch
}

#[test]
fn two_nodes_deliver_every_notification_exactly_once() {
    let rt = runtime();
    let (r, url) = receiver(&rt);
    let db = TestPg::shared().fresh_database("notify_cluster_once");
    let (a, store_a) = node(&rt, &db, "a", webhook(&url), fast(), TTL);
    let (b, store_b) = node(&rt, &db, "b", webhook(&url), fast(), TTL);
    // Each node watches one stream, so it can write that stream's alerts fenced.
    let (ca, cb) = (store_a.coordinator(), store_b.coordinator());
    let node_a = NodeInfo::new("a", "a.local:8080", 100.0).unwrap();
    let node_b = NodeInfo::new("b", "b.local:8080", 100.0).unwrap();
    let epoch_a = hold_stream(&ca, &node_a, "cam-a");
    let epoch_b = hold_stream(&cb, &node_b, "cam-b");

    // Both nodes queue at once: every other event through `notify`, the rest as the service's
    // fenced write does (the alert and its outbox rows in one transaction, then `queued`).
    let queue = |n: &OutboxNotifier, c: &Coordinator, epoch: i64, stream: &str, base: u32| {
        let mut sent = Vec::new();
        for i in 0..15 {
            let a = alert(base + i, stream, "video.black", Severity::Major);
            let mut events = vec![raise(&a)];
            if i % 3 == 0 {
                events.push(clear(&a));
            }
            for ev in events {
                sent.push(idempotency_key(&ev));
                if i % 2 == 0 {
                    n.notify(&ev);
                    // A replay is not queued twice.
                    n.notify(&ev);
                } else {
                    let entry = n.outbox_entry(&ev).expect("the notifier takes every event");
                    let ids = c
                        .record_alert_fenced(&ev, epoch, std::slice::from_ref(&entry))
                        .unwrap();
                    n.queued(ids.iter().flatten().count() as u64);
                    // A replay: the store refuses the row, nothing more is pending.
                    let again = c.record_alert_fenced(&ev, epoch, &[entry]).unwrap();
                    assert_eq!(again, [None]);
                    n.queued(again.iter().flatten().count() as u64);
                }
            }
        }
        sent
    };
    let (sent_a, sent_b) = thread::scope(|s| {
        let ta = s.spawn(|| queue(&a, &ca, epoch_a, "cam-a", 0));
        let tb = s.spawn(|| queue(&b, &cb, epoch_b, "cam-b", 1000));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    let mut sent: Vec<String> = sent_a.into_iter().chain(sent_b).collect();
    sent.sort();
    assert_eq!(sent.len(), 2 * (15 + 5));

    until("every notification", 15.0, || {
        r.accepted().len() >= sent.len()
    });
    until("an empty outbox", 5.0, || {
        store_a.outbox_counts(ID).unwrap().pending == 0
    });
    // Time for a second delivery of anything to show up, were there one.
    thread::sleep(TTL / 2);
    let got = keys(&r);
    let counts = tally(&got);
    assert!(
        counts.values().all(|&c| c == 1),
        "each key delivered once: {counts:?}"
    );
    let mut unique: Vec<String> = counts.keys().map(|k| k.to_string()).collect();
    unique.sort();
    assert_eq!(unique, sent, "none lost, none invented");
    assert_eq!(r.hits().len(), sent.len(), "one request per notification");
    // In order: the receiver saw the rows in the outbox's order, whichever node sent each.
    let rows = store_a.outbox_rows(ID).unwrap();
    let by_id: Vec<&str> = rows.iter().map(|row| row.entry.key.as_str()).collect();
    assert_eq!(got, by_id);
    assert!(rows.iter().all(|row| row.status == OutboxStatus::Delivered));
    // Each row was sent by one node: the nodes' counts add up to the rows.
    let delivered = a.stats().delivered + b.stats().delivered;
    assert_eq!(
        delivered,
        sent.len() as u64,
        "a {:?} b {:?}",
        a.stats(),
        b.stats()
    );
    assert!(a.flush(Duration::from_secs(2)) && b.flush(Duration::from_secs(2)));
    assert_eq!((a.pending(), b.pending()), (0, 0));
}

/// An outbox row for `ev`, as a node that then died would have queued it.
fn entry(ev: &AlertEvent) -> OutboxEntry {
    let key = idempotency_key(ev);
    let mut body = payload(ev);
    body["idempotency_key"] = Value::String(key.clone());
    OutboxEntry {
        notifier: ID.into(),
        alert_id: ev.alert.id.clone(),
        state: avmon_notify::state_of(ev).into(),
        key,
        payload: body,
        created_at: chrono::Utc::now(),
    }
}

#[test]
fn a_dead_nodes_claims_expire_and_a_live_node_delivers_them_once() {
    let rt = runtime();
    let (r, url) = receiver(&rt);
    let db = TestPg::shared().fresh_database("notify_cluster_dead");
    let store = PostgresStore::open(&db).unwrap();
    let alerts: Vec<Alert> = (0..5)
        .map(|i| alert(i, &format!("s{i}"), "source.down", Severity::Critical))
        .collect();
    for a in &alerts {
        assert!(store.outbox_add(&entry(&raise(a))).unwrap().is_some());
    }
    // Node "dead" claims every row, then never delivers them and never renews.
    let dead_ttl = Duration::from_millis(1_000);
    let claimed_at = Instant::now();
    let claimed = store
        .coordinator()
        .outbox_claim(ID, "dead", 10, dead_ttl)
        .unwrap();
    assert_eq!(claimed.len(), 5);

    let (live, _) = node(&rt, &db, "live", webhook(&url), fast(), TTL);
    // While the claims live, the live node takes nothing; it counts the rows as pending in
    // the cluster, and a flush does not wait for rows another node holds.
    thread::sleep(Duration::from_millis(300));
    assert!(
        r.hits().is_empty(),
        "nothing sent under another node's claim"
    );
    assert_eq!(live.pending(), 5);
    let flushed = Instant::now();
    assert!(live.flush(Duration::from_secs(5)));
    assert!(
        flushed.elapsed() < Duration::from_secs(1),
        "{:?}",
        flushed.elapsed()
    );

    // Once they expire, the live node delivers them, once each, in order.
    until("the dead node's rows", 10.0, || r.accepted().len() >= 5);
    let first = r.accepted()[0].at;
    assert!(
        first.duration_since(claimed_at) >= dead_ttl,
        "not before the claims expired"
    );
    thread::sleep(TTL / 2);
    let want: Vec<String> = alerts.iter().map(|a| idempotency_key(&raise(a))).collect();
    assert_eq!(keys(&r), want);
    assert_eq!(r.hits().len(), 5);
    assert_eq!(live.stats().delivered, 5);
    assert!(live.flush(Duration::from_secs(2)));
    assert_eq!(live.pending(), 0);
    let c = store.outbox_counts(ID).unwrap();
    assert_eq!((c.pending, c.delivered), (0, 5));
}

#[test]
fn outbox_entry_is_what_notify_queues() {
    let rt = runtime();
    let (_r, url) = receiver(&rt);
    let db = TestPg::shared().fresh_database("notify_cluster_entry");
    let filtered = DeliveryConfig {
        streams: vec!["news-*".into()],
        kinds: vec!["video.*".into()],
        min_severity: Some(Severity::Major),
        ..fast()
    };
    let (n, store) = node(&rt, &db, "a", webhook(&url), filtered, TTL);
    let taken = alert(1, "news-hd", "video.black", Severity::Major);
    let never_raised = alert(5, "news-hd", "video.freeze", Severity::Critical);
    let mut updated = raise(&taken);
    updated.transition = Transition::Updated;
    updated.alert.severity = Severity::Critical;
    let cases: Vec<(&str, AlertEvent, bool)> = vec![
        ("a raise the filter takes", raise(&taken), true),
        (
            "another stream",
            raise(&alert(2, "sport", "video.black", Severity::Major)),
            false,
        ),
        (
            "another kind",
            raise(&alert(3, "news-hd", "audio.silence", Severity::Major)),
            false,
        ),
        (
            "too mild",
            raise(&alert(4, "news-hd", "video.black", Severity::Minor)),
            false,
        ),
        ("an update, send_updates off", updated, false),
        ("the clear of a raise sent", clear(&taken), true),
        (
            "the clear of a raise filtered out",
            clear(&alert(2, "sport", "video.black", Severity::Major)),
            false,
        ),
        (
            "the clear of a raise never seen",
            clear(&never_raised),
            false,
        ),
    ];
    for (what, ev, wanted) in &cases {
        let entry = n.outbox_entry(ev);
        assert_eq!(entry.is_some(), *wanted, "{what}");
        let before = store.outbox_rows(ID).unwrap().len();
        n.notify(ev);
        let rows = store.outbox_rows(ID).unwrap();
        let added = rows.get(before).map(|row| &row.entry);
        assert_eq!(added.is_some(), *wanted, "{what}: notify agrees");
        if let (Some(e), Some(row)) = (&entry, added) {
            // All but the time it was made.
            let fields = |e: &OutboxEntry| {
                (
                    e.notifier.clone(),
                    e.alert_id.clone(),
                    e.state.clone(),
                    e.key.clone(),
                    e.payload.clone(),
                )
            };
            assert_eq!(fields(e), fields(row), "{what}");
            assert_eq!(e.key, idempotency_key(ev), "{what}");
            assert_eq!(e.payload["idempotency_key"], e.key, "{what}");
        }
    }
    // A clear goes where its raise went, however the raise was written.
    let other = alert(6, "news-sd", "video.black", Severity::Critical);
    assert!(n.outbox_entry(&clear(&other)).is_none());
    let e = n.outbox_entry(&raise(&other)).unwrap();
    store.outbox_add(&e).unwrap();
    let cleared = n.outbox_entry(&clear(&other)).unwrap();
    assert_eq!(
        (cleared.state.as_str(), cleared.notifier.as_str()),
        ("cleared", ID)
    );

    // With send_updates, an update is queued under a key of its own.
    let (u, _) = node(
        &rt,
        &db,
        "a",
        webhook(&url),
        DeliveryConfig {
            id: Some("updates".into()),
            send_updates: true,
            ..fast()
        },
        TTL,
    );
    let mut up = raise(&taken);
    up.transition = Transition::Updated;
    let e = u.outbox_entry(&up).unwrap();
    assert_eq!(e.state, "updated");
    assert_eq!(e.key, idempotency_key(&up));
    assert_ne!(e.key, idempotency_key(&raise(&taken)));
}

#[test]
fn one_group_window_gathers_both_nodes_events_into_one_message() {
    let rt = runtime();
    let (r, url) = receiver(&rt);
    let db = TestPg::shared().fresh_database("notify_cluster_group");
    // Events queued through both nodes within one window are one message, sent by one node,
    // even with a window longer than the claim TTL (a node takes its rows again before it
    // sends them).
    let (ttl, window) = (Duration::from_millis(1_000), 2.0);
    let delivery = DeliveryConfig {
        timeout_s: 0.5,
        group_window_s: window,
        ..fast()
    };
    let (a, _) = node(&rt, &db, "a", webhook(&url), delivery.clone(), ttl);
    let (b, store) = node(&rt, &db, "b", webhook(&url), delivery, ttl);
    let alerts: Vec<Alert> = (0..10)
        .map(|i| alert(i, &format!("s{i}"), "source.down", Severity::Critical))
        .collect();
    for (i, al) in alerts.iter().enumerate() {
        let n = if i % 2 == 0 { &a } else { &b };
        n.notify(&raise(al));
    }
    until("the group", 10.0, || !r.accepted().is_empty());
    // Past another window and TTL: a second copy of the batch would have come by now.
    thread::sleep(ttl + Duration::from_secs_f64(window / 2.0));
    let got = r.accepted();
    assert_eq!(got.len(), 1, "one message, sent by one node");
    assert_eq!(r.hits().len(), 1);
    let body = got[0].json();
    assert_eq!(body["count"], 10);
    let sent: Vec<&str> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["alert_id"].as_str().unwrap())
        .collect();
    let want: Vec<&str> = alerts.iter().map(|al| al.id.as_str()).collect();
    assert_eq!(sent, want, "every event of both nodes, in the order queued");
    assert_eq!(store.outbox_counts(ID).unwrap().delivered, 10);
    assert_eq!(a.stats().delivered + b.stats().delivered, 10);
}

#[test]
fn a_send_longer_than_the_claim_ttl_keeps_its_claim() {
    let rt = runtime();
    let delay = Duration::from_millis(700);
    let r = Receiver::answering(&[]).accepting_with(202).delaying(delay);
    let url = rt.block_on(serve(r.clone()));
    let db = TestPg::shared().fresh_database("notify_cluster_slow");
    let ttl = Duration::from_millis(1_000);
    let delivery = DeliveryConfig {
        timeout_s: 0.9,
        group_window_s: 0.3,
        ..fast()
    };
    let channel = ChannelConfig::PagerDuty(PagerDutyConfig {
        routing_key: Some(Secret::new("R0UTING")),
        url,
        ..Default::default()
    });
    let (a, _) = node(&rt, &db, "a", channel.clone(), delivery.clone(), ttl);
    let (b, store) = node(&rt, &db, "b", channel, delivery, ttl);
    let (y, x) = (
        alert(1, "s1", "video.black", Severity::Major),
        alert(2, "s2", "video.black", Severity::Major),
    );
    a.notify(&raise(&y));
    until("y's incident", 5.0, || r.accepted().len() == 1);
    // One batch that is two requests (x's trigger, y's resolve): 1.4 s in all, longer than
    // the TTL. The sender renews its claim meanwhile, so the other node does not send it too.
    b.notify(&raise(&x));
    a.notify(&clear(&y));
    until("the batch", 10.0, || r.accepted().len() >= 3);
    thread::sleep(ttl + delay);
    let actions = pairs(&r.hits(), "event_action", "dedup_key");
    let pair = |action: &str, key: &str| (action.to_string(), key.to_string());
    assert_eq!(
        actions,
        [
            pair("trigger", &y.id),
            pair("trigger", &x.id),
            pair("resolve", &y.id)
        ],
        "each request once"
    );
    assert_eq!(store.outbox_counts(ID).unwrap().delivered, 3);
    assert_eq!(a.stats().delivered + b.stats().delivered, 3);
}

#[test]
fn unusable_claim_settings_are_refused() {
    let rt = runtime();
    let db = TestPg::shared().fresh_database("notify_cluster_settings");
    let store = PostgresStore::open(&db).unwrap();
    let spawn = |node: &str, ttl: Duration, poll: Duration| {
        let cfg = NotifierConfig {
            delivery: DeliveryConfig {
                id: Some(ID.into()),
                ..fast()
            },
            channel: webhook("http://127.0.0.1:9/hook"),
        };
        let claim = Claim::Cluster {
            coordinator: store.coordinator(),
            node: node.into(),
            ttl,
            poll,
        };
        OutboxNotifier::spawn_with(cfg, Arc::new(store.clone()), claim, rt.handle())
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    // fast()'s timeout_s is 2 s: a claim must outlive one attempt.
    let err = spawn("a", Duration::from_secs(2), POLL).unwrap_err();
    assert!(
        err.contains("notifier hook: the claim TTL (2.000 s) must be longer than timeout_s"),
        "{err}"
    );
    assert!(spawn("a", Duration::from_secs(90_000), POLL).is_err());
    let err = spawn("", TTL, POLL).unwrap_err();
    assert!(err.contains("node name is empty"), "{err}");
    let err = spawn("a", TTL, Duration::ZERO).unwrap_err();
    assert!(err.contains("poll"), "{err}");
    spawn("a", TTL, POLL).unwrap();
    // The defaults: a TTL longer than the default timeout_s (10 s).
    let Claim::Cluster { ttl, poll, .. } = Claim::cluster(store.coordinator(), "a") else {
        panic!("a cluster claim");
    };
    assert!(ttl > Duration::from_secs_f64(DeliveryConfig::default().timeout_s));
    assert_eq!((ttl, poll), (avmon_notify::CLAIM_TTL, avmon_notify::POLL));
}
