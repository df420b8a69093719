//! `audio.channel_silence`: some channels are silent while the others carry sound.
//!
//! Audio is measured per channel over consecutive windows of `window_ms` (100 ms by default) that
//! run across buffer boundaries. A window is affected when at least one channel's RMS is below
//! `silence_db` (−60 dBFS) while at least one other channel is above `active_db` (−45 dBFS): a
//! dead channel of a stereo pair, a missing centre in 5.1. When every channel is silent that is
//! `audio.silence`, not this; a mono input never reports this.
//!
//! LFE channels (by the buffer's layout, or FFmpeg's default layout for the channel count when the
//! layout is unknown: channel 3 of 6) are ignored by default, since LFE is often legitimately
//! empty; `include_lfe = true` checks them too.
//!
//! The onset is the start of the first affected window; the defect is reported once affected
//! windows cover `min_duration` (2 s), and ends at the first window where no channel is silent
//! (or where none is active any more). Times are exact to a window.
//!
//! Details: `channels` (indices of the silent channels, when the defect was confirmed),
//! `speakers` (their names, e.g. `["FR"]`, when the layout is known), `level_db` (RMS of the
//! loudest silent channel, dBFS, floor −120) and `others_db` (RMS of the loudest channel);
//! `duration_s` on `End`.

use avmon_core::{kinds, speaker, AudioBuffer, Detector, Findings, Severity, MAX_AUDIO_CHANNELS};
use serde::{Deserialize, Serialize};

use crate::check;
use crate::episode::{put, Episode};
use crate::silence::FLOOR_DB;
use crate::windows::{sum_squares, AudioWindows, Change, Window};

/// Settings of the channel silence detector.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelSilenceConfig {
    /// Run this detector.
    pub enabled: bool,
    /// Severity of the findings (and so of the alerts).
    pub severity: Severity,
    /// A channel is silent below this RMS level, in dBFS.
    pub silence_db: f64,
    /// Another channel must be above this RMS level, in dBFS (above `silence_db`).
    pub active_db: f64,
    /// Length of the measuring windows, in milliseconds (10 to 1000).
    pub window_ms: f64,
    /// Seconds of continuous channel silence before it is reported.
    pub min_duration: f64,
    /// Check LFE channels too (they are often empty).
    pub include_lfe: bool,
}

impl Default for ChannelSilenceConfig {
    fn default() -> Self {
        ChannelSilenceConfig {
            enabled: true,
            severity: Severity::Major,
            silence_db: -60.0,
            active_db: -45.0,
            window_ms: 100.0,
            min_duration: 2.0,
            include_lfe: false,
        }
    }
}

impl ChannelSilenceConfig {
    /// Push one message per invalid setting, prefixed with `path`.
    pub fn validate(&self, path: &str, errors: &mut Vec<String>) {
        check::within(path, "silence_db", self.silence_db, FLOOR_DB, 0.0, errors);
        check::within(path, "active_db", self.active_db, FLOOR_DB, 0.0, errors);
        if self.active_db <= self.silence_db {
            errors.push(format!(
                "{path}.active_db: must be above silence_db = {} (got {})",
                self.silence_db, self.active_db
            ));
        }
        check::within(path, "window_ms", self.window_ms, 10.0, 1000.0, errors);
        check::positive(path, "min_duration", self.min_duration, errors);
    }
}

fn power_db(mean_square: f64) -> f64 {
    if mean_square > 0.0 {
        (10.0 * mean_square.log10()).max(FLOOR_DB)
    } else {
        FLOOR_DB
    }
}

/// The channel silence detector's state.
pub struct ChannelSilenceDetector {
    silence_power: f64,
    active_power: f64,
    include_lfe: bool,
    episode: Episode,
    /// Channels and layout of the current format.
    channels: usize,
    layout: u64,
    /// Speaker of each channel (0 when unknown), and whether it is checked.
    speakers: [u64; MAX_AUDIO_CHANNELS],
    checked: [bool; MAX_AUDIO_CHANNELS],
    windows: AudioWindows,
    sum_sq: [f64; MAX_AUDIO_CHANNELS],
}

impl ChannelSilenceDetector {
    pub fn new(cfg: &ChannelSilenceConfig) -> Self {
        ChannelSilenceDetector {
            silence_power: 10f64.powf(cfg.silence_db / 10.0),
            active_power: 10f64.powf(cfg.active_db / 10.0),
            include_lfe: cfg.include_lfe,
            episode: Episode::new(kinds::AUDIO_CHANNEL_SILENCE, cfg.severity, cfg.min_duration),
            channels: 0,
            layout: 0,
            speakers: [0; MAX_AUDIO_CHANNELS],
            checked: [true; MAX_AUDIO_CHANNELS],
            windows: AudioWindows::new(cfg.window_ms),
            sum_sq: [0.0; MAX_AUDIO_CHANNELS],
        }
    }

