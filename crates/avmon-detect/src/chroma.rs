//! Colour-plane damage, for `video.corruption`: chroma block edges broken where the picture has
//! no reason to break.
//!
//! When a decoder (or a capture card, or a transcoder's scaler) loses the colour of a region, it
//! draws it as zero, the green blocks every viewer knows; when it takes a region's colour from the
//! wrong place of a reference picture, colours of something else bleed in, block by block. The
//! luma can be whole. Either leaves chroma edges on the block grid (every 16 luma samples: 8
//! chroma samples in 4:2:0) that step far more sharply than the samples beside them. Real
//! pictures do not: their chroma is smooth (a camera's and an encoder's chroma are low-passed, so
//! even a colour edge steps over two or three samples), and an encoder's own chroma blocking
//! steps by a few levels, not by tens.
//!
//! So each block edge of the chroma grid is judged on its own: the step across it, less the
//! larger of the steps one sample before and one after it (its *excess*), on the sampled rows (2
//! per block row) for the edges between blocks side by side, on every column for the edge at the
//! top of a block row, averaged over the edge's samples, the larger of Cb's and Cr's. An edge is
//! *broken* when its excess is at least [`BROKEN_STEP`] and the luma does not step across it too
//! ([`LUMA_EXPLAINS`]): a colour boundary of the picture is nearly always a brightness boundary
//! as well, and colour-plane damage leaves the luma whole. The same test at the places halfway
//! between side-by-side edges counts the content's own sharp colour edges that the luma does not
//! explain (graphics, animation); each takes [`MID_WEIGHT`] from the count.
//!
//! Over time ([`ColourDamage`]), each edge keeps how many pictures in a row it has been broken,
//! and how long ago it broke anew (after more than [`GAP`] pictures unbroken). At least
//! [`BROKEN_EDGES`] edges (so counted) broken for [`BROKEN_PICTURES`] pictures in a row, most of
//! which broke anew within the last [`RECENT`] pictures, are damage, from the picture the oldest
//! of them broke, while enough stay broken. A moving object's sharp edges do not stay where
//! they crossed the grid; an encoder's chroma blocking flickers; a graphic laid out on the grid
//! has been broken all along (edges broken in the first picture seen are old from the start).
//!
//! Chosen on the real-content corpus (bench/learn): its `chroma` items of the `tune` split, and
//! the clean items of `train` and `tune` for false alarms (these rules learn nothing from
//! `train`), and on FFmpeg's synthetic sources. An encoder's own chroma blocking breaks up to 10
//! edges in a picture of starved or fast real content, up to 6 once the luma explains what it
//! can, never more than 3 for 3 pictures in a row; the colour damage of `tune` keeps 22 to 45.
//! `testsrc2` (grey squares moving over colour bars, on the grid and as bright as the bars) keeps
//! up to 21 for 3 pictures in a row, but not the same edges: it raises nothing. Measured on the
//! held-out split in docs/accuracy.md.

use avmon_core::Plane;

/// An edge whose excess (mean over its samples, 8-bit units) is at least this is broken.
pub const BROKEN_STEP: u32 = 20;
/// A picture with at least this many broken edges…
pub const BROKEN_EDGES: usize = 8;
/// …in at least this many pictures in a row has colour damage (an encoder's own chroma blocking
/// breaks a few edges in a picture now and then, damage lasts).
pub const BROKEN_PICTURES: usize = 3;
/// Each place halfway between two side-by-side block edges that steps as sharply as a broken
/// edge takes this many from the count: content with sharp colour edges of its own (graphics,
/// animation) breaks as many edges on the grid as off it, damage only on it.
pub const MID_WEIGHT: usize = 2;

/// The chroma block: how many chroma samples across and down one 16×16 luma block covers.
fn block(luma: &Plane<'_>, chroma: &Plane<'_>) -> Option<(usize, usize)> {
    if chroma.width == 0 || chroma.height == 0 {
        return None;
    }
    let sub = |l: usize, c: usize| match l.div_ceil(c) {
        s @ (1 | 2 | 4) => Some(16 / s),
        _ => None,
    };
    Some((
        sub(luma.width, chroma.width)?,
        sub(luma.height, chroma.height)?,
    ))
}

