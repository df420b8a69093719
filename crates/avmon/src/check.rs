//! `avmon check INPUT`: analyse a file to its end (or a live URL for `--duration`) and report.
//!
//! The JSON report is a contract (`input`, `duration_s`, `events[]`, `summary.video`,
//! `summary.audio`, `summary.transport`): names are kept, new ones are added.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use avmon_alert::AlertConfig;
use avmon_core::{
    round_ms, Alert, AudioBuffer, MediaInfo, Severity, StreamId, Tier, TierControl, Transition,
    VideoFrame,
};
use avmon_detect::DetectorsConfig;
use avmon_hls::{HlsConfig, VariantSelector};
use avmon_media::{EndReason, FrameSink, Input, MediaClock, OpenOptions, Tap};
use serde_json::{json, Value};

use avmon_service::hls::{Cleared, HlsInput, HlsOptions};
use avmon_service::pipeline::Pipeline;
pub use avmon_service::report::{is_live, Event};
use avmon_service::transport::TransportTap;

pub struct CheckOptions {
    pub input: String,
    pub duration: Option<f64>,
    pub detectors: DetectorsConfig,
    pub alerts: AlertConfig,
    pub io_timeout: Duration,
    pub decoder_threads: usize,
    /// FFmpeg demuxer/protocol options.
    pub format_options: Vec<(String, String)>,
    /// A timestamp gap longer than this inside the input is reported as `source.down`.
    pub gap_s: f64,
    /// The variants of an HLS input that `avmon-hls` monitors (empty: all).
    pub hls_variants: Vec<VariantSelector>,
    /// How much video to decode.
    pub tier: Tier,
    /// In the `keyframes` tier, seconds between the keyframes decoded (0: every one).
    pub keyframe_interval: f64,
}

#[derive(Debug)]
pub struct Report {
    pub input: String,
    pub duration_s: f64,
    pub events: Vec<Event>,
    pub info: MediaInfo,
    pub frames_video: u64,
    pub frames_audio: u64,
    pub decode_errors: u64,
    /// The detectors' whole-input measurements, `("section.name", value)`, e.g.
    /// `("audio.integrated_lufs", -23.0)`.
    pub measured: Vec<(&'static str, f64)>,
    /// TR 101 290 counts, for MPEG-TS that avmon read itself (files, UDP/RTP, SRT, HTTP TS).
    pub transport: Option<avmon_transport::Counters>,
    /// `summary.hls` for HLS inputs, `summary.dash` for DASH ones.
    pub hls: Option<Value>,
    /// The fidelity tier the video was decoded at (`summary.video.tier`).
    pub tier: Tier,
}

impl Report {
    pub fn to_json(&self) -> Value {
        let mut summary = serde_json::Map::new();
        if let Some(v) = &self.info.video {
            summary.insert(
                "video".into(),
                json!({"codec": v.codec, "width": v.width, "height": v.height, "fps": v.fps,
                       "frames": self.frames_video, "decode_errors": self.decode_errors,
                       "tier": self.tier}),
            );
        }
        if let Some(a) = &self.info.audio {
            summary.insert(
                "audio".into(),
                json!({"codec": a.codec, "channels": a.channels, "sample_rate": a.sample_rate,
                       "frames": self.frames_audio}),
            );
        }
        if let Some(t) = &self.transport {
            summary.insert(
                "transport".into(),
                serde_json::to_value(t).unwrap_or(Value::Null),
            );
        }
        for (key, value) in &self.measured {
            let (section, name) = key.split_once('.').unwrap_or(("other", key));
            let entry = summary
                .entry(section.to_string())
                .or_insert_with(|| json!({}));
            if let (Some(obj), Some(v)) =
                (entry.as_object_mut(), serde_json::Number::from_f64(*value))
            {
                obj.insert(name.to_string(), Value::Number(v));
            }
        }
        if let Some(h) = &self.hls {
            let key = if avmon_hls::is_dash_url(&self.input) {
                "dash"
            } else {
                "hls"
            };
            summary.insert(key.into(), h.clone());
        }
        json!({
            "input": self.input,
            "format": self.info.format,
            "duration_s": self.duration_s,
            "events": self.events,
            "summary": summary,
        })
    }

