//! Every endpoint against a fake Monitor: through `oneshot` (no server), and once over a real
//! socket.

mod common;

use std::sync::atomic::Ordering;

use avmon_core::Tier;
use avmon_server::{serve, AlertsQuery, LiveEvent, Monitor, StreamState, StreamStatus};
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use chrono::{TimeZone, Utc};
use common::*;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

#[tokio::test]
async fn lists_and_gets_streams() {
    let (_, router) = setup();
    let (st, ctype, body) = call(&router, Method::GET, "/api/streams", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(ctype, "application/json");
    assert_eq!(
        body,
        json!([{"id": "news", "url": "srt://10.0.0.1:9000", "status": "starting",
                "active_alerts": [], "media_t": 0.0, "last_data_at": null, "info": null,
                "frames_video": 0, "frames_audio": 0, "decode_errors": 0, "reconnects": 0,
                "tier": "full", "configured_tier": "full", "degraded": false, "priority": 100,
                "lag_s": 0.0, "muted": null, "node": null}])
    );
    let (st, _, body) = call(&router, Method::GET, "/api/streams/news", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["id"], "news");
    let (st, _, body) = call(&router, Method::GET, "/api/streams/nope", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "no stream \"nope\"");
}

#[tokio::test]
async fn adds_streams() {
    let (fake, router) = setup();
    let spec = r#"{"id": "sport", "url": "udp://239.0.0.1:1234", "black": {"min_s": 2}}"#;
    let resp = router
        .clone()
        .oneshot(
            Request::post("/api/streams")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(spec))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()[header::LOCATION], "/api/streams/sport");
    assert_eq!(fake.streams().len(), 2);

    // Duplicate id.
    let (st, _, body) = call(&router, Method::POST, "/api/streams", Some(spec)).await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(body["errors"], json!(["stream \"sport\" already exists"]));

    // Invalid config: every problem listed.
    let (st, _, body) = call(
        &router,
        Method::POST,
        "/api/streams",
        Some(r#"{"id": "a b", "url": "ftp://x"}"#),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"].as_array().unwrap().len(), 2, "{body}");
    assert!(body["error"].as_str().unwrap().starts_with("id: "));
}

#[tokio::test]
async fn bad_bodies_are_client_errors() {
    let (_, router) = setup();
    for bad in ["{\"id\": ", "not json", ""] {
        let (st, _, body) = call(&router, Method::POST, "/api/streams", Some(bad)).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad:?}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .starts_with("invalid JSON body"),
            "{body}"
        );
    }
    let (st, _, body) = call(&router, Method::POST, "/api/streams", Some("[1, 2]")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("JSON object"));
}

