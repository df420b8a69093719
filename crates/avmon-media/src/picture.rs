//! Pictures for people: a small scaled copy of a stream's picture every so often, and JPEG
//! encoding of one on demand (the console's thumbnails, an alert's snapshot).
//!
//! The detectors read the decoder's pictures in place; this is the one place a picture is copied,
//! and only a downscaled one, once per [`Pictures::interval_s`] of media time (1 s by default).
//! 8-bit 4:2:0 pictures (nearly every stream) are area-averaged here, 0.2 ms for 720p to
//! 320 × 180 (swscale's bilinear scaler took 0.42 ms, which mattered at the `keyframes` tier,
//! where a copy is made of every other picture decoded); other formats go through swscale. The
//! last [`Pictures::capacity`] copies are kept, so that an alert
//! raised seconds after its onset (a freeze needs 2 s to be one) can still show the picture at
//! the onset ([`Pictures::at`]). Copies are full-range YUV 4:2:0 (`yuvj420p`), what the MJPEG
//! encoder takes, and nothing is encoded until someone asks ([`encode_jpeg`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use ff::format::Pixel;
use ffmpeg_next as ff;

use crate::MediaError;

/// One downscaled picture: full-range YUV 4:2:0, planes packed without padding.
#[derive(Clone, Debug, Default)]
pub struct Picture {
    /// Media time of the picture, seconds.
    pub t: f64,
    pub width: u32,
    pub height: u32,
    /// Y (`width × height`), then U and V (`⌈width/2⌉ × ⌈height/2⌉` each).
    pub data: Vec<u8>,
}

/// A stream's latest scaled pictures, shared between its decode thread (which adds them) and
/// whoever shows them.
#[derive(Debug)]
pub struct Pictures {
    /// Width of the copies; the height keeps the picture's aspect (rounded to even).
    pub width: u32,
    /// Media seconds between two copies.
    pub interval_s: f64,
    /// How many copies are kept.
    pub capacity: usize,
    ring: Mutex<VecDeque<Picture>>,
}

impl Picture {
    /// Draw the outline of each box (`[x0, y0, x1, y1]`, fractions of the width and height) in
    /// red, 2 pixels wide: where a detector saw the damage, on an alert's snapshot.
    pub fn outline(&mut self, boxes: &[[f64; 4]]) {
        let (w, h) = (self.width as usize, self.height as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        if w < 4 || h < 4 || self.data.len() < w * h + 2 * cw * ch {
            return;
        }
        let (y, uv) = self.data.split_at_mut(w * h);
        let (u, v) = uv.split_at_mut(cw * ch);
        // Full-range red.
        let mut dot = |px: usize, py: usize| {
            let (px, py) = (px.min(w - 1), py.min(h - 1));
            y[py * w + px] = 76;
            u[(py / 2) * cw + px / 2] = 85;
            v[(py / 2) * cw + px / 2] = 255;
        };
        for b in boxes {
            let to =
                |f: f64, n: usize| ((f.clamp(0.0, 1.0) * n as f64).round() as usize).min(n - 1);
            let (x0, y0, x1, y1) = (to(b[0], w), to(b[1], h), to(b[2], w), to(b[3], h));
            if x1 <= x0 || y1 <= y0 {
                continue;
            }
            for t in 0..2 {
                for x in x0..=x1 {
                    dot(x, y0 + t);
                    dot(x, y1.saturating_sub(t));
                }
                for yy in y0..=y1 {
                    dot(x0 + t, yy);
                    dot(x1.saturating_sub(t), yy);
                }
            }
        }
    }
}

impl Pictures {
    pub fn new(width: u32, interval_s: f64, capacity: usize) -> Arc<Self> {
        Arc::new(Pictures {
            width: width.max(16) & !1,
            interval_s,
            capacity: capacity.max(1),
            ring: Mutex::new(VecDeque::new()),
        })
    }

    /// The newest picture.
    pub fn latest(&self) -> Option<Picture> {
        self.ring.lock().ok()?.back().cloned()
    }

