//! The OpenAPI document matches the real API: the same routes and methods as the router serves,
//! and every answer of every endpoint valid against the document's schema for its status.

mod common;

use std::collections::BTreeSet;

use avmon_server::{OPENAPI, ROUTES};
use axum::http::{Method, StatusCode};
use common::*;
use serde_json::{json, Value};

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

fn doc() -> Value {
    serde_json::from_str(OPENAPI).expect("the document is JSON")
}

fn concrete(route: &str) -> String {
    let id = if route.starts_with("/api/alerts") {
        "a1"
    } else if route.starts_with("/api/maintenance") {
        "w0"
    } else {
        "news"
    };
    route.replace("{id}", id)
}

#[tokio::test]
async fn the_document_lists_exactly_the_routes_the_router_serves() {
    let doc = doc();
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| METHODS.contains(&k.to_uppercase().as_str()))
                .map(move |m| (path.clone(), m.to_uppercase()))
        })
        .collect();
    let table: BTreeSet<(String, String)> = ROUTES
        .iter()
        .flat_map(|(p, ms)| ms.iter().map(move |m| (p.to_string(), m.to_string())))
        .collect();
    assert_eq!(documented, table, "the document and the route table differ");

    // The router itself: every method of the table is routed, every other one is 405.
    let (_, router) = setup();
    for (route, methods) in ROUTES {
        for m in METHODS {
            let (st, _, body) = call(&router, m.parse().unwrap(), &concrete(route), None).await;
            let routed = st != StatusCode::METHOD_NOT_ALLOWED
                && !body["error"].as_str().unwrap_or("").starts_with("no route");
            assert_eq!(routed, methods.contains(&m), "{m} {route}: {st} {body}");
        }
    }
    // And nothing else under /api answers.
    for path in [
        "/api",
        "/api/streams/news/nope",
        "/api/alerts/a1/nack",
        "/api/openapi.yaml",
    ] {
        let (st, _, _) = call(&router, Method::GET, path, None).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{path}");
    }
}

/// The schema of the answer `status` of `method path`, standing alone (with the components).
fn response_schema(doc: &Value, path: &str, method: &str, status: u16) -> Option<Value> {
    let op = &doc["paths"][path][method.to_lowercase()];
    assert!(op.is_object(), "{method} {path} is not documented");
    let mut resp = op["responses"][status.to_string()].clone();
    assert!(
        resp.is_object(),
        "{method} {path} → {status} is not documented"
    );
    if let Some(r) = resp["$ref"].as_str() {
        let name = r.rsplit('/').next().unwrap();
        resp = doc["components"]["responses"][name].clone();
    }
    let schema = resp["content"]["application/json"]["schema"].clone();
    (!schema.is_null()).then(|| {
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": doc["components"],
            "allOf": [schema],
        })
    })
}

/// (route, method, uri, body, token)
type Case = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
);

