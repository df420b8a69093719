//! The behavioural suite every backend passes (SQLite in a file and in memory, PostgreSQL on a
//! server the tests start), plus each backend's open/migrate checks.

use std::collections::BTreeMap;

use avmon_core::{
    Ack, Alert, AlertEvent, AlertState, Details, MaintenanceWindow, Mute, Severity, StreamId,
    Suppressed, Transition, WallTime,
};
use avmon_store::retention::prune;
use avmon_store::{
    open, AckOutcome, AlertQuery, AttemptOutcome, MetricsQuery, MetricsSample, OutboxCounts,
    OutboxEntry, OutboxStatus, PostgresStore, Retention, SqliteStore, Store, StoreError,
    StreamRecord,
};
use avmon_testpg::TestPg;
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;

fn t0() -> WallTime {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
}

fn at(ms: i64) -> WallTime {
    t0() + Duration::milliseconds(ms)
}

fn sid(s: &str) -> StreamId {
    StreamId(s.to_string())
}

fn details(v: serde_json::Value) -> Details {
    match v {
        serde_json::Value::Object(m) => m,
        _ => unreachable!(),
    }
}

fn raised(id: &str, stream: &str, kind: &str, raised_ms: i64) -> Alert {
    Alert {
        id: id.to_string(),
        stream_id: sid(stream),
        kind: kind.to_string(),
        severity: Severity::Warning,
        state: AlertState::Raised,
        start_s: 10.25,
        end_s: None,
        raised_at: at(raised_ms),
        cleared_at: None,
        details: details(json!({"black_ratio": 0.99})),
    }
}

fn ev(transition: Transition, alert: &Alert) -> AlertEvent {
    AlertEvent {
        transition,
        alert: alert.clone(),
    }
}

fn all() -> AlertQuery {
    AlertQuery::default()
}

/// The contract of [`Store`], backend-independent.
fn suite(store: &dyn Store) {
    streams(store);
    alerts(store);
    metrics(store);
    management(store);
    metrics_ranges(store);
    metrics_batches(store);
    outbox(store);
    json_keeps_its_key_order(store);
}

/// A batch reads back as the same samples written one by one, in order, with the same rules
/// (an empty sample leaves no trace).
fn metrics_batches(store: &dyn Store) {
    let mut batch = Vec::new();
    for period in 0..4 {
        for stream in ["batch-a", "batch-b", "batch-c"] {
            let v = period as f64;
            batch.push(sample(
                stream,
                100_000 + period * 10_000,
                v * 10.0 + 0.5,
                &[
                    ("frames_video", 250.0 + v),
                    ("black_ratio", v / 10.0),
                    ("audio_rms_db", -23.25 - v),
                    ("bytes", 1e9 + v),
                ],
            ));
        }
    }
    batch.push(sample("batch-a", 200_000, 99.0, &[]));
    store.record_metrics_batch(&batch).unwrap();
    store.record_metrics_batch(&[]).unwrap();
    for stream in ["batch-a", "batch-b", "batch-c"] {
        let want: Vec<MetricsSample> = batch
            .iter()
            .filter(|m| m.stream_id == sid(stream) && !m.values.is_empty())
            .cloned()
            .collect();
        assert_eq!(store.metrics(&sid(stream), None).unwrap(), want);
    }
    // The same samples one by one, under another stream name, read back identically.
    for m in batch.iter().filter(|m| m.stream_id == sid("batch-a")) {
        let mut m = m.clone();
        m.stream_id = sid("single-a");
        store.record_metrics(&m).unwrap();
    }
    let single: Vec<_> = store
        .metrics(&sid("single-a"), None)
        .unwrap()
        .into_iter()
        .map(|m| (m.at, m.media_t, m.values))
        .collect();
    let batched: Vec<_> = store
        .metrics(&sid("batch-a"), None)
        .unwrap()
        .into_iter()
        .map(|m| (m.at, m.media_t, m.values))
        .collect();
    assert_eq!(single, batched);
}

/// JSON handed back as written keeps its key order (a console shows it in that order); JSON
/// values compare equal whatever the order, so this compares text.
fn json_keeps_its_key_order(store: &dyn Store) {
    let mut a = raised("order-1", "order", "video.black", 0);
    a.details = details(json!({"zeta": 1, "alpha": {"y": 2, "b": 3}, "mid": [3, 1]}));
    store.record_alert(&ev(Transition::Raised, &a)).unwrap();
    let got = store.alert("order-1").unwrap().unwrap().alert.details;
    assert_eq!(
        serde_json::to_string(&got).unwrap(),
        r#"{"zeta":1,"alpha":{"y":2,"b":3},"mid":[3,1]}"#
    );
    let mut e = entry("order", "order-1", "raised", 0);
    e.payload = json!({"text": "x", "alert_id": "order-1", "a": null});
    store.outbox_add(&e).unwrap();
    let row = &store.outbox_rows("order").unwrap()[0];
    assert_eq!(
        row.entry.payload.to_string(),
        r#"{"text":"x","alert_id":"order-1","a":null}"#
    );
}