    /// The picture shown at media time `t`: the first taken at or after it, else the newest
    /// (a picture that was still on screen at `t`, at most one interval before it).
    pub fn at(&self, t: f64) -> Option<Picture> {
        let ring = self.ring.lock().ok()?;
        ring.iter()
            .find(|p| p.t >= t - 1e-3)
            .or_else(|| ring.back())
            .cloned()
    }

    /// The media time of the newest picture (cheap: for caching what was encoded from it).
    pub fn latest_t(&self) -> Option<f64> {
        self.ring.lock().ok()?.back().map(|p| p.t)
    }

    /// A buffer to fill: the oldest picture's once the ring is full, so that no allocation is
    /// made in the steady state.
    fn take_buffer(&self) -> Vec<u8> {
        match self.ring.lock() {
            Ok(mut r) if r.len() >= self.capacity => {
                r.pop_front().map(|p| p.data).unwrap_or_default()
            }
            _ => Vec::new(),
        }
    }

    fn push(&self, p: Picture) {
        if let Ok(mut r) = self.ring.lock() {
            while r.len() >= self.capacity {
                r.pop_front();
            }
            r.push_back(p);
        }
    }
}

/// The decode thread's side: decides when a copy is due and makes it.
pub(crate) struct Capture {
    pictures: Arc<Pictures>,
    /// Scaler and its output, for the source's format and size.
    sws: Option<(
        ff::software::scaling::Context,
        ff::frame::Video,
        (Pixel, u32, u32),
    )>,
    /// Scratch for [`area_scale`]: kept, so that nothing is allocated per picture.
    scratch: AreaScratch,
    next_t: f64,
}

impl Capture {
    pub(crate) fn new(pictures: Arc<Pictures>) -> Self {
        Capture {
            pictures,
            sws: None,
            scratch: AreaScratch::default(),
            next_t: f64::NEG_INFINITY,
        }
    }

    /// Called with each decoded picture; copies a scaled one when due.
    pub(crate) fn offer(&mut self, f: &ff::frame::Video, t: f64) {
        // A clock that went backwards (a new source) starts the schedule again.
        if t < self.next_t - 2.0 * self.pictures.interval_s {
            self.next_t = t;
        }
        if t < self.next_t {
            return;
        }
        self.next_t = t + self.pictures.interval_s;
        let (w, h, format) = (f.width(), f.height(), f.format());
        if w == 0 || h == 0 {
            return;
        }
        let ow = self.pictures.width.min(w.max(2) & !1);
        let oh = ((u64::from(h) * u64::from(ow) / u64::from(w)).max(2) as u32) & !1;
        let data = if matches!(format, Pixel::YUV420P | Pixel::YUVJ420P) {
            Some(self.average(f, ow as usize, oh as usize))
        } else {
            self.swscale(f, ow, oh)
        };
        if let Some(data) = data {
            self.pictures.push(Picture {
                t,
                width: ow,
                height: oh,
                data,
            });
        }
    }

    /// 8-bit 4:2:0, what nearly every stream decodes to: averaged here, plane by plane (half
    /// of what swscale's bilinear scaler costs, and as smooth), into packed planes.
    fn average(&mut self, f: &ff::frame::Video, ow: usize, oh: usize) -> Vec<u8> {
        let full = f.format() == Pixel::YUVJ420P || f.color_range() == ff::util::color::Range::JPEG;
        let (w, h) = (f.width() as usize, f.height() as usize);
        let mut data = self.pictures.take_buffer();
        data.clear();
        for plane in 0..3 {
            let (pw, ph, pow, poh) = match plane {
                0 => (w, h, ow, oh),
                _ => (w.div_ceil(2), h.div_ceil(2), ow.div_ceil(2), oh.div_ceil(2)),
            };
            let lut = match (full, plane) {
                (true, _) => &IDENTITY,
                (false, 0) => &LUMA_TO_FULL,
                (false, _) => &CHROMA_TO_FULL,
            };
            let src = Plane {
                data: f.data(plane),
                stride: f.stride(plane),
                width: pw,
                height: ph,
            };
            area_scale(&src, pow, poh, lut, &mut self.scratch, &mut data);
        }
        data
    }

