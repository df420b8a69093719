//! The cluster's coordination against a real PostgreSQL (one database per test): nodes,
//! leases and their epochs, gaps, fenced writes, outbox claims, LISTEN/NOTIFY, a restart.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use avmon_core::{Alert, AlertEvent, AlertState, Severity, StreamId, Transition};
use avmon_store::cluster::{
    Claimed, Coordinator, GapReason, Heard, Held, NodeInfo, HANDOVER_GRACE, LEASES_CHANNEL,
    MAX_PAYLOAD,
};
use avmon_store::{
    AttemptOutcome, MetricsSample, OutboxEntry, OutboxStatus, PostgresStore, Store, StoreError,
    StreamRecord,
};
use avmon_testpg::TestPg;
use serde_json::json;

const SHORT: Duration = Duration::from_secs(1);
const LONG: Duration = Duration::from_secs(60);

fn coordinator(name: &str) -> Coordinator {
    Coordinator::open(&TestPg::shared().fresh_database(name)).unwrap()
}

fn sid(s: &str) -> StreamId {
    StreamId(s.to_string())
}

fn node(name: &str) -> NodeInfo {
    NodeInfo::new(name, format!("{name}.local:8080"), 100.0).unwrap()
}

fn add_stream(c: &Coordinator, id: &str, config: serde_json::Value) {
    c.store()
        .upsert_stream(&StreamRecord {
            id: sid(id),
            url: format!("http://origin/{id}.m3u8"),
            config,
            created_at: chrono::Utc::now(),
        })
        .unwrap();
}

/// A fresh database with `streams` (default config) and two registered nodes, `a` and `b`.
fn two_nodes(db: &str, streams: &[&str]) -> (Coordinator, NodeInfo, NodeInfo) {
    let c = coordinator(db);
    for s in streams {
        add_stream(&c, s, json!({}));
    }
    let (a, b) = (node("a"), node("b"));
    c.register(&a, LONG).unwrap();
    c.register(&b, LONG).unwrap();
    (c, a, b)
}

fn all(_: &StreamRecord) -> bool {
    true
}

fn ids(claimed: &[Claimed]) -> Vec<String> {
    claimed.iter().map(|c| c.stream.id.0.clone()).collect()
}

fn held_ids(held: &[Held]) -> Vec<String> {
    held.iter().map(|h| h.stream.0.clone()).collect()
}

#[test]
fn a_duplicate_name_is_refused_while_alive_and_taken_over_after_the_ttl() {
    let c = coordinator("cluster_duplicate");
    let a = node("n1");
    c.register(&a, SHORT).unwrap();
    c.register(&a, SHORT).unwrap(); // the same instance again: a refresh
    add_stream(&c, "s1", json!({}));
    assert_eq!(ids(&c.claim(&a, LONG, 10, &mut all).unwrap()), ["s1"]);

    // Another process with the same name, while the first is alive.
    let mut a2 = node("n1");
    a2.api_addr = "other.local:8080".into();
    let err = c.register(&a2, SHORT).unwrap_err();
    assert!(
        matches!(&err, StoreError::DuplicateNode { name, api_addr, seen_ago_s }
            if name == "n1" && api_addr == "n1.local:8080" && *seen_ago_s < 1.0),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with("another node named \"n1\" is alive at n1.local:8080 (last seen 0."),
        "{msg}"
    );
    assert!(
        msg.ends_with("give this node another [cluster] name"),
        "{msg}"
    );
    // Heartbeats keep it alive past the TTL.
    for _ in 0..3 {
        thread::sleep(Duration::from_millis(400));
        c.heartbeat(&a, 3.0).unwrap();
    }
    assert!(c.register(&a2, SHORT).is_err());

    // Silent past the TTL: the name is taken over, and the old instance's lease (60 s left)
    // is claimable at once.
    thread::sleep(Duration::from_millis(1_200));
    c.register(&a2, SHORT).unwrap();
    assert_eq!(c.holders().unwrap()[&sid("s1")], None);
    let b = node("n2");
    c.register(&b, SHORT).unwrap();
    let got = c.claim(&b, LONG, 10, &mut all).unwrap();
    assert_eq!(ids(&got), ["s1"]);
    assert_eq!(got[0].epoch, 2);
    let gap = got[0].gap.as_ref().unwrap();
    assert_eq!(
        (gap.reason, gap.prev_node.as_deref()),
        (GapReason::NodeLost, Some("n1"))
    );

    // The replaced process learns it at its next call, and can do nothing as the node.
    for err in [
        c.heartbeat(&a, 1.0).unwrap_err(),
        c.renew(&a, LONG).unwrap_err(),
        c.claim(&a, LONG, 1, &mut all).unwrap_err(),
    ] {
        assert!(
            matches!(&err, StoreError::NotRegistered { name, reason }
                if name == "n1" && reason.contains("another instance")
                    && reason.contains("other.local:8080")),
            "{err}"
        );
    }

    // A clean shutdown frees the name at once.
    c.deregister(&a2).unwrap();
    let a3 = node("n1");
    c.register(&a3, LONG).unwrap();
    assert!(matches!(
        c.heartbeat(&a2, 0.0),
        Err(StoreError::NotRegistered { .. })
    ));
}

