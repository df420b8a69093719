//! Alert management and stored metrics through the router: acknowledge, alert detail, filters,
//! mute, maintenance windows, metrics series.

mod common;

use avmon_core::{AlertState, Severity};
use avmon_server::AlertsQuery;
use axum::http::{Method, StatusCode};
use common::*;
use serde_json::json;

#[tokio::test]
async fn acknowledges_an_alert_once_with_a_comment() {
    let (fake, router) = setup();
    let (st, _, body) = call(&router, Method::GET, "/api/alerts/a1", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["id"], "a1");
    assert_eq!(body["ack"], json!(null));
    assert_eq!(body["suppressed"], json!(null));
    let (st, _, body) = call(&router, Method::GET, "/api/alerts/zz", None).await;
    assert_eq!(
        (st, body["error"].clone()),
        (StatusCode::NOT_FOUND, json!("no alert \"zz\""))
    );

    let uri = "/api/alerts/a1/ack";
    let (st, _, body) = call(
        &router,
        Method::POST,
        uri,
        Some(r#"{"comment": "switched to backup"}"#),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["ack"]["comment"], "switched to backup");
    assert_eq!(body["ack"]["by"], "anonymous", "no tokens configured");
    assert!(fake.records.lock().unwrap()[1].ack.is_some());
    let (_, _, detail) = call(&router, Method::GET, "/api/alerts/a1", None).await;
    assert_eq!(detail["ack"], body["ack"]);

    let (st, _, body) = call(&router, Method::POST, uri, None).await;
    assert_eq!(st, StatusCode::CONFLICT, "{body}");
    let (st, _, _) = call(&router, Method::POST, "/api/alerts/zz/ack", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // Without a body: an empty comment.
    let (st, _, body) = call(&router, Method::POST, "/api/alerts/a2/ack", None).await;
    assert_eq!(
        (st, body["ack"]["comment"].clone()),
        (StatusCode::OK, json!(""))
    );

    for (bad, why) in [
        (r#"{"comment": 5}"#, "comment: must be a string (got 5)"),
        (r#"{"note": "x"}"#, "note: unknown field (expected comment)"),
        (
            "[]",
            "the body must be a JSON object, e.g. {\"comment\": \"switched to backup\"}",
        ),
    ] {
        let (st, _, body) = call(&router, Method::POST, uri, Some(bad)).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(body["errors"][0], why, "{bad}");
    }
    let long = json!({"comment": "x".repeat(2001)}).to_string();
    let (st, _, _) = call(&router, Method::POST, uri, Some(&long)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn alert_filters_reach_the_monitor() {
    let (fake, router) = setup();
    let uri = "/api/alerts?stream=news&kind=video.black,%20video.freeze&severity=major,CRITICAL\
               &state=cleared&since=1740830400&until=2025-03-01T13:00:00Z&acked=false";
    let (st, _, body) = call(&router, Method::GET, uri, None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let q = fake.last_query.lock().unwrap().clone().unwrap();
    assert_eq!(
        q,
        AlertsQuery {
            stream: Some("news".into()),
            since: Some(t(12, 0, 0)),
            until: Some(t(13, 0, 0)),
            kinds: vec!["video.black".into(), "video.freeze".into()],
            severities: vec![Severity::Major, Severity::Critical],
            state: Some(AlertState::Cleared),
            acked: Some(false),
            ..AlertsQuery::default()
        }
    );
    let (st, _, body) = call(
        &router,
        Method::GET,
        "/api/alerts?severity=fatal&state=open&acked=2",
        None,
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"].as_array().unwrap().len(), 3, "{body}");
}

#[tokio::test]
async fn mutes_and_unmutes_a_stream() {
    let (_, router) = setup();
    let uri = "/api/streams/news/mute";
    let (st, _, body) = call(
        &router,
        Method::POST,
        uri,
        Some(r#"{"until": "2099-01-01T00:00:00Z", "comment": "rehearsal"}"#),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["stream_id"], "news");
    assert_eq!(body["until"], "2099-01-01T00:00:00Z");
    assert_eq!(body["comment"], "rehearsal");
    let (_, _, stream) = call(&router, Method::GET, "/api/streams/news", None).await;
    assert_eq!(stream["muted"], body);

    // Until unmuted.
    let (st, _, body) = call(&router, Method::POST, uri, None).await;
    assert_eq!((st, body["until"].clone()), (StatusCode::OK, json!(null)));

    let (st, _, _) = call(&router, Method::DELETE, uri, None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (_, _, stream) = call(&router, Method::GET, "/api/streams/news", None).await;
    assert_eq!(stream["muted"], json!(null));
    let (st, _, _) = call(&router, Method::DELETE, uri, None).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "unmuting twice is harmless");

    let (st, _, _) = call(&router, Method::POST, "/api/streams/nope/mute", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _, _) = call(&router, Method::DELETE, "/api/streams/nope/mute", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    for (bad, why) in [
        (r#"{"until": 1}"#, "until: must be in the future"),
        (r#"{"until": "soon"}"#, "until: expected an RFC 3339 time"),
        (
            r#"{"until": true}"#,
            "until: expected an RFC 3339 time or unix seconds, got true",
        ),
    ] {
        let (st, _, body) = call(&router, Method::POST, uri, Some(bad)).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}");
        assert!(
            body["errors"][0].as_str().unwrap().starts_with(why),
            "{body}"
        );
    }
}

#[tokio::test]
async fn adds_lists_and_removes_maintenance_windows() {
    let (_, router) = setup();
    let (st, _, list) = call(&router, Method::GET, "/api/maintenance", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(list[0]["id"], "config-0");

    let w = r#"{"streams": ["news-*", "sport"], "start": "2025-03-01T02:00:00Z", "end": 1740799800, "comment": "encoder swap"}"#;
    let (st, headers, body) =
        call_full(&router, None, Method::POST, "/api/maintenance", Some(w)).await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    assert_eq!(
        headers["location"],
        format!("/api/maintenance/{}", body["id"].as_str().unwrap())
    );
    assert_eq!(body["streams"], json!(["news-*", "sport"]));
    assert_eq!(body["start"], "2025-03-01T02:00:00Z");
    assert_eq!(body["end"], "2025-03-01T03:30:00Z");
    assert_eq!(body["by"], "anonymous");
    let (_, _, list) = call(&router, Method::GET, "/api/maintenance", None).await;
    assert_eq!(list.as_array().unwrap().len(), 2);

    let uri = format!("/api/maintenance/{}", body["id"].as_str().unwrap());
    assert_eq!(
        call(&router, Method::DELETE, &uri, None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(&router, Method::DELETE, &uri, None).await.0,
        StatusCode::NOT_FOUND
    );
    let (st, _, body) = call(&router, Method::DELETE, "/api/maintenance/config-0", None).await;
    assert_eq!(st, StatusCode::CONFLICT, "{body}");

    // Every problem at once.
    let bad = r#"{"streams": ["a b", 3, ""], "start": "2025-03-01T02:00:00Z", "end": "2025-03-01T01:00:00Z", "comment": 1}"#;
    let (st, _, body) = call(&router, Method::POST, "/api/maintenance", Some(bad)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let errors: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 5, "{errors:#?}");
    assert!(errors.contains(&"end: must be after start"), "{errors:#?}");
    assert!(
        errors.contains(&"streams[2]: must not be empty"),
        "{errors:#?}"
    );
    for (bad, why) in [
        ("", "the body must be a JSON object"),
        (r#"{"end": "2099-01-01T00:00:00Z"}"#, "streams: missing"),
        (r#"{"streams": []}"#, "streams: must not be empty"),
        (r#"{"streams": ["x"]}"#, "end: missing"),
    ] {
        let (st, _, body) = call(&router, Method::POST, "/api/maintenance", Some(bad)).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}");
        assert!(
            body["error"].as_str().unwrap().starts_with(why),
            "{bad}: {body}"
        );
    }
}

#[tokio::test]
async fn serves_a_streams_metrics_over_time_with_the_bitrate_derived() {
    let (fake, router) = setup();
    let (st, _, body) = call(&router, Method::GET, "/api/streams/news/metrics", None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let q = fake.last_metrics_query.lock().unwrap().clone().unwrap();
    assert!(q.until.is_none() && q.names.is_empty() && q.limit == 1000);
    let age = chrono::Utc::now() - q.since;
    assert!(
        (age - chrono::Duration::hours(1)).num_seconds().abs() < 5,
        "an hour by default"
    );
    let samples = body["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 3);
    assert!(
        samples[0]["values"].get("bitrate_bps").is_none(),
        "no period before the first"
    );
    // 250 000 bytes in 10 s.
    assert_eq!(samples[1]["values"]["bitrate_bps"], 200_000.0);
    assert_eq!(samples[2]["values"]["loudness_short_term_lufs"], -25.0);

    let uri = "/api/streams/news/metrics?names=bitrate_bps,decode_errors&since=1740830400&until=1740834000&limit=10";
    let (st, _, body) = call(&router, Method::GET, uri, None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let q = fake.last_metrics_query.lock().unwrap().clone().unwrap();
    assert_eq!(
        q.names,
        ["decode_errors", "bytes"],
        "bytes fetched for the bitrate"
    );
    assert_eq!(
        (q.since, q.until, q.limit),
        (t(12, 0, 0), Some(t(13, 0, 0)), 10)
    );
    assert_eq!(body["since"], "2025-03-01T12:00:00Z");
    assert_eq!(
        body["samples"][2]["values"],
        json!({"bitrate_bps": 200000.0, "decode_errors": 2.0})
    );

    let (st, _, _) = call(&router, Method::GET, "/api/streams/nope/metrics", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _, body) = call(
        &router,
        Method::GET,
        "/api/streams/news/metrics?since=x&limit=0&until=1&foo=1",
        None,
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"].as_array().unwrap().len(), 4, "{body}");
}
