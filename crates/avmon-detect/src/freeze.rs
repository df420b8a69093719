//! `video.freeze`: the picture stops changing.
//!
//! # Why a reference frame
//!
//! After a lossy encode a frozen picture is not bit-identical from frame to frame: the encoder
//! keeps refining the static picture, and every keyframe re-encodes it with fresh quantisation
//! noise. So "identical to the previous frame" never fires on a real stream, while "almost equal
//! to the previous frame" also fires on slow real motion (a slow pan changes each frame only a
//! little). Like FFmpeg's `freezedetect`, this detector compares every frame against a *reference*,
//! the first frame of the candidate freeze: encoder refinement stays close to the reference,
//! whereas slow motion accumulates away from it and soon exceeds the thresholds, at which point the
//! current frame becomes the new reference and the candidate starts again.
//!
//! # Measure
//!
//! Both pictures are measured on the 2×2 subsampled grid (see `luma`). The current frame is read in
//! place, from the decoder's picture; the reference is kept as the grid's rows, whole (every second
//! row of the picture, odd columns included, so that keeping a frame is one plain copy of memory
//! per row rather than a gather of every second byte), in one buffer that is reallocated only when
//! the resolution changes. A frame is copied only when it becomes the reference. Per frame, against
//! the reference, in 8-bit luma units:
//!
//! - `mafd`: the mean absolute difference over the whole picture. It catches global change (pans,
//!   zooms, fades, cuts).
//! - `block_mad`: the largest mean, over a block of 16×16 grid samples (32×32 pixels, blocks
//!   overlapping by half so a small change cannot straddle four of them), of each sample's absolute
//!   difference *in excess of* `noise_floor`. It catches a small moving region on a static picture
//!   (a ticker, a clock, a moving object) that barely moves the global mean.
//!
//! A frame is still when `mafd < mad_threshold` and `block_mad < block_threshold`; otherwise it
//! becomes the new reference.
//!
//! **Cost.** Per frame: deciding that the picture is not black (usually a few rows, see `luma`),
//! then the comparison, which stops as soon as the frame is known to have changed (moving pictures
//! are compared in part, still ones in full), and a copy when the frame becomes the reference. The
//! differences are summed 8 grid samples at a time, in 16-bit lanes (`accumulate`). At 720p25
//! this is about 4 % of the instructions of FFmpeg's decode (`bench/check-vs-ffmpeg-ir.sh`).
//!
//! # Defaults, and the numbers behind them
//!
//! A plain per-block mean absolute difference cannot tell the two apart: after a constant-bitrate
//! encode, a keyframe re-quantising a frozen grainy picture moves a 32×32 block by as much as a
//! clock's digit changing does (12 vs 13 at 640×360). Coding noise is many *small* differences,
//! motion a few *large* ones, so the block measure ignores the first `noise_floor` (16) levels of
//! every difference. The ignored test `real_h264_freezes_are_found_and_real_motion_is_not`
//! encodes 22 scenes with libx264 (CRF and CBR from 300 kb/s, keyframes every 1 or 2 s, 360p and
//! 720p, heavy ±12 grain) and measured, with these defaults (over two runs: multi-threaded x264
//! output varies a little):
//!
//! - frozen pictures drift from their first frame by at most `mafd` 5.7 and `block_mad` 6.3
//!   (CBR, keyframe every second) — hence `mad_threshold` 8 and `block_threshold` 8;
//! - moving pictures, from any start, exceed within 2 s at least `mafd` 17.5 (a ¼ px/frame
//!   pan) or `block_mad` 10.4 (a 32×32 box moving 1 px/frame at 720p), 12.9 (a seconds counter),
//!   55 (a ticker);
//!
//! and finds every freeze at its exact onset and end frame, and nothing else. (FFmpeg's
//! `freezedetect` misses the 500 kb/s CBR freeze at every noise setting from its default −60 dB
//! up to −40 dB.) What remains
//! undecidable: a small object moving with less contrast than `noise_floor` against its background
//! over an otherwise frozen picture is reported as a freeze.
//!
//! # Onset, end, and what is not a freeze
//!
//! The onset (`Begin.t`) is the reference frame's `t`: the first frame of the frozen picture. The
//! `Begin` is emitted once the still run, from that frame to the last still frame's `t + duration`,
//! covers `min_duration`; the `End` at the first frame that differs. Black pictures (same definition
//! and settings as the black detector, hysteresis included) are never part of a freeze and drop the
//! reference, so a black screen is reported once, as black. A resolution change is a change.
//!
//! Details: `mafd` and `block_mad` (the largest values seen over the still run, i.e. how close the
//! call was), `duration_s` on `End`. Metrics per period: `freeze_ratio` (fraction of frames that
//! were still against their reference, reported or not) and `mad_mean` (mean `mafd` of every 8th
//! compared frame: the others stop comparing as soon as they are known to have changed).

use avmon_core::{kinds, Details, Detector, Findings, Plane, Severity, Tier, VideoFrame};
use serde::{Deserialize, Serialize};

use crate::black::BlackConfig;
use crate::episode::{put, Episode};
use crate::luma::{row_lanes, subsample, BlackGate, CHUNK};
use crate::{check, frame_duration};

/// Side of the sub-blocks, in grid samples; blocks are 2×2 sub-blocks (16×16 samples, 32×32
/// pixels), one every 8 samples.
const SUB: usize = 8;

/// One compared frame in this many is measured in full, for the `mad_mean` metric.
const EXACT_EVERY: u64 = 8;

