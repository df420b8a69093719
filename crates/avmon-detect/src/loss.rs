//! `video.loss` and `audio.loss`: the input is up, but frames of one kind stopped arriving.
//!
//! One type serves both kinds ([`LossDetector::video`], [`LossDetector::audio`]). It watches the
//! media clock through [`on_tick`](Detector::on_tick), which every kind of data advances: when the
//! clock is more than `timeout` past the end of the last frame of *its* kind (`t + duration`), it
//! emits a `Begin` at that end — the first instant with nothing to show or play. The `End` is
//! emitted when a frame of its kind arrives, at that frame's `t`.
//!
//! Before the first frame there is no "last frame": the reference is the first clock value the
//! detector saw (after creation, [`reset`](Detector::reset) or [`expect`](LossDetector::expect)),
//! so a stream whose video never starts is reported `timeout` after the clock started, with that
//! time as onset. A stream that does not carry the kind at all must not be watched: the pipeline
//! does not build the detector (see [`build`](crate::build)) or calls `expect(false)`.
//!
//! When the whole input stalls, no ticks arrive and nothing is reported here: that is
//! `source.down`, the ingest's business. A loss still open at a [`reset`](Detector::reset) or
//! `expect(false)` is ended at the next tick, at the last clock value seen before it, with
//! `"reset": true`, so that its alert is cleared.
//!
//! **Fidelity tiers.** Below [`Tier::Full`] video frames come sparse by design: `video.loss`
//! then waits `timeout` *plus* the spacing of the decoded frames (the largest gap seen between
//! two of them since the tier was set, which did not itself raise a loss; before two have been
//! seen, a guess: 1 s in `reference`, [`KEYFRAME_GUESS_S`] in `keyframes`), so the gaps between
//! keyframes are no loss. In `transport` no video is decoded and `video.loss` stands aside; a
//! tier change starts counting afresh, as a reset does.
//!
//! Details: `timeout_s` on `Begin`, `duration_s` on `End`.

use avmon_core::{
    kinds, round_ms, AudioBuffer, Details, Detector, Finding, Findings, Severity, Tier, VideoFrame,
};
use serde::{Deserialize, Serialize};

use crate::episode::put;
use crate::{check, frame_duration};

/// Settings of a loss detector (`video_loss` or `audio_loss`).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossConfig {
    /// Run this detector.
    pub enabled: bool,
    /// Severity of the findings (and so of the alerts).
    pub severity: Severity,
    /// Seconds of media clock without a frame of this kind before the loss is reported.
    pub timeout: f64,
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig {
            enabled: true,
            severity: Severity::Critical,
            timeout: 2.0,
        }
    }
}

impl LossConfig {
    /// Push one message per invalid setting, prefixed with `path`.
    pub fn validate(&self, path: &str, errors: &mut Vec<String>) {
        check::positive(path, "timeout", self.timeout, errors);
    }
}

/// The keyframe interval assumed in the `keyframes` tier until two keyframes have been seen.
pub const KEYFRAME_GUESS_S: f64 = 10.0;
/// The largest frame spacing a sparse tier is allowed (a longer gap is a loss).
const MAX_SPACING_S: f64 = 10.0;

/// Which kind of frame a loss detector watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Watch {
    Video,
    Audio,
}

/// A loss detector's state.
pub struct LossDetector {
    kind: &'static str,
    watch: Watch,
    severity: Severity,
    timeout: f64,
    expected: bool,
    /// First clock value seen since creation/reset/expect.
    first_clock: Option<f64>,
    /// End (`t + duration`) of the last frame of our kind.
    last_end: Option<f64>,
    /// Latest clock value seen.
    last_now: f64,
    /// Onset of the open loss.
    open: Option<f64>,
    /// A loss was open when the detector was reset or disabled: End owed at this time.
    orphan: Option<f64>,
    /// The stream's fidelity tier (video only; audio is decoded in every tier).
    tier: Tier,
    /// Largest gap between decoded frames seen in this tier (sparse tiers only).
    spacing: Option<f64>,
    /// `t` of the latest frame of our kind.
    last_t: Option<f64>,
}

