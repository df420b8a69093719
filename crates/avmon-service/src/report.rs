//! What an analysis of one input found, as `avmon check` reports it: shared by the check and
//! the HLS monitor (whose cleared alerts become report events).

use avmon_core::Severity;
use serde::Serialize;

/// One defect found in an input, on its media clock.
#[derive(Debug, Serialize)]
pub struct Event {
    pub kind: String,
    pub severity: Severity,
    pub start_s: f64,
    pub end_s: f64,
    pub details: avmon_core::Details,
}

/// Inputs that never end by themselves.
pub fn is_live(input: &str) -> bool {
    const LIVE: [&str; 8] = [
        "udp://", "rtp://", "srt://", "rtmp://", "rtmps://", "rtsp://", "tcp://", "rist://",
    ];
    LIVE.iter().any(|p| input.starts_with(p))
}
