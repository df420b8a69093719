//! avmon's alert engine: what findings mean.
//!
//! Detectors report [`Finding`]s — a defect of some kind began (at its onset) or ended — in media
//! time, and nothing else. One [`AlertEngine`] per stream turns them into [`Alert`]s and the
//! [`AlertEvent`]s that the store persists and notifiers deliver:
//!
//! - a `Begin` of a kind with no open alert **raises** a new alert (UUIDv7 id, `start_s` = the
//!   onset, `raised_at` = now, details = the finding's);
//! - an `End` does not clear it at once: the alert becomes *pending clear* at the End's media time.
//!   Only when the media clock has run `clear_hold_s` past that end without a new `Begin` is it
//!   **cleared** (on [`on_tick`](AlertEngine::on_tick)), with `end_s` = the recorded end;
//! - a `Begin` while the alert is pending clear cancels the clear: the defect came back within the
//!   hold, so Begin/End/Begin is *one* alert, **updated**, not a storm of raise/clear pairs. A
//!   `Begin` while it is simply open merges details, and is an update only if the severity rose.
//!
//! # Guarantees
//!
//! Every alert is raised exactly once and cleared at most once, and its events come in that order:
//! `Raised`, any number of `Updated`, `Cleared`. At most one alert per kind is active at a time.
//! Stray findings (an `End` with nothing open, a second `End`) are ignored. After
//! [`clear_all`](AlertEngine::clear_all) (input ended, stream removed) nothing is active.
//!
//! # Flapping
//!
//! With `flap_max = N` (> 0), a kind raised N times within `flap_window_s` of media time is
//! *flapping*: at its next end the alert is not cleared but held raised, with
//! `details.flapping = true` (one `Updated` event). While held, the defect coming and going makes
//! no events at all; the alert clears once the defect has stayed away for `flap_window_s`, with
//! `details.flaps` = the raises and returns counted in the window. So a defect that comes and goes
//! every few seconds makes at most N raises, N − 1 clears, one update and one final clear.
//!
//! # Carry-over
//!
//! In a cluster a stream can move to another node, whose engine must *continue* the stream's open
//! alerts rather than raise them again. [`resume`](AlertEngine::resume) takes them in (from the
//! database) without an event, each as if its defect had ended at the resume point and waited out
//! a *grace* instead of `clear_hold_s`: time enough for the new owner's detectors to confirm the
//! defect again. A `Begin` of its kind within the grace continues the alert silently (an update
//! only if its severity rose), and from then on it is an ordinary open alert; with no `Begin` by
//! the grace's end it is cleared once, ending at the resume point (from there on the new owner
//! watched and did not see it). A `Begin` after the grace, with no tick between, clears it and
//! raises a new alert. A carried alert keeps its id, `start_s`, `raised_at` and details; its
//! events here are any number of `Updated` and then one `Cleared` (its `Raised` was the old
//! owner's).
//!
//! # Clocks
//!
//! Hysteresis runs on media time, so it is deterministic and replayable; wall time is only stamped
//! on (`raised_at`, `cleared_at`). If the media clock jumps back by more than
//! [`CLOCK_RESTART_S`] behind a pending end (a reconnect restarted media time at 0), that clear is
//! due at once rather than never.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use avmon_core::{
    Alert, AlertEvent, AlertState, Details, Finding, FindingEdge, StreamId, Transition, WallTime,
};
use serde::{Deserialize, Serialize};
use uuid::{ContextV7, Timestamp, Uuid};

pub mod suppress;

pub use suppress::Suppression;

/// A media clock this far behind a pending end has restarted: the clear is due.
pub const CLOCK_RESTART_S: f64 = 10.0;

/// Settings of the alert engine.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertConfig {
    /// Seconds of media time a defect must stay ended before its alert is cleared. A defect that
    /// comes back within the hold continues the same alert.
    pub clear_hold_s: f64,
    /// Flap suppression: a kind raised this many times within `flap_window_s` is held raised as
    /// flapping instead of clearing and raising again. `0` (the default) turns it off.
    pub flap_max: u32,
    /// The flap window, seconds of media time; also how long a flapping defect must stay away
    /// before its alert clears.
    pub flap_window_s: f64,
}

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            clear_hold_s: 1.0,
            flap_max: 0,
            flap_window_s: 300.0,
        }
    }
}

impl AlertConfig {
    /// Push one message per invalid setting, prefixed with `path`.
    pub fn validate(&self, path: &str, errors: &mut Vec<String>) {
        if !(self.clear_hold_s.is_finite() && self.clear_hold_s >= 0.0) {
            let field = if path.is_empty() {
                "clear_hold_s".to_owned()
            } else {
                format!("{path}.clear_hold_s")
            };
            errors.push(format!("{field}: must be >= 0 (got {})", self.clear_hold_s));
        }
        if !(self.flap_window_s.is_finite() && self.flap_window_s > 0.0) {
            let field = if path.is_empty() {
                "flap_window_s".to_owned()
            } else {
                format!("{path}.flap_window_s")
            };
            errors.push(format!("{field}: must be > 0 (got {})", self.flap_window_s));
        }
    }
}

/// An alert that is still active, and its recorded end if it is pending clear.
#[derive(Clone, Debug)]
struct Active {
    alert: Alert,
    pending: Option<Pending>,
    /// Held raised as flapping (see the crate documentation).
    flapping: bool,
}

#[derive(Clone, Debug)]
struct Pending {
    end_s: f64,
    details: Details,
    /// Carried over from another node ([`AlertEngine::resume`]): its hold, in place of
    /// `clear_hold_s`. The defect was never seen to end here, so a `Begin` within it continues
    /// the alert without an event.
    grace_s: Option<f64>,
}

