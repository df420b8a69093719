//! `audio.silence`: every channel is (nearly) silent.
//!
//! Audio is measured over consecutive windows of `window_ms` (20 ms by default) that run across
//! buffer boundaries: the per-channel sums of squares of the window in progress live in fixed
//! arrays in the state, so decoders' buffer sizes (1024 for AAC, 1152 for MP2, anything after a
//! resampler) do not matter. A window is silent when its loudest channel's RMS is below
//! `threshold_db` dBFS (a full-scale square wave is 0 dBFS), i.e. when *all* channels are below it:
//! a mono programme on one channel of a stereo pair is not silence.
//!
//! The onset (`Begin.t`) is the start of the first silent window; the `Begin` is emitted once
//! silent windows cover `min_duration`; the `End` is at the start of the first loud window. Times
//! are exact to a window. A gap or overlap in buffer timestamps of more than one window, or a change
//! of sample rate or channel count, starts a fresh window.
//!
//! Details: `level_db` (the loudest window of the silent run, dBFS), `duration_s` on `End`. Metrics
//! per period: `audio_rms_db` (RMS over the period of the loudest channel, floor −120 dBFS),
//! `audio_peak_db` (largest absolute sample, floor −120 dBFS) and `silence_ratio` (fraction of
//! windows that were silent, reported or not).

use avmon_core::{kinds, AudioBuffer, Detector, Findings, Severity, MAX_AUDIO_CHANNELS};
use serde::{Deserialize, Serialize};

use crate::check;
use crate::episode::{put, Episode};
use crate::windows::{power_peak, AudioWindows, Change, Window};

/// Levels are floored here, so that digital silence reads −120 dBFS rather than −∞.
pub const FLOOR_DB: f64 = -120.0;

/// Settings of the silence detector.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SilenceConfig {
    /// Run this detector.
    pub enabled: bool,
    /// Severity of the findings (and so of the alerts).
    pub severity: Severity,
    /// A window is silent when every channel's RMS is below this level, in dBFS (−120 to 0).
    pub threshold_db: f64,
    /// Length of the measuring windows, in milliseconds; the onset is exact to one window.
    pub window_ms: f64,
    /// Seconds of continuous silence before it is reported.
    pub min_duration: f64,
}

impl Default for SilenceConfig {
    fn default() -> Self {
        SilenceConfig {
            enabled: true,
            severity: Severity::Major,
            threshold_db: -60.0,
            window_ms: 20.0,
            min_duration: 2.0,
        }
    }
}

impl SilenceConfig {
    /// Push one message per invalid setting, prefixed with `path`.
    pub fn validate(&self, path: &str, errors: &mut Vec<String>) {
        check::within(
            path,
            "threshold_db",
            self.threshold_db,
            FLOOR_DB,
            0.0,
            errors,
        );
        check::positive(path, "window_ms", self.window_ms, errors);
        if self.window_ms.is_finite() && self.window_ms > 1000.0 {
            errors.push(format!(
                "{path}.window_ms: must be at most 1000 (got {})",
                self.window_ms
            ));
        }
        check::positive(path, "min_duration", self.min_duration, errors);
    }
}

/// Power ratio to dBFS, floored.
fn power_db(mean_square: f64) -> f64 {
    if mean_square > 0.0 {
        (10.0 * mean_square.log10()).max(FLOOR_DB)
    } else {
        FLOOR_DB
    }
}

/// Sums over the current metrics period.
#[derive(Clone, Copy, Debug)]
struct Period {
    sum_sq: [f64; MAX_AUDIO_CHANNELS],
    samples: u64,
    peak: f32,
    windows: u64,
    silent: u64,
}

impl Default for Period {
    fn default() -> Self {
        Period {
            sum_sq: [0.0; MAX_AUDIO_CHANNELS],
            samples: 0,
            peak: 0.0,
            windows: 0,
            silent: 0,
        }
    }
}

/// The silence detector's state.
pub struct SilenceDetector {
    /// Mean square below which a window is silent.
    threshold_power: f64,
    episode: Episode,
    windows: AudioWindows,
    /// Sums of squares of the window in progress, per channel.
    sum_sq: [f64; MAX_AUDIO_CHANNELS],
    /// Loudest window of the current silent run, dBFS.
    run_level_db: f64,
    period: Period,
}

