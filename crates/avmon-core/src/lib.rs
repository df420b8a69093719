//! avmon's shared vocabulary.
//!
//! Everything that crosses a crate boundary in the pipeline
//! `ingest → decode → detect → findings → alerts → store / notifiers / API` is defined here:
//!
//! - [`VideoFrame`] and [`AudioBuffer`]: *borrowed* views of decoded media. The media crate builds
//!   them over the decoder's own buffers and hands them to detectors by reference; nothing is copied.
//! - [`Detector`]: the trait every defect detector implements. A detector only *reports*
//!   [`Finding`]s; the alert engine decides what they mean (raise, update, clear).
//! - [`Alert`] and [`AlertEvent`]: what the alert engine produces and stores, notifiers and the API consume.
//!
//! Two clocks run through these types. **Media time** (`f64` seconds from the input's first
//! timestamp) says where a defect is in the stream. **Wall time** ([`WallTime`], UTC) says when it was
//! seen and delivered.
//!
//! This crate has no FFmpeg, no database and no async runtime, so every other crate can be tested
//! without media files.

mod alert;
mod detector;
mod frame;
mod manage;
#[doc(hidden)]
pub mod mutate;
pub mod sched;
mod stream;
mod tier;

pub use alert::{Alert, AlertEvent, AlertState, Transition};
pub use detector::{Detector, Finding, FindingEdge, Findings};
pub use frame::{decode_error, speaker, AudioBuffer, Plane, VideoFrame, MAX_AUDIO_CHANNELS};
pub use manage::{glob_match, glob_problem, Ack, AlertRecord, MaintenanceWindow, Mute, Suppressed};
pub use stream::{AudioInfo, MediaInfo, Severity, SeverityParseError, StreamId, VideoInfo};
pub use tier::{Tier, TierControl, TierParseError};

/// Wall-clock time, always UTC.
pub type WallTime = chrono::DateTime<chrono::Utc>;

/// Free-form measured values attached to findings and alerts (`{"black_ratio": 0.99, ...}`).
pub type Details = serde_json::Map<String, serde_json::Value>;

/// The kinds of defect avmon reports. Kinds are plain dotted strings (`video.black`) so that the
/// store, the API and notifiers treat new kinds without a schema change.
pub mod kinds {
    pub const VIDEO_BLACK: &str = "video.black";
    pub const VIDEO_FREEZE: &str = "video.freeze";
    pub const VIDEO_LOSS: &str = "video.loss";
    pub const AUDIO_SILENCE: &str = "audio.silence";
    pub const AUDIO_LOSS: &str = "audio.loss";
    pub const SOURCE_DOWN: &str = "source.down";
    pub const VIDEO_CORRUPTION: &str = "video.corruption";
    pub const AUDIO_LOUDNESS: &str = "audio.loudness";
    pub const AUDIO_CLIPPING: &str = "audio.clipping";
    pub const AUDIO_CHANNEL_SILENCE: &str = "audio.channel_silence";
    pub const AUDIO_DROPOUT: &str = "audio.dropout";
    pub const AV_SYNC: &str = "av.sync";
    /// The service lowered the stream's fidelity tier below the configured one because the host
    /// fell behind real time (automatic degradation); cleared when the tier is restored.
    pub const MONITOR_DEGRADED: &str = "monitor.degraded";
    /// The stream is behind real time and the service cannot help it: every stream is at its
    /// lowest tier already, or automatic degradation is off. More capacity is needed; cleared
    /// once the stream keeps up again.
    pub const MONITOR_BEHIND: &str = "monitor.behind";
    /// HLS delivery (`avmon-hls`): the media playlist stopped updating.
    pub const HLS_STALE: &str = "hls.stale";
    /// HLS delivery: a segment failed (HTTP error, timeout, empty or undecodable).
    pub const HLS_SEGMENT_ERROR: &str = "hls.segment_error";
    /// HLS delivery: a segment took longer to download than it lasts.
    pub const HLS_SLOW_SEGMENT: &str = "hls.slow_segment";
    /// HLS delivery: the media sequence went backwards or skipped segments.
    pub const HLS_SEQUENCE_ERROR: &str = "hls.sequence_error";
    /// HLS delivery: a segment longer than the playlist's target duration.
    pub const HLS_TARGET_DURATION: &str = "hls.target_duration";
    /// HLS delivery: an `EXT-X-DISCONTINUITY` (informational).
    pub const HLS_DISCONTINUITY: &str = "hls.discontinuity";
    /// DASH delivery (`avmon-hls`): the MPD stopped updating (longer than `stale_factor` ×
    /// the larger of `minimumUpdatePeriod` and the longest segment).
    pub const DASH_STALE: &str = "dash.stale";
    /// DASH delivery: a segment failed (HTTP error, timeout, empty), or was not there when
    /// the MPD's clock says it is available.
    pub const DASH_SEGMENT_ERROR: &str = "dash.segment_error";
    /// DASH delivery: a segment took longer to download than it lasts.
    pub const DASH_SLOW_SEGMENT: &str = "dash.slow_segment";
    /// DASH delivery: segments left the window before the MPD listed them, or the timeline
    /// started over.
    pub const DASH_SEQUENCE_ERROR: &str = "dash.sequence_error";
    /// DASH delivery: a segment longer than the MPD's `maxSegmentDuration`.
    pub const DASH_SEGMENT_DURATION: &str = "dash.segment_duration";
    /// DASH delivery: a new Period begins (informational).
    pub const DASH_PERIOD: &str = "dash.period";
    /// DASH delivery: the SegmentTimeline leaves media time uncovered between two segments.
    pub const DASH_TIMELINE_GAP: &str = "dash.timeline_gap";
    /// DASH delivery: two segments of the SegmentTimeline overlap.
    pub const DASH_TIMELINE_OVERLAP: &str = "dash.timeline_overlap";
    /// DASH delivery: `availabilityStartTime` changed between two updates of a live MPD
    /// (players lose their place).
    pub const DASH_AVAILABILITY_START: &str = "dash.availability_start";
    /// DASH delivery: an update's `publishTime` is earlier than the last one's (an older MPD
    /// served again).
    pub const DASH_PUBLISH_TIME: &str = "dash.publish_time";
    /// UDP/RTP delivery: RFC 4445's delay factor over its limit (arrival jitter a receiver
    /// must buffer).
    pub const NETWORK_DELAY_FACTOR: &str = "network.delay_factor";
    /// UDP/RTP delivery: RFC 4445's media loss rate over its limit (TS packets lost).
    pub const NETWORK_MEDIA_LOSS: &str = "network.media_loss";
    /// Closed captions expected (configured, or declared by the stream) and no caption text
    /// for a while.
    pub const CAPTIONS_MISSING: &str = "captions.missing";
    /// An SCTE 35 cue (information: one event per cue, with what it says).
    pub const SCTE35_CUE: &str = "scte35.cue";
    /// An SCTE 35 cue that came too late: its splice time less than `min_preroll_s` ahead, or
    /// already past.
    pub const SCTE35_LATE_CUE: &str = "scte35.late_cue";
    /// An avail (a cue-out) whose end passed without a cue-in.
    pub const SCTE35_MISSING_CUE_IN: &str = "scte35.missing_cue_in";
    /// No SCTE 35 cue for longer than a stream that expects them allows.
    pub const SCTE35_NO_CUES: &str = "scte35.no_cues";
}

/// Round a media time to milliseconds for reports, so JSON shows `8.04` rather than `8.039999999`.
pub fn round_ms(t: f64) -> f64 {
    (t * 1000.0).round() / 1000.0
}