#[test]
fn nodes_report_liveness_load_and_streams_by_the_database_clock() {
    let c = coordinator("cluster_nodes");
    let a = node("a");
    let b = node("b");
    c.register(&a, SHORT).unwrap();
    c.register(&b, SHORT).unwrap();
    for i in 0..5 {
        add_stream(&c, &format!("s{i}"), json!({}));
    }
    assert_eq!(c.claim(&a, LONG, 3, &mut all).unwrap().len(), 3);
    assert_eq!(c.claim(&b, LONG, 3, &mut all).unwrap().len(), 2);
    c.heartbeat(&a, 42.5).unwrap();

    let nodes = c.nodes(SHORT).unwrap();
    assert_eq!(nodes.len(), 2);
    let (na, nb) = (&nodes[0], &nodes[1]);
    assert_eq!((na.name.as_str(), nb.name.as_str()), ("a", "b"));
    assert!(na.alive && nb.alive && !na.left);
    assert_eq!((na.streams, nb.streams), (3, 2));
    assert_eq!((na.load, na.capacity), (42.5, 100.0));
    assert_eq!(na.api_addr, "a.local:8080");
    assert_eq!(na.instance, a.instance);

    // b stops heartbeating; a keeps going.
    thread::sleep(Duration::from_millis(700));
    c.heartbeat(&a, 1.0).unwrap();
    thread::sleep(Duration::from_millis(700));
    let nodes = c.nodes(SHORT).unwrap();
    assert!(nodes[0].alive);
    assert!(
        !nodes[1].alive && nodes[1].seen_ago_s >= 1.0,
        "{:?}",
        nodes[1]
    );

    // Deregistering hands every stream over and marks the node left.
    let released = c.deregister(&a).unwrap();
    assert_eq!(released.len(), 3);
    let nodes = c.nodes(SHORT).unwrap();
    assert!(nodes[0].left && !nodes[0].alive && nodes[0].streams == 0);
    let holders = c.holders().unwrap();
    assert_eq!(holders.values().filter(|h| h.is_none()).count(), 3);
    assert_eq!(
        holders
            .values()
            .filter(|h| h.as_deref() == Some("b"))
            .count(),
        2
    );
    // Left nodes can be forgotten.
    assert_eq!(c.forget_nodes(Duration::from_millis(1)).unwrap(), 2);
    assert!(c.nodes(SHORT).unwrap().is_empty());
}

