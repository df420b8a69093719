//! avmon's defect detectors.
//!
//! Each detector lives in its own module: a `…Config` (what the user set: serde, defaults,
//! `validate`) and a state struct built from it that implements [`avmon_core::Detector`]. Detectors
//! only *report*: they push [`Finding`](avmon_core::Finding)s — a defect began (at its onset) or
//! ended (at the first unaffected media time) — and periodic metrics. What a finding means for
//! alerting (hysteresis across findings, ids, notification) is the alert engine's business.
//!
//! | kind            | module       | defect                                                       |
//! |-----------------|--------------|--------------------------------------------------------------|
//! | `video.black`   | [`black`]    | ≥ 98 % of the picture at or below black level, for ≥ 2 s      |
//! | `video.freeze`  | [`freeze`]   | the picture stops changing (lossy-encode tolerant), for ≥ 2 s |
//! | `audio.silence` | [`silence`]  | every channel below −60 dBFS RMS, for ≥ 2 s                   |
//! | `video.loss`    | [`loss`]     | no video frames for > 2 s while the media clock advances      |
//! | `audio.loss`    | [`loss`]     | no audio buffers for > 2 s while the media clock advances     |
//! | `av.sync`       | [`avsync`]   | flash/beep offset outside −45…+125 ms (2 pairs), or the A/V clocks diverge > 150 ms for ≥ 2 s |
//! | `audio.clipping` | [`clipping`] | ≥ 2 runs of ≥ 3 full-scale samples per 250 ms, for ≥ 0.5 s |
//! | `audio.channel_silence` | [`channel_silence`] | a channel below −60 dBFS while another is above −45 dBFS (LFE ignored), for ≥ 2 s |
//! | `audio.dropout` | [`dropout`] | a timestamp gap (10 ms–2 s), a run of digital zeros (10–500 ms) in sound, or a click |
//! | `audio.loudness` | [`loudness`] | short-term loudness (BS.1770) outside target ± 6 LU for ≥ 10 s; integrated loudness, LRA, true peak |
//!
//! # Contract
//!
//! - **Media time only.** Every time in a finding is media time (`frame.t`, `buf.t`, the tick's
//!   `now`); detectors never look at the wall clock, so they are deterministic and testable.
//! - **Onset, not detection time.** `Begin.t` is the first affected frame (or audio window), emitted
//!   only once the defect has lasted its minimum duration; `End.t` is the first unaffected time.
//!   Every `Begin` is followed by exactly one `End`, even across a [`reset`](avmon_core::Detector::reset)
//!   (the owed `End` is emitted at the next call, with `"reset": true`).
//! - **No allocation per frame** after warm-up: pictures are measured in place on a 2×2 subsampled
//!   grid (see `luma`); the freeze detector's reference picture is preallocated and reused (it
//!   reallocates only when the resolution changes); audio sums live in fixed arrays. Only emitting a
//!   finding allocates (its details), and that is rare.
//! - **Read only what the answer needs.** All detectors together must stay a fraction of the
//!   decode's own cost (about 12 instructions a pixel for 720p H.264): the black test stops reading
//!   once a picture is known not to be black (a few rows of an ordinary one), the freeze
//!   comparison once a picture is known to have changed.
//! - **One definition of black.** The freeze detector classifies black pictures with the black
//!   detector's settings and never reports them as frozen: a black picture is reported once, as black.
//!
//! # Adding a detector
//!
//! One module with its config, state and tests; one field in [`DetectorsConfig`] (and its
//! `validate` line); one line in the registry in this file. [`KINDS`] follows the registry.

use avmon_core::{kinds, Detector, VideoFrame};
use serde::{Deserialize, Serialize};

pub mod avsync;
pub mod black;
pub mod captions;
pub mod channel_silence;
pub mod chroma;
pub mod clipping;
pub mod corruption;
pub mod damage_model;
pub mod dropout;
pub mod freeze;
pub mod loss;
pub mod loudness;
pub mod quality;
pub mod silence;

mod bs1770;
mod episode;
mod luma;
#[cfg(test)]
mod testutil;
mod windows;

pub use avsync::{AvSyncConfig, AvSyncDetector};
pub use black::{BlackConfig, BlackDetector};
pub use captions::{CaptionsConfig, CaptionsDetector};
pub use channel_silence::{ChannelSilenceConfig, ChannelSilenceDetector};
pub use clipping::{ClippingConfig, ClippingDetector};
pub use corruption::{CorruptionConfig, CorruptionDetector};
pub use dropout::{DropoutConfig, DropoutDetector};
pub use freeze::{FreezeConfig, FreezeDetector};
pub use loss::{LossConfig, LossDetector};
pub use loudness::{LoudnessConfig, LoudnessDetector};
pub use silence::{SilenceConfig, SilenceDetector};

