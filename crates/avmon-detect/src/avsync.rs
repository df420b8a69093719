//! `av.sync`: audio and video out of sync (lip sync), by two methods that report one kind.
//!
//! # Content: flash-and-beep test signals
//!
//! Broadcast sync test generators put a full-frame white *flash* frame together with a short tone
//! *beep*, repeated (every 1 or 2 s; `avmon synth --content sync` makes one). The detector finds
//! both and measures their offset, positive when the audio is late:
//!
//! - **Flash**: a frame where at least `flash_ratio` of the picture (8×8 subsampled grid) is at or
//!   above `flash_luma` (limited range; mapped for full-range pictures) while the previous frame
//!   had less than half that fraction, and the picture leaves white again within 0.25 s (a cut to
//!   a white scene is not a flash). Its time is the flash frame's own presentation time (`t`),
//!   exact: no half-frame error.
//! - **Beep**: a tone burst onset out of quiet audio. The mean square of all channels over a
//!   sliding 0.5 ms window is the envelope; after ≥ 100 ms below −45 dBFS, a rise above −30 dBFS
//!   starts a 5 ms capture, whose peak is the burst's level; the onset is where the envelope crosses
//!   half that level (linearly interpolated between samples) minus half a window. For a 1 kHz burst
//!   that point is exact to well under 1 µs whatever its phase (sin² has a 0.5 ms period, so the
//!   window's plateau has no ripple; the half-level crossing is where the power is greatest);
//!   other tone frequencies measure within a fraction of a ms; codec smearing (AAC pre-echo) is symmetric enough around the onset that decoded
//!   beeps measure within about ±0.5 ms.
//! - **Pairs**: each flash is paired with the nearest beep within ±`pair_window_ms` once the audio
//!   has been seen that far; the offset is `beep − flash`. On a clean encode (`avmon synth`,
//!   H.264 + AAC in MPEG-TS, 25–60 fps) the measured offset is within ±1 ms of the injected one.
//!   The AAC encoder's priming delay (1024 samples) needs no correction: the encoder shifts its
//!   packet timestamps back by the priming, and decoded buffers carry them, so the timestamps
//!   already account for it.
//!
//! A pair is in sync when `-early_ms ≤ offset ≤ late_ms` (default: ITU-R BT.1359 detectability,
//! audio at most 45 ms early or 125 ms late). `min_pairs` consecutive out-of-window pairs raise
//! `av.sync`; its onset is the first of them (its flash time); it ends at the flash of the first
//! in-window pair, or, when pairs stop (the test signal went away) for 10 s, at the last
//! out-of-window flash with `"signal_lost": true`. Programme content without flashes measures
//! nothing and raises nothing.
//!
//! # Timestamps: the two clocks drifting apart
//!
//! The audio clock (end of the latest audio buffer) minus the video clock (end of the latest
//! frame) is sampled at each frame and averaged per 1 s window (of video time). That *skew* is
//! set by the muxer's interleaving (packets of a given time arrive together within up to ~1 s),
//! so it is not compared with zero but with a baseline: the median of the 2nd–4th windows of the
//! connection (the first is skipped: decoder start-up and AAC priming). Windows whose mean skew is
//! more than `timestamp_tolerance_ms` from the baseline for `min_duration` seconds raise
//! `av.sync` with `"method": "timestamps"`: audio timestamps that jump or drift relative to
//! video while the packets keep arriving together (an encoder whose audio clock drifts, a
//! remuxer that shifted one stream's timestamps in place). Onset and end are exact to a window.
//! Windows in which either stream delivered nothing (a loss: `audio.loss`/`video.loss` report
//! that) are skipped. A remux that shifts a stream's timestamps *and* re-interleaves its packets
//! by the new timestamps leaves no trace in timestamps alone; the content method measures the
//! resulting offset on a test signal.
//!
//! Both methods report the same kind: the defect is open while either method sees it; the `Begin`
//! carries the details of the method that opened it, the `End` comes when both have ended.
//!
//! # Learned lip sync
//!
//! [`LipSyncModel`] is the seam for a model-backed estimator (talking-head lip sync on programme
//! content). `model = "path"` names one; this build has none built in and rejects the setting at
//! validation with a clear message. A model plugged in with [`AvSyncDetector::with_model`] feeds
//! its confident estimates into the same pairs/episode logic as flash-and-beep pairs.
//!
//! # Output
//!
//! Details: `method` (`"content"` or `"timestamps"`), `offset_ms` (content) or `skew_ms`
//! (timestamps, deviation from the baseline), `early_ms`/`late_ms` or `tolerance_ms`;
//! `duration_s` on `End`. Metrics per period: `av_sync_offset_ms` (median of the period's pairs)
//! and `av_sync_skew_ms` (the latest window's deviation from the baseline). Summary:
//! `av_sync.offset_ms` (median of all pairs, to 0.1 ms), `av_sync.offset_min_ms`,
//! `av_sync.offset_max_ms`, `av_sync.pairs`, `av_sync.unpaired_flashes`, and
//! `av_sync.timestamp_skew_max_ms` (largest |window skew − baseline|).
//!
//! # Cost
//!
//! Per frame, one pass over an 8×8 subsampled grid counting white samples. Per audio sample, a
//! multiply-add per channel (vectorised in chunks) and a running 0.5 ms sum. No allocation after
//! construction: flashes, beeps and the period's pairs live in fixed rings, and the whole-input
//! median comes from a preallocated 0.1 ms histogram.

use avmon_core::{kinds, AudioBuffer, Detector, FindingEdge, Findings, Severity, Tier, VideoFrame};
use serde::{Deserialize, Serialize};

use crate::check;
use crate::episode::{put, Episode};
use crate::luma::{full_range_threshold, quarter_lanes, QUARTER_CHUNK};

