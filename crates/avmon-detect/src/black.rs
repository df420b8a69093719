//! `video.black`: the picture is (almost) entirely black.
//!
//! A picture is black when at least `ratio` of its luma samples (on the 2×2 subsampled grid, see
//! `luma`) are at or below `luma_threshold`. With hysteresis: once black, a picture stays black
//! until the dark fraction drops below `exit_ratio`, so a dark scene hovering around `ratio` (a
//! logo fading on black, say) is one defect, not a flapping one.
//!
//! A `Begin` is emitted once black pictures have covered `min_duration` (first black frame's `t` to
//! the last one's `t + duration`), with `t` = the first black frame; the `End` at the first
//! non-black frame's `t`. Details: `black_ratio` (mean fraction of dark samples over the run),
//! `luma_mean` (mean luma over the run, 8-bit units), and `duration_s` on `End`.
//!
//! Metrics per period: `black_ratio` (fraction of frames that were black, whether or not they
//! lasted `min_duration`) and `luma_mean` (mean luma of every 8th frame: the others are read only
//! until they are known not to be black, a few rows for ordinary content; see `luma`).

use avmon_core::{kinds, Details, Detector, Findings, Severity, Tier, VideoFrame};
use serde::{Deserialize, Serialize};

use crate::episode::{put, Episode};
use crate::luma::{BlackGate, BlackLevel};
use crate::{check, frame_duration};

/// Settings of the black-picture detector.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlackConfig {
    /// Run this detector.
    pub enabled: bool,
    /// Severity of the findings (and so of the alerts).
    pub severity: Severity,
    /// Luma at or below which a sample counts as black, in 8-bit *limited* range (nominal black is
    /// 16). Mapped to the same brightness for full-range pictures (32 → 18).
    pub luma_threshold: u8,
    /// Fraction of black samples (0–1) at which a picture becomes black.
    pub ratio: f64,
    /// Fraction of black samples below which a black picture stops being black (hysteresis);
    /// at most `ratio`.
    pub exit_ratio: f64,
    /// Seconds of continuous black before it is reported.
    pub min_duration: f64,
}

impl Default for BlackConfig {
    fn default() -> Self {
        BlackConfig {
            enabled: true,
            severity: Severity::Major,
            luma_threshold: 32,
            ratio: 0.98,
            exit_ratio: 0.90,
            min_duration: 2.0,
        }
    }
}

impl BlackConfig {
    /// Push one message per invalid setting, prefixed with `path`.
    pub fn validate(&self, path: &str, errors: &mut Vec<String>) {
        check::within(path, "ratio", self.ratio, 0.0, 1.0, errors);
        let max_exit = self.ratio.clamp(0.0, 1.0);
        check::within(path, "exit_ratio", self.exit_ratio, 0.0, max_exit, errors);
        check::positive(path, "min_duration", self.min_duration, errors);
    }

    pub(crate) fn level(&self) -> BlackLevel {
        BlackLevel {
            luma_threshold: self.luma_threshold,
            ratio: self.ratio,
            exit_ratio: self.exit_ratio,
        }
    }
}

/// Sums over the current black run, for the findings' details.
#[derive(Clone, Copy, Debug, Default)]
struct Run {
    frames: u64,
    dark_ratio_sum: f64,
    luma_sum: f64,
}

impl Run {
    fn details(&self, d: &mut Details) {
        let n = self.frames.max(1) as f64;
        put(d, "black_ratio", self.dark_ratio_sum / n);
        put(d, "luma_mean", self.luma_sum / n);
    }
}

/// One frame in this many is read in full, for the `luma_mean` metric.
const MEAN_EVERY: u64 = 8;

/// Sums over the current metrics period.
#[derive(Clone, Copy, Debug, Default)]
struct Period {
    frames: u64,
    black_frames: u64,
    /// Frames read in full, and the sum of their mean luma.
    measured: u64,
    luma_sum: f64,
}

/// The black-picture detector's state.
pub struct BlackDetector {
    /// The stream's fidelity tier: a change forgets what was measured at the old one.
    tier: Tier,
    gate: BlackGate,
    episode: Episode,
    run: Run,
    period: Period,
}

impl BlackDetector {
    pub fn new(cfg: &BlackConfig) -> Self {
        BlackDetector {
            tier: Tier::Full,
            gate: BlackGate::new(cfg.level()),
            episode: Episode::new(kinds::VIDEO_BLACK, cfg.severity, cfg.min_duration),
            run: Run::default(),
            period: Period::default(),
        }
    }
}