/// Settings of the frozen-picture detector.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FreezeConfig {
    /// Run this detector.
    pub enabled: bool,
    /// Severity of the findings (and so of the alerts).
    pub severity: Severity,
    /// A frame is still only when its mean absolute difference from the reference frame, in 8-bit
    /// luma units over the whole picture, is below this. Catches global change (pans, zooms,
    /// fades); must stay above the coding noise of a frozen picture (up to 5.7 measured).
    pub mad_threshold: f64,
    /// … and when no 32×32-pixel block's mean *excess* difference (each sample's absolute
    /// difference less `noise_floor`, if positive) reaches this. Catches a small moving region on
    /// a static picture: a ticker, a clock, a moving object (measured ≥ 10.4), while a frozen
    /// picture's coding noise stays below it (measured ≤ 6.3).
    pub block_threshold: f64,
    /// Per-sample differences up to this many luma levels count as coding noise in the block
    /// measure. Lower it to catch fainter motion, at the price of tolerating less coding noise.
    pub noise_floor: u8,
    /// Seconds of still picture before it is reported.
    pub min_duration: f64,
}

impl Default for FreezeConfig {
    fn default() -> Self {
        FreezeConfig {
            enabled: true,
            severity: Severity::Major,
            mad_threshold: 8.0,
            block_threshold: 8.0,
            noise_floor: 16,
            min_duration: 2.0,
        }
    }
}

impl FreezeConfig {
    /// Push one message per invalid setting, prefixed with `path`.
    pub fn validate(&self, path: &str, errors: &mut Vec<String>) {
        check::positive(path, "mad_threshold", self.mad_threshold, errors);
        check::positive(path, "block_threshold", self.block_threshold, errors);
        check::positive(path, "min_duration", self.min_duration, errors);
    }
}

/// Largest differences over the current still run, for the findings' details.
#[derive(Clone, Copy, Debug, Default)]
struct Run {
    mafd: f64,
    block_mad: f64,
}

impl Run {
    fn details(&self, d: &mut Details) {
        put(d, "mafd", self.mafd);
        put(d, "block_mad", self.block_mad);
    }
}

/// Sums over the current metrics period.
#[derive(Clone, Copy, Debug, Default)]
struct Period {
    frames: u64,
    still: u64,
    compared: u64,
    /// Compared frames measured in full, and the sum of their `mafd`.
    exact: u64,
    mad_sum: f64,
}

/// The frozen-picture detector's state.
pub struct FreezeDetector {
    /// The stream's fidelity tier: a change forgets what was measured at the old one.
    tier: Tier,
    mad_threshold: f64,
    block_threshold: f64,
    noise_floor: u8,
    gate: BlackGate,
    episode: Episode,
    /// Picture size the buffers are laid out for.
    size: (usize, usize),
    /// Grid width and height.
    gw: usize,
    gh: usize,
    /// The reference frame's grid rows (`gh` rows of `2 · gw` bytes: the grid's samples are the
    /// even bytes), valid when `has_ref`.
    reference: Vec<u8>,
    has_ref: bool,
    ref_t: f64,
    /// Per-sub-block sums for the current and the previous band.
    sub_cur: Vec<SubSums>,
    sub_prev: Vec<SubSums>,
    /// The current band's sums per sub-block and lane, before they are added up into `sub_cur`.
    lanes: Vec<Lanes>,
    run: Run,
    period: Period,
    /// `(mafd, block_mad)` of the last compared frame, for tests and calibration.
    #[cfg(test)]
    last_diff: Diff,
}

impl FreezeDetector {
    /// A freeze detector. `black` defines what a black picture is (never a freeze): pass the black
    /// detector's settings, even when that detector is disabled.
    pub fn new(cfg: &FreezeConfig, black: &BlackConfig) -> Self {
        FreezeDetector {
            tier: Tier::Full,
            mad_threshold: cfg.mad_threshold,
            block_threshold: cfg.block_threshold,
            noise_floor: cfg.noise_floor,
            gate: BlackGate::new(black.level()),
            episode: Episode::new(kinds::VIDEO_FREEZE, cfg.severity, cfg.min_duration),
            size: (0, 0),
            gw: 0,
            gh: 0,
            reference: Vec::new(),
            has_ref: false,
            ref_t: 0.0,
            sub_cur: Vec::new(),
            sub_prev: Vec::new(),
            lanes: Vec::new(),
            run: Run::default(),
            period: Period::default(),
            #[cfg(test)]
            last_diff: Diff::default(),
        }
    }

    fn lay_out(&mut self, w: usize, h: usize) {
        self.size = (w, h);
        self.gw = w / 2;
        self.gh = h.div_ceil(2);
        self.reference.resize(2 * self.gw * self.gh, 0);
        self.sub_cur
            .resize(self.gw.div_ceil(SUB), SubSums::default());
        self.sub_prev
            .resize(self.gw.div_ceil(SUB), SubSums::default());
        self.lanes.resize(self.gw.div_ceil(SUB), Lanes::default());
        self.has_ref = false;
    }

