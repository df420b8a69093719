//! The one definition of a *black* picture, shared by [`black`](crate::black) and
//! [`freeze`](crate::freeze) so that a black picture is reported once, as black, and never also as
//! a freeze.
//!
//! Pictures are measured on a 2×2 subsampled grid: rows 0, 2, 4, … and, in each row, columns 0, 2,
//! 4, … up to `2·(width/2) − 1` (an odd width's last column is skipped). A quarter of the samples
//! is plenty for "is ≥ 98 % of the picture dark" or "did the picture change". A row's grid samples
//! are its even bytes, read 8 at a time as the low bytes of 16-bit lanes ([`row_lanes`]), which the
//! compiler turns into vector instructions; a gather of every second byte it does not.
//!
//! **Cost.** Almost every picture is plainly not black, and that is known long before the last
//! row: once more than `1 − ratio` of the grid is bright, no remaining row can make the picture
//! black. [`BlackGate::classify`] therefore reads the grid's rows coarse to fine (every 8th row,
//! then the rows halfway between, …), so that the bright part of any picture is met early, and
//! stops as soon as the answer is certain. A picture of ordinary content is decided after a few
//! rows (about 2 % of the grid); a black one is read in full. The answer is exactly the one a full
//! read gives: the early stop only skips rows that cannot change it.
//!
//! The threshold is configured in 8-bit *limited* range (black = 16, white = 235), the range almost
//! every broadcast stream uses. For full-range (JPEG) pictures it is mapped to the full-range value
//! that encodes the same brightness: `full = ⌊(limited − 16) · 255 / 219⌋`, clamped to 0..=255 (the
//! default 32 becomes 18). A full-range sample `v` is dark when `v ≤ full`, exactly when its
//! limited-range equivalent `16 + v · 219 / 255` is ≤ the configured threshold.

use avmon_core::Plane;

/// Map a limited-range luma threshold to the full-range value of the same brightness.
pub(crate) fn full_range_threshold(limited: u8) -> u8 {
    let above_black = u32::from(limited.saturating_sub(16));
    (above_black * 255 / 219).min(255) as u8
}

/// The samples of one row on the subsampled grid (every second column, starting at 0).
#[inline]
pub(crate) fn subsample(row: &[u8]) -> impl Iterator<Item = u8> + '_ {
    row.chunks_exact(2).map(|pair| pair[0])
}

/// Bytes of a row that hold [`GRID_LANES`] grid samples.
pub(crate) const CHUNK: usize = 16;

/// Grid samples in a [`CHUNK`] of a row.
pub(crate) const GRID_LANES: usize = CHUNK / 2;

/// A [`CHUNK`] of a row as little-endian `u16`s: the grid samples (its even bytes) are their low
/// bytes, `lane & 0xff`.
///
/// This is one 16-byte load, and a loop over chunks that masks and works on these lanes compiles
/// to a few vector instructions per chunk (SSE2 on any x86-64, NEON on ARM), where a loop over
/// every second byte compiles to a byte-by-byte gather. Two things keep it so: the chunk arrives
/// as a `&[u8; 16]`, and the mask is applied by the caller (applied here, the compiler simplifies
/// each lane back into a single byte load before it vectorises, and gathers again).
#[inline]
pub(crate) fn row_lanes(chunk: &[u8; CHUNK]) -> [u16; GRID_LANES] {
    std::array::from_fn(|i| u16::from_le_bytes([chunk[2 * i], chunk[2 * i + 1]]))
}

/// Bytes of a row read at a time by [`quarter_lanes`].
pub(crate) const QUARTER_CHUNK: usize = 64;

/// A [`QUARTER_CHUNK`] of a row as 16 little-endian `u32`s: every 4th sample of the row (its bytes
/// 0, 4, 8, …) is the low byte of one, `lane & 0xff`.
///
/// Four vector loads, where a gather of every 4th byte is a loop of single bytes; as with
/// [`row_lanes`], the caller applies the mask (applied here, the compiler turns each lane back
/// into a byte load).
#[inline]
pub(crate) fn quarter_lanes(chunk: &[u8; QUARTER_CHUNK]) -> [u32; QUARTER_CHUNK / 4] {
    std::array::from_fn(|i| {
        let s = 4 * i;
        u32::from_le_bytes([chunk[s], chunk[s + 1], chunk[s + 2], chunk[s + 3]])
    })
}

/// Dark-sample count and luma sum over (part of) a subsampled picture.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct LumaStats {
    /// Samples ≤ the threshold.
    pub dark: u64,
    /// Sum of all samples, for the mean.
    pub sum: u64,
    /// Samples looked at.
    pub count: u64,
}

