//! ITU-R BS.1770-4 loudness measurement, as the loudness detector uses it.
//!
//! - [`Meter`]: the K-weighting filter and the weighted energy of each 100 ms step, and the peak
//!   (sample peak, or true peak 4× oversampled below 96 kHz, 2× below 192 kHz).
//! - [`Gating`]: the integrated loudness (400 ms blocks, absolute and relative gates) and the
//!   loudness range (EBU Tech 3342: 3 s blocks every second), built from the step energies.
//!
//! The figures are those of the `ebur128` crate (libebur128's algorithms, which FFmpeg's filter
//! shares), which avmon used before; the loudness detector's test `agrees_with_the_ebur128_crate`
//! compares them on programme-like signals. The crate kept 3 s of filtered samples and summed
//! them again for every 400 ms block, every 3 s block and every window asked for, and ran its
//! true-peak interpolator a frame at a time. Here each sample is filtered and squared once into
//! its step's sum, blocks are means of step energies, and the interpolator runs over a whole piece
//! of a channel, 16 outputs at a time, which the compiler vectorises. On the 60 s 720p25 cost input
//! (stereo, 48 kHz) the loudness detector went from ~0.086 s to ~0.014 s of CPU a minute.

use std::sync::OnceLock;

use avmon_core::MAX_AUDIO_CHANNELS;

use crate::windows;

/// Sample rates measured; outside them nothing is (the K-weighting needs the rate well above its
/// 1.7 kHz shelf, and libebur128 takes the same range).
pub(crate) const RATES: std::ops::RangeInclusive<u32> = 16..=2_822_400;

/// Mean-square energy of a BS.1770 loudness, and back (−0.691 is the K-weighting's 1 kHz gain).
#[cfg(test)]
pub(crate) fn energy_of(lufs: f64) -> f64 {
    if lufs.is_finite() {
        10f64.powf((lufs + 0.691) / 10.0)
    } else {
        0.0
    }
}

pub(crate) fn lufs_of(energy: f64) -> f64 {
    if energy > 0.0 {
        -0.691 + 10.0 * energy.log10()
    } else {
        f64::NEG_INFINITY
    }
}

/// The K-weighting (a high shelf at 1.7 kHz and a high-pass at 38 Hz) as one 4th-order filter,
/// numerator `b` and denominator `a`, for `rate`: BS.1770-4's filters, re-derived for any rate
/// by the bilinear transform (libebur128's derivation).
#[allow(non_snake_case)]
fn k_weighting(rate: f64) -> ([f64; 5], [f64; 5]) {
    let (f0, G, Q) = (1681.974450955533, 3.999843853973347, 0.7071752369554196);
    let K = (std::f64::consts::PI * f0 / rate).tan();
    let Vh = 10f64.powf(G / 20.0);
    let Vb = Vh.powf(0.4996667741545416);
    let a0 = 1.0 + K / Q + K * K;
    let pb = [
        (Vh + Vb * K / Q + K * K) / a0,
        2.0 * (K * K - Vh) / a0,
        (Vh - Vb * K / Q + K * K) / a0,
    ];
    let pa = [1.0, 2.0 * (K * K - 1.0) / a0, (1.0 - K / Q + K * K) / a0];
    let (f0, Q) = (38.13547087602444, 0.5003270373238773);
    let K = (std::f64::consts::PI * f0 / rate).tan();
    let rb = [1.0, -2.0, 1.0];
    let d = 1.0 + K / Q + K * K;
    let ra = [1.0, 2.0 * (K * K - 1.0) / d, (1.0 - K / Q + K * K) / d];
    let conv = |p: [f64; 3], r: [f64; 3]| {
        [
            p[0] * r[0],
            p[0] * r[1] + p[1] * r[0],
            p[0] * r[2] + p[1] * r[1] + p[2] * r[0],
            p[1] * r[2] + p[2] * r[1],
            p[2] * r[2],
        ]
    };
    (conv(pb, rb), conv(pa, ra))
}

/// One channel's filter state (the last four intermediate values, newest first).
type State = [f64; 4];

