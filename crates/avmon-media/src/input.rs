//! Open an input, demux it and decode it, handing borrowed frames to a [`FrameSink`].

use std::cell::Cell;
use std::ffi::CString;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use avmon_core::decode_error::CORRUPT_PACKET;
use avmon_core::{
    AudioBuffer, AudioInfo, MediaInfo, Plane, Tier, TierControl, VideoFrame, VideoInfo,
    MAX_AUDIO_CHANNELS,
};
use ff::ffi;
use ff::format::{Pixel, Sample};
use ffmpeg_next as ff;
use libc::{c_int, c_void};

use crate::ingest::{self, CustomIo, IoState, Route};
use crate::interrupt::{interrupt_cb, Interrupt};
use crate::keyfilter::Es;
use crate::{describe, MediaClock, MediaError};

/// How to open and decode an input.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// Give up on a read when no data arrived for this long (the source is then down).
    pub io_timeout: Duration,
    /// Give up opening (connect, probe) after this long.
    pub open_timeout: Duration,
    /// Decoder threads per stream. 1 (the default) turns the decoder's own threading off: the
    /// parallelism comes from many streams. Raise it for a few big streams; 0 lets FFmpeg choose.
    pub decoder_threads: usize,
    /// Extra options for FFmpeg's demuxer and protocol (e.g. `("rtsp_transport", "tcp")`).
    pub format_options: Vec<(String, String)>,
    /// Sees every byte of inputs that avmon reads itself (transport streams: see
    /// [`crate::ingest`]), on their way to the demuxer.
    pub tap: Option<crate::Tap>,
    /// The stream's fidelity tier, read once per packet: set it from another thread to change
    /// how much video is decoded without reconnecting (see [`Tier`]).
    pub tier: TierControl,
    /// In the `keyframes` tier, decode at most one keyframe per this many seconds of media (a
    /// keyframe up to 5 % early counts as on time); 0, the default, decodes every keyframe.
    /// Black and freeze are then judged at this spacing.
    pub keyframe_interval: f64,
    /// Where to keep a small scaled copy of the picture every so often (thumbnails, alert
    /// snapshots: see [`crate::picture`]); `None` copies nothing.
    pub pictures: Option<Arc<crate::Pictures>>,
    /// The stream's CPU permit (`avmon run`): held while the input demuxes, decodes and hands
    /// frames on, let go while it waits for the source (see [`avmon_core::sched`]). `None`: no
    /// scheduling (`check`).
    pub cpu: Option<avmon_core::sched::Slot>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            io_timeout: Duration::from_secs(5),
            open_timeout: Duration::from_secs(10),
            decoder_threads: 1,
            format_options: Vec::new(),
            tap: None,
            tier: TierControl::default(),
            keyframe_interval: 0.0,
            pictures: None,
            cpu: None,
        }
    }
}

/// Receives what an [`Input`] decodes. Frames are borrowed for the duration of the call.
pub trait FrameSink {
    /// A packet was read; `t` is the media clock after it, `bytes` its size.
    fn on_packet(&mut self, _t: f64, _bytes: usize) {}
    fn on_video(&mut self, frame: &VideoFrame<'_>);
    fn on_audio(&mut self, buf: &AudioBuffer<'_>);
    /// The decoder rejected a packet, or flagged a frame as corrupt.
    fn on_decode_error(&mut self, _t: f64, _video: bool) {}
    /// The input's streams changed while it ran: the source moved its video or audio to other
    /// PIDs (a new PMT, a reconfigured encoder) and the decoders followed. `info` is what it
    /// carries now.
    fn on_streams_changed(&mut self, _info: &MediaInfo) {}
    /// The input decodes at `tier` from now on: called before the first packet is handled,
    /// and at each change of [`OpenOptions::tier`].
    fn on_tier(&mut self, _tier: Tier) {}
}

/// Packets another stream of the same type must bring in a row, while the decoded one brings
/// none, before the decoder follows it. A multi-programme input interleaves its streams, so
/// the decoded one keeps arriving and is kept; a source that moved its PIDs sends only the new
/// ones.
const FOLLOW_AFTER: u32 = 50;

/// Another stream of one type that is arriving while the decoded one is not, and its packets
/// so far (references to the demuxer's buffers, not copies), each with its place in the input.
#[derive(Default)]
struct Follow {
    candidate: Option<usize>,
    held: Vec<(u64, ff::Packet)>,
}

impl Follow {
    /// A packet of the decoded stream arrived.
    fn reset(&mut self) {
        self.candidate = None;
        self.held.clear();
    }

    /// `packet`, of a stream that is not decoded, arrived: whether to follow its stream now.
    fn other(&mut self, seq: u64, packet: &ff::Packet) -> bool {
        if self.candidate != Some(packet.stream()) {
            self.reset();
            self.candidate = Some(packet.stream());
        }
        self.held.push((seq, packet.clone()));
        self.held.len() >= FOLLOW_AFTER as usize
    }
}

/// Why [`Input::run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// The input ended (a file, or a live source that closed the connection).
    Eof,
    /// No data arrived for `io_timeout`.
    TimedOut,
    /// The stop flag was set.
    Stopped,
}

struct VideoDec {
    index: usize,
    dec: ff::decoder::Video,
    time_base: ff::Rational,
    frame_duration: f64,
    frame: ff::frame::Video,
    /// Converts pictures without an 8-bit luma plane (10-bit, RGB) to 8-bit grey; built lazily.
    to_gray: Option<(ff::software::scaling::Context, ff::frame::Video)>,
    /// Scaled copies of the picture now and then, when asked for.
    capture: Option<crate::picture::Capture>,
    /// Packets the demuxer flagged corrupt whose frame has not come out yet.
    damaged: DamagedPackets,
    /// In the `keyframes` tier, the inter-coded video packets not decoded since the last
    /// keyframe decoded: how many, their total and their largest size (see
    /// [`VideoFrame::changed_between`]).
    skipped: (usize, usize, usize),
    /// In the `keyframes` tier, the media time of the last keyframe decoded (see
    /// [`OpenOptions::keyframe_interval`]).
    last_key_t: Option<f64>,
    /// What the next frame out is told about the time since the previous one.
    changed_between: Option<bool>,
    /// After a tier that kept packets from the decoder (`keyframes`, `transport`), the decoder
    /// has no references for the next inter frames: send only keyframes until one arrives.
    await_key: bool,
}

/// The demuxer's corrupt-packet flags (continuity errors: lost transport packets), carried over
/// to the frames they damage.
///
/// FFmpeg does not pass a packet's corrupt flag on to the frame it decodes into, and the H.264
/// decoder often drops a picture whose slice header was lost (and the pictures it reorders
/// around it) without any error at all. So each corrupt packet is remembered by its position and
/// PTS: the frame that comes out with that packet position (FFmpeg keeps it on the frame across
/// reordering) is flagged; if it never comes out, the first frame shown after its PTS is.
#[derive(Default)]
struct DamagedPackets {
    /// (byte position, PTS or `AV_NOPTS_VALUE`) of each pending packet.
    pending: [(i64, i64); 16],
    len: usize,
}

impl DamagedPackets {
    fn push(&mut self, pos: i64, pts: i64) {
        if self.len == self.pending.len() {
            // Keep the newest: drop the oldest (the frames after it are flagged anyway).
            self.pending.copy_within(1.., 0);
            self.len -= 1;
        }
        self.pending[self.len] = (pos, pts);
        self.len += 1;
    }

