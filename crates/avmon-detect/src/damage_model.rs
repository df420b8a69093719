//! The learned picture-damage model: how likely each 16×16 cell of a picture is damaged.
//!
//! **What it looks at.** The luma, reduced to one cell per macroblock (16×16 pixels) with
//! [`CHANNELS`] figures each ([`CellFeatures`]): the cell's mean; the mean step between
//! neighbouring pixels inside it, across and down; the step across its left and top edges (the
//! 16-pixel macroblock grid) and across its middle (the 8-pixel transform grid); how much its
//! mean moved since the previous picture, and how much its pixels changed (the mean step in time
//! on the sampled rows). Those are what damage decoded and encoded again changes (concealed
//! blocks steps on the grid that the content has not, streaks drawn down from a lost slice have
//! no step down, blocks from the wrong place arrive all at once, a frozen band does not change
//! while the rest of the picture moves) and what the content has of its own, so the model can
//! tell one from the other on real pictures. Rows are sampled: 2 rows per cell row for the steps
//! across, the mean and the change, 3 row pairs for the steps down, about 7 rows of 16.
//!
//! **The model** is a small convolutional network over that grid (`models/picture_damage.onnx`:
//! its layers and how it was trained are in `bench/learn/train.py`), run by `tract`, a pure-Rust
//! inference engine. The weights are compiled into the binary: nothing is downloaded. Its input
//! is `[1, CHANNELS, rows, cols]`, its output `[1, 1, rows, cols]`, each cell's probability of
//! damage; a picture's score is its most likely cell.
//!
//! **Training data** (`bench/learn/corpus.py`): real photographs moved like a camera would move
//! them and real footage, from Debian packages and scikit-image; damaged by lost and flipped
//! packets (decoded with FFmpeg's concealment), lost slices, frozen rows and wrong references,
//! then encoded again with H.264, HEVC or MPEG-2, and labelled with the damage a viewer sees
//! (what is left after the best local alignment with the clean pictures). The features are
//! written by this module (`AVMON_DAMAGE_FEATURES=file`), so the model is trained on exactly what
//! it sees here.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use avmon_core::Plane;

use crate::corruption::total;
use tract_onnx::prelude::*;

/// Cell size: one macroblock.
pub const CELL: usize = 16;
/// Figures per cell.
pub const CHANNELS: usize = 9;

/// The model's weights and graph (ONNX), made by `bench/learn/train.py`.
static MODEL: &[u8] = include_bytes!("../models/picture_damage.onnx");

/// Per-cell figures of a picture, `[CHANNELS][rows][cols]` (row-major per channel).
#[derive(Debug, Default)]
pub struct CellFeatures {
    pub rows: usize,
    pub cols: usize,
    /// The figures of the last picture measured in full.
    pub data: Vec<f32>,
    /// Every picture's cell means (the previous picture's, until the next is measured).
    mean: Vec<f32>,
    /// The previous picture's sampled rows ([`H_ROWS`] of every cell row), for [`CHANGE`].
    prev_rows: Vec<u8>,
    have_mean: bool,
    diff: Vec<u8>,
    sums: Vec<[u32; 5]>,
}

/// Channels of [`CellFeatures::data`].
const MEAN: usize = 0;
const H_IN: usize = 1;
const H_EDGE16: usize = 2;
const H_EDGE8: usize = 3;
const V_IN: usize = 4;
const V_EDGE16: usize = 5;
const V_EDGE8: usize = 6;
const MOVED: usize = 7;
const CHANGE: usize = 8;

/// Offsets in the cell of the two rows read for the steps across and the mean.
const H_ROWS: [usize; 2] = [4, 12];

/// Steps kept in the range the model was trained on: `ln(1 + step) / 3`.
#[inline]
fn squash(step: f32) -> f32 {
    (1.0 + step).ln() / 3.0
}

