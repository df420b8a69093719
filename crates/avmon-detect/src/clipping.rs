//! `audio.clipping`: the signal keeps hitting full scale.
//!
//! A *clipped run* is `min_run` (default 3) or more consecutive samples of one channel, all of one
//! sign, with `|x| ≥ threshold` (default 0.999, i.e. within 0.01 dB of full scale); runs continue
//! across buffer boundaries. One full-scale sample is a peak, not clipping; a flat top of several is.
//!
//! Audio is cut into windows of `window_ms` (default 250 ms); a window is *clipping* when it holds
//! at least `min_runs` (default 2) clipped runs over all channels, i.e. about 8 runs per second, or
//! at least `min_overs` (default 10) samples *beyond* full scale (|x| > 1.001, see below).
//! The defect is reported once clipping windows follow each other for `min_duration` (default
//! 0.5 s); it ends at the first window without enough runs. Onset and end are exact to a window.
//!
//! Lossy codecs: a source clipped before an AAC or MP3 encoder decodes with ripple and overshoot
//! around its flat tops (float samples up to ~1.07), which splits the flat tops into shorter runs;
//! measured on FFmpeg's AAC at 64 kb/s per channel, some 250 ms windows of a hard-clipped tone hold
//! no run of 3 at all, but dozens of samples over full scale. Such samples cannot come from PCM
//! and will be clipped by whatever converts them to integers next, so they are counted too
//! (`min_overs`); an occasional inter-sample over of a hot but clean master stays below 10 per
//! window.
//!
//! Details: `clipped_runs` (on `Begin`: runs in the windows up to the report; on `End`: in the
//! whole episode), `peak_dbfs` (largest |sample| of the episode; above 0 after a lossy decode);
//! `duration_s` on `End`. Metric per period: `clipped_runs` (count).
//!
//! Cost: each window's samples are first checked for their largest magnitude (a vectorised
//! max); runs are counted only in windows that reach the threshold.

use avmon_core::{kinds, AudioBuffer, Detector, Findings, Severity, MAX_AUDIO_CHANNELS};
use serde::{Deserialize, Serialize};

use crate::check;
use crate::episode::{put, Episode};
use crate::windows::{AudioWindows, Change, Window};

/// A sample beyond this magnitude is over full scale.
const OVER: f32 = 1.001;

/// Settings of the clipping detector.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClippingConfig {
    /// Run this detector.
    pub enabled: bool,
    /// Severity of the findings (and so of the alerts).
    pub severity: Severity,
    /// A sample is at full scale when its magnitude is at least this (0.5 to 1).
    pub threshold: f64,
    /// Consecutive full-scale samples of one sign that make a clipped run (1 to 1000).
    pub min_run: u32,
    /// Length of the counting windows, in milliseconds (10 to 2000).
    pub window_ms: f64,
    /// Clipped runs a window must hold to count as clipping (≥ 1).
    pub min_runs: u32,
    /// Or: samples beyond full scale (|x| > 1.001, from a lossy decode) a window must hold.
    pub min_overs: u32,
    /// Seconds of consecutive clipping windows before it is reported.
    pub min_duration: f64,
}

impl Default for ClippingConfig {
    fn default() -> Self {
        ClippingConfig {
            enabled: true,
            severity: Severity::Minor,
            threshold: 0.999,
            min_run: 3,
            window_ms: 250.0,
            min_runs: 2,
            min_overs: 10,
            min_duration: 0.5,
        }
    }
}

impl ClippingConfig {
    /// Push one message per invalid setting, prefixed with `path`.
    pub fn validate(&self, path: &str, errors: &mut Vec<String>) {
        check::within(path, "threshold", self.threshold, 0.5, 1.0, errors);
        check::within(
            path,
            "min_run",
            f64::from(self.min_run),
            1.0,
            1000.0,
            errors,
        );
        check::within(path, "window_ms", self.window_ms, 10.0, 2000.0, errors);
        check::within(path, "min_runs", f64::from(self.min_runs), 1.0, 1e6, errors);
        check::within(
            path,
            "min_overs",
            f64::from(self.min_overs),
            1.0,
            1e6,
            errors,
        );
        check::positive(path, "min_duration", self.min_duration, errors);
    }
}

