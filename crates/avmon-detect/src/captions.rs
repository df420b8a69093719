//! `captions.missing`: closed captions expected, and no caption text for a while.
//!
//! Captions reach the detector with the pictures, as the CEA-708 `cc_data` triplets that ATSC
//! A/53 user data carries (H.264/HEVC SEI, MPEG-2 user data) and FFmpeg's decoders export. Two
//! layers are read, each by a maintained parser:
//!
//! - **CEA-608** byte pairs (`cc_type` 0: field 1, channels CC1/CC2; 1: field 2, CC3/CC4),
//!   decoded by `cea608-types` (odd parity checked, repeated control codes dropped): a channel
//!   has text when a printable character other than a space is decoded on it.
//! - **CEA-708** DTVCC packets (`cc_type` 2 and 3), reassembled by `cea708-types`: a service
//!   (`708-1` … `708-63`) has text when one of its blocks carries a printable character.
//!
//! Padding (`cc_valid` 0, null pairs `0x80 0x80`, empty DTVCC packets) counts for nothing: an
//! inserter that runs idle sends exactly that, and to a viewer it is captions missing. So a
//! declared caption track that carries no text is missing too.
//!
//! | kind | raised | cleared |
//! |---|---|---|
//! | `captions.missing` (major) | captions are expected (`expect`, or the stream declares them) and no service carried text for `window_s` (30 s); onset: the last text (or the start) | the first text again |
//!
//! Judged only while every frame is decoded ([`Tier::Full`]): in the lighter tiers most
//! pictures, and the captions they carry, are never decoded. `summary`: `captions.services`
//! (how many carried text), `captions.characters`, and the characters of `captions.cc1` …
//! `cc4` and `captions.708_1` … `708_6`.

use std::collections::BTreeMap;

use avmon_core::{
    kinds, round_ms, Details, Detector, Finding, Findings, Severity, Tier, VideoFrame,
};
use cea608_types::{Cea608, Cea608State};
use cea708_types::CCDataParser;
use serde::{Deserialize, Serialize};

/// What is asked of a stream's captions.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaptionsConfig {
    /// Read the captions (and judge them when expected).
    pub enabled: bool,
    /// Captions are expected on this stream even if it does not declare them.
    pub expect: bool,
    /// `captions.missing` after this many seconds without caption text.
    pub window_s: f64,
    pub severity: Severity,
    /// The stream itself says it carries captions (an HLS `CLOSED-CAPTIONS` group, a DASH
    /// `Accessibility` CEA-608/708 descriptor): set by avmon from the input, not configured.
    #[serde(skip)]
    pub declared: bool,
}

impl Default for CaptionsConfig {
    fn default() -> Self {
        CaptionsConfig {
            enabled: true,
            expect: false,
            window_s: 30.0,
            severity: Severity::Major,
            declared: false,
        }
    }
}

impl CaptionsConfig {
    pub fn validate(&self, path: &str, errors: &mut Vec<String>) {
        crate::check::within(path, "window_s", self.window_s, 1.0, 86_400.0, errors);
    }
}

/// The services summarised one by one (characters seen): the four CEA-608 channels and the
/// first six CEA-708 services.
const SERVICE_KEYS: [(&str, &str); 10] = [
    ("cc1", "captions.cc1"),
    ("cc2", "captions.cc2"),
    ("cc3", "captions.cc3"),
    ("cc4", "captions.cc4"),
    ("708_1", "captions.708_1"),
    ("708_2", "captions.708_2"),
    ("708_3", "captions.708_3"),
    ("708_4", "captions.708_4"),
    ("708_5", "captions.708_5"),
    ("708_6", "captions.708_6"),
];

/// See the module docs.
pub struct CaptionsDetector {
    cfg: CaptionsConfig,
    fields: [Cea608State; 2],
    dtvcc: CCDataParser,
    /// Characters of text per service.
    services: BTreeMap<String, u64>,
    /// Media time of the last text, and from when captions have been watched.
    last_text: Option<f64>,
    since: Option<f64>,
    /// Onset of the open `captions.missing`.
    open: Option<f64>,
    full: bool,
    buf: Vec<u8>,
}

impl CaptionsDetector {
    pub fn new(cfg: &CaptionsConfig) -> Self {
        CaptionsDetector {
            cfg: cfg.clone(),
            fields: [Cea608State::default(), Cea608State::default()],
            dtvcc: CCDataParser::new(),
            services: BTreeMap::new(),
            last_text: None,
            since: None,
            open: None,
            full: true,
            buf: Vec::new(),
        }
    }

    fn expected(&self) -> bool {
        self.cfg.expect || self.cfg.declared
    }