/// Filter `x` through the K-weighting from `st`; returns the sum of the squared outputs.
///
/// The recursion `w0 = x − a1·w1 − …` is a chain from one sample to the next: the term with `w1`
/// (the previous sample's) is subtracted last, so the chain is one multiply and one subtraction
/// rather than four subtractions deep.
#[inline(always)]
fn k_filter(b: &[f64; 5], a: &[f64; 5], st: &mut State, x: &[f32]) -> f64 {
    let [mut w1, mut w2, mut w3, mut w4] = *st;
    let mut sum = 0.0f64;
    for &v in x {
        let w0 = (f64::from(v) - a[4] * w4 - a[3] * w3 - a[2] * w2) - a[1] * w1;
        let y = b[0] * w0 + b[1] * w1 + b[2] * w2 + b[3] * w3 + b[4] * w4;
        sum += y * y;
        (w4, w3, w2, w1) = (w3, w2, w1, w0);
    }
    *st = [w1, w2, w3, w4];
    sum
}

/// Two channels through the filter in one loop: their chains run side by side (the compiler
/// puts the two in one vector).
#[inline(always)]
fn k_filter_pair(b: &[f64; 5], a: &[f64; 5], st: [&mut State; 2], x: [&[f32]; 2]) -> [f64; 2] {
    let [s0, s1] = st;
    let n = x[0].len().min(x[1].len());
    let (x0, x1) = (&x[0][..n], &x[1][..n]);
    let [mut p1, mut p2, mut p3, mut p4] = *s0;
    let [mut q1, mut q2, mut q3, mut q4] = *s1;
    let (mut sp, mut sq) = (0.0f64, 0.0f64);
    for (&u, &v) in x0.iter().zip(x1) {
        let p0 = (f64::from(u) - a[4] * p4 - a[3] * p3 - a[2] * p2) - a[1] * p1;
        let q0 = (f64::from(v) - a[4] * q4 - a[3] * q3 - a[2] * q2) - a[1] * q1;
        let yp = b[0] * p0 + b[1] * p1 + b[2] * p2 + b[3] * p3 + b[4] * p4;
        let yq = b[0] * q0 + b[1] * q1 + b[2] * q2 + b[3] * q3 + b[4] * q4;
        sp += yp * yp;
        sq += yq * yq;
        (p4, p3, p2, p1) = (p3, p2, p1, p0);
        (q4, q3, q2, q1) = (q3, q2, q1, q0);
    }
    *s0 = [p1, p2, p3, p4];
    *s1 = [q1, q2, q3, q4];
    [sp, sq]
}

/// After a piece: a state decaying through silence is flushed to zero long before it could reach
/// the subnormal range (which is slow on most CPUs; a piece is at most 100 ms, far too short to
/// fall from 1e-100 to 1e-308), and a state a NaN or infinite sample poisoned starts over, so one
/// bad sample costs one step, not the rest of the stream.
fn settle(st: &mut State) {
    if st.iter().any(|v| !v.is_finite()) {
        *st = [0.0; 4];
    }
    for v in st.iter_mut() {
        if v.abs() < 1e-100 {
            *v = 0.0;
        }
    }
}

/// Outputs computed together by the interpolator: 16 is 4 SSE or 2 AVX vectors per phase, enough
/// independent sums to keep the adders busy.
const LANES: usize = 16;

/// The true-peak interpolator of one rate: a 48-tap windowed sinc (Hann), split into `factor`
/// phases of `48 / factor` taps. Phase 0 is the input itself (its only tap that is not ~0 is 1),
/// so only the others are computed.
struct Interp {
    /// Taps per phase (12 at 4×, 24 at 2×).
    taps: usize,
    /// Phases 1.. of the filter, each `taps` long, oldest input first.
    coeffs: Vec<f32>,
    /// The last `taps - 1` inputs of each channel.
    history: Vec<f32>,
    /// History then piece, for one channel at a time.
    scratch: Vec<f32>,
}

impl Interp {
    fn new(factor: usize, channels: usize) -> Self {
        const TAPS: usize = 48;
        let taps = TAPS / factor;
        let coeff = |j: usize| {
            let j = j as f64;
            let w = 0.5 * (1.0 - (2.0 * std::f64::consts::PI * j / TAPS as f64).cos());
            let m = j - TAPS as f64 / 2.0;
            let x = m * std::f64::consts::PI / factor as f64;
            (if m.abs() > 1e-6 { w * x.sin() / x } else { w }) as f32
        };
        // Tap k of phase p (k = 0 the newest input) is coefficient k·factor + p; stored oldest
        // first, to run forward over the samples.
        let coeffs = (1..factor)
            .flat_map(|p| (0..taps).rev().map(move |k| coeff(k * factor + p)))
            .collect();
        Interp {
            taps,
            coeffs,
            history: vec![0.0; (taps - 1) * channels],
            scratch: Vec::new(),
        }
    }