/// Settings of the A/V sync detector.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AvSyncConfig {
    /// Run this detector.
    pub enabled: bool,
    /// Severity of the findings (and so of the alerts).
    pub severity: Severity,
    /// Audio earlier than the video by more than this many ms is out of sync.
    pub early_ms: f64,
    /// Audio later than the video by more than this many ms is out of sync.
    pub late_ms: f64,
    /// Consecutive out-of-window flash/beep pairs needed to raise.
    pub min_pairs: u32,
    /// A flash pairs with the nearest beep at most this many ms away.
    pub pair_window_ms: f64,
    /// Limited-range luma at or above which a sample is white, for flash frames.
    pub flash_luma: u8,
    /// Fraction of white samples that makes a flash frame.
    pub flash_ratio: f64,
    /// Also watch the audio and video clocks for divergence.
    pub timestamps: bool,
    /// Skew change (ms) beyond which the clocks have diverged.
    pub timestamp_tolerance_ms: f64,
    /// Seconds of clock divergence before it is reported.
    pub min_duration: f64,
    /// A learned lip-sync model file (not built into this build: setting it is an error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

impl Default for AvSyncConfig {
    fn default() -> Self {
        AvSyncConfig {
            enabled: true,
            severity: Severity::Major,
            early_ms: 45.0,
            late_ms: 125.0,
            min_pairs: 2,
            pair_window_ms: 500.0,
            flash_luma: 180,
            flash_ratio: 0.9,
            timestamps: true,
            timestamp_tolerance_ms: 150.0,
            min_duration: 2.0,
            model: None,
        }
    }
}

/// Largest `pair_window_ms`.
const MAX_PAIR_WINDOW_MS: f64 = 2000.0;

impl AvSyncConfig {
    /// Push one message per invalid setting, prefixed with `path`.
    pub fn validate(&self, path: &str, errors: &mut Vec<String>) {
        let window = if self.pair_window_ms.is_finite() {
            self.pair_window_ms
        } else {
            MAX_PAIR_WINDOW_MS
        };
        check::within(path, "early_ms", self.early_ms, 0.0, window, errors);
        check::within(
            path,
            "flash_luma",
            f64::from(self.flash_luma),
            17.0,
            235.0,
            errors,
        );
        check::within(path, "flash_ratio", self.flash_ratio, 0.5, 1.0, errors);
        check::within(path, "late_ms", self.late_ms, 0.0, window, errors);
        if self.min_pairs == 0 {
            errors.push(format!("{path}.min_pairs: must be at least 1 (got 0)"));
        }
        check::positive(path, "min_duration", self.min_duration, errors);
        if let Some(m) = &self.model {
            errors.push(format!(
                "{path}.model: learned lip-sync models are not built into this avmon (got {m:?}); \
                 remove the setting (flash-and-beep and timestamp checks need none)"
            ));
        }
        check::within(
            path,
            "pair_window_ms",
            self.pair_window_ms,
            1.0,
            MAX_PAIR_WINDOW_MS,
            errors,
        );
        check::positive(
            path,
            "timestamp_tolerance_ms",
            self.timestamp_tolerance_ms,
            errors,
        );
    }
}

/// A learned lip-sync estimator (e.g. an audio-visual network watching faces and speech), for
/// programme content without test signals. It sees the same borrowed frames as the detector and,
/// when it is confident, gives an offset estimate.
pub trait LipSyncModel: Send {
    fn on_video(&mut self, frame: &VideoFrame<'_>);
    fn on_audio(&mut self, buf: &AudioBuffer<'_>);
    /// A new estimate since the last call: `(media time, offset ms, confidence 0..=1)`, positive
    /// offset = audio late.
    fn estimate(&mut self) -> Option<(f64, f64, f64)>;
}

/// Load the model named by `model = "path"`. This build has none built in.
pub fn load_model(path: &str) -> Result<Box<dyn LipSyncModel>, String> {
    Err(format!(
        "av_sync.model {path:?}: learned lip-sync models are not built into this avmon"
    ))
}

/// Model estimates below this confidence are ignored.
const MIN_MODEL_CONFIDENCE: f64 = 0.5;

/// A flash longer than this is a white scene, not a flash.
const MAX_FLASH_S: f64 = 0.25;
/// Pairs stop for this long: the content episode ends (`signal_lost`).
const STALE_S: f64 = 10.0;
/// Envelope window, seconds.
const ENV_WINDOW_S: f64 = 0.0005;
/// Quiet needed before a beep onset, seconds, and its level (mean square).
const QUIET_S: f64 = 0.1;
const ARM_POWER: f64 = 3.162_277_7e-5; // −45 dBFS
/// Envelope level that starts a beep capture (mean square).
const TRIGGER_POWER: f64 = 1e-3; // −30 dBFS
/// Length of the capture that finds the burst's level, seconds.
const CAPTURE_S: f64 = 0.005;
/// Timestamp-method window, seconds of video.
const SKEW_WINDOW_S: f64 = 1.0;
/// A window where one stream delivered nothing for longer than this is not measured.
const MAX_STALL_S: f64 = 1.0;
/// Baseline windows (after the first, skipped).
const BASELINE_WINDOWS: usize = 3;
/// Histogram resolution of the whole-input offsets, ms.
const BIN_MS: f64 = 0.1;

const RING: usize = 16;
const ENV_RING: usize = 256;
const CAPTURE_LEN: usize = 1024;
const PERIOD_PAIRS: usize = 64;

/// A fixed ring of the latest times.
#[derive(Clone, Copy, Debug)]
struct Times {
    t: [f64; RING],
    len: usize,
}

impl Times {
    const fn new() -> Self {
        Times {
            t: [0.0; RING],
            len: 0,
        }
    }

    fn push(&mut self, t: f64) {
        if self.len == RING {
            self.remove(0);
        }
        self.t[self.len] = t;
        self.len += 1;
    }

    fn remove(&mut self, i: usize) {
        self.t.copy_within(i + 1..self.len, i);
        self.len -= 1;
    }

    fn as_slice(&self) -> &[f64] {
        &self.t[..self.len]
    }
}

/// Median of a small slice (sorted in place).
fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some((v[(n - 1) / 2] + v[n / 2]) / 2.0)
}

/// Beep onset finder over the audio envelope.
struct BeepFinder {
    rate: u32,
    channels: usize,
    /// Envelope window in samples.
    n: usize,
    ring: [f32; ENV_RING],
    ri: usize,
    sum: f64,
    prev_env: f32,
    quiet_run: usize,
    quiet_len: usize,
    /// Quiet long enough for an onset; samples since the envelope left quiet.
    armed: bool,
    rise_run: usize,
    /// Capture in progress: envelope from the sample before the trigger on.
    capture: [f32; CAPTURE_LEN],
    cap_len: usize,
    cap_target: usize,
    cap_t: f64,
    expected_t: f64,
}

impl BeepFinder {
    fn new() -> Self {
        BeepFinder {
            rate: 0,
            channels: 0,
            n: 1,
            ring: [0.0; ENV_RING],
            ri: 0,
            sum: 0.0,
            prev_env: 0.0,
            quiet_run: 0,
            quiet_len: 0,
            armed: false,
            rise_run: 0,
            capture: [0.0; CAPTURE_LEN],
            cap_len: 0,
            cap_target: 0,
            cap_t: 0.0,
            expected_t: f64::NAN,
        }
    }

