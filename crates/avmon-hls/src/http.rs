//! Bounded HTTP GETs: a deadline for the whole transfer and a cap on the body, so a slow-drip or
//! endless response can neither hang a variant's thread nor fill memory.

use std::io::Read;
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use reqwest::StatusCode;
use url::Url;

use crate::manifest::ByteRange;

/// Why a GET failed. Displayed as the `reason` of findings, so each reads as one short phrase.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum FetchError {
    #[error("HTTP {0}")]
    Status(u16),
    #[error("timed out after {0:.1} s")]
    Timeout(f64),
    #[error("larger than {0} bytes")]
    TooLarge(u64),
    /// Connection refused, DNS, TLS, a connection cut mid-body, …
    #[error("{0}")]
    Transport(String),
}

impl FetchError {
    /// The HTTP status, for findings' details.
    pub fn status(&self) -> Option<u16> {
        match self {
            FetchError::Status(s) => Some(*s),
            _ => None,
        }
    }
}

/// A completed GET.
#[derive(Debug)]
pub struct Fetched {
    pub body: Vec<u8>,
    /// The URL after redirects: relative URIs in a playlist resolve against it.
    pub url: Url,
    /// Seconds from sending the request to the last byte.
    pub elapsed_s: f64,
}

#[derive(Clone, Debug)]
pub struct Http {
    client: Client,
}

impl Http {
    pub fn new() -> Result<Self, FetchError> {
        let client = Client::builder()
            .user_agent(concat!("avmon/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| FetchError::Transport(chain(&e)))?;
        Ok(Http { client })
    }

    /// GET `url` (only `range` of it, if given) within `timeout`, refusing bodies over `cap` bytes.
    pub fn get(
        &self,
        url: &Url,
        range: Option<ByteRange>,
        cap: u64,
        timeout: Duration,
    ) -> Result<Fetched, FetchError> {
        let start = Instant::now();
        let timed_out = || FetchError::Timeout(timeout.as_secs_f64());
        let mut req = self.client.get(url.clone()).timeout(timeout);
        if let Some(r) = range {
            let last = r.offset.saturating_add(r.length.max(1) - 1);
            req = req.header(reqwest::header::RANGE, format!("bytes={}-{last}", r.offset));
        }
        let mut resp = req.send().map_err(|e| {
            if e.is_timeout() {
                timed_out()
            } else {
                FetchError::Transport(chain(&e))
            }
        })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(FetchError::Status(status.as_u16()));
        }
        // A server that ignores the Range header sends the whole resource: keep reading up to the
        // range's end and cut it out below.
        let whole = range.is_some() && status != StatusCode::PARTIAL_CONTENT;
        let want = match range {
            Some(r) if whole => r.offset.saturating_add(r.length),
            Some(r) => r.length,
            None => u64::MAX,
        };
        if resp.content_length().is_some_and(|n| n > cap && want > cap) {
            return Err(FetchError::TooLarge(cap));
        }
        let final_url = resp.url().clone();
        let mut body = Vec::with_capacity(resp.content_length().unwrap_or(0).min(cap) as usize);
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = match resp.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Err(timed_out()),
                Err(e) => return Err(FetchError::Transport(chain(&e))),
            };
            body.extend_from_slice(&chunk[..n]);
            if body.len() as u64 > cap {
                return Err(FetchError::TooLarge(cap));
            }
            if body.len() as u64 >= want {
                break;
            }
            if start.elapsed() > timeout {
                return Err(timed_out());
            }
        }
        if let (Some(r), true) = (range, whole) {
            let from = (r.offset as usize).min(body.len());
            let to = (r.offset.saturating_add(r.length) as usize).min(body.len());
            body = body[from..to].to_vec();
        }
        Ok(Fetched {
            body,
            url: final_url,
            elapsed_s: start.elapsed().as_secs_f64(),
        })
    }
}

/// An error and its sources on one line: reqwest's own message ("error sending request") says
/// little without the cause ("Connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        let msg = c.to_string();
        if !s.contains(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        source = c.source();
    }
    s
}