/// Acknowledgements, suppression marks, filters, mutes and maintenance windows.
fn management(store: &dyn Store) {
    let mut a = raised("m-1", "mgmt", "video.freeze", 10_000);
    a.severity = Severity::Critical;
    let b = raised("m-2", "mgmt", "audio.silence", 11_000);
    store.record_alert(&ev(Transition::Raised, &a)).unwrap();
    store.record_alert(&ev(Transition::Raised, &b)).unwrap();
    store.mark_alert("m-2", Suppressed::Muted).unwrap();

    let r = store.alert("m-2").unwrap().unwrap();
    assert_eq!(r.alert, b);
    assert_eq!(r.suppressed, Some(Suppressed::Muted));
    assert_eq!(r.ack, None);
    assert!(store.alert("nope").unwrap().is_none());

    let ack = Ack {
        by: "ops".into(),
        comment: "switching to backup".into(),
        at: at(12_000),
    };
    match store.ack_alert("m-1", &ack).unwrap() {
        AckOutcome::Acked(r) => {
            assert_eq!(r.ack.as_ref(), Some(&ack));
            assert_eq!(r.alert, a);
        }
        other => panic!("{other:?}"),
    }
    let later = Ack {
        by: "someone".into(),
        comment: "again".into(),
        at: at(13_000),
    };
    assert_eq!(
        store.ack_alert("m-1", &later).unwrap(),
        AckOutcome::AlreadyAcked(ack.clone()),
        "the first acknowledgement is kept"
    );
    assert_eq!(
        store.ack_alert("nope", &later).unwrap(),
        AckOutcome::NotFound
    );
    // A clear keeps the acknowledgement and the mark.
    let mut cleared = b.clone();
    cleared.state = AlertState::Cleared;
    cleared.end_s = Some(20.0);
    cleared.cleared_at = Some(at(14_000));
    store
        .record_alert(&ev(Transition::Cleared, &cleared))
        .unwrap();
    assert_eq!(
        store.alert("m-2").unwrap().unwrap().suppressed,
        Some(Suppressed::Muted)
    );

    let ids = |q: AlertQuery| -> Vec<String> {
        let q = AlertQuery {
            stream: Some(sid("mgmt")),
            ..q
        };
        let records = store.alert_records(&q).unwrap();
        // `alerts` agrees with `alert_records`.
        let plain: Vec<Alert> = store.alerts(&q).unwrap();
        assert_eq!(
            plain,
            records.iter().map(|r| r.alert.clone()).collect::<Vec<_>>()
        );
        records.into_iter().map(|r| r.alert.id).collect()
    };
    assert_eq!(ids(all()), ["m-2", "m-1"]);
    assert_eq!(
        ids(AlertQuery {
            acked: Some(true),
            ..all()
        }),
        ["m-1"]
    );
    assert_eq!(
        ids(AlertQuery {
            acked: Some(false),
            ..all()
        }),
        ["m-2"]
    );
    let kinds = vec!["video.freeze".to_string(), "video.black".to_string()];
    assert_eq!(ids(AlertQuery { kinds, ..all() }), ["m-1"]);
    let severities = vec![Severity::Warning, Severity::Info];
    assert_eq!(
        ids(AlertQuery {
            severities,
            ..all()
        }),
        ["m-2"]
    );
    let state = Some(AlertState::Cleared);
    assert_eq!(ids(AlertQuery { state, ..all() }), ["m-2"]);
    let state = Some(AlertState::Raised);
    assert_eq!(ids(AlertQuery { state, ..all() }), ["m-1"]);
    let until = Some(at(10_500));
    assert_eq!(ids(AlertQuery { until, ..all() }), ["m-1"]);

    // Mutes: set, replace, list, remove.
    assert!(store.mutes().unwrap().is_empty());
    let mute = Mute {
        stream_id: "mgmt".into(),
        until: Some(at(60_000)),
        by: "ops".into(),
        comment: "rehearsal".into(),
        at: at(1),
    };
    store.set_mute(&mute).unwrap();
    let forever = Mute {
        until: None,
        ..mute.clone()
    };
    store.set_mute(&forever).unwrap();
    assert_eq!(store.mutes().unwrap(), [forever]);
    assert!(store.remove_mute(&sid("mgmt")).unwrap());
    assert!(!store.remove_mute(&sid("mgmt")).unwrap());
    assert!(store.mutes().unwrap().is_empty());

    // Windows: add, list by start, remove.
    let w = |id: &str, start: i64| MaintenanceWindow {
        id: id.into(),
        streams: vec!["news-*".into(), "sport".into()],
        start: at(start),
        end: at(start + 3_600_000),
        comment: "encoder upgrade".into(),
        by: "admin".into(),
    };
    store.add_window(&w("w-late", 5_000)).unwrap();
    store.add_window(&w("w-early", 1_000)).unwrap();
    assert_eq!(
        store.windows().unwrap(),
        [w("w-early", 1_000), w("w-late", 5_000)]
    );
    assert!(store.remove_window("w-early").unwrap());
    assert!(!store.remove_window("w-early").unwrap());
    assert_eq!(store.windows().unwrap(), [w("w-late", 5_000)]);
}

fn metrics_ranges(store: &dyn Store) {
    let s = sid("ranged");
    for i in 0..5 {
        let v = i as f64;
        store
            .record_metrics(&sample(
                "ranged",
                i * 10_000,
                v * 10.0,
                &[
                    ("bytes", 1000.0 * v),
                    ("blockiness_mean", v),
                    ("frames_video", 250.0),
                ],
            ))
            .unwrap();
    }
    let q = MetricsQuery {
        since: Some(at(10_000)),
        until: Some(at(30_000)),
        names: vec!["bytes".into(), "blockiness_mean".into()],
        limit: 0,
    };
    let got = store.metrics_range(&s, &q).unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].at, at(10_000));
    assert_eq!(got[2].at, at(30_000));
    assert!(got.iter().all(|m| m.values.len() == 2), "{got:?}");
    assert_eq!(got[1].values["bytes"], 2000.0);
    let latest = store
        .metrics_range(
            &s,
            &MetricsQuery {
                limit: 2,
                ..MetricsQuery::default()
            },
        )
        .unwrap();
    assert_eq!(
        latest.iter().map(|m| m.at).collect::<Vec<_>>(),
        [at(30_000), at(40_000)],
        "the limit keeps the latest"
    );
    assert_eq!(latest[0].values.len(), 3);
}

fn entry(notifier: &str, alert: &str, state: &str, ms: i64) -> OutboxEntry {
    OutboxEntry {
        notifier: notifier.into(),
        alert_id: alert.into(),
        state: state.into(),
        key: format!("{alert}:{state}"),
        payload: json!({"alert_id": alert, "state": state}),
        created_at: at(ms),
    }
}

