//! The per-stream thread and its sink: one input's demux, decode and detection, its
//! alert events and metrics on to the hub, and its status published for the API.
//!
//! The decode thread never does I/O beyond its input: alert events and metrics leave it on an
//! unbounded channel (a send never blocks), so nothing downstream can slow detection. It holds
//! one of the host's CPU permits ([`avmon_core::sched`]) while it demuxes, decodes and detects,
//! and lets go of it while it waits for input.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use avmon_core::sched::Slot;
use avmon_core::{
    kinds, round_ms, Alert, AlertEvent, AudioBuffer, Details, MediaInfo, StreamId, Tier,
    TierControl, VideoFrame, WallTime,
};
use avmon_hls::VariantStats;
use avmon_media::{
    run_input, run_source, Backoff, FrameSink, Input, MediaClock, OpenOptions, Pictures,
    SourceEvents, Tap,
};
use avmon_store::MetricsSample;
use chrono::Utc;
use crossbeam_channel::Sender;

use crate::config::StreamConfig;
use crate::evidence::{ClipRing, Taps};
use crate::hls::{HlsInput, HlsOptions, VariantOut};
use crate::hub::HubMsg;
use crate::pipeline::{Counters, Pipeline};
use crate::transport::TransportTap;

/// What the decode thread publishes about its stream, read by the API.
#[derive(Default)]
pub(crate) struct Live {
    pub(crate) info: Option<MediaInfo>,
    pub(crate) media_t: f64,
    pub(crate) last_data_at: Option<WallTime>,
    pub(crate) counters: Counters,
    pub(crate) reconnects: u64,
    pub(crate) connected: bool,
    pub(crate) down: bool,
    pub(crate) active: BTreeMap<String, Alert>,
    /// An HLS stream's variants, by index.
    pub(crate) hls: BTreeMap<usize, VariantFigures>,
    /// Audio levels per channel, `[rms, peak]` dBFS, the loudest since the last publish.
    pub(crate) levels: Vec<[f32; 2]>,
    /// Seconds the analysis is behind real time, as the decode thread last measured it.
    pub(crate) lag_s: f64,
    /// The same, smoothed by the degradation policy (what the API shows).
    pub(crate) lag_smooth_s: f64,
}

/// One HLS variant's delivery, for `/metrics`.
#[derive(Clone, Debug, Default)]
pub(crate) struct VariantFigures {
    pub(crate) name: String,
    pub(crate) stats: VariantStats,
    /// The last segment's bitrate (bytes × 8 / `EXTINF`) and download time.
    pub(crate) bitrate_bps: f64,
    pub(crate) download_s: f64,
}

pub(crate) struct StreamShared {
    pub(crate) cfg: StreamConfig,
    /// The tier the decode thread reads per packet; the API and automatic degradation change it.
    pub(crate) tier: TierControl,
    /// The tier set by the config or `PATCH`: the ceiling automatic degradation restores to.
    pub(crate) ceiling: TierControl,
    pub(crate) priority: AtomicU32,
    /// The stream's CPU permit and its input's figures (datagram age, drops).
    pub(crate) cpu: Slot,
    /// Why the tier was last lowered (the `monitor.degraded` alert's reason).
    pub(crate) degrade_reason: Mutex<String>,
    /// Whether the stream is behind real time with nothing left to lower (or automatic
    /// degradation off): `monitor.behind` is open while set. Read per packet, so an atomic;
    /// the reason is read only when it changes.
    pub(crate) behind: AtomicBool,
    pub(crate) behind_reason: Mutex<String>,
    pub(crate) live: Mutex<Live>,
    /// Scaled copies of the picture (thumbnail, snapshots); none with `[evidence] enabled = false`.
    pub(crate) pictures: Option<Arc<Pictures>>,
    /// The stream's last seconds of bytes, for clips (when evidence is kept).
    pub(crate) ring: Option<Arc<ClipRing>>,
    /// `cfg` as JSON with secrets masked, for the API.
    pub(crate) config_json: serde_json::Value,
    /// The thumbnail last encoded, and the picture's media time it was encoded from.
    pub(crate) thumb: Mutex<Option<(f64, Arc<Vec<u8>>)>>,
    /// In a cluster: the lease epoch this node holds the stream under; its results are written
    /// under it, and refused once another node took the stream over.
    pub(crate) epoch: Option<i64>,
    /// Stop without clearing the open alerts: the stream moves to another node, which
    /// continues them.
    pub(crate) handover: Arc<AtomicBool>,
    /// The store refused a write under `epoch`: another node holds the stream now.
    pub(crate) fenced: AtomicBool,
    /// Taken over from another node: its open alerts to continue, and where its media time
    /// line stood (consumed when the decode thread starts).
    pub(crate) resume: Mutex<Option<Resume>>,
}

/// What a node that takes a stream over continues from.
#[derive(Clone, Debug, Default)]
pub(crate) struct Resume {
    /// The stream's alerts still raised.
    pub(crate) alerts: Vec<Alert>,
    /// The media time now, by the stream's time line so far (its last known media time plus
    /// the wall time since).
    pub(crate) media_t: f64,
}