impl SilenceDetector {
    pub fn new(cfg: &SilenceConfig) -> Self {
        SilenceDetector {
            threshold_power: 10f64.powf(cfg.threshold_db / 10.0),
            episode: Episode::new(kinds::AUDIO_SILENCE, cfg.severity, cfg.min_duration),
            windows: AudioWindows::new(cfg.window_ms),
            sum_sq: [0.0; MAX_AUDIO_CHANNELS],
            run_level_db: FLOOR_DB,
            period: Period::default(),
        }
    }

    fn finish_window(&mut self, w: Window, out: &mut Findings) {
        let n = w.samples as f64;
        let channels = self.windows.channels;
        let loudest = self.sum_sq[..channels]
            .iter()
            .fold(0.0f64, |m, &s| m.max(s / n));
        let (start, end) = (w.start, w.end);
        self.period.windows += 1;
        for (p, s) in self.period.sum_sq.iter_mut().zip(&self.sum_sq[..channels]) {
            *p += s;
        }
        self.period.samples += w.samples as u64;
        self.sum_sq = [0.0; MAX_AUDIO_CHANNELS];

        let level_db = power_db(loudest);
        if loudest < self.threshold_power {
            self.period.silent += 1;
            if !self.episode.in_run() {
                self.run_level_db = FLOOR_DB;
            }
            self.run_level_db = self.run_level_db.max(level_db);
            let run_level_db = self.run_level_db;
            self.episode
                .bad(start, end, out, |d| put(d, "level_db", run_level_db));
        } else {
            let run_level_db = self.run_level_db;
            self.episode
                .good(start, out, |d| put(d, "level_db", run_level_db));
        }
    }
}

