//! The whole-picture quality figure (`blockiness_mean`, `blockiness_max`): how much of the
//! picture's detail the encoder quantised away.
//!
//! A starved encoder spends no bits on a block's detail: what it sends for a block is its mean
//! (MPEG-2's 8×8 DC), or a prediction from its neighbours with nothing added (H.264's and HEVC's
//! intra DC or planar prediction, a motion-compensated copy of a flat area). So its pictures are
//! full of runs of samples that are *exactly* equal, aligned with the coding blocks, where the
//! source had texture, grain or sensor noise that stepped by a level or two. A real picture, even a
//! smooth one, rarely holds one value over 12 samples; a starved one does in a large share of its
//! blocks, whatever the codec: the deblocking filters of H.264 and HEVC smooth the block edges
//! (which is why the steps *at* the 8-pixel grid, the previous figure, ranked real starved encodes
//! lower than their source) but leave the inside of a block flat.
//!
//! The figure is the percentage of *flat block runs*: on every 4th row (rows 1, 5, 9, 13 of each
//! 16), the middle 12 samples of each 16-sample block (columns 16k+2 … 16k+13, clear of the block
//! edges the deblocking filter touches) that are all one value, a value at least 20 levels inside
//! video's nominal range 16–235 ([`LO`]–[`HI`]). Runs at or near black or white (letterbox bars,
//! black pictures, white captions and boxes, clipped highlights) are flat whatever the encoder
//! did, and are not counted: a black picture scores 0.
//!
//! It depends on the content (a cartoon or a slate has flat areas of its own), so it ranks encodes
//! of the same content: compare it within a stream, or between encodes of the same source. On
//! held-out real photographs and footage, a starved encode (H.264, HEVC or MPEG-2, QCIF to 1080p)
//! scored at least 1.8× its near-lossless source in 65 of 66 pairs, mostly far more, where the
//! previous figure did in 26 (docs/accuracy.md, "Quality score on real encodes";
//! `bench/quality.sh`). Its weak spot: a source whose own pictures hold flat runs in mid-tones
//! (motion blur, graphics, flat test patterns), where a mildly starved encode's noise can break
//! more runs than its quantisation makes.
//!
//! **Cost.** A quarter of the rows are read, 16 samples at a time: one 8-byte and one 4-byte
//! comparison per block run, no per-sample work. Integer counts, so the figure does not depend
//! on how it is computed.

use avmon_core::Plane;

/// Samples per block run's block: the macroblock width of MPEG-2 and H.264, a common HEVC block.
pub const BLOCK: usize = 16;
/// Flat runs must lie at or above this value (20 levels above video black, 16)…
pub const LO: u8 = 36;
/// …and at or below this one (20 levels below video white, 235).
pub const HI: u8 = 215;
/// Rows read: those `≡ ROW_PHASE (mod ROW_STEP)`.
pub const ROW_STEP: usize = 4;
pub const ROW_PHASE: usize = 1;

/// Flat block runs and block runs, counted over some rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flat {
    /// Block runs that are flat (one value, within [`LO`]..=[`HI`]).
    pub flat: u64,
    /// Block runs looked at.
    pub runs: u64,
}

impl Flat {
    /// The figure: per cent of block runs that are flat (0 when there are none).
    pub fn percent(&self) -> f64 {
        if self.runs == 0 {
            0.0
        } else {
            100.0 * self.flat as f64 / self.runs as f64
        }
    }
}

/// Whether the middle 12 samples of a 16-sample block (`c[2..14]`) are all one value, within
/// [`LO`]..=[`HI`]. Compared as one `u64` and one `u32` against the value repeated.
#[inline]
fn flat_run(c: &[u8; BLOCK]) -> bool {
    let v = c[2];
    let a = u64::from_le_bytes(c[2..10].try_into().expect("8 bytes"));
    let b = u32::from_le_bytes(c[10..14].try_into().expect("4 bytes"));
    let rep = u64::from(v) * 0x0101_0101_0101_0101;
    a == rep && b == rep as u32 && (LO..=HI).contains(&v)
}

/// Count the flat block runs of one row (its whole 16-sample blocks).
#[inline]
pub fn row_flat(row: &[u8]) -> Flat {
    let chunks = row.chunks_exact(BLOCK);
    let runs = chunks.len() as u64;
    let flat = chunks
        .map(|c| u64::from(flat_run(c.try_into().expect("a block"))))
        .sum();
    Flat { flat, runs }
}

/// Count the flat block runs of a picture, on the rows it reads (see the module docs).
pub fn measure(luma: &Plane<'_>) -> Flat {
    let mut f = Flat::default();
    let mut y = ROW_PHASE;
    while y < luma.height {
        let r = row_flat(luma.row(y));
        f.flat += r.flat;
        f.runs += r.runs;
        y += ROW_STEP;
    }
    f
}

