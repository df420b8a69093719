//! One stream's analysis, shared by `check` and `run`: detectors over borrowed frames, their
//! findings into the stream's alert engine, and counters for metrics.
//!
//! Everything here runs on the stream's decode thread and does no I/O: alert events are left in
//! [`Pipeline::events`] for the caller to hand on (collect them, or send them to the hub thread).

use std::collections::BTreeMap;

use avmon_alert::AlertConfig;
use avmon_core::{
    kinds, AlertEvent, AudioBuffer, Details, Detector, Finding, MediaInfo, Severity, StreamId,
    Tier, VideoFrame,
};
use avmon_detect::DetectorsConfig;

use crate::alerts::StreamAlerts;

/// Running totals since the stream started.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counters {
    pub frames_video: u64,
    pub frames_audio: u64,
    pub decode_errors: u64,
    pub packets: u64,
    pub bytes: u64,
}

pub struct Pipeline {
    detectors_cfg: DetectorsConfig,
    detectors: Vec<Box<dyn Detector>>,
    /// Every finding about the stream goes into its alert engine here; its events wait in
    /// `alerts.events` for the caller.
    pub alerts: StreamAlerts,
    pub counters: Counters,
    last_counters: Counters,
    /// Media time of the latest packet in this connection (`None` right after a (re)connect).
    last_packet_t: Option<f64>,
    /// Inside one connection, a timestamp gap longer than this is an outage of the source (as a
    /// recording of a live stream shows it); `None` disables the check.
    gap_s: Option<f64>,
    /// End of the latest frame seen (media time), i.e. how far the input has been analysed.
    pub end_t: f64,
    /// Media time of the onset of the current outage, while the source is down.
    down_at: Option<f64>,
    /// After an outage, while only data held back from before it arrives: (onset, wall
    /// duration, since when).
    resuming: Option<(f64, f64, std::time::Instant)>,
    /// The findings of the transport analyser fed by the input's bytes, when avmon reads them
    /// itself. Kept across reconnections (the tap is), so that what it has open is ended.
    transport: Option<crate::transport::TransportDetector>,
    /// The fidelity tier the input decodes at (as it last said).
    pub tier: Tier,
    /// The service's own findings about the stream that are open (`monitor.degraded`,
    /// `monitor.behind`).
    monitor_open: Vec<&'static str>,
    /// Set when the decoded HLS variant or DASH Representation declares closed captions
    /// ([`crate::hls::HlsInput::captions_declared`]): they are then expected.
    pub captions_declared: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// A forward jump of the packet clock larger than this (an outage, or a source resuming with
/// data it held back) restarts the detectors' timing: the frames missing across it are no
/// defect of their own.
const CLOCK_JUMP_RESET_S: f64 = 1.0;

impl Pipeline {
    pub fn new(
        stream_id: StreamId,
        detectors: DetectorsConfig,
        alerts: AlertConfig,
        gap_s: Option<f64>,
    ) -> Self {
        Pipeline {
            detectors_cfg: detectors,
            detectors: Vec::new(),
            alerts: StreamAlerts::new(stream_id, alerts),
            counters: Counters::default(),
            last_counters: Counters::default(),
            last_packet_t: None,
            gap_s,
            end_t: 0.0,
            down_at: None,
            resuming: None,
            transport: None,
            tier: Tier::Full,
            monitor_open: Vec::new(),
            captions_declared: None,
        }
    }

    /// Report TR 101 290 findings from `tap` (which the input's bytes go through).
    pub fn with_transport(mut self, tap: std::sync::Arc<crate::transport::TransportTap>) -> Self {
        self.transport = Some(crate::transport::TransportDetector::new(
            tap,
            self.detectors_cfg.mdi.clone(),
            self.detectors_cfg.scte35.clone(),
        ));
        self
    }

    /// A (re)connection opened: build the detectors for what this input carries.
    pub fn connected(&mut self, info: &MediaInfo) {
        if let Some(d) = &self.captions_declared {
            self.detectors_cfg.captions.declared = d.load(std::sync::atomic::Ordering::Relaxed);
        }
        self.detectors = avmon_detect::build(
            &self.detectors_cfg,
            info.video.is_some(),
            info.audio.is_some(),
        );
        for d in &mut self.detectors {
            d.on_tier(self.tier);
        }
        self.last_packet_t = None;
    }