/// A small deterministic generator: the test needs variety, not quality.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[test]
fn concurrent_claimers_never_hold_the_same_stream_and_together_hold_all() {
    let c = coordinator("cluster_concurrent");
    let streams = 300;
    for i in 0..streams {
        add_stream(&c, &format!("s{i:03}"), json!({}));
    }
    let nodes: Vec<NodeInfo> = (0..4).map(|i| node(&format!("n{i}"))).collect();
    for n in &nodes {
        c.register(n, LONG).unwrap();
    }
    // Every claim ever answered: (stream, epoch) -> node. An epoch handed to two nodes, or
    // handed twice, is a double claim.
    let claims: Mutex<HashMap<(String, i64), String>> = Mutex::new(HashMap::new());
    let barrier = Barrier::new(nodes.len());
    let finals: Vec<Vec<Held>> = thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let c = c.clone();
                let (claims, barrier) = (&claims, &barrier);
                s.spawn(move || {
                    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1));
                    let note = |got: &[Claimed]| {
                        let mut map = claims.lock().unwrap();
                        for g in got {
                            let prev = map.insert((g.stream.id.0.clone(), g.epoch), n.name.clone());
                            assert_eq!(
                                prev, None,
                                "{} epoch {} claimed twice",
                                g.stream.id, g.epoch
                            );
                        }
                    };
                    barrier.wait();
                    for _ in 0..40 {
                        let got = c.claim(n, LONG, 1 + rng.below(20), &mut all).unwrap();
                        note(&got);
                        // Churn: hand a few back, so that the others claim while we do.
                        let held = c.renew(n, LONG).unwrap();
                        let give: Vec<StreamId> = held
                            .iter()
                            .filter(|_| rng.below(4) == 0)
                            .map(|h| h.stream.clone())
                            .collect();
                        c.release(n, &give).unwrap();
                    }
                    barrier.wait();
                    // Everyone takes what is left, then says what it holds.
                    loop {
                        let got = c.claim(n, LONG, 50, &mut all).unwrap();
                        if got.is_empty() {
                            break;
                        }
                        note(&got);
                    }
                    barrier.wait();
                    c.renew(n, LONG).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    for (n, held) in nodes.iter().zip(&finals) {
        for h in held {
            let prev = owner.insert(h.stream.0.clone(), n.name.clone());
            assert_eq!(prev, None, "{} held by two nodes", h.stream);
        }
    }
    assert_eq!(owner.len(), streams, "together they hold every stream");
    // Each stream's epoch counts exactly the claims answered for it.
    let claims = claims.into_inner().unwrap();
    let mut counted: HashMap<String, i64> = HashMap::new();
    for (stream, _) in claims.keys() {
        *counted.entry(stream.clone()).or_default() += 1;
    }
    for (n, held) in nodes.iter().zip(&finals) {
        for h in held {
            assert_eq!(counted[&h.stream.0], h.epoch, "{}", h.stream);
            assert_eq!(claims[&(h.stream.0.clone(), h.epoch)], n.name);
        }
    }
    assert!(claims.len() > streams, "there was churn: {}", claims.len());
    assert!(c.gaps(None, None).unwrap().is_empty(), "hand-overs only");
}

#[test]
fn pinned_streams_go_only_to_their_node() {
    let c = coordinator("cluster_pins");
    add_stream(&c, "free1", json!({}));
    add_stream(&c, "free2", json!({"tier": "transport"}));
    add_stream(&c, "udp-b", json!({"node": "b"}));
    let (a, b) = (node("a"), node("b"));
    c.register(&a, LONG).unwrap();
    c.register(&b, LONG).unwrap();

    let got = c.claim(&a, LONG, 10, &mut all).unwrap();
    assert_eq!(ids(&got), ["free1", "free2"]);
    assert_eq!(got[1].stream.config, json!({"tier": "transport"}));
    // While b is away, the pinned stream is unwatched and says to whom it belongs.
    let un = c.unwatched().unwrap();
    assert_eq!(un.len(), 1);
    assert_eq!(un[0].stream, sid("udp-b"));
    assert_eq!(un[0].pinned_node.as_deref(), Some("b"));
    assert_eq!(un[0].since, None, "never watched yet");

    // b takes its pinned stream first.
    add_stream(&c, "free3", json!({}));
    assert_eq!(ids(&c.claim(&b, LONG, 1, &mut all).unwrap()), ["udp-b"]);
    // Nothing pinned is shed; the newest claim goes first.
    assert_eq!(c.claim(&b, LONG, 5, &mut all).unwrap().len(), 1);
    let shed: Vec<StreamId> = c.shed(&b, 5).unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(shed, [sid("free3")]);

    // The pin moves to a: b hands it over at its next renewal, and a takes it.
    add_stream(&c, "udp-b", json!({"node": "a"}));
    assert_eq!(held_ids(&c.renew(&b, LONG).unwrap()), ["free3"]);
    let got = c.claim(&a, LONG, 10, &mut all).unwrap();
    assert_eq!(ids(&got), ["udp-b"]);
    assert_eq!((got[0].epoch, got[0].gap.is_none()), (2, true));

    // A removed stream is handed back without a gap, and not claimed again.
    assert!(c.store().remove_stream(&sid("free1")).unwrap());
    assert_eq!(held_ids(&c.renew(&a, LONG).unwrap()), ["free2", "udp-b"]);
    assert!(c.claim(&b, LONG, 10, &mut all).unwrap().is_empty());
    assert!(!c.holders().unwrap().contains_key(&sid("free1")));
}

