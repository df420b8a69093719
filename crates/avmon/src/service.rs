//! `avmon run`: many streams in one process.
//!
//! Threads:
//! - one decode thread per stream: FFmpeg demux + decode, detectors on borrowed frames, the
//!   stream's alert engine. It never does I/O beyond its input: alert events and metrics leave it
//!   on an unbounded channel, so nothing downstream can slow detection;
//! - one hub thread: keeps each stream's active alerts for the API, writes the store, hands
//!   events to notifiers (whose `notify` never blocks; delivery runs on the async runtime);
//! - the async runtime: the HTTP API and notifier deliveries.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use avmon_core::{
    round_ms, Alert, AlertEvent, AudioBuffer, MediaInfo, StreamId, Tier, TierControl, Transition,
    VideoFrame, WallTime,
};
use avmon_hls::VariantStats;
use avmon_media::{
    run_input, run_source, Backoff, FrameSink, Input, MediaClock, OpenOptions, SourceEvents, Tap,
};
use avmon_notify::{Notifier, OutboxNotifier};
use avmon_server::{AlertsQuery, ApiError, Monitor, StreamState, StreamStatus};
use avmon_store::{AlertQuery, MetricsSample, Store, StreamRecord};
use chrono::Utc;
use crossbeam_channel::{Receiver, Sender};

use crate::config::{Config, StreamConfig};
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
    /// The tier the decode thread reads per packet; the API changes it.
    tier: TierControl,
    live: Mutex<Live>,
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
}

/// The decode thread's sink: pipeline in, events and status out.
struct StreamSink {
    pipe: Pipeline,
    shared: Arc<StreamShared>,
    hub: Sender<HubMsg>,
    last_publish: Instant,
    last_metrics: Instant,
    metrics_interval: Duration,
    media_t: f64,
}

impl StreamSink {
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
                live.counters = self.pipe.counters;
                live.last_data_at = Some(Utc::now());
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
        self.pipe.packet(t, bytes);
        self.forward();
        self.publish(false);
    }
    fn on_video(&mut self, frame: &VideoFrame<'_>) {
        self.pipe.video(frame);
        self.forward();
    }
    fn on_audio(&mut self, buf: &AudioBuffer<'_>) {
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
    let opts = OpenOptions {
        io_timeout,
        open_timeout: io_timeout.max(Duration::from_secs(5)),
        decoder_threads: cfg.decoder_threads,
        format_options: cfg.options.clone().into_iter().collect(),
        tap: Some(Tap(tap.clone())),
        tier: shared.tier.clone(),
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
                        let source = Box::new(input.source(stop.clone()));
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

fn hub_thread(
    rx: Receiver<HubMsg>,
    store: Arc<dyn Store>,
    notifiers: Vec<Arc<dyn Notifier>>,
    print: bool,
) {
    for msg in rx {
        match msg {
            HubMsg::Alert(shared, ev) => {
                if print {
                    print_alert(&ev);
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
                if let Err(e) = store.record_alert(&ev) {
                    tracing::error!("storing alert {}: {e}", ev.alert.id);
                }
                for n in &notifiers {
                    n.notify(&ev);
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
}

impl Service {
    fn start_stream(&self, cfg: StreamConfig) -> Arc<StreamShared> {
        let shared = Arc::new(StreamShared {
            tier: TierControl::new(cfg.tier()),
            cfg: cfg.clone(),
            live: Mutex::new(Live::default()),
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

    fn status_of(shared: &StreamShared) -> StreamStatus {
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
        }
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
            .map(|s| Service::status_of(s))
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
        Ok(Service::status_of(&shared))
    }

    fn set_tier(&self, id: &str, tier: Tier) -> Result<StreamStatus, ApiError> {
        let shared = self
            .streams
            .lock()
            .ok()
            .and_then(|s| s.get(id).map(|h| h.shared.clone()))
            .ok_or_else(|| ApiError::NotFound(format!("no stream {id:?}")))?;
        // The decode thread reads it at its next packet: no reconnect.
        shared.tier.set(tier);
        tracing::info!(stream = %id, %tier, "tier set");
        Ok(Service::status_of(&shared))
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

    fn alerts(&self, q: &AlertsQuery) -> Result<Vec<Alert>, ApiError> {
        self.store
            .alerts(&AlertQuery {
                stream: q.stream.clone().map(StreamId),
                since: q.since,
                active_only: q.active == Some(true),
                limit: q.limit_or_default(),
            })
            .map_err(|e| ApiError::Internal(e.to_string()))
    }

    fn prometheus(&self) -> String {
        let shared = self.shared_streams();
        let streams: Vec<StreamStatus> = shared.iter().map(|s| Service::status_of(s)).collect();
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

    let (hub_tx, hub_rx) = crossbeam_channel::unbounded();
    let hub_handle = {
        let (store, notifiers) = (store.clone(), notifiers.clone());
        let print = opts.print_alerts;
        std::thread::Builder::new()
            .name("hub".into())
            .spawn(move || hub_thread(hub_rx, store, notifiers, print))
            .context("starting the hub thread")?
    };
    let service = Arc::new(Service {
        streams: Mutex::new(BTreeMap::new()),
        hub: hub_tx,
        store,
        notifiers: notifiers.clone(),
        protocols: avmon_media::input_protocols(),
        metrics_interval: Duration::from_secs_f64(cfg.store.metrics_interval_s),
    });
    for s in cfg.streams.clone() {
        service.start_stream(s);
    }
    eprintln!(
        "avmon: monitoring {} stream(s); API on http://{addr} (store {})",
        cfg.streams.len(),
        cfg.store.url
    );
    let monitor: Arc<dyn Monitor> = service.clone();
    let served = rt.block_on(avmon_server::serve(
        listener,
        monitor,
        shutdown_signal(opts.duration),
    ));
    eprintln!("avmon: shutting down");
    service.stop_all();
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