impl CellFeatures {
    fn resize(&mut self, luma: &Plane<'_>) -> bool {
        let (rows, cols) = (luma.height / CELL, luma.width / CELL);
        if rows == self.rows && cols == self.cols {
            return true;
        }
        self.rows = rows;
        self.cols = cols;
        self.data = vec![0.0; CHANNELS * rows * cols];
        self.mean = vec![0.0; rows * cols];
        self.prev_rows = vec![0; rows * H_ROWS.len() * cols * CELL];
        self.diff = vec![0; cols * CELL];
        self.sums = vec![[0; 5]; cols];
        self.have_mean = false;
        false
    }

    /// The cells' means and sampled rows only, for a picture the model does not look at: what
    /// the next measured picture's movement is taken against. Reads 2 rows of 16.
    pub fn track(&mut self, luma: &Plane<'_>) {
        self.resize(luma);
        let w = self.cols * CELL;
        for r in 0..self.rows {
            for (k, &o) in H_ROWS.iter().enumerate() {
                let at = (r * H_ROWS.len() + k) * w;
                self.prev_rows[at..at + w].copy_from_slice(&luma.row(r * CELL + o)[..w]);
            }
            for c in 0..self.cols {
                let x = c * CELL;
                let s: u32 = (0..H_ROWS.len())
                    .map(|k| {
                        let at = (r * H_ROWS.len() + k) * w + x;
                        total(&self.prev_rows[at..at + CELL])
                    })
                    .sum();
                self.mean[r * self.cols + c] = s as f32 / (CELL * H_ROWS.len()) as f32;
            }
        }
        self.have_mean = self.rows > 0;
    }

    /// Every figure of every cell of `luma` into [`data`](Self::data).
    pub fn measure(&mut self, luma: &Plane<'_>) {
        let had = self.resize(luma) && self.have_mean;
        let (rows, cols) = (self.rows, self.cols);
        let plane = rows * cols;
        let w = cols * CELL;
        for r in 0..rows {
            let y0 = r * CELL;
            // Steps across, and the mean, on the two sampled rows: d[i] = |a[i+1] − a[i]|.
            let mut sums = std::mem::take(&mut self.sums);
            sums.iter_mut().for_each(|s| *s = [0; 5]);
            for (k, &o) in H_ROWS.iter().enumerate() {
                let row = &luma.row(y0 + o)[..w];
                let prev = &mut self.prev_rows[(r * H_ROWS.len() + k) * w..][..w];
                let mut d = std::mem::take(&mut self.diff);
                for (o, p) in d.iter_mut().zip(row.windows(2)) {
                    *o = p[0].abs_diff(p[1]);
                }
                for (c, s) in sums.iter_mut().enumerate() {
                    let x0 = c * CELL;
                    let pairs = &d[x0..x0 + CELL - 1];
                    let mid = u32::from(pairs[7]);
                    s[0] += total(&row[x0..x0 + CELL]);
                    s[1] += pairs.iter().map(|&v| u32::from(v)).sum::<u32>() - mid;
                    s[2] += if x0 > 0 { u32::from(d[x0 - 1]) } else { 0 };
                    s[3] += mid;
                    if had {
                        s[4] += prev[x0..x0 + CELL]
                            .iter()
                            .zip(&row[x0..x0 + CELL])
                            .map(|(a, b)| u32::from(a.abs_diff(*b)))
                            .sum::<u32>();
                    }
                }
                prev.copy_from_slice(row);
                self.diff = d;
            }
            let n = H_ROWS.len() as f32;
            for (c, s) in sums.iter().enumerate() {
                let i = r * cols + c;
                let mean = s[0] as f32 / (CELL as f32 * n);
                let inside = s[1] as f32 / (14.0 * n);
                self.data[MEAN * plane + i] = mean / 128.0 - 1.0;
                self.data[H_IN * plane + i] = squash(inside);
                self.data[H_EDGE16 * plane + i] =
                    squash(if c > 0 { s[2] as f32 / n } else { inside });
                self.data[H_EDGE8 * plane + i] = squash(s[3] as f32 / n);
                self.data[MOVED * plane + i] = if had {
                    squash((mean - self.mean[i]).abs())
                } else {
                    0.0
                };
                self.data[CHANGE * plane + i] = squash(s[4] as f32 / (CELL as f32 * n));
                self.mean[i] = mean;
            }
            self.sums = sums;
            // Steps down: inside (rows 3|4), across the top edge (−1|0) and the middle (7|8).
            let pair = |a: usize, b: usize, out: &mut [u8]| {
                let (ra, rb) = (&luma.row(a)[..w], &luma.row(b)[..w]);
                for (o, (x, y)) in out.iter_mut().zip(ra.iter().zip(rb)) {
                    *o = x.abs_diff(*y);
                }
            };
            for (ch, (a, b)) in [
                (V_IN, (y0 + 3, y0 + 4)),
                (V_EDGE16, (y0.max(1) - 1, y0.max(1))),
                (V_EDGE8, (y0 + 7, y0 + 8)),
            ] {
                if ch == V_EDGE16 && r == 0 {
                    for c in 0..cols {
                        self.data[ch * plane + c] = self.data[V_IN * plane + c];
                    }
                    continue;
                }
                let mut diff = std::mem::take(&mut self.diff);
                pair(a, b, &mut diff);
                for c in 0..cols {
                    let s = total(&diff[c * CELL..(c + 1) * CELL]);
                    self.data[ch * plane + r * cols + c] = squash(s as f32 / CELL as f32);
                }
                self.diff = diff;
            }
        }
        self.have_mean = rows > 0;
    }

