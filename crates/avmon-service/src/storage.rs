//! `monitor.storage`: an alert about avmon itself while the disk does not take what it writes
//! (the store's database, or evidence), raised on the `_avmon` stream id.
//!
//! The hub looks every second. Raised when the store keeps writes waiting in memory
//! ([`SpillStore`]) or evidence waits or was dropped ([`Evidence::refused`]); updated when what
//! waits grows tenfold; cleared once everything that waited is written. Its media times are
//! seconds since the service started.

use std::time::Instant;

use avmon_core::{Alert, AlertEvent, AlertState, Details, Severity, StreamId, Transition};
use avmon_store::spill::SpillStore;
use avmon_store::{AlertQuery, Store};
use chrono::Utc;
use serde_json::json;

use crate::evidence::Evidence;

/// The stream id avmon's alerts about itself are raised on.
pub const SELF_STREAM: &str = "_avmon";

/// The alert's kind.
pub const KIND: &str = "monitor.storage";

/// Watches the store and evidence for writes the disk refused.
pub(crate) struct StorageWatch {
    start: Instant,
    open: Option<Alert>,
    /// What waited when the alert was last raised or updated.
    told: usize,
}

impl StorageWatch {
    /// A watch that takes over a `monitor.storage` alert the store holds as still raised (left
    /// by a process that was killed): cleared at the first look if the disk takes writes now.
    pub(crate) fn new(store: &dyn Store) -> Self {
        let q = AlertQuery {
            stream: Some(StreamId(SELF_STREAM.into())),
            active_only: true,
            kinds: vec![KIND.into()],
            ..AlertQuery::default()
        };
        let open = store.alerts(&q).ok().and_then(|a| a.into_iter().next());
        StorageWatch {
            start: Instant::now(),
            open,
            told: 0,
        }
    }

    /// Look again: the transition to hand on, if any.
    pub(crate) fn tick(
        &mut self,
        spill: Option<&SpillStore>,
        evidence: Option<&Evidence>,
    ) -> Option<AlertEvent> {
        let spilled = spill.and_then(SpillStore::spilled);
        let refused = evidence.and_then(Evidence::refused);
        let media_t = self.start.elapsed().as_secs_f64();
        let mut details = Details::new();
        let mut waiting = 0;
        let mut reasons = Vec::new();
        if let Some(s) = &spilled {
            reasons.push(s.error.clone());
            waiting += s.alerts + s.notifications + s.samples;
            details.insert(
                "store".into(),
                json!({
                    "error": s.error,
                    "since": s.since,
                    "alerts_waiting": s.alerts,
                    "notifications_waiting": s.notifications,
                    "samples_waiting": s.samples,
                    "samples_dropped": s.dropped_samples,
                }),
            );
        }
        if let Some((error, files, dropped)) = &refused {
            reasons.push(error.clone());
            waiting += files;
            details.insert(
                "evidence".into(),
                json!({"error": error, "files_waiting": files, "files_dropped": dropped}),
            );
        }
        match (&mut self.open, reasons.is_empty()) {
            (None, true) => None,
            (None, false) => {
                details.insert("reason".into(), json!(reasons.join("; ")));
                let now = Utc::now();
                let alert = Alert {
                    id: avmon_alert::new_id(now),
                    stream_id: StreamId(SELF_STREAM.into()),
                    kind: KIND.into(),
                    severity: Severity::Critical,
                    state: AlertState::Raised,
                    start_s: media_t,
                    end_s: None,
                    raised_at: now,
                    cleared_at: None,
                    details,
                };
                tracing::error!(reason = %reasons.join("; "), "{KIND} raised");
                self.told = waiting;
                self.open = Some(alert.clone());
                Some(AlertEvent {
                    transition: Transition::Raised,
                    alert,
                })
            }
            (Some(alert), false) => {
                if waiting < self.told.max(1) * 10 {
                    return None;
                }
                details.insert("reason".into(), json!(reasons.join("; ")));
                self.told = waiting;
                alert.details = details;
                Some(AlertEvent {
                    transition: Transition::Updated,
                    alert: alert.clone(),
                })
            }
            (Some(_), true) => {
                let mut alert = self.open.take()?;
                alert.state = AlertState::Cleared;
                alert.end_s = Some(media_t.max(alert.start_s));
                alert.cleared_at = Some(Utc::now());
                tracing::warn!("{KIND} cleared: everything that waited is written");
                Some(AlertEvent {
                    transition: Transition::Cleared,
                    alert,
                })
            }
        }
    }
}
