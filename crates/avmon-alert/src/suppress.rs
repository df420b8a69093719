//! Notification suppression: muted streams and maintenance windows.
//!
//! Alerts are always raised, stored and shown; suppression only decides whether they are
//! *notified*. The decision is taken once, when an alert is raised, and holds for every later
//! transition of that alert (its updates and its clear), so a receiver never gets a clear for a
//! raise it never saw, nor misses the clear of one it did:
//!
//! - raised while its stream is muted → [`Suppressed::Muted`];
//! - raised while a maintenance window covers its stream → [`Suppressed::Maintenance`];
//! - otherwise notified, even if the stream is muted before the alert clears.
//!
//! # The hook
//!
//! The hub calls [`Suppression::on_event`] exactly once per alert event, in order, and stores the
//! answer with the alert: `None` → hand the event to the notifiers; `Some(reason)` → don't.
//! [`Suppression::should_notify`] says the same for an event already seen, without changing
//! anything, for notifiers that want to ask themselves.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use avmon_core::{AlertEvent, MaintenanceWindow, Mute, Suppressed, Transition, WallTime};

/// Mutes and maintenance windows in force, and the decision taken for each active alert.
#[derive(Debug, Default)]
pub struct Suppression {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    mutes: BTreeMap<String, Mute>,
    windows: Vec<MaintenanceWindow>,
    /// Alert id → its decision, while the alert is active.
    decided: HashMap<String, Option<Suppressed>>,
}