impl Detector for SilenceDetector {
    fn kind(&self) -> &'static str {
        kinds::AUDIO_SILENCE
    }

    fn on_audio(&mut self, buf: &AudioBuffer<'_>, out: &mut Findings) {
        self.episode.flush(out);
        let Some(start) = self.windows.begin(buf) else {
            return;
        };
        if start.change != Change::None {
            self.sum_sq = [0.0; MAX_AUDIO_CHANNELS];
        }
        let planes = &buf.planes[..start.channels];
        let mut pos = 0;
        while let Some(piece) = self.windows.next(&mut pos, start.samples) {
            for (plane, sum) in planes.iter().zip(&mut self.sum_sq) {
                // f32 partial sums (in lanes, which vectorise) are precise enough for a level in
                // dB; the window total is carried in f64.
                let (sq, peak) = power_peak(&plane[piece.from..piece.to]);
                *sum += f64::from(sq);
                self.period.peak = self.period.peak.max(peak);
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
        let p = std::mem::take(&mut self.period);
        if p.windows == 0 {
            return;
        }
        let loudest = p.sum_sq.iter().fold(0.0f64, |m, &s| m.max(s));
        put("audio_rms_db", power_db(loudest / p.samples as f64));
        put(
            "audio_peak_db",
            power_db(f64::from(p.peak) * f64::from(p.peak)),
        );
        put("silence_ratio", p.silent as f64 / p.windows as f64);
    }

    fn reset(&mut self) {
        self.windows.reset();
        self.sum_sq = [0.0; MAX_AUDIO_CHANNELS];
        self.episode.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use avmon_core::FindingEdge::{Begin, End};

    /// Buffer-size patterns: AAC frames, and awkward ones that cut windows anywhere.
    const SIZES: [&[usize]; 4] = [&[1024], &[1000, 7, 333, 4097], &[1], &[960]];

    /// A 440 Hz sine of the given peak amplitude.
    fn tone(n: usize, amp: f32) -> Vec<f32> {
        (0..n)
            .map(|i| amp * (i as f32 * 440.0 * std::f32::consts::TAU / SR as f32).sin())
            .collect()
    }

    /// Uniform noise whose RMS is `db` dBFS.
    fn noise(n: usize, db: f64, rng: &mut Rng) -> Vec<f32> {
        let amp = (10f64.powf(db / 20.0) * 3f64.sqrt()) as f32;
        (0..n).map(|_| amp * rng.signed()).collect()
    }

    fn concat(parts: &[Vec<f32>]) -> Vec<f32> {
        parts.concat()
    }

    #[test]
    fn onset_and_end_are_exact_to_a_window_whatever_the_buffer_sizes() {
        let ch = concat(&[
            tone(secs(1.0), 0.5),
            vec![0.0; secs(3.0)],
            tone(secs(1.0), 0.5),
        ]);
        let stereo = [ch.clone(), ch];
        for sizes in SIZES {
            let mut d = SilenceDetector::new(&SilenceConfig::default());
            let seen = run_audio(&mut d, &stereo, SR, sizes);
            assert_eq!(edges(&seen), [(Begin, 1.0), (End, 4.0)], "sizes {sizes:?}");
            assert_eq!(seen[0].f.kind, "audio.silence");
            assert_eq!(seen[0].f.details["level_db"], FLOOR_DB);
            assert_eq!(seen[1].f.details["duration_s"], 3.0);
        }
        // Silence starting inside a window: onset at the next window.
        let ch = concat(&[
            tone(secs(1.005), 0.5),
            vec![0.0; secs(3.0)],
            tone(secs(1.0), 0.5),
        ]);
        let mut d = SilenceDetector::new(&SilenceConfig::default());
        let seen = run_audio(&mut d, &[ch], SR, &[1024]);
        assert_eq!(seen.len(), 2);
        assert_t(seen[0].f.t, 1.02);
        // The first window with tone again starts at 4.0 (≤ 4.005 + 20 ms).
        assert_t(seen[1].f.t, 4.0);
    }

    #[test]
    fn the_begin_is_emitted_once_min_duration_is_covered() {
        let ch = concat(&[tone(secs(1.0), 0.5), vec![0.0; secs(3.0)]]);
        let mut d = SilenceDetector::new(&SilenceConfig::default());
        let seen = run_audio(&mut d, &[ch], SR, &[960]);
        // Windows of 960 samples, one per buffer: silence from buffer 50, 2 s = 100 buffers.
        assert_eq!(seen[0].at, 149);
        for (silence_s, found) in [(1.98, 0), (2.0, 2)] {
            let ch = concat(&[
                tone(secs(1.0), 0.5),
                vec![0.0; secs(silence_s)],
                tone(secs(1.0), 0.5),
            ]);
            let mut d = SilenceDetector::new(&SilenceConfig::default());
            assert_eq!(
                run_audio(&mut d, &[ch], SR, &[1024]).len(),
                found,
                "{silence_s} s"
            );
        }
    }

    #[test]
    fn one_loud_channel_is_not_silence() {
        let n = secs(5.0);
        let mut d = SilenceDetector::new(&SilenceConfig::default());
        let seen = run_audio(&mut d, &[vec![0.0; n], tone(n, 0.1)], SR, &[1024]);
        assert!(seen.is_empty());
        let mut d = SilenceDetector::new(&SilenceConfig::default());
        let seen = run_audio(&mut d, &[tone(n, 0.1), vec![0.0; n]], SR, &[1024]);
        assert!(seen.is_empty());
    }

    #[test]
    fn low_noise_is_silence_and_quiet_programme_is_not() {
        let mut rng = Rng::new(3);
        let n = secs(5.0);
        let quiet = [noise(n, -65.0, &mut rng), noise(n, -70.0, &mut rng)];
        let mut d = SilenceDetector::new(&SilenceConfig::default());
        let seen = run_audio(&mut d, &quiet, SR, &[1024]);
        assert_eq!(edges(&seen), [(Begin, 0.0)]);
        let level = seen[0].f.details["level_db"].as_f64().unwrap();
        assert!((-66.5..-63.5).contains(&level), "{level}");

        let audible = [noise(n, -55.0, &mut rng), noise(n, -80.0, &mut rng)];
        let mut d = SilenceDetector::new(&SilenceConfig::default());
        assert!(run_audio(&mut d, &audible, SR, &[1024]).is_empty());
    }

    #[test]
    fn other_rates_and_format_changes() {
        // 44.1 kHz: 882-sample windows, still exact.
        let rate = 44_100;
        let ch = concat(&[vec![0.3; 44_100], vec![0.0; 3 * 44_100], vec![0.3; 44_100]]);
        let mut d = SilenceDetector::new(&SilenceConfig::default());
        let seen = run_audio(&mut d, &[ch], rate, &[1024, 1023]);
        assert_eq!(edges(&seen), [(Begin, 1.0), (End, 4.0)]);

        // A sample-rate change drops the window in progress; nothing panics on odd input.
        let mut d = SilenceDetector::new(&SilenceConfig::default());
        let mut out = Vec::new();
        let zeros = vec![0.0f32; 500];
        let planes: [&[f32]; 1] = [&zeros];
        for (i, rate) in [48_000, 44_100, 0, 8_000].into_iter().enumerate() {
            d.on_audio(
                &AudioBuffer {
                    t: i as f64,
                    sample_rate: rate,
                    planes: &planes,
                    layout: 0,
                },
                &mut out,
            );
        }
        let none: [&[f32]; 0] = [];
        d.on_audio(
            &AudioBuffer {
                t: 5.0,
                sample_rate: SR,
                planes: &none,
                layout: 0,
            },
            &mut out,
        );
        assert!(out.is_empty());
    }

    #[test]
    fn a_timestamp_gap_restarts_the_window() {
        // Two 10 ms buffers of tone 1 s apart must not be measured as one window starting at the
        // first: after the gap, the windows start at the new buffer.
        let mut d = SilenceDetector::new(&SilenceConfig::default());
        let mut out = Vec::new();
        let loud = tone(480, 0.5);
        let silent = vec![0.0f32; secs(3.0)];
        for (t, data) in [(0.0, &loud), (1.0, &silent)] {
            let planes: [&[f32]; 1] = [data];
            d.on_audio(
                &AudioBuffer {
                    t,
                    sample_rate: SR,
                    planes: &planes,
                    layout: 0,
                },
                &mut out,
            );
        }
        assert_eq!(out.len(), 1);
        assert_t(out[0].t, 1.0);
    }

    #[test]
    fn metrics() {
        let ch = concat(&[tone(secs(1.0), 1.0), vec![0.0; secs(1.0)]]);
        let mut d = SilenceDetector::new(&SilenceConfig::default());
        run_audio(&mut d, &[ch.clone(), ch], SR, &[1024]);
        let mut m = Vec::new();
        d.take_metrics(&mut |k, v| m.push((k, v)));
        assert_eq!(m[0].0, "audio_rms_db");
        // A full-scale sine is −3.01 dBFS RMS; over twice its length, −6.02.
        assert!((m[0].1 + 6.02).abs() < 0.05, "{m:?}");
        assert_eq!(m[1].0, "audio_peak_db");
        assert!(m[1].1 > -0.01, "{m:?}");
        assert_eq!(m[2], ("silence_ratio", 0.5));
        m.clear();
        d.take_metrics(&mut |k, v| m.push((k, v)));
        assert!(m.is_empty());

        let mut d = SilenceDetector::new(&SilenceConfig::default());
        run_audio(&mut d, &[vec![0.0; secs(1.0)]], SR, &[1024]);
        d.take_metrics(&mut |k, v| m.push((k, v)));
        assert_eq!(
            m,
            [
                ("audio_rms_db", FLOOR_DB),
                ("audio_peak_db", FLOOR_DB),
                ("silence_ratio", 1.0)
            ]
        );
    }

    #[test]
    fn reset_while_silent_ends_the_defect() {
        let mut d = SilenceDetector::new(&SilenceConfig::default());
        let seen = run_audio(&mut d, &[vec![0.0; secs(3.0)]], SR, &[1024]);
        assert_eq!(seen.len(), 1);
        d.reset();
        let mut out = Vec::new();
        d.on_tick(0.5, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].edge, End);
        assert_eq!(out[0].details["reset"], true);
    }

    #[test]
    fn validate_names_each_bad_field() {
        let cfg = SilenceConfig {
            threshold_db: -200.0,
            window_ms: 5000.0,
            min_duration: -1.0,
            ..SilenceConfig::default()
        };
        let mut errors = Vec::new();
        cfg.validate("silence", &mut errors);
        assert_eq!(
            errors,
            [
                "silence.threshold_db: must be between -120 and 0 (got -200)",
                "silence.window_ms: must be at most 1000 (got 5000)",
                "silence.min_duration: must be > 0 (got -1)",
            ]
        );
    }
}
