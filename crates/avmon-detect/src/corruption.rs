//! `video.corruption`: pictures that break into blocks (lost or damaged packets upstream).
//!
//! Two kinds of evidence are used together.
//!
//! **What the decoder says.** A frame is damaged when the decoder flagged it
//! ([`VideoFrame::corrupt`], or any bit of [`VideoFrame::decode_errors`]: FFmpeg's error
//! concealment, undecodable slices, a missing reference, or avmon's
//! [`CORRUPT_PACKET`](avmon_core::decode_error::CORRUPT_PACKET), a demuxer continuity error carried
//! to the frame). Damage in a predicted picture propagates to every picture predicted from it, so a
//! decoder-flagged episode lasts until the next keyframe that decodes cleanly (or `max_hold_s`
//! without new evidence, for streams without keyframes).
//!
//! **What the picture looks like.** Every frame gets a *blockiness* score from its luma, measured
//! per band of 16 rows (one macroblock row): the mean luma step across the 16-pixel block grid
//! (vertical edges between macroblocks in the band, and the horizontal edge at the band's top),
//! divided by the mean step between neighbouring pixels inside blocks (the content's own detail),
//! each plus a small constant so that flat areas score 1. The step across the top edge counts
//! only as far as it exceeds the larger of the steps one row above and one row below it (plus
//! the band's own step inside blocks, up to the step itself): a broken block edge steps across
//! one row, a content edge lying along the grid line (a horizon in a slow pan) across two or
//! three. Without this, a horizon that a slow pan held on a grid line for half a second was
//! reported as damage on real footage (docs/accuracy.md). Concealed or displaced macroblocks leave
//! steps on the grid that the content does not have, in a band or a few: the frame's *band score*
//! is the largest band's ratio, so local damage is not averaged away. It is judged against the
//! stream's own recent baseline, the running median of the band score over the last
//! `baseline_frames` frames: a frame whose band score exceeds `threshold` × baseline (and the
//! baseline by at least `min_excess`) is damaged. This finds damaged pictures in a clean bitstream
//! too (damage decoded and re-encoded upstream, where the decoder sees nothing wrong).
//!
//! The whole-picture *blockiness* is the quality figure, measured by [`quality`](crate::quality):
//! the percentage of 16-sample blocks (their middle 12 samples, on every 4th row) that are exactly
//! flat in mid-tones, the mark of blocks whose detail a starved encoder quantised away (the steps
//! at the block grid, the figure before, are smoothed by H.264's and HEVC's deblocking, and ranked
//! real starved encodes below their source). It depends on the content (flat content scores
//! higher), so compare it within a stream: on held-out real content a starved H.264, HEVC or
//! MPEG-2 encode scored clearly worse than its near-lossless source in 65 of 66 pairs
//! (docs/accuracy.md, "Quality score on real encodes"). It is reported per metrics
//! period (`blockiness_mean`, `blockiness_max`) and for the whole input (`video.blockiness_mean`,
//! `video.blockiness_max` in `avmon check`'s summary).
//!
//! An episode starts at the first damaged frame and ends at the first frame after it that is not
//! damaged (for decoder evidence: the clean keyframe); episodes closer than `hold_s` are one.
//! Begin details: `evidence` (`"decoder"` or `"picture"`), `decode_errors` (the flags seen),
//! `score` (band score / baseline), and `colour_edges` when colour-plane damage was seen (the
//! most chroma edges it broke in a picture). End details add `peak_score` and `frames` (damaged
//! frames).
//!
//! The band score is judged on the median of the last 9 frames (content edges that happen to sit
//! on the grid for a frame or a few do not move it; damage propagates over many frames until the
//! next keyframe); the onset is the earliest frame of that window already above the threshold.
//! Once damaged, the picture stays damaged while the median exceeds half the threshold's margin
//! (hysteresis). A picture that barely differs from the previous one (one sampled row per band,
//! every 4th sample, differing by less than 1.5 levels on average: a freeze the encoder keeps
//! refining, a still) is content, not damage arriving: it is not judged by its picture and does
//! not enter the window. Without this, a freeze on a frame whose content edges happen to sit on
//! the block grid was reported as damage. The price: picture-only evidence is blind on pictures
//! that hardly move (decoder evidence is not).
//!
//! **Torn pictures.** Damage decoded and re-encoded upstream often smears or displaces content
//! across rows (stripes stretched down from a lost slice, parts of the picture from the wrong
//! place) without leaving steps on the block grid. So each band also has a *step direction*: its
//! mean vertical step inside blocks over its mean horizontal step (each plus 2), compared with its
//! own running mean (learnt at rate 0.1 from pictures where fewer than 20% of the bands turned,
//! at 0.01 from other undamaged ones, not from damaged ones). A band *turned* when its ratio
//! exceeds 2× its mean + 0.1; a picture is damaged when the median share of turned bands (below
//! the top band) over the same short window exceeds 0.3, once 13 pictures of the content taught
//! the means (forgotten at a scene cut). The trace shows it as `torn=` (this picture's share) and
//! `torn_med=`. Measured on the accuracy corpus: it finds the re-encoded damage on the `motion`
//! content; on periodic or noise-like content (`pan`, `noise`) a displaced copy looks like the
//! content and is still not seen.
//!
//! **Smeared pictures.** When a decoder loses the rest of a picture it often conceals it by
//! drawing the last row it decoded down to the bottom: streaks, columns of constant value. They
//! survive a re-encode intact. A band is *smeared* when its sampled row pairs do not step at all
//! (mean vertical step < 0.1) while its rows have detail (mean horizontal step > 0.3); a picture
//! is damaged when at least 3 smeared bands run down to the bottom under bands that are not
//! smeared, and the smear *arrived* (more smeared bands at the bottom than the previous picture
//! had; it stays damaged while they stay). This needs no baseline and no window, so it is seen at
//! the first smeared frame, even when the smear is so large that it also counts as a scene cut.
//! Content built of vertical structure (colour bars, a test card, a horizontal gradient) covers
//! the whole picture or was there from the first picture, and is not smear. Measured on the
//! accuracy corpus: it finds the re-encoded damage on the `noise` content.
//!
//! **Softened streaks.** A re-encode softens such streaks: the rows step a little from one to
//! the next, so they are no longer smear, but the bands still turn to vertical stripes that the
//! rest of the picture does not have. A band is *streaked* when its step-direction ratio is
//! below 0.4, below 0.6× its own running mean and below 0.6× the picture's median band; a
//! picture is damaged when at least 3 of the short window's pictures had streaked bands running
//! down to the bottom (the sampled rows catch softened streaks in some pictures, not all). The
//! onset is the earliest streaked picture of the window. Both comparisons are needed: on
//! re-encoded fast-moving grain, the bottom bands turn against their own history now and then,
//! but not against the rest of the picture. Measured on the accuracy corpus: it finds the
//! re-encoded damage on the `pan` content. The trace shows it as `streak=` (this picture, and how
//! many of the window).
//!
//! **Decoder grey.** Where a reference picture is missing (a lost keyframe, a lost slice with
//! nothing to conceal it from), FFmpeg's H.264 and HEVC decoders draw mid-grey: luma 128, flat.
//! Encoded again it stays flat grey, and nothing else above sees it (a picture grey all over is
//! uniform, so not judged). A band within 4 of 128 (a re-encode moves it by a quantiser step)
//! whose steps across and down are below 0.1, and whose middle row is within 4 of 128 from edge
//! to edge, is grey; a picture with at least a quarter of its bands grey is damaged when the grey
//! *arrived* (more grey bands than the previous picture had) and while it stays, as smear is. A
//! grey slate from the first picture on is content.
//!
//! **Colour-plane damage.** A region whose colour was lost (drawn as zero: green blocks) or taken
//! from the wrong place leaves the luma whole, and the rules above see nothing. On pictures with
//! planar chroma, each chroma block edge that steps far more sharply than the samples beside it,
//! where the luma does not step, is *broken* (see [`chroma`](crate::chroma)); at least 8 edges
//! broken anew that stay broken 3 pictures in a row are damage, from the picture they broke,
//! while they stay (`colour`, on by default). The trace shows `colour=broken/halfway/kept`.
//!
//! **Uniform pictures and scene cuts.** A picture with almost no detail (mean step inside blocks
//! below 0.25: black, a uniform slate) is neither judged nor learnt from. When the content
//! changes (at least half the bands changed their mean luma by more than 12 or their detail by
//! more than 2× since the previous picture, or a uniform picture comes or goes) the baseline and
//! the short window are forgotten and learnt again: a cut is new content, not damage. The picture
//! is judged again once 13 frames of the new content are in the baseline (about half a second),
//! so picture-only damage in that half second after a cut is not seen (decoder evidence is).
//! A picture-damage episode ends after the last frame whose own band score was above the
//! threshold (the median lags the recovery by a few frames).
//!
//! **Cost.** Rows are sampled: per band, 2 rows for the horizontal steps and 3 row pairs for the
//! vertical ones, each a straight pass over the row in chunks of 16 samples (one `psadbw` each on
//! x86-64, see `sad`), with the grid columns summed separately (1/16 of them). About a third of
//! the luma is read once; the whole-picture blockiness reads every 4th row, 12 of each 16 samples
//! compared at once. The sums are exact (integers), so how they are computed changes no figure.
//! With `AVMON_CORRUPTION_ROWS=all` in the environment every row off the 4-row grid is read
//! instead ([`Rows::All`]), to measure what the sampling costs in accuracy (docs/accuracy.md).
//!
//! Diagnostics: with `AVMON_CORRUPTION_TRACE` set in the environment, every frame's scores are
//! printed on stderr (`corruption t=… key=… flags=… global=… band=… base=… score=… colour=… pic=…`).
//!
//! **Fidelity tiers.** Below `full` (reference frames or keyframes only) the picture score, torn
//! rows and softened streaks are not judged: their baselines assume every picture. The
//! decoder's evidence, smear, decoder grey and colour damage still are (colour damage needs 3
//! decoded pictures in a row, so it is seen later there). A tier change forgets everything
//! learnt.
//!
//! **The learned model (experimental, off by default).** With `model = true`, a small
//! convolutional network ([`damage_model`](crate::damage_model)) trained on real photographs and
//! footage damaged in every way above (bench/learn) scores every `model_every`-th picture (and
//! the picture after one it scored at or above `model_threshold`, and every picture while it sees
//! damage), per 16×16 cell. Two pictures in a row it scores at or above `model_threshold` are
//! damaged from the first (one alone is not), and the damage lasts until a picture it scores
//! falls below half of it. Like the rules, it starts no damage in the half second after a cut
//! (an encoder's first pictures of new content are coarse everywhere). This is picture evidence
//! like the rules above,
//! combined with them (either makes an episode; the onset is the earliest). The episode's Begin
//! then carries `regions`: the boxes of the cells it saw damaged, as `[x0, y0, x1, y1]` fractions
//! of the picture, which the alert's snapshot outlines in red. It is off by default because on
//! the held-out real content it does not yet meet its targets (docs/accuracy.md, "Picture damage
//! on real content"). `AVMON_CORRUPTION_RULES=off` in the environment turns the hand-made rules
//! off, to measure the model alone; `AVMON_DAMAGE_FEATURES=file` writes what the model sees of
//! every picture to `file` (its training data). Only `full` runs it.
//!
//! Settings (`[detectors.corruption]`): `enabled`, `severity` (default `major`), `threshold`
//! (1.5), `min_excess` (0.3), `baseline_frames` (50), `hold_s` (0.5), `max_hold_s` (10),
//! `min_duration` (0: one damaged frame counts), `picture` (true: use the picture score for
//! events; false: decoder evidence only, the score is still measured), `model` (false),
//! `model_threshold` (0.96), `model_every` (32), `colour` (true: judge colour-plane damage).