/// The alert state machine of one stream.
#[derive(Debug)]
pub struct AlertEngine {
    stream_id: StreamId,
    cfg: AlertConfig,
    /// Active alerts, at most one per kind, in the order they were raised.
    active: Vec<Active>,
    /// Media times each kind was raised (or came back while flapping), within the flap window.
    raises: BTreeMap<String, VecDeque<f64>>,
}

/// Ids are ordered by creation across the whole process, even within one millisecond.
static IDS: Mutex<ContextV7> = Mutex::new(ContextV7::new());

/// A new UUIDv7 for `wall` (alert and maintenance window ids).
pub fn new_id(wall: WallTime) -> String {
    let secs = u64::try_from(wall.timestamp()).unwrap_or(0);
    let ts = Timestamp::from_unix(&IDS, secs, wall.timestamp_subsec_nanos());
    Uuid::new_v7(ts).to_string()
}

fn merge(into: &mut Details, from: &Details) {
    for (k, v) in from {
        into.insert(k.clone(), v.clone());
    }
}

impl AlertEngine {
    pub fn new(stream_id: StreamId, cfg: AlertConfig) -> Self {
        AlertEngine {
            stream_id,
            cfg,
            active: Vec::new(),
            raises: BTreeMap::new(),
        }
    }

    pub fn stream_id(&self) -> &StreamId {
        &self.stream_id
    }

    /// Take in one finding; push the transitions it causes.
    pub fn on_finding(&mut self, f: &Finding, wall_now: WallTime, out: &mut Vec<AlertEvent>) {
        let index = self.active.iter().position(|a| a.alert.kind == f.kind);
        match (f.edge, index) {
            (FindingEdge::Begin, Some(i)) => {
                // Came back after its hold, with no tick in between to clear it: that was the end
                // of the old alert, and this is a new one.
                // (Unless its kind is flapping: then it is held, and this return absorbed below.)
                if let Some(end_s) = self.active[i].pending.as_ref().map(|p| p.end_s) {
                    if end_s + self.hold(&self.active[i]) <= f.t
                        && !self.start_flapping(i, end_s, out)
                    {
                        self.clear(i, wall_now, out);
                        self.raise(f, wall_now, out);
                        return;
                    }
                }
                if self.active[i].flapping {
                    let a = &mut self.active[i];
                    if a.pending.take().is_some() {
                        self.note_raise(f.kind, f.t);
                    }
                    let a = &mut self.active[i];
                    a.alert.severity = a.alert.severity.max(f.severity);
                    merge(&mut a.alert.details, &f.details);
                    return;
                }
                let a = &mut self.active[i];
                // A carried alert's defect showing again is no news: it was open all along.
                let resumed = a.pending.take().is_some_and(|p| p.grace_s.is_none());
                let rose = f.severity > a.alert.severity;
                if rose {
                    a.alert.severity = f.severity;
                }
                merge(&mut a.alert.details, &f.details);
                if resumed || rose {
                    out.push(AlertEvent {
                        transition: Transition::Updated,
                        alert: a.alert.clone(),
                    });
                }
            }
            (FindingEdge::Begin, None) => self.raise(f, wall_now, out),
            (FindingEdge::End, Some(i)) => {
                let a = &mut self.active[i];
                if a.pending.is_none() {
                    a.pending = Some(Pending {
                        end_s: f.t.max(a.alert.start_s),
                        details: f.details.clone(),
                        grace_s: None,
                    });
                }
            }
            // An End with nothing open: a detector's End for an alert already cleared by
            // `clear_all`, or a stray. Nothing to do.
            (FindingEdge::End, None) => {}
        }
    }

    /// The media clock reached `media_now`: clear the alerts whose hold has run out.
    pub fn on_tick(&mut self, media_now: f64, wall_now: WallTime, out: &mut Vec<AlertEvent>) {
        let mut i = 0;
        while i < self.active.len() {
            let hold = self.hold(&self.active[i]);
            let (due, restarted, end_s) = match &self.active[i].pending {
                Some(p) => (
                    p.end_s + hold <= media_now,
                    media_now < p.end_s - CLOCK_RESTART_S,
                    p.end_s,
                ),
                None => (false, false, 0.0),
            };
            if (due && !self.start_flapping(i, end_s, out)) || restarted {
                self.clear(i, wall_now, out);
            } else {
                i += 1;
            }
        }
    }

    /// How long an ended alert waits before it clears.
    fn hold(&self, a: &Active) -> f64 {
        if a.flapping {
            self.cfg.flap_window_s
        } else if let Some(grace) = a.pending.as_ref().and_then(|p| p.grace_s) {
            grace
        } else {
            self.cfg.clear_hold_s
        }
    }

    /// Continue `alerts`, the stream's open alerts that another node raised (see the crate
    /// documentation's "Carry-over"), from media time `media_now`: where this engine starts
    /// watching. Emits no events. Each waits `grace_s` of media time for its defect to be found
    /// again: a `Begin` of its kind by then continues it (silently, unless its severity rose);
    /// otherwise [`on_tick`](Self::on_tick) clears it, ending at `media_now`. `grace_s` should
    /// outlast every detector's confirmation time, or a defect that persists is cleared and
    /// raised again.
    ///
    /// Alerts of another stream, not in state `Raised`, or of a kind already active here (or
    /// earlier in `alerts`) are skipped. A carried alert keeps its id, `start_s`, `raised_at`,
    /// severity and details.
    pub fn resume(&mut self, alerts: Vec<Alert>, media_now: f64, grace_s: f64) {
        for alert in alerts {
            if alert.stream_id != self.stream_id
                || alert.state != AlertState::Raised
                || self.active.iter().any(|a| a.alert.kind == alert.kind)
            {
                continue;
            }
            let pending = Pending {
                end_s: media_now.max(alert.start_s),
                details: Details::new(),
                grace_s: Some(grace_s.max(0.0)),
            };
            self.active.push(Active {
                alert,
                pending: Some(pending),
                flapping: false,
            });
        }
    }