    /// The largest interpolated magnitude over `x`, channel `c`, carrying its history on.
    fn peak(&mut self, c: usize, x: &[f32]) -> f32 {
        let h = self.taps - 1;
        let history = &mut self.history[c * h..(c + 1) * h];
        self.scratch.clear();
        self.scratch.extend_from_slice(history);
        self.scratch.extend_from_slice(x);
        let all = &self.scratch;
        history.copy_from_slice(&all[all.len() - h..]);
        match self.taps {
            12 => phases_peak::<12>(&self.coeffs, all),
            24 => phases_peak::<24>(&self.coeffs, all),
            _ => 0.0,
        }
    }
}

/// The largest magnitude of every phase of `coeffs` (`TAPS` each) run over `x`, whose first
/// `TAPS - 1` samples are history. Uses AVX where the CPU has it: the same operations in the same
/// order on wider vectors (no fused multiply-add), so the result is identical either way
/// (tested: `the_interpolator_is_the_same_with_and_without_avx`). One of avmon-detect's two
/// exceptions to `unsafe_code = "deny"`.
#[allow(unsafe_code)]
fn phases_peak<const TAPS: usize>(coeffs: &[f32], x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU was just found to support AVX2, all this function requires.
        return unsafe { phases_peak_avx2::<TAPS>(coeffs, x) };
    }
    phases_peak_portable::<TAPS>(coeffs, x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(unsafe_code)]
unsafe fn phases_peak_avx2<const TAPS: usize>(coeffs: &[f32], x: &[f32]) -> f32 {
    phases_peak_portable::<TAPS>(coeffs, x)
}

#[inline(always)]
fn phases_peak_portable<const TAPS: usize>(coeffs: &[f32], x: &[f32]) -> f32 {
    let outputs = x.len().saturating_sub(TAPS - 1);
    let whole = outputs / LANES * LANES;
    let mut peak = [0.0f32; LANES];
    for g in coeffs.chunks_exact(TAPS) {
        let g: &[f32; TAPS] = g.try_into().expect("a phase");
        for n in (0..whole).step_by(LANES) {
            let mut acc = [0.0f32; LANES];
            for (i, &c) in g.iter().enumerate() {
                let s: &[f32; LANES] = x[n + i..n + i + LANES].try_into().expect("16 samples");
                for j in 0..LANES {
                    acc[j] += c * s[j];
                }
            }
            for j in 0..LANES {
                peak[j] = peak[j].max(acc[j].abs());
            }
        }
        for n in whole..outputs {
            let y: f32 = g.iter().zip(&x[n..n + TAPS]).map(|(&c, &s)| c * s).sum();
            peak[0] = peak[0].max(y.abs());
        }
    }
    peak.iter().fold(0.0, |m, &v| m.max(v))
}

/// The K-weighting, the step energy and the peak of one audio format.
pub(crate) struct Meter {
    b: [f64; 5],
    a: [f64; 5],
    channels: usize,
    states: [State; MAX_AUDIO_CHANNELS],
    /// BS.1770 weight of each channel (0: not counted, e.g. LFE).
    weights: [f64; MAX_AUDIO_CHANNELS],
    /// Weighted sum of squares of the step so far.
    step_sum: f64,
    /// The true-peak interpolator; `None` measures the sample peak (as at 192 kHz and above).
    interp: Option<Interp>,
}

impl Meter {
    /// A meter for `rate` and the channel `weights`, or `None` for a rate outside [`RATES`].
    pub fn new(rate: u32, weights: &[f64], true_peak: bool) -> Option<Self> {
        if !RATES.contains(&rate) || weights.is_empty() || weights.len() > MAX_AUDIO_CHANNELS {
            return None;
        }
        let (b, a) = k_weighting(f64::from(rate));
        let mut w = [0.0; MAX_AUDIO_CHANNELS];
        w[..weights.len()].copy_from_slice(weights);
        let interp = match rate {
            _ if !true_peak => None,
            0..=95_999 => Some(Interp::new(4, weights.len())),
            96_000..=191_999 => Some(Interp::new(2, weights.len())),
            _ => None,
        };
        Some(Meter {
            b,
            a,
            channels: weights.len(),
            states: [[0.0; 4]; MAX_AUDIO_CHANNELS],
            weights: w,
            step_sum: 0.0,
            interp,
        })
    }