#[tokio::test]
async fn every_answer_matches_the_documents_schema() {
    let doc = doc();
    // (route, method, uri, body, token): each operation, and its errors.
    let cases: Vec<Case> = vec![
        ("/api/streams", "GET", "/api/streams", None, Some(READER)),
        ("/api/streams", "GET", "/api/streams", None, None),
        (
            "/api/streams",
            "POST",
            "/api/streams",
            Some(r#"{"id": "sport", "url": "udp://239.0.0.1:1"}"#),
            Some(ADMIN),
        ),
        (
            "/api/streams",
            "POST",
            "/api/streams",
            Some(r#"{"id": "news", "url": "udp://239.0.0.1:1"}"#),
            Some(ADMIN),
        ),
        (
            "/api/streams",
            "POST",
            "/api/streams",
            Some(r#"{"id": "a b"}"#),
            Some(ADMIN),
        ),
        (
            "/api/streams",
            "POST",
            "/api/streams",
            Some("{}"),
            Some(READER),
        ),
        (
            "/api/streams/{id}",
            "GET",
            "/api/streams/news",
            None,
            Some(READER),
        ),
        (
            "/api/streams/{id}",
            "GET",
            "/api/streams/nope",
            None,
            Some(READER),
        ),
        (
            "/api/streams/{id}",
            "PATCH",
            "/api/streams/news",
            Some(r#"{"tier": "transport"}"#),
            Some(ADMIN),
        ),
        (
            "/api/streams/{id}",
            "PATCH",
            "/api/streams/news",
            Some(r#"{"tier": 1}"#),
            Some(ADMIN),
        ),
        (
            "/api/streams/{id}",
            "PATCH",
            "/api/streams/nope",
            Some(r#"{"tier": "full"}"#),
            Some(ADMIN),
        ),
        (
            "/api/streams/{id}/mute",
            "POST",
            "/api/streams/news/mute",
            Some(r#"{"until": "2099-01-01T00:00:00Z", "comment": "x"}"#),
            Some(ADMIN),
        ),
        (
            "/api/streams/{id}/mute",
            "POST",
            "/api/streams/news/mute",
            Some(r#"{"until": 0}"#),
            Some(ADMIN),
        ),
        (
            "/api/streams/{id}/mute",
            "POST",
            "/api/streams/nope/mute",
            None,
            Some(ADMIN),
        ),
        ("/api/streams", "GET", "/api/streams", None, Some(READER)), // now muted
        (
            "/api/streams/{id}/mute",
            "DELETE",
            "/api/streams/news/mute",
            None,
            Some(ADMIN),
        ),
        (
            "/api/streams/{id}/mute",
            "DELETE",
            "/api/streams/nope/mute",
            None,
            Some(ADMIN),
        ),
        (
            "/api/streams/{id}/metrics",
            "GET",
            "/api/streams/news/metrics",
            None,
            Some(READER),
        ),
        (
            "/api/streams/{id}/metrics",
            "GET",
            "/api/streams/news/metrics?limit=x",
            None,
            Some(READER),
        ),
        (
            "/api/streams/{id}/metrics",
            "GET",
            "/api/streams/nope/metrics",
            None,
            Some(READER),
        ),
        (
            "/api/alerts",
            "GET",
            "/api/alerts?severity=major",
            None,
            Some(READER),
        ),
        (
            "/api/alerts",
            "GET",
            "/api/alerts?state=x",
            None,
            Some(READER),
        ),
        (
            "/api/alerts/{id}/ack",
            "POST",
            "/api/alerts/a1/ack",
            Some(r#"{"comment": "ok"}"#),
            Some(ADMIN),
        ),
        (
            "/api/alerts/{id}/ack",
            "POST",
            "/api/alerts/a1/ack",
            None,
            Some(ADMIN),
        ),
        (
            "/api/alerts/{id}/ack",
            "POST",
            "/api/alerts/zz/ack",
            None,
            Some(ADMIN),
        ),
        (
            "/api/alerts/{id}/ack",
            "POST",
            "/api/alerts/a1/ack",
            Some("[]"),
            Some(ADMIN),
        ),
        (
            "/api/alerts/{id}",
            "GET",
            "/api/alerts/a1",
            None,
            Some(READER),
        ),
        (
            "/api/alerts/{id}",
            "GET",
            "/api/alerts/zz",
            None,
            Some(READER),
        ),
        ("/api/cluster", "GET", "/api/cluster", None, Some(READER)),
        ("/api/alerts", "GET", "/api/alerts", None, Some(READER)),
        (
            "/api/maintenance",
            "POST",
            "/api/maintenance",
            Some(r#"{"streams": ["news-*"], "end": "2099-01-01T00:00:00Z"}"#),
            Some(ADMIN),
        ),
        (
            "/api/maintenance",
            "POST",
            "/api/maintenance",
            Some(r#"{"streams": []}"#),
            Some(ADMIN),
        ),
        (
            "/api/maintenance",
            "GET",
            "/api/maintenance",
            None,
            Some(READER),
        ),
        (
            "/api/maintenance/{id}",
            "DELETE",
            "/api/maintenance/w1",
            None,
            Some(ADMIN),
        ),
        (
            "/api/maintenance/{id}",
            "DELETE",
            "/api/maintenance/w1",
            None,
            Some(ADMIN),
        ),
        (
            "/api/maintenance/{id}",
            "DELETE",
            "/api/maintenance/config-0",
            None,
            Some(ADMIN),
        ),
        (
            "/api/maintenance/{id}",
            "DELETE",
            "/api/maintenance/config-0",
            None,
            Some(READER),
        ),
        (
            "/api/streams/{id}",
            "DELETE",
            "/api/streams/news",
            None,
            Some(ADMIN),
        ),
        (
            "/api/streams/{id}",
            "DELETE",
            "/api/streams/news",
            None,
            Some(ADMIN),
        ),
        (
            "/api/streams/{id}/thumbnail.jpg",
            "GET",
            "/api/streams/news/thumbnail.jpg",
            None,
            Some(READER),
        ),
        (
            "/api/streams/{id}/thumbnail.jpg",
            "GET",
            "/api/streams/nope/thumbnail.jpg",
            None,
            Some(READER),
        ),
        (
            "/api/alerts/{id}/snapshot.jpg",
            "GET",
            "/api/alerts/a1/snapshot.jpg",
            None,
            Some(READER),
        ),
        (
            "/api/alerts/{id}/snapshot.jpg",
            "GET",
            "/api/alerts/a2/snapshot.jpg",
            None,
            None,
        ),
        (
            "/api/alerts/{id}/clip.ts",
            "GET",
            "/api/alerts/a2/clip.ts",
            None,
            Some(READER),
        ),
        ("/api/events", "GET", "/api/events", None, Some(READER)),
        ("/api/openapi.json", "GET", "/api/openapi.json", None, None),
        ("/metrics", "GET", "/metrics", None, None),
        ("/healthz", "GET", "/healthz", None, None),
    ];
    let (fake, router) = setup_with(tokens());
    let mut covered = BTreeSet::new();
    let mut statuses = BTreeSet::new();
    for (route, method, uri, body, token) in cases {
        if uri == "/api/streams/news/mute" && method == "DELETE" {
            // The muted stream's status was checked by the GET before.
            assert!(fake.mutes.lock().unwrap().contains_key("news"));
        }
        let (st, json) = {
            let (st, _, json) = call_as(&router, token, method.parse().unwrap(), uri, body).await;
            (st.as_u16(), json)
        };
        covered.insert((route.to_string(), method.to_string()));
        statuses.insert(st);
        let Some(schema) = response_schema(&doc, route, method, st) else {
            continue; // 204, or not JSON (the Prometheus text)
        };
        let validator = jsonschema::draft202012::new(&schema)
            .unwrap_or_else(|e| panic!("{method} {route} → {st}: bad schema: {e}"));
        let problems: Vec<String> = validator
            .iter_errors(&json)
            .map(|e| format!("{} at {}", e, e.instance_path))
            .collect();
        assert!(
            problems.is_empty(),
            "{method} {uri} → {st}: {problems:#?}\n{json:#}"
        );
    }
    let all: BTreeSet<(String, String)> = ROUTES
        .iter()
        .flat_map(|(p, ms)| ms.iter().map(move |m| (p.to_string(), m.to_string())))
        .collect();
    assert_eq!(covered, all, "every operation was called");
    for want in [200, 201, 204, 400, 401, 403, 404, 409] {
        assert!(
            statuses.contains(&want),
            "no case answered {want}: {statuses:?}"
        );
    }
}

#[test]
fn the_schemas_refuse_what_the_api_never_sends() {
    // The schemas are strict (no unknown fields), so a field the API added without documenting
    // it fails the test above.
    let doc = doc();
    let schema = response_schema(&doc, "/api/alerts/{id}", "GET", 200).unwrap();
    let v = jsonschema::draft202012::new(&schema).unwrap();
    let mut a = serde_json::to_value(avmon_core::AlertRecord {
        alert: alert("a1", "news"),
        ack: None,
        suppressed: Some(avmon_core::Suppressed::Muted),
    })
    .unwrap();
    assert!(v.is_valid(&a), "{a}");
    a["surprise"] = json!(1);
    assert!(!v.is_valid(&a));
    a.as_object_mut().unwrap().remove("surprise");
    a["suppressed"] = json!("sleeping");
    assert!(!v.is_valid(&a));
}
