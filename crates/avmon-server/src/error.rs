//! The API's errors and their JSON form.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// Why an API request failed. Every variant answers JSON
/// `{"error": "one line", "errors": ["each problem", ...]}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed or invalid; one message per problem, each naming what to fix
    /// (`url: unsupported scheme "foo"`).
    #[error("bad request: {}", .0.join("; "))]
    BadRequest(Vec<String>),
    /// 404: no such stream (or route).
    #[error("not found: {0}")]
    NotFound(String),
    /// 409: the request conflicts with current state (a stream id already in use).
    #[error("conflict: {0}")]
    Conflict(String),
    /// 500: a failure that is not the client's. The detail is logged, never sent: it may name
    /// paths, hosts or SQL.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A 400 with a single problem.
    pub fn bad_request(msg: impl Into<String>) -> Self {
        ApiError::BadRequest(vec![msg.into()])
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The JSON error body every failure uses.
pub(crate) fn error_response(status: StatusCode, error: String, errors: Vec<String>) -> Response {
    (status, Json(json!({"error": error, "errors": errors}))).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match self {
            ApiError::BadRequest(errors) => {
                let error = if errors.is_empty() {
                    "bad request".to_string()
                } else {
                    errors.join("; ")
                };
                error_response(status, error, errors)
            }
            ApiError::NotFound(msg) | ApiError::Conflict(msg) => {
                error_response(status, msg.clone(), vec![msg])
            }
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error serving an API request");
                let msg = "internal error; see the server log".to_string();
                error_response(status, msg.clone(), vec![msg])
            }
        }
    }
}