    /// Whether the frame from the packet at `pos`, presented at `pts`, is damaged; forgets the
    /// packets it accounts for.
    fn take(&mut self, pos: i64, pts: i64) -> bool {
        let mut hit = false;
        let mut i = 0;
        while i < self.len {
            let (p, t) = self.pending[i];
            let mine = p >= 0 && p == pos;
            let overtaken = t == ffi::AV_NOPTS_VALUE || (pts != ffi::AV_NOPTS_VALUE && pts > t);
            if mine || overtaken {
                hit = true;
                self.pending.copy_within(i + 1..self.len, i);
                self.len -= 1;
            } else {
                i += 1;
            }
        }
        hit
    }
}

struct AudioDec {
    index: usize,
    dec: ff::decoder::Audio,
    time_base: ff::Rational,
    frame: ff::frame::Audio,
    /// Planar float samples for decoders whose own output is another sample format.
    converted: Vec<Vec<f32>>,
    /// Media time right after the previous buffer: where a buffer without a timestamp starts
    /// (several frames in one PES packet whose timestamps the demuxer could not work out).
    next_t: Option<f64>,
}

/// An opened input with its decoders.
pub struct Input {
    // Field order matters: the format context must close before the custom I/O context, the
    // state its reads use, and the interrupt state are freed.
    ctx: ff::format::context::Input,
    /// Owns the custom I/O context (freed on drop); never read.
    _custom_io: Option<CustomIo>,
    io_state: Option<Box<IoState>>,
    video: Option<VideoDec>,
    audio: Option<AudioDec>,
    irq: Box<Interrupt>,
    url: String,
    info: MediaInfo,
    io_timeout: Duration,
    start_us: Option<i64>,
    decoder_threads: usize,
    pictures: Option<Arc<crate::Pictures>>,
    follow_video: Follow,
    follow_audio: Follow,
    /// Counts the packets of streams that are not decoded (orders the held ones).
    seq: u64,
    tier: TierControl,
    /// See [`OpenOptions::keyframe_interval`].
    keyframe_interval: f64,
    /// The tier the video decoder is set up for; `None` until the first packet (and after the
    /// decoder was replaced), so that it is applied and announced then.
    applied: Option<Tier>,
    /// The demuxer skips the video stream's packets altogether (`transport` with audio: see
    /// [`Input::apply_tier`]).
    video_demux_skipped: bool,
    /// The stream's CPU permit, held while [`Input::run`] works (see [`OpenOptions::cpu`]).
    cpu: Option<avmon_core::sched::Slot>,
}

/// MPEG-TS timestamps are 33 bits; the demuxer's are unwrapped.
const PTS_MASK: i64 = (1 << 33) - 1;

/// The PID of TS stream `index` and its codec, when its keyframes can be told from its bytes
/// (see [`crate::keyfilter`]).
fn filtered_video(ctx: &ff::format::context::Input, index: usize) -> Option<(u16, Es)> {
    let st = ctx.stream(index)?;
    let es = match st.parameters().id() {
        ff::codec::Id::H264 => Es::H264,
        ff::codec::Id::HEVC => Es::Hevc,
        ff::codec::Id::MPEG2VIDEO => Es::Mpeg2,
        _ => return None,
    };
    // SAFETY: reading a plain field of an open stream; for MPEG-TS it is the PID.
    let pid = unsafe { (*st.as_ptr()).id };
    u16::try_from(pid)
        .ok()
        .filter(|&p| p < 0x1fff)
        .map(|p| (p, es))
}

/// Let the demuxer skip stream `index`'s packets altogether, or deliver them again.
fn set_discard(ctx: &mut ff::format::context::Input, index: usize, skip: bool) {
    let discard = if skip {
        ffi::AVDiscard::AVDISCARD_ALL
    } else {
        ffi::AVDiscard::AVDISCARD_DEFAULT
    };
    // SAFETY: `index` is below `nb_streams` (checked) and `discard` is a plain field the
    // demuxer reads per packet; applications set it between reads (FFmpeg's own `-map` does).
    unsafe {
        let ctx = ctx.as_mut_ptr();
        if index < (*ctx).nb_streams as usize {
            (**(*ctx).streams.add(index)).discard = discard;
        }
    }
}

/// Whether a keyframe at `t` is due, the last one decoded having been at `last`: always with no
/// interval, no last one or no time, and when the clock went back (a new timeline).
fn key_due(last: Option<f64>, t: Option<f64>, interval: f64) -> bool {
    match (last, t) {
        (Some(last), Some(t)) if interval > 0.0 => t < last || t - last >= interval * 0.95,
        _ => true,
    }
}

fn threading(decoder_threads: usize) -> ff::codec::threading::Config {
    ff::codec::threading::Config {
        kind: if decoder_threads == 1 {
            ff::codec::threading::Type::None
        } else {
            ff::codec::threading::Type::Frame
        },
        count: decoder_threads,
        safe: false,
    }
}

/// A decoder for video stream `st`; `Ok(None)` when FFmpeg has none for its codec.
fn open_video(
    st: &ff::format::stream::Stream<'_>,
    decoder_threads: usize,
    pictures: Option<Arc<crate::Pictures>>,
    url: &str,
) -> Result<Option<(VideoDec, VideoInfo)>, String> {
    let mut c = ff::codec::context::Context::from_parameters(st.parameters())
        .map_err(|e| format!("video decoder: {}", describe(&e)))?;
    c.set_threading(threading(decoder_threads));
    // SAFETY: setting a plain field on an unopened codec context.
    unsafe { (*c.as_mut_ptr()).pkt_timebase = st.time_base().into() };
    match c.decoder().video() {
        Ok(dec) => {
            let rate = st.avg_frame_rate();
            let rate = if rate.numerator() > 0 && rate.denominator() > 0 {
                rate
            } else {
                st.rate()
            };
            let fps = if rate.numerator() > 0 && rate.denominator() > 0 {
                f64::from(rate)
            } else {
                25.0
            };
            let info = VideoInfo {
                codec: codec_name(dec.id()),
                width: dec.width(),
                height: dec.height(),
                fps: (fps * 1000.0).round() / 1000.0,
            };
            Ok(Some((
                VideoDec {
                    index: st.index(),
                    dec,
                    time_base: st.time_base(),
                    frame_duration: 1.0 / fps,
                    frame: ff::frame::Video::empty(),
                    to_gray: None,
                    capture: pictures.map(crate::picture::Capture::new),
                    damaged: DamagedPackets::default(),
                    await_key: false,
                    skipped: (0, 0, 0),
                    last_key_t: None,
                    changed_between: None,
                },
                info,
            )))
        }
        Err(e) => {
            tracing::warn!(url, "no decoder for the video stream: {}", describe(&e));
            Ok(None)
        }
    }
}

/// A decoder for audio stream `st`; `Ok(None)` when FFmpeg has none for its codec.
fn open_audio(
    st: &ff::format::stream::Stream<'_>,
    url: &str,
) -> Result<Option<(AudioDec, AudioInfo)>, String> {
    let mut c = ff::codec::context::Context::from_parameters(st.parameters())
        .map_err(|e| format!("audio decoder: {}", describe(&e)))?;
    // SAFETY: as above.
    unsafe { (*c.as_mut_ptr()).pkt_timebase = st.time_base().into() };
    match c.decoder().audio() {
        Ok(dec) => {
            let info = AudioInfo {
                codec: codec_name(dec.id()),
                channels: u32::from(dec.channels()),
                sample_rate: dec.rate(),
            };
            Ok(Some((
                AudioDec {
                    index: st.index(),
                    dec,
                    time_base: st.time_base(),
                    frame: ff::frame::Audio::empty(),
                    converted: Vec::new(),
                    next_t: None,
                },
                info,
            )))
        }
        Err(e) => {
            tracing::warn!(url, "no decoder for the audio stream: {}", describe(&e));
            Ok(None)
        }
    }
}

fn to_us(ts: i64, tb: ff::Rational) -> i64 {
    // SAFETY: pure arithmetic.
    unsafe {
        ffi::av_rescale_q(
            ts,
            tb.into(),
            ffi::AVRational {
                num: 1,
                den: 1_000_000,
            },
        )
    }
}

fn codec_name(id: ff::codec::Id) -> String {
    let name = id.name();
    if name.is_empty() {
        format!("{id:?}").to_lowercase()
    } else {
        name.to_string()
    }
}

impl Input {
    /// Open `url` and its best video and audio streams. `stop` interrupts any blocking call.
    pub fn open(url: &str, opts: &OpenOptions, stop: Arc<AtomicBool>) -> Result<Input, MediaError> {
        let route = ingest::route(url, opts, &stop)?;
        Input::open_route(url, route, opts, stop)
    }