/// |a − b|, in the form the compiler turns into a vector of byte min/max/sub (`u8::abs_diff`
/// compiled to a branch per sample here, 3× slower over a row).
#[inline]
fn absd(a: u8, b: u8) -> u8 {
    a.max(b) - a.min(b)
}

/// A chroma edge that the luma steps across too, by at least this much (8-bit levels: the
/// largest step within a sample of the edge, the mean of the rows or columns read), is the
/// content's: a colour boundary of the picture. Colour-plane damage leaves the luma whole.
pub const LUMA_EXPLAINS: u32 = 8;

/// Whether the luma steps across the boundary before luma column `x` on `rows` (see
/// [`LUMA_EXPLAINS`]).
fn luma_across<const N: usize>(luma: &Plane<'_>, x: usize, rows: [usize; N]) -> bool {
    let lw = luma.width;
    if x < 2 || x + 1 >= lw {
        return true;
    }
    let sum: u32 = rows
        .iter()
        .filter(|&&y| y < luma.height)
        .map(|&y| {
            let r = luma.row(y);
            (x - 1..=x + 1)
                .map(|i| u32::from(absd(r[i], r[i - 1])))
                .max()
                .unwrap_or(0)
        })
        .sum();
    sum >= LUMA_EXPLAINS * N as u32
}

/// Whether the luma steps down across the boundary above luma row `y`, on `cols` (see
/// [`LUMA_EXPLAINS`]).
fn luma_down(luma: &Plane<'_>, cols: std::ops::Range<usize>, y: usize) -> bool {
    if y < 2 || y + 1 >= luma.height || cols.end > luma.width || cols.is_empty() {
        return true;
    }
    let r = |y: usize| &luma.row(y)[cols.clone()];
    let (a, b, c, d) = (r(y - 2), r(y - 1), r(y), r(y + 1));
    let sum: u32 = (0..a.len())
        .map(|i| u32::from(absd(a[i], b[i]).max(absd(b[i], c[i])).max(absd(c[i], d[i]))))
        .sum();
    sum >= LUMA_EXPLAINS * a.len() as u32
}

/// What [`ChromaEdges::count`] keeps between pictures: scratch rows, sized to the picture once.
#[derive(Debug, Default)]
pub struct ChromaEdges {
    /// Per sample of a row, its step to the next sample.
    steps: Vec<u8>,
    /// Per sample x of a row, the excess of the step across x − 1 | x (see the module docs); for
    /// a block row's top edge, per column.
    excess: Vec<u8>,
    /// Per x, the mean excess over the sampled rows of the plane at hand (rounded down)…
    mean: Vec<u8>,
    /// …and the larger of the planes'.
    worst: Vec<u8>,
    /// Per edge of the picture, whether it is broken: per block row, the edges side by side,
    /// then the tops (see [`ChromaEdges::map`]).
    map: Vec<bool>,
    /// Per block of a block row, its top edge's excess summed, the larger of the planes'.
    tops: Vec<u32>,
}

