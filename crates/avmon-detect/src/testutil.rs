//! Synthetic media for the detectors' tests.

use avmon_core::{AudioBuffer, Detector, Finding, FindingEdge, Plane, VideoFrame};

/// Frames per second of the synthetic video.
pub const FPS: f64 = 25.0;

/// Media time of frame `i` at [`FPS`].
pub fn ft(i: usize) -> f64 {
    i as f64 / FPS
}

/// A tiny deterministic PRNG (xorshift64*), so tests need no `rand`.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform integer in `lo..=hi`.
    pub fn range(&mut self, lo: i32, hi: i32) -> i32 {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as i32
    }

    /// Uniform float in `-1.0..1.0`.
    pub fn signed(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// An owned luma picture with a stride wider than its width; the padding holds `0xEE` so a
/// detector that reads past `width` is caught.
#[derive(Clone)]
pub struct Picture {
    pub w: usize,
    pub h: usize,
    pub stride: usize,
    pub data: Vec<u8>,
    pub full_range: bool,
    /// 4:2:0 chroma planes (Cb, Cr) with the luma's stride halved, when set
    /// ([`Picture::with_chroma`]); empty otherwise, and the frame carries none.
    pub chroma: [Vec<u8>; 2],
}

impl Picture {
    pub fn new(w: usize, h: usize, fill: u8) -> Self {
        let stride = w + 6;
        let mut data = vec![0xEE; stride * h];
        for y in 0..h {
            data[y * stride..y * stride + w].fill(fill);
        }
        Picture {
            w,
            h,
            stride,
            data,
            full_range: false,
            chroma: [Vec::new(), Vec::new()],
        }
    }

    /// The picture with 4:2:0 chroma planes: Cb and Cr at chroma sample (x, y) are `f(x, y)`.
    pub fn with_chroma(mut self, mut f: impl FnMut(usize, usize) -> (u8, u8)) -> Self {
        let (cw, ch, cs) = self.chroma_size();
        let mut planes = [vec![0xEE; cs * ch], vec![0xEE; cs * ch]];
        for y in 0..ch {
            for x in 0..cw {
                let (cb, cr) = f(x, y);
                planes[0][y * cs + x] = cb;
                planes[1][y * cs + x] = cr;
            }
        }
        self.chroma = planes;
        self
    }

    /// Width, height and stride of the chroma planes.
    pub fn chroma_size(&self) -> (usize, usize, usize) {
        (
            self.w.div_ceil(2),
            self.h.div_ceil(2),
            self.stride.div_ceil(2),
        )
    }

    /// A picture whose sample at (x, y) is `f(x, y)`.
    pub fn from_fn(w: usize, h: usize, mut f: impl FnMut(usize, usize) -> u8) -> Self {
        let mut p = Picture::new(w, h, 0);
        for y in 0..h {
            for x in 0..w {
                p.data[y * p.stride + x] = f(x, y);
            }
        }
        p
    }

    pub fn get(&self, x: usize, y: usize) -> u8 {
        self.data[y * self.stride + x]
    }

    pub fn set(&mut self, x: usize, y: usize, v: u8) {
        self.data[y * self.stride + x] = v;
    }

    /// The frame at index `i` of a [`FPS`] sequence.
    pub fn frame(&self, i: usize) -> VideoFrame<'_> {
        VideoFrame {
            t: ft(i),
            duration: 1.0 / FPS,
            luma: Plane::new(&self.data, self.stride, self.w, self.h).unwrap(),
            chroma: (!self.chroma[0].is_empty()).then(|| {
                let (cw, ch, cs) = self.chroma_size();
                self.chroma
                    .each_ref()
                    .map(|c| Plane::new(c, cs, cw, ch).unwrap())
            }),
            full_range: self.full_range,
            key: false,
            corrupt: false,
            decode_errors: 0,
            changed_between: None,
            captions: None,
        }
    }
}

/// `item`, `n` times (`repeat_n` needs Rust 1.82; the workspace supports 1.80).
pub fn times<T: Clone>(item: T, n: usize) -> impl Iterator<Item = T> {
    std::iter::repeat(item).take(n)
}

/// A finding and the index of the frame (or buffer) whose call produced it.
#[derive(Debug)]
pub struct Seen {
    pub at: usize,
    pub f: Finding,
}

/// Feed `pictures` (frame `i` at `ft(i)`) and collect the findings.
pub fn run_video<'a>(
    det: &mut dyn Detector,
    pictures: impl IntoIterator<Item = &'a Picture>,
) -> Vec<Seen> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for (i, p) in pictures.into_iter().enumerate() {
        det.on_video(&p.frame(i), &mut out);
        seen.extend(out.drain(..).map(|f| Seen { at: i, f }));
    }
    seen
}

/// The edges and times of findings, for compact assertions.
pub fn edges(seen: &[Seen]) -> Vec<(FindingEdge, f64)> {
    seen.iter().map(|s| (s.f.edge, s.f.t)).collect()
}

/// Feed planar audio in buffers whose sizes cycle through `sizes`; returns findings with the
/// index of the buffer that produced them.
pub fn run_audio(
    det: &mut dyn Detector,
    channels: &[Vec<f32>],
    sample_rate: u32,
    sizes: &[usize],
) -> Vec<Seen> {
    run_audio_layout(det, channels, sample_rate, sizes, 0)
}

/// [`run_audio`] with a speaker layout.
pub fn run_audio_layout(
    det: &mut dyn Detector,
    channels: &[Vec<f32>],
    sample_rate: u32,
    sizes: &[usize],
    layout: u64,
) -> Vec<Seen> {
    let total = channels[0].len();
    let mut seen = Vec::new();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut n = 0;
    while pos < total {
        let len = sizes[n % sizes.len()].min(total - pos);
        let planes: Vec<&[f32]> = channels.iter().map(|c| &c[pos..pos + len]).collect();
        let buf = AudioBuffer {
            t: pos as f64 / f64::from(sample_rate),
            sample_rate,
            planes: &planes,
            layout,
        };
        det.on_audio(&buf, &mut out);
        seen.extend(out.drain(..).map(|f| Seen { at: n, f }));
        pos += len;
        n += 1;
    }
    seen
}

/// Assert two media times are equal to a microsecond.
#[track_caller]
pub fn assert_t(got: f64, want: f64) {
    assert!((got - want).abs() < 1e-6, "t = {got}, want {want}");
}

/// The sample rate of the audio tests.
pub const SR: u32 = 48_000;

/// Samples in `s` seconds at [`SR`].
pub fn secs(s: f64) -> usize {
    (s * f64::from(SR)).round() as usize
}