    /// Open bytes that the caller reads itself (e.g. an HLS monitor's segments), named `label`
    /// in messages; `format` forces a demuxer (`Some("mpegts")`), `None` probes. `opts.tap`
    /// sees the bytes as for any byte-level input.
    pub fn open_source(
        label: &str,
        source: Box<dyn ingest::ByteSource>,
        format: Option<&'static str>,
        opts: &OpenOptions,
        stop: Arc<AtomicBool>,
    ) -> Result<Input, MediaError> {
        let route = Route::Bytes {
            reader: source,
            format,
        };
        Input::open_route(label, route, opts, stop)
    }

    fn open_route(
        url: &str,
        route: Route,
        opts: &OpenOptions,
        stop: Arc<AtomicBool>,
    ) -> Result<Input, MediaError> {
        crate::init();
        let open_err = |reason: String| MediaError::Open {
            url: url.to_string(),
            reason,
        };
        let curl = CString::new(url).map_err(|_| open_err("the URL contains a NUL byte".into()))?;
        let irq = Box::new(Interrupt {
            stop,
            deadline: Cell::new(Instant::now() + opts.open_timeout),
        });
        let mut dict = ff::Dictionary::new();
        // Byte-level inputs: avmon reads, FFmpeg demuxes what it is handed.
        let (mut io_state, format) = match route {
            Route::Bytes { reader, format } => {
                if let Some(tap) = &opts.tap {
                    tap.0.on_start();
                }
                (
                    Some(IoState::new(reader, opts.tap.clone(), opts.cpu.clone())),
                    format,
                )
            }
            Route::Ffmpeg => {
                for (k, v) in &opts.format_options {
                    dict.set(k, v);
                }
                (None, None)
            }
        };
        let custom_io = match io_state.as_mut() {
            Some(state) => {
                Some(CustomIo::new(state).ok_or_else(|| open_err("out of memory".into()))?)
            }
            None => None,
        };
        let iformat = match format {
            Some(name) => {
                let cname = CString::new(name).expect("format names have no NUL");
                // SAFETY: looks up a static demuxer by name.
                let f = unsafe { ffi::av_find_input_format(cname.as_ptr()) };
                if f.is_null() {
                    return Err(open_err(format!("this FFmpeg has no {name} demuxer")));
                }
                f
            }
            None => ptr::null(),
        };
        // SAFETY: the standard avformat open sequence. On failure avformat_open_input frees the
        // context itself (not a custom I/O context: `custom_io` frees that); after it succeeds
        // we own it and close it on every error path.
        let ctx = unsafe {
            let mut ps = ffi::avformat_alloc_context();
            if ps.is_null() {
                return Err(open_err("out of memory".into()));
            }
            (*ps).interrupt_callback = ffi::AVIOInterruptCB {
                callback: Some(interrupt_cb),
                opaque: &*irq as *const Interrupt as *mut c_void,
            };
            if let Some(io) = &custom_io {
                (*ps).pb = io.avio;
                (*ps).flags |= ffi::AVFMT_FLAG_CUSTOM_IO as c_int;
            }
            let mut d = dict.disown();
            let r = ffi::avformat_open_input(&mut ps, curl.as_ptr(), iformat, &mut d);
            drop(ff::Dictionary::own(d));
            if r < 0 {
                let why = io_state
                    .as_mut()
                    .and_then(|s| s.error.take())
                    .map_or_else(|| describe(&ff::Error::from(r)), |e| e.to_string());
                return Err(open_err(why));
            }
            let r = ffi::avformat_find_stream_info(ps, ptr::null_mut());
            if r < 0 {
                ffi::avformat_close_input(&mut ps);
                return Err(open_err(describe(&ff::Error::from(r))));
            }
            ff::format::context::Input::wrap(ps)
        };

        let mut info = MediaInfo {
            format: ctx.format().name().to_string(),
            ..MediaInfo::default()
        };
        let video = match ctx.streams().best(ff::media::Type::Video) {
            Some(st) => open_video(&st, opts.decoder_threads, opts.pictures.clone(), url)
                .map_err(open_err)?,
            None => None,
        }
        .map(|(dec, v)| {
            info.video = Some(v);
            dec
        });
        let audio = match ctx.streams().best(ff::media::Type::Audio) {
            Some(st) => open_audio(&st, url).map_err(open_err)?,
            None => None,
        }
        .map(|(dec, a)| {
            info.audio = Some(a);
            dec
        });
        if video.is_none() && audio.is_none() {
            return Err(MediaError::NoStreams {
                url: url.to_string(),
            });
        }
        // SAFETY: reading a plain field of the opened context.
        let start = unsafe { (*ctx.as_ptr()).start_time };
        let start_us = (start != ffi::AV_NOPTS_VALUE).then_some(start);
        Ok(Input {
            ctx,
            _custom_io: custom_io,
            io_state,
            video,
            audio,
            irq,
            url: url.to_string(),
            info,
            io_timeout: opts.io_timeout,
            start_us,
            decoder_threads: opts.decoder_threads,
            pictures: opts.pictures.clone(),
            follow_video: Follow::default(),
            follow_audio: Follow::default(),
            seq: 0,
            tier: opts.tier.clone(),
            keyframe_interval: opts.keyframe_interval,
            applied: None,
            video_demux_skipped: false,
            cpu: opts.cpu.clone(),
        })
    }