    /// The detectors restarted at media time `media_now` (a source came back after an outage,
    /// and their state was reset): each open alert of a kind `restarted` says is theirs, and not
    /// already ending, must be found again, as a carried alert must ([`resume`](Self::resume)):
    /// a `Begin` of its kind within `grace_s` continues it silently; otherwise it clears, ending
    /// at `media_now`. Without this, a defect that ended during the outage stayed raised until
    /// it next came and went: no detector remembered it was open.
    pub fn reconfirm(&mut self, media_now: f64, grace_s: f64, restarted: &dyn Fn(&str) -> bool) {
        for a in &mut self.active {
            if a.pending.is_none() && restarted(&a.alert.kind) {
                a.pending = Some(Pending {
                    end_s: media_now.max(a.alert.start_s),
                    details: Details::new(),
                    grace_s: Some(grace_s.max(0.0)),
                });
            }
        }
    }

    /// Record a raise (or a return while flapping) of `kind` at media time `t`.
    fn note_raise(&mut self, kind: &str, t: f64) {
        if self.cfg.flap_max == 0 {
            return;
        }
        let window = self.cfg.flap_window_s;
        let times = self.raises.entry(kind.to_owned()).or_default();
        times.push_back(t);
        while times.front().is_some_and(|&t0| t0 < t - window) {
            times.pop_front();
        }
    }

    /// The alert at `i`, ended at `end_s`, is due to clear: hold it as flapping instead when its
    /// kind was raised `flap_max` times within the window. Returns whether it is (now) held.
    fn start_flapping(&mut self, i: usize, end_s: f64, out: &mut Vec<AlertEvent>) -> bool {
        let a = &self.active[i];
        if a.flapping {
            return false; // a held alert's own hold ran out: it clears
        }
        let max = self.cfg.flap_max as usize;
        let window = self.cfg.flap_window_s;
        let n = self.raises.get(&a.alert.kind).map_or(0, |times| {
            times.iter().filter(|&&t| t >= end_s - window).count()
        });
        if max == 0 || n < max {
            return false;
        }
        let a = &mut self.active[i];
        a.flapping = true;
        a.alert.details.insert("flapping".into(), true.into());
        a.alert.details.insert("flaps".into(), n.into());
        out.push(AlertEvent {
            transition: Transition::Updated,
            alert: a.alert.clone(),
        });
        true
    }

    /// The input ended or the stream is being removed: clear every active alert. Pending ones
    /// keep their recorded end; open ones end at `end_s`.
    pub fn clear_all(&mut self, end_s: f64, wall_now: WallTime, out: &mut Vec<AlertEvent>) {
        for a in &mut self.active {
            if a.pending.is_none() {
                a.pending = Some(Pending {
                    end_s: end_s.max(a.alert.start_s),
                    details: Details::new(),
                    grace_s: None,
                });
            }
        }
        while !self.active.is_empty() {
            self.clear(0, wall_now, out);
        }
    }

    /// Active alerts (raised, possibly pending clear), in the order they were raised.
    pub fn active(&self) -> impl Iterator<Item = &Alert> {
        self.active.iter().map(|a| &a.alert)
    }

    /// Whether the active alert of `kind`, if any, has ended and waits out its hold.
    pub fn is_pending_clear(&self, kind: &str) -> bool {
        self.active
            .iter()
            .any(|a| a.alert.kind == kind && a.pending.is_some())
    }

    fn raise(&mut self, f: &Finding, wall_now: WallTime, out: &mut Vec<AlertEvent>) {
        let alert = Alert {
            id: new_id(wall_now),
            stream_id: self.stream_id.clone(),
            kind: f.kind.to_owned(),
            severity: f.severity,
            state: AlertState::Raised,
            start_s: f.t,
            end_s: None,
            raised_at: wall_now,
            cleared_at: None,
            details: f.details.clone(),
        };
        out.push(AlertEvent {
            transition: Transition::Raised,
            alert: alert.clone(),
        });
        self.note_raise(f.kind, f.t);
        self.active.push(Active {
            alert,
            pending: None,
            flapping: false,
        });
    }

