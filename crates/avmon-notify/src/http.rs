//! What the HTTP channels share: posting a body and judging the answer.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde_json::json;

use crate::channel::Sent;

/// An HTTP client for one notifier: its timeout, no redirects (a webhook that moved is a
/// configuration error to fix, not something to chase with a POST turned GET).
pub(crate) fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("avmon/", env!("CARGO_PKG_VERSION")))
        .build()
        // Only TLS backend initialisation can fail, and rustls with bundled roots does not.
        .expect("an HTTP client with static settings builds")
}

/// `scheme://host[:port]` of `url`, without path, query or credentials (which may be secrets).
pub(crate) fn redact(url: &str) -> String {
    match Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("");
            match u.port() {
                Some(p) => format!("{}://{host}:{p}", u.scheme()),
                None => format!("{}://{host}", u.scheme()),
            }
        }
        Err(_) => "(invalid url)".to_string(),
    }
}

/// Push an error for `path` unless `url` is an `http(s)://` URL with a host.
pub(crate) fn check_url(url: &str, path: &str, errors: &mut Vec<String>) {
    match Url::parse(url) {
        _ if url.is_empty() => errors.push(format!("{path}: is required")),
        // The parser's message never quotes the URL, which may hold a token.
        Err(e) => errors.push(format!("{path}: not a valid URL ({e})")),
        Ok(u) if !matches!(u.scheme(), "http" | "https") => errors.push(format!(
            "{path}: unsupported scheme {:?}; use http:// or https://",
            u.scheme()
        )),
        Ok(u) if !matches!(u.host_str(), Some(h) if !h.is_empty()) => {
            errors.push(format!("{path}: has no host"))
        }
        Ok(_) => {}
    }
}

/// `e` and its causes on one line, without the URL (which may hold a token).
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut s = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// POST `body` as JSON with `headers`; a 2xx is delivered, a transport error, timeout, `408`,
/// `429` or `5xx` is worth retrying (after `Retry-After` seconds, where given), anything else is a
/// rejection. The detail records the status (and the start of an error body).
pub(crate) async fn post(
    client: &reqwest::Client,
    url: &str,
    mut headers: HeaderMap,
    body: Vec<u8>,
) -> Sent {
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let sent = client.post(url).headers(headers).body(body).send().await;
    match sent {
        Ok(resp) => {
            let status = resp.status();
            let after = retry_after(&resp);
            if status.is_success() {
                return Sent::Delivered {
                    detail: json!({"status": status.as_u16()}),
                    group_key: None,
                };
            }
            // The receiver's explanation helps (Slack says `invalid_token`); bounded.
            let text = resp.text().await.unwrap_or_default();
            let text: String = text.chars().take(200).collect();
            let detail = json!({"status": status.as_u16(), "body": text});
            if status.is_server_error()
                || status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::REQUEST_TIMEOUT
            {
                Sent::Retry { detail, after }
            } else {
                Sent::Rejected { detail }
            }
        }
        Err(e) if e.is_builder() => Sent::Rejected {
            detail: json!({"error": format!("cannot build the request (check the url): {}", describe(e))}),
        },
        Err(e) => Sent::Retry {
            detail: json!({"error": describe(e)}),
            after: None,
        },
    }
}

/// A `Retry-After` given in seconds (the HTTP-date form is ignored).
fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let s = resp.headers().get(RETRY_AFTER)?.to_str().ok()?;
    s.trim().parse::<u64>().ok().map(Duration::from_secs)
}