impl LossDetector {
    /// Watches video frames, reports `video.loss`.
    pub fn video(cfg: &LossConfig) -> Self {
        Self::new(kinds::VIDEO_LOSS, Watch::Video, cfg)
    }

    /// Watches audio buffers, reports `audio.loss`.
    pub fn audio(cfg: &LossConfig) -> Self {
        Self::new(kinds::AUDIO_LOSS, Watch::Audio, cfg)
    }

    fn new(kind: &'static str, watch: Watch, cfg: &LossConfig) -> Self {
        LossDetector {
            kind,
            watch,
            severity: cfg.severity,
            timeout: cfg.timeout,
            expected: true,
            first_clock: None,
            last_end: None,
            last_now: 0.0,
            open: None,
            orphan: None,
            tier: Tier::Full,
            spacing: None,
            last_t: None,
        }
    }

    /// Seconds without a frame before a loss, in the current tier.
    fn allowance(&self) -> f64 {
        match self.tier {
            Tier::Full | Tier::Transport => self.timeout,
            Tier::Reference => self.timeout + self.spacing.unwrap_or(1.0),
            Tier::Keyframes => self.timeout + self.spacing.unwrap_or(KEYFRAME_GUESS_S),
        }
    }

    /// Whether the input is known to carry this kind (default true). While false, nothing is
    /// reported; an open loss is ended at the next tick. Turning it back on starts counting afresh,
    /// as after a [`reset`](Detector::reset).
    pub fn expect(&mut self, expected: bool) {
        if expected != self.expected {
            self.expected = expected;
            self.forget();
        }
    }

    /// Whether this detector currently watches for loss.
    pub fn is_expected(&self) -> bool {
        self.expected
    }

    fn forget(&mut self) {
        if self.open.take().is_some() {
            self.orphan = Some(self.last_now);
        }
        self.first_clock = None;
        self.last_end = None;
        self.last_t = None;
    }

    fn flush(&mut self, out: &mut Findings) {
        if let Some(t) = self.orphan.take() {
            let mut d = Details::new();
            d.insert("reset".into(), true.into());
            out.push(Finding::end(self.kind, self.severity, t, d));
        }
    }

    fn arrived(&mut self, t: f64, end: f64, out: &mut Findings) {
        self.flush(out);
        if matches!(self.tier, Tier::Reference | Tier::Keyframes) && self.open.is_none() {
            if let Some(gap) = self.last_t.map(|p| t - p).filter(|g| *g > 0.0) {
                let gap = gap.min(MAX_SPACING_S);
                self.spacing = Some(self.spacing.map_or(gap, |s| s.max(gap)));
            }
        }
        self.last_t = Some(t);
        self.last_end = Some(self.last_end.map_or(end, |e| e.max(end)));
        if let Some(onset) = self.open.take() {
            let mut d = Details::new();
            d.insert("duration_s".into(), round_ms((t - onset).max(0.0)).into());
            out.push(Finding::end(self.kind, self.severity, t, d));
        }
    }
}

impl Detector for LossDetector {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn on_video(&mut self, frame: &VideoFrame<'_>, out: &mut Findings) {
        if self.watch == Watch::Video {
            self.arrived(frame.t, frame.t + frame_duration(frame), out);
        }
    }

    fn on_audio(&mut self, buf: &AudioBuffer<'_>, out: &mut Findings) {
        if self.watch == Watch::Audio {
            self.arrived(buf.t, buf.t + buf.duration(), out);
        }
    }

    fn on_tick(&mut self, now: f64, out: &mut Findings) {
        self.flush(out);
        self.last_now = now;
        if !self.expected || self.open.is_some() {
            return;
        }
        if self.watch == Watch::Video && !self.tier.decodes_video() {
            return;
        }
        let since = match self.last_end {
            Some(end) => end,
            None => *self.first_clock.get_or_insert(now),
        };
        let allowance = self.allowance();
        if now - since > allowance {
            self.open = Some(since);
            let mut d = Details::new();
            put(&mut d, "timeout_s", allowance);
            out.push(Finding::begin(self.kind, self.severity, since, d));
        }
    }