    /// Any other format, through swscale, into packed planes; `None` when it cannot.
    fn swscale(&mut self, f: &ff::frame::Video, ow: u32, oh: u32) -> Option<Vec<u8>> {
        let key = (f.format(), f.width(), f.height());
        if self.sws.as_ref().map(|s| s.2) != Some(key) {
            self.sws = ff::software::scaling::Context::get(
                key.0,
                key.1,
                key.2,
                Pixel::YUVJ420P,
                ow,
                oh,
                ff::software::scaling::Flags::BILINEAR,
            )
            .ok()
            .map(|s| (s, ff::frame::Video::empty(), key));
        }
        let (sws, out, _) = self.sws.as_mut()?;
        sws.run(f, out).ok()?;
        // Taken only now: a buffer taken is the oldest picture let go.
        let mut data = self.pictures.take_buffer();
        data.clear();
        let (ow, oh) = (ow as usize, oh as usize);
        let dims = [
            (ow, oh),
            (ow.div_ceil(2), oh.div_ceil(2)),
            (ow.div_ceil(2), oh.div_ceil(2)),
        ];
        for (plane, (pw, ph)) in dims.into_iter().enumerate() {
            let stride = out.stride(plane);
            let src = out.data(plane);
            for y in 0..ph {
                data.extend_from_slice(&src[y * stride..y * stride + pw]);
            }
        }
        Some(data)
    }
}

/// One 8-bit plane of a picture.
struct Plane<'a> {
    data: &'a [u8],
    stride: usize,
    width: usize,
    height: usize,
}

/// Reused buffers of [`area_scale`].
#[derive(Default)]
struct AreaScratch {
    /// Column sums of the source rows one output row covers.
    sums: Vec<u16>,
    /// Source columns each output column covers: `[start, end)`.
    spans: Vec<(u32, u32)>,
    /// 2^16 / (rows × columns) of an area, by its number of columns, for the current rows.
    inverse: Vec<u32>,
}

/// Rows of an area summed at most (in 16 bits): areas taller than this (a picture scaled
/// below a 257th of its height) are averaged over their first rows.
const MAX_AREA_ROWS: usize = 257;

/// Sample maps to full range (what the MJPEG encoder takes): identity, and from limited-range
/// luma (16–235) and chroma (16–240), as swscale maps them.
static IDENTITY: [u8; 256] = range_lut(0, 1, 1, 0);
static LUMA_TO_FULL: [u8; 256] = range_lut(16, 255, 219, 0);
static CHROMA_TO_FULL: [u8; 256] = range_lut(128, 255, 224, 128);

/// `(v - from) * num / den + to` for each sample value `v`, rounded and clamped, as a table.
const fn range_lut(from: i32, num: i32, den: i32, to: i32) -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut v: i32 = 0;
    while v < 256 {
        let x = ((v - from) * num + den / 2).div_euclid(den) + to;
        t[v as usize] = if x < 0 {
            0
        } else if x > 255 {
            255
        } else {
            x as u8
        };
        v += 1;
    }
    t
}

