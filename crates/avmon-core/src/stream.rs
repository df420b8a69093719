//! Stream identity, what a stream carries, and severities.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A stream's id as configured (`news-hd`). Validated by the config layer: 1–64 characters of
/// letters, digits, `-`, `_` and `.`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StreamId(pub String);

impl StreamId {
    /// Why `s` is not a valid stream id, or `None` when it is.
    pub fn problem(s: &str) -> Option<&'static str> {
        if s.is_empty() {
            Some("must not be empty")
        } else if s.len() > 64 {
            Some("must be at most 64 characters")
        } else if !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            Some("may contain only letters, digits, '-', '_' and '.'")
        } else {
            None
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How bad a defect is, in increasing order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Minor,
    Major,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] = [
        Severity::Info,
        Severity::Warning,
        Severity::Minor,
        Severity::Major,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Minor => "minor",
            Severity::Major => "major",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown severity {0:?} (expected info, warning, minor, major or critical)")]
pub struct SeverityParseError(pub String);

impl FromStr for Severity {
    type Err = SeverityParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Severity::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| SeverityParseError(s.to_string()))
    }
}

/// The video elementary stream an input carries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VideoInfo {
    pub codec: String,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
}

/// The audio elementary stream an input carries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AudioInfo {
    pub codec: String,
    pub channels: u32,
    pub sample_rate: u32,
}

/// What an opened input carries (the streams avmon decodes).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MediaInfo {
    pub format: String,
    pub video: Option<VideoInfo>,
    pub audio: Option<AudioInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_parse_and_order() {
        assert_eq!("Major".parse::<Severity>().unwrap(), Severity::Major);
        assert!("fatal".parse::<Severity>().is_err());
        assert!(Severity::Critical > Severity::Major && Severity::Warning > Severity::Info);
    }

    #[test]
    fn stream_ids_are_checked() {
        assert!(StreamId::problem("news-hd_1.a").is_none());
        assert!(StreamId::problem("").is_some());
        assert!(StreamId::problem("a b").is_some());
        assert!(StreamId::problem(&"x".repeat(65)).is_some());
    }
}