impl ChromaEdges {
    /// How many of the picture's chroma block edges are broken, and how many places halfway
    /// between side-by-side edges are as sharp (see the module docs). `chroma` is (Cb, Cr), each
    /// subsampled from `luma`'s size by 1, 2 or 4 each way; any other size, or a picture under
    /// three blocks across or down, has none.
    pub fn count(&mut self, luma: &Plane<'_>, chroma: &[Plane<'_>; 2]) -> Edges {
        let [cb, cr] = chroma;
        let none = Edges::default();
        self.map.clear();
        let Some((bw, bh)) = block(luma, cb) else {
            return none;
        };
        if (cr.width, cr.height) != (cb.width, cb.height) {
            return none;
        }
        let (w, h) = (cb.width, cb.height);
        if w < 3 * bw || h < 3 * bh {
            return none;
        }
        for v in [
            &mut self.steps,
            &mut self.excess,
            &mut self.mean,
            &mut self.worst,
        ] {
            v.resize(w, 0);
        }
        let rows = [bh / 4, bh * 5 / 8];
        let mut out = Edges::default();
        for y0 in (0..h - bh + 1).step_by(bh) {
            let judge_tops = y0 >= 2 && y0 + 1 < h;
            self.worst.fill(0);
            self.tops.clear();
            self.tops.resize(w / bw, 0);
            for p in [cb, cr] {
                for (i, dy) in rows.into_iter().enumerate() {
                    // The steps along the row, then the excess at each x from 2 to w − 2: the
                    // step across x − 1 | x less the larger of those beside it. Whole rows of
                    // bytes, so the compiler does a vector of them at once.
                    let r = p.row(y0 + dy);
                    let d = &mut self.steps[..w - 1];
                    for (o, (a, b)) in d.iter_mut().zip(r.iter().zip(&r[1..])) {
                        *o = absd(*a, *b);
                    }
                    let d = &self.steps[..w - 1];
                    for (o, ((a, b), c)) in self.excess[2..w - 1]
                        .iter_mut()
                        .zip(d.iter().zip(&d[1..]).zip(&d[2..]))
                    {
                        *o = b.saturating_sub(*a.max(c));
                    }
                    // The mean over the two rows, rounded down: at least BROKEN_STEP exactly
                    // when their sum is at least twice it.
                    if i == 0 {
                        self.mean.copy_from_slice(&self.excess);
                    } else {
                        for (m, e) in self.mean.iter_mut().zip(&self.excess) {
                            *m = (*m >> 1) + (e >> 1) + (*m & e & 1);
                        }
                    }
                }
                for (wst, m) in self.worst.iter_mut().zip(&self.mean) {
                    *wst = (*wst).max(*m);
                }
                if judge_tops {
                    let (a, b, c, d) = (
                        &p.row(y0 - 2)[..w],
                        &p.row(y0 - 1)[..w],
                        &p.row(y0)[..w],
                        &p.row(y0 + 1)[..w],
                    );
                    let ex = &mut self.excess[..w];
                    for i in 0..w {
                        ex[i] =
                            absd(b[i], c[i]).saturating_sub(absd(a[i], b[i]).max(absd(c[i], d[i])));
                    }
                    for (t, blk) in self.tops.iter_mut().zip(ex.chunks_exact(bw)) {
                        *t = (*t).max(blk.iter().map(|&v| u32::from(v)).sum());
                    }
                }
            }
            // Edges between blocks side by side at x = bw, 2·bw, …, and the places halfway at
            // x = bw/2, bw/2 + bw, …, each while x + 1 < w.
            // Each only where the luma does not step across it too (see `LUMA_EXPLAINS`).
            let (sx, sy) = (16 / bw, 16 / bh);
            let worst = &self.worst;
            let side = |x: usize| {
                u32::from(worst[x]) >= BROKEN_STEP
                    && !luma_across(luma, x * sx, rows.map(|dy| (y0 + dy) * sy))
            };
            let start = self.map.len();
            self.map.extend((bw..w - 1).step_by(bw).map(side));
            out.mid += (bw / 2..w - 1).step_by(bw).filter(|&x| side(x)).count();
            self.map.extend(self.tops.iter().enumerate().map(|(k, &t)| {
                judge_tops
                    && t >= BROKEN_STEP * bw as u32
                    && !luma_down(luma, k * bw * sx..(k + 1) * bw * sx, y0 * sy)
            }));
            out.broken += self.map[start..].iter().filter(|&&b| b).count();
        }
        out
    }

    /// Which of the picture's block edges [`count`](Self::count) found broken: per block row,
    /// the edges side by side, then the tops; as long for every picture of a size.
    pub fn map(&self) -> &[bool] {
        &self.map
    }
}

