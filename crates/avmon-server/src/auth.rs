//! Bearer tokens: who may read, who may change.
//!
//! - Each token has a name and a role: [`Role::Read`] may call every `GET`; [`Role::Admin`] may
//!   also call everything that changes state (`POST`, `PATCH`, `PUT`, `DELETE`).
//! - The token goes in `Authorization: Bearer TOKEN`; a `GET` may carry it as `?access_token=TOKEN`
//!   instead, for clients that cannot set headers (a browser's `EventSource`).
//! - No token, or one that matches none: `401` with `WWW-Authenticate: Bearer`. A read token on a
//!   call that changes state: `403`. Both JSON like every error.
//! - Only the tokens' SHA-256 digests are kept ([`Digest`]): the config may give a token as its
//!   digest (`token_sha256`), so the file never holds it. A presented token is hashed and
//!   compared in constant time with every configured digest.
//! - An address that presents [`MAX_FAILURES`] wrong tokens within [`FAILURE_WINDOW`] gets `429`
//!   with `Retry-After` for every request, right token or wrong, until the window has passed:
//!   guessing is throttled, and a guess that is right is not told apart.
//! - Open to all: `GET /healthz`, `GET /api/openapi.json`, the console's page and assets (`GET /`,
//!   `GET /console/*`: they hold no data), and `GET /metrics` unless
//!   [`Auth::metrics_need_token`] (Prometheus scrapers usually have no token; a scrape config's
//!   `authorization` section can send one when it is required).
//! - With no tokens configured, everything is open (the service then listens on loopback only).
//!
//! A token never appears in a response, a log line or `Debug` output: [`Secret`] prints `***`.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::header::{AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::error_response;

/// Wrong tokens an address may present within [`FAILURE_WINDOW`] before it is refused.
pub const MAX_FAILURES: usize = 10;
/// How far back [`MAX_FAILURES`] counts.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// The most addresses whose failures are remembered (the oldest are forgotten first).
const MAX_ADDRESSES: usize = 10_000;

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

/// A token's SHA-256 digest: all that is kept of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of a token.
    pub fn of(token: &str) -> Self {
        Digest(Sha256::digest(token.as_bytes()).into())
    }

    /// A digest written as 64 hexadecimal digits (`printf %s "$TOKEN" | sha256sum`).
    pub fn from_hex(hex: &str) -> Option<Self> {
        let hex = hex.trim();
        if hex.len() != 64 || !hex.is_ascii() {
            return None;
        }
        let mut d = [0u8; 32];
        for (i, b) in d.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Digest(d))
    }
}

impl fmt::Debug for Digest {
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
    pub digest: Digest,
}

impl Token {
    /// A token given as itself.
    pub fn new(name: impl Into<String>, role: Role, token: &Secret) -> Self {
        Token {
            name: name.into(),
            role,
            digest: Digest::of(token.expose()),
        }
    }
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
        let presented = Digest::of(presented);
        let mut found = None;
        for t in &self.tokens {
            if ct_eq(&t.digest.0, &presented.0) {
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

/// Wrong tokens presented, by address: when each was.
#[derive(Default)]
pub(crate) struct Failures(Mutex<HashMap<IpAddr, VecDeque<Instant>>>);

impl Failures {
    /// How long `addr` must wait before it is heard again, if it has failed too often.
    fn blocked(&self, addr: IpAddr, now: Instant) -> Option<Duration> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut recent = map
            .get(&addr)?
            .iter()
            .filter(|t| now.duration_since(**t) < FAILURE_WINDOW);
        let first = *recent.next()?;
        (1 + recent.count() >= MAX_FAILURES)
            .then(|| FAILURE_WINDOW.saturating_sub(now.duration_since(first)))
    }

    fn record(&self, addr: IpAddr, now: Instant) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ADDRESSES && !map.contains_key(&addr) {
            map.retain(|_, t| {
                t.back()
                    .is_some_and(|t| now.duration_since(*t) < FAILURE_WINDOW)
            });
            if map.len() >= MAX_ADDRESSES {
                let oldest = map
                    .iter()
                    .min_by_key(|(_, t)| t.back().copied())
                    .map(|(a, _)| *a);
                oldest.map(|a| map.remove(&a));
            }
        }
        let times = map.entry(addr).or_default();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= FAILURE_WINDOW)
        {
            times.pop_front();
        }
        times.push_back(now);
        if times.len() > MAX_FAILURES {
            times.pop_front();
        }
    }
}

/// What the middleware holds: the rules, and who has been failing them.
pub(crate) struct Guard {
    pub(crate) auth: Auth,
    pub(crate) failures: Failures,
}

/// The middleware: checks the token, then passes the request on with its [`Caller`].
pub(crate) async fn check(
    State(guard): State<Arc<Guard>>,
    mut req: Request,
    next: Next,
) -> Response {
    let auth = &guard.auth;
    if !auth.enabled() {
        req.extensions_mut().insert(Caller {
            name: "anonymous".into(),
            role: Role::Admin,
        });
        return next.run(req).await;
    }
    let needed = needs(auth, req.method(), req.uri().path());
    // Without the peer's address (a router served without it, as in tests) nothing is counted.
    let addr = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let now = Instant::now();
    if let Some(wait) = addr.and_then(|a| guard.failures.blocked(a, now)) {
        let secs = wait.as_secs().max(1);
        let msg = format!("too many wrong tokens from this address: try again in {secs} s");
        let mut resp = error_response(StatusCode::TOO_MANY_REQUESTS, msg.clone(), vec![msg]);
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
        return resp;
    }
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
                if let Some(a) = addr {
                    guard.failures.record(a, now);
                    tracing::warn!(address = %a, "API: a wrong token was presented");
                }
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
    fn digests_read_as_sha256sum_writes_them() {
        // `printf %s abc | sha256sum`
        let hex = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(Digest::from_hex(hex), Some(Digest::of("abc")));
        assert_eq!(
            Digest::from_hex(&hex.to_uppercase()),
            Some(Digest::of("abc"))
        );
        assert_eq!(Digest::from_hex(&hex[1..]), None);
        assert_eq!(Digest::from_hex(&format!("{}zz", &hex[2..])), None);
    }

    #[test]
    fn an_address_that_keeps_failing_waits_out_the_window() {
        let f = Failures::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES {
            assert_eq!(f.blocked(a, t0), None, "after {i} failures");
            f.record(a, t0 + Duration::from_secs(i as u64));
        }
        let at = t0 + Duration::from_secs(MAX_FAILURES as u64);
        let wait = f.blocked(a, at).expect("blocked");
        assert_eq!(
            wait,
            FAILURE_WINDOW - Duration::from_secs(MAX_FAILURES as u64)
        );
        assert_eq!(f.blocked(b, at), None, "per address");
        assert_eq!(
            f.blocked(a, t0 + FAILURE_WINDOW),
            None,
            "the first failure aged out"
        );
    }

    #[test]
    fn secrets_never_print() {
        let t = Token::new("ops", Role::Admin, &Secret::new("s3cr3t-value-123"));
        let auth = Auth {
            tokens: vec![t],
            metrics_need_token: false,
        };
        let shown = format!("{auth:?} {auth:#?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        let hex: String = Digest::of("s3cr3t-value-123")
            .0
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(!shown.contains(&hex[..8]), "not even its digest: {shown}");
        assert!(shown.contains("ops"));
    }
}
