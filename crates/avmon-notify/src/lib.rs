//! Alert delivery: the [`Notifier`] trait and [`OutboxNotifier`], which delivers through one of
//! four channels: a signed webhook, Slack, PagerDuty Events API v2, or a command action.
//!
//! # Contract
//!
//! - [`Notifier::notify`] **never blocks on the network**. It is called on the service's hub
//!   thread (never on a decode thread); it filters the event, writes it to the store's outbox (a
//!   local SQLite write, or the cluster's PostgreSQL) and wakes the notifier's delivery task. A
//!   slow or dead receiver cannot slow detection.
//! - **At least once.** The outbox row is committed before delivery is attempted, so it survives
//!   a crash or a restart: at start, a notifier delivers its pending rows. Transient failures
//!   (transport errors, timeouts, `5xx`, `408`, `429`, a command's non-zero exit or timeout) are
//!   retried with capped exponential backoff and jitter, without a limit on attempts (unless
//!   `max_attempts` is set) until the row is older than `max_age_s` (24 h by default): a receiver
//!   down for an hour gets everything once it is back. Permanent rejections (other `4xx`) are
//!   logged and marked failed.
//! - **In order** per notifier: one delivery task takes the oldest pending rows; a clear never
//!   overtakes its raise.
//! - **In a cluster** (nodes sharing a PostgreSQL outbox, [`Claim::Cluster`]) every node runs
//!   the same notifiers; their tasks claim rows, so each row is delivered by one node, whichever
//!   is alive, one node at a time per notifier (in order). A dead node's claims expire after the
//!   claim TTL ([`CLAIM_TTL`]) and another node delivers its rows. The service may write an
//!   alert and its outbox rows in one (fenced) transaction: [`Notifier::outbox_entry`] says what
//!   to write, [`Notifier::queued`] wakes the delivery.
//! - **Idempotency:** every event has the key `{alert_id}:{raised|cleared}` (updates, when sent,
//!   `{alert_id}:updated:{hash}`), stored with it (a replay of the same event is not queued
//!   twice) and sent as the `Idempotency-Key` header and the `idempotency_key` field.
//! - **Filters** (streams, kinds, with `*` globs; minimum severity) apply to raises and updates;
//!   a clear is sent exactly when this notifier was told about the alert.
//! - **Grouping:** with `group_window_s > 0` the first pending event opens a window; every event
//!   queued for the notifier before it closes (up to `group_max`) is sent as one message (see
//!   [`Batch`]). Batches are formed from the stored rows by their creation time, so a retry after
//!   a restart sends the same batch under the same key.
//! - Secrets (HMAC secret, routing keys, Slack URL paths) never appear in [`Notifier::name`],
//!   logs or `Debug` output ([`Secret`]).

use std::time::Duration;

use avmon_core::{round_ms, AlertEvent, AlertState, Transition};
use avmon_store::OutboxEntry;
use chrono::SecondsFormat;
use serde_json::json;

mod channel;
mod command;
mod delivery;
mod filter;
mod http;
mod pagerduty;
mod secret;
mod slack;
mod webhook;

pub use channel::Batch;
pub use command::CommandConfig;
pub use delivery::{
    ChannelConfig, Claim, DeliveryConfig, NotifierConfig, OutboxNotifier, CLAIM_TTL, DELIVERY_KEYS,
    POLL,
};
pub use filter::glob_match;
pub use pagerduty::PagerDutyConfig;
pub use secret::Secret;
pub use slack::SlackConfig;
pub use webhook::{sign, signing_key, WebhookConfig};

/// Counters of one notifier, for `/metrics` and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NotifierStats {
    /// Events the receiver accepted.
    pub delivered: u64,
    /// Events given up on: rejected by the receiver, or past their attempts or maximum age.
    pub failed: u64,
    /// Events that could not be stored in the outbox (a store error), so were not sent.
    pub dropped: u64,
    /// Events in the outbox, not yet delivered.
    pub pending: u64,
}

/// Something that delivers alert events somewhere.
pub trait Notifier: Send + Sync {
    /// A short name for logs and metrics, e.g. `webhook https://hooks.example.com`. Never
    /// contains secrets (no URL path, query or credentials).
    fn name(&self) -> &str;

    /// A stable identifier for metrics labels (by default the name).
    fn id(&self) -> &str {
        self.name()
    }

    /// Hand over one event. Never waits on the network.
    fn notify(&self, ev: &AlertEvent);

    /// What [`Notifier::notify`] would queue for `ev` (after the filters, `send_updates`, and
    /// "a clear goes where its raise went"), without writing it: for a caller that writes the
    /// alert and its outbox rows in one transaction (a cluster's fenced write), then calls
    /// [`Notifier::queued`]. `None`: this notifier does not take the event (or, by default, it
    /// has no outbox).
    fn outbox_entry(&self, _ev: &AlertEvent) -> Option<OutboxEntry> {
        None
    }

