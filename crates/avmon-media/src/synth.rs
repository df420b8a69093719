//! Synthetic test streams: H.264 + AAC in MPEG-TS through libavcodec, with defects injected at
//! given media times, written to a file or sent to `udp://` in real time.
//!
//! The picture and sound depend on the [`Content`] (`--content`):
//! - `pan` (default): a panning checker-and-ramp texture and a bouncing box; a tone per channel
//!   (880 Hz, 1320 Hz, …) at a level that makes the programme about −23 LUFS (EBU R128's target)
//!   whatever the channel count.
//! - `sync`: a broadcast-style A/V sync test ("flash and beep"): a dark grey picture with a small
//!   bouncing box, and once per second (from 1 s on) one full-frame white flash frame; the sound is
//!   silent except for a 1 kHz beep (amplitude 0.5, starting at phase 0) one frame long, starting at
//!   exactly the flash frame's presentation time (plus `av_offset_ms`).
//! - `detail`: fine high-contrast detail, slow pan (hard for encoders, easy motion);
//! - `motion`: a noise-like blob texture scrolling fast (global motion);
//! - `flat`: a talking head: soft gradients and a slowly moving bright "face" with two eyes and a
//!   mouth that opens and closes (low detail, small local motion);
//! - `noise`: the `flat` scene under temporal film-grain-like noise.
//!
//! The non-`sync` contents carry the `pan` tones. `av_offset_ms` (`--av-offset`) delays the audio
//! *content* by that many milliseconds (negative: audio early), as a lip-sync fault does, while the
//! timestamps of both streams stay consistent.
//!
//! Defects (`KIND[:PARAM]@START-END`):
//! - `black`: a black picture;
//! - `freeze`: the picture at the defect's start repeats (the encoder still refines it, as a real
//!   encoder does, so frozen frames are not bit-identical after decoding);
//! - `silence`: digital silence on every channel;
//! - `dropout`: nothing at all is sent (to a file: a gap in the timestamps of every stream);
//! - `gain:DB`: the sound `DB` dB louder (negative: quieter; default +12), a loudness step;
//! - `clip:DB`: the tone driven `DB` dB (default +30) into hard clipping at full scale;
//! - `deadch:N`: channel `N` (0-based, default 1) digitally silent, the others unchanged;
//! - `gap`: every channel digitally silent (meant for short gaps, e.g. `gap@10-10.1`);
//! - `click:AMP`: a rectangular pulse of `AMP` (default 0.5) added to every channel over the range,
//!   a discontinuity at each end (e.g. `click@10-10.005`);
//! - `nocaptions`: with `captions`, the pictures carry no caption data (an inserter that
//!   stopped).
//!
//! With `captions` (`--captions`) the pictures carry closed captions as ATSC A/53 user data
//! (libx264 writes the frames' `cc_data` into SEI): every 2 s a line `AVMON 12.0` (its media
//! time) on CEA-608 CC1 (roll-up) and on CEA-708 service 1.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ff::ffi;
use ffmpeg_next as ff;

use crate::MediaError;

/// A defect a synthetic stream can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefectKind {
    Black,
    Freeze,
    Silence,
    Dropout,
    /// The sound louder by `param` dB.
    Gain,
    /// The tone driven `param` dB into hard clipping.
    Clip,
    /// Channel `param` silent.
    DeadChannel,
    /// Every channel silent (a short gap).
    Gap,
    /// A pulse of `param` added to every channel.
    Click,
    /// No caption data in the pictures.
    NoCaptions,
}

impl DefectKind {
    /// The parameter when none is given, or `None` for kinds that take none.
    fn default_param(self) -> Option<f64> {
        match self {
            DefectKind::Gain => Some(12.0),
            DefectKind::Clip => Some(30.0),
            DefectKind::DeadChannel => Some(1.0),
            DefectKind::Click => Some(0.5),
            _ => None,
        }
    }
}

impl FromStr for DefectKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "black" => Ok(DefectKind::Black),
            "freeze" => Ok(DefectKind::Freeze),
            "silence" => Ok(DefectKind::Silence),
            "dropout" => Ok(DefectKind::Dropout),
            "gain" => Ok(DefectKind::Gain),
            "clip" => Ok(DefectKind::Clip),
            "deadch" => Ok(DefectKind::DeadChannel),
            "gap" => Ok(DefectKind::Gap),
            "click" => Ok(DefectKind::Click),
            "nocaptions" => Ok(DefectKind::NoCaptions),
            other => Err(format!(
                "unknown defect {other:?} (expected black, freeze, silence, dropout, gain, clip, \
                 deadch, gap, click or nocaptions)"
            )),
        }
    }
}

/// One injected defect over `[start, end)` media seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Defect {
    pub kind: DefectKind,
    pub start: f64,
    pub end: f64,
    /// The kind's parameter (`gain:+12` → 12.0); 0 for kinds without one.
    pub param: f64,
}