fn outbox(store: &dyn Store) {
    let a = store.outbox_add(&entry("hook", "a1", "raised", 0)).unwrap();
    let b = store.outbox_add(&entry("hook", "a2", "raised", 5)).unwrap();
    let c = store
        .outbox_add(&entry("hook", "a1", "cleared", 9))
        .unwrap();
    let other = store
        .outbox_add(&entry("pager", "a1", "raised", 1))
        .unwrap();
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    assert!(
        a < b && b < c && other.is_some(),
        "ids increase with insertion"
    );
    // A replayed key is ignored: the first row stays.
    let mut replay = entry("hook", "a1", "raised", 99);
    replay.payload = json!({"changed": true});
    assert_eq!(store.outbox_add(&replay).unwrap(), None);
    assert!(store.outbox_has_alert("hook", "a1").unwrap());
    assert!(!store.outbox_has_alert("hook", "zz").unwrap());
    assert!(!store.outbox_has_alert("other", "a1").unwrap());

    assert_eq!(
        store.outbox_pending_by_notifier().unwrap(),
        [("hook".to_string(), 3), ("pager".to_string(), 1)]
    );
    let pending = store.outbox_pending("hook", 10).unwrap();
    let ids: Vec<i64> = pending.iter().map(|r| r.id).collect();
    assert_eq!(ids, [a, b, c], "oldest first, this notifier's only");
    assert_eq!(pending[0].entry, entry("hook", "a1", "raised", 0));
    assert_eq!(pending[0].status, OutboxStatus::Pending);
    assert_eq!(store.outbox_pending("hook", 2).unwrap().len(), 2);

    // A failed attempt keeps the rows pending, counts it, and logs it.
    let why = json!({"status": 503});
    store
        .outbox_attempt(&[a, b], "hook", &AttemptOutcome::Retry, &why, at(100))
        .unwrap();
    let pending = store.outbox_pending("hook", 10).unwrap();
    assert_eq!(pending.len(), 3);
    assert_eq!((pending[0].attempts, pending[2].attempts), (1, 0));
    assert_eq!(
        pending[1].last_error.as_deref(),
        Some(why.to_string().as_str())
    );
    // Then a delivery, under a group key.
    let ok = AttemptOutcome::Delivered {
        group_key: Some("g1".into()),
    };
    store
        .outbox_attempt(&[a, b], "hook", &ok, &json!({"status": 200}), at(200))
        .unwrap();
    assert_eq!(
        store.outbox_open_groups("hook").unwrap(),
        [
            ("a1".to_string(), "g1".to_string()),
            ("a2".to_string(), "g1".to_string())
        ]
    );
    store
        .outbox_attempt(
            &[c],
            "hook",
            &AttemptOutcome::Failed,
            &json!({"status": 400}),
            at(300),
        )
        .unwrap();
    assert_eq!(
        store.outbox_open_groups("hook").unwrap(),
        [("a2".to_string(), "g1".to_string())],
        "a given-up clear closes its alert too"
    );
    assert!(store.outbox_pending("hook", 10).unwrap().is_empty());
    // A finished row is final: a late attempt does not change it.
    store
        .outbox_attempt(&[a], "hook", &AttemptOutcome::Failed, &json!({}), at(400))
        .unwrap();
    let rows = store.outbox_rows("hook").unwrap();
    let status: Vec<OutboxStatus> = rows.iter().map(|r| r.status).collect();
    assert_eq!(
        status,
        [
            OutboxStatus::Delivered,
            OutboxStatus::Delivered,
            OutboxStatus::Failed
        ]
    );
    assert_eq!(rows[0].attempts, 2);
    assert_eq!(
        store.outbox_counts("hook").unwrap(),
        OutboxCounts {
            pending: 0,
            delivered: 2,
            failed: 1
        }
    );
    assert_eq!(store.outbox_counts("pager").unwrap().pending, 1);
    assert_eq!(
        store.outbox_counts("nobody").unwrap(),
        OutboxCounts::default()
    );
    let log = store.outbox_attempts("hook").unwrap();
    let outcomes: Vec<(&str, i64)> = log
        .iter()
        .map(|r| (r.outcome.as_str(), r.outbox_id))
        .collect();
    assert_eq!(
        outcomes,
        [("retry", a), ("delivered", a), ("failed", c), ("failed", a)]
    );
    assert_eq!(log[2].detail, json!({"status": 400}));
    assert_eq!(log[0].at, at(100));
}

fn streams(store: &dyn Store) {
    assert!(store.streams().unwrap().is_empty());
    let b = StreamRecord {
        id: sid("b-news"),
        url: "srt://10.0.0.2:9000".into(),
        config: json!({"id": "b-news", "url": "srt://10.0.0.2:9000"}),
        created_at: at(0),
    };
    let a = StreamRecord {
        id: sid("a-sport"),
        url: "udp://239.0.0.1:1234".into(),
        config: json!({"id": "a-sport", "url": "udp://239.0.0.1:1234", "black": {"min_s": 2.0}}),
        created_at: at(1),
    };
    store.upsert_stream(&b).unwrap();
    store.upsert_stream(&a).unwrap();
    assert_eq!(
        store.streams().unwrap(),
        vec![a.clone(), b.clone()],
        "ordered by id"
    );

    // Updating keeps the original creation time.
    let b2 = StreamRecord {
        url: "srt://10.0.0.3:9000".into(),
        config: json!({"id": "b-news", "url": "srt://10.0.0.3:9000"}),
        created_at: at(5_000),
        ..b.clone()
    };
    store.upsert_stream(&b2).unwrap();
    let got = store.streams().unwrap();
    assert_eq!(got[1].url, b2.url);
    assert_eq!(got[1].config, b2.config);
    assert_eq!(got[1].created_at, b.created_at);

    assert!(store.remove_stream(&sid("a-sport")).unwrap());
    assert!(
        !store.remove_stream(&sid("a-sport")).unwrap(),
        "already removed"
    );
    assert!(!store.remove_stream(&sid("nope")).unwrap());
    let ids: Vec<_> = store.streams().unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(ids, vec![sid("b-news")]);

    // Re-adding a removed stream revives it as new.
    let a2 = StreamRecord {
        created_at: at(9_000),
        ..a.clone()
    };
    store.upsert_stream(&a2).unwrap();
    assert_eq!(store.streams().unwrap()[0], a2);
}

