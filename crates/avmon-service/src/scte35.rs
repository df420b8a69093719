//! SCTE 35 cues, judged: each cue the transport analyser finds ([`avmon_transport::Cue`])
//! becomes an event (`scte35.cue`, information, with what it says), and the stream's cues are
//! held to what a splicer needs:
//!
//! - `scte35.late_cue` (minor, at once): a splice time less than `min_preroll_s` ahead when the
//!   cue arrives, or already past;
//! - `scte35.missing_cue_in` (major): an avail (a `splice_insert` out of the network, or a
//!   segmentation descriptor that starts an advertisement or placement opportunity) whose end
//!   (its splice time plus its duration, or `max_break_s`) passed `grace_s` ago without its
//!   return; cleared by the return, or by the next avail;
//! - `scte35.no_cues` (major): no cue other than `splice_null` heartbeats for
//!   `expect_every_s`, on streams that set it; cleared by the next cue.
//!
//! Times are the pipeline's media times; a cue's preroll and its avail's length are taken from
//! the cue itself (its splice time against where it came on the stream's PCR clock).

use avmon_core::{kinds, Details, Finding, Findings, Severity};
use avmon_detect::Scte35Config;
use avmon_transport::scte35::{Command, SpliceInfo};
use avmon_transport::Cue;
use serde_json::json;

/// Avails followed at once (a hostile stream cannot grow the list).
const MAX_AVAILS: usize = 16;

/// An avail begun and not ended yet.
struct Avail {
    /// `splice_insert` event ids and segmentation event ids apart.
    key: (bool, u32),
    /// When it is due to end, media time.
    end: f64,
    /// Whether `scte35.missing_cue_in` is open for it.
    told: bool,
}

/// Judges one stream's cues.
pub struct Scte35Judge {
    cfg: Scte35Config,
    avails: Vec<Avail>,
    /// The last cue (other than a heartbeat), or the first look; and whether `no_cues` is open.
    last_cue: Option<f64>,
    silent: bool,
    /// Cues, late cues, avails and heartbeats so far.
    pub(crate) counts: [u64; 4],
}

fn round3(v: f64) -> f64 {
    avmon_core::round_ms(v)
}

/// Segmentation types that begin an avail (advertisement, placement opportunity; Table 23) and
/// the ones that end it (each start's type + 1).
fn avail_start(type_id: u8) -> bool {
    matches!(
        type_id,
        0x30 | 0x32 | 0x34 | 0x36 | 0x38 | 0x3A | 0x44 | 0x46
    )
}

impl Scte35Judge {
    pub(crate) fn new(cfg: Scte35Config) -> Self {
        Scte35Judge {
            cfg,
            avails: Vec::new(),
            last_cue: None,
            silent: false,
            counts: [0; 4],
        }
    }

    /// A cue that came at media time `t`.
    pub(crate) fn cue(&mut self, c: &Cue, t: f64, out: &mut Findings) {
        if !self.cfg.enabled {
            return;
        }
        let info = match &c.info {
            Ok(info) => info,
            Err(e) => {
                let mut d = Details::new();
                d.insert("pid".into(), c.pid.into());
                d.insert("error".into(), e.to_string().into());
                instant(out, kinds::SCTE35_CUE, Severity::Info, t, d);
                return;
            }
        };
        if info.command == Command::Null && info.segmentation.is_empty() {
            self.counts[3] += 1;
            return;
        }
        self.counts[0] += 1;
        let preroll = match (c.splice_media_s, c.media_s) {
            (Some(s), Some(m)) => Some(s - m),
            _ => None,
        };
        instant(
            out,
            kinds::SCTE35_CUE,
            Severity::Info,
            t,
            describe(c.pid, info, preroll),
        );
        if let Some(p) = preroll.filter(|p| *p < self.cfg.min_preroll_s) {
            self.counts[1] += 1;
            let mut d = Details::new();
            d.insert("preroll_s".into(), round3(p).into());
            d.insert("min_preroll_s".into(), self.cfg.min_preroll_s.into());
            d.insert("command".into(), info.command.name().into());
            instant(out, kinds::SCTE35_LATE_CUE, Severity::Minor, t, d);
        }
        if self.silent {
            self.silent = false;
            out.push(Finding::end(
                kinds::SCTE35_NO_CUES,
                Severity::Major,
                t,
                Details::new(),
            ));
        }
        self.last_cue = Some(t);
        let at = t + preroll.unwrap_or(0.0).max(0.0);
        let mut starts: Vec<((bool, u32), Option<f64>)> = Vec::new();
        let mut ends: Vec<(bool, u32)> = Vec::new();
        if let Command::Insert(i) = &info.command {
            let key = (false, i.event_id);
            if i.cancel || !i.out_of_network {
                ends.push(key);
            } else {
                starts.push((key, i.duration.map(|(d, _)| d as f64 / 90_000.0)));
            }
        }
        for s in &info.segmentation {
            let key = (true, s.event_id);
            if s.cancel || (s.type_id % 2 == 1 && avail_start(s.type_id - 1)) {
                ends.push(key);
            } else if avail_start(s.type_id) {
                starts.push((key, s.duration.map(|d| d as f64 / 90_000.0)));
            }
        }
        for key in ends {
            // A return ends its avail; one whose event id is not the avail's (a splicer may
            // number them apart) ends the oldest of its kind.
            let k = self
                .avails
                .iter()
                .position(|a| a.key == key)
                .or_else(|| self.avails.iter().position(|a| a.key.0 == key.0));
            if let Some(k) = k {
                let a = self.avails.remove(k);
                self.end_missing(&a, t, out);
            }
        }
        for (key, duration) in starts {
            // A new avail: the ones still open are over (the stream moved on).
            for a in std::mem::take(&mut self.avails) {
                self.end_missing(&a, t, out);
            }
            self.counts[2] += 1;
            let end = at + duration.unwrap_or(self.cfg.max_break_s);
            self.avails.push(Avail {
                key,
                end,
                told: false,
            });
            self.avails.truncate(MAX_AVAILS);
        }
    }