use avmon_core::{kinds, Details, Detector, Findings, Plane, Severity, Tier, VideoFrame};
use serde::{Deserialize, Serialize};

use crate::damage_model::{CellFeatures, DamageModel};
use crate::episode::{put, Episode, TIME_EPS};
use crate::luma::{quarter_lanes, QUARTER_CHUNK};
use crate::{check, frame_duration};
use crate::{chroma, quality};

/// Settings of the corruption detector.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorruptionConfig {
    /// Run this detector.
    pub enabled: bool,
    /// Severity of the findings.
    pub severity: Severity,
    /// A frame's band score above this multiple of the stream's baseline is damage.
    pub threshold: f64,
    /// …and it must exceed the baseline by at least this much (ratio units), so a stream whose
    /// baseline is very low does not flag small wobbles.
    pub min_excess: f64,
    /// Frames in the running median that makes the baseline.
    pub baseline_frames: usize,
    /// Damage episodes less than this many seconds apart are one.
    pub hold_s: f64,
    /// A decoder-flagged episode with no keyframe ends after this many seconds without new
    /// evidence.
    pub max_hold_s: f64,
    /// Seconds of damage before it is reported (0: a single frame counts).
    pub min_duration: f64,
    /// Report damage seen in the picture alone (no decoder evidence).
    pub picture: bool,
    /// Use the learned picture-damage model (see [`damage_model`](crate::damage_model)).
    pub model: bool,
    /// A picture whose model score (its most likely damaged cell) is at least this is damaged.
    pub model_threshold: f64,
    /// The model looks at every this-many-th picture (1: every picture), at the picture after
    /// one it scored at or above the threshold, and at every picture while it sees damage.
    pub model_every: usize,
    /// Judge colour-plane damage (broken chroma block edges, see [`chroma`]).
    pub colour: bool,
}

impl Default for CorruptionConfig {
    fn default() -> Self {
        CorruptionConfig {
            enabled: true,
            severity: Severity::Major,
            threshold: 1.5,
            min_excess: 0.3,
            baseline_frames: 50,
            hold_s: 0.5,
            max_hold_s: 10.0,
            min_duration: 0.0,
            picture: true,
            model: false,
            model_threshold: MODEL_THRESHOLD,
            model_every: MODEL_EVERY,
            colour: true,
        }
    }
}

impl CorruptionConfig {
    /// Push one message per invalid setting, prefixed with `path`.
    pub fn validate(&self, path: &str, errors: &mut Vec<String>) {
        check::within(path, "threshold", self.threshold, 1.0, 100.0, errors);
        check::within(path, "min_excess", self.min_excess, 0.0, 100.0, errors);
        check::within(
            path,
            "baseline_frames",
            self.baseline_frames as f64,
            3.0,
            MAX_BASELINE as f64,
            errors,
        );
        check::within(path, "hold_s", self.hold_s, 0.0, 60.0, errors);
        check::positive(path, "max_hold_s", self.max_hold_s, errors);
        check::within(path, "min_duration", self.min_duration, 0.0, 3600.0, errors);
        check::within(
            path,
            "model_threshold",
            self.model_threshold,
            0.01,
            1.0,
            errors,
        );
        check::within(
            path,
            "model_every",
            self.model_every as f64,
            1.0,
            250.0,
            errors,
        );
    }
}

/// Default [`CorruptionConfig::model_threshold`]: the lowest at which no clean picture of the
/// training corpus's `tune` split is damage, two in a row (`bench/learn/train.py tune`).
const MODEL_THRESHOLD: f64 = 0.96;
/// After a cut, the model's verdict starts no damage for this long (seconds).
const MODEL_CUT_QUIET_S: f64 = 0.5;
/// Default [`CorruptionConfig::model_every`]: the model's share of the decode's CPU is within 3 %
/// at 720p and 1080p when it looks at every 32nd picture (docs/accuracy.md).
const MODEL_EVERY: usize = 32;

/// The longest baseline window.
const MAX_BASELINE: usize = 256;
/// Frames in the short window whose median band score is judged: one odd frame (content edges
/// that happen to sit on the block grid) does not move it, damage that lasts a few frames does.
const SHORT: usize = 9;
/// Band height: one macroblock row.
const BAND: usize = 16;
/// Added to both sides of every step ratio (8-bit luma units): flat areas score 1.
const FLOOR: f64 = 2.0;
/// Frames of baseline needed before the picture is judged (after the start or a scene cut).
const MIN_BASE: usize = 13;
/// A picture whose mean step inside blocks is below this (8-bit luma units) is uniform (black,
/// a slate): it has no texture to judge and must not teach the baseline.
const FLAT_DETAIL: f64 = 0.25;
/// A band whose mean luma moved by more than this from the previous picture, or whose detail
/// (mean step inside blocks, plus [`FLOOR`]) grew or shrank by more than [`CUT_DETAIL`]×, changed
/// content…
const CUT_LUMA: f32 = 12.0;
const CUT_DETAIL: f32 = 2.0;
/// …and a picture where at least this share of the bands did is a scene cut.
const CUT_SHARE: f64 = 0.5;
/// A picture whose sampled rows (one per band, every [`STILL_STEP`]th sample) differ from the
/// previous picture's by less than this on average (8-bit levels) is the same picture again: a
/// freeze that the encoder keeps refining, or a still. What it shows is content, not damage
/// arriving, and it is not judged by its picture.
const STILL_DIFF: f64 = 1.5;
const STILL_STEP: usize = 4; // the step of `quarter_lanes`
/// A band whose vertical/horizontal step ratio rose above this multiple of its running mean
/// (plus [`ANISO_MARGIN`]) changed its texture's direction: content torn across rows (smeared,
/// displaced stripes)…
const ANISO_RISE: f32 = 2.0;
const ANISO_MARGIN: f32 = 0.1;
/// …and a picture whose short-window median share of such bands is above this is damaged.
const ANISO_SHARE: f32 = 0.3;
/// Only pictures with fewer such bands than this teach the running means, at this rate.
const ANISO_LEARN: f32 = 0.2;
const ANISO_RATE: f32 = 0.1;

/// A band whose sampled row pairs step by less than this on average (8-bit levels: in effect,
/// not at all) while its rows have more detail than [`SMEAR_DETAIL`] is *smeared*: columns of
/// constant value, the streaks a decoder's concealment draws down from the last row it could
/// decode, which survive a re-encode intact…
const SMEAR_VERTICAL: f32 = 0.1;
const SMEAR_DETAIL: f32 = 0.3;
/// …and a picture whose smeared bands run from at least this many bands above the bottom down to
/// it, under bands that are not smeared, is damaged.
const SMEAR_BANDS: usize = 3;

/// A band whose sampled rows are this close to mid-grey (128, what FFmpeg's decoders draw where a
/// reference picture is missing; encoded again it comes back a quantiser step off, 130 in the
/// training corpus)…
const GREY_LUMA: u8 = 4;
/// …and flatter than this (steps across and down, 8-bit units) is *decoder grey*…
const GREY_DETAIL: f32 = 0.1;
/// …and a picture with at least this share of such bands, arrived since the previous picture, is
/// damaged.
const GREY_SHARE: f64 = 0.25;

/// A band whose vertical/horizontal step ratio fell below this multiple of its running mean and
/// of the picture's median band, and below [`STREAK_MAX`], turned to vertical stripes that the
/// rest of the picture does not have: concealment streaks that a re-encode softened (they step
/// a little from row to row, so they are not [`smeared`](Band::smeared))…
const STREAK_FALL: f32 = 0.6;
const STREAK_MAX: f32 = 0.4;
/// …and a picture is damaged when at least this many pictures of the short window had such
/// bands at the bottom (the sampled rows catch the softened streaks in some pictures, not all).
const STREAK_FRAMES: usize = 3;

/// Streaked bands at the bottom of a picture: how many consecutive bands, ending with the last
/// one, turned to vertical stripes against their own running means and against the picture's
/// median band `median` (see [`STREAK_FALL`]). 0 when every band below the top one did (the
/// whole picture changed: content, not damage).
fn streak_run(bands: &[Band], base: &[f32], median: f32) -> usize {
    let limit = STREAK_MAX.min(STREAK_FALL * median);
    let run = bands
        .iter()
        .zip(base)
        .skip(1)
        .rev()
        .take_while(|(b, base)| b.aniso < limit.min(STREAK_FALL * **base))
        .count();
    if run + 1 >= bands.len() {
        0
    } else {
        run
    }
}

/// Smeared bands (see [`SMEAR_VERTICAL`]) at the bottom of a picture: how many consecutive
/// bands, ending with the last one, are smeared. 0 when every band below the top one is (a
/// picture that is all vertical structure, such as colour bars or a horizontal gradient, is
/// content: damage starts where the lost data starts, below a band that decoded).
fn smear_run(bands: &[Band]) -> usize {
    let run = bands
        .iter()
        .skip(1)
        .rev()
        .take_while(|b| b.smeared())
        .count();
    if run + 1 >= bands.len() {
        0
    } else {
        run
    }
}

/// What [`CorruptionDetector::scan`] found in a picture.
#[derive(Clone, Copy, Debug)]
struct Scan {
    m: Blockiness,
    /// Uniform (black, a slate): nothing to judge.
    flat: bool,
    /// New content (a scene cut, or a uniform picture coming or going).
    cut: bool,
    /// The previous picture again.
    still: bool,
    /// Share of bands whose step direction turned (see [`ANISO_RISE`]).
    share: f32,
    /// Smeared (see [`smear_run`]): smear arrived at the bottom of the picture, or stays there
    /// since it arrived.
    smear: bool,
    /// Streaked (see [`streak_run`]): softened streaks at the bottom of the picture, judged
    /// once the running means learnt the content.
    streak: bool,
    /// Decoder grey (see [`Band::grey`]): enough grey bands arrived, or stay since they did.
    grey: bool,
}