fn alerts(store: &dyn Store) {
    let mut a = raised("0195-a", "s1", "video.black", 0);
    let b = raised("0195-b", "s2", "audio.silence", 1_000);
    store.record_alert(&ev(Transition::Raised, &a)).unwrap();
    store.record_alert(&ev(Transition::Raised, &b)).unwrap();
    assert_eq!(store.alerts(&all()).unwrap(), vec![b.clone(), a.clone()]);

    // An update rewrites severity and details.
    a.severity = Severity::Major;
    a.details = details(json!({"black_ratio": 1.0, "luma_avg": 16.5}));
    store.record_alert(&ev(Transition::Updated, &a)).unwrap();
    assert_eq!(store.alerts(&all()).unwrap()[1], a);

    // A clear closes it.
    a.state = AlertState::Cleared;
    a.end_s = Some(42.5);
    a.cleared_at = Some(at(5_000));
    store.record_alert(&ev(Transition::Cleared, &a)).unwrap();
    assert_eq!(store.alerts(&all()).unwrap(), vec![b.clone(), a.clone()]);

    // Cleared is final: a straggling update or a replayed raise does not reopen it.
    let mut late = raised("0195-a", "s1", "video.black", 0);
    late.severity = Severity::Critical;
    store.record_alert(&ev(Transition::Updated, &late)).unwrap();
    store.record_alert(&ev(Transition::Raised, &late)).unwrap();
    assert_eq!(store.alerts(&all()).unwrap()[1], a);

    // Queries.
    let active = AlertQuery {
        active_only: true,
        ..all()
    };
    assert_eq!(store.alerts(&active).unwrap(), vec![b.clone()]);
    let s1 = AlertQuery {
        stream: Some(sid("s1")),
        ..all()
    };
    assert_eq!(store.alerts(&s1).unwrap(), vec![a.clone()]);
    let none = AlertQuery {
        stream: Some(sid("s1")),
        active_only: true,
        ..all()
    };
    assert!(store.alerts(&none).unwrap().is_empty());
    // `since` matches alerts raised *or* cleared at/after it: `a` was raised at 0 and cleared
    // at 5 s, `b` raised at 1 s.
    let since = |ms| AlertQuery {
        since: Some(at(ms)),
        ..all()
    };
    assert_eq!(
        store.alerts(&since(1_000)).unwrap(),
        vec![b.clone(), a.clone()]
    );
    assert_eq!(store.alerts(&since(1_001)).unwrap(), vec![a.clone()]);
    assert_eq!(store.alerts(&since(5_000)).unwrap(), vec![a.clone()]);
    assert!(store.alerts(&since(5_001)).unwrap().is_empty());
    let one = AlertQuery { limit: 1, ..all() };
    assert_eq!(store.alerts(&one).unwrap(), vec![b.clone()]);

    // An update or clear for an alert the store never saw raised (the store was down) still
    // records it.
    let mut c = raised("0195-c", "s1", "video.freeze", 2_000);
    c.state = AlertState::Cleared;
    c.end_s = Some(20.0);
    c.cleared_at = Some(at(3_000));
    store.record_alert(&ev(Transition::Cleared, &c)).unwrap();
    assert_eq!(store.alerts(&s1).unwrap(), vec![c.clone(), a.clone()]);

    // Alerts of a removed stream stay.
    store
        .upsert_stream(&StreamRecord {
            id: sid("s2"),
            url: "udp://x".into(),
            config: json!({}),
            created_at: at(0),
        })
        .unwrap();
    store.remove_stream(&sid("s2")).unwrap();
    let s2 = AlertQuery {
        stream: Some(sid("s2")),
        ..all()
    };
    assert_eq!(store.alerts(&s2).unwrap(), vec![b]);

    // Wall times keep millisecond precision.
    let mut d = raised("0195-d", "s3", "video.black", 0);
    d.raised_at = DateTime::from_timestamp(1_740_830_400, 123_456_789).unwrap();
    store.record_alert(&ev(Transition::Raised, &d)).unwrap();
    let got = store
        .alerts(&AlertQuery {
            stream: Some(sid("s3")),
            ..all()
        })
        .unwrap();
    assert_eq!(got[0].raised_at.timestamp_subsec_nanos(), 123_000_000);
}

fn sample(stream: &str, ms: i64, media_t: f64, values: &[(&str, f64)]) -> MetricsSample {
    MetricsSample {
        stream_id: sid(stream),
        at: at(ms),
        media_t,
        values: values
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn metrics(store: &dyn Store) {
    assert!(store.metrics(&sid("m1"), None).unwrap().is_empty());
    let s1 = sample(
        "m1",
        10_000,
        10.0,
        &[
            ("frames_decoded", 250.0),
            ("black_ratio", 0.0),
            ("audio_rms_db", -23.5),
        ],
    );
    let s2 = sample(
        "m1",
        20_000,
        20.0,
        &[("frames_decoded", 250.0), ("decode_errors", 3.0)],
    );
    let other = sample("m2", 15_000, 3.0, &[("frames_decoded", 1.0)]);
    let empty = sample("m1", 25_000, 25.0, &[]);
    for s in [&s1, &other, &s2, &empty] {
        store.record_metrics(s).unwrap();
    }
    assert_eq!(
        store.metrics(&sid("m1"), None).unwrap(),
        vec![s1.clone(), s2.clone()],
        "oldest first; a sample without values leaves no trace"
    );
    assert_eq!(
        store.metrics(&sid("m1"), Some(at(20_000))).unwrap(),
        vec![s2.clone()]
    );
    assert_eq!(store.metrics(&sid("m2"), None).unwrap(), vec![other]);

    assert_eq!(store.prune_metrics(at(15_000)).unwrap(), 3);
    assert_eq!(store.metrics(&sid("m1"), None).unwrap(), vec![s2]);
}

#[test]
fn sqlite_file_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("avmon.db").display());
    suite(open(&url).unwrap().as_ref());
}