    /// Forget the envelope (format change, timestamp gap, reconnect): re-arm needs quiet again.
    fn restart(&mut self) {
        self.ring = [0.0; ENV_RING];
        self.ri = 0;
        self.sum = 0.0;
        self.prev_env = 0.0;
        self.quiet_run = 0;
        self.armed = false;
        self.rise_run = 0;
        self.cap_len = 0;
    }

    /// Feed a buffer; push the onsets found into `beeps`.
    fn feed(&mut self, buf: &AudioBuffer<'_>, beeps: &mut Times) {
        let channels = buf.channels();
        if buf.sample_rate == 0 || channels == 0 {
            return;
        }
        let rate = f64::from(buf.sample_rate);
        if buf.sample_rate != self.rate || channels != self.channels {
            self.rate = buf.sample_rate;
            self.channels = channels;
            self.n = ((rate * ENV_WINDOW_S).round() as usize).clamp(2, ENV_RING);
            self.quiet_len = (rate * QUIET_S) as usize;
            self.cap_target = ((rate * CAPTURE_S) as usize).clamp(8, CAPTURE_LEN - 2) + 2;
            self.restart();
        } else if (buf.t - self.expected_t).abs() > 0.001 {
            self.restart();
        }
        let samples = buf.planes.iter().map(|p| p.len()).min().unwrap_or(0);
        self.expected_t = buf.t + samples as f64 / rate;
        let scale = 1.0 / channels as f32;
        let inv_n = 1.0 / self.n as f64;
        let mut energy = [0.0f32; 256];
        let mut pos = 0;
        while pos < samples {
            let len = (samples - pos).min(energy.len());
            let e = &mut energy[..len];
            e.fill(0.0);
            for plane in buf.planes {
                for (acc, x) in e.iter_mut().zip(&plane[pos..pos + len]) {
                    *acc += x * x;
                }
            }
            for (k, &v) in e.iter().enumerate() {
                let v = v * scale;
                let old = std::mem::replace(&mut self.ring[self.ri], v);
                self.sum += f64::from(v) - f64::from(old);
                self.ri += 1;
                if self.ri == self.n {
                    self.ri = 0;
                    // Re-sum once per window so rounding never accumulates.
                    self.sum = self.ring[..self.n].iter().map(|&x| f64::from(x)).sum();
                }
                let env = (self.sum.max(0.0) * inv_n) as f32;
                if self.cap_len > 0 {
                    self.capture[self.cap_len] = env;
                    self.cap_len += 1;
                    if self.cap_len == self.cap_target {
                        beeps.push(self.onset());
                        self.cap_len = 0;
                    }
                } else if f64::from(env) < ARM_POWER {
                    self.quiet_run += 1;
                    self.rise_run = 0;
                    if self.quiet_run >= self.quiet_len {
                        self.armed = true;
                    }
                } else {
                    self.quiet_run = 0;
                    if self.armed && f64::from(env) > TRIGGER_POWER {
                        self.armed = false;
                        self.capture[0] = self.prev_env;
                        self.capture[1] = env;
                        self.cap_len = 2;
                        self.cap_t = buf.t + (pos + k) as f64 / rate;
                    } else if self.armed {
                        // Rising slowly from quiet (a fade, not a burst) disarms.
                        self.rise_run += 1;
                        self.armed = self.rise_run <= self.quiet_len / 20;
                    }
                }
                self.prev_env = env;
            }
            pos += len;
        }
    }