#[test]
fn accept_decides_by_cost_and_refused_streams_do_not_hide_cheaper_ones() {
    let c = coordinator("cluster_accept");
    for i in 0..5 {
        add_stream(&c, &format!("a-heavy{i}"), json!({"tier": "full"}));
    }
    for i in 0..3 {
        add_stream(&c, &format!("b-light{i}"), json!({"tier": "transport"}));
    }
    let n = node("n");
    c.register(&n, LONG).unwrap();
    let mut asked = 0;
    let got = c
        .claim(&n, LONG, 2, &mut |s: &StreamRecord| {
            asked += 1;
            s.config["tier"] == "transport"
        })
        .unwrap();
    assert_eq!(ids(&got), ["b-light0", "b-light1"]);
    assert_eq!(asked, 7, "asked until two were taken");
    // Refused candidates stay free for others.
    assert_eq!(c.unwatched().unwrap().len(), 6);
}

#[test]
fn an_expired_lease_is_taken_over_with_the_next_epoch_and_a_gap() {
    let (c, a, b) = two_nodes("cluster_expiry", &["s"]);
    let got = c.claim(&a, SHORT, 10, &mut all).unwrap();
    assert_eq!((got[0].epoch, got[0].gap.is_none()), (1, true));
    // Not before it expires.
    assert!(c.claim(&b, SHORT, 10, &mut all).unwrap().is_empty());
    assert_eq!(c.holders().unwrap()[&sid("s")].as_deref(), Some("a"));

    // a stalls past its TTL.
    thread::sleep(Duration::from_millis(1_300));
    assert_eq!(c.holders().unwrap()[&sid("s")], None);
    let un = c.unwatched().unwrap();
    assert_eq!(un[0].prev_node.as_deref(), Some("a"));
    assert!(un[0].since.is_some());

    let got = c.claim(&b, LONG, 10, &mut all).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].epoch, 2);
    let gap = got[0].gap.clone().unwrap();
    assert_eq!(gap.reason, GapReason::NodeLost);
    assert_eq!(gap.prev_node.as_deref(), Some("a"));
    assert_eq!(gap.next_node, "b");
    assert!(
        gap.duration() >= Duration::from_millis(1_250) && gap.duration() < Duration::from_secs(5),
        "{:?}",
        gap.duration()
    );
    assert_eq!(
        c.gaps(Some(&sid("s")), None).unwrap(),
        std::slice::from_ref(&gap)
    );
    assert_eq!(c.gaps(None, Some(gap.to)).unwrap().len(), 1);
    assert!(c
        .gaps(None, Some(gap.to + chrono::Duration::seconds(1)))
        .unwrap()
        .is_empty());
    assert!(c.gaps(Some(&sid("other")), None).unwrap().is_empty());

    // a wakes up: its renewal no longer lists the stream.
    assert!(c.renew(&a, LONG).unwrap().is_empty());
    assert_eq!(c.holders().unwrap()[&sid("s")].as_deref(), Some("b"));
}

#[test]
fn renew_returns_only_what_is_still_held() {
    let (c, a, b) = two_nodes("cluster_renew", &["s1", "s2"]);
    assert_eq!(c.claim(&a, SHORT, 10, &mut all).unwrap().len(), 2);
    assert_eq!(
        c.renew(&a, SHORT).unwrap(),
        [
            Held {
                stream: sid("s1"),
                epoch: 1
            },
            Held {
                stream: sid("s2"),
                epoch: 1
            }
        ]
    );
    thread::sleep(Duration::from_millis(1_200));
    // Both expired; b takes one of them.
    assert_eq!(ids(&c.claim(&b, LONG, 1, &mut all).unwrap()), ["s1"]);
    // a may still renew the other (nobody took it: same epoch), and only that one.
    assert_eq!(
        c.renew(&a, LONG).unwrap(),
        [Held {
            stream: sid("s2"),
            epoch: 1
        }]
    );
    assert_eq!(c.holders().unwrap()[&sid("s2")].as_deref(), Some("a"));
    assert!(c.claim(&b, LONG, 10, &mut all).unwrap().is_empty());
}

