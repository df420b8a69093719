//! `avmon run`: many streams in one process.
//!
//! Threads:
//! - one decode thread per stream: FFmpeg demux + decode, detectors on borrowed frames, the
//!   stream's alert engine. It never does I/O beyond its input: alert events and metrics leave it
//!   on an unbounded channel (a send never blocks), so nothing downstream can slow detection.
//!   It holds one of the host's CPU permits ([`avmon_core::sched`], `[service] workers`, one per
//!   core by default) while it demuxes, decodes and detects, and lets go of it while it waits
//!   for input: however many streams, at most that many decode at once, FIFO-fair;
//! - one degradation thread: every 0.5 s it reads each stream's lag (how far its analysis is
//!   behind real time) and lowers or restores tiers ([`crate::degrade`]);
//! - one hub thread: keeps each stream's active alerts for the API, writes the store, hands
//!   events to notifiers (whose `notify` never blocks; delivery runs on the async runtime);
//! - the async runtime: the HTTP API and notifier deliveries.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use avmon_alert::Suppression;
use avmon_core::sched::{Scheduler, Slot, DEFAULT_QUANTUM};
use avmon_core::{
    kinds, round_ms, Alert, AlertEvent, AudioBuffer, Details, MediaInfo, StreamId, Tier,
    TierControl, Transition, VideoFrame, WallTime,
};
use avmon_core::{AlertRecord, MaintenanceWindow, Mute};
use avmon_hls::VariantStats;
use avmon_media::{
    run_input, run_source, Backoff, FrameSink, Input, MediaClock, OpenOptions, Pictures,
    SourceEvents, Tap,
};
use avmon_notify::{Notifier, OutboxNotifier};
use avmon_server::{
    AlertsQuery, ApiError, EvidenceKind, LiveEvent, MetricsPoint, MetricsQuery, Monitor,
    StreamState, StreamStatus,
};
use avmon_store::{AckOutcome, AlertQuery, MetricsSample, Store, StreamRecord};
use chrono::Utc;
use crossbeam_channel::{Receiver, Sender};

use crate::config::ServiceConfig;
use crate::config::{Config, StreamConfig};
use crate::degrade::{Policy, PolicyConfig, Sample};
use crate::evidence::{self, ClipRing, Evidence, EvidenceConfig, Taps};
use crate::hls::{HlsInput, HlsOptions, VariantOut};
use crate::pipeline::{Counters, Pipeline};
use crate::transport::TransportTap;

/// How `run` behaves beyond the config.
#[derive(Default)]
pub struct Options {
    /// Print each alert as it is raised and cleared (the demo does).
    pub print_alerts: bool,
    /// Stop after this long (default: until Ctrl-C / SIGTERM).
    pub duration: Option<Duration>,
}

/// What the decode thread publishes about its stream, read by the API.
#[derive(Default)]
struct Live {
    info: Option<MediaInfo>,
    media_t: f64,
    last_data_at: Option<WallTime>,
    counters: Counters,
    reconnects: u64,
    connected: bool,
    down: bool,
    active: BTreeMap<String, Alert>,
    /// An HLS stream's variants, by index.
    hls: BTreeMap<usize, VariantFigures>,
    /// Audio levels per channel, `[rms, peak]` dBFS, the loudest since the last publish.
    levels: Vec<[f32; 2]>,
    /// Seconds the analysis is behind real time, as the decode thread last measured it.
    lag_s: f64,
    /// The same, smoothed by the degradation policy (what the API shows).
    lag_smooth_s: f64,
}

/// One HLS variant's delivery, for `/metrics`.
#[derive(Clone, Debug, Default)]
struct VariantFigures {
    name: String,
    stats: VariantStats,
    /// The last segment's bitrate (bytes × 8 / `EXTINF`) and download time.
    bitrate_bps: f64,
    download_s: f64,
}

struct StreamShared {
    cfg: StreamConfig,
    /// The tier the decode thread reads per packet; the API and automatic degradation change it.
    tier: TierControl,
    /// The tier set by the config or `PATCH`: the ceiling automatic degradation restores to.
    ceiling: TierControl,
    priority: AtomicU32,
    /// The stream's CPU permit and its input's figures (datagram age, drops).
    cpu: Slot,
    /// Why the tier was last lowered (the `monitor.degraded` alert's reason).
    degrade_reason: Mutex<String>,
    /// Whether the stream is behind real time with nothing left to lower (or automatic
    /// degradation off): `monitor.behind` is open while set. Read per packet, so an atomic;
    /// the reason is read only when it changes.
    behind: AtomicBool,
    behind_reason: Mutex<String>,
    live: Mutex<Live>,
    /// Scaled copies of the picture (thumbnail, snapshots); none with `[evidence] enabled = false`.
    pictures: Option<Arc<Pictures>>,
    /// The stream's last seconds of bytes, for clips (when evidence is kept).
    ring: Option<Arc<ClipRing>>,
    /// `cfg` as JSON with secrets masked, for the API.
    config_json: serde_json::Value,
    /// The thumbnail last encoded, and the picture's media time it was encoded from.
    thumb: Mutex<Option<(f64, Arc<Vec<u8>>)>>,
}

impl StreamShared {
    fn degraded(&self) -> bool {
        self.tier.get() > self.ceiling.get()
    }
}

struct StreamHandle {
    shared: Arc<StreamShared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

enum HubMsg {
    Alert(Arc<StreamShared>, AlertEvent),
    Metrics(MetricsSample),
    Upsert(StreamRecord),
    Remove(StreamId),
}

/// The running service; implements the API's [`Monitor`].
struct Service {
    streams: Mutex<BTreeMap<String, StreamHandle>>,
    hub: Sender<HubMsg>,
    store: Arc<dyn Store>,
    notifiers: Vec<Arc<dyn Notifier>>,
    protocols: Vec<String>,
    metrics_interval: Duration,
    /// Mutes and maintenance windows: which alerts are not notified.
    suppression: Arc<Suppression>,
    /// Live events for `/api/events`.
    events: tokio::sync::broadcast::Sender<LiveEvent>,
    evidence: EvidenceConfig,
    sched: Arc<Scheduler>,
}

/// Scaled copies of the picture: every second, 320 pixels wide, the last 12 (so an alert raised
/// up to ~12 s after its onset, as loudness ones are, still has the picture at the onset).
const PICTURE_WIDTH: u32 = 320;
const PICTURE_INTERVAL_S: f64 = 1.0;
const PICTURES_KEPT: usize = 12;
/// Audio levels are measured on one buffer in this many seconds of media.
const LEVELS_EVERY_S: f64 = 0.1;

/// How fast a constant slip of media time behind wall time is forgiven (seconds per second): a
/// stream that falls behind faster than this shows a growing lag.
const SLIP_FORGIVE: f64 = 0.05;

/// The decode thread's sink: pipeline in, events and status out.
struct StreamSink {
    pipe: Pipeline,
    shared: Arc<StreamShared>,
    hub: Sender<HubMsg>,
    last_publish: Instant,
    last_metrics: Instant,
    metrics_interval: Duration,
    media_t: f64,
    /// Media time of the next audio level measurement, and the loudest levels since publishing.
    next_level_t: f64,
    levels: Vec<[f32; 2]>,
    /// Wall clock less media time at its lowest since the (re)connection (creeping up by
    /// [`SLIP_FORGIVE`] of the wall time): the slip is how far above that it is now (a
    /// constant start-up delay is not falling behind).
    slip_base: Option<f64>,
    /// Wall seconds since `started` at the last measure.
    slip_wall: f64,
    /// Whether the input tells how long its data waited (UDP datagrams, HLS segments): then
    /// that is the lag, and the slip (which a sender's own pauses and bursts move) is unused.
    arrival_timed: bool,
    started: Instant,
    lag_s: f64,
    /// The tier the open `monitor.degraded` alert describes.
    degraded_at: Option<Tier>,
    /// Whether `monitor.behind` is open.
    behind_open: bool,
}

/// `[rms, peak]` of one channel's samples, in dBFS (floored at -100).
fn level(samples: &[f32]) -> [f32; 2] {
    let (mut sum, mut peak) = (0.0f64, 0.0f32);
    for &x in samples {
        sum += f64::from(x) * f64::from(x);
        peak = peak.max(x.abs());
    }
    let rms = (sum / samples.len().max(1) as f64).sqrt();
    let db = |v: f64| (20.0 * v.max(1e-5).log10()) as f32;
    [db(rms), db(f64::from(peak))]
}

impl StreamSink {
    /// How far behind real time the analysis is: how long the data just read waited for it
    /// when the input can tell (the kernel's receive time of a UDP datagram, the fetch of an
    /// HLS segment); otherwise the slip of media time against wall time since the
    /// (re)connection.
    fn measure_lag(&mut self) {
        if self.arrival_timed {
            self.lag_s = self.shared.cpu.input_age_s();
            return;
        }
        let wall = self.started.elapsed().as_secs_f64();
        let d = wall - self.media_t;
        let dt = (wall - std::mem::replace(&mut self.slip_wall, wall)).max(0.0);
        let base = match self.slip_base {
            // A sender's pause leaves a constant offset that is no lag: forgiven slowly.
            Some(b) => d.min(b + SLIP_FORGIVE * dt),
            None => d,
        };
        self.slip_base = Some(base);
        self.lag_s = d - base;
    }