/// The clipping detector's state.
pub struct ClippingDetector {
    threshold: f32,
    min_run: u32,
    min_runs: u32,
    min_overs: u32,
    episode: Episode,
    windows: AudioWindows,
    /// Runs and samples over full scale counted in the window in progress.
    runs: u32,
    overs: u32,
    /// Per channel: length and sign of the run of full-scale samples in progress.
    run_len: [u32; MAX_AUDIO_CHANNELS],
    run_sign: [bool; MAX_AUDIO_CHANNELS],
    /// Largest magnitude of the window in progress.
    window_peak: f32,
    /// Runs and peak of the current episode.
    episode_runs: u64,
    episode_peak: f32,
    period_runs: u64,
}

impl ClippingDetector {
    pub fn new(cfg: &ClippingConfig) -> Self {
        ClippingDetector {
            threshold: cfg.threshold as f32,
            min_run: cfg.min_run.max(1),
            min_runs: cfg.min_runs.max(1),
            min_overs: cfg.min_overs.max(1),
            episode: Episode::new(kinds::AUDIO_CLIPPING, cfg.severity, cfg.min_duration),
            windows: AudioWindows::new(cfg.window_ms),
            runs: 0,
            overs: 0,
            run_len: [0; MAX_AUDIO_CHANNELS],
            run_sign: [false; MAX_AUDIO_CHANNELS],
            window_peak: 0.0,
            episode_runs: 0,
            episode_peak: 0.0,
            period_runs: 0,
        }
    }

    /// Drop the window in progress, and the runs in progress.
    fn restart_window(&mut self) {
        self.runs = 0;
        self.overs = 0;
        self.window_peak = 0.0;
        self.run_len = [0; MAX_AUDIO_CHANNELS];
    }

    /// Count the clipped runs of `seg`, channel `c`, continuing the run in progress.
    fn count_runs(&mut self, c: usize, seg: &[f32]) {
        let thr = self.threshold;
        let (mut len, mut sign) = (self.run_len[c], self.run_sign[c]);
        for &x in seg {
            let neg = x < 0.0;
            if x.abs() > OVER {
                self.overs += 1;
            }
            if x.abs() >= thr {
                if len > 0 && neg != sign {
                    len = 0;
                }
                sign = neg;
                len += 1;
                if len == self.min_run {
                    self.runs += 1;
                }
            } else {
                len = 0;
            }
        }
        self.run_len[c] = len;
        self.run_sign[c] = sign;
    }

    fn finish_window(&mut self, w: Window, out: &mut Findings) {
        let (start, end) = (w.start, w.end);
        let (runs, overs, peak) = (self.runs, self.overs, self.window_peak);
        self.period_runs += u64::from(runs);
        // Runs in progress carry over into the next window.
        self.runs = 0;
        self.overs = 0;
        self.window_peak = 0.0;
        if runs >= self.min_runs || overs >= self.min_overs {
            if !self.episode.in_run() {
                self.episode_runs = 0;
                self.episode_peak = 0.0;
            }
            self.episode_runs += u64::from(runs);
            self.episode_peak = self.episode_peak.max(peak);
            let (n, p) = (self.episode_runs, self.episode_peak);
            self.episode.bad(start, end, out, |d| details(d, n, p));
        } else {
            let (n, p) = (self.episode_runs, self.episode_peak);
            self.episode.good(start, out, |d| details(d, n, p));
        }
    }
}

fn details(d: &mut avmon_core::Details, runs: u64, peak: f32) {
    d.insert("clipped_runs".into(), runs.into());
    put(d, "peak_dbfs", 20.0 * f64::from(peak.max(1e-6)).log10());
}