#[test]
fn release_lets_another_node_claim_at_once_without_a_gap() {
    let c = coordinator("cluster_release");
    for s in ["s1", "s2", "s3"] {
        add_stream(&c, s, json!({}));
    }
    let (a, b) = (node("a"), node("b"));
    c.register(&a, LONG).unwrap();
    let mut wake = c.listener().unwrap();
    wake.listen(LEASES_CHANNEL).unwrap();
    c.register(&b, LONG).unwrap();
    let heard = wake.wait(Duration::from_secs(5)).unwrap();
    assert!(
        matches!(&heard, Some(Heard::Notification { channel, payload, .. })
            if channel == LEASES_CHANNEL && payload.contains("\"joined\"") && payload.contains("\"b\"")),
        "{heard:?}"
    );
    assert_eq!(c.claim(&a, LONG, 10, &mut all).unwrap().len(), 3);
    // Only what a holds is released.
    assert!(c.release(&b, &[sid("s1")]).unwrap().is_empty());
    assert_eq!(
        c.release(&a, &[sid("s1"), sid("nope")]).unwrap(),
        [sid("s1")]
    );
    let heard = wake.wait(Duration::from_secs(5)).unwrap();
    assert!(
        matches!(&heard, Some(Heard::Notification { payload, .. }) if payload.contains("released")),
        "{heard:?}"
    );
    let got = c.claim(&b, LONG, 10, &mut all).unwrap();
    assert_eq!(ids(&got), ["s1"]);
    assert_eq!((got[0].epoch, &got[0].gap), (2, &None));
    assert!(c.gaps(None, None).unwrap().is_empty());

    // A hand-over nobody took within the grace is a gap from the release.
    c.release(&a, &[sid("s2")]).unwrap();
    let mut client =
        postgres::Client::connect(&TestPg::shared().url_of("cluster_release"), postgres::NoTls)
            .unwrap();
    let back = format!("{} seconds", HANDOVER_GRACE.as_secs() + 10);
    client
        .execute(
            "UPDATE leases SET released_at = released_at - $1::text::interval
             WHERE stream_id = 's2'",
            &[&back],
        )
        .unwrap();
    let got = c.claim(&b, LONG, 10, &mut all).unwrap();
    let gap = got[0].gap.as_ref().unwrap();
    assert_eq!(
        (gap.reason, gap.prev_node.as_deref()),
        (GapReason::Released, None)
    );
    assert!(gap.duration() >= HANDOVER_GRACE, "{:?}", gap.duration());
}

/// Streams a node still held but stopped watching (a long database outage) are given up as
/// lost when they were stopped: the node cannot renew them, and the claim that follows records
/// the whole gap.
#[test]
fn streams_handed_back_after_an_outage_carry_their_unwatched_time() {
    let (c, a, b) = two_nodes("cluster_release_unwatched", &["s1", "s2"]);
    assert_eq!(c.claim(&a, LONG, 10, &mut all).unwrap().len(), 2);
    // Only what a holds; nothing for an empty list.
    assert!(c
        .release_unwatched(&b, &[sid("s1")], Duration::from_secs(30))
        .unwrap()
        .is_empty());
    assert!(c
        .release_unwatched(&a, &[], Duration::from_secs(30))
        .unwrap()
        .is_empty());
    assert_eq!(
        c.release_unwatched(&a, &[sid("s1")], Duration::from_secs(30))
            .unwrap(),
        [sid("s1")]
    );
    // a no longer holds it: its renewal leaves it out; s2 is still a's, untouched.
    assert_eq!(held_ids(&c.renew(&a, LONG).unwrap()), ["s2"]);
    let got = c.claim(&b, LONG, 10, &mut all).unwrap();
    assert_eq!(ids(&got), ["s1"]);
    assert_eq!(got[0].epoch, 2);
    let gap = got[0].gap.as_ref().expect("a gap");
    assert_eq!(
        (gap.reason, gap.prev_node.as_deref()),
        (GapReason::NodeLost, Some("a"))
    );
    let d = gap.duration().as_secs_f64();
    assert!((30.0..40.0).contains(&d), "{d}");
}

fn alert(id: &str, stream: &str) -> Alert {
    Alert {
        id: id.to_string(),
        stream_id: sid(stream),
        kind: "video.black".into(),
        severity: Severity::Major,
        state: AlertState::Raised,
        start_s: 1.0,
        end_s: None,
        // As stored: milliseconds.
        raised_at: chrono::DateTime::from_timestamp_millis(chrono::Utc::now().timestamp_millis())
            .unwrap(),
        cleared_at: None,
        details: Default::default(),
    }
}

fn raise(a: &Alert) -> AlertEvent {
    AlertEvent {
        transition: Transition::Raised,
        alert: a.clone(),
    }
}