    /// Measure the next samples of each channel (all of one length, `channels` of them); returns
    /// their peak (true or sample) over all channels.
    pub fn add(&mut self, planes: &[&[f32]]) -> f32 {
        let n = self.channels.min(planes.len());
        let (b, a) = (&self.b, &self.a);
        let mut c = 0;
        while c < n {
            let counted = |c: usize| self.weights[c] != 0.0;
            let (pair, single) = self.states.split_at_mut(c + 1);
            if c + 1 < n && counted(c) && counted(c + 1) {
                let [s0, s1] = k_filter_pair(
                    b,
                    a,
                    [&mut pair[c], &mut single[0]],
                    [planes[c], planes[c + 1]],
                );
                self.step_sum += s0 * self.weights[c] + s1 * self.weights[c + 1];
                c += 2;
                continue;
            }
            if counted(c) {
                self.step_sum += k_filter(b, a, &mut pair[c], planes[c]) * self.weights[c];
            }
            c += 1;
        }
        // The sample peak of every channel, the LFE's too (and phase 0 of the true peak).
        let mut peak = planes[..n]
            .iter()
            .fold(0.0f32, |m, p| m.max(windows::peak(p)));
        for st in &mut self.states[..n] {
            settle(st);
        }
        if let Some(interp) = &mut self.interp {
            for (c, plane) in planes[..n].iter().enumerate() {
                peak = peak.max(interp.peak(c, plane));
            }
        }
        if peak.is_finite() {
            peak
        } else {
            0.0
        }
    }

    /// The weighted mean-square energy of the step just completed (`samples` per channel), and a
    /// fresh sum for the next; NaN when a non-finite sample spoiled it.
    pub fn take_step(&mut self, samples: usize) -> f64 {
        let e = std::mem::take(&mut self.step_sum) / samples.max(1) as f64;
        if e.is_finite() {
            e
        } else {
            f64::NAN
        }
    }

    /// Drop the step in progress (the audio did not continue).
    pub fn drop_step(&mut self) {
        self.step_sum = 0.0;
    }
}

/// Bins of 0.1 LU from −70 to +30 LUFS (libebur128's histogram): energies at their centres, and
/// their lower edges (plus the top edge).
struct Bins {
    energies: [f64; 1000],
    edges: [f64; 1001],
}

fn bins() -> &'static Bins {
    static BINS: OnceLock<Bins> = OnceLock::new();
    BINS.get_or_init(|| {
        let mut b = Bins {
            energies: [0.0; 1000],
            edges: [0.0; 1001],
        };
        for (i, e) in b.energies.iter_mut().enumerate() {
            *e = 10f64.powf((i as f64 / 10.0 - 69.95 + 0.691) / 10.0);
        }
        for (i, e) in b.edges.iter_mut().enumerate() {
            *e = 10f64.powf((i as f64 / 10.0 - 70.0 + 0.691) / 10.0);
        }
        b
    })
}

impl Bins {
    /// The bin of an energy at or above the lowest edge (the top bin takes all above +30 LUFS).
    fn of(&self, energy: f64) -> usize {
        (self.edges[1..1000].partition_point(|&e| energy >= e)).min(999)
    }

    /// The first bin whose blocks pass a gate at `energy`: the gate's bin, or the next when the
    /// gate is above that bin's centre (libebur128's rule).
    fn gate(&self, energy: f64) -> usize {
        if energy < self.edges[0] {
            return 0;
        }
        let i = self.of(energy);
        if energy > self.energies[i] {
            i + 1
        } else {
            i
        }
    }
}

/// Block counts per loudness bin.
type Histogram = [u64; 1000];

/// The integrated loudness and the loudness range, from the step energies; runs on across
/// formats, gaps and reconnects (the histograms keep a stream of months in 16 KiB).
pub(crate) struct Gating {
    /// 400 ms blocks (every 100 ms) and 3 s blocks (every second) above −70 LUFS.
    blocks: Box<Histogram>,
    short: Box<Histogram>,
    /// The last 30 step energies (ring), and the steps since the format began.
    ring: [f64; 30],
    next: usize,
    steps: u64,
}