/// Pictures within which an edge that broke counts as newly broken (see [`ColourDamage`]).
pub const RECENT: usize = 32;
/// An edge unbroken for more pictures than this in a row, then broken again, broke anew; a
/// shorter gap is the same edge flickering.
pub const GAP: u16 = 8;

/// Colour damage over time. Each edge has a *streak* (pictures in a row broken) and an *age*
/// (pictures since it broke anew: after more than [`GAP`] pictures unbroken, or never broken
/// before; edges broken in the first picture seen are old from the start). At least
/// [`BROKEN_EDGES`] edges with a streak of [`BROKEN_PICTURES`] or more (less [`MID_WEIGHT`] for
/// each sharp place halfway in the picture), most of them younger than [`RECENT`] pictures, are
/// damage, from the picture the oldest of those broke; the damage lasts while enough edges keep
/// such a streak. A moving object's sharp colour edges do not stay where they crossed the grid;
/// an encoder's chroma blocking flickers; a layout on the grid has been broken all along.
#[derive(Debug, Default)]
pub struct ColourDamage {
    edges: ChromaEdges,
    /// Per edge: its streak and age (saturating), and the pictures since it was last broken (up
    /// to [`GAP`] + 1).
    state: Vec<[u16; 3]>,
    /// The last [`RECENT`] pictures' times, newest first.
    times: [f64; RECENT],
    /// Damage since this time.
    since: Option<f64>,
    /// The next picture is the first seen (of its size, or since a reset).
    first: bool,
}

/// An age that counts as old.
const OLD: u16 = RECENT as u16 + 1;

impl ColourDamage {
    /// Judge the picture at media time `t`.
    pub fn judge(&mut self, t: f64, luma: &Plane<'_>, chroma: &[Plane<'_>; 2]) -> Colour {
        let edges = self.edges.count(luma, chroma);
        let map = self.edges.map();
        if self.state.len() != map.len() {
            // A new picture size, or a reset: nothing seen yet.
            self.state.clear();
            self.state.resize(map.len(), [0, GAP + 1, 0]);
            self.since = None;
            self.first = true;
        }
        let first = std::mem::take(&mut self.first);
        for ([streak, gap, age], &b) in self.state.iter_mut().zip(map) {
            // Most edges are idle: unbroken for longer than GAP, so their next break is anew
            // whatever their age. Nothing to update (the gap stops counting there).
            if !b && *gap > GAP {
                continue;
            }
            if b {
                *age = if first {
                    OLD
                } else if *gap > GAP {
                    1
                } else {
                    age.saturating_add(1)
                };
                *streak = streak.saturating_add(1);
                *gap = 0;
            } else {
                *streak = 0;
                *gap += 1;
                *age = age.saturating_add(1);
            }
        }
        self.times.rotate_right(1);
        self.times[0] = t;
        let long = BROKEN_PICTURES as u16;
        let all = self.state.iter().filter(|s| s[0] >= long).count();
        let kept = all.saturating_sub(MID_WEIGHT * edges.mid);
        if kept < BROKEN_EDGES {
            self.since = None;
        } else if self.since.is_none() {
            let young = || {
                self.state
                    .iter()
                    .filter(|s| s[0] >= long && usize::from(s[2]) <= RECENT)
            };
            if 2 * young().count() > all {
                let oldest = young().map(|s| s[2]).max().unwrap_or(long);
                self.since = Some(self.times[usize::from(oldest) - 1]);
            }
        }
        Colour {
            since: self.since,
            edges,
            kept,
        }
    }

    /// Forget the pictures seen (a new stream, a tier change, a picture without chroma). Cheap:
    /// the next picture judged starts the state afresh.
    pub fn reset(&mut self) {
        self.state.clear();
        self.since = None;
    }
}

/// What [`ColourDamage::judge`] says of a picture.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Colour {
    /// Colour damage since this time.
    pub since: Option<f64>,
    /// The picture's edges, and how many have a streak of [`BROKEN_PICTURES`] or more (less
    /// the content's own sharp places halfway).
    pub edges: Edges,
    pub kept: usize,
}

