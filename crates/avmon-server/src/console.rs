//! The web console: plain HTML, CSS and JavaScript, embedded in the binary (no build step, no
//! network), served at `/` and `/console/{file}`. It reads the same API as any client and
//! follows `/api/events` for live updates; see `docs/console.md`.

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};

use crate::ApiError;

const INDEX: &str = include_str!("../console/index.html");
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../console/app.css"),
    ),
];

fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")],
        body,
    )
        .into_response()
}

pub(crate) async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

pub(crate) async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    ASSETS
        .iter()
        .find(|(name, _, _)| *name == file)
        .map(|(_, ct, body)| page(ct, body))
        .ok_or_else(|| ApiError::NotFound(format!("no console file {file:?}")))
}