    /// Append this picture's figures to `out` (the training dump): media time, rows, cols as
    /// little-endian f64, u32, u32, then the figures as f32.
    pub fn dump(&self, t: f64, out: &mut impl Write) -> std::io::Result<()> {
        out.write_all(&t.to_le_bytes())?;
        out.write_all(&(self.rows as u32).to_le_bytes())?;
        out.write_all(&(self.cols as u32).to_le_bytes())?;
        for v in &self.data {
            out.write_all(&v.to_le_bytes())?;
        }
        Ok(())
    }
}

type Plan = SimplePlan<TypedFact, Box<dyn TypedOp>, Graph<TypedFact, Box<dyn TypedOp>>>;

/// The model, made ready for one picture size at a time.
#[derive(Default)]
pub struct DamageModel {
    plan: Option<(usize, usize, Arc<Plan>)>,
    /// The last picture's per-cell probabilities, `[rows][cols]`.
    pub cells: Vec<f32>,
}

impl std::fmt::Debug for DamageModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DamageModel")
            .field("size", &self.plan.as_ref().map(|p| (p.0, p.1)))
            .finish()
    }
}

fn make_plan(rows: usize, cols: usize) -> TractResult<Plan> {
    tract_onnx::onnx()
        .model_for_read(&mut &MODEL[..])?
        .with_input_fact(0, f32::fact([1, CHANNELS, rows, cols]).into())?
        .into_optimized()?
        .into_runnable()
}

/// The model made ready for `rows` × `cols` cells, made once per size and process and shared by
/// every stream of that size: making it (parsing and optimising the graph, about 6 ms at 720p,
/// a few pictures' runs) and holding it need not be paid per stream on a host that runs many
/// streams of the same few sizes.
fn plan(rows: usize, cols: usize) -> Option<Arc<Plan>> {
    type Plans = Mutex<HashMap<(usize, usize), Arc<Plan>>>;
    static PLANS: OnceLock<Plans> = OnceLock::new();
    let plans = PLANS.get_or_init(Default::default);
    if let Some(p) = plans.lock().ok()?.get(&(rows, cols)) {
        return Some(p.clone());
    }
    let p = Arc::new(make_plan(rows, cols).ok()?);
    Some(plans.lock().ok()?.entry((rows, cols)).or_insert(p).clone())
}

