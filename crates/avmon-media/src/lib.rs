//! Everything in avmon that touches FFmpeg, and the only crate allowed `unsafe`.
//!
//! - [`Input`] opens anything FFmpeg opens (files, `udp://`, `srt://`, `rtmp://`, `rtsp://`,
//!   `http(s)://` TS or HLS), decodes video and audio, and hands each decoded frame to a
//!   [`FrameSink`] as a *borrowed* [`avmon_core::VideoFrame`] / [`avmon_core::AudioBuffer`] that
//!   points into the decoder's own buffers. Nothing is copied between decoder and detectors; the
//!   one exception is a sample-format conversion when a decoder's output is not planar float (or a
//!   picture format without an 8-bit luma plane), done into buffers reused frame after frame.
//! - [`ingest`]: for transport streams (`udp://`, `rtp://`, `srt://`, HTTP TS, `.ts` files)
//!   avmon reads the bytes itself and feeds the demuxer through a custom I/O context; a
//!   [`ByteTap`] sees every byte once on the way (the transport analyser).
//! - [`run_source`] keeps a live input going: it reconnects with capped exponential backoff and
//!   reports the source going down (cannot open, or nothing delivered for `io_timeout`) and coming
//!   back up, once each; [`run_input`] does the same for an input the caller opens (an HLS
//!   monitor's segments through [`Input::open_source`]).
//! - [`picture`]: a small scaled copy of the picture every second or so, kept for people to see
//!   (thumbnails, alert snapshots), and JPEG encoding of one with FFmpeg's MJPEG encoder.
//! - [`synth`] generates H.264 + AAC test streams in MPEG-TS through libavcodec, with defects
//!   injected at given media times, to a file or to `udp://` in real time.
//!
//! Decoding runs on the caller's thread, one loop per stream, with the decoder's own threading off
//! by default: avmon's parallelism comes from many streams. [`OpenOptions::decoder_threads`] turns
//! it on for the few-big-streams case.
//! With [`OpenOptions::cpu`] (the service), the loop holds a permit of a host-wide CPU scheduler
//! while it works and lets go of it while it waits for input ([`avmon_core::sched`]); avmon's
//! UDP reader also reports how long each datagram waited in the socket and the socket's drops.
//!
//! Media time is seconds from the input's first timestamp ([`MediaClock`]); it keeps running
//! across reconnects so events from one live stream stay on one time line.

mod clock;
pub mod ingest;
mod input;
mod interrupt;
mod keyfilter;
/// The keyframe filter's fuzz entry (`fuzz/fuzz_targets/keyframe_filter.rs`).
#[cfg(fuzzing)]
pub use keyfilter::fuzz as fuzz_keyframe_filter;
pub mod picture;
mod source;
pub mod synth;

pub use clock::MediaClock;
pub use ingest::{ByteSource, ByteTap, Tap};
pub use input::{EndReason, FrameSink, Input, OpenOptions};
pub use picture::{encode_jpeg, Picture, Pictures};
pub use source::{run_input, run_source, Backoff, SourceEvents};

/// Errors from opening or reading an input. Messages are meant for users: one line that names
/// the input and what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("cannot open {url}: {reason}")]
    Open { url: String, reason: String },
    #[error("{url} has no audio or video stream that avmon can decode")]
    NoStreams { url: String },
    #[error("reading {url} failed: {reason}")]
    Read { url: String, reason: String },
    #[error("{0}")]
    Other(String),
}

/// Initialise FFmpeg once per process and quieten its logging to errors only (avmon counts
/// decode errors itself rather than parsing log lines).
pub fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = ffmpeg_next::init();
        let level = match std::env::var("AVMON_FFMPEG_LOG").as_deref() {
            Ok("debug") => ffmpeg_next::log::Level::Debug,
            Ok("info") => ffmpeg_next::log::Level::Info,
            Ok("warning") => ffmpeg_next::log::Level::Warning,
            _ => ffmpeg_next::log::Level::Quiet,
        };
        ffmpeg_next::log::set_level(level);
    });
}

/// A readable name for an FFmpeg error code.
pub(crate) fn describe(e: &ffmpeg_next::Error) -> String {
    match e {
        ffmpeg_next::Error::Exit => "timed out (no data)".to_string(),
        other => other.to_string(),
    }
}

/// The URL schemes this FFmpeg build reads (`file`, `udp`, `srt`, `rtsp`, ...).
pub fn input_protocols() -> Vec<String> {
    init();
    let mut out = Vec::new();
    let mut opaque: *mut libc::c_void = std::ptr::null_mut();
    loop {
        // SAFETY: avio_enum_protocols iterates static protocol names until it returns NULL.
        let name = unsafe { ffmpeg_next::ffi::avio_enum_protocols(&mut opaque, 0) };
        if name.is_null() {
            break;
        }
        // SAFETY: a NUL-terminated static string owned by FFmpeg.
        let s = unsafe { std::ffi::CStr::from_ptr(name) };
        out.push(s.to_string_lossy().into_owned());
    }
    // RTSP is a demuxer that does its own networking, not an I/O protocol, so it is not listed.
    // SAFETY: looks up a static demuxer by a NUL-terminated name.
    let rtsp = unsafe { ffmpeg_next::ffi::av_find_input_format(c"rtsp".as_ptr()) };
    if !rtsp.is_null() {
        for scheme in ["rtsp", "rtsps"] {
            if !out.iter().any(|p| p == scheme) {
                out.push(scheme.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn lists_common_protocols() {
        let p = super::input_protocols();
        for name in ["file", "udp", "http", "tcp", "rtsp"] {
            assert!(p.iter().any(|x| x == name), "{name} missing from {p:?}");
        }
    }
}
