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
//!
//! A stream that moved from another node of a cluster continues its open alerts through
//! [`StreamAlerts::resume`], waiting [`CARRY_GRACE_S`] for each defect to be found again.

use avmon_alert::{AlertConfig, AlertEngine};
use avmon_core::{Alert, AlertEvent, Finding, Findings, StreamId};
use chrono::Utc;

/// Seconds of media time the new owner of a stream that moved from another node waits for a
/// carried alert's defect to be found again before clearing it ([`StreamAlerts::resume`]).
///
/// It must outlast every detector's confirmation time, counted from the new owner's first
/// timestamp, or a defect that persists is cleared and raised again. The longest default is a
/// PAT or PMT missing from HLS segments, found after
/// [`HLS_TABLE_INTERVAL_S`](crate::transport::HLS_TABLE_INTERVAL_S) (30 s); then
/// `audio.loudness` (3 s for the short-term window to fill, then `min_duration`, 10 s), an HLS
/// segment timeout (10 s), `source.down` (`io_timeout_s`, 5 s), and black, freeze and silence
/// (`min_duration`, 2 s). 45 s leaves 15 s over the longest for the new connection to settle.
pub const CARRY_GRACE_S: f64 = 45.0;

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

    /// The detectors restarted at `media_now`: their open alerts must be found again within
    /// `grace_s` (see [`AlertEngine::reconfirm`]). `restarted` tells their kinds.
    pub fn reconfirm(&mut self, media_now: f64, grace_s: f64, restarted: &dyn Fn(&str) -> bool) {
        self.flush();
        self.engine.reconfirm(media_now, grace_s, restarted);
    }

    /// Continue the stream's open `alerts`, raised by the node that watched it before, from
    /// media time `media_now`, where this node starts watching (for a clock made by
    /// `MediaClock::resume(latest, gap_s)`, `latest + gap_s`). Makes no events: each alert is
    /// continued by a `Begin` of its kind within `grace_s` (normally [`CARRY_GRACE_S`]), or
    /// cleared, ending at `media_now`, by the first tick after it. See
    /// [`AlertEngine::resume`].
    pub fn resume(&mut self, alerts: Vec<Alert>, media_now: f64, grace_s: f64) {
        self.flush();
        self.engine.resume(alerts, media_now, grace_s);
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

    #[test]
    fn resumed_alerts_continue_or_clear_after_the_grace() {
        // What the old owner left open, read back from its events.
        let mut old = StreamAlerts::new(StreamId("s".into()), AlertConfig::default());
        for (kind, t) in [("video.black", 10.0), ("audio.silence", 12.0)] {
            old.push(Finding::begin(kind, Severity::Major, t, Details::new()));
        }
        old.flush();
        let open: Vec<Alert> = old.events.iter().map(|e| e.alert.clone()).collect();

        let mut a = StreamAlerts::new(StreamId("s".into()), AlertConfig::default());
        a.resume(open.clone(), 100.0, CARRY_GRACE_S);
        // Black is still there: found again within the grace, it continues without an event.
        a.finding(Finding::begin(
            "video.black",
            Severity::Major,
            100.0 + CARRY_GRACE_S / 2.0,
            Details::new(),
        ));
        a.tick(100.0 + CARRY_GRACE_S - 0.5);
        assert!(a.events.is_empty(), "{:?}", a.events);
        // Silence is not: cleared once, at the resume point.
        a.tick(100.0 + CARRY_GRACE_S);
        a.tick(100.0 + CARRY_GRACE_S + 1.0);
        let [cleared] = &a.events[..] else {
            panic!("{:?}", a.events)
        };
        assert_eq!(cleared.transition, Transition::Cleared);
        assert_eq!(cleared.alert.id, open[1].id);
        assert_eq!(cleared.alert.end_s, Some(100.0));
        a.clear_all(200.0);
        let last = a.events.last().unwrap();
        assert_eq!(a.events.len(), 2);
        assert_eq!(
            (&last.alert.id, last.alert.end_s),
            (&open[0].id, Some(200.0))
        );
    }

    /// The grace outlasts the time each default detector takes to find its defect again.
    #[test]
    fn the_carry_grace_outlasts_every_default_confirmation_time() {
        let stream: crate::config::StreamConfig =
            toml::from_str("id = \"s\"\nurl = \"udp://239.0.0.1:5000\"").unwrap();
        let d = &stream.detectors;
        let hls = avmon_hls::HlsConfig::default();
        let times = [
            crate::transport::HLS_TABLE_INTERVAL_S,
            // The short-term window (3 s) must fill before loudness is judged at all.
            3.0 + d.loudness.min_duration,
            hls.segment_timeout_s,
            hls.playlist_timeout_s,
            stream.io_timeout_s,
            d.black.min_duration,
            d.freeze.min_duration,
            d.silence.min_duration,
            d.channel_silence.min_duration,
            d.av_sync.min_duration,
            d.clipping.min_duration,
            d.video_loss.timeout,
            d.audio_loss.timeout,
        ];
        let longest = times.iter().copied().fold(0.0, f64::max);
        assert_eq!(longest, crate::transport::HLS_TABLE_INTERVAL_S);
        assert!(CARRY_GRACE_S > longest, "{times:?}");
    }
}