#[test]
fn sqlite_memory_passes_the_suite() {
    suite(open("sqlite::memory:").unwrap().as_ref());
}

#[test]
fn reopening_keeps_data_and_does_not_rerun_migrations() {
    let dir = tempfile::tempdir().unwrap();
    // The parent directory is created on demand.
    let path = dir.path().join("nested/dir/avmon.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(
            store.schema_version().unwrap(),
            avmon_store::sqlite::MIGRATIONS.len() as i64
        );
        store
            .record_alert(&ev(Transition::Raised, &raised("x", "s", "video.black", 0)))
            .unwrap();
    }
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }
    // The migrations create tables without IF NOT EXISTS, so re-running them would fail here.
    let store = open(&format!("sqlite://{}", path.display())).unwrap();
    let got = store.alerts(&all()).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, "x");
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(
        store.schema_version().unwrap(),
        avmon_store::sqlite::MIGRATIONS.len() as i64
    );
}

#[test]
fn a_newer_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("avmon.db");
    drop(SqliteStore::open(&path).unwrap());
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 99, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("newer"), "{err}");
}

fn open_err(url: &str) -> String {
    match open(url) {
        Ok(_) => panic!("{url} opened"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_paths_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();

    let msg = open_err(&format!("sqlite://{d}"));
    assert!(msg.contains("is a directory"), "{msg}");

    std::fs::write(dir.path().join("file"), b"not a dir").unwrap();
    let msg = open_err(&format!("sqlite://{d}/file/avmon.db"));
    assert!(msg.contains("cannot create directory"), "{msg}");

    std::fs::write(dir.path().join("text.db"), vec![b'x'; 4096]).unwrap();
    let msg = open_err(&format!("sqlite://{d}/text.db"));
    assert!(msg.starts_with("cannot open database"), "{msg}");
    assert!(msg.contains("not a database"), "{msg}");
}

#[test]
fn a_plain_path_is_a_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.db");
    let store = open(path.to_str().unwrap()).unwrap();
    store
        .upsert_stream(&StreamRecord {
            id: sid("a"),
            url: "udp://127.0.0.1:5000".into(),
            config: json!({"id": "a"}),
            created_at: t0(),
        })
        .unwrap();
    drop(store);
    let again = open(&format!("sqlite://{}", path.display())).unwrap();
    assert_eq!(again.streams().unwrap().len(), 1, "the same file");
}

#[test]
fn unsupported_urls_are_refused() {
    assert!(open_err("redis://x").contains("\"redis\""));
    assert!(open_err("").contains("empty"), "{}", open_err(""));
    let msg = open_err("postgres://avmon:pw@127.0.0.1:1/avmon?sslmode=require");
    assert!(msg.contains("TLS"), "{msg}");
    assert!(!msg.contains("pw"), "the password is not shown: {msg}");
    let msg = open_err("postgres://avmon:pw@127.0.0.1:1/avmon?colour=blue");
    assert!(msg.starts_with("invalid store URL"), "{msg}");
    assert!(!msg.contains("pw@"), "the password is not shown: {msg}");
}

// PostgreSQL: one server for this test process, a fresh database per test.

fn pg(name: &str) -> String {
    TestPg::shared().fresh_database(name)
}

#[test]
fn postgres_passes_the_suite() {
    suite(open(&pg("suite")).unwrap().as_ref());
    // `postgresql://` is the same backend.
    let url = pg("suite_long_scheme").replacen("postgres://", "postgresql://", 1);
    suite(open(&url).unwrap().as_ref());
}

#[test]
fn postgres_reopening_keeps_data_and_does_not_rerun_migrations() {
    let url = pg("reopen");
    let n = avmon_store::postgres::MIGRATIONS.len() as i64;
    {
        let store = PostgresStore::open(&url).unwrap();
        assert_eq!(store.schema_version().unwrap(), n);
        store
            .record_alert(&ev(Transition::Raised, &raised("x", "s", "video.black", 0)))
            .unwrap();
    }
    // The migrations create tables without IF NOT EXISTS, so re-running one would fail here.
    let store = open(&url).unwrap();
    let got = store.alerts(&all()).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, "x");
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let versions: Vec<i32> = client
        .query("SELECT version FROM avmon_schema ORDER BY version", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, (1..=n as i32).collect::<Vec<_>>());
}

#[test]
fn postgres_refuses_a_newer_schema() {
    let url = pg("newer");
    drop(PostgresStore::open(&url).unwrap());
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    client
        .execute("INSERT INTO avmon_schema (version) VALUES (99)", &[])
        .unwrap();
    let err = PostgresStore::open(&url).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 99, supported }
            if supported == avmon_store::postgres::MIGRATIONS.len() as i64),
        "{err}"
    );
    assert!(err.to_string().contains("newer"), "{err}");
}

#[test]
fn postgres_nodes_opening_at_once_migrate_once() {
    let url = pg("concurrent");
    let n = 6;
    let barrier = std::sync::Barrier::new(n);
    std::thread::scope(|s| {
        let opens: Vec<_> = (0..n)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    PostgresStore::open(&url).map(|store| store.schema_version())
                })
            })
            .collect();
        for o in opens {
            let version = o.join().unwrap().unwrap().unwrap();
            assert_eq!(version, avmon_store::postgres::MIGRATIONS.len() as i64);
        }
    });
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let rows: i64 = client
        .query_one("SELECT count(*) FROM avmon_schema", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, avmon_store::postgres::MIGRATIONS.len() as i64);
}

