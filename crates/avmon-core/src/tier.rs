//! Fidelity tiers: how much of a stream is decoded, so that every stream can be monitored at the
//! cost it can afford.
//!
//! | tier        | video decoded                       | what still works                                   |
//! |-------------|-------------------------------------|----------------------------------------------------|
//! | `full`      | every frame                         | every detector (the default)                       |
//! | `reference` | reference frames only               | black, freeze, corruption; not `av.sync`           |
//! | `keyframes` | keyframes only                      | black and freeze at keyframe granularity           |
//! | `transport` | none (the TS analyser sees every byte) | transport (TR 101 290), HLS, every audio detector |
//!
//! Audio is decoded in every tier. A [`TierControl`] is shared between whoever sets the tier (the
//! config, the API) and the input, which reads it once per packet: a change takes effect on the
//! next packet, without reconnecting.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// How much of a stream's video is decoded.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Every frame, every detector.
    #[default]
    Full = 0,
    /// Non-reference frames are skipped (FFmpeg's `AVDISCARD_NONREF`).
    Reference = 1,
    /// Only keyframes are decoded; other video packets never reach the decoder.
    Keyframes = 2,
    /// No video decode at all.
    Transport = 3,
}

impl Tier {
    pub const ALL: [Tier; 4] = [
        Tier::Full,
        Tier::Reference,
        Tier::Keyframes,
        Tier::Transport,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Full => "full",
            Tier::Reference => "reference",
            Tier::Keyframes => "keyframes",
            Tier::Transport => "transport",
        }
    }

    fn from_u8(v: u8) -> Tier {
        match v {
            1 => Tier::Reference,
            2 => Tier::Keyframes,
            3 => Tier::Transport,
            _ => Tier::Full,
        }
    }

    /// Whether video frames are decoded at all.
    pub fn decodes_video(self) -> bool {
        self != Tier::Transport
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown tier {0:?} (expected full, reference, keyframes or transport)")]
pub struct TierParseError(pub String);

impl FromStr for Tier {
    type Err = TierParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Tier::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| TierParseError(s.to_string()))
    }
}

/// A stream's tier, shared between the thread that decodes it and whoever changes it while it
/// runs. Cloning shares it.
#[derive(Clone, Debug, Default)]
pub struct TierControl(Arc<AtomicU8>);

impl TierControl {
    pub fn new(tier: Tier) -> Self {
        TierControl(Arc::new(AtomicU8::new(tier as u8)))
    }

    pub fn get(&self) -> Tier {
        Tier::from_u8(self.0.load(Ordering::Relaxed))
    }

    pub fn set(&self, tier: Tier) {
        self.0.store(tier as u8, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_parse_print_and_share() {
        for t in Tier::ALL {
            assert_eq!(t.as_str().parse::<Tier>().unwrap(), t);
            assert_eq!(Tier::from_u8(t as u8), t);
        }
        assert!("KeyFrames".parse::<Tier>().is_ok());
        let e = "half".parse::<Tier>().unwrap_err().to_string();
        assert!(e.contains("\"half\"") && e.contains("keyframes"), "{e}");
        let a = TierControl::default();
        let b = a.clone();
        assert_eq!(a.get(), Tier::Full);
        b.set(Tier::Keyframes);
        assert_eq!(a.get(), Tier::Keyframes);
    }
}