impl Default for Gating {
    fn default() -> Self {
        Gating {
            blocks: Box::new([0; 1000]),
            short: Box::new([0; 1000]),
            ring: [0.0; 30],
            next: 0,
            steps: 0,
        }
    }
}

impl Gating {
    /// A new format: its blocks start with its own first step.
    pub fn restart(&mut self) {
        self.steps = 0;
        self.next = 0;
    }

    /// The next 100 ms step's energy (NaN: a step lost to non-finite samples).
    pub fn step(&mut self, energy: f64) {
        self.ring[self.next] = energy;
        self.next = (self.next + 1) % self.ring.len();
        self.steps += 1;
        let bins = bins();
        let add = |h: &mut Histogram, e: f64| {
            // Below the absolute gate (−70 LUFS), or NaN: not a block.
            if e >= bins.edges[0] {
                h[bins.of(e)] += 1;
            }
        };
        if self.steps >= 4 {
            let e = self.mean(4);
            add(&mut self.blocks, e);
        }
        // The first 3 s block when 3 s are in, then one a second.
        if self.steps >= 30 && (self.steps - 30) % 10 == 0 {
            let e = self.mean(30);
            add(&mut self.short, e);
        }
    }

    /// The mean energy of the last `n` steps (at most 30; the caller knows how many of them
    /// belong to the audio it judges).
    pub fn mean(&self, n: usize) -> f64 {
        let len = self.ring.len();
        (1..=n.min(len))
            .map(|k| self.ring[(self.next + len - k) % len])
            .sum::<f64>()
            / n as f64
    }

    /// Integrated loudness (LUFS): the mean energy of the 400 ms blocks that pass the absolute
    /// gate and the relative gate 10 LU under their own mean; `None` when no block passed.
    pub fn integrated(&self) -> Option<f64> {
        let bins = bins();
        let sums = |from: usize| {
            self.blocks[from..]
                .iter()
                .zip(&bins.energies[from..])
                .fold((0u64, 0.0f64), |(n, s), (&c, &e)| (n + c, s + c as f64 * e))
        };
        let (n, sum) = sums(0);
        if n == 0 {
            return None;
        }
        let (n, sum) = sums(bins.gate(sum / n as f64 * 0.1));
        (n > 0).then(|| lufs_of(sum / n as f64))
    }

    /// Loudness range (LU, EBU Tech 3342): the spread between the 10th and the 95th percentile of
    /// the 3 s blocks that pass the absolute gate and the relative gate 20 LU under their mean;
    /// 0 with no such block.
    pub fn range(&self) -> f64 {
        let bins = bins();
        let h = &self.short;
        let size: u64 = h.iter().sum();
        if size == 0 {
            return 0.0;
        }
        let power = h
            .iter()
            .zip(&bins.energies)
            .map(|(&c, &e)| c as f64 * e)
            .sum::<f64>()
            / size as f64;
        let from = bins.gate(power * 0.01);
        let before: u64 = h[..from].iter().sum();
        let size = size - before;
        if size == 0 {
            return 0.0;
        }
        // The bin of the block of rank `r` (0-based) among all, in loudness order.
        let at = |r: u64| {
            let mut seen = 0;
            for (i, &c) in h.iter().enumerate() {
                seen += c;
                if seen > r {
                    return bins.energies[i];
                }
            }
            bins.energies[999]
        };
        let low = ((size - 1) as f64 * 0.1 + 0.5) as u64 + before;
        let high = ((size - 1) as f64 * 0.95 + 0.5) as u64 + before;
        lufs_of(at(high)) - lufs_of(at(low))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interpolator_is_the_same_with_and_without_avx() {
        // A ramp of odd values through every phase, and a run not a multiple of the lanes.
        let x: Vec<f32> = (0..1000)
            .map(|i| ((i * 7919) % 263) as f32 / 131.0 - 1.0)
            .collect();
        let interp = Interp::new(4, 1);
        let portable = phases_peak_portable::<12>(&interp.coeffs, &x);
        assert_eq!(phases_peak::<12>(&interp.coeffs, &x), portable);
        // And it interpolates: above the largest sample of this jagged signal.
        let sample_peak = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(portable > sample_peak, "{portable} vs {sample_peak}");
    }
}