    /// Raise, update or clear `monitor.degraded` when the tier the input applied and the
    /// configured tier say so.
    fn check_degraded(&mut self) {
        let tier = self.pipe.tier;
        let ceiling = self.shared.ceiling.get();
        let want = (tier > ceiling).then_some(tier);
        if want == self.degraded_at {
            return;
        }
        self.degraded_at = want;
        let t = self.pipe.end_t.max(self.media_t);
        let details = want.map(|tier| {
            let mut d = Details::new();
            d.insert("configured_tier".into(), ceiling.as_str().into());
            d.insert("tier".into(), tier.as_str().into());
            d.insert(
                "priority".into(),
                self.shared.priority.load(Ordering::Relaxed).into(),
            );
            d.insert("lag_s".into(), round_ms(self.lag_s).into());
            let reason = self
                .shared
                .degrade_reason
                .lock()
                .map(|r| r.clone())
                .unwrap_or_default();
            d.insert("reason".into(), reason.into());
            d
        });
        self.pipe.set_monitor(kinds::MONITOR_DEGRADED, t, details);
        self.forward();
    }

    /// Raise or clear `monitor.behind` as the degradation thread says.
    fn check_behind(&mut self) {
        let behind = self.shared.behind.load(Ordering::Relaxed);
        if behind == self.behind_open {
            return;
        }
        self.behind_open = behind;
        let t = self.pipe.end_t.max(self.media_t);
        let details = behind.then(|| {
            let reason = self
                .shared
                .behind_reason
                .lock()
                .map(|r| r.clone())
                .unwrap_or_default();
            let mut d = Details::new();
            d.insert("reason".into(), reason.into());
            d.insert("tier".into(), self.pipe.tier.as_str().into());
            d.insert("lag_s".into(), round_ms(self.lag_s).into());
            d.insert(
                "workers".into(),
                self.shared.cpu.scheduler().permits().into(),
            );
            d
        });
        self.pipe.set_monitor(kinds::MONITOR_BEHIND, t, details);
        self.forward();
    }

    fn forward(&mut self) {
        for ev in self.pipe.events.drain(..) {
            let _ = self.hub.send(HubMsg::Alert(self.shared.clone(), ev));
        }
    }

    /// Publish status for the API at most every 200 ms, and metrics every interval.
    fn publish(&mut self, force: bool) {
        let now = Instant::now();
        if force || now.duration_since(self.last_publish) >= Duration::from_millis(200) {
            self.last_publish = now;
            if let Ok(mut live) = self.shared.live.lock() {
                live.media_t = self.media_t;
                live.lag_s = self.lag_s;
                live.counters = self.pipe.counters;
                live.last_data_at = Some(Utc::now());
                live.levels = std::mem::take(&mut self.levels);
            }
        }
        if now.duration_since(self.last_metrics) >= self.metrics_interval {
            self.last_metrics = now;
            let sample = MetricsSample {
                stream_id: StreamId(self.shared.cfg.id.clone()),
                at: Utc::now(),
                media_t: self.media_t,
                values: self.pipe.take_metrics(),
            };
            let _ = self.hub.send(HubMsg::Metrics(sample));
        }
    }
}

impl FrameSink for StreamSink {
    fn on_packet(&mut self, t: f64, bytes: usize) {
        self.media_t = self.media_t.max(t);
        self.measure_lag();
        self.pipe.packet(t, bytes);
        self.forward();
        self.check_degraded();
        self.check_behind();
        self.publish(false);
    }
    fn on_video(&mut self, frame: &VideoFrame<'_>) {
        self.pipe.video(frame);
        self.forward();
    }
    fn on_audio(&mut self, buf: &AudioBuffer<'_>) {
        // Levels for the console from one buffer every LEVELS_EVERY_S: a meter, not a measurement.
        if buf.t >= self.next_level_t || buf.t + 1.0 < self.next_level_t {
            self.next_level_t = buf.t + LEVELS_EVERY_S;
            let n = buf.channels();
            self.levels.resize(n, [-100.0, -100.0]);
            for (l, plane) in self.levels.iter_mut().zip(buf.planes) {
                let [rms, peak] = level(plane);
                *l = [l[0].max(rms), l[1].max(peak)];
            }
        }
        self.pipe.audio(buf);
        self.forward();
    }
    fn on_decode_error(&mut self, _t: f64, _video: bool) {
        self.pipe.decode_error();
    }
    fn on_streams_changed(&mut self, info: &MediaInfo) {
        tracing::info!(stream = %self.shared.cfg.id, "the source moved its streams; following them");
        self.pipe.streams_changed(info);
        if let Ok(mut live) = self.shared.live.lock() {
            live.info = Some(info.clone());
        }
    }
    fn on_tier(&mut self, tier: Tier) {
        self.pipe.set_tier(tier);
        self.forward();
    }
}

impl SourceEvents for StreamSink {
    fn on_connected(&mut self, info: &MediaInfo, reconnect: bool) {
        self.pipe.connected(info);
        self.slip_base = None;
        if let Ok(mut live) = self.shared.live.lock() {
            live.info = Some(info.clone());
            live.connected = true;
            if reconnect {
                live.reconnects += 1;
            }
        }
    }
    fn on_down(&mut self, reason: &str) {
        tracing::warn!(stream = %self.shared.cfg.id, %reason, "source down");
        let t = self.pipe.end_t.max(self.media_t);
        self.pipe.source_down(t, reason);
        self.forward();
        if let Ok(mut live) = self.shared.live.lock() {
            live.down = true;
        }
    }
    fn on_up(&mut self, t: f64, outage: Duration) {
        tracing::info!(stream = %self.shared.cfg.id, outage_s = outage.as_secs_f64(), "source up");
        self.pipe.source_up(t, outage.as_secs_f64());
        self.slip_base = None;
        self.forward();
        if let Ok(mut live) = self.shared.live.lock() {
            live.down = false;
        }
    }
}

/// An HLS variant's alerts to the hub; its figures to `/metrics`, and every metrics interval
/// its period's metrics to the store (`hls.<index>.bitrate_bps`, …), from the variant's thread.
struct HubOut {
    shared: Arc<StreamShared>,
    hub: Sender<HubMsg>,
    index: usize,
    interval: Duration,
    last_sample: Instant,
    /// The totals at the last sample.
    sampled: VariantStats,
    /// The longest download since the last sample.
    download_max: f64,
}

impl HubOut {
    fn new(
        shared: Arc<StreamShared>,
        hub: Sender<HubMsg>,
        variant: &avmon_hls::Variant,
        interval: Duration,
    ) -> Self {
        if let Ok(mut live) = shared.live.lock() {
            live.hls.insert(
                variant.index,
                VariantFigures {
                    name: variant.name.clone(),
                    ..VariantFigures::default()
                },
            );
        }
        HubOut {
            shared,
            hub,
            index: variant.index,
            interval,
            last_sample: Instant::now(),
            sampled: VariantStats::default(),
            download_max: 0.0,
        }
    }