/// The settings of every detector of a stream (TOML table `[detectors]`, or per stream).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorsConfig {
    /// Black picture (`video.black`).
    pub black: BlackConfig,
    /// Frozen picture (`video.freeze`).
    pub freeze: FreezeConfig,
    /// Silent audio (`audio.silence`).
    pub silence: SilenceConfig,
    /// No video frames while the stream is up (`video.loss`).
    pub video_loss: LossConfig,
    /// No audio buffers while the stream is up (`audio.loss`).
    pub audio_loss: LossConfig,
    /// Audio/video sync (`av.sync`).
    pub av_sync: AvSyncConfig,
    /// Damaged, blocky pictures (`video.corruption`).
    pub corruption: CorruptionConfig,
    /// Programme loudness outside its target (`audio.loudness`).
    pub loudness: LoudnessConfig,
    /// Audio hitting full scale (`audio.clipping`).
    pub clipping: ClippingConfig,
    /// Some channels silent while others carry sound (`audio.channel_silence`).
    pub channel_silence: ChannelSilenceConfig,
    /// Short gaps, zero runs and clicks in the audio (`audio.dropout`).
    pub dropout: DropoutConfig,
    /// UDP/RTP delivery, RFC 4445's Media Delivery Index (`network.delay_factor`,
    /// `network.media_loss`).
    pub mdi: MdiConfig,
    /// SCTE 35 cues in the transport stream (`scte35.*`).
    pub scte35: Scte35Config,
    /// Closed captions carried in the pictures (`captions.missing`).
    pub captions: CaptionsConfig,
}

/// What is asked of the SCTE 35 cues in a transport stream.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scte35Config {
    /// Record cues and judge them.
    pub enabled: bool,
    /// `scte35.late_cue` when a cue's splice time is less than this far ahead when it arrives,
    /// seconds (SCTE 67 asks for at least 4 s, so that a splicer can act).
    pub min_preroll_s: f64,
    /// An avail without a duration is expected to end within this many seconds.
    pub max_break_s: f64,
    /// `scte35.missing_cue_in` this long after an avail's end without a cue-in, seconds.
    pub grace_s: f64,
    /// `scte35.no_cues` when no cue (other than `splice_null` heartbeats) comes for this long,
    /// seconds; unset: cues are not expected.
    pub expect_every_s: Option<f64>,
}

impl Default for Scte35Config {
    fn default() -> Self {
        Scte35Config {
            enabled: true,
            min_preroll_s: 4.0,
            max_break_s: 600.0,
            grace_s: 5.0,
            expect_every_s: None,
        }
    }
}

impl Scte35Config {
    /// Push one message per invalid setting, prefixed with `path`.
    pub fn validate(&self, path: &str, errors: &mut Vec<String>) {
        check::within(
            path,
            "min_preroll_s",
            self.min_preroll_s,
            0.0,
            3600.0,
            errors,
        );
        check::positive(path, "max_break_s", self.max_break_s, errors);
        check::within(path, "grace_s", self.grace_s, 0.0, 3600.0, errors);
        if let Some(e) = self.expect_every_s {
            check::positive(path, "expect_every_s", e, errors);
        }
    }
}

/// Limits on the Media Delivery Index of a UDP or RTP input (RFC 4445), measured each second
/// from the kernel's receive time of each datagram.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MdiConfig {
    /// Judge the index (it is measured and kept as metrics either way).
    pub enabled: bool,
    /// `network.delay_factor` when the delay factor is over this, milliseconds: the buffer a
    /// receiver needs to absorb the arrival jitter. Unset by default: what a source achieves
    /// depends on how it paces its packets (a CBR encoder pacing them evenly: a few ms; a
    /// software sender writing each picture as it comes: 100-250 ms), so only its operator
    /// can say what is wrong. The delay factor is measured and stored either way.
    pub df_max_ms: Option<f64>,
    /// `network.media_loss` when more TS packets than this are lost per second.
    pub mlr_max: f64,
    /// Seconds in a row over a limit before it is raised (a single late burst of a sender is
    /// not a network problem).
    pub raise_after_s: f64,
    /// Seconds in a row within the limit before it is cleared.
    pub clear_after_s: f64,
}