    /// Read one picture's `cc_data` triplets; whether any service carried text.
    fn read(&mut self, cc: &[u8]) -> bool {
        let mut text = false;
        let mut dtvcc = 0usize;
        for t in cc.chunks_exact(3) {
            if t[0] & 0x04 == 0 {
                continue;
            }
            match t[0] & 0x03 {
                field @ (0 | 1) => {
                    if let Ok(Some(Cea608::Text(x))) =
                        self.fields[field as usize].decode([t[1], t[2]])
                    {
                        let n = [x.char1, x.char2]
                            .into_iter()
                            .flatten()
                            .filter(|c| !c.is_whitespace() && !c.is_control())
                            .count() as u64;
                        if n > 0 {
                            let cc = field * 2 + x.channel.id();
                            *self.services.entry(format!("cc{cc}")).or_default() += n;
                            text = true;
                        }
                    }
                }
                _ => dtvcc += 1,
            }
        }
        if dtvcc > 0 {
            // The parser takes whole cc_data structures: a header, then at most 31 triplets.
            let mut valid = cc.chunks_exact(3).filter(|t| t[0] & 0x04 != 0).peekable();
            while valid.peek().is_some() {
                self.buf.clear();
                self.buf.extend_from_slice(&[0xC0, 0xFF]);
                for t in valid.by_ref().take(31) {
                    self.buf.extend_from_slice(t);
                }
                self.buf[0] |= ((self.buf.len() - 2) / 3) as u8;
                if self.dtvcc.push(&self.buf).is_err() {
                    // A broken packet: start over at the next packet start.
                    self.dtvcc = CCDataParser::new();
                }
            }
            while let Some(p) = self.dtvcc.pop_packet() {
                for s in p.services() {
                    let n = s
                        .codes()
                        .iter()
                        .filter_map(|c| c.char())
                        .filter(|c| !c.is_whitespace() && !c.is_control())
                        .count() as u64;
                    if n > 0 {
                        *self
                            .services
                            .entry(format!("708_{}", s.number()))
                            .or_default() += n;
                        text = true;
                    }
                }
            }
        }
        text
    }

    fn details(&self, silent_s: f64) -> Details {
        let mut d = Details::new();
        d.insert("silent_s".into(), round_ms(silent_s).into());
        d.insert("window_s".into(), self.cfg.window_s.into());
        d.insert(
            "declared".into(),
            (self.cfg.declared && !self.cfg.expect).into(),
        );
        d.insert(
            "services_seen".into(),
            self.services.keys().cloned().collect::<Vec<_>>().into(),
        );
        d
    }
}

