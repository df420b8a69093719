//! Alerts: what the alert engine makes of findings.

use serde::{Deserialize, Serialize};

use crate::{Details, Severity, StreamId, WallTime};

/// Whether an alert is still open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Raised,
    Cleared,
}

/// An alert: one defect of one kind on one stream, from its onset to its end.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Unique, time-ordered id (UUIDv7).
    pub id: String,
    pub stream_id: StreamId,
    pub kind: String,
    pub severity: Severity,
    pub state: AlertState,
    /// Media time of the onset (seconds from the input's first timestamp).
    pub start_s: f64,
    /// Media time of the end; `None` while raised.
    pub end_s: Option<f64>,
    /// Wall time the alert was raised.
    pub raised_at: WallTime,
    /// Wall time the alert was cleared; `None` while raised.
    pub cleared_at: Option<WallTime>,
    /// The measured values behind the alert.
    pub details: Details,
}

/// What happened to an alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transition {
    Raised,
    Updated,
    Cleared,
}

impl Transition {
    /// `raised`, `updated` or `cleared`, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Raised => "raised",
            Transition::Updated => "updated",
            Transition::Cleared => "cleared",
        }
    }
}

/// An alert as of one transition: what the store persists and notifiers deliver.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    pub transition: Transition,
    pub alert: Alert,
}