    fn on_tier(&mut self, tier: Tier) {
        if self.watch == Watch::Video && tier != self.tier {
            self.tier = tier;
            self.spacing = None;
            self.forget();
        }
    }

    fn reset(&mut self) {
        self.forget();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use avmon_core::FindingEdge::{Begin, End};

    /// Drive a loss detector: video frames at 25 fps where `video(t)` says so, and a tick every
    /// 20 ms (the audio moving the clock) from `from` to `to`. Returns (tick time, finding).
    fn drive(
        d: &mut LossDetector,
        from: f64,
        to: f64,
        video: impl Fn(f64) -> bool,
    ) -> Vec<(f64, Finding)> {
        let pic = Picture::new(8, 8, 100);
        let mut out = Vec::new();
        let mut seen = Vec::new();
        let first_frame = (from * FPS).round() as usize;
        let mut frames = first_frame..;
        let mut next_frame = frames.next().unwrap();
        let mut k = 0;
        loop {
            let now = from + k as f64 * 0.02;
            if now > to + 1e-9 {
                break;
            }
            while ft(next_frame) <= now + 1e-9 {
                if video(ft(next_frame)) {
                    d.on_video(&pic.frame(next_frame), &mut out);
                }
                next_frame = frames.next().unwrap();
            }
            d.on_tick(now, &mut out);
            seen.extend(out.drain(..).map(|f| (now, f)));
            k += 1;
        }
        seen
    }

    /// Edges and times, rounded to the microsecond.
    fn times_of(seen: &[(f64, Finding)]) -> Vec<(avmon_core::FindingEdge, f64)> {
        seen.iter()
            .map(|(_, f)| (f.edge, (f.t * 1e6).round() / 1e6))
            .collect()
    }

    #[test]
    fn sparse_tiers_allow_for_the_gaps_between_decoded_frames() {
        let mut d = LossDetector::video(&LossConfig::default());
        d.on_tier(Tier::Keyframes);
        // One frame every 2 s (a keyframe per GOP): no loss.
        let key = |t: f64| (t * FPS).round() as usize % 50 == 0;
        assert_eq!(times_of(&drive(&mut d, 0.0, 20.0, key)), vec![]);
        // Then none after the keyframe at 20 s: a loss once `timeout` + the 2 s spacing has passed.
        let seen = drive(&mut d, 20.0, 30.0, |_| false);
        let got = times_of(&seen);
        assert_eq!(got, vec![(Begin, 20.04)], "onset: the last keyframe's end");
        assert!(
            seen[0].0 > 24.04 && seen[0].0 < 24.1,
            "reported at {}",
            seen[0].0
        );

        // In `transport` no video is decoded: no loss, and the open one is ended.
        d.on_tier(Tier::Transport);
        let got = times_of(&drive(&mut d, 30.0, 40.0, |_| false));
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, End);
        // Back to full: counting starts afresh, with the plain timeout.
        d.on_tier(Tier::Full);
        let got = times_of(&drive(&mut d, 40.0, 45.0, |_| false));
        assert_eq!(got, vec![(Begin, 40.0)]);
    }

