//! Consecutive fixed-length windows of audio that run across buffer boundaries, shared by the
//! detectors that measure audio window by window (silence, clipping, channel silence, loudness).
//!
//! Decoders hand over buffers of any size (1024 samples for AAC, 1152 for MP2, anything after a
//! resampler); a detector wants its own window (20 ms, 100 ms, 250 ms). [`AudioWindows`] keeps the
//! window in progress (how many samples it holds and when it started) and cuts each buffer into
//! [`Piece`]s: a run of samples that continues the window in progress, and, when the piece
//! completes it, the finished [`Window`]. The detector keeps its own per-window sums.
//!
//! A change of sample rate, channel count or speaker layout, or a gap or overlap in the buffer
//! timestamps larger than `max_gap_s` (default: one window), starts a fresh window; [`Start`]
//! says which, so the detector drops its partial sums (and, on a new format, its per-channel
//! state).

use avmon_core::{AudioBuffer, MAX_AUDIO_CHANNELS};

/// What changed since the previous buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// The buffer continues the audio: the window in progress goes on.
    None,
    /// Sample rate, channel count or layout changed: the window restarted.
    Format,
    /// The buffer does not follow on in time: the window restarted.
    Gap,
}

/// A buffer to cut into pieces.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Start {
    pub change: Change,
    /// Channels to look at (at most [`MAX_AUDIO_CHANNELS`]).
    pub channels: usize,
    /// Samples per channel in the buffer.
    pub samples: usize,
}

/// A finished window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Window {
    /// Media time of its first sample, and of the sample after its last.
    pub start: f64,
    pub end: f64,
    /// Samples per channel.
    pub samples: usize,
}

/// Samples `from..to` of the buffer's planes continue the window in progress; `done` is the
/// window they complete, if they do.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Piece {
    pub from: usize,
    pub to: usize,
    pub done: Option<Window>,
}

#[derive(Clone, Debug)]
pub(crate) struct AudioWindows {
    window_ms: f64,
    max_gap_s: Option<f64>,
    /// Format the window in progress was started with.
    pub sample_rate: u32,
    pub channels: usize,
    pub layout: u64,
    /// Samples per window at `sample_rate`.
    pub len: usize,
    /// Samples of the window in progress so far, and its start time.
    filled: usize,
    start_t: f64,
    /// Where the next buffer should start, if the audio is contiguous.
    expected_t: f64,
    /// Where the current buffer starts.
    buf_t: f64,
}

impl AudioWindows {
    pub fn new(window_ms: f64) -> Self {
        AudioWindows {
            window_ms,
            max_gap_s: None,
            sample_rate: 0,
            channels: 0,
            layout: 0,
            len: 1,
            filled: 0,
            start_t: 0.0,
            expected_t: f64::NAN,
            buf_t: 0.0,
        }
    }

    /// Tolerate timestamp gaps up to `s` seconds (instead of one window) before restarting.
    pub fn with_max_gap(mut self, s: f64) -> Self {
        self.max_gap_s = Some(s);
        self
    }

    /// Take a new buffer; `None` when it carries no usable audio.
    pub fn begin(&mut self, buf: &AudioBuffer<'_>) -> Option<Start> {
        let channels = buf.channels().min(MAX_AUDIO_CHANNELS);
        if buf.sample_rate == 0 || channels == 0 {
            return None;
        }
        let rate = f64::from(buf.sample_rate);
        let change = if buf.sample_rate != self.sample_rate
            || channels != self.channels
            || buf.layout != self.layout
        {
            self.sample_rate = buf.sample_rate;
            self.channels = channels;
            self.layout = buf.layout;
            self.len = ((rate * self.window_ms / 1000.0).round() as usize).max(1);
            self.filled = 0;
            Change::Format
        } else if (buf.t - self.expected_t).abs() > self.max_gap_s.unwrap_or(self.len as f64 / rate)
        {
            self.filled = 0;
            Change::Gap
        } else {
            Change::None
        };
        let samples = buf.planes[..channels]
            .iter()
            .map(|p| p.len())
            .min()
            .unwrap_or(0);
        self.buf_t = buf.t;
        self.expected_t = buf.t + samples as f64 / rate;
        Some(Start {
            change,
            channels,
            samples,
        })
    }

    /// The next piece of the buffer from `*pos` (of `samples`), advancing `*pos`.
    pub fn next(&mut self, pos: &mut usize, samples: usize) -> Option<Piece> {
        if *pos >= samples {
            return None;
        }
        let rate = f64::from(self.sample_rate.max(1));
        if self.filled == 0 {
            self.start_t = self.buf_t + *pos as f64 / rate;
        }
        let take = (self.len - self.filled).min(samples - *pos);
        let piece_from = *pos;
        *pos += take;
        self.filled += take;
        let done = (self.filled == self.len).then(|| {
            self.filled = 0;
            Window {
                start: self.start_t,
                end: self.start_t + self.len as f64 / rate,
                samples: self.len,
            }
        });
        Some(Piece {
            from: piece_from,
            to: *pos,
            done,
        })
    }