    /// The format changed: which channel is which speaker.
    fn set_format(&mut self, channels: usize, layout: u64) {
        self.channels = channels;
        self.layout = layout;
        self.speakers = [0; MAX_AUDIO_CHANNELS];
        self.checked = [true; MAX_AUDIO_CHANNELS];
        let full = crate::layout_or_default(layout, channels);
        if let Some(bits) = speaker::of_channels(full, channels) {
            for (c, bit) in bits.enumerate() {
                self.speakers[c] = bit;
                let lfe = bit == speaker::LOW_FREQUENCY || bit == speaker::LOW_FREQUENCY_2;
                self.checked[c] = self.include_lfe || !lfe;
            }
        }
    }

    fn finish_window(&mut self, w: Window, out: &mut Findings) {
        let n = w.samples as f64;
        let (start, end) = (w.start, w.end);
        let ch = self.channels;
        let mut loudest = 0.0f64;
        let mut silent_loudest = 0.0f64;
        let mut silent = 0u32;
        for c in (0..ch).filter(|&c| self.checked[c]) {
            let p = self.sum_sq[c] / n;
            loudest = loudest.max(p);
            if p < self.silence_power {
                silent |= 1 << c;
                silent_loudest = silent_loudest.max(p);
            }
        }
        self.sum_sq = [0.0; MAX_AUDIO_CHANNELS];
        if silent != 0 && loudest > self.active_power {
            let speakers = self.speakers;
            let known = speaker::of_channels(self.layout, ch).is_some();
            self.episode.bad(start, end, out, |d| {
                let idx: Vec<serde_json::Value> = (0..ch)
                    .filter(|c| silent & (1 << c) != 0)
                    .map(|c| c.into())
                    .collect();
                if known {
                    let names: Vec<serde_json::Value> = (0..ch)
                        .filter(|c| silent & (1 << c) != 0)
                        .map(|c| crate::speaker_name(speakers[c]).into())
                        .collect();
                    d.insert("speakers".into(), names.into());
                }
                d.insert("channels".into(), idx.into());
                put(d, "level_db", power_db(silent_loudest));
                put(d, "others_db", power_db(loudest));
            });
        } else {
            self.episode.good(start, out, |_| {});
        }
    }
}