fn notification(alert_id: &str, state: &str) -> OutboxEntry {
    OutboxEntry {
        notifier: "hook".into(),
        alert_id: alert_id.into(),
        state: state.into(),
        key: format!("{alert_id}:{state}"),
        payload: json!({"alert_id": alert_id}),
        created_at: chrono::Utc::now(),
    }
}

fn sample(stream: &str, v: f64) -> MetricsSample {
    MetricsSample {
        stream_id: sid(stream),
        at: chrono::Utc::now(),
        media_t: v,
        values: [("frames".to_string(), v)].into(),
    }
}

/// Where a stream's time line stood: its latest metrics sample or alert transition, whichever
/// came last; nothing for a stream never reported.
#[test]
fn the_last_media_time_is_the_latest_report_of_the_stream() {
    let (c, a, _) = two_nodes("cluster_last_media", &["s", "t"]);
    assert_eq!(c.last_media_time(&sid("s")).unwrap(), None);
    let epoch = c.claim(&a, LONG, 10, &mut all).unwrap()[0].epoch;
    let first = sample("s", 40.0);
    c.record_metrics_fenced(&[(first.clone(), epoch)]).unwrap();
    let (t, at) = c.last_media_time(&sid("s")).unwrap().unwrap();
    assert_eq!(t, 40.0);
    assert_eq!(at.timestamp_millis(), first.at.timestamp_millis());
    // An alert raised later, at a later media time, is the latest report.
    std::thread::sleep(Duration::from_millis(20));
    let mut a1 = alert("a1", "s");
    a1.start_s = 55.5;
    a1.raised_at = chrono::Utc::now();
    c.store().record_alert(&raise(&a1)).unwrap();
    let (t, _) = c.last_media_time(&sid("s")).unwrap().unwrap();
    assert_eq!(t, 55.5);
    // Another stream's reports are not this one's.
    assert_eq!(c.last_media_time(&sid("t")).unwrap(), None);
}

#[test]
fn a_stale_epoch_cannot_write_and_the_current_one_can() {
    let (c, a, b) = two_nodes("cluster_fence", &["s", "t"]);
    let got = c.claim(&a, LONG, 10, &mut all).unwrap();
    let (s_a, t_a) = (got[0].epoch, got[1].epoch);
    let first = alert("al-1", "s");
    assert_eq!(
        c.record_alert_fenced(&raise(&first), s_a, &[notification("al-1", "raised")])
            .unwrap(),
        [Some(1)]
    );
    // a hands s over (as at SIGTERM); its final flush still passes until b claims.
    c.release(&a, &[sid("s")]).unwrap();
    assert!(c
        .record_metrics_fenced(&[(sample("s", 1.0), s_a)])
        .unwrap()
        .is_empty());
    let s_b = c.claim(&b, LONG, 10, &mut all).unwrap()[0].epoch;
    assert_eq!(s_b, s_a + 1);
    // b continues a's open alert.
    assert_eq!(
        c.open_alerts(&sid("s")).unwrap(),
        std::slice::from_ref(&first)
    );

    // a, stale, can write nothing for s: neither the alert nor its notification.
    let late = alert("al-2", "s");
    let err = c
        .record_alert_fenced(&raise(&late), s_a, &[notification("al-2", "raised")])
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Fenced { stream, epoch, current }
            if stream == &sid("s") && *epoch == s_a && *current == Some(s_b)),
        "{err}"
    );
    assert!(err
        .to_string()
        .contains("another node took the stream over"));
    assert!(c.store().alert("al-2").unwrap().is_none());
    assert_eq!(c.store().outbox_rows("hook").unwrap().len(), 1);
    // b, current, can: it clears the alert it inherited.
    let mut cleared = first.clone();
    cleared.state = AlertState::Cleared;
    cleared.end_s = Some(9.0);
    cleared.cleared_at = Some(chrono::Utc::now());
    let ev = AlertEvent {
        transition: Transition::Cleared,
        alert: cleared,
    };
    c.record_alert_fenced(&ev, s_b, &[notification("al-1", "cleared")])
        .unwrap();
    assert!(c.open_alerts(&sid("s")).unwrap().is_empty());
    assert_eq!(c.store().outbox_rows("hook").unwrap().len(), 2);

    // Metrics: per stream, the stale samples are refused and the rest written.
    let stale = c
        .record_metrics_fenced(&[
            (sample("s", 2.0), s_a),
            (sample("s", 3.0), s_b),
            (sample("t", 4.0), t_a),
            (sample("s", 5.0), s_a),
            (sample("ghost", 6.0), 1),
        ])
        .unwrap();
    assert_eq!(stale.len(), 2, "{stale:?}");
    assert_eq!(
        (&stale[0].stream, stale[0].epoch, stale[0].current),
        (&sid("ghost"), 1, None)
    );
    assert_eq!(
        (&stale[1].stream, stale[1].epoch, stale[1].current),
        (&sid("s"), s_a, Some(s_b))
    );
    let media = |s: &str| -> Vec<f64> {
        c.store()
            .metrics(&sid(s), None)
            .unwrap()
            .into_iter()
            .map(|m| m.media_t)
            .collect()
    };
    assert_eq!(media("s"), [1.0, 3.0]);
    assert_eq!(media("t"), [4.0]);
    assert!(media("ghost").is_empty());
    // A stream without a lease has nothing to fence with.
    assert!(matches!(
        c.record_alert_fenced(&raise(&alert("al-3", "ghost")), 1, &[]),
        Err(StoreError::Fenced { current: None, .. })
    ));
}