    /// What the input carries.
    pub fn info(&self) -> &MediaInfo {
        &self.info
    }

    /// How many video pictures the demuxer was handed whole and how many blanked (see
    /// [`crate::keyfilter`]: a TS input at the `keyframes` tier); `None` when no picture was
    /// filtered.
    pub fn key_filter_counts(&self) -> Option<(u64, u64)> {
        self.io_state
            .as_ref()?
            .filter()
            .map(|f| (f.kept, f.blanked))
    }

    /// Demux and decode until the input ends, stalls for `io_timeout`, or `stop` is set.
    pub fn run(
        &mut self,
        clock: &mut MediaClock,
        sink: &mut dyn FrameSink,
    ) -> Result<EndReason, MediaError> {
        if let Some(s) = self.start_us {
            clock.set_origin(s);
        }
        let mut consecutive_errors = 0u32;
        // The CPU permit is held while this loop works and let go while it waits for input:
        // avmon's own readers let go inside their reads, only when there is nothing to read yet;
        // FFmpeg's own demuxers (RTSP, RTMP) are opaque, so the permit is let go around each of
        // their reads and taken back ahead of the queue (most find their data at once).
        let cpu = self.cpu.clone();
        let _held = cpu.as_ref().map(|c| c.hold());
        let opaque_io = self.io_state.is_none();
        loop {
            if self.irq.stop.load(Ordering::Relaxed) {
                return Ok(EndReason::Stopped);
            }
            if let Some(c) = &cpu {
                c.checkpoint();
            }
            self.irq.deadline.set(Instant::now() + self.io_timeout);
            // A fresh packet each time, dropped (unreferenced) at the end of the turn:
            // `av_read_frame` does not let go of what a packet already held, so one packet
            // reused across reads kept every buffer it was given (the whole input's bytes, 0.6 MB
            // a second at 5 Mbit/s).
            let mut packet = ff::Packet::empty();
            let read = match &cpu {
                Some(c) if opaque_io => c.blocking_in_turn(|| packet.read(&mut self.ctx)),
                _ => packet.read(&mut self.ctx),
            };
            match read {
                Ok(()) => consecutive_errors = 0,
                Err(ff::Error::Eof) => {
                    self.drain(clock, sink);
                    return Ok(EndReason::Eof);
                }
                Err(ff::Error::Exit) => {
                    return Ok(if self.irq.stop.load(Ordering::Relaxed) {
                        EndReason::Stopped
                    } else {
                        EndReason::TimedOut
                    });
                }
                Err(ff::Error::Other { errno }) if errno == libc::EAGAIN => continue,
                Err(e) => {
                    // Demuxers resync on damaged data; persistent errors mean the input is gone.
                    consecutive_errors += 1;
                    if consecutive_errors > 100 {
                        // avmon's own reader says best why (a socket error, say).
                        let reason = self
                            .io_state
                            .as_mut()
                            .and_then(|s| s.error.take())
                            .map_or_else(|| describe(&e), |e| e.to_string());
                        return Err(MediaError::Read {
                            url: self.url.clone(),
                            reason,
                        });
                    }
                    continue;
                }
            }
            self.packet(&packet, clock, sink);
        }
    }

