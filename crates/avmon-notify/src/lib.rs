//! Alert delivery: the [`Notifier`] trait and a [`Webhook`] notifier.
//!
//! # Contract
//!
//! - [`Notifier::notify`] **never blocks and never touches the network**. It is called on the
//!   path from findings to alerts; a slow or dead receiver must not slow detection. Notifiers
//!   queue the event (bounded) and deliver it from their own task. When the queue is full the
//!   event is *dropped and counted*: losing a notification is better than stalling monitoring,
//!   and the store keeps the alert anyway.
//! - Delivery is **in order** per notifier (a clear never overtakes its raise), hence one
//!   delivery task per notifier and head-of-line retries.
//! - Delivery is **at least once** within `max_attempts`: every request carries an
//!   `Idempotency-Key` so receivers can drop duplicates of a retried request.
//! - [`Notifier::flush`] lets the caller wait, at exit, for what was queued to be delivered or
//!   given up on.
//!
//! The payload ([`payload`]) is a stable contract, documented on that function.

use std::time::Duration;

use avmon_core::{round_ms, AlertEvent, AlertState, Transition};
use chrono::SecondsFormat;
use serde_json::json;

mod webhook;

pub use webhook::{Webhook, WebhookConfig};

/// Counters of one notifier, for `/metrics` and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NotifierStats {
    /// Events the receiver accepted.
    pub delivered: u64,
    /// Events given up on: rejected by the receiver, or still failing after every attempt.
    pub failed: u64,
    /// Events dropped because the queue was full.
    pub dropped: u64,
    /// Events queued or being delivered now.
    pub pending: u64,
}

/// Something that delivers alert events somewhere.
pub trait Notifier: Send + Sync {
    /// A short name for logs and metrics, e.g. `webhook https://hooks.example.com`. Never
    /// contains secrets (no URL path, query or credentials).
    fn name(&self) -> &str;

    /// Hand over one event. Returns at once: never blocks, never waits on the network.
    fn notify(&self, ev: &AlertEvent);

    /// Wait, at most `timeout`, until nothing is queued or being delivered (each event delivered
    /// or given up on). Returns whether that happened. Blocks the calling thread: call it from
    /// plain threads (e.g. at exit), not from async tasks.
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
/// milliseconds.
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
    }
}