#[test]
fn postgres_unreachable_is_a_clear_error_within_seconds() {
    // A port nobody listens on: refused at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = std::time::Instant::now();
    let msg = open_err(&format!("postgres://avmon:pw@127.0.0.1:{port}/avmon"));
    assert!(
        msg.starts_with(&format!(
            "database error: cannot connect to PostgreSQL at 127.0.0.1:{port}/avmon: "
        )),
        "{msg}"
    );
    assert!(!msg.contains("pw"), "{msg}");
    assert!(started.elapsed() < std::time::Duration::from_secs(3));

    // A peer that accepts and never answers: the connect timeout (here 1 s) still ends it.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let started = std::time::Instant::now();
    let msg = open_err(&format!(
        "postgres://avmon@127.0.0.1:{port}/avmon?connect_timeout=1"
    ));
    assert!(msg.contains("no answer within 2 s"), "{msg}");
    assert!(started.elapsed() < std::time::Duration::from_secs(4));

    // A database that does not exist names itself.
    let msg = open_err(&TestPg::shared().url_of("no_such_db"));
    assert!(msg.contains("\"no_such_db\" does not exist"), "{msg}");
}

#[test]
fn postgres_works_from_spawn_blocking_and_drops_inside_a_runtime() {
    let url = pg("tokio");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        // Opened, used and dropped in a blocking task, as the API and the notifiers do.
        let url2 = url.clone();
        tokio::task::spawn_blocking(move || {
            let store = open(&url2).unwrap();
            store
                .record_alert(&ev(Transition::Raised, &raised("t", "s", "video.black", 0)))
                .unwrap();
            assert_eq!(store.alerts(&all()).unwrap().len(), 1);
        })
        .await
        .unwrap();
        // Shared between tasks: each call in spawn_blocking, the last reference dropped on an
        // async task's own thread.
        let store: std::sync::Arc<dyn Store> = tokio::task::spawn_blocking(move || {
            std::sync::Arc::<dyn Store>::from(open(&url).unwrap())
        })
        .await
        .unwrap();
        let calls: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                tokio::task::spawn_blocking(move || {
                    store.record_metrics(&sample("tokio", i * 1000, i as f64, &[("x", 1.0)]))
                })
            })
            .collect();
        for c in calls {
            c.await.unwrap().unwrap();
        }
        let s = store.clone();
        let n = tokio::task::spawn_blocking(move || s.metrics(&sid("tokio"), None))
            .await
            .unwrap()
            .unwrap()
            .len();
        assert_eq!(n, 8);
        drop(store);
    });
}

#[test]
fn postgres_restart_is_survived() {
    // A server of its own: this one is stopped.
    let mut server = TestPg::start();
    let store = open(&server.fresh_database("restart")).unwrap();
    store
        .record_alert(&ev(Transition::Raised, &raised("r", "s", "video.black", 0)))
        .unwrap();
    server.stop();
    let started = std::time::Instant::now();
    let err = store.alerts(&all()).unwrap_err().to_string();
    assert!(err.contains("PostgreSQL"), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(12),
        "{err}"
    );
    server.restart();
    // The pooled connections died with the server; the pool replaces them.
    assert_eq!(store.alerts(&all()).unwrap().len(), 1);
    let mut cleared = raised("r", "s", "video.black", 0);
    cleared.state = AlertState::Cleared;
    cleared.cleared_at = Some(at(1_000));
    store
        .record_alert(&ev(Transition::Cleared, &cleared))
        .unwrap();
    assert_eq!(store.alerts(&all()).unwrap(), [cleared]);
}

// Retention: a fresh store per backend, so that nothing else's rows are folded.

/// Samples every 10 s for `secs` seconds from `start_ms`: a count, a ratio and a maximum.
fn series(stream: &str, start_ms: i64, secs: i64) -> Vec<MetricsSample> {
    (0..secs / 10)
        .map(|i| {
            let ms = start_ms + i * 10_000 + 3;
            let values = [
                ("bytes", (250_000 + i % 11 * 1000) as f64),
                ("black_ratio", (i % 7) as f64 / 7.0),
                ("blockiness_max", (i * 37 % 101) as f64 / 10.0),
            ];
            sample(stream, ms, ms as f64 / 1000.0, &values)
        })
        .collect()
}

/// What the store should read back for `samples` folded into `span_ms` buckets: one sample
/// per bucket at its start, with the largest media time; a count's total, a ratio's mean, a
/// maximum's largest.
fn expected_buckets(samples: &[MetricsSample], span_ms: i64) -> Vec<MetricsSample> {
    let mut buckets: BTreeMap<i64, Vec<&MetricsSample>> = BTreeMap::new();
    for s in samples {
        let ms = (s.at - t0()).num_milliseconds();
        buckets
            .entry(ms - ms.rem_euclid(span_ms))
            .or_default()
            .push(s);
    }
    buckets
        .into_iter()
        .map(|(start, group)| {
            let all = |n: &'static str| group.iter().map(move |s| s.values[n]);
            let values = [
                ("bytes", all("bytes").sum::<f64>()),
                (
                    "black_ratio",
                    all("black_ratio").sum::<f64>() / group.len() as f64,
                ),
                (
                    "blockiness_max",
                    all("blockiness_max").fold(f64::MIN, f64::max),
                ),
            ];
            MetricsSample {
                stream_id: group[0].stream_id.clone(),
                at: at(start),
                media_t: group.iter().map(|s| s.media_t).fold(f64::MIN, f64::max),
                values: values.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
            }
        })
        .collect()
}

fn assert_close(got: &[MetricsSample], want: &[MetricsSample], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: {got:?}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!((g.at, g.media_t), (w.at, w.media_t), "{what}");
        assert_eq!(g.values.len(), w.values.len(), "{what}");
        for (name, v) in &w.values {
            assert!(
                (g.values[name] - v).abs() < 1e-9,
                "{what}: {name} {g:?} vs {w:?}"
            );
        }
    }
}

