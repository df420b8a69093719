//! Bearer tokens on every endpoint: missing, wrong, read-only where admin is needed, and the
//! `?access_token=` form for clients that cannot set headers.

mod common;

use avmon_server::{serve, Auth, ROUTES};
use axum::http::header::WWW_AUTHENTICATE;
use axum::http::{Method, StatusCode};
use common::*;
use serde_json::{json, Value};

/// A concrete path for a route: `{id}` filled with something that exists.
fn concrete(route: &str) -> String {
    let id = if route.starts_with("/api/alerts") {
        "a1"
    } else if route.starts_with("/api/maintenance") {
        "w9"
    } else {
        "news"
    };
    route.replace("{id}", id)
}

/// A body each state-changing call accepts.
fn body_for(route: &str, method: &Method) -> Option<&'static str> {
    match (route, method) {
        ("/api/streams", &Method::POST) => {
            Some(r#"{"id": "sport", "url": "udp://239.0.0.1:1234"}"#)
        }
        ("/api/streams/{id}", &Method::PATCH) => Some(r#"{"tier": "keyframes"}"#),
        ("/api/maintenance", &Method::POST) => {
            Some(r#"{"streams": ["news"], "start": 1740830400, "end": 1740834000}"#)
        }
        _ => None,
    }
}

/// Open to everyone whatever the tokens (`/metrics` by default).
fn is_open(route: &str) -> bool {
    matches!(route, "/healthz" | "/api/openapi.json" | "/metrics")
}

#[tokio::test]
async fn every_endpoint_checks_its_token() {
    let mut seen = Vec::new();
    for (route, methods) in ROUTES {
        for m in *methods {
            let method: Method = m.parse().unwrap();
            let uri = concrete(route);
            let body = body_for(route, &method);
            let changes = method != Method::GET;
            // A fresh fake each time, so a call that changes state does not hide the next one.
            let (_, router) = setup_with(tokens());
            let what = format!("{m} {uri}");

            for token in [None, Some("wrong-token"), Some("")] {
                let (st, headers, json) =
                    call_full(&router, token, method.clone(), &uri, body).await;
                if is_open(route) {
                    assert!(st.is_success(), "{what} is open: {st}");
                    continue;
                }
                assert_eq!(
                    st,
                    StatusCode::UNAUTHORIZED,
                    "{what} with {token:?}: {json}"
                );
                assert!(
                    headers[WWW_AUTHENTICATE]
                        .to_str()
                        .unwrap()
                        .starts_with("Bearer realm=\"avmon\""),
                    "{what}"
                );
                assert!(
                    json["error"].is_string() && json["errors"].is_array(),
                    "{json}"
                );
                seen.push(json);
            }

            let (st, _, json) = call_as(&router, Some(READER), method.clone(), &uri, body).await;
            if changes {
                assert_eq!(
                    st,
                    StatusCode::FORBIDDEN,
                    "{what} with a read token: {json}"
                );
                assert_eq!(
                    json["error"],
                    "token \"wall\" may only read; this needs an admin token"
                );
            } else {
                // The fake publishes no live events (an endless stream here would never end the
                // call): reaching the handler, which says so, is what the token allows.
                let reached =
                    st.is_success() || (*route == "/api/events" && st == StatusCode::NOT_FOUND);
                assert!(reached, "{what} with a read token: {st} {json}");
            }
            seen.push(json);

            let (_, router) = setup_with(tokens());
            let (st, _, json) = call_as(&router, Some(ADMIN), method.clone(), &uri, body).await;
            assert!(
                st.is_success()
                    || (st == StatusCode::NOT_FOUND
                        && (uri.contains("w9") || *route == "/api/events")),
                "{what} with an admin token: {st} {json}"
            );
            seen.push(json);
        }
    }
    // No answer ever shows a token.
    let all = Value::Array(seen).to_string();
    assert!(!all.contains(ADMIN) && !all.contains(READER));
}

#[tokio::test]
async fn a_get_may_carry_its_token_in_the_query_and_nothing_else_may() {
    let (_, router) = setup_with(tokens());
    let uri = format!("/api/streams?access_token={READER}");
    let (st, _, json) = call(&router, Method::GET, &uri, None).await;
    assert_eq!(st, StatusCode::OK, "{json}");
    assert_eq!(json[0]["id"], "news");
    // The alert query's own parser lets it through.
    let uri = format!("/api/alerts?limit=1&access_token={READER}");
    assert_eq!(
        call(&router, Method::GET, &uri, None).await.0,
        StatusCode::OK
    );
    let uri = "/api/alerts?access_token=nope";
    assert_eq!(
        call(&router, Method::GET, uri, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    // Not for changes: a token in a URL ends up in logs and histories.
    let uri = format!("/api/streams/news/mute?access_token={ADMIN}");
    let (st, _, _) = call(&router, Method::POST, &uri, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn malformed_authorization_headers_are_401() {
    let (_, router) = setup_with(tokens());
    for value in [
        format!("Basic {ADMIN}"),
        ADMIN.to_string(),
        format!("Bearer {ADMIN}x"),
    ] {
        let req = axum::http::Request::get("/api/streams")
            .header("authorization", value.clone())
            .body(axum::body::Body::empty())
            .unwrap();
        let resp = tower::ServiceExt::oneshot(router.clone(), req)
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{value}");
    }
    // The scheme is case-insensitive.
    let req = axum::http::Request::get("/api/streams")
        .header("authorization", format!("bearer {READER}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = tower::ServiceExt::oneshot(router.clone(), req)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn metrics_can_require_a_read_token() {
    let auth = Auth {
        metrics_need_token: true,
        ..tokens()
    };
    let (_, router) = setup_with(auth);
    assert_eq!(
        call(&router, Method::GET, "/metrics", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (st, _, _) = call_as(&router, Some(READER), Method::GET, "/metrics", None).await;
    assert_eq!(st, StatusCode::OK);
    // Health stays open.
    assert_eq!(
        call(&router, Method::GET, "/healthz", None).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn unknown_routes_need_a_token_too() {
    let (_, router) = setup_with(tokens());
    let (st, _, _) = call(&router, Method::GET, "/api/nope", None).await;
    assert_eq!(
        st,
        StatusCode::UNAUTHORIZED,
        "nothing is learnt without a token"
    );
    let (st, _, json) = call_as(&router, Some(READER), Method::GET, "/api/nope", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{json}");
}

#[tokio::test]
async fn acknowledgements_and_windows_record_the_tokens_name() {
    let (_, router) = setup_with(tokens());
    let (st, _, json) = call_as(
        &router,
        Some(ADMIN),
        Method::POST,
        "/api/alerts/a1/ack",
        Some(r#"{"comment": "on it"}"#),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{json}");
    assert_eq!(json["ack"]["by"], "ops");
    let (_, _, json) = call_as(
        &router,
        Some(ADMIN),
        Method::POST,
        "/api/maintenance",
        Some(r#"{"streams": ["news"], "end": "2099-01-01T00:00:00Z"}"#),
    )
    .await;
    assert_eq!(json["by"], "ops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_over_a_real_socket() {
    let (fake, _) = setup();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, fake.clone(), tokens(), None, async {
        stopped.await.ok();
    }));
    let client = reqwest::Client::new();
    let add = json!({"id": "sport", "url": "udp://239.0.0.1:1234"});
    let url = format!("{base}/api/streams");
    let st = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(st(client.get(&url).send().await.unwrap()), 401);
    assert_eq!(
        st(client.get(&url).bearer_auth(READER).send().await.unwrap()),
        200
    );
    let post = || client.post(&url).json(&add);
    assert_eq!(st(post().send().await.unwrap()), 401);
    assert_eq!(st(post().bearer_auth(READER).send().await.unwrap()), 403);
    assert_eq!(st(post().bearer_auth(ADMIN).send().await.unwrap()), 201);
    assert_eq!(
        st(client.get(format!("{base}/healthz")).send().await.unwrap()),
        200
    );
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