#[test]
fn outbox_rows_are_claimed_by_one_node_at_a_time_and_again_after_expiry() {
    let c = coordinator("cluster_outbox");
    let store: &PostgresStore = c.store();
    for i in 1..=5 {
        store
            .outbox_add(&notification(&format!("al-{i}"), "raised"))
            .unwrap();
    }
    let mut mail = notification("al-1", "raised");
    mail.notifier = "mail".into();
    store.outbox_add(&mail).unwrap();
    let row_ids = |rows: &[avmon_store::OutboxRow]| rows.iter().map(|r| r.id).collect::<Vec<_>>();

    let first = c.outbox_claim("hook", "a", 3, SHORT).unwrap();
    assert_eq!(row_ids(&first), [1, 2, 3]);
    // b gets nothing of hook while a's claim lives (a delivers hook in order), but may take
    // another notifier.
    assert!(c.outbox_claim("hook", "b", 10, SHORT).unwrap().is_empty());
    assert_eq!(c.outbox_claim("mail", "b", 10, LONG).unwrap().len(), 1);
    // a delivers the first; the attempt ends that row's claim.
    store
        .outbox_attempt(
            &[1],
            "hook",
            &AttemptOutcome::Delivered { group_key: None },
            &json!({"status": 200}),
            chrono::Utc::now(),
        )
        .unwrap();
    // a dies. Once its claims expire, b takes the rest.
    thread::sleep(Duration::from_millis(1_200));
    let rest = c.outbox_claim("hook", "b", 10, LONG).unwrap();
    assert_eq!(row_ids(&rest), [2, 3, 4, 5]);
    assert!(c.outbox_claim("hook", "a", 10, LONG).unwrap().is_empty());
    // b asking again gets its own claims back (a retry loop, or a restart of b).
    assert_eq!(
        row_ids(&c.outbox_claim("hook", "b", 2, LONG).unwrap()),
        [2, 3]
    );
    let rows = store.outbox_rows("hook").unwrap();
    assert_eq!(rows[0].status, OutboxStatus::Delivered);
    assert_eq!(rows[0].attempts, 1);
}

#[test]
fn concurrent_outbox_claims_never_hand_a_row_to_two_nodes() {
    let c = coordinator("cluster_outbox_race");
    for i in 0..60 {
        c.store()
            .outbox_add(&notification(&format!("al-{i:02}"), "raised"))
            .unwrap();
    }
    let delivered: Mutex<Vec<(i64, String)>> = Mutex::new(Vec::new());
    thread::scope(|s| {
        for n in ["a", "b", "c"] {
            let (c, delivered) = (c.clone(), &delivered);
            s.spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(20);
                while Instant::now() < deadline {
                    let rows = c.outbox_claim("hook", n, 4, LONG).unwrap();
                    if rows.is_empty() {
                        if c.store().outbox_counts("hook").unwrap().pending == 0 {
                            return;
                        }
                        thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
                    delivered
                        .lock()
                        .unwrap()
                        .extend(ids.iter().map(|&id| (id, n.to_string())));
                    c.store()
                        .outbox_attempt(
                            &ids,
                            "hook",
                            &AttemptOutcome::Delivered { group_key: None },
                            &json!({}),
                            chrono::Utc::now(),
                        )
                        .unwrap();
                }
                panic!("the outbox did not drain");
            });
        }
    });
    let delivered = delivered.into_inner().unwrap();
    let unique: BTreeSet<i64> = delivered.iter().map(|(id, _)| *id).collect();
    assert_eq!(delivered.len(), 60, "each row attempted once");
    assert_eq!(unique.len(), 60);
    // In order: a notifier's rows are delivered oldest first, whichever node takes them.
    let order: Vec<i64> = delivered.iter().map(|(id, _)| *id).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted);
}