    pub fn to_text(&self) -> String {
        let mut s = format!("{}: {:.2} s analysed", self.input, self.duration_s);
        if let Some(v) = &self.info.video {
            s += &format!(
                "\n  video: {} {}x{} @ {} fps, {} frames, {} decode errors",
                v.codec, v.width, v.height, v.fps, self.frames_video, self.decode_errors
            );
            if self.tier != Tier::Full {
                s += &format!(" (tier {}: not every frame decoded)", self.tier);
            }
        }
        if let Some(a) = &self.info.audio {
            s += &format!(
                "\n  audio: {} {} ch @ {} Hz",
                a.codec, a.channels, a.sample_rate
            );
        }
        if let Some(t) = &self.transport {
            s += &format!("\n  {}", avmon_service::transport::text(t));
        }
        if self.events.is_empty() {
            s += "\n  no defects found";
        }
        for e in &self.events {
            s += &format!(
                "\n  {:>8}  {:<16} {:>8.2} s .. {:>8.2} s  ({:.2} s)",
                e.severity.as_str(),
                e.kind,
                e.start_s,
                e.end_s,
                e.end_s - e.start_s
            );
        }
        s
    }

    /// The worst severity among the events.
    pub fn worst(&self) -> Option<Severity> {
        self.events.iter().map(|e| e.severity).max()
    }
}

struct Sink {
    pipe: Pipeline,
    alerts: Vec<Alert>,
    stop_at: Option<f64>,
    stop: Arc<AtomicBool>,
}

impl Sink {
    fn collect(&mut self) {
        for ev in self.pipe.events() {
            if ev.transition == Transition::Cleared {
                self.alerts.push(ev.alert);
            }
        }
    }
}

impl FrameSink for Sink {
    fn on_packet(&mut self, t: f64, bytes: usize) {
        self.pipe.packet(t, bytes);
        self.collect();
        if self.stop_at.is_some_and(|d| t >= d) {
            self.stop.store(true, Ordering::Relaxed);
        }
    }
    fn on_video(&mut self, frame: &VideoFrame<'_>) {
        if self.stop_at.is_some_and(|d| frame.t >= d) {
            return;
        }
        self.pipe.video(frame);
        self.collect();
    }
    fn on_audio(&mut self, buf: &AudioBuffer<'_>) {
        if self.stop_at.is_some_and(|d| buf.t >= d) {
            return;
        }
        self.pipe.audio(buf);
        self.collect();
    }
    fn on_decode_error(&mut self, _t: f64, _video: bool) {
        self.pipe.decode_error();
    }
    fn on_streams_changed(&mut self, info: &MediaInfo) {
        self.pipe.streams_changed(info);
    }
    fn on_tier(&mut self, tier: Tier) {
        self.pipe.set_tier(tier);
        self.collect();
    }
}

pub fn check(opts: CheckOptions) -> Result<Report> {
    let stop = Arc::new(AtomicBool::new(false));
    // HLS: avmon-hls fetches the segments, checks delivery, and hands the first chosen
    // variant's bytes to the decoder.
    let (hls, segments) = if avmon_hls::is_manifest_url(&opts.input) {
        let cfg = HlsConfig {
            variants: opts.hls_variants.clone(),
            ..HlsConfig::new(&opts.input)
        };
        let h = HlsInput::start(
            &cfg,
            HlsOptions {
                stream: StreamId("check".into()),
                alerts: opts.alerts.clone(),
                duration: opts.duration,
                // A segment may take a few target durations to come; FFmpeg's own HLS input
                // waits too.
                grace: opts.io_timeout.max(Duration::from_secs(30)),
                resume: Vec::new(),
                handover: None,
            },
            |_| Cleared::default(),
        )?;
        let source = h.source(stop.clone(), None);
        (Some(h), Some(source))
    } else if !opts.hls_variants.is_empty() {
        anyhow::bail!("--variant applies only to HLS and DASH inputs (http(s)://….m3u8 or ….mpd)");
    } else {
        (None, None)
    };
    let live = is_live(&opts.input);
    let tap = if hls.is_some() {
        TransportTap::hls()
    } else {
        TransportTap::new(live)
    };
    let open = OpenOptions {
        io_timeout: opts.io_timeout,
        decoder_threads: opts.decoder_threads,
        format_options: opts.format_options.clone(),
        open_timeout: opts.io_timeout.max(Duration::from_secs(10)),
        tap: Some(Tap(tap.clone())),
        tier: TierControl::new(opts.tier),
        keyframe_interval: opts.keyframe_interval,
        pictures: None,
        cpu: None,
    };
    let mut input = match segments {
        Some(source) => {
            Input::open_source(&opts.input, Box::new(source), None, &open, stop.clone())
        }
        None => Input::open(&opts.input, &open, stop.clone()),
    }
    .map_err(anyhow::Error::new)?;
    let info = input.info().clone();
    if let (true, Some(d)) = (live, opts.duration) {
        // A live input has no end: stop after --duration of wall time too, in case its
        // timestamps run slower than the clock.
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs_f64(d + 2.0));
            stop.store(true, Ordering::Relaxed);
        });
    }
    let mut pipe = Pipeline::new(
        StreamId("check".into()),
        avmon_service::hls::detectors_for(&opts.input, opts.detectors),
        opts.alerts,
        Some(opts.gap_s),
    )
    .with_transport(tap.clone());
    pipe.captions_declared = hls.as_ref().map(|h| h.captions_declared());
    pipe.connected(&info);
    let mut sink = Sink {
        pipe,
        alerts: Vec::new(),
        stop_at: opts.duration,
        stop,
    };
    let mut clock = MediaClock::new();
    let ended = input
        .run(&mut clock, &mut sink)
        .with_context(|| format!("analysing {}", opts.input))?;
    if ended == EndReason::TimedOut && sink.pipe.counters.packets == 0 {
        anyhow::bail!(
            "{}: no data arrived within {:.0} s",
            opts.input,
            opts.io_timeout.as_secs_f64()
        );
    }
    let end = match opts.duration {
        Some(d) => sink.pipe.end_t.min(d),
        None => sink.pipe.end_t,
    };
    sink.pipe.finish(end);
    sink.collect();
    let mut measured = Vec::new();
    sink.pipe.summarize(&mut |k, v| measured.push((k, v)));
    let mut events: Vec<Event> = sink
        .alerts
        .into_iter()
        .map(|a| Event {
            start_s: round_ms(a.start_s),
            end_s: round_ms(a.end_s.unwrap_or(end).min(end).max(a.start_s)),
            kind: a.kind,
            severity: a.severity,
            details: a.details,
        })
        .collect();
    let hls = match hls {
        Some(h) => Some(avmon_service::hls::report(h.finish()?, opts.duration)?),
        None => None,
    };
    let hls_summary = hls.map(|h| {
        events.extend(h.events);
        h.summary
    });
    events.sort_by(|a, b| a.start_s.total_cmp(&b.start_s).then(a.kind.cmp(&b.kind)));
    let transport = tap.saw_packets().then(|| tap.counters());
    if transport.is_some() && opts.input.starts_with("rtp://") {
        measured.push(("transport.rtp_lost", tap.rtp_lost() as f64));
    }
    let c = sink.pipe.counters;
    Ok(Report {
        input: opts.input,
        duration_s: round_ms(end),
        events,
        info,
        frames_video: c.frames_video,
        frames_audio: c.frames_audio,
        decode_errors: c.decode_errors,
        measured,
        transport,
        hls: hls_summary,
        tier: opts.tier,
    })
}