impl FromStr for Defect {
    type Err = String;
    /// `KIND[:PARAM]@START-END`, e.g. `freeze@8-12`, `black@3.5-6` or `gain:-10@5-15`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || {
            format!("bad defect {s:?}: expected KIND[:PARAM]@START-END, e.g. freeze@8-12 or gain:+12@10-20")
        };
        let (kind, range) = s.split_once('@').ok_or_else(err)?;
        let (a, b) = range.split_once('-').ok_or_else(err)?;
        let start: f64 = a.trim().parse().map_err(|_| err())?;
        let end: f64 = b.trim().parse().map_err(|_| err())?;
        if !(start >= 0.0 && end > start && end.is_finite()) {
            return Err(format!("bad defect {s:?}: need 0 <= START < END"));
        }
        let (kind, param) = match kind.split_once(':') {
            Some((k, p)) => (k, Some(p)),
            None => (kind, None),
        };
        let kind: DefectKind = kind.trim().parse()?;
        let param = match (kind.default_param(), param) {
            (None, Some(_)) => return Err(format!("bad defect {s:?}: {kind:?} takes no :PARAM")),
            (None, None) => 0.0,
            (Some(d), None) => d,
            (Some(_), Some(p)) => {
                let p = p.trim();
                let v: f64 = p
                    .strip_prefix('+')
                    .unwrap_or(p)
                    .parse()
                    .map_err(|_| err())?;
                if !v.is_finite() {
                    return Err(err());
                }
                v
            }
        };
        if kind == DefectKind::DeadChannel && !(param >= 0.0 && param.fract() == 0.0) {
            return Err(format!(
                "bad defect {s:?}: deadch:N needs a channel index N >= 0"
            ));
        }
        Ok(Defect {
            kind,
            start,
            end,
            param,
        })
    }
}

/// What a synthetic stream shows and sounds like (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Content {
    #[default]
    Pan,
    Sync,
    Detail,
    Motion,
    Flat,
    Noise,
}

impl Content {
    /// Every content's name, as `--content` takes it.
    pub const NAMES: &'static [&'static str] =
        &["pan", "sync", "detail", "motion", "flat", "noise"];
}

impl FromStr for Content {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "pan" => Content::Pan,
            "sync" => Content::Sync,
            "detail" => Content::Detail,
            "motion" => Content::Motion,
            "flat" => Content::Flat,
            "noise" => Content::Noise,
            other => {
                return Err(format!(
                    "unknown content {other:?} (expected one of {})",
                    Content::NAMES.join(", ")
                ))
            }
        })
    }
}

/// Largest `av_offset_ms` magnitude accepted.
pub const MAX_AV_OFFSET_MS: f64 = 10_000.0;