fn retention(store: &dyn Store) {
    const MIN: i64 = 60_000;
    const HOUR: i64 = 60 * MIN;
    const DAY: i64 = 24 * HOUR;
    let now = at(500 * DAY + 7 * MIN + 5_000);
    let now_ms = (now - t0()).num_milliseconds();
    // Past every retention: gone. Older than 30 days: hours. Older than a day: minutes.
    let ancient = series("r1", now_ms - 450 * DAY, 1800);
    let old = series("r1", now_ms - 35 * DAY - 30 * MIN, 2 * 3600);
    let week = series("r1", now_ms - 5 * DAY, 600);
    let fresh = series("r1", now_ms - 2 * HOUR, 1200);
    let other = series("r2", now_ms - 3 * DAY, 300);
    for batch in [&ancient, &old, &week, &fresh, &other] {
        store.record_metrics_batch(batch).unwrap();
    }
    // Written late into a bucket that is already folded: it is added to it.
    let late_ms = now_ms - 5 * DAY + 11;
    let values = [
        ("bytes", 1e6),
        ("black_ratio", 1.0),
        ("blockiness_max", 99.0),
    ];
    let late = sample("r1", late_ms, 1.0, &values);

    // Alerts: old and cleared (acknowledged, notified) goes; raised, pending or recent stays.
    let cleared_at = |id: &str, cleared_ms: i64| {
        let mut a = raised(id, "r1", "video.black", cleared_ms - 5_000);
        a.state = AlertState::Cleared;
        a.end_s = Some(20.0);
        a.cleared_at = Some(at(cleared_ms));
        a
    };
    let gone = cleared_at("old-cleared", now_ms - 401 * DAY);
    let pending = cleared_at("old-pending", now_ms - 402 * DAY);
    let recent = cleared_at("recent", now_ms - 10 * DAY);
    let open = raised("old-open", "r1", "video.freeze", now_ms - 420 * DAY);
    for a in [&gone, &pending, &recent] {
        store.record_alert(&ev(Transition::Raised, a)).unwrap();
        store.record_alert(&ev(Transition::Cleared, a)).unwrap();
    }
    store.record_alert(&ev(Transition::Raised, &open)).unwrap();
    let ack = Ack {
        by: "ops".into(),
        comment: "seen".into(),
        at: at(now_ms - 401 * DAY),
    };
    store.ack_alert("old-cleared", &ack).unwrap();
    let sent = store
        .outbox_add(&entry("hook", "old-cleared", "cleared", now_ms - 401 * DAY))
        .unwrap()
        .unwrap();
    store
        .outbox_add(&entry("hook", "old-pending", "cleared", now_ms - 402 * DAY))
        .unwrap();
    let delivered = AttemptOutcome::Delivered { group_key: None };
    let ok = json!({"status": 200});
    store
        .outbox_attempt(&[sent], "hook", &delivered, &ok, at(now_ms - 401 * DAY))
        .unwrap();
    store
        .outbox_attempt(&[sent], "hook", &delivered, &ok, at(now_ms - DAY))
        .unwrap();

    let policy = Retention {
        batch_rows: 100,
        ..Retention::default()
    };
    // Stopped after a few transactions, then resumed: the same end state as one pass.
    let mut calls = 0;
    let first = prune(store, &policy, now, &mut || {
        calls += 1;
        calls < 4
    })
    .unwrap();
    assert!(first.interrupted && first.transactions == 4, "{first:?}");
    let mut paces = 0;
    let done = prune(store, &policy, now, &mut || {
        paces += 1;
        true
    })
    .unwrap();
    assert!(!done.interrupted, "{done:?}");
    store.record_metrics(&late).unwrap();
    let late_run = prune(store, &policy, now, &mut || true).unwrap();
    assert_eq!(
        late_run.raw_folded,
        late.values.len() as u64,
        "{late_run:?}"
    );
    let values = |s: &[MetricsSample]| s.iter().map(|s| s.values.len() as u64).sum::<u64>();
    let raw_folded = values(&ancient) + values(&old) + values(&week) + values(&other);
    assert_eq!(
        first.raw_folded + done.raw_folded,
        raw_folded,
        "every raw value older than a day is folded, once"
    );
    assert!(
        paces as u64 >= raw_folded / 100,
        "small transactions: {paces} for {raw_folded} rows"
    );
    assert_eq!(done.alerts_deleted, 1, "{done:?}");
    assert_eq!(first.attempts_deleted + done.attempts_deleted, 1);

    let mut week_late = week.clone();
    week_late.push(late.clone());
    let mut want = expected_buckets(&old, HOUR);
    want.extend(expected_buckets(&week_late, MIN));
    want.extend(fresh.iter().cloned());
    let got = store.metrics(&sid("r1"), None).unwrap();
    assert_close(&got, &want, "r1 after pruning");
    assert_eq!(
        want.iter().filter(|s| s.at < at(now_ms - 30 * DAY)).count(),
        3,
        "2 h across hour lines: three hourly buckets"
    );
    assert_close(
        &store.metrics(&sid("r2"), None).unwrap(),
        &expected_buckets(&other, MIN),
        "r2",
    );
    // Ranges and names work on aggregates as on raw samples.
    let ranged = store
        .metrics_range(
            &sid("r1"),
            &MetricsQuery {
                since: Some(at(now_ms - 8 * DAY)),
                until: Some(at(now_ms - 3 * HOUR)),
                names: vec!["black_ratio".into(), "bytes".into()],
                limit: 3,
            },
        )
        .unwrap();
    let mut want_ranged: Vec<MetricsSample> = expected_buckets(&week_late, MIN)
        .into_iter()
        .rev()
        .take(3)
        .rev()
        .collect();
    for s in &mut want_ranged {
        s.values.remove("blockiness_max");
    }
    assert_close(&ranged, &want_ranged, "a range of aggregates");

    // Pruning again finds nothing to do.
    let again = prune(store, &policy, now, &mut || true).unwrap();
    assert_eq!(
        (again.raw_folded, again.minutes_folded, again.hours_deleted),
        (0, 0, 0),
        "{again:?}"
    );
    assert_eq!(store.metrics(&sid("r1"), None).unwrap(), got);

    assert_eq!(store.alert("old-cleared").unwrap(), None);
    assert!(!store.outbox_has_alert("hook", "old-cleared").unwrap());
    for kept in ["old-pending", "recent", "old-open"] {
        assert!(store.alert(kept).unwrap().is_some(), "{kept} is kept");
    }
    let attempts = store.outbox_attempts("hook").unwrap();
    assert_eq!(attempts.len(), 1, "the recent attempt stays: {attempts:?}");
    assert_eq!(attempts[0].at, at(now_ms - DAY));
    // A fresh acknowledgement of a new alert with the old one's id is not blocked by a leftover.
    let mut reborn = raised("old-cleared", "r1", "video.black", now_ms);
    reborn.start_s = 1.0;
    store
        .record_alert(&ev(Transition::Raised, &reborn))
        .unwrap();
    assert!(matches!(
        store.ack_alert("old-cleared", &ack).unwrap(),
        AckOutcome::Acked(_)
    ));
}