impl Default for MdiConfig {
    fn default() -> Self {
        MdiConfig {
            enabled: true,
            df_max_ms: None,
            mlr_max: 0.0,
            raise_after_s: 3.0,
            clear_after_s: 5.0,
        }
    }
}

impl MdiConfig {
    /// Push one message per invalid setting, prefixed with `path`.
    pub fn validate(&self, path: &str, errors: &mut Vec<String>) {
        if let Some(df) = self.df_max_ms {
            check::positive(path, "df_max_ms", df, errors);
        }
        check::within(path, "mlr_max", self.mlr_max, 0.0, 1e9, errors);
        check::within(
            path,
            "raise_after_s",
            self.raise_after_s,
            1.0,
            3600.0,
            errors,
        );
        check::within(
            path,
            "clear_after_s",
            self.clear_after_s,
            1.0,
            3600.0,
            errors,
        );
    }
}

impl DetectorsConfig {
    /// Check every setting, pushing one message per problem, each prefixed with its path
    /// (`{path}.black.ratio: …`). An empty `path` gives `black.ratio: …`.
    pub fn validate(&self, path: &str, errors: &mut Vec<String>) {
        self.black.validate(&join(path, "black"), errors);
        self.freeze.validate(&join(path, "freeze"), errors);
        self.silence.validate(&join(path, "silence"), errors);
        self.video_loss.validate(&join(path, "video_loss"), errors);
        self.audio_loss.validate(&join(path, "audio_loss"), errors);
        self.av_sync.validate(&join(path, "av_sync"), errors);
        self.corruption.validate(&join(path, "corruption"), errors);
        self.loudness.validate(&join(path, "loudness"), errors);
        self.clipping.validate(&join(path, "clipping"), errors);
        self.channel_silence
            .validate(&join(path, "channel_silence"), errors);
        self.dropout.validate(&join(path, "dropout"), errors);
        self.mdi.validate(&join(path, "mdi"), errors);
        self.scte35.validate(&join(path, "scte35"), errors);
        self.captions.validate(&join(path, "captions"), errors);
    }
}

/// Which elementary streams the input carries.
#[derive(Clone, Copy, Debug)]
struct Carries {
    video: bool,
    audio: bool,
}

type Build = fn(&DetectorsConfig, Carries) -> Option<Box<dyn Detector>>;

/// Every detector, in the order they see media. A detector needs its kind of stream and to be
/// enabled.
const REGISTRY: &[(&str, Build)] = &[
    (kinds::VIDEO_BLACK, |c, m| {
        (m.video && c.black.enabled).then(|| Box::new(BlackDetector::new(&c.black)) as _)
    }),
    (kinds::VIDEO_FREEZE, |c, m| {
        (m.video && c.freeze.enabled)
            .then(|| Box::new(FreezeDetector::new(&c.freeze, &c.black)) as _)
    }),
    (kinds::VIDEO_LOSS, |c, m| {
        (m.video && c.video_loss.enabled).then(|| Box::new(LossDetector::video(&c.video_loss)) as _)
    }),
    (kinds::VIDEO_CORRUPTION, |c, m| {
        (m.video && c.corruption.enabled)
            .then(|| Box::new(CorruptionDetector::new(&c.corruption)) as _)
    }),
    (kinds::AUDIO_SILENCE, |c, m| {
        (m.audio && c.silence.enabled).then(|| Box::new(SilenceDetector::new(&c.silence)) as _)
    }),
    (kinds::AUDIO_LOSS, |c, m| {
        (m.audio && c.audio_loss.enabled).then(|| Box::new(LossDetector::audio(&c.audio_loss)) as _)
    }),
    (kinds::AUDIO_LOUDNESS, |c, m| {
        (m.audio && c.loudness.enabled).then(|| Box::new(LoudnessDetector::new(&c.loudness)) as _)
    }),
    (kinds::AUDIO_CLIPPING, |c, m| {
        (m.audio && c.clipping.enabled).then(|| Box::new(ClippingDetector::new(&c.clipping)) as _)
    }),
    (kinds::AUDIO_CHANNEL_SILENCE, |c, m| {
        (m.audio && c.channel_silence.enabled)
            .then(|| Box::new(ChannelSilenceDetector::new(&c.channel_silence)) as _)
    }),
    (kinds::AUDIO_DROPOUT, |c, m| {
        (m.audio && c.dropout.enabled).then(|| Box::new(DropoutDetector::new(&c.dropout)) as _)
    }),
    (kinds::AV_SYNC, |c, m| {
        (m.video && m.audio && c.av_sync.enabled)
            .then(|| Box::new(AvSyncDetector::new(&c.av_sync)) as _)
    }),
    (kinds::CAPTIONS_MISSING, |c, m| {
        (m.video && c.captions.enabled).then(|| Box::new(CaptionsDetector::new(&c.captions)) as _)
    }),
];