impl Detector for CaptionsDetector {
    fn kind(&self) -> &'static str {
        kinds::CAPTIONS_MISSING
    }

    fn on_video(&mut self, frame: &VideoFrame<'_>, out: &mut Findings) {
        let t = frame.t;
        let text = frame.captions.is_some_and(|cc| self.read(cc));
        if !self.full {
            return;
        }
        let since = *self.since.get_or_insert(t);
        if text {
            self.last_text = Some(t);
            if let Some(onset) = self.open.take() {
                out.push(Finding::end(
                    kinds::CAPTIONS_MISSING,
                    self.cfg.severity,
                    t,
                    self.details(t - onset),
                ));
            }
            return;
        }
        if self.open.is_none() && self.expected() {
            let quiet_from = self.last_text.unwrap_or(since).max(since);
            if t - quiet_from >= self.cfg.window_s {
                self.open = Some(quiet_from);
                out.push(Finding::begin(
                    kinds::CAPTIONS_MISSING,
                    self.cfg.severity,
                    quiet_from,
                    self.details(t - quiet_from),
                ));
            }
        }
    }

    fn on_tier(&mut self, tier: Tier) {
        let full = tier == Tier::Full;
        if full != self.full {
            // Watching starts afresh when every frame is decoded again.
            self.since = None;
            self.last_text = None;
        }
        self.full = full;
    }

    fn reset(&mut self) {
        self.since = None;
        self.last_text = None;
        self.fields = [Cea608State::default(), Cea608State::default()];
        self.dtvcc = CCDataParser::new();
    }

    fn summarize(&self, put: &mut dyn FnMut(&'static str, f64)) {
        if self.services.is_empty() && !self.expected() {
            return;
        }
        put("captions.services", self.services.len() as f64);
        put(
            "captions.characters",
            self.services.values().sum::<u64>() as f64,
        );
        for (name, key) in SERVICE_KEYS {
            if let Some(&n) = self.services.get(name) {
                put(key, n as f64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{ft, Picture};
    use avmon_core::FindingEdge;

    fn odd(b: u8) -> u8 {
        let b = b & 0x7F;
        if b.count_ones().is_multiple_of(2) {
            b | 0x80
        } else {
            b
        }
    }

    /// `cc_data` triplets of CEA-608 field 1: roll-up on CC1 (or CC2: `channel2`) and `text`.
    fn cea608(text: &str, channel2: bool) -> Vec<u8> {
        let ctrl = if channel2 { 0x1C } else { 0x14 };
        let mut out = Vec::new();
        for pair in [[ctrl, 0x25], [ctrl, 0x25], [ctrl, 0x2D], [ctrl, 0x2D]] {
            out.extend_from_slice(&[0xFC, odd(pair[0]), odd(pair[1])]);
        }
        for pair in text.as_bytes().chunks(2) {
            let b1 = pair.get(1).map_or(0x80, |b| odd(*b));
            out.extend_from_slice(&[0xFC, odd(pair[0]), b1]);
        }
        out
    }

    /// `cc_data` triplets of a DTVCC packet with `text` on service `service`.
    fn cea708(text: &str, service: u8) -> Vec<u8> {
        use cea708_types::{tables::Code, CCDataWriter, DTVCCPacket, Framerate, Service};
        let mut s = Service::new(service);
        for c in text.chars() {
            s.push_code(&Code::from_char(c).unwrap()).unwrap();
        }
        let mut p = DTVCCPacket::new(0);
        p.push_service(s).unwrap();
        let mut w = CCDataWriter::default();
        w.push_packet(p);
        let mut out = Vec::new();
        w.write(Framerate::new(25, 1), &mut out).unwrap();
        out.split_off(2)
    }

    /// Run `d` over `n` frames from frame `from`, `cc(i)` giving frame i's captions.
    fn run(
        d: &mut CaptionsDetector,
        from: usize,
        n: usize,
        mut cc: impl FnMut(usize) -> Option<Vec<u8>>,
    ) -> Findings {
        let pic = Picture::new(16, 16, 128);
        let mut out = Vec::new();
        for i in from..from + n {
            let data = cc(i);
            let mut f = pic.frame(i);
            f.captions = data.as_deref();
            d.on_video(&f, &mut out);
        }
        out
    }

    fn cfg(expect: bool) -> CaptionsConfig {
        CaptionsConfig {
            expect,
            window_s: 5.0,
            ..CaptionsConfig::default()
        }
    }

    #[test]
    fn text_on_608_and_708_services_is_counted_and_padding_is_not() {
        let mut d = CaptionsDetector::new(&cfg(false));
        // Every second, a line on CC1, CC2 and 708 service 1; padding in between.
        let out = run(&mut d, 0, 100, |i| match i % 25 {
            0 => Some(cea608("HI", false)),
            1 => Some(cea608("YO", true)),
            2 => Some(cea708("HELLO", 1)),
            _ => Some(vec![0xF8, 0x80, 0x80, 0xF9, 0x80, 0x80]),
        });
        assert!(out.is_empty(), "not expected: nothing raised: {out:?}");
        let mut got = Vec::new();
        d.summarize(&mut |k, v| got.push((k, v)));
        assert_eq!(
            got,
            [
                ("captions.services", 3.0),
                ("captions.characters", 4.0 * 2.0 + 4.0 * 2.0 + 4.0 * 5.0),
                ("captions.cc1", 8.0),
                ("captions.cc2", 8.0),
                ("captions.708_1", 20.0)
            ]
        );
    }

    #[test]
    fn expected_captions_missing_for_the_window_raise_and_text_clears() {
        let mut d = CaptionsDetector::new(&cfg(true));
        // Text every second for 4 s, then padding only for 8 s, then text again.
        let line = |i: usize| (i % 25 == 0).then(|| cea708("WORDS", 1));
        let mut out = run(&mut d, 0, 100, line);
        assert!(out.is_empty());
        out = run(&mut d, 100, 200, |_| Some(vec![0xFA, 0x00, 0x00]));
        assert_eq!(out.len(), 1, "{out:?}");
        let f = &out[0];
        assert_eq!(
            (f.kind, f.edge),
            (kinds::CAPTIONS_MISSING, FindingEdge::Begin)
        );
        assert_eq!(f.t, ft(75), "onset: the last text");
        out = run(&mut d, 300, 25, line);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!((out[0].edge, out[0].t), (FindingEdge::End, ft(300)));
    }

    #[test]
    fn declared_captions_that_never_come_raise_from_the_start_and_lighter_tiers_stand_aside() {
        let mut d = CaptionsDetector::new(&CaptionsConfig {
            declared: true,
            ..cfg(false)
        });
        let out = run(&mut d, 0, 200, |_| None);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].t, 0.0);
        assert_eq!(out[0].details["declared"], true);
        // Not expected, not declared: nothing.
        let mut quiet = CaptionsDetector::new(&cfg(false));
        assert!(run(&mut quiet, 0, 500, |_| None).is_empty());
        // In the keyframes tier, nothing is judged; back in full, the window starts again.
        let mut d = CaptionsDetector::new(&cfg(true));
        d.on_tier(Tier::Keyframes);
        assert!(run(&mut d, 0, 500, |_| None).is_empty());
        d.on_tier(Tier::Full);
        let out = run(&mut d, 500, 200, |_| None);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].t, ft(500));
    }

    #[test]
    fn garbage_cc_data_never_panics() {
        let mut d = CaptionsDetector::new(&cfg(true));
        let mut rng = crate::testutil::Rng::new(7);
        let out = run(&mut d, 0, 400, |i| {
            let n = (i * 7) % 100;
            Some((0..n).map(|_| rng.next_u64() as u8).collect())
        });
        assert!(out.len() <= 2, "{out:?}");
    }
}