impl LumaStats {
    /// Add the grid samples of one row of a picture (its even bytes; an odd last byte is not one).
    pub fn add_row(&mut self, row: &[u8], threshold: u8) {
        let th = u16::from(threshold);
        let (chunks, rest) = row.split_at(row.len() / CHUNK * CHUNK);
        // Per-lane sums in u16, added up every 128 chunks (128 · 255 < 2^16).
        for piece in chunks.chunks(128 * CHUNK) {
            let (mut dark, mut sum) = ([0u16; GRID_LANES], [0u16; GRID_LANES]);
            for chunk in piece.chunks_exact(CHUNK) {
                let lanes = row_lanes(chunk.try_into().expect("a chunk of CHUNK bytes"));
                for i in 0..GRID_LANES {
                    let v = lanes[i] & 0xff;
                    dark[i] += u16::from(v <= th);
                    sum[i] += v;
                }
            }
            self.dark += dark.iter().map(|&n| u64::from(n)).sum::<u64>();
            self.sum += sum.iter().map(|&n| u64::from(n)).sum::<u64>();
        }
        for v in subsample(rest) {
            self.dark += u64::from(v <= threshold);
            self.sum += u64::from(v);
        }
        self.count += (row.len() / 2) as u64;
    }

    /// Fraction of dark samples, 0 for an empty picture.
    pub fn dark_ratio(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.dark as f64 / self.count as f64
        }
    }

    /// Mean luma in 8-bit units, 0 for an empty picture.
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }
}

/// The indices `0..n`, coarse to fine: 0, 8, 16, …, then 4, 12, …, then 2, 10, … and 6, 14, …,
/// then the odd ones. Each index comes exactly once.
fn coarse_to_fine(n: usize) -> impl Iterator<Item = usize> {
    [0, 4, 2, 6, 1, 3, 5, 7]
        .into_iter()
        .flat_map(move |first| (first..n).step_by(8))
}

/// What makes a picture black: the settings of the black detector.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct BlackLevel {
    /// Limited-range luma at or below which a sample is dark.
    pub luma_threshold: u8,
    /// Fraction of dark samples at which a picture turns black.
    pub ratio: f64,
    /// Fraction of dark samples below which a black picture stops being black.
    pub exit_ratio: f64,
}

impl BlackLevel {
    /// The sample threshold for a picture of the given range.
    pub fn threshold(&self, full_range: bool) -> u8 {
        if full_range {
            full_range_threshold(self.luma_threshold)
        } else {
            self.luma_threshold
        }
    }
}

/// Black/not-black with hysteresis: a picture turns black at `ratio` and stays black until the dark
/// fraction drops below `exit_ratio`, so a picture hovering around `ratio` does not flap.
#[derive(Clone, Debug)]
pub(crate) struct BlackGate {
    pub level: BlackLevel,
    black: bool,
}

impl BlackGate {
    pub fn new(level: BlackLevel) -> Self {
        BlackGate {
            level,
            black: false,
        }
    }

    /// Classify the next picture, reading only as much of it as the answer needs (see the module
    /// documentation), or all of it when `whole`. Returns whether it is black, and the statistics
    /// of the rows it read: the whole grid for a black picture, and whenever `whole`.
    pub fn classify(
        &mut self,
        plane: &Plane<'_>,
        full_range: bool,
        whole: bool,
    ) -> (bool, LumaStats) {
        let threshold = self.level.threshold(full_range);
        let ratio = if self.black {
            self.level.exit_ratio
        } else {
            self.level.ratio
        };
        let grid = (plane.width / 2 * plane.height.div_ceil(2)) as f64;
        let mut stats = LumaStats::default();
        for gy in coarse_to_fine(plane.height.div_ceil(2)) {
            stats.add_row(plane.row(2 * gy), threshold);
            // The dark fraction can at best reach what it would be if every sample still unread
            // were dark; once that is below the ratio, the picture is not black.
            let best = (grid - (stats.count - stats.dark) as f64) / grid;
            if !whole && best < ratio {
                self.black = false;
                return (false, stats);
            }
        }
        (self.update(&stats), stats)
    }

    /// Classify the next picture from its statistics. An empty picture is never black.
    pub fn update(&mut self, stats: &LumaStats) -> bool {
        let r = stats.dark_ratio();
        self.black = stats.count > 0
            && if self.black {
                r >= self.level.exit_ratio
            } else {
                r >= self.level.ratio
            };
        self.black
    }

    pub fn reset(&mut self) {
        self.black = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Picture, Rng};

    #[test]
    fn full_range_mapping() {
        assert_eq!(full_range_threshold(16), 0);
        assert_eq!(full_range_threshold(0), 0);
        assert_eq!(full_range_threshold(32), 18);
        assert_eq!(full_range_threshold(235), 255);
        assert_eq!(full_range_threshold(255), 255);
        // The mapped threshold is the brightest full-range sample whose limited-range equivalent
        // is still at or below the configured one.
        for th in 17..=234u8 {
            let full = u32::from(full_range_threshold(th));
            assert!(16.0 + full as f64 * 219.0 / 255.0 <= f64::from(th));
            assert!(16.0 + (full + 1) as f64 * 219.0 / 255.0 > f64::from(th));
        }
    }