    /// The caller wrote `n` of this notifier's [`Notifier::outbox_entry`] rows itself (only the
    /// rows actually inserted: not replays the store refused): count them pending and wake the
    /// delivery task.
    fn queued(&self, _n: u64) {}

    /// Wait, at most `timeout`, until nothing is pending. Returns whether that happened. Blocks
    /// the calling thread: call it from plain threads (e.g. at exit), not from async tasks.
    fn flush(&self, _timeout: Duration) -> bool {
        true
    }

    /// Delivery counters.
    fn stats(&self) -> NotifierStats {
        NotifierStats::default()
    }
}

/// The `state` an event reports: `cleared` for a clear, `raised` otherwise (updates included).
pub fn state_of(ev: &AlertEvent) -> &'static str {
    match ev.transition {
        Transition::Cleared => "cleared",
        Transition::Raised | Transition::Updated => "raised",
    }
}

/// The JSON body notifiers send for one event:
///
/// ```json
/// {"alert_id": "0195…", "stream_id": "news-hd", "kind": "video.black",
///  "state": "raised", "severity": "major", "start_s": 8.04, "end_s": null,
///  "raised_at": "2025-03-01T12:00:00.000Z", "cleared_at": null,
///  "details": {"black_ratio": 0.99}}
/// ```
///
/// `state` is `raised` or `cleared` (an update reports `raised`). `end_s` and `cleared_at` are
/// `null` while raised. Times are RFC 3339 UTC with milliseconds; media times are rounded to
/// milliseconds. What is sent adds `idempotency_key` ([`idempotency_key`]).
pub fn payload(ev: &AlertEvent) -> serde_json::Value {
    let a = &ev.alert;
    let cleared = ev.transition == Transition::Cleared || a.state == AlertState::Cleared;
    let time = |t: &avmon_core::WallTime| t.to_rfc3339_opts(SecondsFormat::Millis, true);
    json!({
        "alert_id": a.id,
        "stream_id": a.stream_id,
        "kind": a.kind,
        "state": state_of(ev),
        "severity": a.severity,
        "start_s": round_ms(a.start_s),
        "end_s": a.end_s.filter(|_| cleared).map(round_ms),
        "raised_at": time(&a.raised_at),
        "cleared_at": a.cleared_at.as_ref().filter(|_| cleared).map(time),
        "details": a.details,
    })
}

/// 64-bit FNV-1a: a stable content hash for idempotency keys (not for security).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The idempotency key of an event: `{alert_id}:{state}` for raises and clears. Updates all
/// report state `raised`, so they get a key of their own, derived from their payload, or a
/// receiver honouring the key would discard every update as a repeat of the raise.
pub fn idempotency_key(ev: &AlertEvent) -> String {
    match ev.transition {
        Transition::Updated => {
            let body = payload(ev).to_string();
            format!("{}:updated:{:016x}", ev.alert.id, fnv1a(body.as_bytes()))
        }
        Transition::Raised | Transition::Cleared => format!("{}:{}", ev.alert.id, state_of(ev)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use avmon_core::{Alert, Severity, StreamId};
    use chrono::{TimeZone, Utc};

    #[test]
    fn payload_shape() {
        let mut alert = Alert {
            id: "0195-a".into(),
            stream_id: StreamId("news".into()),
            kind: "video.black".into(),
            severity: Severity::Major,
            state: AlertState::Raised,
            start_s: 8.039999999,
            end_s: None,
            raised_at: Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap(),
            cleared_at: None,
            details: json!({"black_ratio": 0.99}).as_object().unwrap().clone(),
        };
        let raised = AlertEvent {
            transition: Transition::Raised,
            alert: alert.clone(),
        };
        assert_eq!(
            payload(&raised),
            json!({"alert_id": "0195-a", "stream_id": "news", "kind": "video.black",
                   "state": "raised", "severity": "major", "start_s": 8.04, "end_s": null,
                   "raised_at": "2025-03-01T12:00:00.000Z", "cleared_at": null,
                   "details": {"black_ratio": 0.99}})
        );
        assert_eq!(idempotency_key(&raised), "0195-a:raised");
        let mut updated = raised.clone();
        updated.transition = Transition::Updated;
        let k1 = idempotency_key(&updated);
        updated.alert.severity = Severity::Critical;
        let k2 = idempotency_key(&updated);
        assert!(k1.starts_with("0195-a:updated:") && k1 != k2, "{k1} {k2}");
        alert.state = AlertState::Cleared;
        alert.end_s = Some(12.5);
        alert.cleared_at = Some(Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 4).unwrap());
        let cleared = AlertEvent {
            transition: Transition::Cleared,
            alert,
        };
        let p = payload(&cleared);
        assert_eq!(p["state"], "cleared");
        assert_eq!(p["end_s"], 12.5);
        assert_eq!(p["cleared_at"], "2025-03-01T12:00:04.000Z");
        assert_eq!(idempotency_key(&cleared), "0195-a:cleared");
    }
}