    fn figures(&self, f: impl FnOnce(&mut VariantFigures)) {
        if let Ok(mut live) = self.shared.live.lock() {
            if let Some(v) = live.hls.get_mut(&self.index) {
                f(v);
            }
        }
    }

    /// The period's metrics since the last sample.
    fn period(&mut self, now: &VariantStats) -> BTreeMap<String, f64> {
        let was = std::mem::replace(&mut self.sampled, now.clone());
        let key = |name: &str| format!("hls.{}.{name}", self.index);
        let mut m = BTreeMap::new();
        let segments = now.segments.saturating_sub(was.segments);
        let errors = now.segment_errors.saturating_sub(was.segment_errors);
        m.insert(key("segments"), segments as f64);
        m.insert(key("segment_errors"), errors as f64);
        let media_s = now.media_s - was.media_s;
        if media_s > 0.0 {
            let bytes = now.bytes.saturating_sub(was.bytes);
            m.insert(key("bitrate_bps"), (bytes as f64 * 8.0 / media_s).round());
        }
        if segments > 0 {
            let total = now.download_s_total - was.download_s_total;
            m.insert(key("download_s_mean"), round_ms(total / segments as f64));
            m.insert(key("download_s_max"), round_ms(self.download_max));
        }
        self.download_max = 0.0;
        m
    }
}

impl VariantOut for HubOut {
    fn alert(&mut self, ev: AlertEvent) {
        let _ = self.hub.send(HubMsg::Alert(self.shared.clone(), ev));
    }

    fn segment(&mut self, s: &avmon_hls::Segment<'_>) {
        self.download_max = self.download_max.max(s.download_s);
        self.figures(|v| {
            v.bitrate_bps = s.bitrate_bps();
            v.download_s = s.download_s;
        });
    }