impl Detector for ChannelSilenceDetector {
    fn kind(&self) -> &'static str {
        kinds::AUDIO_CHANNEL_SILENCE
    }

    fn on_audio(&mut self, buf: &AudioBuffer<'_>, out: &mut Findings) {
        self.episode.flush(out);
        let Some(start) = self.windows.begin(buf) else {
            return;
        };
        match start.change {
            Change::None => {}
            Change::Format => {
                self.set_format(start.channels, buf.layout);
                self.sum_sq = [0.0; MAX_AUDIO_CHANNELS];
            }
            Change::Gap => self.sum_sq = [0.0; MAX_AUDIO_CHANNELS],
        }
        if start.channels < 2 {
            return;
        }
        let planes = &buf.planes[..start.channels];
        let mut pos = 0;
        while let Some(piece) = self.windows.next(&mut pos, start.samples) {
            for (plane, sum) in planes.iter().zip(&mut self.sum_sq) {
                let sq = sum_squares(&plane[piece.from..piece.to]);
                *sum += f64::from(sq);
            }
            if let Some(w) = piece.done {
                self.finish_window(w, out);
            }
        }
    }

    fn on_tick(&mut self, _now: f64, out: &mut Findings) {
        self.episode.flush(out);
    }

    fn reset(&mut self) {
        self.windows.reset();
        self.sum_sq = [0.0; MAX_AUDIO_CHANNELS];
        self.episode.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use avmon_core::FindingEdge::{Begin, End};

    fn tone(n: usize, amp: f32) -> Vec<f32> {
        (0..n)
            .map(|i| amp * (i as f32 * 440.0 * std::f32::consts::TAU / SR as f32).sin())
            .collect()
    }

    fn run(d: &mut ChannelSilenceDetector, chans: &[Vec<f32>], layout: u64) -> Vec<Seen> {
        run_audio_layout(d, chans, SR, &[1024], layout)
    }

    #[test]
    fn a_dead_channel_is_found_with_its_name() {
        let left = tone(secs(10.0), 0.3);
        let right = [
            tone(secs(2.0), 0.3),
            vec![0.0; secs(5.0)],
            tone(secs(3.0), 0.3),
        ]
        .concat();
        for sizes in [&[1024][..], &[1000, 7, 4097]] {
            let mut d = ChannelSilenceDetector::new(&ChannelSilenceConfig::default());
            let seen = run_audio(&mut d, &[left.clone(), right.clone()], SR, sizes);
            assert_eq!(edges(&seen), [(Begin, 2.0), (End, 7.0)], "{sizes:?}");
            assert_eq!(seen[0].f.details["channels"], serde_json::json!([1]));
            assert_eq!(seen[0].f.details.get("speakers"), None, "layout unknown");
            assert_eq!(seen[0].f.details["level_db"], FLOOR_DB);
        }
        let mut d = ChannelSilenceDetector::new(&ChannelSilenceConfig::default());
        let seen = run(&mut d, &[left, right], speaker::STEREO);
        assert_eq!(seen[0].f.details["speakers"], serde_json::json!(["FR"]));
    }

    #[test]
    fn all_silent_quiet_pairs_and_mono_are_not_reported() {
        let n = secs(5.0);
        for chans in [
            vec![vec![0.0; n], vec![0.0; n]],
            // Both quiet (−50 and −70 dBFS RMS): nothing is active.
            vec![tone(n, 0.0045), tone(n, 0.00045)],
            vec![tone(n, 0.3)],
            vec![tone(n, 0.3), tone(n, 0.01)],
        ] {
            let mut d = ChannelSilenceDetector::new(&ChannelSilenceConfig::default());
            assert!(run_audio(&mut d, &chans, SR, &[1024]).is_empty());
        }
    }

    #[test]
    fn an_empty_lfe_is_ignored_unless_asked() {
        let n = secs(4.0);
        let loud = tone(n, 0.2);
        let chans = vec![
            loud.clone(),
            loud.clone(),
            loud.clone(),
            vec![0.0; n],
            loud.clone(),
            loud,
        ];
        for layout in [speaker::SURROUND_5_1_SIDE, 0] {
            let mut d = ChannelSilenceDetector::new(&ChannelSilenceConfig::default());
            assert!(run(&mut d, &chans, layout).is_empty(), "{layout:#x}");
        }
        let cfg = ChannelSilenceConfig {
            include_lfe: true,
            ..ChannelSilenceConfig::default()
        };
        let mut d = ChannelSilenceDetector::new(&cfg);
        let seen = run(&mut d, &chans, speaker::SURROUND_5_1_SIDE);
        assert_eq!(edges(&seen), [(Begin, 0.0)]);
        assert_eq!(seen[0].f.details["speakers"], serde_json::json!(["LFE"]));
        // A dead centre in 5.1 is reported.
        let mut chans = chans;
        chans[2] = vec![0.0; n];
        let mut d = ChannelSilenceDetector::new(&ChannelSilenceConfig::default());
        let seen = run(&mut d, &chans, speaker::SURROUND_5_1_SIDE);
        assert_eq!(seen[0].f.details["channels"], serde_json::json!([2]));
        assert_eq!(seen[0].f.details["speakers"], serde_json::json!(["FC"]));
    }

    #[test]
    fn reset_owes_an_end() {
        let n = secs(3.0);
        let mut d = ChannelSilenceDetector::new(&ChannelSilenceConfig::default());
        assert_eq!(
            run_audio(&mut d, &[tone(n, 0.3), vec![0.0; n]], SR, &[1024]).len(),
            1
        );
        d.reset();
        let mut out = Vec::new();
        d.on_tick(0.0, &mut out);
        assert_eq!(out[0].edge, End);
        assert_eq!(out[0].details["reset"], true);
    }

    #[test]
    fn validate_names_each_bad_field() {
        let cfg = ChannelSilenceConfig {
            silence_db: -40.0,
            active_db: -50.0,
            window_ms: 0.0,
            min_duration: 0.0,
            ..ChannelSilenceConfig::default()
        };
        let mut errors = Vec::new();
        cfg.validate("channel_silence", &mut errors);
        assert_eq!(
            errors,
            [
                "channel_silence.active_db: must be above silence_db = -40 (got -50)",
                "channel_silence.window_ms: must be between 10 and 1000 (got 0)",
                "channel_silence.min_duration: must be > 0 (got 0)",
            ]
        );
    }
}
