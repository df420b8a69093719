//! The detector contract.
//!
//! A detector is a unit with its own settings and state. It sees every decoded frame (borrowed),
//! and every advance of the media clock, and pushes [`Finding`]s into a reusable vector: a defect
//! began (with its *onset*, the first affected frame, not the moment its minimum duration was
//! reached) or ended. Detectors never decide what a finding means for alerting: hysteresis across
//! findings, ids, wall times and delivery belong to the alert engine.

use crate::{AudioBuffer, Details, Severity, Tier, VideoFrame};

/// Whether a finding opens or closes a defect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FindingEdge {
    /// The defect began at `Finding::t` (its onset).
    Begin,
    /// The defect ended at `Finding::t` (the first unaffected media time).
    End,
}

/// One observation of a detector.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub kind: &'static str,
    pub severity: Severity,
    pub edge: FindingEdge,
    /// Media time: onset for [`FindingEdge::Begin`], end for [`FindingEdge::End`].
    pub t: f64,
    /// The measured values behind the finding.
    pub details: Details,
}

impl Finding {
    pub fn begin(kind: &'static str, severity: Severity, t: f64, details: Details) -> Self {
        Finding {
            kind,
            severity,
            edge: FindingEdge::Begin,
            t,
            details,
        }
    }

    pub fn end(kind: &'static str, severity: Severity, t: f64, details: Details) -> Self {
        Finding {
            kind,
            severity,
            edge: FindingEdge::End,
            t,
            details,
        }
    }
}

/// Where detectors put findings. The caller reuses one vector per stream, so pushing allocates only
/// when a finding is actually made (which is rare).
pub type Findings = Vec<Finding>;

/// A defect detector. All methods have empty defaults, so a detector implements only what it uses.
pub trait Detector: Send {
    /// The kind this detector reports, e.g. `video.black`.
    fn kind(&self) -> &'static str;

    /// A decoded video frame, in presentation order.
    fn on_video(&mut self, _frame: &VideoFrame<'_>, _out: &mut Findings) {}

    /// A decoded audio buffer, in presentation order.
    fn on_audio(&mut self, _buf: &AudioBuffer<'_>, _out: &mut Findings) {}

    /// The stream's media clock reached `now`, whatever kind of data moved it. Loss detectors use
    /// this to notice that *their* kind of frame stopped while the rest of the stream flows.
    fn on_tick(&mut self, _now: f64, _out: &mut Findings) {}

    /// Periodic measurements for analytics, e.g. `("black_ratio", 0.0)`. Called once per metrics
    /// period; a detector resets its period accumulators here.
    fn take_metrics(&mut self, _put: &mut dyn FnMut(&'static str, f64)) {}

    /// Whole-input measurements for a report, as `("section.name", value)`, e.g.
    /// `("audio.integrated_lufs", -23.0)` or `("video.blockiness_max", 1.8)`. The section is the
    /// report's `summary` object the value goes into. Called once at the end of the input; a
    /// detector with nothing measured yet puts nothing.
    fn summarize(&self, _put: &mut dyn FnMut(&'static str, f64)) {}

    /// The stream's fidelity [`Tier`] is `tier` from now on (called once when a connection
    /// starts, and at each change). Below [`Tier::Full`] video frames come sparser (with gaps of
    /// several frames, or a keyframe interval, between them; each frame keeps its nominal
    /// `duration`) or not at all: a detector whose logic assumes every frame adapts here, or
    /// stands aside.
    fn on_tier(&mut self, _tier: Tier) {}

    /// The stream restarted (a reconnect): forget state tied to the previous connection's frames.
    fn reset(&mut self) {}
}