#[test]
fn listen_and_notify_between_two_connections() {
    let c = coordinator("cluster_listen");
    let mut l = c.listener().unwrap();
    l.listen("avmon_events").unwrap();
    l.listen("other").unwrap();
    // Nothing yet: the wait ends after its timeout.
    let started = Instant::now();
    assert_eq!(l.wait(Duration::from_millis(200)).unwrap(), None);
    assert!(started.elapsed() >= Duration::from_millis(150));

    let sender = Coordinator::open(&TestPg::shared().url_of("cluster_listen")).unwrap();
    sender
        .notify("avmon_events", r#"{"alert":"al-1"}"#)
        .unwrap();
    sender.notify("other", "2").unwrap();
    sender.notify("not_listened", "3").unwrap();
    let mut got = Vec::new();
    while let Some(h) = l.wait(Duration::from_secs(2)).unwrap() {
        got.push(h);
        if got.len() == 3 {
            break;
        }
    }
    let heard: Vec<(String, String)> = got
        .into_iter()
        .map(|h| match h {
            Heard::Notification {
                channel, payload, ..
            } => (channel, payload),
            Heard::Reconnected => panic!("no reconnection expected"),
        })
        .collect();
    assert_eq!(
        heard,
        [
            (
                "avmon_events".to_string(),
                r#"{"alert":"al-1"}"#.to_string()
            ),
            ("other".to_string(), "2".to_string())
        ]
    );
    l.unlisten("other").unwrap();
    sender.notify("other", "4").unwrap();
    assert_eq!(l.wait(Duration::from_millis(300)).unwrap(), None);

    // A payload at the limit passes; over it is refused with what to do instead.
    sender
        .notify("avmon_events", &"x".repeat(MAX_PAYLOAD))
        .unwrap();
    assert!(matches!(
        l.wait(Duration::from_secs(2)).unwrap(),
        Some(Heard::Notification { payload, .. }) if payload.len() == MAX_PAYLOAD
    ));
    let err = sender
        .notify("avmon_events", &"x".repeat(MAX_PAYLOAD + 1))
        .unwrap_err();
    assert!(err.to_string().contains("send the row's id"), "{err}");
    assert!(matches!(
        sender.notify("Bad-Channel", ""),
        Err(StoreError::Invalid(_))
    ));
    assert!(l.listen("a;drop").is_err());
}

#[test]
fn a_postgres_restart_is_survived() {
    // A server of its own: this one is restarted.
    let mut server = TestPg::start();
    let c = Coordinator::open(&server.fresh_database("cluster_restart")).unwrap();
    add_stream(&c, "s", json!({}));
    let a = node("a");
    c.register(&a, LONG).unwrap();
    let epoch = c.claim(&a, LONG, 10, &mut all).unwrap()[0].epoch;
    let mut l = c.listener().unwrap();
    l.listen(LEASES_CHANNEL).unwrap();

    server.restart();

    // The next calls work on fresh connections; the lease and its epoch are as they were.
    c.heartbeat(&a, 1.0).unwrap();
    assert_eq!(
        c.renew(&a, LONG).unwrap(),
        [Held {
            stream: sid("s"),
            epoch
        }]
    );
    assert!(c
        .record_metrics_fenced(&[(sample("s", 1.0), epoch)])
        .unwrap()
        .is_empty());
    // The listener reports the broken connection, then that it reconnected (what was sent
    // meanwhile is lost), then hears again.
    let mut reconnected = false;
    for _ in 0..3 {
        match l.wait(Duration::from_millis(500)) {
            Ok(Some(Heard::Reconnected)) => {
                reconnected = true;
                break;
            }
            Ok(other) => panic!("expected the broken connection to show: {other:?}"),
            Err(e) => assert!(
                e.to_string().contains("LISTEN connection to PostgreSQL"),
                "{e}"
            ),
        }
    }
    assert!(reconnected);
    c.release(&a, &[sid("s")]).unwrap();
    assert!(matches!(
        l.wait(Duration::from_secs(2)).unwrap(),
        Some(Heard::Notification { payload, .. }) if payload.contains("released")
    ));
}