/// Leave the vector registers as the decoder expects them after tract has run.
///
/// tract's matrix kernels use 256- and 512-bit registers and return without `vzeroupper`. The
/// CPU then carries their dirty upper halves into FFmpeg's 128-bit SSE code, which runs slower
/// until something clears them. Measured on the 720p input of bench/learn/cost.py, with the model
/// looking at every 32nd picture, the whole process took 0.25 s more CPU than with the model off
/// (+13 % of the decode). The model's own runs were 0.04 s of that; the rest was libavcodec
/// slowing down. With this call after each run, it took 0.01 s more. One of avmon-detect's two
/// exceptions to `unsafe_code = "deny"`.
#[allow(unsafe_code)]
fn clear_upper_vector_state() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        #[target_feature(enable = "avx")]
        unsafe fn zeroupper() {
            std::arch::x86_64::_mm256_zeroupper();
        }
        // SAFETY: the CPU has AVX (checked above), which is all `vzeroupper` needs.
        unsafe { zeroupper() }
    }
}

/// At most this many boxes are reported per picture (the largest).
const MAX_REGIONS: usize = 8;

impl DamageModel {
    /// The last picture's damaged regions: the bounding boxes of groups of touching cells (8
    /// neighbours) scored at or above `at`, the largest first, at most [`MAX_REGIONS`], as
    /// `[x0, y0, x1, y1]` in fractions of the picture's measured width and height.
    pub fn regions(&self, rows: usize, cols: usize, at: f32) -> Vec<[f64; 4]> {
        if self.cells.len() != rows * cols {
            return Vec::new();
        }
        let mut seen = vec![false; rows * cols];
        let mut boxes: Vec<(usize, [usize; 4])> = Vec::new();
        let mut stack = Vec::new();
        for start in 0..rows * cols {
            if seen[start] || self.cells[start] < at {
                continue;
            }
            seen[start] = true;
            stack.push(start);
            let (mut n, mut b) = (0, [cols, rows, 0, 0]);
            while let Some(i) = stack.pop() {
                let (r, c) = (i / cols, i % cols);
                n += 1;
                b = [b[0].min(c), b[1].min(r), b[2].max(c + 1), b[3].max(r + 1)];
                for dr in -1i64..=1 {
                    for dc in -1i64..=1 {
                        let (rr, cc) = (r as i64 + dr, c as i64 + dc);
                        if rr < 0 || cc < 0 || rr >= rows as i64 || cc >= cols as i64 {
                            continue;
                        }
                        let j = rr as usize * cols + cc as usize;
                        if !seen[j] && self.cells[j] >= at {
                            seen[j] = true;
                            stack.push(j);
                        }
                    }
                }
            }
            boxes.push((n, b));
        }
        boxes.sort_by_key(|b| std::cmp::Reverse(b.0));
        let round = |v: usize, of: usize| (v as f64 / of as f64 * 1000.0).round() / 1000.0;
        boxes
            .into_iter()
            .take(MAX_REGIONS)
            .map(|(_, b)| {
                [
                    round(b[0], cols),
                    round(b[1], rows),
                    round(b[2], cols),
                    round(b[3], rows),
                ]
            })
            .collect()
    }