    /// Demux-side handling of one packet: decode it when it belongs to a decoded stream, or
    /// note it as a stream the decoders may have to follow.
    fn packet(&mut self, packet: &ff::Packet, clock: &mut MediaClock, sink: &mut dyn FrameSink) {
        let index = packet.stream();
        let tier = self.tier.get();
        if self.applied != Some(tier) {
            self.apply_tier(tier, sink);
        }
        let tb = if self.video.as_ref().is_some_and(|v| v.index == index) {
            self.follow_video.reset();
            self.video.as_ref().map(|v| v.time_base)
        } else if self.audio.as_ref().is_some_and(|a| a.index == index) {
            self.follow_audio.reset();
            self.audio.as_ref().map(|a| a.time_base)
        } else {
            None
        };
        let Some(tb) = tb else {
            if let Some(held) = self.maybe_follow(packet, clock, sink) {
                // The stream is decoded now: from the packets held while it was judged (so
                // its first keyframe is not lost).
                for p in &held {
                    self.packet(p, clock, sink);
                }
            }
            return;
        };
        let t = packet
            .dts()
            .or(packet.pts())
            .map(|ts| clock.map(index, to_us(ts, tb)));
        // A picture the key filter blanked arrives as its first TS packet only: its size is
        // the whole picture's, which the filter noted.
        let blanked = match (&self.io_state, packet.pts()) {
            (Some(io), Some(pts)) if self.video.as_ref().is_some_and(|v| v.index == index) => io
                .filter()
                .and_then(|f| f.blanked(packet.position() as i64, pts & PTS_MASK)),
            _ => None,
        };
        let size = blanked.unwrap_or(packet.size());
        if let Some(t) = t {
            sink.on_packet(t, size);
        }
        if let Some(v) = self.video.as_mut().filter(|v| v.index == index) {
            // Below `full`, packets the tier does not decode never reach the decoder (cheaper
            // than letting it parse and discard them); `reference` is left to the decoder,
            // which alone knows which frames are referenced.
            let send = match tier {
                // Never decoded, whatever the tier is now (it may have gone up since the
                // filter saw it), nor what refers to it.
                _ if blanked.is_some() => {
                    v.await_key = true;
                    false
                }
                Tier::Transport => false,
                Tier::Keyframes => {
                    packet.is_key() && key_due(v.last_key_t, t, self.keyframe_interval)
                }
                Tier::Full | Tier::Reference => !v.await_key || packet.is_key(),
            };
            if !send {
                // Only inter-coded packets: a keyframe skipped for the interval is large by
                // nature and would make every interval look changed.
                if tier == Tier::Keyframes && !packet.is_key() {
                    let (n, sum, max) = &mut v.skipped;
                    *n += 1;
                    *sum += size;
                    *max = (*max).max(size);
                }
                return;
            }
            if tier == Tier::Keyframes {
                let (n, sum, max) = std::mem::take(&mut v.skipped);
                v.changed_between = Some(n > 0 && max * n > 2 * sum);
                v.last_key_t = t.or(v.last_key_t);
            }
            if packet.is_key() {
                v.await_key = false;
            }
            if packet.is_corrupt() {
                let pts = packet.pts().unwrap_or(ffi::AV_NOPTS_VALUE);
                v.damaged.push(packet.position() as i64, pts);
            }
            if v.dec.send_packet(packet).is_err() {
                sink.on_decode_error(clock.latest(), true);
            }
            receive_video(v, clock, sink);
            if tier == Tier::Keyframes {
                // A decoder that reorders holds each picture until later ones arrive: with
                // keyframes only, seconds late. Each keyframe stands alone, so drain it out
                // now and start the decoder afresh for the next one.
                let _ = v.dec.send_eof();
                receive_video(v, clock, sink);
                v.dec.flush();
            }
        } else if let Some(a) = self.audio.as_mut().filter(|a| a.index == index) {
            if a.dec.send_packet(packet).is_err() {
                sink.on_decode_error(clock.latest(), false);
            }
            receive_audio(a, clock, sink);
        }
    }