impl Suppression {
    pub fn new(mutes: Vec<Mute>, windows: Vec<MaintenanceWindow>) -> Self {
        Suppression {
            inner: Mutex::new(Inner {
                mutes: mutes
                    .into_iter()
                    .map(|m| (m.stream_id.clone(), m))
                    .collect(),
                windows,
                decided: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why an alert of `stream` raised at `now` would not be notified, if it would not be.
    pub fn reason(&self, stream: &str, now: WallTime) -> Option<Suppressed> {
        let inner = self.lock();
        if inner.mutes.get(stream).is_some_and(|m| m.active_at(now)) {
            Some(Suppressed::Muted)
        } else if inner.windows.iter().any(|w| w.covers(stream, now)) {
            Some(Suppressed::Maintenance)
        } else {
            None
        }
    }

    /// The hook: decide for `ev` (once per event, in order). `None`: notify it.
    pub fn on_event(&self, ev: &AlertEvent, now: WallTime) -> Option<Suppressed> {
        let id = &ev.alert.id;
        let known = self.lock().decided.get(id).copied();
        let decision = match known {
            Some(d) => d,
            // A raise, or an alert raised before this process knew of it: decide now.
            None => self.reason(ev.alert.stream_id.as_str(), now),
        };
        let mut inner = self.lock();
        if ev.transition == Transition::Cleared {
            inner.decided.remove(id);
        } else {
            inner.decided.insert(id.clone(), decision);
        }
        decision
    }

    /// Whether an event of an active alert already passed to [`on_event`](Self::on_event) is to
    /// be notified (an unknown alert: whether one raised now would be).
    pub fn should_notify(&self, ev: &AlertEvent, now: WallTime) -> bool {
        let known = self.lock().decided.get(&ev.alert.id).copied();
        match known {
            Some(d) => d.is_none(),
            None => self.reason(ev.alert.stream_id.as_str(), now).is_none(),
        }
    }

    /// Replace every mute and window (another process changed them: a cluster's nodes share
    /// them through the store). The decisions taken for active alerts stand.
    pub fn replace(&self, mutes: Vec<Mute>, windows: Vec<MaintenanceWindow>) {
        let mut inner = self.lock();
        inner.mutes = mutes
            .into_iter()
            .map(|m| (m.stream_id.clone(), m))
            .collect();
        inner.windows = windows;
    }

    /// Mute a stream (replacing any mute it had).
    pub fn set_mute(&self, m: Mute) {
        self.lock().mutes.insert(m.stream_id.clone(), m);
    }

    /// Unmute a stream; returns its mute if it had one.
    pub fn remove_mute(&self, stream: &str) -> Option<Mute> {
        self.lock().mutes.remove(stream)
    }

    /// The stream's mute, if one is in force at `now`.
    pub fn mute(&self, stream: &str, now: WallTime) -> Option<Mute> {
        self.lock()
            .mutes
            .get(stream)
            .filter(|m| m.active_at(now))
            .cloned()
    }

    pub fn add_window(&self, w: MaintenanceWindow) {
        self.lock().windows.push(w);
    }

    /// Remove a window; returns it if it existed.
    pub fn remove_window(&self, id: &str) -> Option<MaintenanceWindow> {
        let mut inner = self.lock();
        let i = inner.windows.iter().position(|w| w.id == id)?;
        Some(inner.windows.remove(i))
    }

    /// Every window, by start time.
    pub fn windows(&self) -> Vec<MaintenanceWindow> {
        let mut w = self.lock().windows.clone();
        w.sort_by(|a, b| a.start.cmp(&b.start).then_with(|| a.id.cmp(&b.id)));
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use avmon_core::{Alert, AlertState, Severity, StreamId};
    use chrono::{Duration, TimeZone, Utc};

    fn t(s: i64) -> WallTime {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::seconds(s)
    }

    fn ev(id: &str, stream: &str, transition: Transition) -> AlertEvent {
        AlertEvent {
            transition,
            alert: Alert {
                id: id.into(),
                stream_id: StreamId(stream.into()),
                kind: "video.black".into(),
                severity: Severity::Major,
                state: AlertState::Raised,
                start_s: 0.0,
                end_s: None,
                raised_at: t(0),
                cleared_at: None,
                details: Default::default(),
            },
        }
    }

    fn mute(stream: &str, until: Option<WallTime>) -> Mute {
        Mute {
            stream_id: stream.into(),
            until,
            by: "ops".into(),
            comment: String::new(),
            at: t(0),
        }
    }

    #[test]
    fn decisions_are_taken_at_the_raise_and_kept_until_the_clear() {
        let s = Suppression::default();
        // Raised before the mute: notified through its clear.
        assert_eq!(s.on_event(&ev("a", "news", Transition::Raised), t(1)), None);
        s.set_mute(mute("news", None));
        assert_eq!(
            s.on_event(&ev("a", "news", Transition::Updated), t(2)),
            None
        );
        assert!(s.should_notify(&ev("a", "news", Transition::Updated), t(2)));
        // Raised while muted: suppressed through its clear, even once unmuted.
        let b = ev("b", "news", Transition::Raised);
        assert_eq!(s.on_event(&b, t(3)), Some(Suppressed::Muted));
        assert!(!s.should_notify(&b, t(3)));
        assert!(s.remove_mute("news").is_some());
        assert_eq!(
            s.on_event(&ev("b", "news", Transition::Cleared), t(4)),
            Some(Suppressed::Muted)
        );
        assert_eq!(
            s.on_event(&ev("a", "news", Transition::Cleared), t(4)),
            None
        );
        // Other streams are not affected by a mute.
        s.set_mute(mute("news", None));
        assert_eq!(
            s.on_event(&ev("c", "sport", Transition::Raised), t(5)),
            None
        );
    }

    #[test]
    fn mutes_expire_and_windows_cover_their_globs_and_times() {
        let s = Suppression::new(
            vec![mute("news", Some(t(10)))],
            vec![MaintenanceWindow {
                id: "w".into(),
                streams: vec!["sport-*".into()],
                start: t(100),
                end: t(200),
                comment: "encoder swap".into(),
                by: "config".into(),
            }],
        );
        assert_eq!(s.reason("news", t(9)), Some(Suppressed::Muted));
        assert_eq!(s.reason("news", t(10)), None, "until is exclusive");
        assert!(s.mute("news", t(11)).is_none());
        assert_eq!(s.reason("sport-hd", t(99)), None);
        assert_eq!(s.reason("sport-hd", t(100)), Some(Suppressed::Maintenance));
        assert_eq!(s.reason("sport-hd", t(199)), Some(Suppressed::Maintenance));
        assert_eq!(s.reason("sport-hd", t(200)), None);
        assert_eq!(s.reason("news", t(150)), None, "not matched by sport-*");
        assert!(s.remove_window("w").is_some());
        assert_eq!(s.reason("sport-hd", t(150)), None);
        assert!(s.remove_window("w").is_none());
    }
}