/// Scale `src` down to `ow × oh` (packed, appended to `out`), each output sample the mean of
/// the source samples its area covers (areas rounded to whole samples), mapped by `lut`. A
/// row of output costs one pass over the source rows it covers (summed into columns, which
/// the compiler vectorises) and a few additions per output sample.
fn area_scale(
    src: &Plane<'_>,
    ow: usize,
    oh: usize,
    lut: &[u8; 256],
    scratch: &mut AreaScratch,
    out: &mut Vec<u8>,
) {
    let (w, h) = (src.width, src.height);
    if w == 0 || h == 0 || ow == 0 || oh == 0 {
        out.resize(out.len() + ow * oh, 128);
        return;
    }
    // Each output sample covers at least one source sample: [i·n/on, (i+1)·n/on), widened
    // to one when the output is larger.
    let span = |i: usize, n: usize, on: usize| {
        let a = (i * n / on).min(n - 1);
        (a, ((i + 1) * n / on).clamp(a + 1, n))
    };
    scratch.spans.clear();
    scratch.spans.extend((0..ow).map(|x| {
        let (a, b) = span(x, w, ow);
        (a as u32, b as u32)
    }));
    let widest = scratch.spans.iter().map(|s| s.1 - s.0).max().unwrap_or(1) as usize;
    let mut inverse_rows = 0;
    for oy in 0..oh {
        let (y0, y1) = span(oy, h, oh);
        let y1 = y1.min(y0 + MAX_AREA_ROWS);
        let sums = &mut scratch.sums;
        sums.clear();
        sums.resize(w, 0);
        for y in y0..y1 {
            let row = &src.data[y * src.stride..y * src.stride + w];
            for (s, &p) in sums.iter_mut().zip(row) {
                *s += u16::from(p);
            }
        }
        let rows = (y1 - y0) as u32;
        if rows != inverse_rows {
            inverse_rows = rows;
            scratch.inverse.clear();
            scratch
                .inverse
                .extend((0..=widest as u32).map(|c| (1 << 16) / (rows * c.max(1))));
        }
        let inverse = &scratch.inverse;
        // One output sample: the mean of the column sums it covers, mapped by the table.
        let sample = |cols: &[u16]| {
            let sum: u32 = cols.iter().map(|&s| u32::from(s)).sum();
            lut[((sum * inverse[cols.len()] + (1 << 15)) >> 16).min(255) as usize]
        };
        if w % ow == 0 {
            // Every area is `w / ow` columns wide (720p or 1080p to 320 wide): in fixed
            // chunks, rather than a span per sample.
            out.extend(sums.chunks_exact(w / ow).map(sample));
        } else {
            out.extend(
                scratch
                    .spans
                    .iter()
                    .map(|&(x0, x1)| sample(&sums[x0 as usize..x1 as usize])),
            );
        }
    }
}