    /// The onset of the captured burst: half-level crossing of the envelope, minus half a window.
    fn onset(&self) -> f64 {
        let cap = &self.capture[..self.cap_len];
        let half = cap.iter().fold(0.0f32, |m, &v| m.max(v)) / 2.0;
        let j = cap.iter().position(|&v| v >= half).unwrap_or(1).max(1);
        let (a, b) = (cap[j - 1], cap[j]);
        let frac = if b > a {
            f64::from((half - a) / (b - a)).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let rate = f64::from(self.rate);
        // capture[j] is the envelope at sample (trigger − 1 + j); a window ending at sample m
        // holds samples m−n+1..=m, so the energy of a burst starting at s0 is half in at
        // m + 0.5 − s0 = n/2.
        let cross = self.cap_t + (j as f64 - 2.0 + frac) / rate;
        cross + (0.5 - self.n as f64 / 2.0) / rate
    }
}

/// Flash finder over the luma plane.
#[derive(Clone, Copy, Debug, Default)]
struct FlashFinder {
    prev_ratio: f64,
    /// Start of a white run that may be a flash.
    candidate: Option<f64>,
}

/// White-sample fraction on a grid of every 8th row and every 4th column.
fn white_ratio(frame: &VideoFrame<'_>, luma: u8) -> f64 {
    let th = if frame.full_range {
        full_range_threshold(luma)
    } else {
        luma
    };
    let plane = &frame.luma;
    let (mut white, mut count) = (0u64, 0u64);
    for y in (0..plane.height).step_by(8) {
        let row = plane.row(y);
        // 16 samples at a time (see `quarter_lanes`), counted in byte lanes (added up every 255
        // chunks), then the rest of the row's whole 4-byte chunks one by one.
        let (body, rest) = row.split_at(row.len() / QUARTER_CHUNK * QUARTER_CHUNK);
        let mut w = 0u32;
        for piece in body.chunks(255 * QUARTER_CHUNK) {
            let mut lanes = [0u8; QUARTER_CHUNK / 4];
            for c in piece.chunks_exact(QUARTER_CHUNK) {
                let v = quarter_lanes(c.try_into().expect("a chunk"));
                for (n, v) in lanes.iter_mut().zip(v) {
                    *n += u8::from((v & 0xff) as u8 >= th);
                }
            }
            w += lanes.iter().map(|&n| u32::from(n)).sum::<u32>();
        }
        w += rest
            .chunks_exact(4)
            .map(|c| u32::from(c[0] >= th))
            .sum::<u32>();
        white += u64::from(w);
        count += (row.len() / 4) as u64;
    }
    if count == 0 {
        0.0
    } else {
        white as f64 / count as f64
    }
}

/// Which method a finding comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Content = 0,
    Timestamps = 1,
}

/// The timestamp method's window and baseline.
#[derive(Clone, Copy, Debug)]
struct Skew {
    audio_end: f64,
    audio_seen: bool,
    video_end: f64,
    /// The video clock when the latest audio buffer arrived, and the latest frame's time.
    video_end_at_audio: f64,
    last_frame_t: f64,
    win_start: f64,
    win_sum: f64,
    win_n: u32,
    /// Longest stretch in the window during which one stream delivered nothing.
    win_stall: f64,
    windows: usize,
    baseline_parts: [f64; BASELINE_WINDOWS],
    baseline: Option<f64>,
    last_dev: Option<f64>,
    max_dev: f64,
    run_dev: f64,
}

impl Skew {
    fn new() -> Self {
        Skew {
            audio_end: 0.0,
            audio_seen: false,
            video_end: f64::NAN,
            video_end_at_audio: f64::NAN,
            last_frame_t: f64::NAN,
            win_start: f64::NAN,
            win_sum: 0.0,
            win_n: 0,
            win_stall: 0.0,
            windows: 0,
            baseline_parts: [0.0; BASELINE_WINDOWS],
            baseline: None,
            last_dev: None,
            max_dev: 0.0,
            run_dev: 0.0,
        }
    }
}

/// The A/V sync detector's state.
pub struct AvSyncDetector {
    /// The stream's fidelity tier: a change forgets what was measured at the old one.
    tier: Tier,
    cfg: AvSyncConfig,
    content: Episode,
    stamps: Episode,
    /// Findings of one method before merging into one kind.
    scratch: Findings,
    open: [bool; 2],
    merged_onset: f64,
    flash: FlashFinder,
    beep: BeepFinder,
    flashes: Times,
    beeps: Times,
    consecutive_bad: u32,
    first_bad_t: f64,
    last_bad_t: f64,
    last_pair_t: f64,
    /// Whole-input offsets, 0.1 ms bins over ±pair_window_ms.
    hist: Vec<u32>,
    pairs: u64,
    unpaired: u64,
    offset_min: f64,
    offset_max: f64,
    period: [f64; PERIOD_PAIRS],
    period_len: usize,
    skew: Skew,
    model: Option<Box<dyn LipSyncModel>>,
}

impl AvSyncDetector {
    pub fn new(cfg: &AvSyncConfig) -> Self {
        let bins =
            (2.0 * cfg.pair_window_ms.clamp(1.0, MAX_PAIR_WINDOW_MS) / BIN_MS).ceil() as usize + 1;
        AvSyncDetector {
            tier: Tier::Full,
            cfg: cfg.clone(),
            content: Episode::new(kinds::AV_SYNC, cfg.severity, 0.0),
            stamps: Episode::new(kinds::AV_SYNC, cfg.severity, cfg.min_duration),
            scratch: Vec::with_capacity(4),
            open: [false; 2],
            merged_onset: 0.0,
            flash: FlashFinder::default(),
            beep: BeepFinder::new(),
            flashes: Times::new(),
            beeps: Times::new(),
            consecutive_bad: 0,
            first_bad_t: 0.0,
            last_bad_t: 0.0,
            last_pair_t: f64::NEG_INFINITY,
            hist: vec![0; bins],
            pairs: 0,
            unpaired: 0,
            offset_min: f64::INFINITY,
            offset_max: f64::NEG_INFINITY,
            period: [0.0; PERIOD_PAIRS],
            period_len: 0,
            skew: Skew::new(),
            model: None,
        }
    }

    /// A detector whose pairs also come from a learned lip-sync model.
    pub fn with_model(cfg: &AvSyncConfig, model: Box<dyn LipSyncModel>) -> Self {
        let mut d = AvSyncDetector::new(cfg);
        d.model = Some(model);
        d
    }

    /// Move the scratch findings of `method` into `out`, merging both methods into one defect.
    fn merge(&mut self, method: Method, out: &mut Findings) {
        let m = method as usize;
        for mut f in self.scratch.drain(..) {
            match f.edge {
                FindingEdge::Begin => {
                    if !self.open.iter().any(|&o| o) {
                        self.merged_onset = f.t;
                        out.push(f);
                    }
                    self.open[m] = true;
                }
                FindingEdge::End => {
                    if !self.open[m] {
                        continue;
                    }
                    self.open[m] = false;
                    if !self.open.iter().any(|&o| o) {
                        f.t = f.t.max(self.merged_onset);
                        let d = avmon_core::round_ms(f.t - self.merged_onset);
                        f.details.insert("duration_s".into(), d.into());
                        out.push(f);
                    }
                }
            }
        }
    }

    fn flush(&mut self, out: &mut Findings) {
        self.content.flush(&mut self.scratch);
        self.merge(Method::Content, out);
        self.stamps.flush(&mut self.scratch);
        self.merge(Method::Timestamps, out);
    }