/// Blockiness of one picture.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Blockiness {
    /// Whole-picture blockiness: per cent of flat block runs ([`quality::blockiness`]).
    pub global: f64,
    /// The largest band's 16-pixel-grid step over its step inside blocks.
    pub band: f64,
    /// Mean luma step between neighbouring pixels inside blocks on the sampled rows (the
    /// picture's detail; about 0 for black or uniform pictures).
    pub detail: f64,
}

/// Samples per chunk in the row sums below: one 16-byte vector.
const LANES: usize = 16;

/// Sum of |a[i] − b[i]| over the common length of two runs of samples.
///
/// Summed a chunk of 16 at a time, as differences of `i32`s: the form the compiler turns into
/// one `psadbw` per chunk on any x86-64 (`u8::abs_diff` summed straight into a `u32`, or with no
/// fixed chunk, it widens every byte to 32 bits first, 3–4× slower).
#[inline]
fn sad(a: &[u8], b: &[u8]) -> u32 {
    let n = a.len().min(b.len());
    let (a, b) = (a[..n].chunks_exact(LANES), b[..n].chunks_exact(LANES));
    let tail: u32 = a
        .remainder()
        .iter()
        .zip(b.remainder())
        .map(|(&x, &y)| u32::from(x.abs_diff(y)))
        .sum();
    a.zip(b)
        .map(|(x, y)| {
            let (x, y): (&[u8; LANES], &[u8; LANES]) = (
                x.try_into().expect("a chunk"),
                y.try_into().expect("a chunk"),
            );
            (0..LANES)
                .map(|i| (i32::from(x[i]) - i32::from(y[i])).unsigned_abs())
                .sum::<u32>()
        })
        .sum::<u32>()
        + tail
}

/// Sum of a run of samples, a chunk of 16 at a time (see [`sad`]).
#[inline]
pub(crate) fn total(row: &[u8]) -> u32 {
    let chunks = row.chunks_exact(LANES);
    let tail: u32 = chunks.remainder().iter().map(|&v| u32::from(v)).sum();
    chunks
        .map(|c| {
            let c: &[u8; LANES] = c.try_into().expect("a chunk");
            c.iter().map(|&v| u32::from(v)).sum::<u32>()
        })
        .sum::<u32>()
        + tail
}

/// Sum of |a[i+1] − a[i]| over a row, and the same over the pairs straddling the `grid`
/// boundaries (columns `grid·k − 1 | grid·k`).
#[inline]
fn row_steps(row: &[u8], grid: usize) -> (u32, u32) {
    let all = sad(row, row.get(1..).unwrap_or_default());
    let mut edge = 0u32;
    let mut x = grid;
    while x < row.len() {
        edge += u32::from(row[x].abs_diff(row[x - 1]));
        x += grid;
    }
    (all, edge)
}

/// Measure a picture (see the module docs for what is sampled).
pub fn measure(luma: &Plane<'_>) -> Blockiness {
    measure_bands(luma, &mut [])
}

/// What [`measure_bands`] finds in one band of 16 rows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Band {
    /// Mean luma of the sampled rows.
    pub luma: f32,
    /// Mean horizontal step between neighbouring pixels inside blocks (the band's detail).
    pub detail: f32,
    /// Mean vertical step inside blocks (0 for the top band, which has no vertical pairs
    /// measured).
    pub vertical: f32,
    /// The ratio of vertical to horizontal steps inside blocks, each plus [`FLOOR`] (1 for the
    /// top band).
    pub aniso: f32,
}

impl Default for Band {
    fn default() -> Self {
        Band {
            luma: 0.0,
            detail: 0.0,
            vertical: 0.0,
            aniso: 1.0,
        }
    }
}

impl Band {
    /// Smeared: no vertical step at all on the sampled row pairs, while the rows do have
    /// detail: columns of constant value (see [`smear_run`]).
    fn smeared(&self) -> bool {
        self.vertical < SMEAR_VERTICAL && self.detail > SMEAR_DETAIL
    }

    /// Decoder grey, as far as the band's means tell (see [`grey_row`] for the rest): flat at
    /// mid-grey, what a decoder draws where a reference is missing (a lost keyframe, a lost slice
    /// with nothing to conceal it from).
    fn grey(&self) -> bool {
        (self.luma - 128.0).abs() <= f32::from(GREY_LUMA)
            && self.detail < GREY_DETAIL
            && self.vertical < GREY_DETAIL
    }
}

/// Every sample of `row` within [`GREY_LUMA`] of mid-grey (128).
fn grey_row(row: &[u8]) -> bool {
    row.iter().all(|&v| v.abs_diff(128) <= GREY_LUMA)
}

/// Which rows of each band of 16 the picture score reads: rows for the horizontal steps, and the
/// first rows of pairs for the vertical steps inside blocks (neither on a 4-row grid line, nor a
/// pair across one).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rows {
    /// Two rows and two pairs per band (rows 5 and 10; pairs 1–2 and 9–10): about a third of the
    /// luma is read. The default.
    Sampled,
    /// Every row and every pair off the 4-row grid (12 rows, 8 pairs per band): the whole
    /// luma. For measuring what the sampling costs in accuracy (`AVMON_CORRUPTION_ROWS=all`).
    All,
}

/// [`measure`], also writing each band's [`Band`] figures into `bands`, as far as it reaches.
pub fn measure_bands(luma: &Plane<'_>, bands: &mut [Band]) -> Blockiness {
    measure_rows(luma, bands, Rows::Sampled)
}

/// [`measure_bands`] on the rows `rows` names.
pub fn measure_rows(luma: &Plane<'_>, bands: &mut [Band], rows: Rows) -> Blockiness {
    match rows {
        Rows::Sampled => measure_with(luma, bands, [5, 10], [1, 9]),
        Rows::All => measure_with(
            luma,
            bands,
            [1, 2, 3, 5, 6, 7, 9, 10, 11, 13, 14, 15],
            [1, 2, 5, 6, 9, 10, 13, 14],
        ),
    }
}

/// The picture score from `H` rows of each band (offsets in the band) for the horizontal steps,
/// and the `V` pairs starting at `pairs` for the vertical ones.
#[inline(always)]
fn measure_with<const H: usize, const V: usize>(
    luma: &Plane<'_>,
    bands: &mut [Band],
    h_rows: [usize; H],
    pairs: [usize; V],
) -> Blockiness {
    let (w, h) = (luma.width, luma.height);
    if w < 2 * BAND || h < 2 * BAND {
        bands.fill(Band::default());
        return Blockiness {
            global: 0.0,
            band: 1.0,
            detail: 0.0,
        };
    }
    let edges16 = (w - 1) / 16;
    let inner16 = (w - 1 - edges16) as f64;
    let mut band_max = 0f64;
    let mut detail = 0u64;
    for b in 0..h / BAND {
        let y0 = b * BAND;
        // Horizontal steps on the band's sampled rows.
        let (mut h_edge, mut h_inner) = (0u32, 0u32);
        let mut sum = 0u32;
        for dy in h_rows {
            let row = luma.row(y0 + dy);
            let (all, e16) = row_steps(row, 16);
            h_edge += e16;
            h_inner += all - e16;
            sum += total(row);
        }
        detail += u64::from(h_inner);
        // Vertical steps: across the band's top edge, and the pairs inside.
        let (v_edge, v_inner) = if b > 0 {
            let v_inner = pairs
                .iter()
                .map(|&dy| sad(luma.row(y0 + dy), luma.row(y0 + dy + 1)))
                .sum::<u32>();
            // The step across the band's top edge counts only as far as it stands out from
            // the steps just above and below it: a content edge that lies along the grid line
            // (a horizon in a slow pan) steps across two or three rows, a broken block edge
            // across one. What stands out is added to the band's own step inside blocks, so
            // an edge like its neighbours scores as the inside does.
            let across = sad(luma.row(y0 - 1), luma.row(y0));
            let beside =
                sad(luma.row(y0 - 2), luma.row(y0 - 1)).max(sad(luma.row(y0), luma.row(y0 + 1)));
            let v_edge = across.min(across.saturating_sub(beside) + v_inner / V as u32);
            (v_edge, v_inner)
        } else {
            (0, 0)
        };
        let edge_mean = (f64::from(h_edge) / (H * edges16) as f64
            + f64::from(v_edge) / w as f64 * f64::from(u8::from(b > 0)))
            / (1.0 + f64::from(u8::from(b > 0)));
        let inner_mean = (f64::from(h_inner) / (H as f64 * inner16)
            + f64::from(v_inner) / (V * w) as f64 * f64::from(u8::from(b > 0)))
            / (1.0 + f64::from(u8::from(b > 0)));
        let ratio = (edge_mean + FLOOR) / (inner_mean + FLOOR);
        band_max = band_max.max(ratio);
        if let Some(m) = bands.get_mut(b) {
            let h_mean = f64::from(h_inner) / (H as f64 * inner16);
            let v_mean = f64::from(v_inner) / (V * w) as f64;
            *m = Band {
                luma: sum as f32 / (H * w) as f32,
                detail: h_mean as f32,
                vertical: v_mean as f32,
                aniso: if b > 0 {
                    ((v_mean + FLOOR) / (h_mean + FLOOR)) as f32
                } else {
                    1.0
                },
            };
        }
    }
    Blockiness {
        global: quality::blockiness(luma),
        band: band_max,
        detail: detail as f64 / (H as f64 * inner16 * (h / BAND) as f64),
    }
}

/// Sum of |kept[i] − row[STILL_STEP · i]|, and `kept` becomes the row's every
/// [`STILL_STEP`]th sample (16 at a time, see [`quarter_lanes`]).
fn still_diff(row: &[u8], kept: &mut [u8]) -> u32 {
    const KEPT: usize = QUARTER_CHUNK / STILL_STEP;
    let n = (row.len() / QUARTER_CHUNK).min(kept.len() / KEPT);
    let (row_head, row_tail) = row.split_at(n * QUARTER_CHUNK);
    let (kept_head, kept_tail) = kept.split_at_mut(n * KEPT);
    let mut diff = 0;
    for (r, k) in row_head
        .chunks_exact(QUARTER_CHUNK)
        .zip(kept_head.chunks_exact_mut(KEPT))
    {
        let lanes = quarter_lanes(r.try_into().expect("a chunk"));
        let v: [u8; KEPT] = std::array::from_fn(|i| (lanes[i] & 0xff) as u8);
        diff += sad(k, &v);
        k.copy_from_slice(&v);
    }
    for (k, &v) in kept_tail
        .iter_mut()
        .zip(row_tail.iter().step_by(STILL_STEP))
    {
        diff += u32::from(k.abs_diff(v));
        *k = v;
    }
    diff
}