    /// How the picture differs from the reference.
    ///
    /// Sums are gathered per 8×8-sample sub-block, one band of sub-blocks at a time; the block
    /// measure then looks at every 2×2 group of sub-blocks (16×16 samples, 32×32 pixels) at a step
    /// of 8, so that a small change (a clock's digit) falls wholly inside some block whatever its
    /// position, instead of being split across four.
    ///
    /// Unless `exact`, it stops as soon as the frame is known to have changed: the sum of
    /// differences only grows and the block measure is a maximum, so once either reaches its
    /// threshold the rest of the picture cannot make the frame still. Moving pictures, the
    /// common case, are then compared in part; the returned `mafd` is a lower bound.
    fn compare(&mut self, plane: &Plane<'_>, exact: bool) -> Diff {
        let (gw, row_len) = (self.gw, 2 * self.gw);
        let bands = self.gh.div_ceil(SUB);
        let samples = (gw * self.gh) as f64;
        let wide = if self.sub_cur.len() > 1 { 2 } else { 1 };
        let mut total = 0u64;
        let mut block_mad = 0.0f64;
        for (band, refr) in self.reference.chunks(row_len * SUB).enumerate() {
            std::mem::swap(&mut self.sub_prev, &mut self.sub_cur);
            self.lanes.fill(Lanes::default());
            let mut rows = 0;
            for (gy, r_row) in (band * SUB..).zip(refr.chunks_exact(row_len)) {
                let c_row = &plane.row(2 * gy)[..row_len];
                accumulate(c_row, r_row, self.noise_floor, &mut self.lanes);
                rows += 1;
            }
            for (k, (sums, lanes)) in self.sub_cur.iter_mut().zip(&self.lanes).enumerate() {
                let width = SUB.min(gw - k * SUB);
                *sums = SubSums {
                    sad: lanes.sad.iter().map(|&v| u32::from(v)).sum(),
                    excess: lanes.excess.iter().map(|&v| u32::from(v)).sum(),
                    n: (width * rows) as u32,
                };
            }
            total += self.sub_cur.iter().map(|s| u64::from(s.sad)).sum::<u64>();
            // Blocks are two bands tall, except in a picture of a single band.
            let above: &[SubSums] = match band {
                0 if bands > 1 => continue,
                0 => &[],
                _ => &self.sub_prev,
            };
            for (x, pair) in self.sub_cur.windows(wide).enumerate() {
                let group = pair.iter().chain(above.get(x..x + wide).unwrap_or(&[]));
                let (excess, n) = group.fold((0u32, 0u32), |(e, n), s| (e + s.excess, n + s.n));
                block_mad = block_mad.max(f64::from(excess) / f64::from(n));
            }
            if !exact
                && (total as f64 >= self.mad_threshold * samples
                    || block_mad >= self.block_threshold)
            {
                break;
            }
        }
        Diff {
            mafd: total as f64 / (gw * self.gh) as f64,
            block_mad,
        }
    }

    /// The picture changed at `t`: end any freeze, and the picture becomes the reference.
    fn change(&mut self, plane: &Plane<'_>, t: f64, out: &mut Findings) {
        self.episode.good(t, out, |d| self.run.details(d));
        let row_len = 2 * self.gw;
        for (gy, dst) in self.reference.chunks_exact_mut(row_len).enumerate() {
            dst.copy_from_slice(&plane.row(2 * gy)[..row_len]);
        }
        self.has_ref = true;
        self.ref_t = t;
    }
}

/// How a frame differs from the reference, in 8-bit luma units.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Diff {
    /// Mean absolute difference over the picture.
    mafd: f64,
    /// Largest mean, over a block, of the differences' excess over the noise floor.
    block_mad: f64,
}

/// Sums over one sub-block.
#[derive(Clone, Copy, Debug, Default)]
struct SubSums {
    sad: u32,
    excess: u32,
    /// Samples in the sub-block (fewer at the right and bottom edges).
    n: u32,
}

/// Per-lane sums over one sub-block's rows in a band (≤ 8 rows, so a lane holds ≤ 8 · 255, or
/// 8 · 7 · 255 for a partial sub-block's lane 0).
#[derive(Clone, Copy, Debug, Default)]
struct Lanes {
    sad: [u16; 8],
    excess: [u16; 8],
}

/// Add one row's differences from the reference row to each sub-block's lanes.
///
/// A sub-block's 8 grid samples in a row are the even bytes of 16 bytes of the row, i.e. the low
/// bytes of 8 little-endian `u16`s: in 16-bit lanes the whole sub-block is measured at once, with
/// no gather of every second byte, and the compiler turns the loop into a handful of vector
/// instructions per sub-block (SSE2 on any x86-64). A picture whose grid width is not a multiple
/// of 8 has a partial last sub-block, summed one sample at a time into its lane 0.
fn accumulate(c_row: &[u8], r_row: &[u8], floor: u8, lanes: &mut [Lanes]) {
    let lanes_of = |chunk: &[u8]| row_lanes(chunk.try_into().expect("a chunk of CHUNK bytes"));
    let floor16 = u16::from(floor);
    for ((c, r), acc) in c_row
        .chunks_exact(CHUNK)
        .zip(r_row.chunks_exact(CHUNK))
        .zip(lanes.iter_mut())
    {
        let (c, r) = (lanes_of(c), lanes_of(r));
        for i in 0..SUB {
            let (a, b) = (c[i] & 0xff, r[i] & 0xff);
            let d = a.max(b) - a.min(b);
            acc.sad[i] += d;
            acc.excess[i] += d.saturating_sub(floor16);
        }
    }
    let full = c_row.len() / CHUNK;
    if let Some(acc) = lanes.get_mut(full) {
        let (sad, excess) = diff_sums(&c_row[CHUNK * full..], &r_row[CHUNK * full..], floor);
        acc.sad[0] += sad as u16;
        acc.excess[0] += excess as u16;
    }
}

/// Sum of absolute differences of two runs of grid samples (the even bytes of `a` and `b`), and
/// sum of their excess over `floor` (< 8 samples here).
#[inline]
fn diff_sums(a: &[u8], b: &[u8], floor: u8) -> (u32, u32) {
    let (mut sad, mut excess) = (0u32, 0u32);
    for (x, y) in subsample(a).zip(subsample(b)) {
        let d = x.abs_diff(y);
        sad += u32::from(d);
        excess += u32::from(d.saturating_sub(floor));
    }
    (sad, excess)
}