#[tokio::test]
async fn patches_a_streams_tier_and_refuses_anything_else() {
    let (fake, router) = setup();
    let uri = "/api/streams/news";
    let (st, _, body) = call(
        &router,
        Method::PATCH,
        uri,
        Some(r#"{"tier": "keyframes"}"#),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["tier"], "keyframes");
    assert_eq!(fake.streams()[0].tier, Tier::Keyframes);
    let (_, _, body) = call(&router, Method::GET, uri, None).await;
    assert_eq!(body["tier"], "keyframes");

    let (st, _, body) = call(&router, Method::PATCH, uri, Some(r#"{"tier": "half"}"#)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(
        body["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("tier: unknown tier \"half\""),
        "{body}"
    );
    let (st, _, body) = call(&router, Method::PATCH, uri, Some(r#"{"url": "udp://x:1"}"#)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"].as_array().unwrap().len(), 2, "{body}");
    let (st, _, _) = call(&router, Method::PATCH, uri, Some("[1]")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _, _) = call(
        &router,
        Method::PATCH,
        "/api/streams/nope",
        Some(r#"{"tier": "full"}"#),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(
        fake.streams()[0].tier,
        Tier::Keyframes,
        "a refused PATCH changes nothing"
    );
}

#[tokio::test]
async fn removes_streams() {
    let (fake, router) = setup();
    let (st, _, body) = call(&router, Method::DELETE, "/api/streams/news", None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(body, Value::String(String::new()));
    assert!(fake.streams().is_empty());
    let (st, _, body) = call(&router, Method::DELETE, "/api/streams/news", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(body["errors"], json!(["no stream \"news\""]));
}

#[tokio::test]
async fn lists_alerts_with_a_parsed_query() {
    let (fake, router) = setup();
    let (st, _, body) = call(&router, Method::GET, "/api/alerts", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body.as_array().unwrap().len(), 2);
    assert_eq!(body[0]["id"], "a2");
    assert_eq!(body[0]["raised_at"], "2025-03-01T12:00:00Z");
    let q = fake.last_query.lock().unwrap().clone().unwrap();
    assert_eq!(q, AlertsQuery::default());

    let uri = "/api/alerts?stream=news&since=2025-03-01T14:00:00%2B02:00&active=true&limit=5";
    let (st, _, _) = call(&router, Method::GET, uri, None).await;
    assert_eq!(st, StatusCode::OK);
    let q = fake.last_query.lock().unwrap().clone().unwrap();
    assert_eq!(
        q,
        AlertsQuery {
            stream: Some("news".into()),
            since: Some(Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()),
            active: Some(true),
            limit: Some(5),
            ..AlertsQuery::default()
        }
    );
    let (st, _, _) = call(&router, Method::GET, "/api/alerts?since=1740830400", None).await;
    assert_eq!(st, StatusCode::OK);
    let q = fake.last_query.lock().unwrap().clone().unwrap();
    assert_eq!(
        q.since,
        Some(Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap())
    );
}

#[tokio::test]
async fn bad_alert_queries_are_400_with_clear_messages() {
    let (fake, router) = setup();
    *fake.last_query.lock().unwrap() = None;
    let (st, _, body) = call(&router, Method::GET, "/api/alerts?since=yesterday", None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["errors"],
        json!(["since: expected an RFC 3339 time (2025-03-01T12:00:00Z) or unix seconds, got \"yesterday\""])
    );
    let (st, _, body) = call(
        &router,
        Method::GET,
        "/api/alerts?limit=0&active=maybe",
        None,
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"].as_array().unwrap().len(), 2);
    assert!(
        fake.last_query.lock().unwrap().is_none(),
        "never reached the monitor"
    );
}

#[tokio::test]
async fn internal_errors_do_not_leak_detail() {
    let (_, router) = setup();
    let (st, _, body) = call(&router, Method::GET, "/api/alerts?stream=boom", None).await;
    assert_eq!(st, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!body.to_string().contains("secret"), "{body}");
    assert_eq!(body["error"], "internal error; see the server log");
}

#[tokio::test]
async fn metrics_and_health() {
    let (fake, router) = setup();
    let (st, ctype, body) = call(&router, Method::GET, "/metrics", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(ctype, "text/plain; version=0.0.4; charset=utf-8");
    assert_eq!(body, "# TYPE avmon_streams gauge\navmon_streams 1\n");

    let (st, _, body) = call(&router, Method::GET, "/healthz", None).await;
    assert_eq!((st, body), (StatusCode::OK, json!({"status": "ok"})));
    fake.unhealthy.store(true, Ordering::SeqCst);
    let (st, _, body) = call(&router, Method::GET, "/healthz", None).await;
    assert_eq!(
        (st, body),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "unhealthy"})
        )
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let (_, router) = setup();
    let (st, ctype, body) = call(&router, Method::GET, "/api/nope", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(ctype, "application/json");
    assert_eq!(body["error"], "no route for GET /api/nope");
    let (st, _, body) = call(&router, Method::PUT, "/api/streams", None).await;
    assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["error"], "method PUT not allowed on /api/streams");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_over_a_real_socket_and_shuts_down() {
    let (fake, _) = setup();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        fake.clone(),
        avmon_server::Auth::open(),
        None,
        async {
            stopped.await.ok();
        },
    ));

    let client = reqwest::Client::new();
    let health: Value = client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health, json!({"status": "ok"}));
    let resp = client
        .post(format!("{base}/api/streams"))
        .json(&json!({"id": "sport", "url": "udp://239.0.0.1:1234"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::CREATED);
    let streams: Vec<StreamStatus> = client
        .get(format!("{base}/api/streams"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(streams.len(), 2);
    assert_eq!(streams[1].status, StreamState::Starting);

    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), server)
        .await
        .expect("graceful shutdown")
        .unwrap()
        .unwrap();
}

/// Status, headers and raw body of a GET.
async fn get_raw(router: &Router, uri: &str) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let req = Request::builder().uri(uri).body(Body::empty()).unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes().to_vec();
    (parts.status, parts.headers, bytes)
}

#[tokio::test]
async fn serves_the_console() {
    let (_, router) = setup();
    for (uri, ctype, needle) in [
        ("/", "text/html; charset=utf-8", "<title>avmon</title>"),
        (
            "/console/app.js",
            "text/javascript; charset=utf-8",
            "EventSource",
        ),
        ("/console/app.css", "text/css; charset=utf-8", ".tile"),
    ] {
        let (st, headers, body) = get_raw(&router, uri).await;
        assert_eq!(st, StatusCode::OK, "{uri}");
        assert_eq!(headers[header::CONTENT_TYPE], ctype, "{uri}");
        assert!(String::from_utf8(body).unwrap().contains(needle), "{uri}");
    }
    // Every asset the page names is served: nothing is fetched from elsewhere.
    let (_, _, page) = get_raw(&router, "/").await;
    let page = String::from_utf8(page).unwrap();
    for part in page.split(['"', '\'']) {
        if part.starts_with("http://") || part.starts_with("https://") || part.starts_with("//") {
            panic!("the console loads {part} from the network");
        }
        if part.starts_with("/console/") {
            assert_eq!(get_raw(&router, part).await.0, StatusCode::OK, "{part}");
        }
    }
    let (st, _, body) = call(&router, Method::GET, "/console/../Cargo.toml", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{body}");
    let (st, _, body) = call(&router, Method::GET, "/console/nope.js", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "no console file \"nope.js\"");
}

#[tokio::test]
async fn serves_evidence_and_thumbnails() {
    let (_, router) = setup();
    let (st, h, body) = get_raw(&router, "/api/alerts/a1/snapshot.jpg").await;
    assert_eq!((st, body.as_slice()), (StatusCode::OK, JPEG));
    assert_eq!(h[header::CONTENT_TYPE], "image/jpeg");
    let (st, h, body) = get_raw(&router, "/api/alerts/a1/clip.ts").await;
    assert_eq!((st, body.as_slice()), (StatusCode::OK, CLIP));
    assert_eq!(h[header::CONTENT_TYPE], "video/mp2t");
    assert_eq!(
        h[header::CONTENT_DISPOSITION],
        "attachment; filename=\"a1.ts\""
    );
    let (st, h, body) = get_raw(&router, "/api/streams/news/thumbnail.jpg").await;
    assert_eq!((st, body.as_slice()), (StatusCode::OK, JPEG));
    assert_eq!(h[header::CACHE_CONTROL], "no-cache");
    for uri in [
        "/api/alerts/a2/snapshot.jpg",
        "/api/alerts/a2/clip.ts",
        "/api/streams/sport/thumbnail.jpg",
    ] {
        let (st, ctype, body) = call(&router, Method::GET, uri, None).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(ctype, "application/json");
        assert!(body["error"].as_str().unwrap().starts_with("no "), "{body}");
    }
}

#[tokio::test]
async fn live_events_are_server_sent_events() {
    let (fake, router) = setup();
    // A service that publishes none answers 404.
    let (st, _, _) = call(&router, Method::GET, "/api/events", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    let (tx, _) = tokio::sync::broadcast::channel(4);
    *fake.events.lock().unwrap() = Some(tx.clone());
    let req = Request::builder()
        .uri("/api/events")
        .body(Body::empty())
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut body = resp.into_body();
    assert_eq!(next_event(&mut body).await, "event: hello\ndata: {}\n\n");
    tx.send(LiveEvent::new(
        "alert",
        &json!({"transition": "raised", "alert": alert("a1", "news")}),
    ))
    .unwrap();
    let ev = next_event(&mut body).await;
    assert!(
        ev.starts_with("event: alert\ndata: {\"transition\":\"raised\""),
        "{ev}"
    );
    // A subscriber that falls behind the bounded channel is told to fetch the state again.
    for i in 0..10 {
        tx.send(LiveEvent::new("levels", &json!({ "n": i })))
            .unwrap();
    }
    assert_eq!(next_event(&mut body).await, "event: resync\ndata: {}\n\n");
}

/// The next Server-Sent Event's text from a response body.
async fn next_event(body: &mut Body) -> String {
    let frame = tokio::time::timeout(std::time::Duration::from_secs(5), body.frame())
        .await
        .expect("an event in time")
        .unwrap()
        .unwrap();
    String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap()
}