/// Summed BS.1770 channel weights of FFmpeg's default layout for `channels` (LFE 0, surrounds
/// 1.41), so the synthetic programme lands near −23 LUFS whatever the channel count.
fn loudness_weight(channels: u32) -> f64 {
    match channels {
        0 | 1 => 1.0,
        2 | 3 => 2.0,              // stereo, 2.1
        4 => 4.0,                  // 4.0: FL FR FC BC
        5 | 6 => 3.0 + 2.0 * 1.41, // 5.0, 5.1: FL FR FC (LFE) BL BR
        7 => 4.0 + 2.0 * 1.41,     // 6.1: FL FR FC LFE BC SL SR
        n => f64::from(n - 6) + 3.0 + 2.0 * 1.41,
    }
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct SynthSpec {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// Media seconds to generate; `None` runs until stopped.
    pub duration: Option<f64>,
    pub sample_rate: u32,
    pub channels: u32,
    pub defects: Vec<Defect>,
    /// When set, the defect schedule repeats every this many seconds (for demos and soak runs).
    pub repeat_every: Option<f64>,
    /// Pace output to the wall clock (always on for network outputs).
    pub realtime: bool,
    /// x264 preset.
    pub preset: String,
    /// Seconds between keyframes (the GOP length); at least one frame.
    pub gop_s: f64,
    /// What the picture and sound show.
    pub content: Content,
    /// Delay of the audio content relative to the video, milliseconds (positive: audio late).
    pub av_offset_ms: f64,
    /// The pictures carry closed captions (see the module docs).
    pub captions: bool,
}

impl Default for SynthSpec {
    fn default() -> Self {
        SynthSpec {
            width: 1280,
            height: 720,
            fps: 25,
            duration: Some(20.0),
            sample_rate: 48_000,
            channels: 2,
            defects: Vec::new(),
            repeat_every: None,
            realtime: false,
            preset: "veryfast".into(),
            gop_s: 2.0,
            content: Content::Pan,
            av_offset_ms: 0.0,
            captions: false,
        }
    }
}

impl SynthSpec {
    /// Frames between keyframes: `gop_s` at `fps`, at least 1.
    pub fn gop_frames(&self) -> u32 {
        let frames = (self.gop_s * f64::from(self.fps)).round();
        if frames.is_finite() && frames >= 1.0 {
            frames.min(f64::from(u32::MAX)) as u32
        } else {
            1
        }
    }

    /// The defect of `kind` active at media time `t`, if any.
    fn active(&self, kind: DefectKind, t: f64) -> Option<&Defect> {
        self.defects_at(kind, t).next()
    }

    /// Every defect of `kind` active at media time `t`.
    fn defects_at(&self, kind: DefectKind, t: f64) -> impl Iterator<Item = &Defect> {
        let t = match self.repeat_every {
            Some(p) if p > 0.0 => t % p,
            _ => t,
        };
        self.defects
            .iter()
            .filter(move |d| d.kind == kind && t >= d.start && t < d.end)
    }

    /// Whether frame `i` of the `sync` content is a flash frame: once per second from 1 s on.
    fn is_flash(&self, i: u64) -> bool {
        let fps = u64::from(self.fps);
        i >= fps && i.checked_rem(fps) == Some(0)
    }

    /// The audio content of channel `c` at stream time `n` seconds (before defects); tones have
    /// peak amplitude `level`.
    fn content_sample(&self, c: usize, n: f64, level: f64) -> f64 {
        // The content heard at `n` is what the video showed `av_offset_ms` earlier.
        let at = n - self.av_offset_ms / 1000.0;
        match self.content {
            Content::Sync => {
                // A beep of one frame at each flash frame's time: seconds 1, 2, 3, ...
                let k = at.floor();
                let since = at - k;
                if k >= 1.0 && since < 1.0 / f64::from(self.fps) {
                    0.5 * (2.0 * std::f64::consts::PI * 1000.0 * since).sin()
                } else {
                    0.0
                }
            }
            _ => {
                let hz = 440.0 * (c + 2) as f64;
                level * (2.0 * std::f64::consts::PI * hz * at).sin()
            }
        }
    }
}

/// What was generated.
#[derive(Clone, Debug, Default)]
pub struct SynthStats {
    pub video_frames: u64,
    pub audio_frames: u64,
    pub duration_s: f64,
}

fn err(what: &str, e: impl std::fmt::Display) -> MediaError {
    MediaError::Other(format!("synth: {what}: {e}"))
}

/// Closed captions for synthetic pictures (see the module docs).
struct Captions {
    writer: cea708_types::CCDataWriter,
    rate: cea708_types::Framerate,
    /// The next line is due at this media time.
    next: f64,
    seq: u8,
    buf: Vec<u8>,
}

impl Captions {
    fn new(fps: u32) -> Self {
        Captions {
            writer: cea708_types::CCDataWriter::default(),
            rate: cea708_types::Framerate::new(fps.max(1), 1),
            next: 0.0,
            seq: 0,
            buf: Vec::new(),
        }
    }

    /// A CEA-608 byte with odd parity.
    fn parity(b: u8) -> u8 {
        let b = b & 0x7F;
        if b.count_ones().is_multiple_of(2) {
            b | 0x80
        } else {
            b
        }
    }

    /// Queue the line for media time `t`, on CC1 and 708 service 1.
    fn line(&mut self, t: f64) {
        use cea708_types::{tables::Code, DTVCCPacket, Service};
        let text = format!("AVMON {t:.1}");
        // Roll-up 2 rows, carriage return (control codes sent twice), then the characters.
        for pair in [[0x14, 0x25], [0x14, 0x25], [0x14, 0x2D], [0x14, 0x2D]] {
            self.writer.push_cea608(cea708_types::Cea608::Field1(
                Self::parity(pair[0]),
                Self::parity(pair[1]),
            ));
        }
        let bytes = text.as_bytes();
        for pair in bytes.chunks(2) {
            let b1 = pair.get(1).copied().unwrap_or(0);
            self.writer.push_cea608(cea708_types::Cea608::Field1(
                Self::parity(pair[0]),
                if b1 == 0 { 0x80 } else { Self::parity(b1) },
            ));
        }
        let mut service = Service::new(1);
        let mut packet = DTVCCPacket::new(self.seq);
        self.seq = (self.seq + 1) % 4;
        for c in text.chars() {
            if let Some(code) = Code::from_char(c) {
                let _ = service.push_code(&code);
            }
        }
        if packet.push_service(service).is_ok() {
            self.writer.push_packet(packet);
        }
    }

    /// Attach this frame's `cc_data` to `frame` (when `on`; an inserter that stopped sends none).
    fn frame(&mut self, frame: &mut ff::frame::Video, t: f64, on: bool) {
        // Side data from the last frame must not carry over.
        frame.remove_side_data(ff::frame::side_data::Type::A53CC);
        if !on {
            self.writer.flush();
            self.next = t;
            return;
        }
        if t + 1e-9 >= self.next {
            self.line(t);
            self.next = t + 2.0;
        }
        self.buf.clear();
        if self.writer.write(self.rate, &mut self.buf).is_err() || self.buf.len() <= 2 {
            return;
        }
        // FFmpeg's A53_CC side data is the triplets alone (the encoder writes the header).
        let triplets = &self.buf[2..];
        // SAFETY: the frame is valid; av_frame_new_side_data returns null or side data of
        // exactly `len` bytes, which the copy fills.
        unsafe {
            let sd = ffi::av_frame_new_side_data(
                frame.as_mut_ptr(),
                ffi::AVFrameSideDataType::AV_FRAME_DATA_A53_CC,
                triplets.len() as _,
            );
            if !sd.is_null() {
                std::ptr::copy_nonoverlapping(triplets.as_ptr(), (*sd).data, triplets.len());
            }
        }
    }
}

/// Draw the picture of `spec.content` for media time `t` (which a freeze holds) into a YUV 4:2:0
/// frame.
fn draw(frame: &mut ff::frame::Video, spec: &SynthSpec, t: f64, black: bool) {
    let i = (t * f64::from(spec.fps)).round() as u64;
    match spec.content {
        _ if black => draw_pan(frame, t, true),
        Content::Pan => draw_pan(frame, t, false),
        Content::Sync => draw_sync(frame, t, spec.is_flash(i)),
        c => draw_texture(frame, c, t),
    }
}

/// A cheap integer hash of a position, for noise-like textures.
#[inline]
fn hash2(x: u32, y: u32) -> u32 {
    let mut h = x.wrapping_mul(0x9E37_79B1) ^ y.wrapping_mul(0x85EB_CA77);
    h ^= h >> 15;
    h = h.wrapping_mul(0xC2B2_AE3D);
    h ^ (h >> 13)
}

/// Fill the chroma planes of a 4:2:0 frame with one value each.
fn fill_chroma(frame: &mut ff::frame::Video, u: u8, v: u8) {
    let (w, h) = (frame.width() as usize / 2, frame.height() as usize / 2);
    for (plane, value) in [(1, u), (2, v)] {
        let stride = frame.stride(plane);
        let data = frame.data_mut(plane);
        for y in 0..h {
            data[y * stride..y * stride + w].fill(value);
        }
    }
}

/// The `sync` picture: dark grey with a bouncing box, or a full-frame white flash.
fn draw_sync(frame: &mut ff::frame::Video, t: f64, flash: bool) {
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let span_x = w.saturating_sub(w / 8).max(1);
    let period = 2.0 * span_x as f64;
    let px = (t * 300.0) % period;
    let bx = if px < span_x as f64 { px } else { period - px } as usize;
    let (by, bw, bh) = (h / 2, w / 8, h / 6);
    let stride = frame.stride(0);
    let data = frame.data_mut(0);
    for y in 0..h {
        let row = &mut data[y * stride..y * stride + w];
        if flash {
            row.fill(235);
        } else {
            row.fill(64);
            if y >= by && y < by + bh {
                row[bx..(bx + bw).min(w)].fill(150);
            }
        }
    }
    fill_chroma(frame, 128, 128);
}

/// The `detail`, `motion`, `flat` and `noise` pictures.
fn draw_texture(frame: &mut ff::frame::Video, content: Content, t: f64) {
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let stride = frame.stride(0);
    // Per-picture constants: pan offsets, the blob of `flat`, the grain seed of `noise`.
    let (dx, dy) = match content {
        Content::Detail => ((t * 12.0) as u32, (t * 5.0) as u32),
        Content::Motion => ((t * 640.0) as u32, (t * 180.0) as u32),
        _ => (0, 0),
    };
    let (cx, cy) = (
        (w as f64 * (0.5 + 0.15 * (t * 0.7).sin())) as i64,
        (h as f64 * (0.45 + 0.05 * (t * 1.1).sin())) as i64,
    );
    let r = (h / 4).max(1) as i64;
    let seed = (t * 1000.0) as u32;
    let data = frame.data_mut(0);
    for y in 0..h {
        let row = &mut data[y * stride..y * stride + w];
        let yy = y as u32 + dy;
        // Soft vertical gradient, shared by flat and noise.
        let grad_y = (y * 40 / h) as i64;
        match content {
            Content::Detail => {
                for (x, p) in row.iter_mut().enumerate() {
                    let xx = x as u32 + dx;
                    let fine = ((xx ^ yy) & 1) * 60;
                    let coarse = (((xx >> 5) ^ (yy >> 5)) & 1) * 40;
                    *p = (40 + fine + coarse + (hash2(xx, yy) & 63)) as u8;
                }
            }
            Content::Motion => {
                for (x, p) in row.iter_mut().enumerate() {
                    let xx = x as u32 + dx;
                    *p = (40 + hash2(xx >> 2, yy >> 2) % 160) as u8;
                }
            }
            _ => {
                let ddy = (y as i64 - cy) * (y as i64 - cy);
                for (x, p) in row.iter_mut().enumerate() {
                    let mut v = 60 + (x * 80 / w) as i64 + grad_y;
                    let (fx, fy) = (x as i64 - cx, y as i64 - cy);
                    let d2 = fx * fx + ddy;
                    if d2 < r * r {
                        v += (r * r - d2) * 70 / (r * r);
                        // Eyes, and a mouth that opens and closes as the face talks.
                        let eye = |ex: i64| {
                            let (a, b) = (fx - ex, fy + r / 4);
                            a * a + b * b < (r / 8) * (r / 8)
                        };
                        let mouth_h = (r as f64 / 10.0 * (1.0 + (t * 7.0).sin())) as i64;
                        if eye(-r / 3)
                            || eye(r / 3)
                            || (fx.abs() < r / 3 && (fy - r / 3).abs() <= mouth_h)
                        {
                            v -= 70;
                        }
                    }
                    if content == Content::Noise {
                        v += i64::from(hash2(x as u32 ^ seed, y as u32) & 31) - 16;
                    }
                    *p = v.clamp(16, 235) as u8;
                }
            }
        }
    }
    let shift = (t * 10.0) as u8;
    fill_chroma(frame, 120 + (shift & 7), 136);
}

/// The `pan` picture for media time `t` (or black).
fn draw_pan(frame: &mut ff::frame::Video, t: f64, black: bool) {
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let (dx, dy) = ((t * 96.0) as usize, (t * 40.0) as usize);
    // A box bouncing across the picture.
    let span_x = w.saturating_sub(w / 8).max(1);
    let period = 2.0 * span_x as f64;
    let px = (t * 220.0) % period;
    let bx = if px < span_x as f64 { px } else { period - px } as usize;
    let by = h / 3;
    let (bw, bh) = (w / 8, h / 4);
    for plane in 0..3 {
        let stride = frame.stride(plane);
        let (pw, ph) = if plane == 0 { (w, h) } else { (w / 2, h / 2) };
        let data = frame.data_mut(plane);
        for y in 0..ph {
            let row = &mut data[y * stride..y * stride + pw];
            if black {
                row.fill(if plane == 0 { 16 } else { 128 });
                continue;
            }
            if plane == 0 {
                let yy = y + dy;
                for (x, p) in row.iter_mut().enumerate() {
                    let xx = x + dx;
                    let checker = (((xx >> 4) ^ (yy >> 4)) & 1) as u8 * 70;
                    let ramp = ((xx * 3 + yy * 2) & 63) as u8;
                    let in_box = x >= bx && x < bx + bw && y >= by && y < by + bh;
                    *p = if in_box { 220 } else { 40 + checker + ramp };
                }
            } else {
                let base = if plane == 1 { 110 } else { 150 };
                let shift = (t * 10.0) as usize;
                for (x, p) in row.iter_mut().enumerate() {
                    *p = base + (((x + y + shift) >> 3) & 15) as u8;
                }
            }
        }
    }
}

/// Allocate an audio frame of planar float samples.
fn audio_frame(samples: usize, channels: u32, rate: u32) -> Result<ff::frame::Audio, MediaError> {
    let mut f = ff::frame::Audio::empty();
    // SAFETY: fill in the fields av_frame_get_buffer needs on a fresh frame, then allocate.
    unsafe {
        let p = f.as_mut_ptr();
        (*p).format = ffi::AVSampleFormat::AV_SAMPLE_FMT_FLTP as i32;
        (*p).nb_samples = samples as i32;
        (*p).sample_rate = rate as i32;
        ffi::av_channel_layout_default(&mut (*p).ch_layout, channels as i32);
        #[allow(deprecated)]
        {
            (*p).channels = channels as i32;
            (*p).channel_layout = (*p).ch_layout.u.mask;
        }
        let r = ffi::av_frame_get_buffer(p, 0);
        if r < 0 {
            return Err(err("audio frame", ff::Error::from(r)));
        }
    }
    Ok(f)
}

/// Generate a stream to `output` (a file path or a URL such as `udp://127.0.0.1:5000`) until the
/// spec's duration is reached or `stop` is set.
pub fn generate(
    output: &str,
    spec: &SynthSpec,
    stop: Arc<AtomicBool>,
) -> Result<SynthStats, MediaError> {
    crate::init();
    if spec.width < 16 || spec.height < 16 || spec.width % 2 == 1 || spec.height % 2 == 1 {
        return Err(MediaError::Other(
            "synth: width and height must be even and at least 16".into(),
        ));
    }
    if spec.channels == 0 || spec.channels > 8 {
        return Err(MediaError::Other("synth: channels must be 1..=8".into()));
    }
    if let Some(d) = spec
        .defects
        .iter()
        .find(|d| d.kind == DefectKind::DeadChannel && d.param >= f64::from(spec.channels))
    {
        return Err(MediaError::Other(format!(
            "synth: deadch:{} names a channel beyond the {} generated",
            d.param, spec.channels
        )));
    }
    if spec.fps == 0 || spec.fps > 120 {
        return Err(MediaError::Other("synth: fps must be 1..=120".into()));
    }
    if !(spec.av_offset_ms.is_finite() && spec.av_offset_ms.abs() <= MAX_AV_OFFSET_MS) {
        return Err(MediaError::Other(format!(
            "synth: the A/V offset must be within ±{MAX_AV_OFFSET_MS} ms (got {})",
            spec.av_offset_ms
        )));
    }
    let network = output.contains("://") && !output.starts_with("file:");
    let realtime = spec.realtime || network;
    let url = if output.starts_with("udp://") && !output.contains("pkt_size") {
        format!(
            "{output}{}pkt_size=1316",
            if output.contains('?') { '&' } else { '?' }
        )
    } else {
        output.to_string()
    };
    let mut octx = ff::format::output_as(&url, "mpegts").map_err(|e| err(&url, e))?;
    // An SRT listener serves one caller: when it leaves, generation ends (so that the caller
    // of this function can listen for the next one).
    let listener = url.starts_with("srt://") && url.contains("mode=listener");

    // Video: H.264 through libx264.
    let vcodec = ff::encoder::find_by_name("libx264")
        .or_else(|| ff::encoder::find(ff::codec::Id::H264))
        .ok_or_else(|| err("video", "no H.264 encoder in this FFmpeg"))?;
    let mut venc = ff::codec::context::Context::new_with_codec(vcodec)
        .encoder()
        .video()
        .map_err(|e| err("video encoder", e))?;
    venc.set_width(spec.width);
    venc.set_height(spec.height);
    venc.set_format(ff::format::Pixel::YUV420P);
    venc.set_time_base(ff::Rational(1, spec.fps as i32));
    venc.set_frame_rate(Some(ff::Rational(spec.fps as i32, 1)));
    venc.set_gop(spec.gop_frames());
    let mut vopts = ff::Dictionary::new();
    vopts.set("preset", &spec.preset);
    vopts.set("threads", "1");
    if realtime {
        vopts.set("tune", "zerolatency");
    }
    let mut venc = venc
        .open_as_with(vcodec, vopts)
        .map_err(|e| err("open H.264 encoder", e))?;

    // Audio: AAC, FFmpeg's native encoder.
    let acodec = ff::encoder::find(ff::codec::Id::AAC)
        .ok_or_else(|| err("audio", "no AAC encoder in this FFmpeg"))?;
    let mut aenc = ff::codec::context::Context::new_with_codec(acodec)
        .encoder()
        .audio()
        .map_err(|e| err("audio encoder", e))?;
    aenc.set_rate(spec.sample_rate as i32);
    aenc.set_format(ff::format::Sample::F32(ff::format::sample::Type::Planar));
    aenc.set_time_base(ff::Rational(1, spec.sample_rate as i32));
    aenc.set_bit_rate(64_000 * spec.channels as usize);
    // SAFETY: set both the new and the legacy channel layout fields consistently.
    unsafe {
        let p = aenc.as_mut_ptr();
        ffi::av_channel_layout_default(&mut (*p).ch_layout, spec.channels as i32);
        #[allow(deprecated)]
        {
            (*p).channels = spec.channels as i32;
            (*p).channel_layout = (*p).ch_layout.u.mask;
        }
    }
    let mut aenc = aenc
        .open_as(acodec)
        .map_err(|e| err("open AAC encoder", e))?;
    let frame_size = (aenc.frame_size() as usize).max(1024);

    {
        let mut vs = octx
            .add_stream(vcodec)
            .map_err(|e| err("video stream", e))?;
        vs.set_parameters(&venc);
        vs.set_time_base(ff::Rational(1, 90_000));
    }
    {
        let mut aus = octx
            .add_stream(acodec)
            .map_err(|e| err("audio stream", e))?;
        aus.set_parameters(&aenc);
        aus.set_time_base(ff::Rational(1, 90_000));
    }
    // A PCR every 20 ms: TR 101 290 (2.3a) allows at most 40 ms between PCRs, and the muxer's
    // own default for VBR streams is one every other picture (80 ms at 25 fps).
    let mut mux_opts = ff::Dictionary::new();
    mux_opts.set("pcr_period", "20");
    octx.write_header_with(mux_opts)
        .map_err(|e| err("write header", e))?;
    let vtb_out = octx
        .stream(0)
        .map(|s| s.time_base())
        .unwrap_or(ff::Rational(1, 90_000));
    let atb_out = octx
        .stream(1)
        .map(|s| s.time_base())
        .unwrap_or(ff::Rational(1, 90_000));

    let mut vframe = ff::frame::Video::new(ff::format::Pixel::YUV420P, spec.width, spec.height);
    let mut aframe = audio_frame(frame_size, spec.channels, spec.sample_rate)?;
    let mut packet = ff::Packet::empty();
    let mut stats = SynthStats::default();
    let started = Instant::now();
    let total_frames = spec.duration.map(|d| (d * spec.fps as f64).round() as u64);
    let mut audio_pos: u64 = 0; // samples generated so far
    let mut frozen_at: Option<f64> = None;
    // Peak amplitude of each channel's tone: a sine of peak A has mean square A²/2, and
    // −23 LUFS = −0.691 + 10·log10(Σ weight·A²/2).
    let level = (2.0 * 10f64.powf((-23.0 + 0.691) / 10.0) / loudness_weight(spec.channels)).sqrt();

    let mut captions = spec.captions.then(|| Captions::new(spec.fps));
    let mut i: u64 = 0;
    loop {
        if stop.load(Ordering::Relaxed) || total_frames.is_some_and(|n| i >= n) {
            break;
        }
        let t = i as f64 / spec.fps as f64;
        if realtime {
            let due = started + Duration::from_secs_f64(t);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let dropout = spec.active(DefectKind::Dropout, t).is_some();
        if !dropout {
            let black = spec.active(DefectKind::Black, t).is_some();
            let draw_t = match (spec.active(DefectKind::Freeze, t), frozen_at) {
                (Some(_), Some(f)) => f,
                (Some(_), None) => {
                    frozen_at = Some(t);
                    t
                }
                (None, _) => {
                    frozen_at = None;
                    t
                }
            };
            draw(&mut vframe, spec, draw_t, black);
            if let Some(c) = captions.as_mut() {
                c.frame(
                    &mut vframe,
                    t,
                    spec.active(DefectKind::NoCaptions, t).is_none(),
                );
            }
            vframe.set_pts(Some(i as i64));
            venc.send_frame(&vframe)
                .map_err(|e| err("encode video", e))?;
            stats.video_frames += 1;
            write_packets(
                &mut venc,
                &mut packet,
                0,
                ff::Rational(1, spec.fps as i32),
                vtb_out,
                &mut octx,
                listener,
            )?;
        }
        // Audio up to the end of this video frame.
        let until = ((i + 1) as f64 / spec.fps as f64 * spec.sample_rate as f64) as u64;
        while audio_pos + frame_size as u64 <= until {
            let at = audio_pos as f64 / spec.sample_rate as f64;
            let skip = spec.active(DefectKind::Dropout, at).is_some();
            if !skip {
                for c in 0..spec.channels as usize {
                    let plane = aframe.plane_mut::<f32>(c);
                    for (k, s) in plane.iter_mut().enumerate() {
                        let n = (audio_pos + k as u64) as f64 / spec.sample_rate as f64;
                        *s = audio_sample(spec, c, n, spec.content_sample(c, n, level));
                    }
                }
                aframe.set_pts(Some(audio_pos as i64));
                aenc.send_frame(&aframe)
                    .map_err(|e| err("encode audio", e))?;
                stats.audio_frames += 1;
                write_packets(
                    &mut aenc,
                    &mut packet,
                    1,
                    ff::Rational(1, spec.sample_rate as i32),
                    atb_out,
                    &mut octx,
                    listener,
                )?;
            }
            audio_pos += frame_size as u64;
        }
        i += 1;
    }
    venc.send_eof().map_err(|e| err("flush video", e))?;
    write_packets(
        &mut venc,
        &mut packet,
        0,
        ff::Rational(1, spec.fps as i32),
        vtb_out,
        &mut octx,
        listener,
    )?;
    aenc.send_eof().map_err(|e| err("flush audio", e))?;
    write_packets(
        &mut aenc,
        &mut packet,
        1,
        ff::Rational(1, spec.sample_rate as i32),
        atb_out,
        &mut octx,
        listener,
    )?;
    octx.write_trailer().map_err(|e| err("write trailer", e))?;
    stats.duration_s = i as f64 / spec.fps as f64;
    Ok(stats)
}

/// Sample of channel `c` at media time `t`, whose clean value is `clean`, with the audio defects
/// active at `t` applied.
fn audio_sample(spec: &SynthSpec, c: usize, t: f64, clean: f64) -> f32 {
    let mut x = clean;
    if spec.active(DefectKind::Silence, t).is_some() || spec.active(DefectKind::Gap, t).is_some() {
        return 0.0;
    }
    if spec
        .defects_at(DefectKind::DeadChannel, t)
        .any(|d| d.param as usize == c)
    {
        return 0.0;
    }
    if let Some(d) = spec.active(DefectKind::Gain, t) {
        x *= 10f64.powf(d.param / 20.0);
    }
    if let Some(d) = spec.active(DefectKind::Clip, t) {
        x = (x * 10f64.powf(d.param / 20.0)).clamp(-1.0, 1.0);
    }
    if let Some(d) = spec.active(DefectKind::Click, t) {
        x += d.param;
    }
    x as f32
}

fn write_packets(
    enc: &mut ff::encoder::Encoder,
    packet: &mut ff::Packet,
    stream: usize,
    from: ff::Rational,
    to: ff::Rational,
    octx: &mut ff::format::context::Output,
    listener: bool,
) -> Result<(), MediaError> {
    while enc.receive_packet(packet).is_ok() {
        packet.set_stream(stream);
        packet.rescale_ts(from, to);
        match packet.write_interleaved(octx) {
            Ok(()) => {}
            // A listener whose caller went away is done: its caller may listen again.
            Err(e) if listener => return Err(err("write packet (the caller left)", e)),
            // A network peer that is not listening is not an error for a generator.
            Err(e) => tracing::debug!("synth: write packet: {e}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defects_parse() {
        let d: Defect = "freeze@8-12".parse().unwrap();
        assert_eq!(
            d,
            Defect {
                kind: DefectKind::Freeze,
                start: 8.0,
                end: 12.0,
                param: 0.0,
            }
        );
        let d: Defect = "gain:+6.5@10-20".parse().unwrap();
        assert_eq!((d.kind, d.param, d.start), (DefectKind::Gain, 6.5, 10.0));
        let d: Defect = "gain:-10@1-2".parse().unwrap();
        assert_eq!(d.param, -10.0);
        assert_eq!("gain@1-2".parse::<Defect>().unwrap().param, 12.0);
        assert_eq!("deadch:0@1-2".parse::<Defect>().unwrap().param, 0.0);
        assert_eq!(
            "click@1-1.005".parse::<Defect>().unwrap().kind,
            DefectKind::Click
        );
        assert!("deadch:1.5@1-2".parse::<Defect>().is_err());
        assert!("deadch:-1@1-2".parse::<Defect>().is_err());
        assert!("gain:loud@1-2".parse::<Defect>().is_err());
        assert!("black:3@1-2".parse::<Defect>().is_err());
        assert!("freeze@12-8".parse::<Defect>().is_err());
        assert!("smoke@1-2".parse::<Defect>().is_err());
        assert!("black".parse::<Defect>().is_err());
    }

    #[test]
    fn contents_parse() {
        for name in Content::NAMES {
            assert!(name.parse::<Content>().is_ok(), "{name}");
        }
        let e = "bars".parse::<Content>().unwrap_err();
        assert!(e.contains("pan, sync"), "{e}");
    }

    #[test]
    fn sync_beep_starts_at_the_flash_time_plus_the_offset() {
        let spec = SynthSpec {
            content: Content::Sync,
            fps: 25,
            av_offset_ms: 80.0,
            ..SynthSpec::default()
        };
        assert!(spec.is_flash(25) && spec.is_flash(50));
        assert!(!spec.is_flash(0) && !spec.is_flash(26));
        // Silent until 1.080 s, a 1 kHz burst for one frame (40 ms), silent again.
        assert_eq!(spec.content_sample(0, 1.079, 0.25), 0.0);
        assert!(spec.content_sample(0, 1.08025, 0.25).abs() > 0.3);
        assert!(spec.content_sample(1, 1.10025, 0.25).abs() > 0.3);
        assert_eq!(spec.content_sample(0, 1.121, 0.25), 0.0);
        assert_eq!(
            spec.content_sample(0, 0.08025, 0.25),
            0.0,
            "no beep before the first flash"
        );
        let early = SynthSpec {
            av_offset_ms: -100.0,
            ..spec
        };
        assert!(early.content_sample(0, 0.90025, 0.25).abs() > 0.3);
    }

    #[test]
    fn repeating_schedule() {
        let spec = SynthSpec {
            defects: vec!["black@2-4".parse().unwrap()],
            repeat_every: Some(10.0),
            ..SynthSpec::default()
        };
        assert!(spec.active(DefectKind::Black, 3.0).is_some());
        assert!(spec.active(DefectKind::Black, 13.0).is_some());
        assert!(spec.active(DefectKind::Black, 15.0).is_none());
    }
}