/// Sums over the current metrics period.
#[derive(Clone, Copy, Debug, Default)]
struct Period {
    frames: u64,
    sum: f64,
    max: f64,
}

/// Sums over the current episode.
#[derive(Clone, Copy, Debug, Default)]
struct Run {
    frames: u64,
    flags: u32,
    decoder: bool,
    peak: f64,
    /// The most chroma edges broken by colour-plane damage in one picture (0: none seen).
    colour_edges: usize,
}

impl Run {
    fn details(&self, d: &mut Details) {
        d.insert(
            "evidence".into(),
            if self.decoder { "decoder" } else { "picture" }.into(),
        );
        d.insert("decode_errors".into(), self.flags.into());
        put(d, "score", self.peak);
        if self.colour_edges > 0 {
            d.insert("colour_edges".into(), self.colour_edges.into());
        }
    }

    fn end_details(&self, d: &mut Details) {
        self.details(d);
        put(d, "peak_score", self.peak);
        d.insert("frames".into(), self.frames.into());
    }
}

/// The corruption detector's state.
pub struct CorruptionDetector {
    /// The stream's fidelity tier: a change forgets what was measured at the old one.
    tier: Tier,
    cfg: CorruptionConfig,
    episode: Episode,
    run: Run,
    period: Period,
    /// Whole input: frames, sum and max of the global blockiness.
    total: Period,
    /// Ring of recent band scores, and a scratch copy for the median.
    history: [f32; MAX_BASELINE],
    scratch: [f32; MAX_BASELINE],
    hist_len: usize,
    hist_pos: usize,
    /// The last [`SHORT`] frames' (time, band score).
    recent: [(f64, f32); SHORT],
    /// The same frames' shares of bands whose step direction turned (see [`ANISO_RISE`]).
    shares: [f32; SHORT],
    /// The same frames: whether each was streaked (see [`streak_run`]).
    streaks: [bool; SHORT],
    recent_pos: usize,
    /// Onset of the current picture damage.
    picture_since: Option<f64>,
    /// Decoder evidence holds until a clean keyframe; the time of the last evidence.
    decoder_hold: Option<f64>,
    /// End of the last damaged frame, while the episode waits out `hold_s`.
    last_bad_end: Option<f64>,
    /// Mean luma and detail per band of this picture and the previous one (sized at the first
    /// frame and when the picture size changes).
    means: Vec<Band>,
    prev_means: Vec<Band>,
    /// Per band, the running mean of its vertical/horizontal step ratio (see [`ANISO_RISE`]),
    /// and how many pictures taught it since the last cut.
    aniso_base: Vec<f32>,
    aniso_n: usize,
    /// Scratch for the picture's median band step direction (sized once per picture size).
    aniso_scratch: Vec<f32>,
    /// One sampled row per band of the previous picture, for telling a still picture.
    rows: Vec<u8>,
    /// Whether `prev_means` holds the previous picture, and whether that one was uniform.
    have_prev: bool,
    /// Whether the previous picture was smeared (damage that arrived and has not gone).
    smearing: bool,
    /// Whether the previous picture was decoder grey (likewise), and how many grey bands it had.
    greying: bool,
    prev_greys: usize,
    /// Colour damage (see [`chroma::ColourDamage`]).
    colour: chroma::ColourDamage,
    prev_flat: bool,
    trace: bool,
    /// The rows the picture score reads (`AVMON_CORRUPTION_ROWS=all`: every row, to measure
    /// what the sampling costs in accuracy).
    score_rows: Rows,
    /// The learned model's view of the picture, the model, and its state.
    cells: CellFeatures,
    model: DamageModel,
    /// Pictures until the model looks again.
    model_wait: usize,
    /// The model looks at the next picture: the last one it looked at scored at or above the
    /// threshold (or, in damage, above half of it).
    model_suspect: bool,
    /// Onset of the damage the model sees.
    model_since: Option<f64>,
    /// The last picture the model looked at scored at or above the threshold, at this time (one
    /// more in a row makes it damage).
    model_first: Option<f64>,
    /// The model's verdict starts no damage before this media time (half a second after a cut).
    model_quiet_until: f64,
    /// Where the model saw the current episode's damage: boxes `[x0, y0, x1, y1]` in fractions
    /// of the picture's width and height (the `regions` detail, drawn on the alert's snapshot).
    regions: Vec<[f64; 4]>,
    /// `AVMON_DAMAGE_FEATURES=file`: every picture's cell figures are written there (the
    /// model's training data), and the model looks at every picture.
    dump: Option<std::io::BufWriter<std::fs::File>>,
    /// The hand-made picture rules (band score, torn, streaked, smeared) are used
    /// (`AVMON_CORRUPTION_RULES=off` turns them off, to measure the model alone).
    rules: bool,
}

impl CorruptionDetector {
    pub fn new(cfg: &CorruptionConfig) -> Self {
        CorruptionDetector {
            tier: Tier::Full,
            cfg: cfg.clone(),
            episode: Episode::new(kinds::VIDEO_CORRUPTION, cfg.severity, cfg.min_duration),
            run: Run::default(),
            period: Period::default(),
            total: Period::default(),
            history: [0.0; MAX_BASELINE],
            scratch: [0.0; MAX_BASELINE],
            hist_len: 0,
            hist_pos: 0,
            recent: [(0.0, 0.0); SHORT],
            shares: [0.0; SHORT],
            streaks: [false; SHORT],
            recent_pos: 0,
            picture_since: None,
            decoder_hold: None,
            last_bad_end: None,
            means: Vec::new(),
            prev_means: Vec::new(),
            aniso_base: Vec::new(),
            aniso_n: 0,
            aniso_scratch: Vec::new(),
            rows: Vec::new(),
            have_prev: false,
            smearing: false,
            greying: false,
            prev_greys: 0,
            colour: chroma::ColourDamage::default(),
            prev_flat: false,
            trace: std::env::var_os("AVMON_CORRUPTION_TRACE").is_some(),
            score_rows: match std::env::var("AVMON_CORRUPTION_ROWS").as_deref() {
                Ok("all") => Rows::All,
                _ => Rows::Sampled,
            },
            cells: CellFeatures::default(),
            model: DamageModel::default(),
            model_wait: 0,
            model_suspect: false,
            model_since: None,
            model_first: None,
            model_quiet_until: f64::NEG_INFINITY,
            regions: Vec::new(),
            dump: std::env::var_os("AVMON_DAMAGE_FEATURES")
                .and_then(|p| std::fs::File::create(p).ok())
                .map(std::io::BufWriter::new),
            rules: std::env::var("AVMON_CORRUPTION_RULES").as_deref() != Ok("off"),
        }
    }

    /// The model's verdict on this picture: `Some(score)` when it looked (see
    /// [`CorruptionConfig::model_every`]), `None` when it did not.
    fn look(&mut self, frame: &VideoFrame<'_>) -> Option<f32> {
        if self.dump.is_none() && (!self.cfg.model || self.tier != Tier::Full) {
            return None;
        }
        let due = self.dump.is_some() || self.model_wait == 0 || self.model_suspect;
        if !due {
            self.model_wait -= 1;
            self.cells.track(&frame.luma);
            return None;
        }
        self.cells.measure(&frame.luma);
        if let Some(d) = &mut self.dump {
            if self.cells.dump(frame.t, d).is_err() {
                self.dump = None;
            }
        }
        self.model_wait = self.cfg.model_every.max(1) - 1;
        let s = self.model.score(&self.cells)?;
        // Suspect, so the next picture is looked at too: a score that one more in a row would
        // make damage, or, in damage, one that keeps it going.
        let keep = if self.model_since.is_some() { 0.5 } else { 1.0 };
        self.model_suspect = f64::from(s) >= self.cfg.model_threshold * keep;
        Some(s)
    }

    fn window(&self) -> usize {
        self.cfg.baseline_frames.clamp(3, MAX_BASELINE)
    }

    /// The running median of recent band scores; `None` until it has [`MIN_BASE`] frames (or
    /// half the window, if that is fewer).
    fn baseline(&mut self) -> Option<f64> {
        let n = self.hist_len;
        if n < MIN_BASE.min(self.window() / 2) {
            return None;
        }
        let s = &mut self.scratch[..n];
        s.copy_from_slice(&self.history[..n]);
        let (_, m, _) = s.select_nth_unstable_by(n / 2, f32::total_cmp);
        Some(f64::from(*m))
    }

    /// Forget the baseline and the short window: the content changed (a scene cut, black or a
    /// uniform picture coming or going), so what was learnt says nothing about the new pictures.
    fn relearn(&mut self) {
        self.hist_len = 0;
        self.hist_pos = 0;
        self.recent_pos = 0;
        self.picture_since = None;
        self.aniso_n = 0;
    }