    /// The input decodes at `tier` from now on: detectors that assume every frame adapt.
    pub fn set_tier(&mut self, tier: Tier) {
        self.tier = tier;
        for d in &mut self.detectors {
            d.on_tier(tier);
        }
        self.flush();
    }

    /// Open (`Some`: begin, or update while open) or close (`None`) one of the service's own
    /// findings about the stream, `kind` being `monitor.degraded` or `monitor.behind`.
    pub fn set_monitor(&mut self, kind: &'static str, t: f64, details: Option<Details>) {
        let open = self.monitor_open.contains(&kind);
        match details {
            Some(d) => {
                if !open {
                    self.monitor_open.push(kind);
                }
                self.alerts
                    .findings
                    .push(Finding::begin(kind, Severity::Major, t, d));
            }
            None if open => {
                self.monitor_open.retain(|k| *k != kind);
                self.alerts
                    .findings
                    .push(Finding::end(kind, Severity::Major, t, Details::new()));
            }
            None => {}
        }
        self.flush();
    }

    /// The input moved its video or audio to other streams while it ran (new PIDs): the
    /// detectors start afresh on them, as after a reconnect; when the input gained or lost video
    /// or audio, they are built again for what it carries now.
    pub fn streams_changed(&mut self, info: &MediaInfo) {
        let has = |kind: &str| self.detectors.iter().any(|d| d.kind().starts_with(kind));
        if has("video.") != info.video.is_some() || has("audio.") != info.audio.is_some() {
            self.connected(info);
        } else {
            for d in &mut self.detectors {
                d.reset();
            }
        }
    }

    fn flush(&mut self) {
        self.alerts.flush();
    }

    /// The alert events made since the caller last took them.
    pub fn events(&mut self) -> std::vec::Drain<'_, AlertEvent> {
        self.alerts.events.drain(..)
    }

    pub fn packet(&mut self, t: f64, bytes: usize) {
        self.counters.packets += 1;
        self.counters.bytes += bytes as u64;
        self.check_resumed(t);
        if let Some(prev) = self.last_packet_t {
            let jump = t - prev;
            if self.gap_s.is_some_and(|gap| jump > gap) {
                let mut details = Details::new();
                details.insert("gap_s".into(), round3(jump).into());
                details.insert("reason".into(), "no data in the stream's timestamps".into());
                let sev = Severity::Critical;
                self.alerts.push(Finding::begin(
                    kinds::SOURCE_DOWN,
                    sev,
                    prev,
                    details.clone(),
                ));
                self.alerts
                    .findings
                    .push(Finding::end(kinds::SOURCE_DOWN, sev, t, details));
            }
            if jump > CLOCK_JUMP_RESET_S {
                for d in &mut self.detectors {
                    d.reset();
                }
            }
        }
        if self.last_packet_t.is_none_or(|p| t > p) {
            self.last_packet_t = Some(t);
        }
        for d in &mut self.detectors {
            d.on_tick(t, &mut self.alerts.findings);
        }
        if let Some(d) = &mut self.transport {
            d.on_tick(t, &mut self.alerts.findings);
        }
        self.alerts.tick(t);
    }

    pub fn video(&mut self, frame: &VideoFrame<'_>) {
        self.counters.frames_video += 1;
        self.end_t = self.end_t.max(frame.t + frame.duration);
        for d in &mut self.detectors {
            d.on_video(frame, &mut self.alerts.findings);
        }
        self.flush();
    }

    pub fn audio(&mut self, buf: &AudioBuffer<'_>) {
        self.counters.frames_audio += 1;
        self.end_t = self.end_t.max(buf.t + buf.duration());
        for d in &mut self.detectors {
            d.on_audio(buf, &mut self.alerts.findings);
        }
        self.flush();
    }

    pub fn decode_error(&mut self) {
        self.counters.decode_errors += 1;
    }