    /// Run the model on `f`; returns the picture's score (its most likely cell), or `None` when
    /// the picture is too small to judge or the model could not run.
    pub fn score(&mut self, f: &CellFeatures) -> Option<f32> {
        let (rows, cols) = (f.rows, f.cols);
        if rows < 2 || cols < 2 {
            return None;
        }
        if self.plan.as_ref().map(|p| (p.0, p.1)) != Some((rows, cols)) {
            self.plan = plan(rows, cols).map(|p| (rows, cols, p));
        }
        let (_, _, plan) = self.plan.as_ref()?;
        let input =
            tract_ndarray::Array4::from_shape_vec((1, CHANNELS, rows, cols), f.data.clone())
                .ok()?;
        let out = plan.run(tvec!(Tensor::from(input).into()));
        clear_upper_vector_state();
        let out = out.ok()?;
        let probs = out[0].as_slice::<f32>().ok()?;
        self.cells.clear();
        self.cells.extend_from_slice(probs);
        self.cells.iter().copied().reduce(f32::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plane(data: &[u8], w: usize, h: usize) -> Plane<'_> {
        Plane::new(data, w, w, h).expect("a plane")
    }

    #[test]
    fn regions_are_the_boxes_of_touching_hot_cells_largest_first() {
        let m = DamageModel {
            plan: None,
            #[rustfmt::skip]
            cells: vec![
                0.9, 0.9, 0.0, 0.0, 0.0,
                0.0, 0.9, 0.0, 0.0, 0.0,
                0.0, 0.0, 0.0, 0.0, 0.7,
                0.0, 0.0, 0.0, 0.1, 0.0,
            ],
        };
        assert_eq!(
            m.regions(4, 5, 0.5),
            vec![[0.0, 0.0, 0.4, 0.5], [0.8, 0.5, 1.0, 0.75]]
        );
        assert!(m.regions(4, 5, 0.95).is_empty());
        assert!(m.regions(3, 5, 0.5).is_empty(), "another size");
    }

    #[test]
    fn figures_follow_their_definitions() {
        let (w, h) = (64, 48);
        // A horizontal ramp: steps of 1 across, none down; a step of 40 at x = 32 (a cell edge).
        let data: Vec<u8> = (0..h)
            .flat_map(|_| (0..w).map(|x| (x as u8) + if x >= 32 { 40 } else { 0 }))
            .collect();
        let mut f = CellFeatures::default();
        f.measure(&plane(&data, w, h));
        let (rows, cols) = (f.rows, f.cols);
        assert_eq!((rows, cols), (3, 4));
        let at = |ch: usize, r: usize, c: usize| f.data[ch * rows * cols + r * cols + c];
        assert!((at(H_IN, 1, 1) - squash(1.0)).abs() < 1e-6);
        assert!((at(H_EDGE8, 1, 1) - squash(1.0)).abs() < 1e-6);
        assert!((at(H_EDGE16, 1, 1) - squash(1.0)).abs() < 1e-6);
        assert!((at(H_EDGE16, 1, 2) - squash(41.0)).abs() < 1e-6);
        assert_eq!(at(V_IN, 2, 3), 0.0);
        assert_eq!(at(V_EDGE16, 2, 3), 0.0);
        assert_eq!(at(MOVED, 0, 0), 0.0, "no previous picture");
        assert_eq!(at(CHANGE, 0, 0), 0.0, "no previous picture");
        let mean = (16..32).sum::<usize>() as f32 / 16.0;
        assert!((at(MEAN, 0, 1) - (mean / 128.0 - 1.0)).abs() < 1e-6);
        // The same picture, 10 levels brighter: every cell moved by 10.
        let brighter: Vec<u8> = data.iter().map(|&v| v + 10).collect();
        f.measure(&plane(&brighter, w, h));
        let moved = f.data[MOVED * rows * cols + rows * cols - 1];
        assert!((moved - squash(10.0)).abs() < 1e-6);
        let changed = f.data[CHANGE * rows * cols + rows * cols - 1];
        assert!((changed - squash(10.0)).abs() < 1e-6);
        // Tracked (not measured) pictures keep the change taken against the one before.
        f.track(&plane(&data, w, h));
        f.measure(&plane(&data, w, h));
        assert_eq!(
            f.data[CHANGE * rows * cols + 5],
            0.0,
            "the same picture again"
        );
    }

    #[test]
    fn the_model_scores_every_cell_of_any_size() {
        for (w, h) in [(176, 144), (640, 360), (1280, 720)] {
            let data: Vec<u8> = (0..w * h).map(|i| ((i * 7) % 251) as u8).collect();
            let mut f = CellFeatures::default();
            f.measure(&plane(&data, w, h));
            let mut m = DamageModel::default();
            let s = m.score(&f).expect("a score");
            assert!((0.0..=1.0).contains(&s), "{s}");
            assert_eq!(m.cells.len(), (w / 16) * (h / 16));
        }
        let tiny = vec![0u8; 16 * 16];
        let mut f = CellFeatures::default();
        f.measure(&plane(&tiny, 16, 16));
        assert_eq!(DamageModel::default().score(&f), None);
    }
}