    /// Measure a picture: its blockiness, whether it is uniform, whether it starts a new scene,
    /// whether it is the previous picture again (still), how torn and whether smeared it is.
    fn scan(&mut self, luma: &Plane<'_>) -> Scan {
        let bands = luma.height / BAND;
        let per_row = luma.width.div_ceil(STILL_STEP);
        if self.means.len() != bands || self.rows.len() != bands * per_row {
            self.means.resize(bands, Band::default());
            self.prev_means.resize(bands, Band::default());
            self.aniso_base.clear();
            self.aniso_base.resize(bands, 1.0);
            self.aniso_scratch = Vec::with_capacity(bands);
            self.aniso_n = 0;
            self.rows.clear();
            self.rows.resize(bands * per_row, 0);
            self.have_prev = false;
            self.smearing = false;
            self.greying = false;
            self.prev_greys = 0;
        }
        let m = measure_rows(luma, &mut self.means, self.score_rows);
        let flat = m.detail < FLAT_DETAIL;
        let cut = !self.have_prev || flat != self.prev_flat || {
            let moved = self
                .means
                .iter()
                .zip(&self.prev_means)
                .filter(|(a, b)| {
                    let (da, db) = (a.detail + FLOOR as f32, b.detail + FLOOR as f32);
                    (a.luma - b.luma).abs() > CUT_LUMA
                        || da > CUT_DETAIL * db
                        || db > CUT_DETAIL * da
                })
                .count();
            moved as f64 >= CUT_SHARE * bands.max(1) as f64
        };
        // Compare one row per band with the previous picture's, and keep it.
        let mut diff = 0u64;
        for (band, kept) in self.rows.chunks_exact_mut(per_row.max(1)).enumerate() {
            diff += u64::from(still_diff(luma.row(band * BAND + BAND / 2), kept));
        }
        let still = self.have_prev
            && !self.rows.is_empty()
            && (diff as f64 / self.rows.len() as f64) < STILL_DIFF;
        // Bands (below the top one) whose step direction turned towards vertical.
        let torn = self
            .means
            .iter()
            .zip(&self.aniso_base)
            .skip(1)
            .filter(|(m, base)| m.aniso > ANISO_RISE * **base + ANISO_MARGIN)
            .count();
        let share = torn as f32 / bands.saturating_sub(1).max(1) as f32;
        // Smear is damage when it arrives (more smeared bands at the bottom than the previous
        // picture had) and while it stays; smear that was there from the first picture of the
        // content is what the content looks like.
        let run = smear_run(&self.means);
        let smear = run >= SMEAR_BANDS
            && (self.smearing || (self.have_prev && run > smear_run(&self.prev_means)));
        self.smearing = smear;
        // Decoder grey likewise: when it arrives and while it stays; grey from the first picture
        // on is a slate.
        // (A band flat inside its blocks at a mean near 128 is rare; only then is its middle
        // row read again, to see that it is grey edge to edge, not flat tiles of other levels.)
        let greys = self
            .means
            .iter()
            .enumerate()
            .filter(|(b, m)| m.grey() && grey_row(&luma.row(b * BAND + BAND / 2)[..luma.width]))
            .count();
        let grey = greys as f64 >= GREY_SHARE * bands.max(1) as f64
            && (self.greying || (self.have_prev && greys > self.prev_greys));
        self.greying = grey;
        self.prev_greys = greys;
        let streak = self.aniso_n >= MIN_BASE && bands > 2 && {
            // The median band's step direction (below the top band, which has none).
            self.aniso_scratch.clear();
            self.aniso_scratch
                .extend(self.means.iter().skip(1).map(|b| b.aniso));
            let mid = self.aniso_scratch.len() / 2;
            let (_, median, _) = self
                .aniso_scratch
                .select_nth_unstable_by(mid, f32::total_cmp);
            let median = *median;
            streak_run(&self.means, &self.aniso_base, median) > 0
        };
        std::mem::swap(&mut self.means, &mut self.prev_means);
        self.have_prev = true;
        self.prev_flat = flat;
        Scan {
            m,
            flat,
            cut,
            still,
            share,
            smear,
            streak,
            grey,
        }
    }

    /// Teach the per-band running step-direction means with the picture just scanned.
    fn learn_aniso(&mut self, rate: f32) {
        let first = self.aniso_n == 0;
        for (base, m) in self.aniso_base.iter_mut().zip(&self.prev_means) {
            *base = if first {
                m.aniso
            } else {
                *base + rate * (m.aniso - *base)
            };
        }
        self.aniso_n += 1;
    }

    fn remember(&mut self, band: f64) {
        let w = self.window();
        self.history[self.hist_pos % w] = band as f32;
        self.hist_pos = (self.hist_pos + 1) % w;
        self.hist_len = (self.hist_len + 1).min(w);
    }
}