    fn stats(&mut self, media_t: f64, stats: &VariantStats) {
        self.figures(|v| v.stats = stats.clone());
        if self.last_sample.elapsed() >= self.interval {
            self.last_sample = Instant::now();
            let sample = MetricsSample {
                stream_id: StreamId(self.shared.cfg.id.clone()),
                at: Utc::now(),
                media_t,
                values: self.period(stats),
            };
            let _ = self.hub.send(HubMsg::Metrics(sample));
        }
    }
}

fn stream_thread(
    shared: Arc<StreamShared>,
    stop: Arc<AtomicBool>,
    hub: Sender<HubMsg>,
    metrics_interval: Duration,
) {
    let cfg = shared.cfg.clone();
    let io_timeout = Duration::from_secs_f64(cfg.io_timeout_s);
    let hls = cfg.hls_config();
    // TR 101 290 on the bytes avmon reads itself, timed by their arrival on a live input; HLS
    // segments carry their tables once each.
    let tap = if hls.is_some() {
        TransportTap::hls()
    } else {
        TransportTap::new(crate::check::is_live(&cfg.url))
    };
    let taps = Arc::new(Taps {
        transport: tap.clone(),
        ring: shared.ring.clone(),
    });
    let opts = OpenOptions {
        io_timeout,
        open_timeout: io_timeout.max(Duration::from_secs(5)),
        decoder_threads: cfg.decoder_threads,
        format_options: cfg.options.clone().into_iter().collect(),
        tap: Some(Tap(taps)),
        tier: shared.tier.clone(),
        keyframe_interval: cfg.keyframe_interval_s,
        pictures: shared.pictures.clone(),
        cpu: Some(shared.cpu.clone()),
    };
    let mut sink = StreamSink {
        pipe: Pipeline::new(
            StreamId(cfg.id.clone()),
            cfg.detectors.clone(),
            cfg.alerts.clone(),
            None,
        )
        .with_transport(tap),
        shared: shared.clone(),
        hub,
        last_publish: Instant::now(),
        last_metrics: Instant::now(),
        metrics_interval,
        media_t: 0.0,
        next_level_t: 0.0,
        levels: Vec::new(),
        slip_base: None,
        slip_wall: 0.0,
        arrival_timed: hls.is_some() || {
            let scheme = cfg
                .url
                .split_once("://")
                .map(|(s, _)| s.to_ascii_lowercase());
            matches!(scheme.as_deref(), Some("udp" | "rtp"))
        },
        started: Instant::now(),
        lag_s: 0.0,
        degraded_at: None,
        behind_open: false,
    };
    let mut clock = MediaClock::new();
    match hls {
        None => run_source(
            &cfg.url,
            &opts,
            Backoff::default(),
            stop,
            &mut clock,
            &mut sink,
        ),
        // avmon-hls fetches the segments and checks delivery; the first chosen variant's bytes
        // are decoded, a fresh source of them for each (re)connection.
        Some(h) => {
            let hls_opts = HlsOptions {
                stream: StreamId(cfg.id.clone()),
                alerts: cfg.alerts.clone(),
                duration: None,
                grace: io_timeout,
            };
            let (out_shared, out_hub) = (shared.clone(), sink.hub.clone());
            let make_out = move |v: &avmon_hls::Variant| {
                HubOut::new(out_shared.clone(), out_hub.clone(), v, metrics_interval)
            };
            match HlsInput::spawn(h, hls_opts, stop.clone(), make_out) {
                Ok(input) => {
                    let mut open = || {
                        let source = Box::new(input.source(stop.clone(), Some(shared.cpu.clone())));
                        Input::open_source(&cfg.url, source, None, &opts, stop.clone())
                    };
                    run_input(
                        &cfg.url,
                        &mut open,
                        &opts,
                        Backoff::default(),
                        stop.clone(),
                        &mut clock,
                        &mut sink,
                    );
                    // The variants' open alerts are cleared as their monitors end.
                    if let Err(e) = input.finish() {
                        tracing::error!(stream = %cfg.id, "{e:#}");
                    }
                }
                Err(e) => tracing::error!(stream = %cfg.id, "starting the HLS monitor: {e:#}"),
            }
        }
    }
    // Removed or shutting down: what is still open is cleared now.
    sink.pipe.close();
    sink.forward();
    sink.publish(true);
}

fn print_alert(ev: &AlertEvent) {
    let a = &ev.alert;
    let when = Utc::now().format("%H:%M:%S");
    match ev.transition {
        Transition::Raised => println!(
            "{when} RAISED  {:<12} {:<14} {:<8} from {:.2} s",
            a.stream_id, a.kind, a.severity, a.start_s
        ),
        Transition::Updated => {}
        Transition::Cleared => {
            let end = a.end_s.unwrap_or(a.start_s);
            println!(
                "{when} CLEARED {:<12} {:<14} {:<8} {:.2} s .. {:.2} s ({:.2} s)",
                a.stream_id,
                a.kind,
                a.severity,
                a.start_s,
                end,
                end - a.start_s
            )
        }
    }
}

/// What the hub hands alerts to besides the store and notifiers.
struct HubOutputs {
    print: bool,
    events: tokio::sync::broadcast::Sender<LiveEvent>,
    evidence: Option<Evidence>,
}

fn hub_thread(
    rx: Receiver<HubMsg>,
    store: Arc<dyn Store>,
    notifiers: Vec<Arc<dyn Notifier>>,
    out: HubOutputs,
    suppression: Arc<Suppression>,
) {
    for msg in rx {
        match msg {
            HubMsg::Alert(shared, ev) => {
                if out.print {
                    print_alert(&ev);
                }
                let transition = match ev.transition {
                    Transition::Raised => "raised",
                    Transition::Updated => "updated",
                    Transition::Cleared => "cleared",
                };
                let _ = out.events.send(LiveEvent::new(
                    "alert",
                    &serde_json::json!({"transition": transition, "alert": ev.alert}),
                ));
                if let (Transition::Raised, Some(evidence)) = (ev.transition, &out.evidence) {
                    // How far behind the stream's latest media the onset is, in seconds.
                    let media_t = shared.live.lock().map(|l| l.media_t).unwrap_or(0.0);
                    let sources = evidence::Sources {
                        pictures: shared.pictures.clone(),
                        ring: shared.ring.clone(),
                    };
                    evidence.raised(&ev.alert, sources, media_t - ev.alert.start_s);
                }
                if let Ok(mut live) = shared.live.lock() {
                    match ev.transition {
                        Transition::Cleared => {
                            live.active.remove(&ev.alert.id);
                        }
                        _ => {
                            live.active.insert(ev.alert.id.clone(), ev.alert.clone());
                        }
                    }
                }
                // Muted or in maintenance when raised: stored, marked, not notified.
                let suppressed = suppression.on_event(&ev, Utc::now());
                if let Err(e) = store.record_alert(&ev) {
                    tracing::error!("storing alert {}: {e}", ev.alert.id);
                }
                if let (Some(why), Transition::Raised) = (suppressed, ev.transition) {
                    if let Err(e) = store.mark_alert(&ev.alert.id, why) {
                        tracing::error!("marking alert {}: {e}", ev.alert.id);
                    }
                }
                if suppressed.is_none() {
                    for n in &notifiers {
                        n.notify(&ev);
                    }
                }
            }
            HubMsg::Metrics(m) => {
                if let Err(e) = store.record_metrics(&m) {
                    tracing::error!("storing metrics of {}: {e}", m.stream_id);
                }
            }
            HubMsg::Upsert(rec) => {
                if let Err(e) = store.upsert_stream(&rec) {
                    tracing::error!("storing stream {}: {e}", rec.id);
                }
            }
            HubMsg::Remove(id) => {
                if let Err(e) = store.remove_stream(&id) {
                    tracing::error!("removing stream {id}: {e}");
                }
            }
        }
    }
    if let Some(e) = out.evidence {
        e.finish();
    }
}

/// Publishes `stream` events when a stream's status, tier or active alerts change (or it
/// appears), and everyone's audio `levels`, four times a second.
async fn live_events(service: std::sync::Weak<Service>) {
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let Some(service) = service.upgrade() else {
            return;
        };
        if service.events.receiver_count() == 0 {
            last.clear();
            continue;
        }
        let mut levels = serde_json::Map::new();
        let mut seen = BTreeMap::new();
        for shared in service.shared_streams() {
            let status = service.status_of(&shared);
            let key = format!(
                "{:?}/{}/{}/{}",
                status.status,
                status.tier,
                status.muted.is_some(),
                status
                    .active_alerts
                    .iter()
                    .map(|a| a.id.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            );
            if last.get(&status.id) != Some(&key) {
                let _ = service.events.send(LiveEvent::new("stream", &status));
            }
            if let Ok(live) = shared.live.lock() {
                if !live.levels.is_empty() && !live.down {
                    levels.insert(status.id.clone(), serde_json::json!(live.levels));
                }
            }
            seen.insert(status.id, key);
        }
        for gone in last.keys().filter(|id| !seen.contains_key(*id)) {
            let _ = service.events.send(LiveEvent::new(
                "stream",
                &serde_json::json!({"id": gone, "removed": true}),
            ));
        }
        last = seen;
        if !levels.is_empty() {
            let _ = service.events.send(LiveEvent::new("levels", &levels));
        }
    }
}

impl Service {
    fn start_stream(&self, cfg: StreamConfig) -> Arc<StreamShared> {
        let shared = Arc::new(StreamShared {
            tier: TierControl::new(cfg.tier()),
            ceiling: TierControl::new(cfg.tier()),
            priority: AtomicU32::new(cfg.priority),
            cpu: self.sched.slot(),
            degrade_reason: Mutex::new(String::new()),
            behind: AtomicBool::new(false),
            behind_reason: Mutex::new(String::new()),
            cfg: cfg.clone(),
            live: Mutex::new(Live::default()),
            pictures: self
                .evidence
                .enabled
                .then(|| Pictures::new(PICTURE_WIDTH, PICTURE_INTERVAL_S, PICTURES_KEPT)),
            ring: self.evidence.enabled.then(|| {
                ClipRing::new(
                    self.evidence.ring_keep(),
                    self.evidence.ring_max_bytes.bytes().unwrap_or(16 << 20) as usize,
                )
            }),
            thumb: Mutex::new(None),
            config_json: masked(serde_json::to_value(&cfg).unwrap_or_default()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let _ = self.hub.send(HubMsg::Upsert(StreamRecord {
            id: StreamId(cfg.id.clone()),
            url: cfg.url.clone(),
            config: serde_json::to_value(&cfg).unwrap_or_default(),
            created_at: Utc::now(),
        }));
        let thread = {
            let (shared, stop, hub) = (shared.clone(), stop.clone(), self.hub.clone());
            let interval = self.metrics_interval;
            std::thread::Builder::new()
                .name(format!("stream-{}", cfg.id))
                .spawn(move || stream_thread(shared, stop, hub, interval))
                .ok()
        };
        if let Ok(mut streams) = self.streams.lock() {
            streams.insert(
                cfg.id.clone(),
                StreamHandle {
                    shared: shared.clone(),
                    stop,
                    thread,
                },
            );
        }
        shared
    }

    fn status_of(&self, shared: &StreamShared) -> StreamStatus {
        let live = shared.live.lock().unwrap_or_else(|e| e.into_inner());
        let status = if live.down {
            StreamState::Down
        } else if !live.connected || live.counters.packets == 0 {
            StreamState::Starting
        } else if !live.active.is_empty() {
            StreamState::Alarm
        } else {
            StreamState::Ok
        };
        StreamStatus {
            id: shared.cfg.id.clone(),
            url: shared.cfg.url.clone(),
            status,
            active_alerts: live.active.values().cloned().collect(),
            media_t: avmon_core::round_ms(live.media_t),
            last_data_at: live.last_data_at,
            info: live.info.clone(),
            frames_video: live.counters.frames_video,
            frames_audio: live.counters.frames_audio,
            decode_errors: live.counters.decode_errors,
            reconnects: live.reconnects,
            tier: shared.tier.get(),
            muted: self.suppression.mute(&shared.cfg.id, Utc::now()),
            config: Some(shared.config_json.clone()),
            configured_tier: shared.ceiling.get(),
            degraded: shared.degraded(),
            priority: shared.priority.load(Ordering::Relaxed),
            lag_s: round_ms(live.lag_smooth_s),
        }
    }

    /// `Ok` when `id` is a stream being monitored.
    fn known(&self, id: &str) -> Result<(), ApiError> {
        self.shared(id).map(|_| ())
    }

    /// A running stream's shared state; unknown → 404.
    fn shared(&self, id: &str) -> Result<Arc<StreamShared>, ApiError> {
        self.streams
            .lock()
            .ok()
            .and_then(|s| s.get(id).map(|h| h.shared.clone()))
            .ok_or_else(|| ApiError::NotFound(format!("no stream {id:?}")))
    }

    fn shared_streams(&self) -> Vec<Arc<StreamShared>> {
        match self.streams.lock() {
            Ok(s) => s.values().map(|h| h.shared.clone()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Stop every stream and wait for their threads (their open alerts are cleared).
    fn stop_all(&self) {
        let handles: Vec<StreamHandle> = match self.streams.lock() {
            Ok(mut s) => std::mem::take(&mut *s).into_values().collect(),
            Err(_) => Vec::new(),
        };
        for h in &handles {
            h.stop.store(true, Ordering::Relaxed);
        }
        for mut h in handles {
            if let Some(t) = h.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl Monitor for Service {
    fn streams(&self) -> Vec<StreamStatus> {
        self.shared_streams()
            .iter()
            .map(|s| self.status_of(s))
            .collect()
    }

    fn add_stream(&self, spec: serde_json::Value) -> Result<StreamStatus, ApiError> {
        let cfg = StreamConfig::from_json(spec, &self.protocols).map_err(ApiError::BadRequest)?;
        if self
            .streams
            .lock()
            .map(|s| s.contains_key(&cfg.id))
            .unwrap_or(false)
        {
            return Err(ApiError::Conflict(format!(
                "stream {:?} already exists",
                cfg.id
            )));
        }
        tracing::info!(stream = %cfg.id, url = %cfg.url, "stream added");
        let shared = self.start_stream(cfg);
        Ok(self.status_of(&shared))
    }

    fn set_tier(&self, id: &str, tier: Tier) -> Result<StreamStatus, ApiError> {
        let shared = self.shared(id)?;
        // The operator's tier is the ceiling, and applies now (the decode thread reads it at
        // its next packet: no reconnect); automatic degradation may lower it again.
        shared.ceiling.set(tier);
        shared.tier.set(tier);
        tracing::info!(stream = %id, %tier, "tier set");
        Ok(self.status_of(&shared))
    }

    fn set_priority(&self, id: &str, priority: u32) -> Result<StreamStatus, ApiError> {
        let shared = self.shared(id)?;
        shared.priority.store(priority, Ordering::Relaxed);
        tracing::info!(stream = %id, priority, "priority set");
        Ok(self.status_of(&shared))
    }

    fn remove_stream(&self, id: &str) -> Result<(), ApiError> {
        let handle = self
            .streams
            .lock()
            .ok()
            .and_then(|mut s| s.remove(id))
            .ok_or_else(|| ApiError::NotFound(format!("no stream {id:?}")))?;
        handle.stop.store(true, Ordering::Relaxed);
        let _ = self.hub.send(HubMsg::Remove(StreamId(id.to_string())));
        // Join off the request path: the thread clears its alerts and ends within a moment.
        if let Some(t) = handle.thread {
            std::thread::spawn(move || {
                let _ = t.join();
            });
        }
        tracing::info!(stream = %id, "stream removed");
        Ok(())
    }

    fn alerts(&self, q: &AlertsQuery) -> Result<Vec<AlertRecord>, ApiError> {
        self.store
            .alert_records(&AlertQuery {
                stream: q.stream.clone().map(StreamId),
                since: q.since,
                until: q.until,
                active_only: q.active == Some(true),
                kinds: q.kinds.clone(),
                severities: q.severities.clone(),
                state: q.state,
                acked: q.acked,
                limit: q.limit_or_default(),
            })
            .map_err(internal)
    }

    fn alert(&self, id: &str) -> Result<AlertRecord, ApiError> {
        self.store
            .alert(id)
            .map_err(internal)?
            .ok_or_else(|| ApiError::NotFound(format!("no alert {id:?}")))
    }

    fn ack_alert(&self, id: &str, by: &str, comment: String) -> Result<AlertRecord, ApiError> {
        let ack = avmon_core::Ack {
            by: by.to_string(),
            comment,
            at: ms(Utc::now()),
        };
        match self.store.ack_alert(id, &ack).map_err(internal)? {
            AckOutcome::Acked(r) => {
                tracing::info!(alert = %id, by, "alert acknowledged");
                let _ = self.events.send(LiveEvent::new(
                    "alert",
                    &serde_json::json!({"transition": "acked", "alert": r.alert, "ack": r.ack}),
                ));
                Ok(*r)
            }
            AckOutcome::AlreadyAcked(first) => Err(ApiError::Conflict(format!(
                "alert {id:?} was already acknowledged by {:?} at {}",
                first.by,
                first
                    .at
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            ))),
            AckOutcome::NotFound => Err(ApiError::NotFound(format!("no alert {id:?}"))),
        }
    }

    fn mute_stream(
        &self,
        id: &str,
        until: Option<WallTime>,
        by: &str,
        comment: String,
    ) -> Result<Mute, ApiError> {
        self.known(id)?;
        let mute = Mute {
            stream_id: id.to_string(),
            until: until.map(ms),
            by: by.to_string(),
            comment,
            at: ms(Utc::now()),
        };
        self.store.set_mute(&mute).map_err(internal)?;
        self.suppression.set_mute(mute.clone());
        tracing::info!(stream = %id, by, until = ?until, "stream muted");
        Ok(mute)
    }

    fn unmute_stream(&self, id: &str) -> Result<(), ApiError> {
        self.known(id)?;
        self.store
            .remove_mute(&StreamId(id.to_string()))
            .map_err(internal)?;
        if self.suppression.remove_mute(id).is_some() {
            tracing::info!(stream = %id, "stream unmuted");
        }
        Ok(())
    }

    fn maintenance_windows(&self) -> Result<Vec<MaintenanceWindow>, ApiError> {
        Ok(self.suppression.windows())
    }

    fn add_maintenance_window(
        &self,
        mut w: MaintenanceWindow,
    ) -> Result<MaintenanceWindow, ApiError> {
        w.id = avmon_alert::new_id(Utc::now());
        (w.start, w.end) = (ms(w.start), ms(w.end));
        self.store.add_window(&w).map_err(internal)?;
        self.suppression.add_window(w.clone());
        tracing::info!(window = %w.id, streams = ?w.streams, start = %w.start, end = %w.end, by = %w.by, "maintenance window added");
        Ok(w)
    }

    fn remove_maintenance_window(&self, id: &str) -> Result<(), ApiError> {
        let exists = self.suppression.windows().iter().any(|w| w.id == id);
        if !exists {
            return Err(ApiError::NotFound(format!("no maintenance window {id:?}")));
        }
        if id.starts_with("config-") {
            return Err(ApiError::Conflict(format!(
                "maintenance window {id:?} is defined in the config file; remove it there"
            )));
        }
        self.store.remove_window(id).map_err(internal)?;
        self.suppression.remove_window(id);
        tracing::info!(window = %id, "maintenance window removed");
        Ok(())
    }

    fn stream_metrics(&self, id: &str, q: &MetricsQuery) -> Result<Vec<MetricsPoint>, ApiError> {
        self.known(id)?;
        let samples = self
            .store
            .metrics_range(
                &StreamId(id.to_string()),
                &avmon_store::MetricsQuery {
                    since: Some(q.since),
                    until: q.until,
                    names: q.names.clone(),
                    limit: q.limit,
                },
            )
            .map_err(internal)?;
        Ok(samples
            .into_iter()
            .map(|m| MetricsPoint {
                at: m.at,
                media_t: m.media_t,
                values: m.values,
            })
            .collect())
    }

    fn prometheus(&self) -> String {
        let shared = self.shared_streams();
        let streams: Vec<StreamStatus> = shared.iter().map(|s| self.status_of(s)).collect();
        let mut out = String::new();
        let _ = writeln!(out, "# HELP avmon_streams Streams being monitored.\n# TYPE avmon_streams gauge\navmon_streams {}", streams.len());
        let gauge = |out: &mut String,
                     name: &str,
                     help: &str,
                     kind: &str,
                     f: &dyn Fn(&StreamStatus) -> String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for s in &streams {
                let _ = writeln!(out, "{name}{{stream=\"{}\"}} {}", esc(&s.id), f(s));
            }
        };
        gauge(
            &mut out,
            "avmon_stream_up",
            "1 when the stream's source delivers data.",
            "gauge",
            &|s| u8::from(matches!(s.status, StreamState::Ok | StreamState::Alarm)).to_string(),
        );
        gauge(
            &mut out,
            "avmon_media_time_seconds",
            "Media time reached.",
            "gauge",
            &|s| s.media_t.to_string(),
        );
        gauge(
            &mut out,
            "avmon_video_frames_total",
            "Video frames decoded.",
            "counter",
            &|s| s.frames_video.to_string(),
        );
        gauge(
            &mut out,
            "avmon_audio_frames_total",
            "Audio frames decoded.",
            "counter",
            &|s| s.frames_audio.to_string(),
        );
        gauge(
            &mut out,
            "avmon_decode_errors_total",
            "Packets the decoder rejected and frames it flagged corrupt.",
            "counter",
            &|s| s.decode_errors.to_string(),
        );
        gauge(
            &mut out,
            "avmon_reconnects_total",
            "Reconnections to the source.",
            "counter",
            &|s| s.reconnects.to_string(),
        );
        gauge(
            &mut out,
            "avmon_stream_tier",
            "Fidelity tier monitored at now: 0 full, 1 reference, 2 keyframes, 3 transport.",
            "gauge",
            &|s| (s.tier as u8).to_string(),
        );
        gauge(
            &mut out,
            "avmon_stream_configured_tier",
            "Fidelity tier configured (the ceiling of automatic degradation), as avmon_stream_tier.",
            "gauge",
            &|s| (s.configured_tier as u8).to_string(),
        );
        gauge(
            &mut out,
            "avmon_stream_degraded",
            "1 while the stream's tier is lowered below the configured one (monitor.degraded).",
            "gauge",
            &|s| u8::from(s.degraded).to_string(),
        );
        gauge(
            &mut out,
            "avmon_stream_lag_seconds",
            "How far the stream's analysis is behind real time (smoothed).",
            "gauge",
            &|s| s.lag_s.to_string(),
        );
        let _ = writeln!(out, "# HELP avmon_stream_input_drops_total Datagrams the kernel dropped on the stream's socket (read too late).\n# TYPE avmon_stream_input_drops_total counter");
        for s in &shared {
            let _ = writeln!(
                out,
                "avmon_stream_input_drops_total{{stream=\"{}\"}} {}",
                esc(&s.cfg.id),
                s.cpu.input_drops()
            );
        }
        let _ = writeln!(
            out,
            "# HELP avmon_cpu_workers Streams that may decode at once (CPU permits).\n# TYPE avmon_cpu_workers gauge\navmon_cpu_workers {}\n\
             # HELP avmon_cpu_waiting Streams waiting for a CPU permit now.\n# TYPE avmon_cpu_waiting gauge\navmon_cpu_waiting {}\n\
             # HELP avmon_cpu_wait_seconds_total Time streams spent waiting for a CPU permit.\n# TYPE avmon_cpu_wait_seconds_total counter\navmon_cpu_wait_seconds_total {}",
            self.sched.permits(),
            self.sched.waiting(),
            self.sched.waited_s()
        );
        let _ = writeln!(
            out,
            "# HELP avmon_active_alerts Alerts currently raised.\n# TYPE avmon_active_alerts gauge"
        );
        for s in &streams {
            for a in &s.active_alerts {
                let _ = writeln!(
                    out,
                    "avmon_active_alerts{{stream=\"{}\",kind=\"{}\",severity=\"{}\"}} 1",
                    esc(&s.id),
                    esc(&a.kind),
                    a.severity
                );
            }
        }
        hls_metrics(&mut out, &shared);
        let _ = writeln!(out, "# HELP avmon_notifications_total Notifications by outcome since start.\n# TYPE avmon_notifications_total counter");
        let stats: Vec<_> = self.notifiers.iter().map(|n| (n.id(), n.stats())).collect();
        for (id, st) in &stats {
            for (outcome, v) in [
                ("delivered", st.delivered),
                ("failed", st.failed),
                ("dropped", st.dropped),
            ] {
                let _ = writeln!(
                    out,
                    "avmon_notifications_total{{notifier=\"{}\",outcome=\"{outcome}\"}} {v}",
                    esc(id)
                );
            }
        }
        let _ = writeln!(out, "# HELP avmon_outbox_notifications Notifications in the outbox by status (pending: not yet delivered).\n# TYPE avmon_outbox_notifications gauge");
        for n in &self.notifiers {
            match self.store.outbox_counts(n.id()) {
                Ok(c) => {
                    for (status, v) in [
                        ("pending", c.pending),
                        ("delivered", c.delivered),
                        ("failed", c.failed),
                    ] {
                        let _ = writeln!(
                            out,
                            "avmon_outbox_notifications{{notifier=\"{}\",status=\"{status}\"}} {v}",
                            esc(n.id())
                        );
                    }
                }
                Err(e) => tracing::warn!(notifier = n.name(), "reading outbox counts: {e}"),
            }
        }
        out
    }

    fn thumbnail(&self, id: &str) -> Result<Vec<u8>, ApiError> {
        let shared = self.shared(id)?;
        let pictures = shared.pictures.as_ref().ok_or_else(|| {
            ApiError::NotFound(
                "no thumbnails: pictures are off ([evidence] enabled = false)".into(),
            )
        })?;
        let none = || ApiError::NotFound(format!("no picture of stream {id:?} yet"));
        let t = pictures.latest_t().ok_or_else(none)?;
        // Encoded once per picture, however many clients ask.
        let mut cache = shared.thumb.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((ct, jpeg)) = cache.as_ref() {
            if *ct == t {
                return Ok(jpeg.as_ref().clone());
            }
        }
        let picture = pictures.latest().ok_or_else(none)?;
        let jpeg = avmon_media::encode_jpeg(&picture)
            .map_err(|e| ApiError::Internal(format!("thumbnail of {id}: {e}")))?;
        *cache = Some((picture.t, Arc::new(jpeg.clone())));
        Ok(jpeg)
    }

    fn evidence(&self, alert_id: &str, kind: EvidenceKind) -> Result<Vec<u8>, ApiError> {
        let (ext, what) = match kind {
            EvidenceKind::Snapshot => ("jpg", "snapshot"),
            EvidenceKind::Clip => ("ts", "clip"),
        };
        let none = || ApiError::NotFound(format!("no {what} for alert {alert_id:?}"));
        let id = evidence::safe_id(alert_id).ok_or_else(none)?;
        if !self.evidence.enabled {
            return Err(none());
        }
        match std::fs::read(self.evidence.dir.join(format!("{id}.{ext}"))) {
            Ok(data) => Ok(data),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(none()),
            Err(e) => Err(ApiError::Internal(format!(
                "reading the {what} of {id}: {e}"
            ))),
        }
    }

    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<LiveEvent>> {
        Some(self.events.subscribe())
    }

    fn healthy(&self) -> bool {
        // The process answers and its stream threads are alive.
        self.streams
            .lock()
            .map(|s| {
                s.values()
                    .all(|h| h.thread.as_ref().is_some_and(|t| !t.is_finished()))
            })
            .unwrap_or(false)
    }
}

/// `t` to the store's precision (milliseconds), so that an answer and a later read agree.
fn ms(t: WallTime) -> WallTime {
    use chrono::SubsecRound;
    t.trunc_subsecs(3)
}

fn internal(e: avmon_store::StoreError) -> ApiError {
    ApiError::Internal(e.to_string())
}

/// A stream's config for the API: the values of keys that name secrets (an SRT `passphrase`, a
/// `password`, a `token`, a `secret`, a `key`) and a URL's user info are masked.
fn masked(mut v: serde_json::Value) -> serde_json::Value {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    let k = k.to_ascii_lowercase();
                    let secret = ["passphrase", "password", "secret", "token", "key"]
                        .iter()
                        .any(|s| k.contains(s));
                    if secret && !x.is_object() {
                        *x = "***".into();
                    } else {
                        walk(x);
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(walk),
            serde_json::Value::String(s) => {
                // `scheme://user:pass@host` → `scheme://***@host`; query values named like secrets.
                if let Some(at) = s.find('@').filter(|&at| s[..at].contains("://")) {
                    let scheme_end = s.find("://").map_or(0, |i| i + 3);
                    if scheme_end < at {
                        *s = format!("{}***{}", &s[..scheme_end], &s[at..]);
                    }
                }
                for name in ["passphrase=", "password=", "token=", "secret="] {
                    if let Some(i) = s.find(name) {
                        let start = i + name.len();
                        let end = s[start..].find('&').map_or(s.len(), |j| start + j);
                        s.replace_range(start..end, "***");
                    }
                }
            }
            _ => {}
        }
    }
    walk(&mut v);
    v
}

/// A Prometheus label value, escaped.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Each HLS variant's delivery, labelled by stream, variant index and name.
fn hls_metrics(out: &mut String, streams: &[Arc<StreamShared>]) {
    let mut rows = Vec::new();
    for s in streams {
        let live = s.live.lock().unwrap_or_else(|e| e.into_inner());
        for (index, v) in &live.hls {
            rows.push((esc(&s.cfg.id), *index, esc(&v.name), v.clone()));
        }
    }
    type Figure = fn(&VariantFigures) -> f64;
    let figures: [(&str, &str, &str, Figure); 9] = [
        (
            "avmon_hls_bitrate_bps",
            "gauge",
            "Bitrate of the last segment (bytes x 8 / EXTINF).",
            |v| v.bitrate_bps,
        ),
        (
            "avmon_hls_download_seconds",
            "gauge",
            "Download time of the last segment.",
            |v| v.download_s,
        ),
        (
            "avmon_hls_segments_total",
            "counter",
            "Segments fetched and accepted.",
            |v| v.stats.segments as f64,
        ),
        (
            "avmon_hls_segment_errors_total",
            "counter",
            "Segments that failed (HTTP error, timeout, empty, undecodable).",
            |v| v.stats.segment_errors as f64,
        ),
        (
            "avmon_hls_bytes_total",
            "counter",
            "Bytes of the accepted segments.",
            |v| v.stats.bytes as f64,
        ),
        (
            "avmon_hls_media_seconds_total",
            "counter",
            "Media seconds (EXTINF) of the accepted segments.",
            |v| v.stats.media_s,
        ),
        (
            "avmon_hls_download_seconds_total",
            "counter",
            "Seconds spent downloading the accepted segments.",
            |v| v.stats.download_s_total,
        ),
        (
            "avmon_hls_reloads_total",
            "counter",
            "Playlist reloads.",
            |v| v.stats.reloads as f64,
        ),
        (
            "avmon_hls_reload_errors_total",
            "counter",
            "Playlist reloads that failed.",
            |v| v.stats.reload_errors as f64,
        ),
    ];
    for (name, kind, help, f) in figures {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (stream, index, variant, v) in &rows {
            let _ = writeln!(
                out,
                "{name}{{stream=\"{stream}\",variant=\"{index}\",name=\"{variant}\"}} {}",
                f(v)
            );
        }
    }
}

/// A stream's `monitor.behind` is cleared after this long without being behind, seconds.
const BEHIND_CLEAR_S: u64 = 10;

/// Every 0.5 s: each stream's lag and CPU use into the policy ([`crate::degrade`]), its steps
/// applied when `auto_degrade` is on. Streams behind real time that the policy cannot help
/// (nothing left to lower, or `auto_degrade` off) get `monitor.behind`: the host never falls
/// behind silently.
fn degrade_thread(service: &Service, cfg: &ServiceConfig, stop: &AtomicBool) {
    let mut policy = Policy::new(PolicyConfig {
        behind_s: cfg.behind_s,
        restore_after_s: cfg.restore_after_s,
        capacity: service.sched.permits() as f64,
        ..PolicyConfig::default()
    });
    let start = Instant::now();
    let mut last_warning: Option<Instant> = None;
    // Streams with `monitor.behind` open, and when they were last behind.
    let mut stranded: BTreeMap<String, Instant> = BTreeMap::new();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(500));
        let streams = service.shared_streams();
        let samples: Vec<Sample> = streams
            .iter()
            .map(|s| {
                let live = s.live.lock().unwrap_or_else(|e| e.into_inner());
                Sample {
                    id: s.cfg.id.clone(),
                    priority: s.priority.load(Ordering::Relaxed),
                    ceiling: s.ceiling.get(),
                    tier: s.tier.get(),
                    lag_s: live.lag_s,
                    drops: s.cpu.input_drops(),
                    packets: live.counters.packets,
                    busy_s: s.cpu.busy_s(),
                    active: live.connected && !live.down && live.counters.packets > 0,
                }
            })
            .collect();
        let decision = policy.tick(start.elapsed().as_secs_f64(), &samples);
        for s in &streams {
            if let (Some(lag), Ok(mut live)) = (policy.lag_s(&s.cfg.id), s.live.lock()) {
                live.lag_smooth_s = lag;
            }
        }
        // monitor.behind: raised on the streams behind while nothing can be done for them.
        let helpless = decision.exhausted || !cfg.auto_degrade;
        let now = Instant::now();
        for (id, reason) in &decision.behind {
            if let Some(at) = stranded.get_mut(id) {
                *at = now;
            } else if helpless {
                let Some(shared) = streams.iter().find(|s| &s.cfg.id == id) else {
                    continue;
                };
                let why = if cfg.auto_degrade {
                    format!("{reason}; every stream is at its lowest tier: the host needs more CPU")
                } else {
                    format!("{reason}; auto_degrade is off")
                };
                tracing::warn!(stream = %id, reason = %why, "behind real time");
                if let Ok(mut r) = shared.behind_reason.lock() {
                    *r = why;
                }
                shared.behind.store(true, Ordering::Relaxed);
                stranded.insert(id.clone(), now);
            }
        }
        stranded.retain(|id, at| {
            let shared = streams.iter().find(|s| &s.cfg.id == id);
            let keep = shared.is_some() && now.duration_since(*at).as_secs() < BEHIND_CLEAR_S;
            if !keep {
                if let Some(s) = shared {
                    s.behind.store(false, Ordering::Relaxed);
                }
            }
            keep
        });
        for step in decision.steps {
            if !cfg.auto_degrade {
                if step.to > step.from && last_warning.is_none_or(|t| t.elapsed().as_secs() >= 10) {
                    last_warning = Some(Instant::now());
                    tracing::warn!(reason = %step.reason, "the host is behind real time (auto_degrade is off)");
                }
                continue;
            }
            let Some(shared) = streams.iter().find(|s| s.cfg.id == step.id) else {
                continue;
            };
            if shared.tier.get() != step.from {
                continue; // changed meanwhile (PATCH): the next tick sees it
            }
            if let Ok(mut r) = shared.degrade_reason.lock() {
                r.clone_from(&step.reason);
            }
            if step.to > step.from {
                tracing::warn!(stream = %step.id, from = %step.from, to = %step.to, reason = %step.reason, "tier lowered");
            } else {
                tracing::info!(stream = %step.id, from = %step.from, to = %step.to, reason = %step.reason, "tier restored");
            }
            // The decode thread applies it at its next packet, and raises, updates or clears
            // monitor.degraded.
            shared.tier.set(step.to);
        }
    }
}

async fn shutdown_signal(duration: Option<Duration>) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    let timer = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
        _ = timer => {},
    }
}

/// Run the service until Ctrl-C, SIGTERM or `opts.duration`.
pub fn run(cfg: Config, opts: Options) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let store: Arc<dyn Store> = Arc::from(
        avmon_store::open(&cfg.store.url)
            .with_context(|| format!("opening the store {}", cfg.store.url))?,
    );
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(cfg.listen))
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let addr: SocketAddr = listener.local_addr().unwrap_or(cfg.listen);

    // Each notifier starts with what an earlier run left pending in the outbox.
    let mut notifiers: Vec<Arc<dyn Notifier>> = Vec::new();
    for (i, n) in cfg.notifiers.iter().enumerate() {
        let notifier = OutboxNotifier::spawn(n.clone(), store.clone(), rt.handle())
            .with_context(|| format!("starting notifiers[{i}] ({})", n.id()))?;
        notifiers.push(Arc::new(notifier));
    }
    // Rows of a notifier no longer configured (renamed, removed, or its default id moved with
    // its position) would wait forever: say so, and how to deliver them.
    match store.outbox_pending_by_notifier() {
        Ok(pending) => {
            for (id, n) in pending {
                if !cfg.notifiers.iter().any(|c| c.id() == id) {
                    tracing::warn!(
                        notifier = %id, pending = n,
                        "notifications pending for a notifier that is not configured; give a \
                         notifier this id to deliver them"
                    );
                }
            }
        }
        Err(e) => tracing::warn!("reading the outbox: {e}"),
    }

    // Mutes and the API's maintenance windows survive restarts; the config file's are added.
    let mut windows = store.windows().context("loading maintenance windows")?;
    windows.extend(cfg.maintenance.iter().cloned());
    let suppression = Arc::new(Suppression::new(
        store.mutes().context("loading muted streams")?,
        windows,
    ));
    let evidence = match cfg.evidence.enabled {
        true => Some(Evidence::start(cfg.evidence.clone())?),
        false => None,
    };
    // Bounded: a client too slow for it gets `resync`, never holds the hub up.
    let (events, _) = tokio::sync::broadcast::channel(1024);
    let (hub_tx, hub_rx) = crossbeam_channel::unbounded();
    let hub_handle = {
        let (store, notifiers) = (store.clone(), notifiers.clone());
        let suppression = suppression.clone();
        let out = HubOutputs {
            print: opts.print_alerts,
            events: events.clone(),
            evidence,
        };
        std::thread::Builder::new()
            .name("hub".into())
            .spawn(move || hub_thread(hub_rx, store, notifiers, out, suppression))
            .context("starting the hub thread")?
    };
    let service = Arc::new(Service {
        streams: Mutex::new(BTreeMap::new()),
        hub: hub_tx,
        store,
        notifiers: notifiers.clone(),
        protocols: avmon_media::input_protocols(),
        metrics_interval: Duration::from_secs_f64(cfg.store.metrics_interval_s),
        suppression,
        events,
        evidence: cfg.evidence.clone(),
        sched: Scheduler::new(cfg.service.permits(), DEFAULT_QUANTUM),
    });
    rt.spawn(live_events(Arc::downgrade(&service)));
    for s in cfg.streams.clone() {
        service.start_stream(s);
    }
    eprintln!(
        "avmon: monitoring {} stream(s) on {} worker(s); console and API on http://{addr}/ (store {})",
        cfg.streams.len(),
        service.sched.permits(),
        cfg.store.url
    );
    if cfg.api.enabled() {
        let admins = cfg
            .api
            .tokens
            .iter()
            .filter(|t| t.role == avmon_server::Role::Admin)
            .count();
        eprintln!(
            "avmon: API tokens: {admins} admin, {} read-only; /metrics {}",
            cfg.api.tokens.len() - admins,
            if cfg.api.metrics_need_token {
                "needs a token"
            } else {
                "is open"
            }
        );
    } else {
        // Config validation refused a non-loopback address without tokens.
        eprintln!(
            "avmon: no API tokens configured: the API is open to anyone on this host, so it \
             listens on loopback only ({addr})"
        );
    }
    let degrade_stop = Arc::new(AtomicBool::new(false));
    let degrade_handle = {
        let (service, stop, scfg) = (service.clone(), degrade_stop.clone(), cfg.service.clone());
        std::thread::Builder::new()
            .name("degrade".into())
            .spawn(move || degrade_thread(&service, &scfg, &stop))
            .context("starting the degradation thread")?
    };
    let monitor: Arc<dyn Monitor> = service.clone();
    let served = rt.block_on(avmon_server::serve(
        listener,
        monitor,
        cfg.api.clone(),
        shutdown_signal(opts.duration),
    ));
    eprintln!("avmon: shutting down");
    degrade_stop.store(true, Ordering::Relaxed);
    let _ = degrade_handle.join();
    service.stop_all();
    // The live-events task holds the service only for a moment at a time.
    let until = Instant::now() + Duration::from_secs(2);
    while Arc::strong_count(&service) > 1 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    // Dropping the last sender ends the hub once it has handled everything queued.
    let Service { hub, .. } = match Arc::try_unwrap(service) {
        Ok(s) => s,
        Err(_) => anyhow::bail!("the API still holds the service at shutdown"),
    };
    drop(hub);
    let _ = hub_handle.join();
    for n in &notifiers {
        if !n.flush(Duration::from_secs(5)) {
            tracing::warn!(
                notifier = n.name(),
                "some notifications were not delivered before exit"
            );
        }
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    served.map_err(|e| anyhow::anyhow!("HTTP server: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_in_a_streams_config_are_masked() {
        let v = masked(json!({
            "id": "a",
            "url": "srt://user:hunter2@origin:9000?mode=caller&passphrase=s3cret&latency=200",
            "options": {"passphrase": "s3cret", "rtsp_transport": "tcp"},
            "tier": "keyframes",
        }));
        let text = v.to_string();
        assert!(
            !text.contains("s3cret") && !text.contains("hunter2"),
            "{text}"
        );
        assert_eq!(
            v["url"],
            "srt://***@origin:9000?mode=caller&passphrase=***&latency=200"
        );
        assert_eq!(v["options"]["rtsp_transport"], "tcp");
        assert_eq!(v["tier"], "keyframes");
    }

    #[test]
    fn levels_are_rms_and_peak_in_dbfs() {
        let [rms, peak] = level(&[0.5, -0.5, 0.5, -0.5]);
        assert!((rms - -6.02).abs() < 0.01 && (peak - -6.02).abs() < 0.01);
        let [rms, peak] = level(&[0.0; 8]);
        assert_eq!((rms, peak), (-100.0, -100.0));
    }
}