const KIND_LIST: [&str; REGISTRY.len()] = {
    let mut k = [""; REGISTRY.len()];
    let mut i = 0;
    while i < k.len() {
        k[i] = REGISTRY[i].0;
        i += 1;
    }
    k
};

/// Every kind this crate can report, in registry order.
pub const KINDS: &[&str] = &KIND_LIST;

/// Build the enabled detectors for an input. Video detectors (black, freeze, video loss) are built
/// only when the input carries video, audio ones only when it carries audio: a stream without audio
/// never reports `audio.loss`. Rebuild (or [`LossDetector::expect`]) when a reconnect finds
/// different streams.
pub fn build(cfg: &DetectorsConfig, has_video: bool, has_audio: bool) -> Vec<Box<dyn Detector>> {
    let carries = Carries {
        video: has_video,
        audio: has_audio,
    };
    REGISTRY
        .iter()
        .filter_map(|(_, build)| build(cfg, carries))
        .collect()
}

/// Record a tier change of a video detector; true when `new` differs from `cur`. Detectors that
/// compare frames with earlier ones (freeze, black, corruption baselines, A/V skew) start afresh
/// at a change: the frames before it were decoded at another spacing, or before a gap with none.
pub(crate) fn tier_changed(cur: &mut avmon_core::Tier, new: avmon_core::Tier) -> bool {
    std::mem::replace(cur, new) != new
}

/// A frame's nominal duration, 0 when unknown.
pub(crate) fn frame_duration(frame: &VideoFrame<'_>) -> f64 {
    if frame.duration.is_finite() && frame.duration > 0.0 {
        frame.duration
    } else {
        0.0
    }
}

/// The buffer's speaker layout when it names every channel, else FFmpeg's default layout for the
/// channel count (`av_channel_layout_default`: 1 mono, 2 stereo, 3 2.1, 4 4.0, 5 5.0, 6 5.1 =
/// FL FR FC LFE BL BR, 7 6.1, 8 7.1); 0 beyond 8 channels.
pub(crate) fn layout_or_default(layout: u64, channels: usize) -> u64 {
    use avmon_core::speaker::*;
    if of_channels(layout, channels).is_some() {
        return layout;
    }
    match channels {
        1 => MONO,
        2 => STEREO,
        3 => STEREO | LOW_FREQUENCY,
        4 => STEREO | FRONT_CENTER | BACK_CENTER,
        5 => STEREO | FRONT_CENTER | BACK_LEFT | BACK_RIGHT,
        6 => SURROUND_5_1,
        7 => STEREO | FRONT_CENTER | LOW_FREQUENCY | BACK_CENTER | SIDE_LEFT | SIDE_RIGHT,
        8 => SURROUND_5_1 | SIDE_LEFT | SIDE_RIGHT,
        _ => 0,
    }
}

/// The short name of a speaker bit (`FL`, `LFE`, …), as FFmpeg names it.
pub(crate) fn speaker_name(bit: u64) -> &'static str {
    use avmon_core::speaker::*;
    match bit {
        FRONT_LEFT => "FL",
        FRONT_RIGHT => "FR",
        FRONT_CENTER => "FC",
        LOW_FREQUENCY => "LFE",
        BACK_LEFT => "BL",
        BACK_RIGHT => "BR",
        FRONT_LEFT_OF_CENTER => "FLC",
        FRONT_RIGHT_OF_CENTER => "FRC",
        BACK_CENTER => "BC",
        SIDE_LEFT => "SL",
        SIDE_RIGHT => "SR",
        LOW_FREQUENCY_2 => "LFE2",
        _ => "other",
    }
}

/// `path.field`, or `field` at the root.
fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

/// Shared checks for config fields, with vector-style messages: `{path}.{field}: {problem} (got {v})`.
pub(crate) mod check {
    /// A duration or size that must be finite and > 0.
    pub fn positive(path: &str, field: &str, v: f64, errors: &mut Vec<String>) {
        if !(v.is_finite() && v > 0.0) {
            errors.push(format!(
                "{}: must be > 0 (got {v})",
                super::join(path, field)
            ));
        }
    }