    /// Drop the window in progress.
    pub fn restart(&mut self) {
        self.filled = 0;
    }

    /// Forget the format too: the next buffer starts afresh (a reconnect).
    pub fn reset(&mut self) {
        self.filled = 0;
        self.sample_rate = 0;
        self.expected_t = f64::NAN;
    }
}

/// Lanes of the sample sums below.
const LANES: usize = 8;

/// Sum of squares and largest magnitude of a run of samples.
///
/// Kept in 8 lanes: into one `f32` accumulator every addition waits for the one before (the
/// compiler may not reorder float additions), a chain of one sample per 4 cycles; 8 lanes are a
/// couple of vector instructions per 8 samples. The lanes add in another order than a plain loop,
/// which moves the sum by rounding only (≈ 1e-7 of it); the peak is exact.
#[inline]
pub(crate) fn power_peak(seg: &[f32]) -> (f32, f32) {
    let chunks = seg.chunks_exact(LANES);
    let (mut sq, mut peak) = chunks
        .remainder()
        .iter()
        .fold((0.0f32, 0.0f32), |(sq, pk), &x| {
            (sq + x * x, pk.max(x.abs()))
        });
    let (mut sq_l, mut peak_l) = ([0.0f32; LANES], [0.0f32; LANES]);
    for c in chunks {
        let c: &[f32; LANES] = c.try_into().expect("a chunk");
        for i in 0..LANES {
            sq_l[i] += c[i] * c[i];
            peak_l[i] = peak_l[i].max(c[i].abs());
        }
    }
    sq += sq_l.iter().sum::<f32>();
    peak = peak_l.iter().fold(peak, |m, &v| m.max(v));
    (sq, peak)
}

/// Largest magnitude of a run of samples, in lanes (see [`power_peak`]); exact.
#[inline]
pub(crate) fn peak(seg: &[f32]) -> f32 {
    let chunks = seg.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .fold(0.0f32, |m, &x| m.max(x.abs()));
    let mut lanes = [0.0f32; LANES];
    for c in chunks {
        let c: &[f32; LANES] = c.try_into().expect("a chunk");
        for i in 0..LANES {
            lanes[i] = lanes[i].max(c[i].abs());
        }
    }
    lanes.iter().fold(tail, |m, &v| m.max(v))
}

/// Sum of squares of a run of samples, in lanes (see [`power_peak`]).
#[inline]
pub(crate) fn sum_squares(seg: &[f32]) -> f32 {
    let chunks = seg.chunks_exact(LANES);
    let tail = chunks.remainder().iter().fold(0.0f32, |s, &x| s + x * x);
    let mut lanes = [0.0f32; LANES];
    for c in chunks {
        let c: &[f32; LANES] = c.try_into().expect("a chunk");
        for i in 0..LANES {
            lanes[i] += c[i] * c[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf<'a>(t: f64, planes: &'a [&'a [f32]]) -> AudioBuffer<'a> {
        AudioBuffer {
            t,
            sample_rate: 1000,
            planes,
            layout: 0,
        }
    }

    #[test]
    fn windows_run_across_buffers_and_restart_on_gaps_and_format_changes() {
        let mut w = AudioWindows::new(10.0); // 10 samples at 1 kHz
        let a = [0.0f32; 7];
        let planes: [&[f32]; 1] = [&a];
        let mut done = Vec::new();
        let mut t = 0.0;
        for i in 0..3 {
            let s = w.begin(&buf(t, &planes)).unwrap();
            assert_eq!(s.change, if i == 0 { Change::Format } else { Change::None });
            let mut pos = 0;
            while let Some(p) = w.next(&mut pos, s.samples) {
                done.extend(p.done);
            }
            t += 0.007;
        }
        // 21 samples: two whole windows, at 0 and 10 ms.
        assert_eq!(done.len(), 2);
        assert!((done[1].start - 0.010).abs() < 1e-9 && (done[1].end - 0.020).abs() < 1e-9);
        // A 50 ms jump restarts the window.
        let s = w.begin(&buf(0.1, &planes)).unwrap();
        assert_eq!(s.change, Change::Gap);
        let stereo: [&[f32]; 2] = [&a, &a];
        let s = w.begin(&buf(0.107, &stereo)).unwrap();
        assert_eq!((s.change, s.channels), (Change::Format, 2));
        let none: [&[f32]; 0] = [];
        assert!(w.begin(&buf(0.2, &none)).is_none());
    }

    #[test]
    fn lane_sums_equal_plain_sums() {
        let mut rng = crate::testutil::Rng::new(3);
        for len in 0..40 {
            let seg: Vec<f32> = (0..len).map(|_| rng.signed()).collect();
            let plain_sq: f32 = seg.iter().map(|x| x * x).sum();
            let plain_peak = seg.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            let (sq, peak) = power_peak(&seg);
            assert_eq!(peak, plain_peak, "{len} samples");
            assert!((sq - plain_sq).abs() <= 1e-6 * plain_sq.max(1.0), "{len}");
            assert_eq!(sum_squares(&seg), sq, "{len} samples");
        }
    }
}