    #[test]
    fn video_stops_while_the_clock_runs_then_resumes() {
        let mut d = LossDetector::video(&LossConfig::default());
        // Frames until t = 3.96 (its end: 4.0), none from 4.0 to 10.0, frames again from 10.0.
        let seen = drive(&mut d, 0.0, 12.0, |t| {
            !(4.0 - 1e-9..10.0 - 1e-9).contains(&t)
        });
        let got = times_of(&seen);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].0, Begin);
        assert_t(got[0].1, 4.0);
        // Reported at the first tick more than 2 s after the last frame's end.
        assert_t(seen[0].0, 6.02);
        assert_eq!(seen[0].1.kind, "video.loss");
        assert_eq!(seen[0].1.severity, Severity::Critical);
        assert_eq!(got[1].0, End);
        assert_t(got[1].1, 10.0);
        assert_eq!(seen[1].1.details["duration_s"], 6.0);
    }

    #[test]
    fn a_gap_within_the_timeout_is_nothing() {
        let mut d = LossDetector::video(&LossConfig::default());
        let seen = drive(&mut d, 0.0, 10.0, |t| !(4.0..5.9).contains(&t));
        assert!(seen.is_empty(), "{:?}", times_of(&seen));
    }

    #[test]
    fn never_a_frame_counts_from_the_first_clock() {
        let mut d = LossDetector::video(&LossConfig::default());
        let seen = drive(&mut d, 5.0, 9.0, |_| false);
        assert_eq!(times_of(&seen), [(Begin, 5.0)]);
        assert_t(seen[0].0, 7.02);
    }

    #[test]
    fn not_expected_means_never_reported() {
        let mut d = LossDetector::video(&LossConfig::default());
        d.expect(false);
        assert!(!d.is_expected());
        assert!(drive(&mut d, 0.0, 30.0, |_| false).is_empty());

        // Turned off while a loss is open: the End comes at the next tick, at the last clock seen.
        let mut d = LossDetector::video(&LossConfig::default());
        let seen = drive(&mut d, 0.0, 5.0, |t| t < 1.0);
        assert_eq!(times_of(&seen), [(Begin, 1.0)]);
        d.expect(false);
        let seen = drive(&mut d, 5.02, 20.0, |_| false);
        assert_eq!(times_of(&seen), [(End, 5.0)]);
        assert_eq!(seen[0].1.details["reset"], true);

        // Back on: counting starts afresh from the next tick.
        d.expect(true);
        let seen = drive(&mut d, 20.02, 25.0, |_| false);
        assert_eq!(times_of(&seen), [(Begin, 20.02)]);
    }

    #[test]
    fn reset_forgets_everything_but_owes_an_end() {
        let mut d = LossDetector::video(&LossConfig::default());
        let seen = drive(&mut d, 0.0, 5.0, |t| t < 1.0);
        assert_eq!(times_of(&seen), [(Begin, 1.0)]);
        d.reset();
        // The new connection's clock restarts at 0; frames flow: only the owed End.
        let seen = drive(&mut d, 0.0, 5.0, |_| true);
        assert_eq!(times_of(&seen), [(End, 5.0)]);
        // Reset with nothing open, then no video: reported 2 s after the new clock's start.
        d.reset();
        let seen = drive(&mut d, 0.0, 3.0, |_| false);
        assert_eq!(times_of(&seen), [(Begin, 0.0)]);
    }

    #[test]
    fn audio_loss_watches_audio_only() {
        let mut d = LossDetector::audio(&LossConfig::default());
        assert_eq!(d.kind(), "audio.loss");
        let mut out = Vec::new();
        let samples = vec![0.0f32; 1024];
        let planes: [&[f32]; 1] = [&samples];
        let pic = Picture::new(8, 8, 100);
        // 1 s of audio, then only video until 4.5 s, then audio again.
        for n in 0..240 {
            let t = n as f64 * 1024.0 / 48_000.0;
            if !(1.0..4.5).contains(&t) {
                let buf = AudioBuffer {
                    t,
                    sample_rate: 48_000,
                    planes: &planes,
                    layout: 0,
                };
                d.on_audio(&buf, &mut out);
            }
            let mut f = pic.frame(0);
            f.t = t;
            d.on_video(&f, &mut out);
            d.on_tick(t, &mut out);
        }
        let got: Vec<_> = out.iter().map(|f| (f.edge, f.t)).collect();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].0, Begin);
        // The last buffer before the gap is number 46; it ends where number 47 would start.
        assert_t(got[0].1, 47.0 * 1024.0 / 48_000.0);
        assert_eq!(got[1].0, End);
        assert!(got[1].1 >= 4.5);
    }

    #[test]
    fn validate() {
        let mut errors = Vec::new();
        LossConfig {
            timeout: 0.0,
            ..LossConfig::default()
        }
        .validate("video_loss", &mut errors);
        assert_eq!(errors, ["video_loss.timeout: must be > 0 (got 0)"]);
    }
}