    /// Resolve the flashes whose pairing window the audio has passed.
    fn pair(&mut self, out: &mut Findings) {
        let window = self.cfg.pair_window_ms / 1000.0;
        let audio_end = self.skew.audio_end;
        let mut i = 0;
        while i < self.flashes.len {
            let f = self.flashes.t[i];
            if audio_end < f + window + 2.0 * CAPTURE_S {
                i += 1;
                continue;
            }
            self.flashes.remove(i);
            let nearest = self
                .beeps
                .as_slice()
                .iter()
                .enumerate()
                .map(|(k, &b)| (k, b - f))
                .filter(|(_, d)| d.abs() <= window)
                .min_by(|a, b| a.1.abs().total_cmp(&b.1.abs()));
            match nearest {
                Some((k, d)) => {
                    self.beeps.remove(k);
                    self.record(f, d * 1000.0, out);
                }
                None => self.unpaired += 1,
            }
        }
        // Beeps far behind every flash still to come can no longer pair.
        while self.beeps.len > 0 && self.beeps.t[0] < audio_end - 4.0 * window - 1.0 {
            self.beeps.remove(0);
        }
    }

    /// One measured offset (ms, positive = audio late) at media time `t`.
    fn record(&mut self, t: f64, offset_ms: f64, out: &mut Findings) {
        let w = self.cfg.pair_window_ms.clamp(1.0, MAX_PAIR_WINDOW_MS);
        let bin = ((offset_ms.clamp(-w, w) + w) / BIN_MS).round() as usize;
        if let Some(b) = self.hist.get_mut(bin) {
            *b += 1;
        }
        self.pairs += 1;
        self.offset_min = self.offset_min.min(offset_ms);
        self.offset_max = self.offset_max.max(offset_ms);
        if self.period_len == PERIOD_PAIRS {
            self.period.copy_within(1.., 0);
            self.period_len -= 1;
        }
        self.period[self.period_len] = offset_ms;
        self.period_len += 1;
        self.last_pair_t = t;

        let (early, late) = (self.cfg.early_ms, self.cfg.late_ms);
        let details = |d: &mut avmon_core::Details| {
            d.insert("method".into(), "content".into());
            put(d, "offset_ms", offset_ms);
            put(d, "early_ms", early);
            put(d, "late_ms", late);
        };
        if offset_ms < -early || offset_ms > late {
            if self.consecutive_bad == 0 {
                self.first_bad_t = t;
            }
            self.consecutive_bad += 1;
            self.last_bad_t = t;
            if self.consecutive_bad >= self.cfg.min_pairs {
                self.content
                    .bad(self.first_bad_t, t, &mut self.scratch, details);
            }
        } else {
            self.consecutive_bad = 0;
            self.content.good(t, &mut self.scratch, details);
        }
        self.merge(Method::Content, out);
    }

    /// The `k`-th smallest recorded offset (ms), from the histogram.
    fn kth(&self, k: u64) -> f64 {
        let w = self.cfg.pair_window_ms.clamp(1.0, MAX_PAIR_WINDOW_MS);
        let mut seen = 0u64;
        for (i, &c) in self.hist.iter().enumerate() {
            seen += u64::from(c);
            if seen > k {
                return i as f64 * BIN_MS - w;
            }
        }
        f64::NAN
    }

    fn median_offset(&self) -> Option<f64> {
        let n = self.hist.iter().map(|&c| u64::from(c)).sum::<u64>();
        (n > 0).then(|| (self.kth((n - 1) / 2) + self.kth(n / 2)) / 2.0)
    }

    /// A frame for the timestamp method.
    fn skew_on_video(&mut self, frame: &VideoFrame<'_>, out: &mut Findings) {
        let s = &mut self.skew;
        let video_end = frame.t + crate::frame_duration(frame);
        let video_gap = frame.t - s.last_frame_t;
        s.last_frame_t = frame.t;
        s.video_end = video_end;
        if !s.audio_seen {
            return;
        }
        if !s.video_end_at_audio.is_finite() {
            s.video_end_at_audio = video_end;
        }
        if !s.win_start.is_finite() || frame.t < s.win_start {
            s.win_start = frame.t;
        }
        if frame.t >= s.win_start + SKEW_WINDOW_S {
            let (start, end) = (s.win_start, frame.t);
            let valid = s.win_n >= 2 && s.win_stall <= MAX_STALL_S;
            let mean = s.win_sum / f64::from(s.win_n.max(1));
            s.win_start = frame.t;
            s.win_sum = 0.0;
            s.win_n = 0;
            s.win_stall = 0.0;
            if valid {
                self.skew_window(start, end, mean, out);
            } else if self.stamps.in_run() && !self.open[Method::Timestamps as usize] {
                // A stall breaks a divergence run not reported yet: a loss is not a sync fault.
                self.stamps.good(start, &mut self.scratch, |_| {});
            }
        }
        let s = &mut self.skew;
        if video_gap.is_finite() {
            s.win_stall = s.win_stall.max(video_gap);
        }
        s.win_stall = s.win_stall.max(video_end - s.video_end_at_audio);
        s.win_sum += s.audio_end - video_end;
        s.win_n += 1;
    }

