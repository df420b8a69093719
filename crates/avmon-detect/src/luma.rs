//! The one definition of a *black* picture, shared by [`black`](crate::black) and
//! [`freeze`](crate::freeze) so that a black picture is reported once, as black, and never also as
//! a freeze.
//!
//! Pictures are measured on a 2×2 subsampled grid: rows 0, 2, 4, … and, in each row, columns 0, 2,
//! 4, … up to `2·(width/2) − 1` (an odd width's last column is skipped). A quarter of the samples
//! is plenty for "is ≥ 98 % of the picture dark" or "did the picture change", and the inner loops
//! are plain iterator folds over `chunks_exact(2)` that the compiler vectorises without bounds
//! checks.
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
    /// Add a run of samples (already on the subsampled grid).
    #[inline]
    pub fn add(&mut self, samples: impl Iterator<Item = u8>, threshold: u8) {
        // Per-row accumulators in u32: a row has < 2^24 samples, so neither can overflow.
        let (mut dark, mut sum, mut count) = (0u32, 0u32, 0u32);
        for v in samples {
            dark += u32::from(v <= threshold);
            sum += u32::from(v);
            count += 1;
        }
        self.dark += u64::from(dark);
        self.sum += u64::from(sum);
        self.count += u64::from(count);
    }

    /// Measure a whole plane on the subsampled grid.
    pub fn of_plane(plane: &Plane<'_>, threshold: u8) -> Self {
        let mut stats = LumaStats::default();
        for y in (0..plane.height).step_by(2) {
            stats.add(subsample(plane.row(y)), threshold);
        }
        stats
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

    /// Classify the next picture. An empty picture is never black.
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
        let s = LumaStats::of_plane(&plane, 32);
        // Rows 0 and 2, columns 0 and 2 (column 4 is the odd width's last column).
        assert_eq!(s.count, 4);
        assert_eq!(s.dark, 4);
        assert_eq!(s.mean(), 10.0);
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