    /// Set the video decoder up for `tier` and tell the sink.
    fn apply_tier(&mut self, tier: Tier, sink: &mut dyn FrameSink) {
        let prev = self.applied.replace(tier);
        if let Some(v) = self.video.as_mut() {
            let discard = match tier {
                Tier::Full => ffi::AVDiscard::AVDISCARD_DEFAULT,
                Tier::Reference => ffi::AVDiscard::AVDISCARD_NONREF,
                Tier::Keyframes => ffi::AVDiscard::AVDISCARD_NONKEY,
                Tier::Transport => ffi::AVDiscard::AVDISCARD_ALL,
            };
            // SAFETY: `skip_frame` is a plain field the decoder reads per frame; it may be
            // changed between packets of an opened decoder (FFmpeg's own `-skip_frame` does).
            unsafe { (*v.dec.as_mut_ptr()).skip_frame = discard };
            let starved = |t: Option<Tier>| matches!(t, Some(Tier::Keyframes | Tier::Transport));
            if tier == Tier::Transport || prev == Some(Tier::Transport) {
                // Frames held for reordering belong to the time before the gap: drop them.
                v.dec.flush();
            }
            if starved(prev) {
                v.await_key = true;
            }
            v.skipped = (0, 0, 0);
            v.last_key_t = None;
            v.changed_between = None;
        }
        // In `keyframes`, a TS input's inter-coded pictures are blanked before the demuxer
        // (see `keyfilter`): it gathers and parses only the keyframes.
        if let Some(io) = self.io_state.as_mut() {
            io.linger = crate::ingest::linger_for(tier);
            io.filter_video(match &self.video {
                Some(v) if tier == Tier::Keyframes && self.info.format == "mpegts" => {
                    filtered_video(&self.ctx, v.index)
                }
                _ => None,
            });
        }
        // In `transport` the video need not even be demuxed: the demuxer then skips its PES
        // packets (no H.264 parsing: in the service, the parser's per-frame buffers were ~40 %
        // of the tier's CPU on 5 Mbit/s streams), while the audio's packets keep the packet
        // clock going. Without decoded audio the video's packets still come, for the clock.
        if let Some(index) = self.video.as_ref().map(|v| v.index) {
            let skip = tier == Tier::Transport && self.audio.is_some();
            set_discard(&mut self.ctx, index, skip);
            self.video_demux_skipped = skip;
        }
        tracing::debug!(url = %self.url, ?prev, %tier, "fidelity tier applied");
        sink.on_tier(tier);
    }

    /// A packet of a stream that is not decoded arrived. When it is video or audio and its
    /// stream keeps arriving while the decoded stream of its type does not (or there is none),
    /// the source moved that stream: decode this one from now on, and the other type's too
    /// when it moved with it (its decoded stream went quiet for another one as well). Returns
    /// the packets held while they were judged, in the order they came, once followed.
    fn maybe_follow(
        &mut self,
        packet: &ff::Packet,
        clock: &mut MediaClock,
        sink: &mut dyn FrameSink,
    ) -> Option<Vec<ff::Packet>> {
        let medium = self.ctx.stream(packet.stream())?.parameters().medium();
        self.seq += 1;
        let due = match medium {
            // Our own video is not demuxed: its silence says nothing about the others.
            ff::media::Type::Video if self.video_demux_skipped => return None,
            ff::media::Type::Video => self.follow_video.other(self.seq, packet),
            ff::media::Type::Audio => self.follow_audio.other(self.seq, packet),
            _ => return None,
        };
        if !due {
            return None;
        }
        let mut held = Vec::new();
        for video in [true, false] {
            let follow = if video {
                &mut self.follow_video
            } else {
                &mut self.follow_audio
            };
            let Some(index) = follow.candidate.filter(|_| !follow.held.is_empty()) else {
                continue;
            };
            let packets = std::mem::take(&mut follow.held);
            follow.reset();
            if self.switch(video, index, clock) {
                held.extend(packets);
            }
        }
        if held.is_empty() {
            return None;
        }
        held.sort_by_key(|(seq, _)| *seq);
        sink.on_streams_changed(&self.info);
        Some(held.into_iter().map(|(_, p)| p).collect())
    }

