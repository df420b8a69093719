//! Bearer tokens: who may read, who may change.
//!
//! - Each token has a name and a role: [`Role::Read`] may call every `GET`; [`Role::Admin`] may
//!   also call everything that changes state (`POST`, `PATCH`, `PUT`, `DELETE`).
//! - The token goes in `Authorization: Bearer TOKEN`; a `GET` may carry it as `?access_token=TOKEN`
//!   instead, for clients that cannot set headers (a browser's `EventSource`).
//! - No token, or one that matches none: `401` with `WWW-Authenticate: Bearer`. A read token on a
//!   call that changes state: `403`. Both JSON like every error.
//! - Tokens are compared in constant time, every configured token each time.
//! - Open to all: `GET /healthz`, `GET /api/openapi.json`, the console's page and assets (`GET /`,
//!   `GET /console/*`: they hold no data), and `GET /metrics` unless
//!   [`Auth::metrics_need_token`] (Prometheus scrapers usually have no token; a scrape config's
//!   `authorization` section can send one when it is required).
//! - With no tokens configured, everything is open (the service then listens on loopback only).
//!
//! A token never appears in a response, a log line or `Debug` output: [`Secret`] prints `***`.

use std::fmt;
use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::error::error_response;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Every `GET`.
    Read,
    /// Everything.
    Admin,
}

/// A secret string: compared in constant time, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself; only to compare or send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// One API token.
#[derive(Clone, Debug)]
pub struct Token {
    /// Who holds it: shown as `by` on acknowledgements, mutes and windows, and in logs.
    pub name: String,
    pub role: Role,
    pub secret: Secret,
}

/// The API's access rules.
#[derive(Clone, Debug, Default)]
pub struct Auth {
    pub tokens: Vec<Token>,
    /// Whether `GET /metrics` needs a read token (default: open).
    pub metrics_need_token: bool,
}

impl Auth {
    /// No tokens: everything open.
    pub fn open() -> Self {
        Auth::default()
    }

    /// Whether any token is configured (else the API is open to anyone who can connect).
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The token matching `presented`, comparing against every token in constant time.
    fn find(&self, presented: &str) -> Option<&Token> {
        let mut found = None;
        for t in &self.tokens {
            if ct_eq(t.secret.expose().as_bytes(), presented.as_bytes()) {
                found = Some(t);
            }
        }
        found
    }
}

/// Equality whose time depends only on the lengths, not on where the bytes differ.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().max(b.len());
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// Who is calling: the token's name and role (`anonymous`, admin, when no tokens are configured).
/// Handlers read it as an `Extension<Caller>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

/// What a request needs.
fn needs(auth: &Auth, method: &Method, path: &str) -> Option<Role> {
    let read_only = matches!(*method, Method::GET | Method::HEAD);
    match path {
        "/healthz" | "/api/openapi.json" if read_only => None,
        // The console's page and assets hold no data; it signs in with a token for the API.
        "/" if read_only => None,
        _ if read_only && path.starts_with("/console/") => None,
        "/metrics" if read_only && !auth.metrics_need_token => None,
        _ if read_only => Some(Role::Read),
        _ => Some(Role::Admin),
    }
}

fn unauthorized(msg: &str, error: &'static str) -> Response {
    let mut resp = error_response(StatusCode::UNAUTHORIZED, msg.to_string(), vec![msg.into()]);
    let challenge = format!("Bearer realm=\"avmon\", error=\"{error}\"");
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(WWW_AUTHENTICATE, v);
    }
    resp
}

/// The middleware: checks the token, then passes the request on with its [`Caller`].
pub(crate) async fn check(State(auth): State<Arc<Auth>>, mut req: Request, next: Next) -> Response {
    if !auth.enabled() {
        req.extensions_mut().insert(Caller {
            name: "anonymous".into(),
            role: Role::Admin,
        });
        return next.run(req).await;
    }
    let needed = needs(&auth, req.method(), req.uri().path());
    let header = req.headers().get(AUTHORIZATION).map(|v| v.to_str());
    let presented: Option<String> = match header {
        Some(Ok(v)) => match v.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                Some(token.trim().to_string())
            }
            _ => {
                return unauthorized(
                    "the Authorization header must be \"Bearer TOKEN\"",
                    "invalid_request",
                )
            }
        },
        Some(Err(_)) => {
            return unauthorized("the Authorization header is not text", "invalid_request")
        }
        None if matches!(*req.method(), Method::GET | Method::HEAD) => {
            Query::<Vec<(String, String)>>::try_from_uri(req.uri())
                .ok()
                .and_then(|Query(pairs)| {
                    pairs
                        .into_iter()
                        .find(|(k, _)| k == "access_token")
                        .map(|(_, v)| v)
                })
        }
        None => None,
    };
    let caller = match presented.as_deref().map(|p| auth.find(p)) {
        Some(Some(t)) => Some(Caller {
            name: t.name.clone(),
            role: t.role,
        }),
        Some(None) => {
            if needed.is_some() {
                return unauthorized("invalid token", "invalid_token");
            }
            None
        }
        None => None,
    };
    match (needed, &caller) {
        (None, _) => {}
        (Some(_), None) => {
            return unauthorized(
                "this needs a token: Authorization: Bearer TOKEN",
                "invalid_request",
            )
        }
        (Some(role), Some(c)) if c.role < role => {
            let msg = format!(
                "token {:?} may only read; this needs an admin token",
                c.name
            );
            return error_response(StatusCode::FORBIDDEN, msg.clone(), vec![msg]).into_response();
        }
        (Some(_), Some(_)) => {}
    }
    if let Some(c) = caller {
        req.extensions_mut().insert(c);
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_equality_is_equality() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(ct_eq(b"", b""));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
        assert!(!ct_eq(b"abc\0", b"abc"));
        assert!(!ct_eq(b"", b"a"));
    }

    #[test]
    fn secrets_never_print() {
        let t = Token {
            name: "ops".into(),
            role: Role::Admin,
            secret: Secret::new("s3cr3t-value-123"),
        };
        let auth = Auth {
            tokens: vec![t],
            metrics_need_token: false,
        };
        let shown = format!("{auth:?} {auth:#?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("ops"));
    }
}
