//! avmon's live HLS monitor.
//!
//! FFmpeg's HLS demuxer hides the failures an operator of an HLS origin needs to see: it retries
//! a missing segment quietly, waits on a playlist that stopped updating, and joins segments into
//! one timeline. This crate polls HLS itself, as a player does, and reports delivery as
//! [`Finding`](avmon_core::Finding)s with begin and end, like avmon's detectors:
//! `hls.stale`, `hls.segment_error`, `hls.slow_segment`, `hls.sequence_error`,
//! `hls.target_duration` and `hls.discontinuity` (the rules are in [`checks`]).
//!
//! # Contract
//!
//! - [`resolve`] loads the URL of an [`HlsConfig`]: a master playlist gives one
//!   [`VariantMonitor`] per chosen variant ([`VariantSelector`]: all, or by index, bandwidth or
//!   name), a media playlist gives one.
//! - [`VariantMonitor::run`] blocks its thread (avmon runs one thread per monitored variant)
//!   until the `stop` flag is set or the playlist ends. It reloads the playlist (RFC 8216, 6.3.4),
//!   fetches new segments in order, decrypts AES-128 ones, checks them, and hands an
//!   [`HlsSink`] the findings and each accepted [`Segment`]'s bytes, with a mark where a
//!   discontinuity or a gap precedes it. Those bytes are what a transport-stream analyser or a
//!   decoder (avmon's custom-I/O ingest) takes next.
//! - [`run_all`] / [`run_monitors`] run each chosen variant once (`avmon check`);
//!   [`keep_monitoring`] keeps them going until stopped, loading a playlist again when it could
//!   not be loaded or ended (`avmon run`).
//! - Per-variant metrics ([`VariantStats`]): bitrate (bytes × 8 / `EXTINF` seconds) and download
//!   times, and counts of every check.
//! - **Media time** is the sum of the `EXTINF` durations since the monitor started; wall times
//!   (how long stale, how long a download) are in the findings' details.
//! - **Bad input is never a panic.** A malformed or hostile playlist is refused with a reason
//!   (at start: an [`HlsError`]; later: a failed reload, which ends in `hls.stale`); a bad
//!   segment is an `hls.segment_error`. Playlists and segments are capped in size
//!   (`max_playlist_bytes`, `max_segment_bytes`) and every request has a deadline.
//!
//! # Design choices
//!
//! - Pure Rust, no FFmpeg: `m3u8-rs` parses playlists ([`playlist`] says why, and what it
//!   checks on top), `reqwest`'s blocking client fetches (the monitor owns its thread anyway),
//!   RustCrypto's `aes` + `cbc` decrypt.
//! - A variant's segments are fetched one after another between reloads, as a simple player
//!   does, so the bytes come out in order without reassembly.
//! - The format is behind [`ManifestFormat`]: the monitor sees only [`MediaWindow`]s of
//!   [`SegmentRef`]s. DASH is a second implementation of that trait (see [`manifest`]).
//! - The parsers and [`checks`] need no network: without the default `net` feature (HTTP,
//!   the monitor) they build alone, as the fuzz targets in `fuzz/` use them.
//! - Only `METHOD=AES-128` is decrypted. Sample-level encryption (`SAMPLE-AES`) leaves the
//!   container in the clear; such segments are passed on as they are.

pub mod checks;
pub mod config;
pub mod dash;
pub mod fmp4;
#[cfg(feature = "net")]
pub mod http;
pub mod manifest;
#[cfg(feature = "net")]
mod monitor;
pub mod playlist;
pub mod segment;

/// A small deterministic generator for the tests that throw hostile input at the parsers.
#[cfg(test)]
pub(crate) fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

pub use checks::VariantStats;
pub use config::{is_dash_url, is_hls_url, is_manifest_url, HlsConfig, VariantSelector};
pub use dash::Dash;
pub use manifest::{Manifest, ManifestFormat, MediaWindow, SegmentRef, Variant};
#[cfg(feature = "net")]
pub use monitor::{
    keep_monitoring, resolve, run_all, run_monitors, HlsError, HlsSink, Retry, Segment,
    VariantMonitor, VariantRun,
};
pub use playlist::Hls;