    /// The source went down (cannot be opened, or stalled) at media time `t`.
    pub fn source_down(&mut self, t: f64, reason: &str) {
        if self.down_at.is_some() {
            return;
        }
        self.down_at = Some(t);
        let mut details = Details::new();
        details.insert("reason".into(), reason.into());
        self.alerts.push(Finding::begin(
            kinds::SOURCE_DOWN,
            Severity::Critical,
            t,
            details,
        ));
        self.flush();
    }

    /// Data flows again, at media time `t` on the continuing clock, after an outage of
    /// `outage_s` wall seconds. A fresh packet's own media time is the exact end. A resuming
    /// source may first resend data it held back from before the outage: then the end is the
    /// first fresh packet's time ([`Pipeline::packet`] watches for it), or, if none comes within
    /// a moment, the onset plus the wall-clock duration.
    pub fn source_up(&mut self, t: f64, outage_s: f64) {
        let Some(down_at) = self.down_at.take() else {
            return;
        };
        if t > down_at + (outage_s / 2.0).min(1.0) {
            self.end_outage(t);
        } else {
            self.resuming = Some((down_at, outage_s, std::time::Instant::now()));
        }
    }

    /// While resuming: end the outage at the first fresh packet, or give up waiting.
    fn check_resumed(&mut self, t: f64) {
        let Some((down_at, outage_s, since)) = self.resuming else {
            return;
        };
        if t > down_at + (outage_s / 2.0).min(1.0) {
            self.resuming = None;
            self.end_outage(t);
        } else if since.elapsed().as_secs_f64() > 2.0 {
            self.resuming = None;
            self.end_outage(down_at + outage_s);
        }
    }

    fn end_outage(&mut self, t: f64) {
        for d in &mut self.detectors {
            d.reset();
        }
        self.alerts.push(Finding::end(
            kinds::SOURCE_DOWN,
            Severity::Critical,
            t,
            Details::new(),
        ));
        // The detectors start afresh: what they had open must be found again, or it clears
        // (a black that ended while the source was down would otherwise stay raised).
        let theirs: Vec<&'static str> = self.detectors.iter().map(|d| d.kind()).collect();
        self.alerts
            .reconfirm(t, crate::alerts::CARRY_GRACE_S, &|kind| {
                theirs.contains(&kind)
            });
        self.flush();
    }

    /// The input ended at media time `end`: every open alert is cleared (a transport finding
    /// at its last event, or at `end` while its absence lasts).
    pub fn finish(&mut self, end: f64) {
        if let Some(d) = &mut self.transport {
            d.finish(end, &mut self.alerts.findings);
        }
        self.alerts.clear_all(end);
    }

    /// The stream is being removed: clear what is open at the latest media time.
    pub fn close(&mut self) {
        let end = self.end_t;
        self.finish(end);
    }

    /// Whole-input measurements of the detectors, `("section.name", value)`.
    pub fn summarize(&self, put: &mut dyn FnMut(&'static str, f64)) {
        for d in &self.detectors {
            d.summarize(put);
        }
        if let Some(t) = &self.transport {
            t.summarize(put);
        }
    }

    /// Measurements for the period since the last call: counter deltas and detector metrics.
    pub fn take_metrics(&mut self) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        let c = self.counters;
        let l = self.last_counters;
        m.insert(
            "frames_video".into(),
            (c.frames_video - l.frames_video) as f64,
        );
        m.insert(
            "frames_audio".into(),
            (c.frames_audio - l.frames_audio) as f64,
        );
        m.insert(
            "decode_errors".into(),
            (c.decode_errors - l.decode_errors) as f64,
        );
        m.insert("bytes".into(), (c.bytes - l.bytes) as f64);
        self.last_counters = c;
        let transport = self.transport.iter_mut().map(|t| t as &mut dyn Detector);
        for d in self
            .detectors
            .iter_mut()
            .map(|d| d.as_mut())
            .chain(transport)
        {
            d.take_metrics(&mut |k, v| {
                m.insert(k.to_string(), v);
            });
        }
        m
    }
}

fn round3(v: f64) -> f64 {
    avmon_core::round_ms(v)
}