impl Detector for CorruptionDetector {
    fn kind(&self) -> &'static str {
        kinds::VIDEO_CORRUPTION
    }

    fn on_tier(&mut self, tier: Tier) {
        if crate::tier_changed(&mut self.tier, tier) {
            self.reset();
        }
    }

    fn on_video(&mut self, frame: &VideoFrame<'_>, out: &mut Findings) {
        // An End owed since a reset goes out first, whatever this frame shows.
        self.episode.flush(out);
        let Scan {
            m,
            flat,
            cut,
            still: still_picture,
            share,
            smear,
            streak,
            grey,
        } = self.scan(&frame.luma);
        // Colour-plane damage (see `chroma`): chroma block edges newly broken that stay.
        let judged = match &frame.chroma {
            Some(c) if self.cfg.colour && self.cfg.picture && self.rules => {
                self.colour.judge(frame.t, &frame.luma, c)
            }
            _ => {
                self.colour.reset();
                chroma::Colour::default()
            }
        };
        let colour = judged.since.is_some();
        let seen = self.look(frame);
        if cut {
            self.relearn();
        }
        self.period.frames += 1;
        self.period.sum += m.global;
        self.period.max = self.period.max.max(m.global);
        self.total.frames += 1;
        self.total.sum += m.global;
        self.total.max = self.total.max.max(m.global);

        let flagged = frame.corrupt || frame.decode_errors != 0;
        if flagged {
            self.decoder_hold = Some(frame.t);
        } else if let Some(since) = self.decoder_hold {
            if frame.key || frame.t - since >= self.cfg.max_hold_s - TIME_EPS {
                self.decoder_hold = None;
            }
        }
        // The short window: the last `SHORT` band scores and their times.
        // A frame that repeats the previous picture (same band score to the bit) adds nothing:
        // a frozen picture is one observation, not many.
        let prev = self.recent[(self.recent_pos + SHORT - 1) % SHORT].1;
        let changed = !flat && !still_picture && (self.recent_pos == 0 || prev != m.band as f32);
        if changed {
            self.recent[self.recent_pos % SHORT] = (frame.t, m.band as f32);
            self.shares[self.recent_pos % SHORT] = share;
            self.streaks[self.recent_pos % SHORT] = streak;
            self.recent_pos += 1;
        }
        let baseline = self.baseline();
        let n = self.recent_pos.min(SHORT);
        let mut short = [0f32; SHORT];
        for (dst, (_, b)) in short.iter_mut().zip(&self.recent[..n]) {
            *dst = *b;
        }
        let short = &mut short[..n];
        let mut torn = [0f32; SHORT];
        torn[..n].copy_from_slice(&self.shares[..n]);
        let torn_med = if n == 0 {
            0.0
        } else {
            let (_, med, _) = torn[..n].select_nth_unstable_by(n / 2, f32::total_cmp);
            *med
        };
        let (lo, hi) = short
            .iter()
            .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let short_med = if n == 0 {
            // Nothing to judge yet (uniform pictures since the last cut).
            1.0
        } else {
            let (_, med, _) = short.select_nth_unstable_by(n / 2, f32::total_cmp);
            f64::from(*med)
        };
        // A picture that does not change (a freeze, a still) scores the same every frame: what
        // it shows is content, not damage arriving. Damage changes the picture as it spreads.
        let still = f64::from(hi - lo) <= 0.01 * short_med;
        let score = baseline.map_or(1.0, |b| short_med / b.max(1e-6));
        let was = self.picture_since.is_some();
        let limit = if was {
            1.0 + (self.cfg.threshold - 1.0) / 2.0
        } else {
            self.cfg.threshold
        };
        let blocky =
            baseline.is_some_and(|b| score > limit && short_med - b >= self.cfg.min_excess);
        // Torn: enough bands turned their step direction towards vertical, judged once the
        // running means learnt from enough pictures of this content.
        let torn_bad = self.aniso_n >= MIN_BASE && torn_med > ANISO_SHARE;
        // Streaked: softened streaks at the bottom in enough pictures of the short window.
        let streaks = self.streaks[..n].iter().filter(|&&s| s).count();
        let streak_bad = streaks >= STREAK_FRAMES;
        // Smear needs no baseline and no window: it is judged on the picture alone.
        let smeared = self.cfg.picture && self.rules && !flat && smear;
        // Decoder grey likewise, and on a picture that is grey all over (flat) too.
        let greyed = self.cfg.picture && self.rules && grey;
        let smeared = smeared || greyed;
        let heuristic = smeared
            || (self.cfg.picture
                && self.rules
                // The baselines and the short window are learnt over consecutive pictures of
                // every type: from reference frames or keyframes alone they measure another
                // mix (P pictures are blockier than the B pictures skipped), so below `full`
                // only the decoder's evidence and smear (judged on the picture alone) count.
                && self.tier == Tier::Full
                && !flat
                && n == SHORT
                && changed
                && !still
                && (blocky || torn_bad || streak_bad));
        // The model's evidence: two pictures in a row that it scores at or above the threshold
        // (the second is looked at because the first was suspect) are damaged from the first,
        // and stay so until a picture it looks at scores below half the threshold. One picture
        // alone is not: damage lasts, an odd picture of real content does not.
        if cut {
            self.model_quiet_until = frame.t + MODEL_CUT_QUIET_S;
        }
        let model_bad = self.cfg.picture
            && match seen {
                Some(s) if self.model_since.is_some() => {
                    f64::from(s) >= self.cfg.model_threshold / 2.0
                }
                // New content is not judged until it has settled: an encoder's first pictures
                // after a cut are coarse everywhere (as the rules wait for their baseline).
                Some(_) if frame.t < self.model_quiet_until - TIME_EPS => {
                    self.model_first = None;
                    false
                }
                Some(s) if f64::from(s) >= self.cfg.model_threshold => {
                    match self.model_first.replace(frame.t) {
                        Some(first) => {
                            self.model_since = Some(first);
                            true
                        }
                        None => false,
                    }
                }
                Some(_) => {
                    self.model_first = None;
                    false
                }
                None => self.model_since.is_some(),
            };
        if model_bad {
            self.model_since.get_or_insert(frame.t);
        } else {
            self.model_since = None;
        }
        let picture = heuristic || model_bad || colour;
        // Onset of picture damage: the earliest frame of the short window already above the
        // threshold (the median needs a few damaged frames to move), or the first picture the
        // model saw damaged.
        let mut onset = frame.t;
        if picture && !was && !smeared {
            if heuristic {
                let b = baseline.unwrap_or(1.0);
                let streak_only = streak_bad && !blocky && !torn_bad;
                for (((t, band), share), streak) in self.recent[..n]
                    .iter()
                    .zip(&self.shares[..n])
                    .zip(&self.streaks[..n])
                {
                    let own = if torn_bad {
                        *share > ANISO_SHARE
                    } else if streak_only {
                        *streak
                    } else {
                        f64::from(*band) > b * self.cfg.threshold
                    };
                    if own && *t < onset {
                        onset = *t;
                    }
                }
            }
            if let Some(since) = self.model_since {
                onset = onset.min(since);
            }
            if let Some(since) = judged.since {
                onset = onset.min(since);
            }
            self.picture_since = Some(onset);
        } else if !picture {
            self.picture_since = None;
        }
        if self.trace {
            eprintln!(
                "corruption t={:.3} key={} flags={} global={:.3} band={:.3} detail={:.2} cut={} base={:.3} score={:.3} torn={:.2} torn_med={:.2} smear={} grey={} colour={}/{}/{} streak={}/{} model={} pic={}",
                frame.t,
                frame.key,
                frame.decode_errors,
                m.global,
                m.band,
                m.detail,
                cut,
                baseline.unwrap_or(0.0),
                score,
                share,
                torn_med,
                smeared,
                greyed,
                judged.edges.broken,
                judged.edges.mid,
                judged.kept,
                u8::from(streak),
                streaks,
                seen.map_or("-".to_string(), |s| format!("{s:.3}")),
                picture
            );
        }
        // Damaged pictures stay out of the baseline (unless the "damage" lasts so long that it
        // is the content now); decoder-flagged ones too.
        let long = self
            .picture_since
            .is_some_and(|since| frame.t - since >= self.cfg.max_hold_s);
        if !flat && (!picture || long) && self.decoder_hold.is_none() {
            self.remember(m.band);
        }
        // The step-direction means learn from undamaged pictures of changing content: fully
        // from those with few turned bands, slowly from the others (so that content which
        // slowly turns is learnt), not from damaged ones (unless it lasted `max_hold_s`).
        if changed && self.decoder_hold.is_none() && (!picture || long) {
            if (share < ANISO_LEARN && !streak) || long || self.aniso_n == 0 {
                self.learn_aniso(ANISO_RATE);
            } else {
                self.learn_aniso(ANISO_RATE / 10.0);
            }
        }

        let bad = picture || self.decoder_hold.is_some();
        if bad {
            if !self.episode.in_run() {
                self.run = Run::default();
            }
            self.run.frames += 1;
            self.run.flags |= frame.decode_errors;
            self.run.decoder |= self.decoder_hold.is_some();
            self.run.peak = self.run.peak.max(score);
            if colour {
                self.run.colour_edges = self.run.colour_edges.max(judged.kept);
            }
            let end = frame.t + frame_duration(frame);
            // Picture damage is judged on a median, which lags the recovery by a few frames:
            // the episode's end is after the last frame that was itself above the threshold.
            let own = self.decoder_hold.is_some()
                || !was
                || smeared
                || colour
                || share > ANISO_SHARE
                || (streak && streak_bad)
                || (model_bad && seen.is_some_and(|s| f64::from(s) >= self.cfg.model_threshold))
                || baseline.is_some_and(|b| m.band > b * self.cfg.threshold);
            if own || self.last_bad_end.is_none() {
                self.last_bad_end = Some(end);
            }
            if model_bad && seen.is_some() && self.regions.is_empty() {
                self.regions = self.model.regions(
                    self.cells.rows,
                    self.cells.cols,
                    (self.cfg.model_threshold / 2.0) as f32,
                );
            }
            let run = self.run;
            let start = if picture { onset.min(frame.t) } else { frame.t };
            let regions = &self.regions;
            self.episode.bad(start, end, out, |d| {
                run.details(d);
                if !regions.is_empty() {
                    d.insert("regions".into(), serde_json::json!(regions));
                }
            });
        } else if let Some(end) = self.last_bad_end {
            if frame.t - end >= self.cfg.hold_s - TIME_EPS {
                self.last_bad_end = None;
                self.regions.clear();
                let run = self.run;
                self.episode.good(end, out, |d| run.end_details(d));
            }
        }
    }

    fn on_tick(&mut self, _now: f64, out: &mut Findings) {
        self.episode.flush(out);
    }

    fn take_metrics(&mut self, put: &mut dyn FnMut(&'static str, f64)) {
        let p = std::mem::take(&mut self.period);
        if p.frames > 0 {
            put("blockiness_mean", p.sum / p.frames as f64);
            put("blockiness_max", p.max);
        }
    }

    fn summarize(&self, put: &mut dyn FnMut(&'static str, f64)) {
        let t = &self.total;
        if t.frames > 0 {
            put("video.blockiness_mean", t.sum / t.frames as f64);
            put("video.blockiness_max", t.max);
        }
    }

    fn reset(&mut self) {
        // An open episode's End is owed at the end of its last damaged frame (see `episode`).
        self.last_bad_end = None;
        self.episode.reset();
        self.decoder_hold = None;
        self.relearn();
        self.have_prev = false;
        self.colour.reset();
        self.model_since = None;
        self.model_first = None;
        self.model_suspect = false;
        self.model_wait = 0;
        self.cells = CellFeatures::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use avmon_core::FindingEdge::{Begin, End};

    const W: usize = 320;
    const H: usize = 192;

    /// A deterministic hash of a position, for noise that moves with the picture.
    fn hash(x: i64, y: i64) -> u8 {
        let mut h = (x as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ (y as u64).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
        h ^= h >> 29;
        h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        (h >> 56) as u8
    }

    /// Smooth texture with fine grain, panning `speed` pixels per frame: natural-looking content.
    fn pan_at(x: i64, y: i64, i: usize, speed: i64) -> u8 {
        let u = (x + speed * i as i64) as f64;
        let y = y as f64;
        let v = 110.0
            + 45.0 * (u / 9.0 + y / 13.0).sin()
            + 30.0 * (y / 7.0 - u / 17.0).sin()
            + f64::from(hash(u as i64, y as i64) % 9)
            - 4.0;
        v.clamp(0.0, 255.0) as u8
    }

    fn pan(i: usize) -> Picture {
        Picture::from_fn(W, H, |x, y| pan_at(x as i64, y as i64, i, 3))
    }

    /// The clean contents: a pan, fresh noise every frame, a drifting gradient, moving sharp
    /// bars (whose edges land on the block grid now and then), a zoom-like ripple.
    type Content = (&'static str, Box<dyn Fn(usize) -> Picture>);

    fn contents() -> Vec<Content> {
        vec![
            ("pan", Box::new(pan)),
            (
                "noise",
                Box::new(|i| {
                    Picture::from_fn(W, H, |x, y| hash(x as i64 + 7919 * i as i64, y as i64))
                }),
            ),
            (
                "gradient",
                Box::new(|i| Picture::from_fn(W, H, |x, y| ((x + y + 2 * i) / 3 % 256) as u8)),
            ),
            (
                "bars",
                Box::new(|i| {
                    Picture::from_fn(W, H, |x, _| if (x + i) / 10 % 2 == 0 { 40 } else { 200 })
                }),
            ),
            (
                "ripple",
                Box::new(|i| {
                    Picture::from_fn(W, H, |x, y| {
                        let (dx, dy) = (x as f64 - 160.0, y as f64 - 96.0);
                        let r = (dx * dx + dy * dy).sqrt();
                        (128.0 + 90.0 * (r / (6.0 + i as f64 * 0.05)).sin()) as u8
                    })
                }),
            ),
        ]
    }

    /// `clean` with the blocks of macroblock rows `rows` each copied from a position displaced
    /// by a few pixels (different per block): what a lost slice looks like after concealment.
    fn displaced(clean: &Picture, i: usize, rows: std::ops::Range<usize>) -> Picture {
        let mut p = clean.clone();
        for by in rows {
            for bx in 0..W / 16 {
                let dx = i64::from(hash(bx as i64, by as i64) % 13) - 6;
                let dy = i64::from(hash(by as i64, bx as i64) % 9) - 4;
                for y in by * 16..by * 16 + 16 {
                    for x in bx * 16..bx * 16 + 16 {
                        p.set(x, y, pan_at(x as i64 + dx, y as i64 + dy, i, 3));
                    }
                }
            }
        }
        p
    }

    fn detector() -> CorruptionDetector {
        CorruptionDetector::new(&CorruptionConfig::default())
    }

    #[test]
    fn every_row_and_the_sampled_rows_tell_the_same_pictures_apart() {
        // Reading every row must not change what the score means, only how much it sees: on
        // clean content both row sets score near 1, and both see the displaced blocks.
        fn plane(p: &Picture) -> Plane<'_> {
            Plane::new(&p.data, p.stride, p.w, p.h).unwrap()
        }
        for (name, make) in contents() {
            let p = make(3);
            let (a, b) = (
                measure_rows(&plane(&p), &mut [], Rows::Sampled),
                measure_rows(&plane(&p), &mut [], Rows::All),
            );
            assert!(a.band < 1.6 && b.band < 1.6, "{name}: {a:?} {b:?}");
            assert!((a.detail - b.detail).abs() <= 0.25 * a.detail.max(b.detail) + 0.1);
        }
        let hit = displaced(&pan(3), 3, 5..7);
        for rows in [Rows::Sampled, Rows::All] {
            let clean = measure_rows(&plane(&pan(3)), &mut [], rows);
            let bad = measure_rows(&plane(&hit), &mut [], rows);
            assert!(bad.band > 1.5 * clean.band, "{rows:?}: {clean:?} {bad:?}");
        }
        // The default is the sampled set.
        let p = pan(5);
        assert_eq!(
            measure(&plane(&p)),
            measure_rows(&plane(&p), &mut [], Rows::Sampled)
        );
    }

    #[test]
    fn a_content_edge_along_the_grid_line_is_not_a_broken_block_edge() {
        // A horizon that a slow pan holds on a band's top line steps across a few rows; a
        // broken block edge across one. Only the second raises the band score.
        fn plane(p: &Picture) -> Plane<'_> {
            Plane::new(&p.data, p.stride, p.w, p.h).unwrap()
        }
        let with_edge = |rise: fn(usize) -> f64| {
            Picture::from_fn(W, H, |x, y| {
                (f64::from(pan_at(x as i64, y as i64, 3, 3)) * 0.5 + rise(y)) as u8
            })
        };
        // The top line of the band at rows 128..144 lies between rows 127 and 128.
        let soft = with_edge(|y| 30.0 * (y as f64 - 126.0).clamp(0.0, 3.0));
        let sharp = with_edge(|y| if y >= 128 { 90.0 } else { 0.0 });
        let none = with_edge(|_| 0.0);
        for rows in [Rows::Sampled, Rows::All] {
            let [none, soft, sharp] =
                [&none, &soft, &sharp].map(|p| measure_rows(&plane(p), &mut [], rows).band);
            assert!(soft < 1.15 * none, "{rows:?}: soft {soft} against {none}");
            assert!(sharp > 1.5 * none, "{rows:?}: sharp {sharp} against {none}");
        }
    }

    /// The model's score of every picture, each seen after the one before (as the detector
    /// sees them when it looks at every picture).
    fn model_scores(pics: &[Picture]) -> Vec<f64> {
        let mut cells = CellFeatures::default();
        let mut model = DamageModel::default();
        pics.iter()
            .map(|p| {
                cells.measure(&Plane::new(&p.data, p.stride, p.w, p.h).unwrap());
                f64::from(model.score(&cells).expect("a score"))
            })
            .collect()
    }

    #[test]
    fn the_model_looks_at_every_nth_picture_and_every_one_after_a_suspicion() {
        let pics: Vec<Picture> = (0..12).map(pan).collect();
        // A threshold no score reaches: never suspect.
        let mut d = CorruptionDetector::new(&CorruptionConfig {
            model: true,
            model_threshold: 2.5,
            model_every: 4,
            ..CorruptionConfig::default()
        });
        let looked: Vec<usize> = (0..pics.len())
            .filter(|&i| d.look(&pics[i].frame(i)).is_some())
            .collect();
        assert_eq!(looked, [0, 4, 8]);
        // A threshold at or below every score: every picture it looks at is suspect, so it looks
        // at every one.
        let lowest = model_scores(&pics).into_iter().fold(1.0, f64::min);
        let mut d = CorruptionDetector::new(&CorruptionConfig {
            model: true,
            model_threshold: lowest,
            model_every: 4,
            ..CorruptionConfig::default()
        });
        let looked = (0..pics.len())
            .filter(|&i| d.look(&pics[i].frame(i)).is_some())
            .count();
        assert_eq!(looked, pics.len(), "lowest score {lowest}");
        // Off, or below `full`: it never looks.
        for (model, tier) in [(false, Tier::Full), (true, Tier::Reference)] {
            let mut d = CorruptionDetector::new(&CorruptionConfig {
                model,
                ..CorruptionConfig::default()
            });
            d.on_tier(tier);
            assert!((0..pics.len()).all(|i| d.look(&pics[i].frame(i)).is_none()));
        }
    }

    #[test]
    fn the_models_verdict_alone_is_an_episode_with_the_regions_it_saw() {
        // The model's threshold just below what it scores on every picture of a clean pan (and
        // the hand-made rules off): one episode, from the first picture it judges (half a second
        // in: the first picture is new content).
        let pics: Vec<Picture> = (0..30).map(pan).collect();
        let scores = model_scores(&pics);
        let lowest = scores.iter().copied().fold(1.0, f64::min);
        let mut d = CorruptionDetector::new(&CorruptionConfig {
            model: true,
            model_threshold: lowest * 0.9,
            model_every: 1,
            ..CorruptionConfig::default()
        });
        d.rules = false;
        let seen = run_video(&mut d, &pics);
        let begins: Vec<&Seen> = seen.iter().filter(|s| s.f.edge == Begin).collect();
        assert_eq!(begins.len(), 1, "{:?}", edges(&seen));
        let first = (0..)
            .find(|&i| ft(i) >= MODEL_CUT_QUIET_S - TIME_EPS)
            .unwrap();
        assert_t(begins[0].f.t, ft(first));
        let regions = begins[0].f.details["regions"].as_array().expect("regions");
        assert!(!regions.is_empty());
        for r in regions {
            let b: Vec<f64> = r
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert!(
                b[0] < b[2] && b[1] < b[3] && b[2] <= 1.0 && b[3] <= 1.0,
                "{b:?}"
            );
        }
        // Off, the same pictures give nothing.
        let mut d = CorruptionDetector::new(&CorruptionConfig {
            model: false,
            model_threshold: lowest * 0.9,
            ..CorruptionConfig::default()
        });
        d.rules = false;
        assert!(run_video(&mut d, &pics).is_empty());
        // A threshold that only the highest-scoring picture reaches: one picture alone is not
        // damage.
        let (top, highest) = scores
            .iter()
            .copied()
            .enumerate()
            .fold((0, 0.0), |a, (i, s)| if s > a.1 { (i, s) } else { a });
        assert!(
            scores
                .iter()
                .enumerate()
                .all(|(i, &s)| i == top || s < highest),
            "{scores:?}"
        );
        let mut d = CorruptionDetector::new(&CorruptionConfig {
            model: true,
            model_threshold: highest,
            model_every: 1,
            ..CorruptionConfig::default()
        });
        d.rules = false;
        assert!(run_video(&mut d, &pics).is_empty(), "{scores:?}");
    }

    #[test]
    fn clean_textures_never_fire() {
        for (name, make) in contents() {
            let pics: Vec<Picture> = (0..150).map(&make).collect();
            let seen = run_video(&mut detector(), &pics);
            assert!(seen.is_empty(), "{name}: {:?}", edges(&seen));
        }
    }

    #[test]
    fn displaced_blocks_fire_at_their_first_frame_and_end_at_recovery() {
        let pics: Vec<Picture> = (0..120)
            .map(|i| {
                let p = pan(i);
                if (60..80).contains(&i) {
                    displaced(&p, i, 5..7)
                } else {
                    p
                }
            })
            .collect();
        let mut d = detector();
        let seen = run_video(&mut d, &pics);
        assert_eq!(edges(&seen).len(), 2, "{:?}", edges(&seen));
        assert_eq!(seen[0].f.edge, Begin);
        assert_t(seen[0].f.t, ft(60));
        assert_eq!(seen[0].f.details["evidence"], "picture");
        assert!(
            seen[0].at < 70,
            "reported within a few frames: {}",
            seen[0].at
        );
        assert_eq!(seen[1].f.edge, End);
        assert_t(seen[1].f.t, ft(80));
    }

    /// Content that varies along the rows only (vertical stripes, drifting), and the same with
    /// the rows of macroblock rows `rows` each taken from a different horizontal offset: stripes
    /// torn across rows, without steps on the block grid.
    fn stripes(i: usize, torn: std::ops::Range<usize>) -> Picture {
        Picture::from_fn(W, H, |x, y| {
            let dx = if torn.contains(&(y / 16)) {
                i64::from(hash(y as i64, 7) % 11)
            } else {
                0
            };
            let u = (x as i64 + dx + 2 * i as i64) as f64;
            (128.0 + 60.0 * (u / 7.0).sin()) as u8
        })
    }

    #[test]
    fn rows_torn_across_fire_and_clean_stripes_do_not() {
        let clean: Vec<Picture> = (0..150).map(|i| stripes(i, 0..0)).collect();
        let seen = run_video(&mut detector(), &clean);
        assert!(seen.is_empty(), "{:?}", edges(&seen));
        let pics: Vec<Picture> = (0..120)
            .map(|i| {
                if (60..90).contains(&i) {
                    stripes(i, 3..9)
                } else {
                    stripes(i, 0..0)
                }
            })
            .collect();
        let seen = run_video(&mut detector(), &pics);
        assert!(!seen.is_empty(), "torn rows not seen");
        assert_eq!(seen[0].f.edge, Begin);
        assert_t(seen[0].f.t, ft(60));
        assert!(
            seen[0].at < 70,
            "reported within a few frames: {}",
            seen[0].at
        );
    }

    /// Fresh noise, with every row from macroblock row `from` down a copy of the row above it
    /// (`smear`: streaks drawn down from the last decoded row, as concealment does), or with
    /// vertical stripes there instead (`!smear`: content built that way).
    fn streaked(i: usize, from: usize, smear: bool) -> Picture {
        let noise = |x: usize, y: usize| hash(x as i64 + 7919 * i as i64, y as i64);
        Picture::from_fn(W, H, |x, y| match (y >= from * 16, smear) {
            (false, _) => noise(x, y),
            (true, true) => noise(x, from * 16 - 1),
            (true, false) => (128.0 + 60.0 * (x as f64 / 5.0).sin()) as u8,
        })
    }

    #[test]
    fn smear_fires_when_it_arrives_and_not_when_it_is_the_content() {
        let pics: Vec<Picture> = (0..100)
            .map(|i| streaked(i, if (60..70).contains(&i) { 4 } else { H / 16 }, true))
            .collect();
        let seen = run_video(&mut detector(), &pics);
        assert_eq!(edges(&seen).len(), 2, "{:?}", edges(&seen));
        assert_eq!(seen[0].f.edge, Begin);
        assert_t(seen[0].f.t, ft(60));
        assert_eq!(seen[0].at, 60, "reported at the first smeared frame");
        assert_eq!(seen[1].f.edge, End);
        assert_t(seen[1].f.t, ft(70));
        // Stripes under noise from the first picture on: the content, never damage; and a
        // picture of stripes only (colour bars, a test card) after a cut is not either.
        let content: Vec<Picture> = (0..100)
            .map(|i| streaked(i, if i < 50 { 4 } else { 0 }, false))
            .collect();
        let seen = run_video(&mut detector(), &content);
        assert!(seen.is_empty(), "{:?}", edges(&seen));
    }

    /// The pan, with the rows from `from` down drawn in decoder grey (128, or 130 as a re-encode
    /// leaves it, from the whole picture).
    fn greyed(i: usize, from: usize) -> Picture {
        Picture::from_fn(W, H, |x, y| {
            if y >= from {
                if from == 0 {
                    130
                } else {
                    128
                }
            } else {
                pan_at(x as i64, y as i64, i, 3)
            }
        })
    }

    /// A pan with smooth colour that pans along; the chroma blocks in `lost` (chroma block
    /// column, row) drawn as zero (green).
    fn coloured(i: usize, lost: impl Fn(usize, usize) -> bool) -> Picture {
        pan(i).with_chroma(|x, y| {
            if lost(x / 8, y / 8) {
                (0, 0)
            } else {
                let u = (x + 2 * i) as f64;
                (
                    (128.0 + 30.0 * (u / 23.0).sin()) as u8,
                    (128.0 + 20.0 * (y as f64 / 19.0).cos()) as u8,
                )
            }
        })
    }

    #[test]
    fn colour_damage_fires_when_it_lasts_and_not_when_it_is_the_content() {
        // Blocks 3..8 across, 2..5 down lost their colour for 10 pictures: one episode, from
        // the first of them to the first whole picture.
        let region = |bx: usize, by: usize| (3..8).contains(&bx) && (2..5).contains(&by);
        let pics: Vec<Picture> = (0..80)
            .map(|i| {
                if (40..50).contains(&i) {
                    coloured(i, region)
                } else {
                    coloured(i, |_, _| false)
                }
            })
            .collect();
        let seen = run_video(&mut detector(), &pics);
        let e = edges(&seen);
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[0].0, Begin);
        let broken = seen[0].f.details["colour_edges"].as_u64().unwrap_or(0);
        assert!(
            broken >= chroma::BROKEN_EDGES as u64,
            "{:?}",
            seen[0].f.details
        );
        assert_t(e[0].1, ft(40));
        assert_t(e[1].1, ft(50));
        // Not when turned off.
        let mut off = CorruptionDetector::new(&CorruptionConfig {
            colour: false,
            ..CorruptionConfig::default()
        });
        assert!(run_video(&mut off, &pics).is_empty());
        // Two pictures are not enough (an encoder's chroma blocking comes and goes), a graphic
        // with the same edges from the first picture on is content, and so are sharp colour
        // edges off the grid as much as on it.
        for pics in [
            (0..80)
                .map(|i| {
                    if (40..42).contains(&i) {
                        coloured(i, region)
                    } else {
                        coloured(i, |_, _| false)
                    }
                })
                .collect::<Vec<_>>(),
            (0..80).map(|i| coloured(i, region)).collect(),
            // Graphics with sharp colour edges every 4 chroma samples, on the grid and off it,
            // arriving at a cut: content.
            (0..80)
                .map(|i| {
                    if i < 40 {
                        coloured(i, |_, _| false)
                    } else {
                        pan(i)
                            .with_chroma(|x, _| if x / 4 % 2 == 0 { (60, 200) } else { (200, 60) })
                    }
                })
                .collect(),
        ] {
            let seen = run_video(&mut detector(), &pics);
            assert!(seen.is_empty(), "{:?}", edges(&seen));
        }
    }

    #[test]
    fn decoder_grey_fires_when_it_arrives_and_not_when_it_is_the_content() {
        // The bottom half grey (a slice with no reference to conceal it from), then the whole
        // picture grey (a lost keyframe): two episodes, from the first grey picture of each.
        let pics: Vec<Picture> = (0..100)
            .map(|i| match i {
                40..=49 => greyed(i, H / 2),
                70..=74 => greyed(i, 0),
                _ => pan(i),
            })
            .collect();
        let seen = run_video(&mut detector(), &pics);
        let e = edges(&seen);
        assert_eq!(e.len(), 4, "{e:?}");
        assert_eq!((e[0].0, e[2].0), (Begin, Begin), "{e:?}");
        assert_t(e[0].1, ft(40));
        assert_t(e[1].1, ft(50));
        assert_t(e[2].1, ft(70));
        assert_t(e[3].1, ft(75));
        // Grey a fifth of the picture is not enough; a grey slate from the first picture on,
        // or a slate of another grey after a cut, is content.
        for pics in [
            (0..100)
                .map(|i| {
                    if i >= 40 {
                        greyed(i, H - H / 5)
                    } else {
                        pan(i)
                    }
                })
                .collect::<Vec<_>>(),
            (0..100)
                .map(|i| if i < 40 { greyed(i, 0) } else { pan(i) })
                .collect(),
            (0..100)
                .map(|i| {
                    if i >= 40 {
                        Picture::new(W, H, 110)
                    } else {
                        pan(i)
                    }
                })
                .collect(),
        ] {
            let seen = run_video(&mut detector(), &pics);
            assert!(seen.is_empty(), "{:?}", edges(&seen));
        }
    }

    /// Grain panning 3 pixels a frame, with the rows from macroblock row `from` down drawn from
    /// the row above them, softened: each row steps by a level now and then from the one above
    /// (a concealment streak after a re-encode), not by nothing.
    fn softened_streaks(i: usize, from: usize) -> Picture {
        let grain = |x: usize, y: usize| hash(x as i64 + 3 * i as i64, y as i64);
        Picture::from_fn(W, H, |x, y| {
            if y < from * 16 {
                grain(x, y)
            } else {
                grain(x, from * 16 - 1).saturating_add(hash(x as i64, y as i64) % 2)
            }
        })
    }

    fn grain(i: usize) -> Picture {
        softened_streaks(i, H / 16)
    }

    #[test]
    fn softened_streaks_fire_when_they_arrive_and_persist() {
        let bands = H / 16;
        let pics: Vec<Picture> = (0..130)
            .map(|i| {
                if (60..100).contains(&i) {
                    softened_streaks(i, bands - 2)
                } else {
                    grain(i)
                }
            })
            .collect();
        let seen = run_video(&mut detector(), &pics);
        assert_eq!(edges(&seen).len(), 2, "{:?}", edges(&seen));
        assert_eq!(seen[0].f.edge, Begin);
        assert_t(seen[0].f.t, ft(60));
        assert!(
            seen[0].at < 64,
            "reported within a few frames: {}",
            seen[0].at
        );
        assert_eq!(seen[1].f.edge, End);
        assert!(
            (ft(99)..=ft(106)).contains(&seen[1].f.t),
            "ends when the streaks go: {}",
            seen[1].f.t
        );
        // A streaked picture now and then (one in ten) is not damage that persists.
        let odd: Vec<Picture> = (0..130)
            .map(|i| {
                if i > 40 && i % 10 == 0 {
                    softened_streaks(i, bands - 2)
                } else {
                    grain(i)
                }
            })
            .collect();
        let seen = run_video(&mut detector(), &odd);
        assert!(seen.is_empty(), "{:?}", edges(&seen));
        // Vertical structure at the bottom from the first picture on is the content.
        let content: Vec<Picture> = (0..130).map(|i| softened_streaks(i, bands - 2)).collect();
        let seen = run_video(&mut detector(), &content);
        assert!(seen.is_empty(), "{:?}", edges(&seen));
    }

    #[test]
    fn black_to_picture_and_scene_cuts_do_not_fire() {
        let black = Picture::new(W, H, 16);
        // Flat 16-pixel tiles of random levels, new every frame: blocky by nature, so a cut
        // into it must re-learn the baseline instead of calling it damage.
        let tiles = |i: usize| {
            Picture::from_fn(W, H, |x, y| {
                hash((x / 16 + 100 * i) as i64, (y / 16) as i64)
            })
        };
        let dark = |i: usize| Picture::from_fn(W, H, |x, y| pan_at(x as i64, y as i64, i, 5) / 3);
        let mut pics: Vec<Picture> = Vec::new();
        pics.extend(times(black.clone(), 40));
        pics.extend((0..60).map(pan));
        pics.extend((0..60).map(tiles));
        pics.extend((0..60).map(dark));
        pics.extend(times(black.clone(), 30));
        pics.extend((0..60).map(tiles));
        pics.extend((0..60).map(pan));
        let seen = run_video(&mut detector(), &pics);
        assert!(seen.is_empty(), "{:?}", edges(&seen));
    }

    /// Feed `n` frames of the pan, with the decoder's flags and keyframes as `meta(i)` says.
    fn run_flags(
        d: &mut CorruptionDetector,
        n: usize,
        meta: impl Fn(usize) -> (bool, u32),
    ) -> Vec<Seen> {
        let mut seen = Vec::new();
        let mut out = Vec::new();
        for i in 0..n {
            let p = pan(i);
            let (key, flags) = meta(i);
            let mut f = p.frame(i);
            f.key = key;
            f.decode_errors = flags;
            d.on_video(&f, &mut out);
            seen.extend(out.drain(..).map(|f| Seen { at: i, f }));
        }
        seen
    }

    #[test]
    fn decoder_flags_fire_and_end_at_the_next_clean_keyframe() {
        let mut d = detector();
        let seen = run_flags(&mut d, 100, |i| {
            (i % 50 == 0, u32::from(i == 30 || i == 33))
        });
        assert_eq!(edges(&seen).len(), 2, "{:?}", edges(&seen));
        assert_eq!(seen[0].f.edge, Begin);
        assert_eq!(seen[0].at, 30, "reported at once");
        assert_t(seen[0].f.t, ft(30));
        assert_eq!(seen[0].f.details["evidence"], "decoder");
        assert_eq!(seen[1].f.edge, End);
        assert_t(seen[1].f.t, ft(50));
        assert_eq!(seen[1].f.details["frames"], 20);
    }

    #[test]
    fn reset_owes_the_end() {
        let mut d = detector();
        let seen = run_flags(&mut d, 20, |i| (i == 0, u32::from(i >= 10)));
        assert_eq!(edges(&seen), vec![(Begin, ft(10))]);
        d.reset();
        let seen = run_flags(&mut d, 5, |i| (i == 0, 0));
        assert_eq!(seen.len(), 1, "{:?}", edges(&seen));
        assert_eq!(seen[0].f.edge, End);
        assert_t(seen[0].f.t, ft(20));
        assert_eq!(seen[0].f.details["reset"], true);
    }

    #[test]
    fn uniform_and_tiny_pictures_measure_without_panicking() {
        let black = Picture::new(W, H, 0);
        let m = measure(&black.frame(0).luma);
        assert_eq!((m.band, m.detail), (1.0, 0.0));
        let tiny = Picture::new(8, 8, 50);
        assert_eq!(measure(&tiny.frame(0).luma).band, 1.0);
        let seen = run_video(&mut detector(), times(&tiny, 30));
        assert!(seen.is_empty());
    }

    #[test]
    fn row_sums_equal_their_plain_definitions() {
        // The sums are written in chunks for the compiler to vectorise; they must give exactly
        // what a sample-by-sample loop gives, on every row length (chunk tails included).
        let mut rng = Rng::new(7);
        for len in 0..300 {
            let row: Vec<u8> = (0..len)
                .map(|_| match rng.range(0, 2) {
                    0 => 100 + rng.range(0, 2) as u8,
                    _ => rng.range(0, 255) as u8,
                })
                .collect();
            let other: Vec<u8> = row.iter().rev().copied().collect();
            let plain_sad: u32 = row
                .iter()
                .zip(&other)
                .map(|(&a, &b)| u32::from(a.abs_diff(b)))
                .sum();
            assert_eq!(sad(&row, &other), plain_sad, "sad, {len} samples");
            let plain_total: u32 = row.iter().map(|&v| u32::from(v)).sum();
            assert_eq!(total(&row), plain_total, "total, {len} samples");
            let steps = |x: usize| row[x].abs_diff(row[x - 1]);
            let plain_all: u32 = (1..len).map(|x| u32::from(steps(x))).sum();
            let plain_edge: u32 = (1..len)
                .filter(|x| x % 16 == 0)
                .map(|x| u32::from(steps(x)))
                .sum();
            assert_eq!(
                row_steps(&row, 16),
                (plain_all, plain_edge),
                "{len} samples"
            );
        }
    }

    #[test]
    fn still_diff_compares_and_keeps_every_4th_sample() {
        let mut rng = Rng::new(11);
        for len in 0..300usize {
            let row: Vec<u8> = (0..len).map(|_| rng.range(0, 255) as u8).collect();
            let kept_len = len.div_ceil(STILL_STEP);
            let old: Vec<u8> = (0..kept_len).map(|_| rng.range(0, 255) as u8).collect();
            let sampled: Vec<u8> = row.iter().step_by(STILL_STEP).copied().collect();
            let plain: u32 = old
                .iter()
                .zip(&sampled)
                .map(|(&a, &b)| u32::from(a.abs_diff(b)))
                .sum();
            let mut kept = old.clone();
            assert_eq!(still_diff(&row, &mut kept), plain, "{len} samples");
            assert_eq!(kept, sampled, "{len} samples");
        }
    }
}