impl StreamShared {
    pub(crate) fn degraded(&self) -> bool {
        self.tier.get() > self.ceiling.get()
    }
}

/// Audio levels are measured on one buffer in this many seconds of media.
pub(crate) const LEVELS_EVERY_S: f64 = 0.1;

/// How fast a constant slip of media time behind wall time is forgiven (seconds per second): a
/// stream that falls behind faster than this shows a growing lag.
pub(crate) const SLIP_FORGIVE: f64 = 0.05;

/// The decode thread's sink: pipeline in, events and status out.
pub(crate) struct StreamSink {
    pub(crate) pipe: Pipeline,
    pub(crate) shared: Arc<StreamShared>,
    pub(crate) hub: Sender<HubMsg>,
    pub(crate) last_publish: Instant,
    pub(crate) last_metrics: Instant,
    pub(crate) metrics_interval: Duration,
    pub(crate) media_t: f64,
    /// Media time of the next audio level measurement, and the loudest levels since publishing.
    pub(crate) next_level_t: f64,
    pub(crate) levels: Vec<[f32; 2]>,
    /// Wall clock less media time at its lowest since the (re)connection (creeping up by
    /// [`SLIP_FORGIVE`] of the wall time): the slip is how far above that it is now (a
    /// constant start-up delay is not falling behind).
    pub(crate) slip_base: Option<f64>,
    /// Wall seconds since `started` at the last measure.
    pub(crate) slip_wall: f64,
    /// Whether the input tells how long its data waited (UDP datagrams, HLS segments): then
    /// that is the lag, and the slip (which a sender's own pauses and bursts move) is unused.
    pub(crate) arrival_timed: bool,
    pub(crate) started: Instant,
    pub(crate) lag_s: f64,
    /// The tier the open `monitor.degraded` alert describes.
    pub(crate) degraded_at: Option<Tier>,
    /// Whether `monitor.behind` is open.
    pub(crate) behind_open: bool,
}

/// `[rms, peak]` of one channel's samples, in dBFS (floored at -100).
pub(crate) fn level(samples: &[f32]) -> [f32; 2] {
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
        for ev in self.pipe.events() {
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
            let _ = self.hub.send(HubMsg::Metrics(sample, self.shared.epoch));
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
pub(crate) struct HubOut {
    pub(crate) shared: Arc<StreamShared>,
    pub(crate) hub: Sender<HubMsg>,
    pub(crate) index: usize,
    pub(crate) interval: Duration,
    pub(crate) last_sample: Instant,
    /// The totals at the last sample.
    pub(crate) sampled: VariantStats,
    /// The longest download since the last sample.
    pub(crate) download_max: f64,
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
            let _ = self.hub.send(HubMsg::Metrics(sample, self.shared.epoch));
        }
    }
}

pub(crate) fn stream_thread(
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
        TransportTap::new(crate::report::is_live(&cfg.url))
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
            crate::hls::detectors_for(&cfg.url, cfg.detectors.clone()),
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
    let resume = shared.resume.lock().ok().and_then(|mut r| r.take());
    let mut variant_alerts = Vec::new();
    if let Some(mut r) = resume {
        // An HLS variant's alerts go on in that variant's engine.
        (variant_alerts, r.alerts) = r.alerts.into_iter().partition(crate::hls::is_variant_alert);
        if let Ok(mut live) = shared.live.lock() {
            for a in &variant_alerts {
                live.active.insert(a.id.clone(), a.clone());
            }
        }
        // Taken over: the time line goes on from where the last owner left it, and its open
        // alerts continue here (cleared once if their defect is not seen again).
        clock = MediaClock::resume(r.media_t, 0.0);
        sink.media_t = r.media_t;
        sink.pipe.end_t = r.media_t;
        sink.next_level_t = r.media_t;
        if let Ok(mut live) = shared.live.lock() {
            live.media_t = r.media_t;
            for a in &r.alerts {
                live.active.insert(a.id.clone(), a.clone());
            }
        }
        sink.pipe
            .alerts
            .resume(r.alerts, r.media_t, crate::alerts::CARRY_GRACE_S);
    }
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
                resume: std::mem::take(&mut variant_alerts),
                handover: Some(shared.handover.clone()),
            };
            let (out_shared, out_hub) = (shared.clone(), sink.hub.clone());
            let make_out = move |v: &avmon_hls::Variant| {
                HubOut::new(out_shared.clone(), out_hub.clone(), v, metrics_interval)
            };
            match HlsInput::spawn(h, hls_opts, stop.clone(), make_out) {
                Ok(input) => {
                    sink.pipe.captions_declared = Some(input.captions_declared());
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
    // Removed or shutting down: what is still open is cleared now; handed over to another
    // node, it stays open for that node to continue.
    if !shared.handover.load(Ordering::Relaxed) {
        sink.pipe.close();
    }
    sink.forward();
    sink.publish(true);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_rms_and_peak_in_dbfs() {
        let [rms, peak] = level(&[0.5, -0.5, 0.5, -0.5]);
        assert!((rms - -6.02).abs() < 0.01 && (peak - -6.02).abs() < 0.01);
        let [rms, peak] = level(&[0.0; 8]);
        assert_eq!((rms, peak), (-100.0, -100.0));
    }
}
