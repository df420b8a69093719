//! The webhook notifier: POST each event as JSON to a URL, in order, with retries.
//!
//! `notify` clones the event onto a bounded tokio channel with `try_send`; one task per webhook
//! takes events off it one at a time and POSTs them. Transport errors, timeouts, `5xx` and `429`
//! are retried with capped exponential backoff (honouring a `Retry-After` in seconds, within the
//! cap); any other status is a permanent rejection, logged and not retried. Redirects are not
//! followed: a webhook that moved is a configuration error to fix, not something to chase with a
//! POST turned GET.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use avmon_core::{AlertEvent, Transition};
use reqwest::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::{payload, state_of, Notifier, NotifierStats};

/// A webhook receiving alert events (`[[notifiers.webhook]]`, say).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to POST events: an `http://` or `https://` URL. May carry a token in its path or
    /// query; it is never logged.
    pub url: String,
    /// Timeout of one request (connect, send, response), seconds.
    pub timeout_s: f64,
    /// Attempts per event, the first included, before giving up on it.
    pub max_attempts: u32,
    /// Wait before the first retry, seconds; doubles on each further retry.
    pub backoff_initial_s: f64,
    /// Longest wait between retries, seconds.
    pub backoff_max_s: f64,
    /// Events waiting for delivery beyond which new ones are dropped (and counted).
    pub queue_capacity: usize,
    /// Also send `updated` transitions (severity or details changed while raised), with state
    /// `raised`. Off by default: receivers usually want one message per raise and per clear.
    pub send_updates: bool,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            url: String::new(),
            timeout_s: 5.0,
            max_attempts: 6,
            backoff_initial_s: 0.5,
            backoff_max_s: 30.0,
            queue_capacity: 10_000,
            send_updates: false,
        }
    }
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &redact(&self.url))
            .field("timeout_s", &self.timeout_s)
            .field("max_attempts", &self.max_attempts)
            .field("backoff_initial_s", &self.backoff_initial_s)
            .field("backoff_max_s", &self.backoff_max_s)
            .field("queue_capacity", &self.queue_capacity)
            .field("send_updates", &self.send_updates)
            .finish()
    }
}

/// `scheme://host[:port]` of `url`, without path, query or credentials (which may be secrets).
fn redact(url: &str) -> String {
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

impl WebhookConfig {
    /// Push one message per problem onto `errors`, each prefixed with `path` (the config location
    /// of this webhook, e.g. `notifiers.webhook[0]`).
    pub fn validate(&self, path: &str, errors: &mut Vec<String>) {
        match Url::parse(&self.url) {
            _ if self.url.is_empty() => errors.push(format!("{path}.url: is required")),
            Err(e) => errors.push(format!("{path}.url: not a valid URL ({e})")),
            Ok(u) if !matches!(u.scheme(), "http" | "https") => errors.push(format!(
                "{path}.url: unsupported scheme {:?}; use http:// or https://",
                u.scheme()
            )),
            Ok(u) if !matches!(u.host_str(), Some(h) if !h.is_empty()) => {
                errors.push(format!("{path}.url: has no host"))
            }
            Ok(_) => {}
        }
        let positive = |name: &str, v: f64, errors: &mut Vec<String>| {
            if !(v.is_finite() && v > 0.0) {
                errors.push(format!(
                    "{path}.{name}: must be a positive number of seconds, got {v}"
                ));
            }
        };
        positive("timeout_s", self.timeout_s, errors);
        positive("backoff_initial_s", self.backoff_initial_s, errors);
        positive("backoff_max_s", self.backoff_max_s, errors);
        if self.max_attempts == 0 {
            errors.push(format!("{path}.max_attempts: must be at least 1"));
        }
        if self.queue_capacity == 0 {
            errors.push(format!("{path}.queue_capacity: must be at least 1"));
        }
    }

    /// The wait after failed attempt number `attempt` (1-based).
    fn backoff(&self, attempt: u32) -> Duration {
        let initial = self.backoff_initial_s.max(0.0);
        let s =
            (initial * 2f64.powi(attempt.saturating_sub(1).min(62) as i32)).min(self.backoff_max_s);
        secs(s, 0.5)
    }
}

/// `s` seconds as a Duration, or `fallback` where `s` is not a usable duration.
fn secs(s: f64, fallback: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or_else(|_| Duration::from_secs_f64(fallback))
}

/// Counters and drain signalling shared by a webhook handle and its delivery task.
#[derive(Default)]
struct Shared {
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    pending: AtomicU64,
    /// Wakes async flushers when `pending` reaches zero.
    idle: tokio::sync::Notify,
    /// Wakes blocking flushers when `pending` reaches zero.
    idle_lock: Mutex<()>,
    idle_cv: Condvar,
}

impl Shared {
    /// One event left the pipeline (delivered, failed or dropped); counters are already updated.
    fn finish_one(&self) {
        if self.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
            let _guard = self.idle_lock.lock().unwrap_or_else(|p| p.into_inner());
            self.idle_cv.notify_all();
        }
    }
}