    #[test]
    fn stats_use_the_subsampled_grid_and_ignore_stride_padding() {
        // 5×3 picture, stride 8; padding bytes are 0 and must not count as dark.
        let mut data = vec![0u8; 8 * 3];
        for y in 0..3 {
            for x in 0..5 {
                data[y * 8 + x] = if x % 2 == 0 { 10 } else { 200 };
            }
        }
        let plane = Plane::new(&data, 8, 5, 3).unwrap();
        let (black, s) = default_gate().classify(&plane, false, true);
        assert!(black);
        // Rows 0 and 2, columns 0 and 2 (column 4 is the odd width's last column).
        assert_eq!(s.count, 4);
        assert_eq!(s.dark, 4);
        assert_eq!(s.mean(), 10.0);
    }

    fn default_gate() -> BlackGate {
        BlackGate::new(BlackLevel {
            luma_threshold: 32,
            ratio: 0.98,
            exit_ratio: 0.90,
        })
    }

    #[test]
    fn coarse_to_fine_visits_every_row_once() {
        for n in [0, 1, 7, 8, 9, 180, 541] {
            let mut rows: Vec<usize> = coarse_to_fine(n).collect();
            if n > 8 {
                assert_eq!(rows[..2], [0, 8]);
            }
            rows.sort_unstable();
            assert_eq!(rows, (0..n).collect::<Vec<_>>());
        }
    }

    #[test]
    fn stopping_early_gives_the_answer_of_a_whole_read() {
        // Pictures around both ratios, dark in different places (scattered, at the top, at the
        // bottom), fed through the hysteresis in one sequence: a gate that stops early and one
        // that reads everything must agree on every picture, and on the statistics of black ones.
        let (w, h) = (95usize, 61usize);
        let grid = (w / 2 * h.div_ceil(2)) as f64;
        let mut rng = Rng::new(3);
        let mut fast = default_gate();
        let mut whole = default_gate();
        let mut blacks = 0;
        for i in 0..600 {
            let dark = [0.85, 0.89, 0.9, 0.91, 0.97, 0.98, 0.99, 1.0][i % 8];
            let bright = ((1.0 - dark) * grid).round() as usize;
            let mut p = Picture::new(w, h, 20);
            let mut put = |k: usize| p.set(2 * (k % (w / 2)), 2 * (k / (w / 2)), 200);
            match i / 8 % 3 {
                0 => (0..bright).for_each(|_| put(rng.range(0, grid as i32 - 1) as usize)),
                1 => (0..bright).for_each(&mut put),
                _ => (0..bright).for_each(|k| put(grid as usize - 1 - k)),
            }
            let plane = p.frame(0).luma;
            let (a, sa) = fast.classify(&plane, false, false);
            let (b, sb) = whole.classify(&plane, false, true);
            assert_eq!(a, b, "picture {i}");
            assert_eq!(sb.count as f64, grid);
            if a {
                assert_eq!(sa, sb, "picture {i}");
                blacks += 1;
            }
        }
        assert!(
            (100..500).contains(&blacks),
            "{blacks} black pictures: both answers were seen"
        );
    }

    #[test]
    fn an_ordinary_picture_is_decided_after_a_few_rows() {
        let (w, h) = (640, 360);
        let grid = (w / 2 * h / 2) as u64;
        let mut gate = default_gate();
        let bright = Picture::new(w, h, 120);
        let (black, stats) = gate.classify(&bright.frame(0).luma, false, false);
        assert!(!black);
        assert!(
            stats.count * 100 <= grid * 3,
            "read {} of {grid}",
            stats.count
        );

        // Dark but for its bottom tenth: rows coarse to fine find the bright part within the
        // first two passes (a quarter of the grid); top to bottom would read 90 % of it.
        let bottom = Picture::from_fn(w, h, |_, y| if y >= h * 9 / 10 { 200 } else { 16 });
        let (black, stats) = gate.classify(&bottom.frame(0).luma, false, false);
        assert!(!black);
        assert!(stats.count * 4 <= grid, "read {} of {grid}", stats.count);

        // A black picture is read in full, and so is any picture asked for whole.
        let dark = Picture::new(w, h, 16);
        assert_eq!(
            gate.classify(&dark.frame(0).luma, false, false).1.count,
            grid
        );
        gate.reset();
        assert_eq!(
            gate.classify(&bright.frame(0).luma, false, true).1.count,
            grid
        );
    }

    #[test]
    fn gate_hysteresis() {
        let mut g = BlackGate::new(BlackLevel {
            luma_threshold: 32,
            ratio: 0.98,
            exit_ratio: 0.90,
        });
        let st = |r: f64| LumaStats {
            dark: (r * 1000.0) as u64,
            sum: 0,
            count: 1000,
        };
        assert!(!g.update(&st(0.95)));
        assert!(g.update(&st(0.98)));
        assert!(g.update(&st(0.91)));
        assert!(g.update(&st(0.90)));
        assert!(!g.update(&st(0.89)));
        assert!(!g.update(&st(0.97)));
        assert!(!g.update(&LumaStats::default()));
    }
}
