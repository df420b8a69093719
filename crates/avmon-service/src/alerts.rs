//! The one path from findings to alert events. Every source of findings about a stream goes
//! through a [`StreamAlerts`]: the detectors and the transport analyser (through
//! [`crate::pipeline`]), the service's own findings (`monitor.degraded`, `monitor.behind`,
//! `source.down`, also through the pipeline), and each HLS variant's delivery checks (through
//! [`crate::hls`], one per variant: an engine keeps one alert per kind, and two variants may
//! well be stale at once).
//!
//! Findings are queued as they are made (detectors push into [`StreamAlerts::findings`]) and
//! handed to the engine in order by [`StreamAlerts::flush`], each stamped with the wall clock
//! then; the resulting events wait in [`StreamAlerts::events`] until the caller takes them.
//! Nothing here does I/O, so it runs on the thread that made the findings.

use avmon_alert::{AlertConfig, AlertEngine};
use avmon_core::{AlertEvent, Finding, Findings, StreamId};
use chrono::Utc;

/// A stream's (or an HLS variant's) findings into its alert engine.
pub struct StreamAlerts {
    engine: AlertEngine,
    /// Findings made since the last flush, in order.
    pub findings: Findings,
    /// Alert events made since the caller last drained them.
    pub events: Vec<AlertEvent>,
}

impl StreamAlerts {
    pub fn new(stream: StreamId, cfg: AlertConfig) -> Self {
        StreamAlerts {
            engine: AlertEngine::new(stream, cfg),
            findings: Vec::with_capacity(16),
            events: Vec::with_capacity(16),
        }
    }

    /// Queue one finding (taken in at the next [`flush`](Self::flush)).
    pub fn push(&mut self, f: Finding) {
        self.findings.push(f);
    }

    /// Take in the queued findings, in order.
    pub fn flush(&mut self) {
        if self.findings.is_empty() {
            return;
        }
        let now = Utc::now();
        for f in self.findings.drain(..) {
            self.engine.on_finding(&f, now, &mut self.events);
        }
    }

    /// Take in one finding now (after any queued before it).
    pub fn finding(&mut self, f: Finding) {
        self.findings.push(f);
        self.flush();
    }

    /// The media clock reached `t`: alerts whose hold ran out clear.
    pub fn tick(&mut self, t: f64) {
        self.flush();
        self.engine.on_tick(t, Utc::now(), &mut self.events);
    }

    /// The input ended (or the stream is being removed) at media time `end`: every open alert
    /// is cleared.
    pub fn clear_all(&mut self, end: f64) {
        self.flush();
        self.engine.clear_all(end, Utc::now(), &mut self.events);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use avmon_core::{Details, Severity, Transition};

    #[test]
    fn queued_findings_raise_and_ticks_clear_in_order() {
        let mut a = StreamAlerts::new(StreamId("s".into()), AlertConfig::default());
        a.push(Finding::begin(
            "video.black",
            Severity::Major,
            1.0,
            Details::new(),
        ));
        assert!(a.events.is_empty(), "nothing is taken in before a flush");
        a.flush();
        assert_eq!(a.events.len(), 1);
        assert_eq!(a.events[0].transition, Transition::Raised);
        assert_eq!(a.events[0].alert.start_s, 1.0);
        a.finding(Finding::end(
            "video.black",
            Severity::Major,
            3.0,
            Details::new(),
        ));
        a.tick(3.0 + AlertConfig::default().clear_hold_s + 0.1);
        let last = a.events.last().unwrap();
        assert_eq!(last.transition, Transition::Cleared);
        assert_eq!(last.alert.end_s, Some(3.0));
    }

    #[test]
    fn clear_all_ends_what_is_open_at_the_end() {
        let mut a = StreamAlerts::new(StreamId("s".into()), AlertConfig::default());
        a.push(Finding::begin(
            "audio.silence",
            Severity::Major,
            2.0,
            Details::new(),
        ));
        a.clear_all(7.5);
        let kinds: Vec<_> = a.events.iter().map(|e| e.transition).collect();
        assert_eq!(kinds, [Transition::Raised, Transition::Cleared]);
        assert_eq!(a.events[1].alert.end_s, Some(7.5));
    }
}