/// The figure of one picture: per cent of its block runs that are flat.
pub fn blockiness(luma: &Plane<'_>) -> f64 {
    measure(luma).percent()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Picture, Rng};

    fn score(p: &Picture) -> f64 {
        blockiness(&p.frame(0).luma)
    }

    fn counts(p: &Picture) -> Flat {
        measure(&p.frame(0).luma)
    }

    /// A smooth, textured picture: slow gradients and shapes, plus a level or two of grain, the
    /// way a camera sees a wall or a sky.
    fn natural(w: usize, h: usize, seed: u64) -> Picture {
        let mut rng = Rng::new(seed);
        Picture::from_fn(w, h, |x, y| {
            let (fx, fy) = (x as f32, y as f32);
            let base = 120.0
                + 50.0 * (fx / 37.0).sin() * (fy / 53.0).cos()
                + 30.0 * ((fx + fy) / 91.0).sin();
            (base + 1.5 * rng.signed()).round().clamp(0.0, 255.0) as u8
        })
    }

    /// The picture quantised the way a starved encoder does: each 8×8 block its mean.
    fn quantised(p: &Picture, block: usize) -> Picture {
        let mut q = p.clone();
        for by in (0..p.h).step_by(block) {
            for bx in (0..p.w).step_by(block) {
                let (mut sum, mut n) = (0u32, 0u32);
                for y in by..(by + block).min(p.h) {
                    for x in bx..(bx + block).min(p.w) {
                        sum += u32::from(p.get(x, y));
                        n += 1;
                    }
                }
                let mean = (sum / n) as u8;
                for y in by..(by + block).min(p.h) {
                    for x in bx..(bx + block).min(p.w) {
                        q.set(x, y, mean);
                    }
                }
            }
        }
        q
    }

    #[test]
    fn quantised_blocks_score_worse_than_the_picture() {
        for (w, h) in [(176, 144), (640, 360), (1280, 720)] {
            let p = natural(w, h, 7);
            let clean = score(&p);
            assert!(clean < 1.0, "{w}x{h}: clean {clean}");
            // Macroblocks quantised to their mean: every run is flat.
            let q16 = score(&quantised(&p, 16));
            assert!(
                q16 > 90.0,
                "{w}x{h} 16x16: quantised {q16} vs clean {clean}"
            );
            // 8x8 blocks: a run spans two, flat where they kept the same mean.
            let q8 = score(&quantised(&p, 8));
            assert!(
                q8 > clean + 2.0,
                "{w}x{h} 8x8: quantised {q8} vs clean {clean}"
            );
        }
    }

    #[test]
    fn black_white_and_bars_are_not_counted() {
        for v in [0, 16, 35, 216, 235, 255] {
            assert_eq!(score(&Picture::new(320, 240, v)), 0.0, "{v}");
        }
        // A uniform mid-grey picture is all flat runs.
        assert_eq!(score(&Picture::new(320, 240, 128)), 100.0);
        // Black bars beside a quantised picture: the bars add runs, not flat ones.
        let q = quantised(&natural(320, 240, 3), 8);
        let barred = Picture::from_fn(480, 240, |x, y| {
            if (80..400).contains(&x) {
                q.get(x - 80, y)
            } else {
                16
            }
        });
        let (a, b) = (score(&q), score(&barred));
        assert!(b > 0.5 * a && b < a, "barred {b} vs {a}");
    }

    #[test]
    fn a_run_must_be_flat_in_the_middle_twelve_samples() {
        let mut r = [100u8; 32];
        assert_eq!(row_flat(&r), Flat { flat: 2, runs: 2 });
        // The block edges (2 samples each side) may step: deblocking touches them.
        r[0] = 90;
        r[1] = 95;
        r[14] = 105;
        r[15] = 110;
        assert_eq!(row_flat(&r), Flat { flat: 2, runs: 2 });
        // One sample in the middle a level off: not flat.
        r[13] = 101;
        r[16 + 2] = 99;
        assert_eq!(row_flat(&r), Flat { flat: 0, runs: 2 });
        // A partial block at the end is not looked at.
        assert_eq!(row_flat(&[100u8; 40]), Flat { flat: 2, runs: 2 });
        assert_eq!(row_flat(&[100u8; 10]), Flat::default());
    }

    #[test]
    fn row_counts_equal_the_plain_definition() {
        // Counted 8 + 4 bytes at a time; must give what a sample-by-sample loop gives, on every
        // row length and on rows with flat runs at every level.
        let mut rng = Rng::new(5);
        for len in 0..300 {
            let level = rng.range(0, 255) as u8;
            let row: Vec<u8> = (0..len)
                .map(|_| match rng.range(0, 20) {
                    0 => rng.range(0, 255) as u8,
                    _ => level,
                })
                .collect();
            let plain = row
                .chunks_exact(BLOCK)
                .filter(|c| c[2..14].iter().all(|&v| v == c[2]) && (LO..=HI).contains(&c[2]))
                .count() as u64;
            let runs = (len / BLOCK) as u64;
            assert_eq!(row_flat(&row), Flat { flat: plain, runs }, "{len} samples");
        }
    }

    #[test]
    fn every_fourth_row_is_read() {
        // Flat runs only on rows ≡ 1 (mod 4): all counted; only on the others: none.
        let on = Picture::from_fn(64, 32, |x, y| if y % 4 == 1 { 128 } else { (x * 7) as u8 });
        let off = Picture::from_fn(64, 32, |x, y| if y % 4 == 1 { (x * 7) as u8 } else { 128 });
        assert_eq!(counts(&on), Flat { flat: 32, runs: 32 });
        assert_eq!(counts(&off), Flat { flat: 0, runs: 32 });
        assert_eq!(score(&Picture::new(8, 8, 128)), 0.0);
    }
}