    /// Clear the active alert at `i` (pending clear, so it has its end).
    fn clear(&mut self, i: usize, wall_now: WallTime, out: &mut Vec<AlertEvent>) {
        let Active {
            mut alert,
            pending,
            flapping,
        } = self.active.remove(i);
        if flapping {
            let window = self.cfg.flap_window_s;
            let end = pending.as_ref().map_or(alert.start_s, |p| p.end_s);
            let n = self.raises.get(&alert.kind).map_or(0, |times| {
                times.iter().filter(|&&t| t >= end - window).count()
            });
            alert.details.insert("flaps".into(), n.into());
        }
        alert.state = AlertState::Cleared;
        alert.end_s = Some(pending.as_ref().map_or(alert.start_s, |p| p.end_s));
        alert.cleared_at = Some(wall_now);
        if let Some(p) = &pending {
            merge(&mut alert.details, &p.details);
        }
        out.push(AlertEvent {
            transition: Transition::Cleared,
            alert,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use avmon_core::Severity;
    use std::collections::HashMap;

    const BLACK: &str = "video.black";
    const SILENCE: &str = "audio.silence";

    fn wall(s: i64) -> WallTime {
        chrono::DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    fn engine() -> AlertEngine {
        AlertEngine::new(StreamId("news-hd".into()), AlertConfig::default())
    }

    fn details(pairs: &[(&str, f64)]) -> Details {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).into()))
            .collect()
    }

    #[derive(Clone, Copy, Debug)]
    enum Op {
        Begin(&'static str, f64, Severity),
        End(&'static str, f64),
        Tick(f64),
        ClearAll(f64),
    }
    use Op::*;

    const MAJ: Severity = Severity::Major;
    const CRIT: Severity = Severity::Critical;

    /// Run `ops` (op `i` at wall time `i` s), returning every event.
    fn run(e: &mut AlertEngine, ops: &[Op]) -> Vec<AlertEvent> {
        let mut out = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let w = wall(i as i64);
            match *op {
                Begin(kind, t, sev) => {
                    let f = Finding::begin(kind, sev, t, details(&[("t", t)]));
                    e.on_finding(&f, w, &mut out);
                }
                End(kind, t) => {
                    let f = Finding::end(kind, MAJ, t, details(&[("duration_s", t)]));
                    e.on_finding(&f, w, &mut out);
                }
                Tick(t) => e.on_tick(t, w, &mut out),
                ClearAll(t) => e.clear_all(t, w, &mut out),
            }
        }
        out
    }

    /// (transition, kind, start, end) of each event, plus which alert (by order raised) it is.
    type Summary = (Transition, &'static str, f64, Option<f64>, usize);

    fn summarise(events: &[AlertEvent]) -> Vec<Summary> {
        let mut ids: Vec<&str> = Vec::new();
        events
            .iter()
            .map(|ev| {
                let n = ids
                    .iter()
                    .position(|id| *id == ev.alert.id)
                    .unwrap_or_else(|| {
                        ids.push(&ev.alert.id);
                        ids.len() - 1
                    });
                let kind = if ev.alert.kind == BLACK {
                    BLACK
                } else {
                    SILENCE
                };
                (ev.transition, kind, ev.alert.start_s, ev.alert.end_s, n)
            })
            .collect()
    }

    use Transition::{Cleared, Raised, Updated};

    #[test]
    fn table() {
        let cases: Vec<(&str, Vec<Op>, Vec<Summary>)> = vec![
            (
                "raise, end, clear after the hold",
                vec![
                    Begin(BLACK, 10.0, MAJ),
                    End(BLACK, 15.0),
                    Tick(15.5),
                    Tick(16.0),
                ],
                vec![
                    (Raised, BLACK, 10.0, None, 0),
                    (Cleared, BLACK, 10.0, Some(15.0), 0),
                ],
            ),
            (
                "flapping within the hold is one alert",
                vec![
                    Begin(BLACK, 10.0, MAJ),
                    End(BLACK, 15.0),
                    Tick(15.5),
                    Begin(BLACK, 15.8, MAJ),
                    End(BLACK, 20.0),
                    Tick(20.2),
                    Begin(BLACK, 20.4, MAJ),
                    End(BLACK, 21.0),
                    Tick(22.0),
                ],
                vec![
                    (Raised, BLACK, 10.0, None, 0),
                    (Updated, BLACK, 10.0, None, 0),
                    (Updated, BLACK, 10.0, None, 0),
                    (Cleared, BLACK, 10.0, Some(21.0), 0),
                ],
            ),
            (
                "back after the hold is a new alert",
                vec![
                    Begin(BLACK, 10.0, MAJ),
                    End(BLACK, 15.0),
                    Tick(16.0),
                    Begin(BLACK, 17.0, MAJ),
                ],
                vec![
                    (Raised, BLACK, 10.0, None, 0),
                    (Cleared, BLACK, 10.0, Some(15.0), 0),
                    (Raised, BLACK, 17.0, None, 1),
                ],
            ),
            (
                "back after the hold with no tick between",
                vec![
                    Begin(BLACK, 10.0, MAJ),
                    End(BLACK, 15.0),
                    Begin(BLACK, 17.0, MAJ),
                ],
                vec![
                    (Raised, BLACK, 10.0, None, 0),
                    (Cleared, BLACK, 10.0, Some(15.0), 0),
                    (Raised, BLACK, 17.0, None, 1),
                ],
            ),
            (
                "duplicate Begins continue; a higher severity updates",
                vec![
                    Begin(BLACK, 10.0, MAJ),
                    Begin(BLACK, 11.0, MAJ),
                    Begin(BLACK, 12.0, CRIT),
                    Begin(BLACK, 13.0, MAJ),
                ],
                vec![
                    (Raised, BLACK, 10.0, None, 0),
                    (Updated, BLACK, 10.0, None, 0),
                ],
            ),
            (
                "End without Begin, and a second End, are ignored",
                vec![
                    End(BLACK, 5.0),
                    Tick(10.0),
                    Begin(BLACK, 10.0, MAJ),
                    End(BLACK, 15.0),
                    End(BLACK, 15.5),
                    Tick(16.0),
                    End(BLACK, 17.0),
                    Tick(20.0),
                ],
                vec![
                    (Raised, BLACK, 10.0, None, 0),
                    (Cleared, BLACK, 10.0, Some(15.0), 0),
                ],
            ),
            (
                "interleaved kinds are independent",
                vec![
                    Begin(BLACK, 10.0, MAJ),
                    Begin(SILENCE, 11.0, MAJ),
                    End(BLACK, 12.0),
                    Tick(12.5),
                    End(SILENCE, 13.0),
                    Tick(13.0),
                    Begin(SILENCE, 13.5, MAJ),
                    Tick(20.0),
                ],
                vec![
                    (Raised, BLACK, 10.0, None, 0),
                    (Raised, SILENCE, 11.0, None, 1),
                    (Cleared, BLACK, 10.0, Some(12.0), 0),
                    (Updated, SILENCE, 11.0, None, 1),
                ],
            ),
            (
                "clear_all: pending keep their end, open ones end now",
                vec![
                    Begin(BLACK, 10.0, MAJ),
                    Begin(SILENCE, 11.0, MAJ),
                    End(SILENCE, 12.0),
                    ClearAll(20.0),
                    End(BLACK, 21.0),
                    Tick(30.0),
                ],
                vec![
                    (Raised, BLACK, 10.0, None, 0),
                    (Raised, SILENCE, 11.0, None, 1),
                    (Cleared, BLACK, 10.0, Some(20.0), 0),
                    (Cleared, SILENCE, 11.0, Some(12.0), 1),
                ],
            ),
            (
                "a media clock that restarted does not strand a pending clear",
                vec![
                    Begin(BLACK, 100.0, MAJ),
                    End(BLACK, 105.0),
                    Tick(104.0),
                    Tick(0.5),
                ],
                vec![
                    (Raised, BLACK, 100.0, None, 0),
                    (Cleared, BLACK, 100.0, Some(105.0), 0),
                ],
            ),
            (
                "an End before the onset ends at the onset",
                vec![Begin(BLACK, 10.0, MAJ), End(BLACK, 9.0), Tick(11.0)],
                vec![
                    (Raised, BLACK, 10.0, None, 0),
                    (Cleared, BLACK, 10.0, Some(10.0), 0),
                ],
            ),
        ];
        for (name, ops, want) in cases {
            let mut e = engine();
            let got = summarise(&run(&mut e, &ops));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn alerts_carry_ids_times_and_merged_details() {
        let mut e = engine();
        let mut out = Vec::new();
        let begin = Finding::begin(BLACK, MAJ, 10.0, details(&[("black_ratio", 0.99)]));
        e.on_finding(&begin, wall(0), &mut out);
        let again = Finding::begin(BLACK, CRIT, 10.0, details(&[("luma_mean", 16.0)]));
        e.on_finding(&again, wall(1), &mut out);
        let end = Finding::end(BLACK, MAJ, 14.0, details(&[("duration_s", 4.0)]));
        e.on_finding(&end, wall(2), &mut out);
        assert!(e.is_pending_clear(BLACK));
        assert_eq!(e.active().count(), 1);
        e.on_tick(15.0, wall(3), &mut out);
        assert_eq!(e.active().count(), 0);

        let [raised, updated, cleared] = &out[..] else {
            panic!("{out:?}")
        };
        let id = Uuid::parse_str(&raised.alert.id).unwrap();
        assert_eq!(id.get_version_num(), 7);
        assert_eq!(updated.alert.id, raised.alert.id);
        assert_eq!(cleared.alert.id, raised.alert.id);
        assert_eq!(raised.alert.stream_id.as_str(), "news-hd");
        assert_eq!(raised.alert.state, AlertState::Raised);
        assert_eq!(raised.alert.raised_at, wall(0));
        assert_eq!(raised.alert.details, details(&[("black_ratio", 0.99)]));
        assert_eq!(updated.alert.severity, CRIT);
        assert_eq!(cleared.alert.state, AlertState::Cleared);
        assert_eq!(cleared.alert.severity, CRIT);
        assert_eq!(cleared.alert.raised_at, wall(0));
        assert_eq!(cleared.alert.cleared_at, Some(wall(3)));
        assert_eq!(cleared.alert.end_s, Some(14.0));
        assert_eq!(
            cleared.alert.details,
            details(&[
                ("black_ratio", 0.99),
                ("luma_mean", 16.0),
                ("duration_s", 4.0)
            ])
        );
    }

    #[test]
    fn ids_are_unique_and_ordered_even_within_a_millisecond() {
        let mut e = engine();
        let mut out = Vec::new();
        for i in 0..200 {
            let kind = if i % 2 == 0 { BLACK } else { SILENCE };
            e.on_finding(
                &Finding::begin(kind, MAJ, 0.0, Details::new()),
                wall(0),
                &mut out,
            );
            e.clear_all(0.0, wall(0), &mut out);
        }
        let ids: Vec<&str> = out
            .iter()
            .filter(|ev| ev.transition == Raised)
            .map(|ev| ev.alert.id.as_str())
            .collect();
        assert_eq!(ids.len(), 200);
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids not increasing");
    }

    /// Every sequence of up to 6 operations over two kinds (Begins at two severities, Ends, short
    /// and long ticks), then `clear_all`: each alert is raised exactly once, then updated any
    /// number of times, then cleared exactly once; at most one alert per kind is ever active; an
    /// End never emits; a tick only clears. And the same after resuming a carried alert, which
    /// is updated any number of times, then cleared exactly once.
    #[test]
    fn exhaustively_raised_once_and_cleared_once() {
        #[derive(Clone, Copy, Debug)]
        enum Step {
            Begin(&'static str, Severity),
            End(&'static str),
            Tick(f64),
        }
        let alphabet = [
            Step::Begin(BLACK, MAJ),
            Step::Begin(BLACK, CRIT),
            Step::End(BLACK),
            Step::Begin(SILENCE, MAJ),
            Step::End(SILENCE),
            Step::Tick(0.4),
            Step::Tick(1.5),
        ];
        let mut sequences = 0usize;
        for carry in [false, true] {
            for len in 0..=6u32 {
                for code in 0..alphabet.len().pow(len) {
                    let mut steps = Vec::with_capacity(len as usize);
                    let mut c = code;
                    for _ in 0..len {
                        steps.push(alphabet[c % alphabet.len()]);
                        c /= alphabet.len();
                    }
                    let old = carry.then(|| carried("news-hd", BLACK, 0.0, MAJ));
                    check_sequence(&steps, old, |s| match s {
                        Step::Begin(k, sev) => (Some((FindingEdge::Begin, *k, *sev)), 0.3),
                        Step::End(k) => (Some((FindingEdge::End, *k, MAJ)), 0.3),
                        Step::Tick(dt) => (None, *dt),
                    });
                    sequences += 1;
                }
            }
        }
        assert_eq!(sequences, 2 * (0..=6).map(|n| 7usize.pow(n)).sum::<usize>());
    }

    /// Run one sequence, after resuming `carried` (at 0, with a grace of 2 s) if given; `decode`
    /// gives each step's finding (or a tick) and how far it advances the media clock.
    fn check_sequence<S: std::fmt::Debug>(
        steps: &[S],
        carried: Option<Alert>,
        decode: impl Fn(&S) -> (Option<(FindingEdge, &'static str, Severity)>, f64),
    ) {
        let mut e = engine();
        let carried_id = carried.as_ref().map(|a| a.id.clone());
        e.resume(carried.into_iter().collect(), 0.0, 2.0);
        let mut clock = 0.0;
        let mut history: HashMap<String, Vec<Transition>> = HashMap::new();
        let mut out = Vec::new();
        let record = |out: &mut Vec<AlertEvent>, history: &mut HashMap<_, Vec<_>>| {
            for ev in out.drain(..) {
                let a = &ev.alert;
                match ev.transition {
                    Raised | Updated => {
                        assert_eq!(a.state, AlertState::Raised, "{steps:?}");
                        assert!(a.end_s.is_none() && a.cleared_at.is_none(), "{steps:?}");
                    }
                    Cleared => {
                        assert_eq!(a.state, AlertState::Cleared, "{steps:?}");
                        assert!(a.end_s.unwrap() >= a.start_s, "{steps:?}");
                        assert!(a.cleared_at.is_some(), "{steps:?}");
                    }
                }
                history.entry(a.id.clone()).or_default().push(ev.transition);
            }
        };
        for (i, step) in steps.iter().enumerate() {
            let (finding, dt) = decode(step);
            clock += dt;
            match finding {
                Some((edge, kind, sev)) => {
                    let f = Finding {
                        kind,
                        severity: sev,
                        edge,
                        t: clock,
                        details: Details::new(),
                    };
                    e.on_finding(&f, wall(i as i64), &mut out);
                    if edge == FindingEdge::End {
                        assert!(out.is_empty(), "an End emitted: {steps:?}");
                    }
                }
                None => {
                    e.on_tick(clock, wall(i as i64), &mut out);
                    assert!(out.iter().all(|ev| ev.transition == Cleared), "{steps:?}");
                }
            }
            record(&mut out, &mut history);
            let kinds: Vec<&str> = e.active().map(|a| a.kind.as_str()).collect();
            assert!(
                !(kinds.len() == 2 && kinds[0] == kinds[1]) && kinds.len() <= 2,
                "{steps:?}"
            );
        }
        e.clear_all(clock, wall(99), &mut out);
        record(&mut out, &mut history);
        assert_eq!(e.active().count(), 0);
        if let Some(id) = &carried_id {
            // Raised by its old owner: here only updated, then cleared once.
            let mut transitions = history.remove(id).unwrap_or_default();
            assert_eq!(transitions.pop(), Some(Cleared), "{steps:?}");
            assert!(transitions.iter().all(|t| *t == Updated), "{steps:?}");
        }
        for (id, transitions) in &history {
            let n = transitions.len();
            assert!(
                n >= 2
                    && transitions[0] == Raised
                    && transitions[n - 1] == Cleared
                    && transitions[1..n - 1].iter().all(|t| *t == Updated),
                "alert {id}: {transitions:?} for {steps:?}"
            );
        }
    }

    #[test]
    fn a_flapping_defect_is_held_raised_instead_of_raising_and_clearing() {
        let cfg = AlertConfig {
            clear_hold_s: 1.0,
            flap_max: 3,
            flap_window_s: 60.0,
        };
        let mut e = AlertEngine::new(StreamId("news-hd".into()), cfg);
        // Black for 2 s every 10 s, ten times: without flap suppression, 10 raises and 10 clears.
        let mut ops = Vec::new();
        for k in 0..10 {
            let t0 = 10.0 * k as f64;
            ops.extend([Begin(BLACK, t0, MAJ), End(BLACK, t0 + 2.0), Tick(t0 + 5.0)]);
        }
        // Then it stays away: the held alert clears a window after the last end (92 s).
        ops.extend([Tick(150.0), Tick(152.5), Begin(BLACK, 200.0, MAJ)]);
        let events = run(&mut e, &ops);
        let got = summarise(&events);
        assert_eq!(
            got,
            vec![
                (Raised, BLACK, 0.0, None, 0),
                (Cleared, BLACK, 0.0, Some(2.0), 0),
                (Raised, BLACK, 10.0, None, 1),
                (Cleared, BLACK, 10.0, Some(12.0), 1),
                (Raised, BLACK, 20.0, None, 2),
                (Updated, BLACK, 20.0, None, 2),
                (Cleared, BLACK, 20.0, Some(92.0), 2),
                (Raised, BLACK, 200.0, None, 3),
            ],
            "{events:#?}"
        );
        let flapping = &events[5].alert;
        assert_eq!(flapping.details["flapping"], true);
        assert_eq!(flapping.state, AlertState::Raised);
        let cleared = &events[6].alert;
        assert_eq!(cleared.details["flapping"], true);
        // Back at 30, 40, …, 90; those within the window before the end at 92 s: 40..=90.
        assert_eq!(cleared.details["flaps"], 6);
        assert!(events[7].alert.details.get("flapping").is_none());

        // Off by default: the same defect raises and clears every time.
        let mut plain = engine();
        let n = run(&mut plain, &ops[..30])
            .iter()
            .filter(|ev| ev.transition == Raised)
            .count();
        assert_eq!(n, 10);
    }

    /// An alert another node raised for `stream`, open in the database.
    fn carried(stream: &str, kind: &str, start_s: f64, severity: Severity) -> Alert {
        Alert {
            id: new_id(wall(-600)),
            stream_id: StreamId(stream.into()),
            kind: kind.to_owned(),
            severity,
            state: AlertState::Raised,
            start_s,
            end_s: None,
            raised_at: wall(-600),
            cleared_at: None,
            details: details(&[("black_ratio", 0.98)]),
        }
    }

    const GRACE: f64 = 30.0;
    /// Where the engines of these tests resume.
    const RESUME_AT: f64 = 100.0;

    /// A fresh engine that resumed one carried major alert of `kind` at [`RESUME_AT`].
    fn resumed(kind: &str, start_s: f64) -> (AlertEngine, Alert) {
        let mut e = engine();
        let old = carried("news-hd", kind, start_s, MAJ);
        e.resume(vec![old.clone()], RESUME_AT, GRACE);
        (e, old)
    }

    #[test]
    fn a_carried_alert_continues_silently_when_its_defect_shows_again() {
        let (mut e, old) = resumed(BLACK, 50.0);
        assert!(e.is_pending_clear(BLACK));
        let events = run(
            &mut e,
            &[
                Tick(110.0),
                Begin(BLACK, 120.0, MAJ),
                Tick(RESUME_AT + GRACE + 5.0),
                Tick(200.0),
            ],
        );
        assert!(events.is_empty(), "{events:#?}");
        assert!(!e.is_pending_clear(BLACK));
        // From now on an ordinary open alert: it clears after the normal hold.
        let hold = AlertConfig::default().clear_hold_s;
        let events = run(
            &mut e,
            &[
                End(BLACK, 210.0),
                Tick(210.0 + hold / 2.0),
                Tick(210.0 + hold),
            ],
        );
        let [cleared] = &events[..] else {
            panic!("{events:#?}")
        };
        let a = &cleared.alert;
        assert_eq!(cleared.transition, Cleared);
        assert_eq!(
            (&a.id, a.start_s, a.raised_at, a.end_s),
            (&old.id, old.start_s, old.raised_at, Some(210.0))
        );
        // The carried details, merged with the new Begin's and End's.
        assert_eq!(
            a.details,
            details(&[("black_ratio", 0.98), ("t", 120.0), ("duration_s", 210.0)])
        );
    }

    #[test]
    fn a_carried_alert_clears_once_at_the_resume_point_after_the_grace() {
        let (mut e, old) = resumed(SILENCE, 40.0);
        let events = run(
            &mut e,
            &[
                Tick(RESUME_AT),
                Tick(RESUME_AT + GRACE - 0.1),
                Tick(RESUME_AT + GRACE),
                Tick(RESUME_AT + GRACE + 10.0),
                ClearAll(200.0),
            ],
        );
        assert_eq!(
            summarise(&events),
            [(Cleared, SILENCE, 40.0, Some(RESUME_AT), 0)]
        );
        let a = &events[0].alert;
        assert_eq!((&a.id, a.raised_at), (&old.id, old.raised_at));
        assert_eq!(a.state, AlertState::Cleared);
        assert_eq!(a.cleared_at, Some(wall(2)));
        assert_eq!(a.details, old.details);
        assert_eq!(e.active().count(), 0);
    }

    /// After an outage the detectors restart: a defect that ended meanwhile clears after the
    /// grace (it did not before: nothing remembered it was open), one that goes on continues
    /// silently, and alerts of other kinds are left as they are.
    #[test]
    fn reconfirmed_alerts_clear_unless_their_defect_is_found_again() {
        let mut e = engine();
        let mut out = run(
            &mut e,
            &[
                Begin("video.black", 10.0, MAJ),
                Begin("audio.silence", 11.0, MAJ),
                Begin("source.down", 12.0, CRIT),
            ],
        );
        e.reconfirm(30.0, 5.0, &|k| k != "source.down");
        out.extend(run(
            &mut e,
            &[
                Begin("audio.silence", 32.0, MAJ),
                Tick(34.9),
                Tick(35.0),
                Tick(60.0),
            ],
        ));
        assert_eq!(
            summarise(&out)[3..],
            [(Cleared, "video.black", 10.0, Some(30.0), 0)],
            "black clears at the restart, after the grace; silence goes on, silently"
        );
        let open: Vec<&str> = e.active().map(|a| a.kind.as_str()).collect();
        assert_eq!(open, ["audio.silence", "source.down"]);
    }

    #[test]
    fn a_begin_after_the_grace_clears_the_carried_alert_and_raises_a_new_one() {
        let (mut e, old) = resumed(BLACK, 50.0);
        let events = run(&mut e, &[Begin(BLACK, RESUME_AT + GRACE + 1.0, MAJ)]);
        assert_eq!(
            summarise(&events),
            [
                (Cleared, BLACK, 50.0, Some(RESUME_AT), 0),
                (Raised, BLACK, RESUME_AT + GRACE + 1.0, None, 1),
            ]
        );
        assert_eq!(events[0].alert.id, old.id);
        assert_ne!(events[1].alert.id, old.id);
        assert_eq!(events[1].alert.raised_at, wall(0));
    }

    #[test]
    fn clear_all_clears_carried_alerts_once() {
        let mut e = engine();
        e.resume(
            vec![
                carried("news-hd", BLACK, 50.0, MAJ),
                carried("news-hd", SILENCE, 60.0, MAJ),
            ],
            RESUME_AT,
            GRACE,
        );
        // Black shows again (an ordinary open alert now); silence does not.
        let events = run(
            &mut e,
            &[
                Begin(BLACK, 105.0, MAJ),
                ClearAll(110.0),
                Tick(RESUME_AT + GRACE + 1.0),
                ClearAll(200.0),
            ],
        );
        assert_eq!(
            summarise(&events),
            [
                (Cleared, BLACK, 50.0, Some(110.0), 0),
                (Cleared, SILENCE, 60.0, Some(RESUME_AT), 1),
            ]
        );
        assert_eq!(e.active().count(), 0);
    }

    #[test]
    fn resume_skips_other_streams_cleared_alerts_and_kinds_already_active() {
        let mut e = engine();
        let raised = run(&mut e, &[Begin(BLACK, 90.0, MAJ)]);
        let mut closed = carried("news-hd", "audio.loudness", 10.0, MAJ);
        closed.state = AlertState::Cleared;
        let first = carried("news-hd", SILENCE, 60.0, MAJ);
        e.resume(
            vec![
                carried("news-hd", BLACK, 50.0, CRIT),
                carried("sport-hd", "video.freeze", 50.0, MAJ),
                closed,
                first.clone(),
                carried("news-hd", SILENCE, 70.0, CRIT),
            ],
            RESUME_AT,
            GRACE,
        );
        let active: Vec<(&str, &str, f64)> = e
            .active()
            .map(|a| (a.id.as_str(), a.kind.as_str(), a.start_s))
            .collect();
        assert_eq!(
            active,
            [
                (raised[0].alert.id.as_str(), BLACK, 90.0),
                (first.id.as_str(), SILENCE, 60.0)
            ]
        );
        // The open black alert is not made pending by a carried duplicate.
        assert!(!e.is_pending_clear(BLACK));
        let events = run(&mut e, &[Tick(RESUME_AT + GRACE)]);
        assert_eq!(
            summarise(&events),
            [(Cleared, SILENCE, 60.0, Some(RESUME_AT), 0)]
        );
        assert_eq!(events[0].alert.id, first.id);
    }

    #[test]
    fn a_carried_alert_whose_severity_rose_is_updated_once() {
        let (mut e, old) = resumed(BLACK, 50.0);
        let events = run(
            &mut e,
            &[
                Begin(BLACK, 110.0, CRIT),
                Begin(BLACK, 111.0, CRIT),
                Begin(BLACK, 112.0, MAJ),
            ],
        );
        let [updated] = &events[..] else {
            panic!("{events:#?}")
        };
        assert_eq!(updated.transition, Updated);
        assert_eq!(updated.alert.id, old.id);
        assert_eq!(updated.alert.severity, CRIT);
        assert_eq!(updated.alert.state, AlertState::Raised);
        assert_eq!(updated.alert.start_s, old.start_s);
    }

    #[test]
    fn a_carried_alert_clears_at_once_when_the_media_clock_restarts() {
        let (mut e, _) = resumed(BLACK, 50.0);
        let events = run(
            &mut e,
            &[Tick(RESUME_AT - CLOCK_RESTART_S + 1.0), Tick(0.5)],
        );
        assert_eq!(
            summarise(&events),
            [(Cleared, BLACK, 50.0, Some(RESUME_AT), 0)]
        );
    }

    #[test]
    fn config() {
        let cfg: AlertConfig = serde_json::from_str(r#"{"clear_hold_s": 2.5}"#).unwrap();
        assert_eq!(cfg.clear_hold_s, 2.5);
        assert_eq!(
            serde_json::from_str::<AlertConfig>("{}").unwrap(),
            AlertConfig::default()
        );
        let err = serde_json::from_str::<AlertConfig>(r#"{"hold": 1}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `hold`"), "{err}");

        let mut errors = Vec::new();
        AlertConfig::default().validate("alerts", &mut errors);
        AlertConfig {
            clear_hold_s: 0.0,
            ..AlertConfig::default()
        }
        .validate("alerts", &mut errors);
        assert!(errors.is_empty());
        AlertConfig {
            clear_hold_s: -1.0,
            ..AlertConfig::default()
        }
        .validate("alerts", &mut errors);
        AlertConfig {
            clear_hold_s: f64::NAN,
            flap_window_s: 0.0,
            ..AlertConfig::default()
        }
        .validate("", &mut errors);
        assert_eq!(
            errors,
            [
                "alerts.clear_hold_s: must be >= 0 (got -1)",
                "clear_hold_s: must be >= 0 (got NaN)",
                "flap_window_s: must be > 0 (got 0)"
            ]
        );
    }
}