impl Detector for ClippingDetector {
    fn kind(&self) -> &'static str {
        kinds::AUDIO_CLIPPING
    }

    fn on_audio(&mut self, buf: &AudioBuffer<'_>, out: &mut Findings) {
        self.episode.flush(out);
        let Some(start) = self.windows.begin(buf) else {
            return;
        };
        if start.change != Change::None {
            self.restart_window();
        }
        let planes = &buf.planes[..start.channels];
        let mut pos = 0;
        while let Some(piece) = self.windows.next(&mut pos, start.samples) {
            for (c, plane) in planes.iter().enumerate() {
                let seg = &plane[piece.from..piece.to];
                let peak = seg.iter().fold(0.0f32, |m, &x| m.max(x.abs()));
                self.window_peak = self.window_peak.max(peak);
                if peak >= self.threshold {
                    self.count_runs(c, seg);
                } else {
                    self.run_len[c] = 0;
                }
            }
            if let Some(w) = piece.done {
                self.finish_window(w, out);
            }
        }
    }

    fn on_tick(&mut self, _now: f64, out: &mut Findings) {
        self.episode.flush(out);
    }

    fn take_metrics(&mut self, put: &mut dyn FnMut(&'static str, f64)) {
        if self.windows.sample_rate > 0 {
            put("clipped_runs", std::mem::take(&mut self.period_runs) as f64);
        }
    }

    fn reset(&mut self) {
        self.restart_window();
        self.windows.reset();
        self.episode.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use avmon_core::FindingEdge::{Begin, End};

    /// A 440 Hz sine of peak `amp`, hard-clipped at ±`ceiling`.
    fn tone(n: usize, amp: f32, ceiling: f32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                (amp * (i as f32 * 440.0 * std::f32::consts::TAU / SR as f32).sin())
                    .clamp(-ceiling, ceiling)
            })
            .collect()
    }

    #[test]
    fn a_clipped_stretch_is_found_to_a_window_whatever_the_buffer_sizes() {
        let ch = [
            tone(secs(2.0), 0.5, 1.0),
            tone(secs(3.0), 4.0, 1.0),
            tone(secs(2.0), 0.5, 1.0),
        ]
        .concat();
        for sizes in [&[1024][..], &[1000, 7, 333, 4097], &[1]] {
            let mut d = ClippingDetector::new(&ClippingConfig::default());
            let seen = run_audio(&mut d, &[ch.clone(), ch.clone()], SR, sizes);
            assert_eq!(edges(&seen), [(Begin, 2.0), (End, 5.0)], "{sizes:?}");
            assert_eq!(seen[0].f.kind, "audio.clipping");
            // 880 clipped half-cycles per second per channel.
            let runs = seen[1].f.details["clipped_runs"].as_u64().unwrap();
            assert!((5000..=5400).contains(&runs), "{runs}");
            assert_eq!(seen[1].f.details["peak_dbfs"], 0.0);
        }
    }

    #[test]
    fn loud_unclipped_audio_and_lone_peaks_are_not_clipping() {
        let mut rng = Rng::new(5);
        // Noise peaking just below full scale, a sine touching full scale once per cycle, and
        // isolated full-scale samples.
        let mut ch: Vec<f32> = (0..secs(3.0)).map(|_| 0.99 * rng.signed()).collect();
        for i in (0..ch.len()).step_by(97) {
            ch[i] = 1.0;
        }
        ch.extend(tone(secs(3.0), 1.0, 1.0));
        let mut d = ClippingDetector::new(&ClippingConfig::default());
        assert!(run_audio(&mut d, &[ch], SR, &[1024]).is_empty());
    }

    #[test]
    fn lossy_overshoot_still_counts() {
        // Flat tops rippling around full scale, as an AAC decode of a clipped tone: the tops go
        // over 1.0 and dip below the threshold, so each breaks into short runs.
        let ch: Vec<f32> = tone(secs(3.0), 4.0, 1.0)
            .iter()
            .enumerate()
            .map(|(i, &x)| x * (1.0 + 0.05 * ((i as f32) * 0.5).sin()))
            .collect();
        let mut d = ClippingDetector::new(&ClippingConfig::default());
        let seen = run_audio(&mut d, &[ch], SR, &[1024]);
        assert_eq!(edges(&seen), [(Begin, 0.0)]);
        let peak = seen[0].f.details["peak_dbfs"].as_f64().unwrap();
        assert!(peak > 0.0, "{peak}");
    }

    #[test]
    fn samples_over_full_scale_count_without_runs() {
        // Single overs every 20 samples (2.4 per ms), never 3 in a row at full scale.
        let ch: Vec<f32> = (0..secs(2.0))
            .map(|i| match i % 20 {
                0 => 1.05,
                10 => -1.04,
                _ => 0.5,
            })
            .collect();
        let mut d = ClippingDetector::new(&ClippingConfig::default());
        assert_eq!(
            edges(&run_audio(&mut d, &[ch], SR, &[1024])),
            [(Begin, 0.0)]
        );
        // A few overs per window (a hot, clean master) are not clipping.
        let ch: Vec<f32> = (0..secs(2.0))
            .map(|i| if i % 2400 == 0 { 1.02 } else { 0.5 })
            .collect();
        let mut d = ClippingDetector::new(&ClippingConfig::default());
        assert!(run_audio(&mut d, &[ch], SR, &[1024]).is_empty());
    }

    #[test]
    fn short_bursts_and_min_duration() {
        // 0.25 s of clipping: one window, below the 0.5 s default.
        let ch = [
            tone(secs(1.0), 0.5, 1.0),
            tone(secs(0.25), 4.0, 1.0),
            tone(secs(1.0), 0.5, 1.0),
        ]
        .concat();
        let mut d = ClippingDetector::new(&ClippingConfig::default());
        assert!(run_audio(&mut d, std::slice::from_ref(&ch), SR, &[1024]).is_empty());
        let cfg = ClippingConfig {
            min_duration: 0.25,
            ..ClippingConfig::default()
        };
        let mut d = ClippingDetector::new(&cfg);
        assert_eq!(
            edges(&run_audio(&mut d, &[ch], SR, &[1024])),
            [(Begin, 1.0), (End, 1.25)]
        );
    }

    #[test]
    fn metrics_and_reset() {
        let mut d = ClippingDetector::new(&ClippingConfig::default());
        let seen = run_audio(&mut d, &[tone(secs(2.0), 4.0, 1.0)], SR, &[1024]);
        assert_eq!(seen.len(), 1);
        let mut m = Vec::new();
        d.take_metrics(&mut |k, v| m.push((k, v)));
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].0, "clipped_runs");
        assert!((1700.0..1800.0).contains(&m[0].1), "{m:?}");
        d.reset();
        let mut out = Vec::new();
        d.on_tick(3.0, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].edge, End);
        assert_eq!(out[0].details["reset"], true);
    }

    #[test]
    fn validate_names_each_bad_field() {
        let cfg = ClippingConfig {
            threshold: 1.5,
            min_run: 0,
            window_ms: 1.0,
            min_runs: 0,
            min_overs: 0,
            min_duration: -1.0,
            ..ClippingConfig::default()
        };
        let mut errors = Vec::new();
        cfg.validate("clipping", &mut errors);
        assert_eq!(
            errors,
            [
                "clipping.threshold: must be between 0.5 and 1 (got 1.5)",
                "clipping.min_run: must be between 1 and 1000 (got 0)",
                "clipping.window_ms: must be between 10 and 2000 (got 1)",
                "clipping.min_runs: must be between 1 and 1000000 (got 0)",
                "clipping.min_overs: must be between 1 and 1000000 (got 0)",
                "clipping.min_duration: must be > 0 (got -1)",
            ]
        );
    }
}