    fn skew_window(&mut self, start: f64, end: f64, mean: f64, out: &mut Findings) {
        let s = &mut self.skew;
        s.windows += 1;
        let Some(base) = s.baseline else {
            if s.windows > 1 {
                s.baseline_parts[s.windows - 2] = mean;
                if s.windows - 1 == BASELINE_WINDOWS {
                    let mut parts = s.baseline_parts;
                    s.baseline = median(&mut parts);
                }
            }
            return;
        };
        let dev = mean - base;
        s.last_dev = Some(dev);
        s.max_dev = s.max_dev.max(dev.abs());
        if !self.cfg.timestamps {
            return;
        }
        let tol = self.cfg.timestamp_tolerance_ms;
        if dev.abs() * 1000.0 > tol {
            if !self.stamps.in_run() || dev.abs() > s.run_dev.abs() {
                s.run_dev = dev;
            }
            let run_dev = s.run_dev;
            self.stamps.bad(start, end, &mut self.scratch, |d| {
                d.insert("method".into(), "timestamps".into());
                put(d, "skew_ms", run_dev * 1000.0);
                put(d, "tolerance_ms", tol);
            });
        } else {
            let run_dev = s.run_dev;
            self.stamps.good(start, &mut self.scratch, |d| {
                d.insert("method".into(), "timestamps".into());
                put(d, "skew_ms", run_dev * 1000.0);
            });
        }
        self.merge(Method::Timestamps, out);
    }
}

impl Detector for AvSyncDetector {
    fn kind(&self) -> &'static str {
        kinds::AV_SYNC
    }

    fn on_tier(&mut self, tier: Tier) {
        if crate::tier_changed(&mut self.tier, tier) {
            self.reset();
        }
    }

    fn on_video(&mut self, frame: &VideoFrame<'_>, out: &mut Findings) {
        self.flush(out);
        if self.tier != Tier::Full {
            // Sparse frames: a flash may be among the frames not decoded, and the video clock
            // moves in keyframe steps. Both methods need every frame.
            return;
        }
        let ratio = white_ratio(frame, self.cfg.flash_luma);
        let white = ratio >= self.cfg.flash_ratio;
        let fl = &mut self.flash;
        match fl.candidate {
            Some(start) if !white => {
                fl.candidate = None;
                self.flashes.push(start);
            }
            Some(start) if frame.t - start > MAX_FLASH_S => fl.candidate = None,
            None if white && fl.prev_ratio < self.cfg.flash_ratio / 2.0 => {
                fl.candidate = Some(frame.t)
            }
            _ => {}
        }
        // A candidate dropped for lasting too long is never re-armed until the picture leaves
        // white (prev_ratio stays high).
        self.flash.prev_ratio = ratio;
        if let Some(m) = self.model.as_mut() {
            m.on_video(frame);
            if let Some((t, offset_ms, confidence)) = m.estimate() {
                if confidence >= MIN_MODEL_CONFIDENCE {
                    self.record(t, offset_ms, out);
                }
            }
        }
        self.pair(out);
        self.skew_on_video(frame, out);
    }

    fn on_audio(&mut self, buf: &AudioBuffer<'_>, out: &mut Findings) {
        self.flush(out);
        if self.tier != Tier::Full {
            return;
        }
        self.beep.feed(buf, &mut self.beeps);
        if let Some(m) = self.model.as_mut() {
            m.on_audio(buf);
        }
        let end = buf.t + buf.duration();
        let s = &mut self.skew;
        s.audio_end = end;
        s.audio_seen = true;
        if s.video_end.is_finite() {
            if s.video_end_at_audio.is_finite() {
                s.win_stall = s.win_stall.max(s.video_end - s.video_end_at_audio);
            }
            s.video_end_at_audio = s.video_end;
        }
        self.pair(out);
    }

    fn on_tick(&mut self, now: f64, out: &mut Findings) {
        self.flush(out);
        if self.content.in_run() && now - self.last_pair_t > STALE_S {
            self.consecutive_bad = 0;
            let t = self.last_bad_t;
            self.content.good(t, &mut self.scratch, |d| {
                d.insert("method".into(), "content".into());
                d.insert("signal_lost".into(), true.into());
            });
            self.merge(Method::Content, out);
        }
    }