    /// Decode stream `index` as the video (or the audio) from now on; false when it cannot be.
    fn switch(&mut self, video: bool, index: usize, clock: &mut MediaClock) -> bool {
        let Some(st) = self.ctx.stream(index) else {
            return false;
        };
        let what = if video { "video" } else { "audio" };
        let from = if video {
            self.video.as_ref().map(|v| v.index)
        } else {
            self.audio.as_ref().map(|a| a.index)
        };
        let opened = if video {
            open_video(&st, self.decoder_threads, self.pictures.clone(), &self.url).map(|o| {
                o.map(|(dec, info)| {
                    self.video = Some(dec);
                    self.info.video = Some(info);
                })
            })
        } else {
            open_audio(&st, &self.url).map(|o| {
                o.map(|(dec, info)| {
                    self.audio = Some(dec);
                    self.info.audio = Some(info);
                })
            })
        };
        if !matches!(opened, Ok(Some(()))) {
            return false;
        }
        tracing::info!(url = %self.url, what, ?from, to = index, "the source moved its {what} to another stream; following it");
        if let Some(from) = from {
            clock.follow(from, index);
        }
        if video {
            // The new decoder starts at the defaults: set it up for the tier at the next packet.
            self.applied = None;
        }
        true
    }

    /// Flush the decoders at the end of the input so their last frames are seen.
    fn drain(&mut self, clock: &mut MediaClock, sink: &mut dyn FrameSink) {
        if let Some(v) = self.video.as_mut() {
            let _ = v.dec.send_eof();
            receive_video(v, clock, sink);
        }
        if let Some(a) = self.audio.as_mut() {
            let _ = a.dec.send_eof();
            receive_audio(a, clock, sink);
        }
    }
}

fn frame_time(ts: Option<i64>, tb: ff::Rational, clock: &MediaClock) -> f64 {
    ts.and_then(|ts| clock.peek(to_us(ts, tb)))
        .unwrap_or_else(|| clock.latest())
}

/// Pixel formats whose plane 0 is 8-bit luma, and whether they are full range.
fn luma8(format: Pixel) -> Option<bool> {
    match format {
        Pixel::YUV420P | Pixel::YUV422P | Pixel::YUV444P | Pixel::YUV411P | Pixel::YUV440P => {
            Some(false)
        }
        Pixel::NV12 | Pixel::NV21 | Pixel::NV16 | Pixel::YUVA420P => Some(false),
        Pixel::YUVJ420P | Pixel::YUVJ422P | Pixel::YUVJ444P | Pixel::YUVJ440P | Pixel::GRAY8 => {
            Some(true)
        }
        _ => None,
    }
}

/// The Cb and Cr planes of a planar 8-bit YUV frame, borrowed in place: a format [`luma8`]
/// reads with three planes or more (semi-planar NV12 and the like have two, grey one).
fn chroma8(f: &ff::frame::Video) -> Option<[Plane<'_>; 2]> {
    if luma8(f.format()).is_none() || f.planes() < 3 {
        return None;
    }
    let plane = |i: usize| {
        Plane::new(
            f.data(i),
            f.stride(i),
            f.plane_width(i) as usize,
            f.plane_height(i) as usize,
        )
    };
    Some([plane(1)?, plane(2)?])
}

fn receive_video(v: &mut VideoDec, clock: &mut MediaClock, sink: &mut dyn FrameSink) {
    while v.dec.receive_frame(&mut v.frame).is_ok() {
        let f = &v.frame;
        let t = frame_time(f.timestamp(), v.time_base, clock);
        // SAFETY: reading plain fields of a decoded frame.
        let (error_flags, pkt_pos) = unsafe {
            (
                (*f.as_ptr()).decode_error_flags as u32,
                (*f.as_ptr()).pkt_pos,
            )
        };
        let transport = v.damaged.len > 0
            && v.damaged
                .take(pkt_pos, f.timestamp().unwrap_or(ffi::AV_NOPTS_VALUE));
        let error_flags = error_flags | if transport { CORRUPT_PACKET } else { 0 };
        let corrupt = f.is_corrupt() || error_flags != 0;
        tracing::trace!(t, key = f.is_key(), error_flags, corrupt, "video frame");
        if corrupt {
            sink.on_decode_error(t, true);
        }
        let (w, h) = (f.width() as usize, f.height() as usize);
        let key = f.is_key();
        let plane = match luma8(f.format()) {
            Some(full) => Plane::new(f.data(0), f.stride(0), w, h)
                .map(|p| (p, full || f.color_range() == ff::util::color::Range::JPEG)),
            None => {
                let rebuild = match &v.to_gray {
                    Some((_, g)) => g.width() as usize != w || g.height() as usize != h,
                    None => true,
                };
                if rebuild {
                    v.to_gray = ff::software::scaling::Context::get(
                        f.format(),
                        w as u32,
                        h as u32,
                        Pixel::GRAY8,
                        w as u32,
                        h as u32,
                        ff::software::scaling::Flags::POINT,
                    )
                    .ok()
                    .map(|s| (s, ff::frame::Video::empty()));
                }
                match v.to_gray.as_mut() {
                    Some((sws, gray)) => match sws.run(f, gray) {
                        Ok(()) => Plane::new(gray.data(0), gray.stride(0), w, h).map(|p| (p, true)),
                        Err(_) => None,
                    },
                    None => None,
                }
            }
        };
        if let Some(c) = v.capture.as_mut() {
            c.offer(f, t);
        }
        if let Some((luma, full_range)) = plane {
            let captions = f.side_data(ff::frame::side_data::Type::A53CC);
            sink.on_video(&VideoFrame {
                t,
                duration: v.frame_duration,
                luma,
                chroma: chroma8(f),
                full_range,
                key,
                corrupt,
                decode_errors: error_flags,
                changed_between: v.changed_between.take(),
                captions: captions.as_ref().map(|c| c.data()),
            });
        }
    }
}

fn receive_audio(a: &mut AudioDec, clock: &mut MediaClock, sink: &mut dyn FrameSink) {
    while a.dec.receive_frame(&mut a.frame).is_ok() {
        let f = &a.frame;
        let t = match (f.timestamp(), a.next_t) {
            (None, Some(next)) => next,
            (ts, _) => frame_time(ts, a.time_base, clock),
        };
        let n = f.samples();
        let channels = (f.channels() as usize).min(MAX_AUDIO_CHANNELS);
        if n == 0 || channels == 0 {
            continue;
        }
        if f.rate() > 0 {
            a.next_t = Some(t + n as f64 / f64::from(f.rate()));
        }
        let mut planes: [&[f32]; MAX_AUDIO_CHANNELS] = [&[]; MAX_AUDIO_CHANNELS];
        // SAFETY: the pointer is only read below, while `f` is alive.
        let raw = unsafe { f.as_ptr() };
        match f.format() {
            Sample::F32(ff::format::sample::Type::Planar) => {
                for (c, plane) in planes.iter_mut().enumerate().take(channels) {
                    // SAFETY: a planar float frame has one plane of `n` f32 per channel in
                    // `extended_data`, valid while the frame is not reused.
                    *plane = unsafe {
                        std::slice::from_raw_parts(*(*raw).extended_data.add(c) as *const f32, n)
                    };
                }
            }
            format => {
                a.converted.resize_with(channels, Vec::new);
                for (c, buf) in a.converted.iter_mut().enumerate() {
                    buf.clear();
                    // SAFETY: reading `n` samples per channel in the frame's declared format.
                    unsafe { convert_channel(raw, format, c, channels, n, buf) };
                }
                for (plane, buf) in planes.iter_mut().zip(&a.converted) {
                    *plane = buf;
                }
            }
        }
        sink.on_audio(&AudioBuffer {
            t,
            sample_rate: f.rate(),
            planes: &planes[..channels],
            layout: channel_mask(raw, channels),
        });
    }
}

/// The speaker mask of a decoded audio frame's channels, 0 when its layout is not a native
/// (bit-ordered) one or does not match the channel count.
fn channel_mask(raw: *const ffi::AVFrame, channels: usize) -> u64 {
    // SAFETY: reading plain fields of a live decoded frame.
    let (order, mask) = unsafe { ((*raw).ch_layout.order, (*raw).ch_layout.u.mask) };
    if order == ffi::AVChannelOrder::AV_CHANNEL_ORDER_NATIVE
        && mask.count_ones() as usize == channels
    {
        mask
    } else {
        0
    }
}

/// Append channel `c` of a decoded frame to `out` as float.
///
/// # Safety
/// `raw` must be a decoded audio frame of `n` samples, `channels` channels, in `format`.
unsafe fn convert_channel(
    raw: *const ffi::AVFrame,
    format: Sample,
    c: usize,
    channels: usize,
    n: usize,
    out: &mut Vec<f32>,
) {
    use ff::format::sample::Type::{Packed, Planar};
    let (plane, stride, first) = match format {
        Sample::U8(Planar) | Sample::I16(Planar) | Sample::I32(Planar) | Sample::I64(Planar) => {
            (*(*raw).extended_data.add(c), 1, 0)
        }
        Sample::F32(Planar) | Sample::F64(Planar) => (*(*raw).extended_data.add(c), 1, 0),
        _ => (*(*raw).extended_data, channels, c),
    };
    let at = |i: usize| first + i * stride;
    match format {
        Sample::U8(_) => out.extend((0..n).map(|i| (f32::from(*plane.add(at(i))) - 128.0) / 128.0)),
        Sample::I16(_) => {
            let p = plane as *const i16;
            out.extend((0..n).map(|i| f32::from(*p.add(at(i))) / 32768.0))
        }
        Sample::I32(_) => {
            let p = plane as *const i32;
            out.extend((0..n).map(|i| *p.add(at(i)) as f32 / 2_147_483_648.0))
        }
        Sample::I64(_) => {
            let p = plane as *const i64;
            out.extend((0..n).map(|i| (*p.add(at(i)) as f64 / 9.223_372e18) as f32))
        }
        Sample::F32(Packed) => {
            let p = plane as *const f32;
            out.extend((0..n).map(|i| *p.add(at(i))))
        }
        Sample::F32(Planar) => {
            let p = plane as *const f32;
            out.extend((0..n).map(|i| *p.add(i)))
        }
        Sample::F64(_) => {
            let p = plane as *const f64;
            out.extend((0..n).map(|i| *p.add(at(i)) as f32))
        }
        Sample::None => out.resize(n, 0.0),
    }
}
