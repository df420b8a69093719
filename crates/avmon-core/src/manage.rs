//! Alert management: acknowledgements, muted streams, maintenance windows, and why an alert was
//! not notified. The store persists these, the alert crate's `Suppression` applies them, the API
//! shows them.

use serde::{Deserialize, Serialize};

use crate::{Alert, WallTime};

/// Who acknowledged an alert, when, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    /// The name of the API token that acknowledged it (never the token itself).
    pub by: String,
    pub comment: String,
    pub at: WallTime,
}

/// A muted stream: its alerts are still raised and stored, marked `muted`, and not notified.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mute {
    pub stream_id: String,
    /// Muted until this time; `None`: until unmuted.
    pub until: Option<WallTime>,
    pub by: String,
    pub comment: String,
    pub at: WallTime,
}

impl Mute {
    /// Whether the mute is in force at `now`.
    pub fn active_at(&self, now: WallTime) -> bool {
        match self.until {
            Some(u) => now < u,
            None => true,
        }
    }
}

/// A maintenance window: alerts of matching streams raised between `start` and `end` are stored,
/// marked `maintenance`, and not notified.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MaintenanceWindow {
    /// `config-N` for the config file's N-th window; a UUIDv7 for one added over the API.
    pub id: String,
    /// Stream id globs (`*` any run of characters, `?` one character): `["news-*", "sport"]`.
    pub streams: Vec<String>,
    pub start: WallTime,
    pub end: WallTime,
    pub comment: String,
    /// The API token's name that created it, or `config`.
    pub by: String,
}

impl MaintenanceWindow {
    /// Whether `stream` is covered by this window at `now`.
    pub fn covers(&self, stream: &str, now: WallTime) -> bool {
        self.start <= now && now < self.end && self.streams.iter().any(|g| glob_match(g, stream))
    }
}

/// Why an alert was not notified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Suppressed {
    /// Raised while its stream was muted.
    Muted,
    /// Raised during a maintenance window covering its stream.
    Maintenance,
}

impl Suppressed {
    pub fn as_str(self) -> &'static str {
        match self {
            Suppressed::Muted => "muted",
            Suppressed::Maintenance => "maintenance",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "muted" => Some(Suppressed::Muted),
            "maintenance" => Some(Suppressed::Maintenance),
            _ => None,
        }
    }
}

/// An alert as stored, with what management added to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    #[serde(flatten)]
    pub alert: Alert,
    /// Set once acknowledged.
    pub ack: Option<Ack>,
    /// Set when the alert was raised while muted or in maintenance, and so never notified.
    pub suppressed: Option<Suppressed>,
}

/// Why `glob` is not a stream id glob (letters, digits, `-`, `_`, `.`, `*`, `?`), if it is not.
pub fn glob_problem(glob: &str) -> Option<String> {
    let plain: String = glob.chars().filter(|c| !matches!(c, '*' | '?')).collect();
    if glob.is_empty() {
        Some("must not be empty".into())
    } else if !plain.is_empty() && crate::StreamId::problem(&plain).is_some() {
        Some(format!(
            "{glob:?}: a stream id glob may contain only letters, digits, '-', '_', '.', '*' and '?'"
        ))
    } else {
        None
    }
}

/// `*` matches any run of characters (none included), `?` exactly one; everything else itself.
pub fn glob_match(pattern: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
    let (mut pi, mut si) = (0, 0);
    // Where the last `*` was, and where in `s` it currently stops.
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_documented() {
        for (p, s) in [
            ("news-*", "news-hd"),
            ("news-*", "news-"),
            ("*", "x"),
            ("*-hd", "sport-hd"),
            ("n?ws", "news"),
            ("a*b*c", "aXXbYYc"),
            ("sport", "sport"),
        ] {
            assert!(glob_match(p, s), "{p} ~ {s}");
        }
        for (p, s) in [
            ("news-*", "sport-hd"),
            ("n?ws", "nws"),
            ("sport", "sport2"),
            ("a*b*c", "aXXbYY"),
            ("", "x"),
        ] {
            assert!(!glob_match(p, s), "{p} !~ {s}");
        }
    }
}