impl Detector for BlackDetector {
    fn kind(&self) -> &'static str {
        kinds::VIDEO_BLACK
    }

    fn on_tier(&mut self, tier: Tier) {
        if crate::tier_changed(&mut self.tier, tier) {
            self.reset();
        }
    }

    fn on_video(&mut self, frame: &VideoFrame<'_>, out: &mut Findings) {
        // `luma_mean` is measured on every `MEAN_EVERY`th frame; the others are read only as far
        // as deciding that they are not black needs.
        let whole = self.period.frames % MEAN_EVERY == 0;
        let (black, stats) = self.gate.classify(&frame.luma, frame.full_range, whole);
        self.period.frames += 1;
        if whole {
            self.period.measured += 1;
            self.period.luma_sum += stats.mean();
        }
        if black && frame.changed_between == Some(true) && self.episode.in_run() {
            // The picture may have left black between the previous decoded frame and this
            // one (frames not decoded between them): the run so far ends; this one starts anew.
            self.episode.good(frame.t, out, |d| self.run.details(d));
        }
        if black {
            self.period.black_frames += 1;
            if !self.episode.in_run() {
                self.run = Run::default();
            }
            self.run.frames += 1;
            self.run.dark_ratio_sum += stats.dark_ratio();
            self.run.luma_sum += stats.mean();
            let end = frame.t + frame_duration(frame);
            self.episode.bad(frame.t, end, out, |d| self.run.details(d));
        } else {
            self.episode.good(frame.t, out, |d| self.run.details(d));
        }
    }

    fn on_tick(&mut self, _now: f64, out: &mut Findings) {
        self.episode.flush(out);
    }

    fn take_metrics(&mut self, put: &mut dyn FnMut(&'static str, f64)) {
        let p = std::mem::take(&mut self.period);
        if p.frames > 0 {
            put("black_ratio", p.black_frames as f64 / p.frames as f64);
            put("luma_mean", p.luma_sum / p.measured as f64);
        }
    }

    fn reset(&mut self) {
        self.gate.reset();
        self.episode.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use avmon_core::FindingEdge::{Begin, End};

    const W: usize = 64;
    const H: usize = 36;

    /// A picture with exactly `ratio` of its grid samples dark (16), the rest bright (200).
    fn with_dark_ratio(ratio: f64) -> Picture {
        let (gw, gh) = (W / 2, H / 2);
        let n_dark = (ratio * (gw * gh) as f64).round() as usize;
        let mut p = Picture::new(W, H, 200);
        for k in 0..n_dark {
            p.set(2 * (k % gw), 2 * (k / gw), 16);
        }
        p
    }

    #[test]
    fn onset_and_end_are_exact_to_the_frame() {
        let gray = Picture::new(W, H, 128);
        let black = Picture::new(W, H, 16);
        let seq: Vec<&Picture> = times(&gray, 10)
            .chain(times(&black, 100))
            .chain(times(&gray, 20))
            .collect();
        let mut d = BlackDetector::new(&BlackConfig::default());
        let seen = run_video(&mut d, seq);
        assert_eq!(edges(&seen).len(), 2, "{seen:?}");
        assert_eq!(seen[0].f.edge, Begin);
        assert_t(seen[0].f.t, ft(10));
        // Emitted on the frame that completes 2 s: frames 10..=59 cover 0.4 .. 2.4.
        assert_eq!(seen[0].at, 59);
        assert_eq!(seen[0].f.kind, "video.black");
        assert_eq!(seen[0].f.severity, Severity::Major);
        assert_eq!(seen[0].f.details["black_ratio"], 1.0);
        assert_eq!(seen[0].f.details["luma_mean"], 16.0);
        assert_eq!(seen[1].f.edge, End);
        assert_t(seen[1].f.t, ft(110));
        assert_eq!(seen[1].at, 110);
        assert_eq!(seen[1].f.details["duration_s"], 4.0);
    }

    #[test]
    fn shorter_than_min_duration_is_not_reported() {
        let gray = Picture::new(W, H, 128);
        let black = Picture::new(W, H, 16);
        for (n_black, expect) in [(49, 0), (50, 2)] {
            let seq: Vec<&Picture> = times(&gray, 3)
                .chain(times(&black, n_black))
                .chain(times(&gray, 3))
                .collect();
            let mut d = BlackDetector::new(&BlackConfig::default());
            assert_eq!(
                run_video(&mut d, seq).len(),
                expect,
                "{n_black} black frames"
            );
        }
    }

    #[test]
    fn threshold_is_inclusive_in_limited_range() {
        for (fill, black) in [(32u8, true), (33, false), (0, true)] {
            let p = Picture::new(W, H, fill);
            let mut d = BlackDetector::new(&BlackConfig::default());
            let seen = run_video(&mut d, times(&p, 60));
            assert_eq!(!seen.is_empty(), black, "luma {fill}");
        }
    }

    #[test]
    fn full_range_pictures_use_the_mapped_threshold() {
        // 32 limited ≙ 18 full. A full-range 25 is dark grey, not black, though ≤ 32.
        for (fill, black) in [(18u8, true), (19, false), (25, false), (0, true)] {
            let mut p = Picture::new(W, H, fill);
            p.full_range = true;
            let mut d = BlackDetector::new(&BlackConfig::default());
            let seen = run_video(&mut d, times(&p, 60));
            assert_eq!(!seen.is_empty(), black, "full-range luma {fill}");
        }
    }

    #[test]
    fn hysteresis_keeps_a_hovering_picture_black() {
        let mut rng = Rng::new(7);
        let mut seq = vec![with_dark_ratio(0.99)];
        seq.extend((0..200).map(|_| with_dark_ratio(f64::from(rng.range(93, 99)) / 100.0)));
        seq.extend(times(&with_dark_ratio(0.5), 5).cloned());

        let mut d = BlackDetector::new(&BlackConfig::default());
        let seen = run_video(&mut d, &seq);
        assert_eq!(edges(&seen), [(Begin, 0.0), (End, ft(201))]);
        let ratio = seen[0].f.details["black_ratio"].as_f64().unwrap();
        assert!((0.93..=0.99).contains(&ratio), "{ratio}");

        // Without hysteresis the same pictures flap (and never last 2 s).
        let mut d = BlackDetector::new(&BlackConfig {
            exit_ratio: 0.98,
            ..BlackConfig::default()
        });
        let mut out = Vec::new();
        let mut changes = 0;
        let mut was = false;
        for (i, p) in seq.iter().enumerate() {
            d.on_video(&p.frame(i), &mut out);
            let now = d.episode.in_run();
            changes += usize::from(now != was);
            was = now;
        }
        assert!(changes > 20, "{changes}");
        assert!(out.is_empty());
    }

    #[test]
    fn metrics_count_black_frames_and_reset_each_period() {
        let gray = Picture::new(W, H, 100);
        let black = Picture::new(W, H, 16);
        let mut d = BlackDetector::new(&BlackConfig::default());
        // `luma_mean` is the mean over every 8th frame: frames 0 and 8 (black), 16 … 56 (gray).
        let seq: Vec<&Picture> = times(&black, 16).chain(times(&gray, 48)).collect();
        run_video(&mut d, seq);
        let mut m = Vec::new();
        d.take_metrics(&mut |k, v| m.push((k, v)));
        assert_eq!(m, [("black_ratio", 0.25), ("luma_mean", 79.0)]);
        m.clear();
        d.take_metrics(&mut |k, v| m.push((k, v)));
        assert!(m.is_empty(), "no frames, no metrics");
    }

    #[test]
    fn reset_while_black_still_ends_the_defect() {
        let black = Picture::new(W, H, 16);
        let mut d = BlackDetector::new(&BlackConfig::default());
        let seen = run_video(&mut d, times(&black, 60));
        assert_eq!(seen.len(), 1);
        d.reset();
        let mut out = Vec::new();
        d.on_tick(0.1, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].edge, End);
        assert_t(out[0].t, ft(60));
        assert_eq!(out[0].details["reset"], true);
        d.on_tick(0.2, &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn validate_names_each_bad_field() {
        let cfg = BlackConfig {
            ratio: 1.5,
            exit_ratio: -0.1,
            min_duration: 0.0,
            ..BlackConfig::default()
        };
        let mut errors = Vec::new();
        cfg.validate("black", &mut errors);
        assert_eq!(
            errors,
            [
                "black.ratio: must be between 0 and 1 (got 1.5)",
                "black.exit_ratio: must be between 0 and 1 (got -0.1)",
                "black.min_duration: must be > 0 (got 0)",
            ]
        );
    }
}