impl Detector for FreezeDetector {
    fn kind(&self) -> &'static str {
        kinds::VIDEO_FREEZE
    }

    fn on_tier(&mut self, tier: Tier) {
        if crate::tier_changed(&mut self.tier, tier) {
            self.reset();
        }
    }

    fn on_video(&mut self, frame: &VideoFrame<'_>, out: &mut Findings) {
        let plane = &frame.luma;
        if (plane.width, plane.height) != self.size {
            self.lay_out(plane.width, plane.height);
        }
        self.period.frames += 1;
        if self.gw == 0 {
            // Nothing to compare on a picture narrower than 2 pixels: call it a change.
            self.has_ref = false;
            self.episode.good(frame.t, out, |d| self.run.details(d));
            return;
        }

        if self.gate.classify(plane, frame.full_range, false).0 {
            // Black is the black detector's defect: no freeze through it, and no reference.
            self.has_ref = false;
            self.episode.good(frame.t, out, |d| self.run.details(d));
            return;
        }
        if !self.has_ref || frame.changed_between == Some(true) {
            // Also when the picture may have changed since the previous decoded frame (frames
            // not decoded between two alike keyframes: a flash, a cut and back): two alike
            // samples with a change between them are no freeze.
            self.change(plane, frame.t, out);
            return;
        }

        // `mad_mean` is measured on every `EXACT_EVERY`th compared frame; the others stop
        // comparing as soon as they are known to have changed.
        let exact = self.period.compared % EXACT_EVERY == 0;
        let diff = self.compare(plane, exact);
        let (mafd, block_mad) = (diff.mafd, diff.block_mad);
        #[cfg(test)]
        {
            self.last_diff = diff;
        }
        self.period.compared += 1;
        if exact {
            self.period.exact += 1;
            self.period.mad_sum += mafd;
        }
        if mafd < self.mad_threshold && block_mad < self.block_threshold {
            self.period.still += 1;
            if !self.episode.in_run() {
                self.run = Run::default();
            }
            self.run.mafd = self.run.mafd.max(mafd);
            self.run.block_mad = self.run.block_mad.max(block_mad);
            let end = frame.t + frame_duration(frame);
            self.episode
                .bad(self.ref_t, end, out, |d| self.run.details(d));
        } else {
            self.change(plane, frame.t, out);
        }
    }

    fn on_tick(&mut self, _now: f64, out: &mut Findings) {
        self.episode.flush(out);
    }

    fn take_metrics(&mut self, put: &mut dyn FnMut(&'static str, f64)) {
        let p = std::mem::take(&mut self.period);
        if p.frames > 0 {
            put("freeze_ratio", p.still as f64 / p.frames as f64);
        }
        if p.exact > 0 {
            put("mad_mean", p.mad_sum / p.exact as f64);
        }
    }

    fn reset(&mut self) {
        self.has_ref = false;
        self.gate.reset();
        self.episode.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use avmon_core::FindingEdge::{Begin, End};

    const W: usize = 320;
    const H: usize = 180;

    fn detector() -> FreezeDetector {
        FreezeDetector::new(&FreezeConfig::default(), &BlackConfig::default())
    }

    /// A busy texture (a product of sines plus fine detail), sampled at horizontal offset `dx`.
    fn texture(dx: usize) -> Picture {
        Picture::from_fn(W, H, |x, y| {
            let u = (x + dx) as f64;
            let v = y as f64;
            let s = (u / 7.0).sin() * (v / 11.0).cos() + 0.3 * ((u + v) / 3.0).sin();
            (128.0 + 60.0 * s) as u8
        })
    }

    /// Moving content: each frame a different texture offset (big jumps).
    fn moving(n: usize, seed: usize) -> Vec<Picture> {
        (0..n).map(|i| texture(seed * 1000 + i * 37)).collect()
    }

    /// `p` plus uniform noise in `-amp..=amp` on every sample (encoder refinement, as a model).
    fn noisy(p: &Picture, amp: i32, rng: &mut Rng) -> Picture {
        let mut q = p.clone();
        for y in 0..H {
            for x in 0..W {
                let v = i32::from(p.get(x, y)) + rng.range(-amp, amp);
                q.set(x, y, v.clamp(0, 255) as u8);
            }
        }
        q
    }

    #[test]
    fn identical_frames_freeze_from_the_reference_frame_until_motion() {
        let still = texture(5);
        let mut seq = moving(10, 1);
        seq.extend(times(still, 100));
        seq.extend(moving(20, 2));
        let mut d = detector();
        let seen = run_video(&mut d, &seq);
        // Onset: frame 10, the first frame of the frozen picture (the reference).
        assert_eq!(edges(&seen), [(Begin, ft(10)), (End, ft(110))]);
        // Frames 10..=59 are the first 2 s of the frozen picture.
        assert_eq!(seen[0].at, 59);
        assert_eq!(seen[0].f.kind, "video.freeze");
        assert_eq!(seen[0].f.details["mafd"], 0.0);
        assert_eq!(seen[1].at, 110);
        assert_eq!(seen[1].f.details["duration_s"], 4.0);
    }

    #[test]
    fn a_still_picture_shorter_than_min_duration_is_not_reported() {
        for (n, expect) in [(49, 0), (50, 2)] {
            let mut seq = moving(5, 1);
            seq.extend(times(texture(5), n));
            seq.extend(moving(5, 2));
            let mut d = detector();
            assert_eq!(run_video(&mut d, &seq).len(), expect, "{n} still frames");
        }
    }

    #[test]
    fn a_noisy_frozen_picture_still_freezes() {
        // Every sample of every frozen frame gets fresh noise (encoder refinement), against a
        // reference that is itself noisy: ±1, with ±2 on every third frame; then ±6 everywhere,
        // as bad as a CBR keyframe re-quantising a grainy picture.
        for (amps, min_mafd) in [([1, 1, 2], 0.8), ([6, 6, 6], 4.0)] {
            let base = texture(5);
            let mut rng = Rng::new(42);
            let mut seq = moving(10, 1);
            for i in 0..100 {
                seq.push(noisy(&base, amps[i % 3], &mut rng));
            }
            seq.extend(moving(10, 2));
            let mut d = detector();
            let seen = run_video(&mut d, &seq);
            assert_eq!(edges(&seen), [(Begin, ft(10)), (End, ft(110))], "±{amps:?}");
            let mafd = seen[1].f.details["mafd"].as_f64().unwrap();
            assert!(mafd > min_mafd, "the noise is real: {mafd}");
        }
    }

    #[test]
    fn a_slow_pan_never_freezes() {
        for step in [1, 2] {
            let seq: Vec<Picture> = (0..250).map(|i| texture(i * step)).collect();
            let mut d = detector();
            assert!(run_video(&mut d, &seq).is_empty(), "{step} px/frame");
        }
        // A smooth, low-contrast gradient panning 1 px per frame: each frame alone is nearly the
        // same as the previous one; against the reference the difference accumulates.
        let seq: Vec<Picture> = (0..250)
            .map(|i| Picture::from_fn(W, H, |x, _| (60 + (x + i) * 100 / W) as u8))
            .collect();
        let mut d = detector();
        let seen = run_video(&mut d, &seq);
        assert!(seen.is_empty(), "{seen:?}");
    }

    #[test]
    fn a_small_moving_object_on_a_static_background_is_not_a_freeze() {
        let background = texture(5);
        // A 16×16 box (0.4 % of the picture) moving 1 px per frame.
        let boxed: Vec<Picture> = (0..200)
            .map(|i| {
                let mut p = background.clone();
                for y in 80..96 {
                    for x in 0..16 {
                        p.set(40 + x + i, y, 235);
                    }
                }
                p
            })
            .collect();
        let mut d = detector();
        assert!(run_video(&mut d, &boxed).is_empty());

        // A ticker: a text-like band along the bottom, scrolling 2 px per frame.
        let ticker: Vec<Picture> = (0..200)
            .map(|i| {
                let mut p = background.clone();
                for y in 160..176 {
                    for x in 0..W {
                        let glyph = ((x + 2 * i) / 3 + y / 4) % 5 == 0;
                        p.set(x, y, if glyph { 220 } else { 30 });
                    }
                }
                p
            })
            .collect();
        let mut d = detector();
        assert!(run_video(&mut d, &ticker).is_empty());
    }

    /// The measures, computed the plain way: every grid sample, every block by its definition.
    fn measures_by_definition(cur: &Picture, refr: &Picture, floor: u8) -> Diff {
        let (gw, gh) = (cur.w / 2, cur.h.div_ceil(2));
        let diff = |x: usize, y: usize| cur.get(2 * x, 2 * y).abs_diff(refr.get(2 * x, 2 * y));
        let mut total = 0u64;
        for y in 0..gh {
            for x in 0..gw {
                total += u64::from(diff(x, y));
            }
        }
        // Blocks: 2×2 sub-blocks of 8×8 samples at a step of 8, clipped to the grid; one
        // sub-block wide in a grid of one sub-block column, one band tall in a grid of one band.
        let (cols, bands) = (gw.div_ceil(SUB), gh.div_ceil(SUB));
        let (wide, tall) = (cols.min(2), bands.min(2));
        let mut block_mad = 0.0f64;
        for by in 0..=bands - tall {
            for bx in 0..=cols - wide {
                let (mut excess, mut n) = (0u32, 0u32);
                for y in by * SUB..((by + tall) * SUB).min(gh) {
                    for x in bx * SUB..((bx + wide) * SUB).min(gw) {
                        excess += u32::from(diff(x, y).saturating_sub(floor));
                        n += 1;
                    }
                }
                block_mad = block_mad.max(f64::from(excess) / f64::from(n));
            }
        }
        Diff {
            mafd: total as f64 / (gw * gh) as f64,
            block_mad,
        }
    }

    #[test]
    fn measures_match_their_definition_at_any_size() {
        // Odd sizes (a partial last sub-block, a skipped last column), tiny ones (one sub-block
        // column, one band), and differences up to 255 everywhere (the lanes' largest sums).
        let mut rng = Rng::new(11);
        let loose = FreezeConfig {
            mad_threshold: f64::MAX,
            block_threshold: f64::MAX,
            ..FreezeConfig::default()
        };
        for (w, h) in [
            (320, 180),
            (95, 61),
            (33, 17),
            (17, 9),
            (16, 16),
            (2, 2),
            (3, 40),
        ] {
            for extreme in [false, true] {
                let mut sample = || {
                    let v = rng.range(0, 255) as u8;
                    if extreme {
                        v / 128 * 255
                    } else {
                        v
                    }
                };
                let refr = Picture::from_fn(w, h, |_, _| 255);
                let pictures: Vec<Picture> = (0..3)
                    .map(|_| Picture::from_fn(w, h, |_, _| sample()))
                    .collect();
                for (i, p) in pictures.iter().enumerate() {
                    let want = measures_by_definition(p, &refr, loose.noise_floor);
                    let mut d = FreezeDetector::new(&loose, &BlackConfig::default());
                    let mut out = Vec::new();
                    d.on_video(&refr.frame(0), &mut out);
                    d.on_video(&p.frame(1), &mut out);
                    if !d.has_ref {
                        continue; // a black picture (a tiny grid of dark samples): not compared
                    }
                    assert_eq!(d.last_diff, want, "{w}×{h}, picture {i}");
                }
            }
        }
    }

    #[test]
    fn black_is_never_a_freeze() {
        let black = Picture::new(W, H, 16);
        let mut d = detector();
        assert!(run_video(&mut d, times(&black, 200)).is_empty());

        // Near-black (95 % dark, under hysteresis) after black is still black, not a freeze.
        let near_black = Picture::from_fn(W, H, |x, _| if x < W * 95 / 100 { 16 } else { 200 });
        let mut d = detector();
        let seq = times(&black, 10).chain(times(&near_black, 100));
        assert!(run_video(&mut d, seq).is_empty());

        // Frozen, then black: the freeze ends where black begins; frozen again is a new freeze.
        let still = texture(5);
        let mut seq = moving(5, 1);
        seq.extend(times(still.clone(), 60));
        seq.extend(times(black.clone(), 60));
        seq.extend(times(still, 60));
        let mut d = detector();
        let seen = run_video(&mut d, &seq);
        assert_eq!(
            edges(&seen),
            [(Begin, ft(5)), (End, ft(65)), (Begin, ft(125))]
        );

        // Full-range black too.
        let mut full_black = Picture::new(W, H, 10);
        full_black.full_range = true;
        let mut d = detector();
        assert!(run_video(&mut d, times(&full_black, 100)).is_empty());
    }

    #[test]
    fn a_resolution_change_is_a_change() {
        let a = texture(5);
        let b = Picture::from_fn(W / 2, H / 2, |x, y| a.get(x, y));
        let mut seq = vec![];
        seq.extend(times(a, 60));
        seq.extend(times(b, 60));
        let mut d = detector();
        let seen = run_video(&mut d, &seq);
        assert_eq!(
            edges(&seen),
            [(Begin, ft(0)), (End, ft(60)), (Begin, ft(60))]
        );
    }

    #[test]
    fn odd_and_tiny_pictures_do_not_panic() {
        for (w, h) in [(1, 1), (2, 1), (3, 3), (17, 9), (33, 35)] {
            let p = Picture::from_fn(w, h, |x, y| ((x * 7 + y * 3) % 100 + 100) as u8);
            let mut d = detector();
            let seen = run_video(&mut d, times(&p, 60));
            assert_eq!(seen.len(), usize::from(w >= 2), "{w}×{h}");
        }
    }

    #[test]
    fn metrics() {
        let mut seq = moving(10, 1);
        seq.extend(times(texture(5), 30));
        let mut d = detector();
        run_video(&mut d, &seq);
        let mut m = Vec::new();
        d.take_metrics(&mut |k, v| m.push((k, v)));
        // 29 of the 40 frames were still (the first frozen frame is the reference).
        assert_eq!(m[0], ("freeze_ratio", 29.0 / 40.0));
        assert_eq!(m[1].0, "mad_mean");
        assert!(m[1].1 > 1.0);
    }

    #[test]
    fn reset_forgets_the_reference_and_ends_an_open_freeze() {
        let still = texture(5);
        let mut d = detector();
        assert_eq!(run_video(&mut d, times(&still, 60)).len(), 1);
        d.reset();
        let mut out = Vec::new();
        d.on_video(&still.frame(0), &mut out);
        assert_eq!(edges_of(&out), [(End, ft(60))]);
        assert_eq!(out[0].details["reset"], true);
    }

    fn edges_of(f: &[avmon_core::Finding]) -> Vec<(avmon_core::FindingEdge, f64)> {
        f.iter().map(|f| (f.edge, f.t)).collect()
    }

    #[test]
    fn validate_names_each_bad_field() {
        let cfg = FreezeConfig {
            block_threshold: -4.0,
            min_duration: f64::INFINITY,
            ..FreezeConfig::default()
        };
        let mut errors = Vec::new();
        cfg.validate("freeze", &mut errors);
        assert_eq!(
            errors,
            [
                "freeze.block_threshold: must be > 0 (got -4)",
                "freeze.min_duration: must be > 0 (got inf)",
            ]
        );
    }

    /// Real lossy H.264: encode synthetic scenes with `ffmpeg`/libx264, decode them to raw luma,
    /// and check that freezes are found (onset within 5 frames, end within 1) and motion is not.
    /// Needs ffmpeg with libx264 and the DejaVu font (`./dev` installs both); a scene that cannot
    /// be made fails the test. About 50 s on 2 cores:
    ///
    /// `cargo test -p avmon-detect real_h264 -- --nocapture`
    ///
    /// It prints, per scene, what the thresholds must tolerate (the largest drift of a frozen
    /// picture from its first frame) or must catch (the least drift of moving pictures within
    /// 2 s, from any start). `AVMON_H264_DIR` keeps the clips between runs; `AVMON_MAD`,
    /// `AVMON_BLOCK`, `AVMON_FLOOR` override the defaults, and `AVMON_TRACE=<scene>` prints every
    /// frame's measures.
    #[test]
    fn real_h264_freezes_are_found_and_real_motion_is_not() {
        use std::process::Command;

        const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
        let env = |k: &str| std::env::var(k).ok();
        let keep = env("AVMON_H264_DIR");
        let dir = keep.clone().map_or_else(
            || std::env::temp_dir().join(format!("avmon-freeze-h264-{}", std::process::id())),
            Into::into,
        );
        std::fs::create_dir_all(&dir).unwrap();
        let mut cfg = FreezeConfig::default();
        if let Some(v) = env("AVMON_MAD") {
            cfg.mad_threshold = v.parse().unwrap();
        }
        if let Some(v) = env("AVMON_BLOCK") {
            cfg.block_threshold = v.parse().unwrap();
        }
        if let Some(v) = env("AVMON_FLOOR") {
            cfg.noise_floor = v.parse().unwrap();
        }

        // A detailed picture with heavy temporal grain (±12: camera noise, hard to encode).
        let grain =
            |w: usize, h: usize| format!("testsrc2=size={w}x{h}:rate=25,noise=alls=12:allf=t");
        // Frame 74 repeated 150 times (frames 74..224) by the loop filter.
        let freeze = "loop=loop=149:size=1:start=75,setpts=N/25/TB";
        // Frame 10 forever.
        let still = "loop=loop=-1:size=1:start=10,setpts=N/25/TB";
        let frozen = Some((74, 224));
        let cbr =
            |rate: &str, gop: u32| format!("-b:v {rate} -maxrate {rate} -bufsize {rate} -g {gop}");
        let box_over = |bg: String, side: u32, x: &str| {
            format!("{bg}[bg];color=c=white:s={side}x{side}:r=25[box];[bg][box]overlay=x='{x}':y=150[out0]")
        };
        let ticker = |bg: String, size: u32, speed: u32| {
            format!(
                "{bg},drawtext=fontfile={FONT}:fontsize={size}:fontcolor=white:box=1:boxcolor=0x202060\
                 :text='BREAKING NEWS  markets close higher  weather warning for the coast  '\
                 :x=w-mod(n*{speed}\\,w+tw):y=h-2*{size}"
            )
        };
        let clock = |bg: String, size: u32| {
            format!("{bg},drawtext=fontfile={FONT}:fontsize={size}:fontcolor=white:x=20:y=20:text='%{{eif\\:t\\:d}}'")
        };
        struct Scene {
            name: &'static str,
            size: (usize, usize),
            graph: String,
            enc: String,
            frozen: Option<(usize, usize)>,
        }
        let sd = (640, 360);
        let hd = (1280, 720);
        let g = |(w, h): (usize, usize)| grain(w, h);
        let scene = |name, size, graph, enc: &str, frozen| Scene {
            name,
            size,
            graph,
            enc: enc.to_string(),
            frozen,
        };
        let scenes = vec![
            // Frozen pictures. CRF re-encodes a static picture identically (even its keyframes);
            // constant bitrate keeps refining it and re-quantises every keyframe differently.
            scene(
                "grain_crf23",
                sd,
                format!("{},{freeze}", g(sd)),
                "-crf 23 -g 50",
                frozen,
            ),
            scene(
                "grain_crf35",
                sd,
                format!("{},{freeze}", g(sd)),
                "-crf 35 -g 50",
                frozen,
            ),
            scene(
                "grain_crf35_g25",
                sd,
                format!("{},{freeze}", g(sd)),
                "-crf 35 -g 25",
                frozen,
            ),
            scene(
                "grain_cbr500k",
                sd,
                format!("{},{freeze}", g(sd)),
                &cbr("500k", 50),
                frozen,
            ),
            scene(
                "grain_cbr300k_g25",
                sd,
                format!("{},{freeze}", g(sd)),
                &cbr("300k", 25),
                frozen,
            ),
            scene(
                "grain_cbr2m_g25",
                sd,
                format!("{},{freeze}", g(sd)),
                &cbr("2M", 25),
                frozen,
            ),
            scene(
                "clean_crf28",
                sd,
                format!("testsrc2=size=640x360:rate=25,{freeze}"),
                "-crf 28 -g 50",
                frozen,
            ),
            scene(
                "grain_cbr1500k_720p",
                hd,
                format!("{},{freeze}", g(hd)),
                &cbr("1500k", 50),
                frozen,
            ),
            scene(
                "grain_cbr1m_720p_g25",
                hd,
                format!("{},{freeze}", g(hd)),
                &cbr("1M", 25),
                frozen,
            ),
            // Motion: slow pans of a detailed still picture (1, 1/2, 1/4 px per frame), a slow
            // zoom, a fade, a small box moving 1 px per frame, a ticker, a seconds counter.
            scene(
                "pan_1px_crf28",
                sd,
                format!("{},{still},scroll=h=0.0015625", g(sd)),
                "-crf 28 -g 50",
                None,
            ),
            scene(
                "pan_halfpx_crf35",
                sd,
                format!("{},{still},scroll=h=0.00078125", g(sd)),
                "-crf 35 -g 50",
                None,
            ),
            scene(
                "pan_quarterpx_cbr500k",
                sd,
                format!("{},{still},scroll=h=0.000390625", g(sd)),
                &cbr("500k", 50),
                None,
            ),
            scene(
                "mandelbrot_crf28",
                sd,
                "mandelbrot=size=640x360:rate=25".to_string(),
                "-crf 28 -g 50",
                None,
            ),
            scene(
                "fade_crf28",
                sd,
                format!("{},{still},fade=t=out:st=1:d=10", g(sd)),
                "-crf 28 -g 50",
                None,
            ),
            scene(
                "box_crf28",
                sd,
                box_over(format!("{},{still}", g(sd)), 24, "100+n"),
                "-crf 28 -g 50",
                None,
            ),
            scene(
                "box_cbr500k_g25",
                sd,
                box_over(format!("{},{still}", g(sd)), 24, "100+n"),
                &cbr("500k", 25),
                None,
            ),
            scene(
                "ticker_cbr500k",
                sd,
                ticker(format!("{},{still}", g(sd)), 22, 2),
                &cbr("500k", 50),
                None,
            ),
            scene(
                "clock_cbr500k",
                sd,
                clock(format!("{},{still}", g(sd)), 20),
                &cbr("500k", 50),
                None,
            ),
            scene(
                "clock_cbr300k_g25",
                sd,
                clock(format!("{},{still}", g(sd)), 20),
                &cbr("300k", 25),
                None,
            ),
            scene(
                "box_cbr1500k_720p",
                hd,
                box_over(format!("{},{still}", g(hd)), 32, "200+n"),
                &cbr("1500k", 50),
                None,
            ),
            scene(
                "ticker_cbr1500k_720p",
                hd,
                ticker(format!("{},{still}", g(hd)), 36, 3),
                &cbr("1500k", 50),
                None,
            ),
            scene(
                "clock_cbr1m_720p_g25",
                hd,
                clock(format!("{},{still}", g(hd)), 32),
                &cbr("1M", 25),
                None,
            ),
        ];

        let mut failures = Vec::new();
        for Scene {
            name,
            size: (rw, rh),
            graph,
            enc,
            frozen: expect,
        } in &scenes
        {
            let (name, rw, rh) = (*name, *rw, *rh);
            let mp4 = dir.join(format!("{name}.mp4"));
            let raw = dir.join(format!("{name}.y"));
            if !raw.exists() {
                let ok = Command::new("ffmpeg")
                    .args([
                        "-hide_banner",
                        "-loglevel",
                        "error",
                        "-y",
                        "-f",
                        "lavfi",
                        "-i",
                    ])
                    .arg(graph)
                    .args(["-frames:v", "300", "-c:v", "libx264", "-preset", "veryfast"])
                    .args(["-pix_fmt", "yuv420p"])
                    .args(enc.split_whitespace())
                    .arg(&mp4)
                    .status();
                assert!(
                    matches!(ok, Ok(s) if s.success()),
                    "{name}: ffmpeg with libx264 and {FONT} could not make the scene ({ok:?}); \
                     ./dev installs them"
                );
                let ok = Command::new("ffmpeg")
                    .args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
                    .arg(&mp4)
                    .args(["-f", "rawvideo", "-pix_fmt", "gray"])
                    .arg(&raw)
                    .status()
                    .unwrap();
                assert!(ok.success());
            }
            let data = std::fs::read(&raw).unwrap();
            if keep.is_none() {
                // Up to 280 MB a scene: the disk holds one at a time.
                let _ = std::fs::remove_file(&raw);
            }
            let pictures: Vec<&[u8]> = data.chunks_exact(rw * rh).collect();
            let frame = |i: usize| VideoFrame {
                t: ft(i),
                duration: 1.0 / FPS,
                luma: avmon_core::Plane::new(pictures[i], rw, rw, rh).unwrap(),
                chroma: None,
                full_range: false,
                key: false,
                corrupt: false,
                decode_errors: 0,
                changed_between: None,
                captions: None,
            };
            // The largest (mafd, block_mad) of frames j+1 ..= j+n against frame j.
            let drift = |j: usize, n: usize| {
                let loose = FreezeConfig {
                    mad_threshold: f64::MAX,
                    block_threshold: f64::MAX,
                    ..cfg.clone()
                };
                let mut d = FreezeDetector::new(&loose, &BlackConfig::default());
                let mut out = Vec::new();
                d.on_video(&frame(j), &mut out);
                let mut max = (f64::NAN, f64::NAN);
                for i in j + 1..=(j + n).min(pictures.len() - 1) {
                    d.last_diff = Diff {
                        mafd: f64::NAN,
                        block_mad: f64::NAN,
                    };
                    d.on_video(&frame(i), &mut out);
                    let l = d.last_diff;
                    max = (max.0.max(l.mafd), max.1.max(l.block_mad));
                }
                max
            };
            match expect {
                // What a freeze must tolerate: the drift of every frozen frame from the first.
                Some((s, e)) => {
                    let (m, b) = drift(*s, e - s - 1);
                    eprintln!(
                        "{name:22} frozen: drift from the first frame: mafd {m:5.2} block {b:5.2}"
                    );
                }
                // What motion must exceed within 2 s, from wherever a candidate starts.
                None => {
                    // Starts whose next 2 s compare nothing (black) are skipped.
                    let per_start: Vec<(f64, f64)> = (0..pictures.len() - 50)
                        .step_by(3)
                        .map(|j| drift(j, 49))
                        .filter(|x| !x.0.is_nan())
                        .collect();
                    let least = |k: fn(&(f64, f64)) -> f64| {
                        *per_start
                            .iter()
                            .min_by(|a, b| k(a).total_cmp(&k(b)))
                            .unwrap()
                    };
                    let (by_m, by_b) = (least(|x| x.0), least(|x| x.1));
                    eprintln!(
                        "{name:22} moving: least 2 s drift: mafd {:5.2} (block {:5.2}); block {:5.2} (mafd {:5.2})",
                        by_m.0, by_m.1, by_b.1, by_b.0
                    );
                }
            }
            let mut d = FreezeDetector::new(&cfg, &BlackConfig::default());
            let mut out = Vec::new();
            let mut found = Vec::new();
            for i in 0..pictures.len() {
                d.last_diff = Diff::default();
                d.on_video(&frame(i), &mut out);
                found.extend(
                    out.drain(..)
                        .map(|f| (i, f.edge, (f.t * FPS).round() as usize)),
                );
                if env("AVMON_TRACE").as_deref() == Some(name) {
                    let l = d.last_diff;
                    eprintln!("{i:4} {l:.2?} run {}", d.episode.in_run());
                }
            }
            eprintln!("{name:22} found (frame, edge, t in frames): {found:?}");
            let ok = match expect {
                None => found.is_empty(),
                Some((s, e)) => {
                    found.len() == 2
                        && (*s..=s + 5).contains(&found[0].2)
                        && (*e..=e + 1).contains(&found[1].2)
                }
            };
            if !ok {
                failures.push(name);
            }
        }
        if keep.is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        assert!(failures.is_empty(), "{failures:?}");
    }
}