    fn take_metrics(&mut self, put: &mut dyn FnMut(&'static str, f64)) {
        let n = std::mem::take(&mut self.period_len);
        if let Some(m) = median(&mut self.period[..n]) {
            put("av_sync_offset_ms", m);
        }
        if let Some(d) = self.skew.last_dev {
            put("av_sync_skew_ms", d * 1000.0);
        }
    }

    fn summarize(&self, put: &mut dyn FnMut(&'static str, f64)) {
        if let Some(m) = self.median_offset() {
            // To 0.1 ms; `+ 0.0` turns −0 into 0.
            let r = |v: f64| (v * 10.0).round() / 10.0 + 0.0;
            put("av_sync.offset_ms", r(m));
            put("av_sync.offset_min_ms", r(self.offset_min));
            put("av_sync.offset_max_ms", r(self.offset_max));
            put("av_sync.pairs", self.pairs as f64);
        }
        if self.pairs > 0 || self.unpaired > 0 {
            put("av_sync.unpaired_flashes", self.unpaired as f64);
        }
        if self.skew.baseline.is_some() {
            put(
                "av_sync.timestamp_skew_max_ms",
                (self.skew.max_dev * 1e4).round() / 10.0,
            );
        }
    }

    fn reset(&mut self) {
        self.content.reset();
        self.stamps.reset();
        self.flash = FlashFinder::default();
        self.beep.restart();
        self.beep.expected_t = f64::NAN;
        self.flashes = Times::new();
        self.beeps = Times::new();
        self.consecutive_bad = 0;
        self.period_len = 0;
        self.skew = Skew {
            max_dev: self.skew.max_dev,
            ..Skew::new()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Picture;
    use avmon_core::{Finding, FindingEdge::*, Plane};

    /// A flash-and-beep test signal, as a generator makes it.
    #[derive(Clone, Copy)]
    struct Scene {
        fps: f64,
        rate: u32,
        /// Beep delay after each flash (ms, positive = audio late).
        offset_ms: f64,
        secs: f64,
        flashes: bool,
        beeps: bool,
        /// From this media time on, audio timestamps are shifted (in place, packets keep their
        /// order) by `shift_s`.
        shift_from: f64,
        shift_s: f64,
        /// Audio buffers in `[a, b)` are lost.
        lost: (f64, f64),
    }

    impl Scene {
        fn new(fps: f64, rate: u32, offset_ms: f64) -> Self {
            Scene {
                fps,
                rate,
                offset_ms,
                secs: 12.0,
                flashes: true,
                beeps: true,
                shift_from: f64::INFINITY,
                shift_s: 0.0,
                lost: (0.0, 0.0),
            }
        }

        /// One frame-long 1 kHz burst from phase 0 at `k + offset` for each second `k ≥ 1`.
        fn audio(&self) -> Vec<f32> {
            let n = (self.secs * f64::from(self.rate)) as usize;
            let len = 1.0 / self.fps;
            (0..n)
                .map(|i| {
                    let t = i as f64 / f64::from(self.rate) - self.offset_ms / 1000.0;
                    let k = t.floor();
                    let since = t - k;
                    if self.beeps && k >= 1.0 && since < len {
                        (0.5 * (std::f64::consts::TAU * 1000.0 * since).sin()) as f32
                    } else {
                        0.0
                    }
                })
                .collect()
        }
    }

    fn frame(p: &Picture, t: f64, fps: f64) -> VideoFrame<'_> {
        VideoFrame {
            t,
            duration: 1.0 / fps,
            luma: Plane::new(&p.data, p.stride, p.w, p.h).unwrap(),
            chroma: None,
            full_range: false,
            key: false,
            corrupt: false,
            decode_errors: 0,
            changed_between: None,
            captions: None,
        }
    }

    /// Feed the scene interleaved as a muxer would (audio up to 0.2 s ahead, in 1024-sample
    /// buffers); returns the findings and the summary.
    fn run(det: &mut AvSyncDetector, sc: &Scene) -> (Vec<Finding>, Vec<(&'static str, f64)>) {
        let grey = Picture::new(64, 36, 64);
        let white = Picture::new(64, 36, 235);
        let mono = sc.audio();
        let stereo = [mono.clone(), mono];
        let rate = f64::from(sc.rate);
        let frames = (sc.secs * sc.fps).round() as usize;
        let mut out = Vec::new();
        let (mut i, mut pos) = (0usize, 0usize);
        while i < frames || pos < stereo[0].len() {
            let vt = i as f64 / sc.fps;
            let at = pos as f64 / rate;
            if pos < stereo[0].len() && (i >= frames || at <= vt + 0.2) {
                let len = 1024.min(stereo[0].len() - pos);
                let planes: [&[f32]; 2] = [&stereo[0][pos..pos + len], &stereo[1][pos..pos + len]];
                let t = if at >= sc.shift_from {
                    at + sc.shift_s
                } else {
                    at
                };
                if !(at >= sc.lost.0 && at < sc.lost.1) {
                    let buf = AudioBuffer {
                        t,
                        sample_rate: sc.rate,
                        planes: &planes,
                        layout: 0,
                    };
                    det.on_audio(&buf, &mut out);
                }
                pos += len;
            } else {
                let fps = sc.fps.round() as usize;
                let flash = sc.flashes && i >= fps && i % fps == 0;
                det.on_video(
                    &frame(if flash { &white } else { &grey }, vt, sc.fps),
                    &mut out,
                );
                det.on_tick(vt, &mut out);
                i += 1;
            }
        }
        let mut summary = Vec::new();
        det.summarize(&mut |k, v| summary.push((k, v)));
        (out, summary)
    }

    fn get(summary: &[(&str, f64)], key: &str) -> Option<f64> {
        summary.iter().find(|(k, _)| *k == key).map(|&(_, v)| v)
    }

    #[test]
    fn measures_the_offset_to_a_fraction_of_a_ms_and_raises_outside_bt1359() {
        for (fps, rate) in [(25.0, 48_000), (30.0, 44_100), (50.0, 48_000)] {
            for offset in [-60.0, 0.0, 40.0, 200.0, -100.0, 7.3] {
                let sc = Scene::new(fps, rate, offset);
                let mut det = AvSyncDetector::new(&AvSyncConfig::default());
                let (found, summary) = run(&mut det, &sc);
                let what = format!("{fps} fps, {rate} Hz, offset {offset} ms");
                let got = get(&summary, "av_sync.offset_ms")
                    .unwrap_or_else(|| panic!("{what}: {summary:?}"));
                assert!((got - offset).abs() <= 0.1, "{what}: measured {got}");
                // 11 flashes (1..=11 s); the last is too close to the end to pair when late.
                let pairs = get(&summary, "av_sync.pairs").unwrap();
                assert!(pairs >= 10.0, "{what}: {pairs} pairs");
                let out_of_window = !(-45.0..=125.0).contains(&offset);
                if out_of_window {
                    assert_eq!(found.len(), 1, "{what}: {found:?}");
                    assert_eq!(found[0].edge, Begin);
                    assert_eq!(found[0].kind, "av.sync");
                    assert_eq!(found[0].t, 1.0, "{what}: onset at the first flash");
                    assert_eq!(found[0].details["method"], "content");
                    let d = found[0].details["offset_ms"].as_f64().unwrap();
                    assert!((d - offset).abs() < 0.1, "{what}: {d}");
                } else {
                    assert!(found.is_empty(), "{what}: {found:?}");
                }
            }
        }
    }

    #[test]
    fn no_flashes_or_no_beeps_measure_nothing_and_raise_nothing() {
        for (flashes, beeps) in [(false, true), (true, false), (false, false)] {
            let sc = Scene {
                flashes,
                beeps,
                ..Scene::new(25.0, 48_000, 300.0)
            };
            let mut det = AvSyncDetector::new(&AvSyncConfig::default());
            let (found, summary) = run(&mut det, &sc);
            assert!(found.is_empty(), "{found:?}");
            assert_eq!(get(&summary, "av_sync.offset_ms"), None);
            let unpaired = get(&summary, "av_sync.unpaired_flashes");
            assert_eq!(unpaired.is_some(), flashes, "{summary:?}");
        }
    }

    #[test]
    fn a_single_out_of_window_pair_is_not_enough_and_an_in_window_pair_ends_it() {
        // Offsets: in sync, then 3 s late by 200 ms, then in sync again: Begin at the first
        // late flash, End at the first in-sync one.
        let mut det = AvSyncDetector::new(&AvSyncConfig::default());
        let mut out = Vec::new();
        let offsets = [0.0, 0.0, 200.0, 0.0, 200.0, 200.0, 200.0, 0.0, 0.0];
        for (k, off) in offsets.iter().enumerate() {
            det.record(k as f64 + 1.0, *off, &mut out);
        }
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!((out[0].edge, out[0].t), (Begin, 5.0));
        assert_eq!((out[1].edge, out[1].t), (End, 8.0));
        assert_eq!(out[1].details["duration_s"], 3.0);
        let mut m = Vec::new();
        det.take_metrics(&mut |k, v| m.push((k, v)));
        assert_eq!(m, [("av_sync_offset_ms", 0.0)]);
        let mut m = Vec::new();
        det.take_metrics(&mut |k, v| m.push((k, v)));
        assert!(m.is_empty(), "the period restarts");
    }

    #[test]
    fn pairs_stopping_end_the_defect_and_reset_owes_an_end() {
        let mut det = AvSyncDetector::new(&AvSyncConfig::default());
        let mut out = Vec::new();
        det.record(1.0, 300.0, &mut out);
        det.record(2.0, 300.0, &mut out);
        det.on_tick(5.0, &mut out);
        assert_eq!(out.len(), 1);
        det.on_tick(12.5, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!((out[1].edge, out[1].t), (End, 2.0));
        assert_eq!(out[1].details["signal_lost"], true);

        let mut out = Vec::new();
        det.record(20.0, -100.0, &mut out);
        det.record(21.0, -100.0, &mut out);
        assert_eq!(out.len(), 1);
        det.reset();
        det.on_tick(0.0, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!((out[1].edge, out[1].t), (End, 21.0));
        assert_eq!(out[1].details["reset"], true);
    }

    #[test]
    fn audio_timestamps_jumping_against_video_raise_timestamps_divergence() {
        // From 10 s on the audio is stamped 300 ms late while its packets arrive as before.
        let sc = Scene {
            secs: 20.0,
            shift_from: 10.0,
            shift_s: 0.3,
            flashes: false,
            beeps: false,
            ..Scene::new(25.0, 48_000, 0.0)
        };
        let mut det = AvSyncDetector::new(&AvSyncConfig::default());
        let (found, summary) = run(&mut det, &sc);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].edge, Begin);
        assert_eq!(found[0].details["method"], "timestamps");
        assert!((found[0].t - 10.0).abs() <= 1.0, "onset {}", found[0].t);
        let skew = found[0].details["skew_ms"].as_f64().unwrap();
        assert!((skew - 300.0).abs() < 60.0, "skew {skew}");
        let max = get(&summary, "av_sync.timestamp_skew_max_ms").unwrap();
        assert!((max - 300.0).abs() < 60.0, "{max}");

        // Timestamps off: the same stream raises nothing.
        let cfg = AvSyncConfig {
            timestamps: false,
            ..AvSyncConfig::default()
        };
        let (found, _) = run(&mut AvSyncDetector::new(&cfg), &sc);
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn consistent_timestamps_and_audio_loss_are_not_divergence() {
        for lost in [(0.0, 0.0), (8.0, 11.0), (8.0, 8.5)] {
            let sc = Scene {
                secs: 20.0,
                lost,
                ..Scene::new(25.0, 48_000, 0.0)
            };
            let mut det = AvSyncDetector::new(&AvSyncConfig::default());
            let (found, summary) = run(&mut det, &sc);
            assert!(found.is_empty(), "lost {lost:?}: {found:?}");
            let max = get(&summary, "av_sync.timestamp_skew_max_ms").unwrap();
            assert!(max < 150.0, "lost {lost:?}: {max}");
        }
    }

    #[test]
    fn a_white_scene_is_not_a_flash() {
        // White for 1 s from 2 s, beeps at every second: no pairs from the white scene.
        let grey = Picture::new(32, 32, 64);
        let white = Picture::new(32, 32, 235);
        let mut det = AvSyncDetector::new(&AvSyncConfig::default());
        let mut out = Vec::new();
        for i in 0..100 {
            let t = i as f64 / 25.0;
            let p = if (50..75).contains(&i) { &white } else { &grey };
            det.on_video(&frame(p, t, 25.0), &mut out);
        }
        assert_eq!(det.flashes.len, 0);
    }

    #[test]
    fn validate_names_each_bad_field() {
        let cfg = AvSyncConfig {
            early_ms: -1.0,
            late_ms: 3000.0,
            min_pairs: 0,
            flash_ratio: 0.2,
            model: Some("lipsync.onnx".into()),
            ..AvSyncConfig::default()
        };
        let mut errors = Vec::new();
        cfg.validate("av_sync", &mut errors);
        assert_eq!(errors.len(), 5, "{errors:?}");
        assert_eq!(
            errors[0],
            "av_sync.early_ms: must be between 0 and 500 (got -1)"
        );
        assert!(errors.iter().any(|e| e.starts_with("av_sync.min_pairs:")));
        assert!(errors
            .iter()
            .any(|e| e.starts_with("av_sync.model:") && e.contains("not built into")));
        assert!(load_model("x").is_err());
        let mut errors = Vec::new();
        AvSyncConfig::default().validate("av_sync", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn white_ratio_counts_every_4th_sample_of_every_8th_row() {
        let mut rng = crate::testutil::Rng::new(9);
        for (w, h) in [(1280, 72), (100, 17), (67, 9), (3, 8), (130, 1)] {
            let p = Picture::from_fn(w, h, |_, _| rng.range(0, 255) as u8);
            let plain = {
                let (mut white, mut count) = (0, 0);
                for y in (0..h).step_by(8) {
                    for x in (0..w / 4 * 4).step_by(4) {
                        white += u32::from(p.get(x, y) >= 200);
                        count += 1;
                    }
                }
                if count == 0 {
                    0.0
                } else {
                    f64::from(white) / f64::from(count)
                }
            };
            assert_eq!(white_ratio(&p.frame(0), 200), plain, "{w}x{h}");
        }
    }
}