/// What [`ChromaEdges::count`] finds in a picture.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Edges {
    /// Broken block edges (side by side and at the tops).
    pub broken: usize,
    /// Places halfway between side-by-side block edges that step as sharply as a broken edge:
    /// the content's own sharp colour edges (graphics, animation), which fall on the block grid
    /// as often as anywhere else.
    pub mid: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`ChromaEdges::count`] with scratch of its own.
    fn broken_edges(luma: &Plane<'_>, chroma: &[Plane<'_>; 2]) -> usize {
        ChromaEdges::default().count(luma, chroma).broken
    }

    /// A 4:2:0 picture of `w`×`h` luma: the luma flat mid-grey, Cb and Cr from `f(x, y)` per
    /// chroma sample. Returns (luma, cb, cr) sample vectors with strides `w` and `w / 2`.
    fn picture(
        w: usize,
        h: usize,
        f: impl Fn(usize, usize) -> (u8, u8),
    ) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let (cw, ch) = (w / 2, h / 2);
        let mut cb = vec![0; cw * ch];
        let mut cr = vec![0; cw * ch];
        for y in 0..ch {
            for x in 0..cw {
                (cb[y * cw + x], cr[y * cw + x]) = f(x, y);
            }
        }
        (vec![128; w * h], cb, cr)
    }

    fn count(w: usize, h: usize, f: impl Fn(usize, usize) -> (u8, u8)) -> usize {
        let (l, cb, cr) = picture(w, h, f);
        let luma = Plane::new(&l, w, w, h).unwrap();
        let c = |d| Plane::new(d, w / 2, w / 2, h / 2).unwrap();
        broken_edges(&luma, &[c(&cb), c(&cr)])
    }

    /// Smooth colour that varies across the picture, as a camera's does.
    fn natural(x: usize, y: usize) -> (u8, u8) {
        let (x, y) = (x as f64, y as f64);
        (
            (128.0 + 30.0 * (x / 23.0).sin() + 20.0 * (y / 17.0).cos()) as u8,
            (128.0 + 25.0 * (y / 19.0).sin() - 15.0 * (x / 29.0).cos()) as u8,
        )
    }

    #[test]
    fn smooth_colour_and_soft_colour_edges_have_no_broken_edges() {
        assert_eq!(count(320, 192, natural), 0);
        // A strong colour edge lying on the grid, but stepping over three samples as a
        // camera's does: not broken.
        assert_eq!(
            count(320, 192, |x, y| {
                let (cb, cr) = natural(x, y);
                let ramp = (x as i32 - 62).clamp(0, 3) as u8 * 30;
                (cb / 2 + ramp, cr)
            }),
            0
        );
    }

    #[test]
    fn lost_colour_breaks_the_edges_around_it() {
        // Blocks 2..6 across and 3..5 down lost their colour (zero: green).
        let lost = |x: usize, y: usize| (2 * 8..6 * 8).contains(&x) && (3 * 8..5 * 8).contains(&y);
        let n = count(
            320,
            192,
            |x, y| if lost(x, y) { (0, 0) } else { natural(x, y) },
        );
        // The left and right edges in 2 block rows, and the top and bottom edges of 4 blocks.
        assert_eq!(n, 2 * 2 + 2 * 4, "{n}");
        assert!(n >= BROKEN_EDGES);
    }

    #[test]
    fn colour_from_the_wrong_place_breaks_the_block_edges() {
        // Each block of a region takes its colour from a place displaced by its own vector.
        let n = count(320, 192, |x, y| {
            let (bx, by) = (x / 8, y / 8);
            if (4..10).contains(&bx) && (2..6).contains(&by) {
                let (dx, dy) = ((bx * 7 + by * 3) % 11 * 3, (bx * 5 + by) % 7 * 4);
                natural(x + dx, y + dy)
            } else {
                natural(x, y)
            }
        });
        assert!(n >= BROKEN_EDGES, "{n}");
    }

    /// [`ChromaEdges::count`] as its definition reads, sample by sample (4:2:0).
    fn plain(w: usize, h: usize, cb: &[u8], cr: &[u8]) -> Edges {
        let (cw, ch) = (w / 2, h / 2);
        let at = |p: &[u8], x: usize, y: usize| i32::from(p[y * cw + x]);
        let mut n = 0;
        let mut mid = 0;
        for y0 in (0..=ch - 8).step_by(8) {
            // Side by side at x = 8, 16, …; halfway at x = 4, 12, …; while x + 1 < cw.
            for x in (4..cw - 1).step_by(4) {
                let e = |p: &[u8], y: usize| {
                    let s = |x: usize| (at(p, x, y) - at(p, x - 1, y)).abs();
                    (s(x) - s(x - 1).max(s(x + 1))).max(0)
                };
                let worst = (e(cb, y0 + 2) + e(cb, y0 + 5)).max(e(cr, y0 + 2) + e(cr, y0 + 5));
                let sharp = usize::from(worst >= 2 * BROKEN_STEP as i32);
                if x % 8 == 0 {
                    n += sharp;
                } else {
                    mid += sharp;
                }
            }
            if y0 >= 2 && y0 + 1 < ch {
                for x0 in (0..=cw - 8).step_by(8) {
                    let e = |p: &[u8]| {
                        (x0..x0 + 8)
                            .map(|x| {
                                let s = |y: usize| (at(p, x, y) - at(p, x, y - 1)).abs();
                                (s(y0) - s(y0 - 1).max(s(y0 + 1))).max(0)
                            })
                            .sum::<i32>()
                    };
                    n += usize::from(e(cb).max(e(cr)) >= 8 * BROKEN_STEP as i32);
                }
            }
        }
        Edges { broken: n, mid }
    }

    #[test]
    fn the_count_follows_its_definition() {
        // Smooth colour with blocks of random colour here and there, some split halfway, at
        // sizes whose chroma is not a whole number of blocks.
        let mut seed = 7u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for (w, h) in [(320, 192), (642, 362), (1280, 720), (200, 120)] {
            let blocks: Vec<(usize, usize, u8, u8)> = (0..12)
                .map(|_| {
                    let v = next();
                    (
                        (v % 40) as usize,
                        (v >> 8) as usize % 24,
                        (v >> 16) as u8,
                        (v >> 24) as u8,
                    )
                })
                .collect();
            let f = |x: usize, y: usize| match blocks.iter().find(|b| (b.0, b.1) == (x / 8, y / 8))
            {
                // Every 3rd column of them is split halfway by a sharp colour edge instead.
                Some(b) if b.0 % 3 == 0 && x % 8 < 4 => (b.2 ^ 0x80, b.3),
                Some(b) => (b.2, b.3),
                None => natural(x, y),
            };
            let (l, cb, cr) = picture(w, h, f);
            let luma = Plane::new(&l, w, w, h).unwrap();
            let c = |d| Plane::new(d, w / 2, w / 2, h / 2).unwrap();
            let n = ChromaEdges::default().count(&luma, &[c(&cb), c(&cr)]);
            assert_eq!(n, plain(w, h, &cb, &cr), "{w}x{h}");
            assert!(n.broken > 0, "{w}x{h}: the random blocks break edges");
            assert!(n.mid > 0, "{w}x{h}: and some halfway");
        }
    }

    #[test]
    fn sizes_it_cannot_judge_have_none() {
        let l = vec![128; 64 * 32];
        let luma = Plane::new(&l, 64, 64, 32).unwrap();
        let c = vec![0; 32 * 16];
        let cp = Plane::new(&c, 32, 32, 16).unwrap();
        // Too few blocks down.
        assert_eq!(broken_edges(&luma, &[cp, cp]), 0);
        // Subsampled by 3: not a YUV layout.
        let c3 = vec![0; 21 * 10];
        let cp3 = Plane::new(&c3, 21, 21, 10).unwrap();
        assert_eq!(broken_edges(&luma, &[cp3, cp3]), 0);
        // Planes of different sizes.
        assert_eq!(broken_edges(&luma, &[cp, cp3]), 0);
    }
}
