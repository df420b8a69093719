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
//! *broken* when its excess is at least [`BROKEN_STEP`]. Content with sharp colour edges of its
//! own (graphics, animation, a colourful fractal) breaks edges on the grid as often as anywhere:
//! the same test at the places halfway between side-by-side edges counts them, and each takes
//! [`MID_WEIGHT`] from the count (for the sides and the tops). A picture has colour damage when
//! it and the pictures before it, at least [`BROKEN_PICTURES`] in a row, each have at least
//! [`BROKEN_EDGES`] broken edges so counted, and the first of them had more than the picture
//! before it (`corruption` judges this, from the first of them; a graphic there from the first
//! picture on is content).
//!
//! Chosen on the real-content corpus (bench/learn): its `chroma` items of the `tune` split, and
//! the clean items of `train` and `tune` for false alarms (these rules learn nothing from
//! `train`). An encoder's own chroma blocking breaks up to 10 edges in a picture of starved or
//! fast content, but not in 3 pictures in a row: there, clean content never had more than 4;
//! the colour damage of `tune` had 24 to 45. FFmpeg's `mandelbrot` source breaks 23 to 34 edges
//! in every picture, and as many halfway: it counts none. Measured on the held-out split in
//! docs/accuracy.md.

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
            let sharp = |from: usize| {
                (from..w - 1)
                    .step_by(bw)
                    .filter(|&x| u32::from(self.worst[x]) >= BROKEN_STEP)
                    .count()
            };
            out.broken += sharp(bw);
            out.mid += sharp(bw / 2);
            if judge_tops {
                out.broken += self
                    .tops
                    .iter()
                    .filter(|&&t| t >= BROKEN_STEP * bw as u32)
                    .count();
            }
        }
        out
    }
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

/// [`ChromaEdges::count`] with scratch of its own.
pub fn broken_edges(luma: &Plane<'_>, chroma: &[Plane<'_>; 2]) -> usize {
    ChromaEdges::default().count(luma, chroma).broken
}

#[cfg(test)]
mod tests {
    use super::*;

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