#[test]
fn sqlite_keeps_what_retention_says() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("avmon.db").display());
    retention(open(&url).unwrap().as_ref());
}

#[test]
fn postgres_keeps_what_retention_says() {
    let url = pg("retention");
    retention(open(&url).unwrap().as_ref());
    // A cluster's monitoring gaps go with the alerts' retention.
    let store = open(&url).unwrap();
    let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let now = at(900 * 86_400_000);
    for (node, days) in [("old", 401), ("recent", 3)] {
        let to = now - Duration::days(days);
        db.execute(
            "INSERT INTO monitoring_gaps (stream_id, from_at, to_at, next_node, reason)
             VALUES ('r1', $1, $2, $3, 'node_lost')",
            &[&(to - Duration::seconds(30)), &to, &node],
        )
        .unwrap();
    }
    let done = prune(store.as_ref(), &Retention::default(), now, &mut || true).unwrap();
    assert_eq!(done.events_deleted, 1, "{done:?}");
    let left: Vec<String> = db
        .query("SELECT next_node FROM monitoring_gaps", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, ["recent"]);
}

/// A full database (SQLite at its page limit: the writes that need space fail as on a full
/// disk): monitoring's writes wait in memory, notifications are still handed out and their
/// deliveries remembered, and everything is written, in order, once there is space again.
#[test]
fn a_full_disk_keeps_results_and_notifications_until_space_returns() {
    use avmon_store::spill::SpillStore;
    let dir = tempfile::tempdir().unwrap();
    let sqlite = std::sync::Arc::new(SqliteStore::open(dir.path().join("a.db")).unwrap());
    let store = SpillStore::new(sqlite.clone());
    let early = raised("a0", "s1", "video.black", 0);
    store.record_alert(&ev(Transition::Raised, &early)).unwrap();
    let first = store
        .outbox_add(&entry("hook", "a0", "raised", 0))
        .unwrap()
        .unwrap();
    assert!(first > 0 && store.spilled().is_none());

    sqlite.limit_pages(Some(0)).unwrap();
    // The pages it has have some room left: write until a write needs another page.
    let mut written = Vec::new();
    for i in 0..5_000 {
        let s = sample(
            "s1",
            1_000 + i,
            i as f64,
            &[("frames", i as f64), ("bytes", 1e6)],
        );
        store.record_metrics(&s).unwrap();
        written.push(s);
        if store.spilled().is_some() {
            break;
        }
    }
    let spilled = store.spilled().expect("the full database refused a write");
    assert!(spilled.error.contains("full"), "{}", spilled.error);
    // Monitoring goes on: an alert, its notification, a delivery of an older one.
    let late = raised("a1", "s1", "audio.silence", 10_000);
    store.record_alert(&ev(Transition::Raised, &late)).unwrap();
    let mem = store
        .outbox_add(&entry("hook", "a1", "raised", 10_000))
        .unwrap()
        .expect("queued in memory");
    assert_eq!(
        store
            .outbox_add(&entry("hook", "a1", "raised", 10_000))
            .unwrap(),
        None,
        "a replay of a waiting key"
    );
    let pending: Vec<i64> = store
        .outbox_pending("hook", 10)
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(
        pending,
        [first, mem],
        "the database's row first, then memory's"
    );
    assert!(store.outbox_has_alert("hook", "a1").unwrap());
    let delivered = AttemptOutcome::Delivered { group_key: None };
    let detail = json!({"status": 200});
    store
        .outbox_attempt(&[first], "hook", &delivered, &detail, at(11_000))
        .unwrap();
    store
        .outbox_attempt(
            &[mem],
            "hook",
            &AttemptOutcome::Retry,
            &json!({"status": 503}),
            at(11_500),
        )
        .unwrap();
    let pending = store.outbox_pending("hook", 10).unwrap();
    assert_eq!(
        pending.len(),
        1,
        "the delivered row is not handed out again"
    );
    assert_eq!((pending[0].id, pending[0].attempts), (mem, 1));
    store
        .outbox_attempt(&[mem], "hook", &delivered, &detail, at(12_000))
        .unwrap();
    assert!(store.outbox_pending("hook", 10).unwrap().is_empty());
    assert_eq!(
        store.outbox_counts("hook").unwrap(),
        OutboxCounts {
            pending: 0,
            delivered: 2,
            failed: 0
        }
    );
    // Nothing of it reached the database, and it still cannot write.
    assert_eq!(sqlite.outbox_counts("hook").unwrap().pending, 1);
    assert!(sqlite.alert("a1").unwrap().is_none());
    assert!(!store.retry());

    sqlite.limit_pages(None).unwrap();
    assert!(
        store.retry(),
        "everything waiting is written once there is space"
    );
    assert!(store.spilled().is_none());
    assert_eq!(
        sqlite.alert("a1").unwrap().map(|r| r.alert.kind),
        Some("audio.silence".to_string())
    );
    let rows = sqlite.outbox_rows("hook").unwrap();
    let summary: Vec<(&str, OutboxStatus, u32)> = rows
        .iter()
        .map(|r| (r.entry.alert_id.as_str(), r.status, r.attempts))
        .collect();
    assert_eq!(
        summary,
        [
            ("a0", OutboxStatus::Delivered, 1),
            ("a1", OutboxStatus::Delivered, 2)
        ]
    );
    assert_eq!(sqlite.outbox_attempts("hook").unwrap().len(), 3);
    let stored = sqlite.metrics(&sid("s1"), None).unwrap();
    assert_eq!(stored, written, "every sample, in order");
}