    fn end_missing(&self, a: &Avail, t: f64, out: &mut Findings) {
        if a.told {
            out.push(Finding::end(
                kinds::SCTE35_MISSING_CUE_IN,
                Severity::Major,
                t,
                Details::new(),
            ));
        }
    }

    /// Media time `now`: avails overdue, and a silence of cues.
    pub(crate) fn tick(&mut self, now: f64, out: &mut Findings) {
        if !self.cfg.enabled {
            return;
        }
        for a in &mut self.avails {
            let due = a.end + self.cfg.grace_s;
            if !a.told && now >= due {
                a.told = true;
                let mut d = Details::new();
                d.insert("event_id".into(), a.key.1.into());
                d.insert("expected_end_s".into(), round3(a.end).into());
                d.insert(
                    "signalled_by".into(),
                    if a.key.0 {
                        "segmentation_descriptor"
                    } else {
                        "splice_insert"
                    }
                    .into(),
                );
                out.push(Finding::begin(
                    kinds::SCTE35_MISSING_CUE_IN,
                    Severity::Major,
                    due,
                    d,
                ));
            }
        }
        let Some(every) = self.cfg.expect_every_s else {
            return;
        };
        let last = *self.last_cue.get_or_insert(now);
        if !self.silent && now - last >= every {
            self.silent = true;
            let mut d = Details::new();
            d.insert("expect_every_s".into(), every.into());
            out.push(Finding::begin(
                kinds::SCTE35_NO_CUES,
                Severity::Major,
                last + every,
                d,
            ));
        }
    }

    /// The input ended at `end`: what is open ends there.
    pub(crate) fn finish(&mut self, end: f64, out: &mut Findings) {
        for a in std::mem::take(&mut self.avails) {
            self.end_missing(&a, end, out);
        }
        if std::mem::take(&mut self.silent) {
            out.push(Finding::end(
                kinds::SCTE35_NO_CUES,
                Severity::Major,
                end,
                Details::new(),
            ));
        }
    }
}

/// A finding that begins and ends at `t`.
fn instant(out: &mut Findings, kind: &'static str, severity: Severity, t: f64, d: Details) {
    out.push(Finding::begin(kind, severity, t, d.clone()));
    out.push(Finding::end(kind, severity, t, d));
}

/// What a cue says, for its event: the command, event id, avail direction, splice time and
/// preroll, break duration, and each segmentation descriptor's type, duration and UPID.
fn describe(pid: u16, info: &SpliceInfo, preroll: Option<f64>) -> Details {
    let mut d = Details::new();
    d.insert("pid".into(), pid.into());
    d.insert("command".into(), info.command.name().into());
    if let Some(p) = preroll {
        d.insert("preroll_s".into(), round3(p).into());
    }
    if let Command::Insert(i) = &info.command {
        d.insert("event_id".into(), i.event_id.into());
        if i.cancel {
            d.insert("cancel".into(), true.into());
        } else {
            d.insert("out_of_network".into(), i.out_of_network.into());
            d.insert("immediate".into(), i.immediate.into());
            if let Some((ticks, auto)) = i.duration {
                d.insert("duration_s".into(), round3(ticks as f64 / 90_000.0).into());
                d.insert("auto_return".into(), auto.into());
            }
        }
    }
    if !info.segmentation.is_empty() {
        let segs: Vec<serde_json::Value> = info
            .segmentation
            .iter()
            .map(|s| {
                let upid: String = s.upid.iter().map(|b| format!("{b:02x}")).collect();
                json!({
                    "event_id": s.event_id,
                    "cancel": s.cancel,
                    "type_id": s.type_id,
                    "duration_s": s.duration.map(|t| round3(t as f64 / 90_000.0)),
                    "upid_type": s.upid_type,
                    "upid": upid,
                })
            })
            .collect();
        d.insert("segmentation".into(), segs.into());
    }
    d
}
