//! The API's JSON bodies, fuzzed through the real router: seeds from `fuzz/corpus/api_bodies`
//! changed at random ([`avmon_core::mutate`]), sent to every endpoint that takes a body. Each
//! answer is a success or a client error that says what is wrong: never a panic, never a 5xx.
//! `AVMON_FUZZ_SECS=N` runs for N seconds instead.

mod common;

use std::path::Path;

use avmon_core::mutate;
use axum::body::Body;
use axum::http::{header, Method, Request};
use http_body_util::BodyExt;
use tower::ServiceExt;

#[test]
fn every_body_is_taken_or_refused_with_a_reason() {
    let seeds =
        mutate::seeds(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/api_bodies"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (_fake, router) = common::setup();
    let endpoints = [
        (Method::POST, "/api/streams"),
        (Method::PATCH, "/api/streams/news"),
        (Method::POST, "/api/streams/news/mute"),
        (Method::POST, "/api/alerts/a1/ack"),
        (Method::POST, "/api/maintenance"),
    ];
    let mut answers = std::collections::BTreeMap::<u16, usize>::new();
    let mut i = 0;
    let n = mutate::run(&seeds, 50_000, |input| {
        let (method, uri) = &endpoints[i % endpoints.len()];
        i += 1;
        let req = Request::builder()
            .method(method.clone())
            .uri(*uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(input.to_vec()))
            .unwrap();
        let (status, body) = rt.block_on(async {
            let resp = router.clone().oneshot(req).await.unwrap();
            let status = resp.status();
            (status, resp.into_body().collect().await.unwrap().to_bytes())
        });
        *answers.entry(status.as_u16()).or_default() += 1;
        let text = String::from_utf8_lossy(input);
        assert!(
            status.is_success() || status.is_client_error(),
            "{method} {uri} answered {status} to {text:?}"
        );
        if status.is_client_error() {
            let doc: serde_json::Value = serde_json::from_slice(&body)
                .unwrap_or_else(|_| panic!("{method} {uri}: a {status} that is not JSON"));
            assert!(
                doc["error"].as_str().is_some_and(|e| !e.trim().is_empty()),
                "{method} {uri}: a {status} without a reason: {doc} for {text:?}"
            );
        }
    });
    eprintln!("API bodies: {n} requests, answers by status {answers:?}");
    assert!(
        answers.contains_key(&400) && answers.keys().any(|s| *s < 300),
        "both taken and refused bodies: {answers:?}"
    );
}