    /// A value that must lie in `lo..=hi`.
    pub fn within(path: &str, field: &str, v: f64, lo: f64, hi: f64, errors: &mut Vec<String>) {
        if !(lo..=hi).contains(&v) {
            errors.push(format!(
                "{}: must be between {lo} and {hi} (got {v})",
                super::join(path, field)
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_registry_and_build_respects_streams_and_enabled() {
        assert_eq!(
            KINDS,
            [
                "video.black",
                "video.freeze",
                "video.loss",
                "video.corruption",
                "audio.silence",
                "audio.loss",
                "audio.loudness",
                "audio.clipping",
                "audio.channel_silence",
                "audio.dropout",
                "av.sync",
                "captions.missing",
            ]
        );
        let cfg = DetectorsConfig::default();
        let all: Vec<_> = build(&cfg, true, true).iter().map(|d| d.kind()).collect();
        assert_eq!(all, KINDS);
        let audio_only: Vec<_> = build(&cfg, false, true).iter().map(|d| d.kind()).collect();
        assert_eq!(audio_only, KINDS[4..KINDS.len() - 2]);
        let video_only: Vec<_> = build(&cfg, true, false).iter().map(|d| d.kind()).collect();
        assert_eq!(
            video_only,
            [
                "video.black",
                "video.freeze",
                "video.loss",
                "video.corruption",
                "captions.missing"
            ]
        );

        let mut cfg = DetectorsConfig::default();
        cfg.freeze.enabled = false;
        cfg.audio_loss.enabled = false;
        let some: Vec<_> = build(&cfg, true, true).iter().map(|d| d.kind()).collect();
        assert_eq!(
            some,
            [
                "video.black",
                "video.loss",
                "video.corruption",
                "audio.silence",
                "audio.loudness",
                "audio.clipping",
                "audio.channel_silence",
                "audio.dropout",
                "av.sync",
                "captions.missing"
            ]
        );
    }

    #[test]
    fn config_parses_partially_and_rejects_unknown_fields() {
        let cfg: DetectorsConfig = serde_json::from_str(
            r#"{"black": {"min_duration": 5.0}, "audio_loss": {"enabled": false}}"#,
        )
        .unwrap();
        assert_eq!(cfg.black.min_duration, 5.0);
        assert_eq!(cfg.black.ratio, BlackConfig::default().ratio);
        assert!(!cfg.audio_loss.enabled);
        assert!(cfg.video_loss.enabled);

        let err = serde_json::from_str::<DetectorsConfig>(r#"{"blak": {}}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `blak`"), "{err}");
        let err =
            serde_json::from_str::<DetectorsConfig>(r#"{"black": {"treshold": 1}}"#).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `treshold`"),
            "{err}"
        );
        let err = serde_json::from_str::<DetectorsConfig>(r#"{"silence": {"severity": "fatal"}}"#)
            .unwrap_err();
        assert!(err.to_string().contains("unknown variant `fatal`"), "{err}");
    }

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let cfg = DetectorsConfig::default();
        let mut errors = Vec::new();
        cfg.validate("detectors", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let json = serde_json::to_string(&cfg).unwrap();
        assert_eq!(serde_json::from_str::<DetectorsConfig>(&json).unwrap(), cfg);
    }

    #[test]
    fn validation_gathers_every_error_with_its_path() {
        let mut cfg = DetectorsConfig::default();
        cfg.black.min_duration = -1.0;
        cfg.black.exit_ratio = 0.99;
        cfg.freeze.mad_threshold = 0.0;
        cfg.silence.window_ms = 0.0;
        cfg.silence.threshold_db = 3.0;
        cfg.video_loss.timeout = f64::NAN;
        let mut errors = Vec::new();
        cfg.validate("streams[2].detectors", &mut errors);
        assert_eq!(
            errors,
            [
                "streams[2].detectors.black.exit_ratio: must be between 0 and 0.98 (got 0.99)",
                "streams[2].detectors.black.min_duration: must be > 0 (got -1)",
                "streams[2].detectors.freeze.mad_threshold: must be > 0 (got 0)",
                "streams[2].detectors.silence.threshold_db: must be between -120 and 0 (got 3)",
                "streams[2].detectors.silence.window_ms: must be > 0 (got 0)",
                "streams[2].detectors.video_loss.timeout: must be > 0 (got NaN)",
            ]
        );
        let mut errors = Vec::new();
        cfg.validate("", &mut errors);
        assert_eq!(errors[1], "black.min_duration: must be > 0 (got -1)");
    }
}