/// `p` as a baseline JPEG (FFmpeg's MJPEG encoder at a fixed quantiser: ~10 KB at 320 × 180).
pub fn encode_jpeg(p: &Picture) -> Result<Vec<u8>, MediaError> {
    crate::init();
    let err = |what: &str, e: ff::Error| MediaError::Other(format!("JPEG: {what}: {e}"));
    let (w, h) = (p.width as usize, p.height as usize);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    if w == 0 || h == 0 || p.data.len() != w * h + 2 * cw * ch {
        return Err(MediaError::Other(format!(
            "JPEG: a {w}x{h} picture needs {} bytes, has {}",
            w * h + 2 * cw * ch,
            p.data.len()
        )));
    }
    let codec = ff::encoder::find(ff::codec::Id::MJPEG)
        .ok_or_else(|| MediaError::Other("JPEG: no MJPEG encoder in this FFmpeg".into()))?;
    let mut enc = ff::codec::context::Context::new_with_codec(codec)
        .encoder()
        .video()
        .map_err(|e| err("encoder", e))?;
    enc.set_width(p.width);
    enc.set_height(p.height);
    enc.set_format(Pixel::YUVJ420P);
    enc.set_time_base(ff::Rational(1, 25));
    let mut opts = ff::Dictionary::new();
    // A fixed quantiser: the quality of one picture does not depend on a bitrate target.
    opts.set("qmin", "3");
    opts.set("qmax", "3");
    let mut enc = enc
        .open_as_with(codec, opts)
        .map_err(|e| err("open encoder", e))?;
    let mut frame = ff::frame::Video::new(Pixel::YUVJ420P, p.width, p.height);
    let planes = [
        (0, w, h, 0),
        (1, cw, ch, w * h),
        (2, cw, ch, w * h + cw * ch),
    ];
    for (plane, pw, ph, offset) in planes {
        let stride = frame.stride(plane);
        let dst = frame.data_mut(plane);
        for y in 0..ph {
            let src = &p.data[offset + y * pw..offset + (y + 1) * pw];
            dst[y * stride..y * stride + pw].copy_from_slice(src);
        }
    }
    frame.set_pts(Some(0));
    enc.send_frame(&frame).map_err(|e| err("encode", e))?;
    enc.send_eof().map_err(|e| err("encode", e))?;
    let mut packet = ff::Packet::empty();
    enc.receive_packet(&mut packet)
        .map_err(|e| err("encode", e))?;
    Ok(packet.data().map(<[u8]>::to_vec).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picture(t: f64, w: u32, h: u32) -> Picture {
        let (cw, ch) = (w.div_ceil(2) as usize, h.div_ceil(2) as usize);
        let mut data = vec![0u8; w as usize * h as usize + 2 * cw * ch];
        for (i, v) in data.iter_mut().enumerate().take((w * h) as usize) {
            *v = (i % 251) as u8;
        }
        Picture {
            t,
            width: w,
            height: h,
            data,
        }
    }

    #[test]
    fn outlines_are_drawn_in_red_where_the_boxes_are_and_nowhere_else() {
        let (w, h) = (64u32, 48u32);
        let mut p = picture(0.0, w, h);
        let before = p.data.clone();
        p.outline(&[[0.25, 0.25, 0.5, 0.5], [2.0, 2.0, 3.0, 3.0]]);
        let y = |p: &Picture, x: usize, yy: usize| p.data[yy * w as usize + x];
        // The box's corners and edges (x 16..=32, y 12..=24) are red's luma; inside and outside
        // the picture is as it was.
        for (x, yy) in [(16, 12), (32, 24), (24, 12), (16, 18), (17, 13), (31, 23)] {
            assert_eq!(y(&p, x, yy), 76, "({x}, {yy})");
        }
        for (x, yy) in [(24, 18), (0, 0), (40, 30), (63, 47)] {
            assert_eq!(y(&p, x, yy), before[yy * w as usize + x], "({x}, {yy})");
        }
        let v0 = (w * h) as usize + (w as usize / 2) * (h as usize / 2);
        assert_eq!(
            p.data[v0 + 6 * (w as usize / 2) + 8],
            255,
            "red's V at (16, 12)"
        );
        // A box off the picture is clamped to its edge; an empty one draws nothing.
        let mut q = picture(0.0, w, h);
        q.outline(&[[0.5, 0.5, 0.5, 0.9]]);
        assert_eq!(q.data, picture(0.0, w, h).data);
    }
    #[test]
    fn the_ring_keeps_the_newest_and_finds_the_onset() {
        let pics = Pictures::new(320, 1.0, 3);
        for t in [0.0, 1.0, 2.0, 3.0] {
            pics.push(picture(t, 4, 4));
        }
        assert_eq!(pics.latest_t(), Some(3.0));
        assert_eq!(pics.at(1.5).map(|p| p.t), Some(2.0), "first at or after");
        assert_eq!(
            pics.at(0.0).map(|p| p.t),
            Some(1.0),
            "0.0 fell out of the ring"
        );
        assert_eq!(
            pics.at(9.0).map(|p| p.t),
            Some(3.0),
            "the newest when none is later"
        );
    }

    #[test]
    fn areas_are_averaged_and_mapped_to_full_range() {
        // 4 x 4 of four 2 x 2 blocks, to 2 x 2: each block's mean.
        let data = [
            10, 20, 100, 100, //
            30, 40, 100, 100, //
            0, 0, 255, 255, //
            0, 1, 255, 255,
        ];
        let src = Plane {
            data: &data,
            stride: 4,
            width: 4,
            height: 4,
        };
        let mut scratch = AreaScratch::default();
        let mut out = vec![7];
        area_scale(&src, 2, 2, &IDENTITY, &mut scratch, &mut out);
        assert_eq!(out, [7, 25, 100, 0, 255], "appended, rounded means");
        out.clear();
        area_scale(&src, 2, 2, &LUMA_TO_FULL, &mut scratch, &mut out);
        assert_eq!(out, [10, 98, 0, 255]);
        // Limited-range extremes and middles.
        assert_eq!((LUMA_TO_FULL[16], LUMA_TO_FULL[235]), (0, 255));
        assert_eq!((CHROMA_TO_FULL[128], CHROMA_TO_FULL[240]), (128, 255));
        assert!(CHROMA_TO_FULL[16] <= 1);
        // 3 x 1 to 2 x 1: areas [0, 1) and [1, 3).
        let src = Plane {
            data: &[0, 100, 200],
            stride: 3,
            width: 3,
            height: 1,
        };
        out.clear();
        area_scale(&src, 2, 1, &IDENTITY, &mut scratch, &mut out);
        assert_eq!(out, [0, 150]);
    }

    /// The copy made here matches swscale's bilinear one closely (a 1280 x 720 test picture
    /// with fine detail).
    #[test]
    fn the_average_looks_like_swscales_bilinear_scale() {
        crate::init();
        let (w, h) = (1280u32, 720u32);
        let mut f = ff::frame::Video::new(Pixel::YUV420P, w, h);
        for plane in 0..3 {
            let (pw, ph) = if plane == 0 { (w, h) } else { (w / 2, h / 2) };
            let stride = f.stride(plane);
            let d = f.data_mut(plane);
            for y in 0..ph as usize {
                for x in 0..pw as usize {
                    // Stripes, a gradient and a checkerboard corner.
                    let v = if x < 64 && y < 64 {
                        if (x / 4 + y / 4) % 2 == 0 {
                            235
                        } else {
                            16
                        }
                    } else {
                        16 + ((x * 3 + y) % 220) as u8 / (1 + plane as u8)
                    };
                    d[y * stride + x] = v;
                }
            }
        }
        let pictures = Pictures::new(320, 1.0, 2);
        let mut capture = Capture::new(pictures.clone());
        capture.offer(&f, 0.0);
        let ours = pictures.latest().unwrap();
        assert_eq!((ours.width, ours.height), (320, 180));
        let mut sws = ff::software::scaling::Context::get(
            Pixel::YUV420P,
            w,
            h,
            Pixel::YUVJ420P,
            320,
            180,
            ff::software::scaling::Flags::BILINEAR,
        )
        .unwrap();
        let mut theirs = ff::frame::Video::empty();
        sws.run(&f, &mut theirs).unwrap();
        let mut diff = 0u64;
        let mut n = 0u64;
        let mut at = 0;
        for plane in 0..3 {
            let (pw, ph) = if plane == 0 { (320, 180) } else { (160, 90) };
            for y in 0..ph {
                for x in 0..pw {
                    let a = ours.data[at + y * pw + x];
                    let b = theirs.data(plane)[y * theirs.stride(plane) + x];
                    diff += u64::from(a.abs_diff(b));
                    n += 1;
                }
            }
            at += pw * ph;
        }
        let mean = diff as f64 / n as f64;
        assert!(mean < 3.0, "mean difference {mean:.2} per sample");
    }

    #[test]
    fn jpeg_has_the_picture_size() {
        let jpeg = encode_jpeg(&picture(0.0, 320, 180)).unwrap();
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "SOI");
        assert_eq!(&jpeg[jpeg.len() - 2..], &[0xFF, 0xD9], "EOI");
        // The baseline frame header (SOF0) carries height then width.
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        let hw = |i: usize| u16::from_be_bytes([jpeg[sof + i], jpeg[sof + i + 1]]);
        assert_eq!((hw(5), hw(7)), (180, 320));
        assert!(encode_jpeg(&Picture {
            data: vec![0; 3],
            ..picture(0.0, 320, 180)
        })
        .is_err());
    }
}