/// A running webhook notifier. Dropping it lets the delivery task finish what is queued and end.
pub struct Webhook {
    name: String,
    tx: mpsc::Sender<AlertEvent>,
    send_updates: bool,
    shared: Arc<Shared>,
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("name", &self.name)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Webhook {
    /// Start the delivery task on `rt` and return the handle to notify through. Call
    /// [`WebhookConfig::validate`] first: an invalid config is not refused here, its events fail.
    pub fn spawn(cfg: WebhookConfig, rt: &tokio::runtime::Handle) -> Webhook {
        let name = format!("webhook {}", redact(&cfg.url));
        let client = reqwest::Client::builder()
            .timeout(secs(cfg.timeout_s, 5.0))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("avmon/", env!("CARGO_PKG_VERSION")))
            .build()
            // Only TLS backend initialisation can fail, and rustls with bundled roots does not.
            .expect("an HTTP client with static settings builds");
        let (tx, rx) = mpsc::channel(cfg.queue_capacity.max(1));
        let shared = Arc::new(Shared::default());
        let webhook = Webhook {
            name: name.clone(),
            tx,
            send_updates: cfg.send_updates,
            shared: shared.clone(),
        };
        rt.spawn(deliver_all(rx, client, cfg, name, shared));
        webhook
    }

    /// Events the receiver accepted.
    pub fn delivered(&self) -> u64 {
        self.shared.delivered.load(Ordering::SeqCst)
    }

    /// Events given up on (rejected, or failing after every attempt).
    pub fn failed(&self) -> u64 {
        self.shared.failed.load(Ordering::SeqCst)
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::SeqCst)
    }

    /// Events queued or being delivered.
    pub fn pending(&self) -> u64 {
        self.shared.pending.load(Ordering::SeqCst)
    }

    /// Wait, at most `timeout`, until nothing is queued or being delivered. Returns whether that
    /// happened. The async twin of [`Notifier::flush`].
    pub async fn flush_async(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let idle = self.shared.idle.notified();
            tokio::pin!(idle);
            // Register for the wake-up before looking, so one between the two is not lost.
            idle.as_mut().enable();
            if self.pending() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.pending() == 0;
            }
        }
    }
}

impl Notifier for Webhook {
    fn name(&self) -> &str {
        &self.name
    }

    fn notify(&self, ev: &AlertEvent) {
        if ev.transition == Transition::Updated && !self.send_updates {
            return;
        }
        self.shared.pending.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = self.tx.try_send(ev.clone()) {
            let dropped = self.shared.dropped.fetch_add(1, Ordering::SeqCst) + 1;
            self.shared.finish_one();
            // A flood of drops would flood the log too: say it on the 1st, 2nd, 4th, 8th, ...
            if dropped.is_power_of_two() {
                let why = match e {
                    mpsc::error::TrySendError::Full(_) => "queue full",
                    mpsc::error::TrySendError::Closed(_) => "delivery task stopped",
                };
                tracing::warn!(
                    notifier = %self.name, alert_id = %ev.alert.id, dropped,
                    "dropping alert notification: {why}"
                );
            }
        }
    }

    fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut guard = self
            .shared
            .idle_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        while self.pending() > 0 {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            guard = match self.shared.idle_cv.wait_timeout(guard, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        true
    }

    fn stats(&self) -> NotifierStats {
        NotifierStats {
            delivered: self.delivered(),
            failed: self.failed(),
            dropped: self.dropped(),
            pending: self.pending(),
        }
    }
}

async fn deliver_all(
    mut rx: mpsc::Receiver<AlertEvent>,
    client: reqwest::Client,
    cfg: WebhookConfig,
    name: String,
    shared: Arc<Shared>,
) {
    while let Some(ev) = rx.recv().await {
        let counter = if deliver(&client, &cfg, &name, &ev).await {
            &shared.delivered
        } else {
            &shared.failed
        };
        counter.fetch_add(1, Ordering::SeqCst);
        shared.finish_one();
    }
}

/// 64-bit FNV-1a: a stable content hash for idempotency keys (not for security).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The `Idempotency-Key` of an event: `{alert_id}:{state}` for raises and clears. Updates all
/// report state `raised`, so they get a key of their own, derived from their content, or a
/// receiver honouring the key would discard every update as a repeat of the raise.
fn idempotency_key(ev: &AlertEvent, body: &[u8]) -> String {
    match ev.transition {
        Transition::Updated => format!("{}:updated:{:016x}", ev.alert.id, fnv1a(body)),
        Transition::Raised | Transition::Cleared => format!("{}:{}", ev.alert.id, state_of(ev)),
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

/// Deliver one event, retrying as configured. Returns whether the receiver accepted it.
async fn deliver(
    client: &reqwest::Client,
    cfg: &WebhookConfig,
    name: &str,
    ev: &AlertEvent,
) -> bool {
    let body = serde_json::to_vec(&payload(ev)).unwrap_or_default();
    let key = idempotency_key(ev, &body);
    let alert_id = &ev.alert.id;
    let attempts = cfg.max_attempts.max(1);
    for attempt in 1..=attempts {
        let sent = client
            .post(&cfg.url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header("Idempotency-Key", &key)
            .body(body.clone())
            .send()
            .await;
        let mut wait = cfg.backoff(attempt);
        let why = match sent {
            Ok(resp) if resp.status().is_success() => {
                tracing::debug!(notifier = %name, %alert_id, attempt, "webhook delivered");
                return true;
            }
            Ok(resp)
                if resp.status().is_server_error()
                    || resp.status() == StatusCode::TOO_MANY_REQUESTS =>
            {
                if let Some(after) = retry_after(&resp) {
                    wait = wait.max(after).min(secs(cfg.backoff_max_s, 30.0));
                }
                format!("HTTP {}", resp.status())
            }
            Ok(resp) => {
                tracing::warn!(
                    notifier = %name, %alert_id, status = %resp.status(),
                    "webhook rejected the alert notification; not retrying"
                );
                return false;
            }
            Err(e) if e.is_builder() => {
                tracing::warn!(
                    notifier = %name, %alert_id,
                    "cannot build the webhook request (check the url): {}", describe(e)
                );
                return false;
            }
            Err(e) => describe(e),
        };
        if attempt == attempts {
            tracing::warn!(
                notifier = %name, %alert_id, attempts,
                "giving up on alert notification: {why}"
            );
            return false;
        }
        tracing::debug!(
            notifier = %name, %alert_id, attempt, wait_s = wait.as_secs_f64(),
            "webhook attempt failed, retrying: {why}"
        );
        tokio::time::sleep(wait).await;
    }
    false
}

/// A `Retry-After` given in seconds (the HTTP-date form is ignored).
fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let s = resp.headers().get(RETRY_AFTER)?.to_str().ok()?;
    s.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(cfg: &WebhookConfig) -> Vec<String> {
        let mut e = Vec::new();
        cfg.validate("notifiers.webhook[0]", &mut e);
        e
    }

    #[test]
    fn defaults_and_unknown_fields() {
        let cfg: WebhookConfig =
            serde_json::from_value(serde_json::json!({"url": "https://h.example/x"})).unwrap();
        assert_eq!(cfg.timeout_s, 5.0);
        assert_eq!(cfg.max_attempts, 6);
        assert_eq!(cfg.backoff_initial_s, 0.5);
        assert_eq!(cfg.backoff_max_s, 30.0);
        assert_eq!(cfg.queue_capacity, 10_000);
        assert!(!cfg.send_updates);
        assert!(errors(&cfg).is_empty());
        let bad = serde_json::from_value::<WebhookConfig>(serde_json::json!({"uri": "x"}));
        assert!(bad.unwrap_err().to_string().contains("unknown field `uri`"));
    }

    #[test]
    fn validation_gathers_every_problem_with_its_path() {
        let cfg = WebhookConfig {
            url: "ftp://h.example/x".into(),
            timeout_s: 0.0,
            max_attempts: 0,
            backoff_initial_s: -1.0,
            backoff_max_s: f64::NAN,
            queue_capacity: 0,
            send_updates: false,
        };
        let e = errors(&cfg);
        assert_eq!(e.len(), 6, "{e:#?}");
        assert!(e[0].starts_with("notifiers.webhook[0].url: unsupported scheme \"ftp\""));
        assert!(e
            .iter()
            .any(|m| m.starts_with("notifiers.webhook[0].timeout_s:")));
        assert!(e
            .iter()
            .any(|m| m.starts_with("notifiers.webhook[0].queue_capacity:")));
        let missing = errors(&WebhookConfig::default());
        assert_eq!(missing, vec!["notifiers.webhook[0].url: is required"]);
        let garbage = errors(&WebhookConfig {
            url: "not a url".into(),
            ..Default::default()
        });
        assert!(garbage[0].contains("not a valid URL"), "{garbage:?}");
    }

    #[test]
    fn secrets_stay_out_of_names_and_debug() {
        let cfg = WebhookConfig {
            url: "https://user:pw@hooks.example.com:8443/T0/SECRET?token=SECRET".into(),
            ..Default::default()
        };
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("SECRET") && !dbg.contains("pw"), "{dbg}");
        assert_eq!(redact(&cfg.url), "https://hooks.example.com:8443");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let cfg = WebhookConfig {
            backoff_initial_s: 0.5,
            backoff_max_s: 3.0,
            ..Default::default()
        };
        let waits: Vec<f64> = (1..=5).map(|a| cfg.backoff(a).as_secs_f64()).collect();
        assert_eq!(waits, vec![0.5, 1.0, 2.0, 3.0, 3.0]);
        assert_eq!(cfg.backoff(u32::MAX).as_secs_f64(), 3.0);
    }
}
