//! Pictures for people: a small scaled copy of a stream's picture every so often, and JPEG
//! encoding of one on demand (the console's thumbnails, an alert's snapshot).
//!
//! The detectors read the decoder's pictures in place; this is the one place a picture is copied,
//! and only a downscaled one, once per [`Pictures::interval_s`] of media time (1 s by default): a
//! 720p picture scaled to 320 × 180 costs well under a millisecond, against the 25 frames a
//! second the decoder makes. The last [`Pictures::capacity`] copies are kept, so that an alert
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
    next_t: f64,
}

impl Capture {
    pub(crate) fn new(pictures: Arc<Pictures>) -> Self {
        Capture {
            pictures,
            sws: None,
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
        let key = (format, w, h);
        if self.sws.as_ref().map(|s| s.2) != Some(key) {
            let ow = self.pictures.width.min(w.max(2) & !1);
            let oh = ((u64::from(h) * u64::from(ow) / u64::from(w)).max(2) as u32) & !1;
            self.sws = ff::software::scaling::Context::get(
                format,
                w,
                h,
                Pixel::YUVJ420P,
                ow,
                oh,
                ff::software::scaling::Flags::BILINEAR,
            )
            .ok()
            .map(|s| (s, ff::frame::Video::empty(), key));
        }
        let Some((sws, out, _)) = self.sws.as_mut() else {
            return;
        };
        if sws.run(f, out).is_err() {
            return;
        }
        let mut data = self.pictures.take_buffer();
        data.clear();
        let (ow, oh) = (out.width() as usize, out.height() as usize);
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
        self.pictures.push(Picture {
            t,
            width: ow as u32,
            height: oh as u32,
            data,
        });
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
