//! Every endpoint against a fake Monitor: through `oneshot` (no server), and once over a real
//! socket.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use avmon_core::{Alert, AlertState, Severity, StreamId, Tier};
use avmon_server::{app, serve, AlertsQuery, ApiError, Monitor, StreamState, StreamStatus};
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use chrono::{TimeZone, Utc};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

fn status(id: &str, url: &str) -> StreamStatus {
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
    }
}

fn alert(id: &str, stream: &str) -> Alert {
    Alert {
        id: id.into(),
        stream_id: StreamId(stream.into()),
        kind: "video.black".into(),
        severity: Severity::Major,
        state: AlertState::Raised,
        start_s: 8.04,
        end_s: None,
        raised_at: Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap(),
        cleared_at: None,
        details: json!({"black_ratio": 0.99}).as_object().unwrap().clone(),
    }
}

#[derive(Default)]
struct Fake {
    streams: Mutex<Vec<StreamStatus>>,
    last_query: Mutex<Option<AlertsQuery>>,
    unhealthy: AtomicBool,
}

impl Monitor for Fake {
    fn streams(&self) -> Vec<StreamStatus> {
        self.streams.lock().unwrap().clone()
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

    fn alerts(&self, q: &AlertsQuery) -> Result<Vec<Alert>, ApiError> {
        *self.last_query.lock().unwrap() = Some(q.clone());
        if q.stream.as_deref() == Some("boom") {
            return Err(ApiError::Internal(
                "SELECT failed on /var/lib/avmon/secret.db".into(),
            ));
        }
        Ok(vec![alert("a2", "news"), alert("a1", "news")])
    }

    fn prometheus(&self) -> String {
        "# TYPE avmon_streams gauge\navmon_streams 1\n".into()
    }

    fn healthy(&self) -> bool {
        !self.unhealthy.load(Ordering::SeqCst)
    }
}

fn setup() -> (Arc<Fake>, Router) {
    let fake = Arc::new(Fake::default());
    fake.streams
        .lock()
        .unwrap()
        .push(status("news", "srt://10.0.0.1:9000"));
    let router = app(fake.clone());
    (fake, router)
}

/// Send one request; returns status, content type and body (JSON when it parses, else a string).
async fn call(
    router: &Router,
    method: Method,
    uri: &str,
    body: Option<&str>,
) -> (StatusCode, String, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if body.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let req = req
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let ctype = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, ctype, json)
}

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
                "lag_s": 0.0}])
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
    let server = tokio::spawn(serve(listener, fake.clone(), async {
        stopped.await.ok();
    }));

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
