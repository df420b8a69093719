//! HLS and DASH inputs, in `check` and in the service (`run`): one code path for both (a DASH
//! Representation is a variant here; `avmon-hls` reads both formats).
//!
//! `avmon-hls` monitors delivery (stale playlist, failed and slow segments, sequence, target
//! duration, discontinuities), each chosen variant on its own thread ([`HlsInput`]). Each variant
//! has its own alert engine ([`VariantSink`]): an engine keeps one alert per kind, and two
//! variants may well be stale at once. What becomes of its alert events and metrics is the
//! caller's ([`VariantOut`]): `check` keeps the cleared alerts for its report, the service
//! sends every event to its hub (store, API, notifiers) and publishes the metrics.
//!
//! Every segment is fetched once, by `avmon-hls`: the first chosen variant's segments go on, in
//! order, to FFmpeg's demuxer ([`SegmentSource`], through avmon's custom I/O) and to the TR 101
//! 290 analyser on the way, so the detectors see exactly the media the delivery checks judged.
//! A discontinuity or missing media (a failed segment, one dropped, a restarted monitor) starts
//! the transport analyser afresh (continuity counters need not follow on there).
//!
//! Variant events are on the variant's own media clock (the sum of `EXTINF` since monitoring
//! started), which starts where FFmpeg's HLS demuxer would (three target durations from the
//! live edge, or the first segment of an ended playlist), so they line up with the decoder's to
//! within a segment.
//!
//! The two uses differ where they must:
//! - `check` ([`HlsInput::start`]): the playlist must load (a one-line error if not), each
//!   variant is monitored once, and the monitor waits for a slow decoder (every segment of an
//!   ended playlist is decoded).
//! - the service ([`HlsInput::spawn`]): monitoring goes on until the stream is removed, whatever
//!   the origin does (`avmon_hls::keep_monitoring`), and never waits for the decoder: while the
//!   decoder is behind by [`QUEUE`] segments (reconnecting, say) a segment is not queued for it,
//!   and the next one starts a new byte stream.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Result;
use avmon_alert::AlertConfig;
use avmon_core::{round_ms, Alert, AlertEvent, Finding, StreamId, Transition};
use avmon_hls::{HlsConfig, HlsSink, Segment, Variant, VariantRun, VariantStats};
use avmon_media::ByteSource;
use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender, TrySendError};
use serde_json::{json, Value};

use crate::alerts::StreamAlerts;
use crate::report::Event;

/// Segments queued for the decoder at most.
pub const QUEUE: usize = 64;

/// One segment of the decoded variant, for the decoder.
pub struct Chunk {
    bytes: Vec<u8>,
    /// The initialisation section (`EXT-X-MAP`) the segment needs, if any.
    init: Option<Arc<[u8]>>,
    /// Begins a new stream: after a discontinuity or missing media.
    fresh: bool,
    /// `EXTINF`, in seconds: the next segment is due about this long after this one.
    duration: f64,
    /// When it was fetched and queued for the decoder.
    at: Instant,
}

/// How long a segment of one decoded track waits for the other's before it goes on alone
/// (the other's monitor is behind, or failing).
const HOLD: Duration = Duration::from_secs(3);

/// What a variant's segments are to the decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Track {
    /// The decoded variant (HLS; a DASH Representation with video and sound, or without a
    /// partner).
    Only,
    /// A DASH video Representation, joined with an audio one ([`Track::Audio`]).
    Video,
    Audio,
}

/// A segment of a joined track waiting for its turn.
struct Pending {
    bytes: Vec<u8>,
    /// Presentation time (DASH) or the variant's media time.
    start: f64,
    duration: f64,
    fresh: bool,
    at: Instant,
}

/// The sending end of the decoded segments. A DASH video and audio Representation are joined
/// into one fragmented MP4 stream ([`avmon_hls::fmp4`]): their segments go out in presentation
/// order, the audio's renumbered into the joined initialisation section.
struct Feed {
    tx: Sender<Chunk>,
    /// Never wait for the decoder (the service); otherwise wait, until `stop` (check).
    lossy: bool,
    stop: Arc<AtomicBool>,
    /// Media is missing before the next segment sent.
    gap: bool,
    /// Two tracks are joined.
    two: bool,
    /// The latest initialisation section of the only or video track, and of the audio track.
    inits: [Option<Arc<[u8]>>; 2],
    /// The joined section and the audio's track number in it, once both are known.
    joined: Option<(Arc<[u8]>, u32)>,
    queues: [std::collections::VecDeque<Pending>; 2],
    /// The initialisation section of the last chunk sent.
    sent_init: Option<Arc<[u8]>>,
}

impl Feed {
    fn new(tx: Sender<Chunk>, lossy: bool, stop: Arc<AtomicBool>) -> Self {
        Feed {
            tx,
            lossy,
            stop,
            gap: false,
            two: false,
            inits: [None, None],
            joined: None,
            queues: Default::default(),
            sent_init: None,
        }
    }

    /// Queue `s`, a segment of `track`, for the decoder; whether the decoder is still there.
    fn send(&mut self, track: Track, s: &Segment<'_>) -> bool {
        let i = usize::from(track == Track::Audio);
        if let Some(init) = s.init {
            self.inits[i] = Some(Arc::from(init));
            if self.two {
                self.join();
            }
        }
        let p = Pending {
            bytes: s.bytes.to_vec(),
            start: s.presentation_s.unwrap_or(s.start_t),
            duration: s.duration,
            fresh: s.discontinuity || s.after_gap,
            at: Instant::now(),
        };
        if !self.two {
            return self.emit(0, p);
        }
        self.queues[i].push_back(p);
        self.drain(false)
    }

    /// Join the two initialisation sections, when both are known.
    fn join(&mut self) {
        let [Some(v), Some(a)] = &self.inits else {
            return;
        };
        self.joined = match avmon_hls::fmp4::merge_init(v, a) {
            Ok((j, id)) => Some((Arc::from(j), id)),
            Err(e) => {
                tracing::warn!(
                    "DASH: the audio cannot be decoded with the video ({e}); video only"
                );
                None
            }
        };
    }

    /// Send what is due, in presentation order; with `all`, everything queued.
    fn drain(&mut self, all: bool) -> bool {
        loop {
            let due = |p: &Pending| all || p.at.elapsed() >= HOLD;
            let pick = match (self.queues[0].front(), self.queues[1].front()) {
                (Some(v), Some(a)) => usize::from(a.start < v.start),
                (Some(v), None) if due(v) => 0,
                (None, Some(a)) if due(a) => 1,
                _ => return true,
            };
            let Some(p) = self.queues[pick].pop_front() else {
                return true;
            };
            if !self.emit(pick, p) {
                return false;
            }
        }
    }

    /// Send one segment of track `i` (0: only or video, 1: audio).
    fn emit(&mut self, i: usize, mut p: Pending) -> bool {
        let init = match (&self.joined, i) {
            (Some((j, id)), 1) => {
                if let Err(e) = avmon_hls::fmp4::retrack(&mut p.bytes, *id) {
                    tracing::debug!("DASH: an audio segment not decoded: {e}");
                    self.gap = true;
                    return true;
                }
                Some(j.clone())
            }
            (Some((j, _)), _) => Some(j.clone()),
            // Not joined: the audio alone only while there is no video.
            (None, 1) if self.inits[0].is_some() => return true,
            (None, _) => self.inits[i].clone(),
        };
        let changed = match (&init, &self.sent_init) {
            (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
            (a, b) => a.is_some() != b.is_some(),
        };
        // Another initialisation section is another stream for the demuxer.
        let fresh = p.fresh || changed && self.sent_init.is_some() || std::mem::take(&mut self.gap);
        self.sent_init = init.clone();
        let mut chunk = Chunk {
            bytes: p.bytes,
            init,
            fresh,
            duration: p.duration,
            at: Instant::now(),
        };
        if self.lossy {
            return match self.tx.try_send(chunk) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    tracing::debug!("HLS: the decoder is {QUEUE} segments behind; one skipped");
                    self.gap = true;
                    true
                }
                Err(TrySendError::Disconnected(_)) => false,
            };
        }
        loop {
            match self.tx.send_timeout(chunk, avmon_media::ingest::POLL) {
                Ok(()) => return true,
                Err(SendTimeoutError::Timeout(c)) if !self.stop.load(Ordering::Relaxed) => {
                    chunk = c
                }
                Err(_) => return false,
            }
        }
    }
}

/// A variant's share of the [`Feed`].
struct FeedHandle {
    feed: Arc<std::sync::Mutex<Feed>>,
    track: Track,
}

impl FeedHandle {
    fn with<R>(&self, f: impl FnOnce(&mut Feed) -> R) -> R {
        let mut feed = self.feed.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut feed)
    }
}

/// The decoded variant's segments, in order, as bytes for FFmpeg's demuxer: one per opening of
/// the input ([`HlsInput::source`]). Ends when the monitors have ended and every segment was
/// read, or at `stop`; times out when no segment came for `grace` after the next was due.
pub struct SegmentSource {
    rx: Receiver<Chunk>,
    bytes: Vec<u8>,
    pos: usize,
    fresh: bool,
    /// The initialisation section the demuxer has been given.
    init: Option<Arc<[u8]>>,
    stop: Arc<AtomicBool>,
    grace: Duration,
    /// How long after the last segment the next one is due.
    due: Duration,
    last: Instant,
    /// Told how long each segment waited for the decoder (the service's lag).
    cpu: Option<avmon_core::sched::Slot>,
}

impl SegmentSource {
    fn take(&mut self, c: Chunk) {
        self.last = Instant::now();
        if let Some(cpu) = &self.cpu {
            cpu.note_arrival(c.at.elapsed(), None);
        }
        self.due = Duration::try_from_secs_f64(c.duration)
            .unwrap_or_default()
            .min(Duration::from_secs(3600));
        self.fresh |= c.fresh;
        self.pos = 0;
        let new_init = match (&c.init, &self.init) {
            (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
            (a, _) => a.is_some(),
        };
        match c.init.filter(|_| new_init) {
            // A demuxer opened on this source, or a new section: it goes first.
            Some(init) => {
                self.bytes = Vec::with_capacity(init.len() + c.bytes.len());
                self.bytes.extend_from_slice(&init);
                self.bytes.extend_from_slice(&c.bytes);
                self.init = Some(init);
            }
            None => self.bytes = c.bytes,
        }
    }
}

impl ByteSource for SegmentSource {
    fn linger(&self, want: std::time::Duration) -> std::time::Duration {
        want
    }

    fn ready(&mut self) -> bool {
        if self.pos < self.bytes.len() {
            return true;
        }
        match self.rx.try_recv() {
            Ok(c) => {
                self.take(c);
                self.pos < self.bytes.len()
            }
            Err(_) => false,
        }
    }
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.bytes.len() {
            if self.stop.load(Ordering::Relaxed) {
                return Err(io::ErrorKind::Interrupted.into());
            }
            match self.rx.recv_timeout(avmon_media::ingest::POLL) {
                Ok(c) => self.take(c),
                Err(RecvTimeoutError::Timeout) => {
                    let waited = self.last.elapsed();
                    if waited > self.grace + self.due {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("no HLS segment for {:.1} s", waited.as_secs_f64()),
                        ));
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return Ok(0),
            }
        }
        let n = buf.len().min(self.bytes.len() - self.pos);
        buf[..n].copy_from_slice(&self.bytes[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }

    fn restarted(&mut self) -> bool {
        std::mem::take(&mut self.fresh)
    }
}

/// Where a variant's alert events and metrics go. Called on the variant's thread.
pub trait VariantOut: Send {
    /// An alert of this variant was raised, updated or cleared.
    fn alert(&mut self, ev: AlertEvent);
    /// A segment was accepted.
    fn segment(&mut self, _s: &Segment<'_>) {}
    /// After each reload: the variant's totals, at media time `media_t`.
    fn stats(&mut self, _media_t: f64, _stats: &VariantStats) {}
}

/// One variant's findings through its alert engine, and (for the decoded variants) its
/// segments to the decoder.
pub struct VariantSink<O> {
    alerts: StreamAlerts,
    feed: Option<FeedHandle>,
    pub out: O,
    pub media_t: f64,
    /// Stop monitoring once the media clock reaches this (`check --duration`).
    stop_at: Option<f64>,
    stop: Arc<AtomicBool>,
    /// See [`HlsOptions::handover`].
    handover: Option<Arc<AtomicBool>>,
    /// Added to the monitor's media times before they reach the alert engine: a variant taken
    /// over from another node goes on from its carried alerts' time line (its own monitor
    /// starts at 0 again).
    offset: f64,
}

impl<O: VariantOut> VariantSink<O> {
    fn send(&mut self) {
        for ev in self.alerts.events.drain(..) {
            self.out.alert(ev);
        }
    }

    fn tick(&mut self, t: f64) {
        self.media_t = self.media_t.max(t);
        self.alerts.tick(t + self.offset);
        self.send();
        if self.stop_at.is_some_and(|d| self.media_t >= d) {
            self.stop.store(true, Ordering::Relaxed);
        }
    }
}

impl<O: VariantOut> HlsSink for VariantSink<O> {
    fn on_finding(&mut self, mut f: Finding) {
        f.t += self.offset;
        self.alerts.finding(f);
        self.send();
    }

    fn on_segment(&mut self, s: &Segment<'_>) {
        if self
            .feed
            .as_ref()
            .is_some_and(|h| !h.with(|f| f.send(h.track, s)))
        {
            // The decoder is gone: monitoring goes on without it.
            self.feed = None;
        }
        self.out.segment(s);
        self.tick(s.start_t + s.duration);
    }

    fn on_tick(&mut self, media_t: f64, stats: &VariantStats) {
        // A joined track's segments waiting for the other's go on once they waited enough.
        if self
            .feed
            .as_ref()
            .is_some_and(|h| !h.with(|f| f.drain(false)))
        {
            self.feed = None;
        }
        self.out.stats(media_t, stats);
        self.tick(media_t);
    }

    fn on_end(&mut self, media_t: f64) {
        self.media_t = self.media_t.max(media_t);
        // Handed over to another node: it continues what is open.
        if !self
            .handover
            .as_ref()
            .is_some_and(|h| h.load(Ordering::Relaxed))
        {
            self.alerts.clear_all(self.media_t + self.offset);
        }
        self.send();
        if let Some(h) = &self.feed {
            // A monitor that follows starts wherever the playlist then is.
            h.with(|f| f.gap = true);
        }
    }
}

/// How an [`HlsInput`] reports and waits.
pub struct HlsOptions {
    /// The alerts' stream.
    pub stream: StreamId,
    pub alerts: AlertConfig,
    /// Stop once the media clock reaches this many seconds (`check --duration`).
    pub duration: Option<f64>,
    /// How long past its due time the decoder waits for a segment before the input counts as
    /// timed out (the playlist's own staleness is `hls.stale`).
    pub grace: Duration,
    /// Open alerts of the stream's variants that its last owner (another cluster node) raised:
    /// each variant's engine continues those of its own (`details.variant`), on its own clock.
    pub resume: Vec<avmon_core::Alert>,
    /// Set when monitoring stops because the stream moves to another node: the variants' open
    /// alerts are then left open for it, not cleared.
    pub handover: Option<Arc<AtomicBool>>,
}

/// The detectors for the input `url`. A DASH stream's video and audio are joined a whole
/// segment at a time (a second of one, then a second of the other), so their decode order says
/// nothing of their timing: `av.sync`'s timestamp method is off for it (the content method,
/// flash and beep, still measures lip sync).
pub fn detectors_for(
    url: &str,
    mut cfg: avmon_detect::DetectorsConfig,
) -> avmon_detect::DetectorsConfig {
    if avmon_hls::is_dash_url(url) {
        cfg.av_sync.timestamps = false;
    }
    cfg
}

/// Whether an alert is one of an HLS variant's or DASH Representation's (raised by its delivery
/// checks).
pub fn is_variant_alert(a: &avmon_core::Alert) -> bool {
    (a.kind.starts_with("hls.") || a.kind.starts_with("dash.")) && a.details.contains_key("variant")
}

/// An HLS input being monitored: a thread that runs every chosen variant's monitor (each on
/// its own thread), and the decoded variant's segments.
pub struct HlsInput<O> {
    stop: Arc<AtomicBool>,
    /// The decoded variant declares closed captions.
    captions: Arc<AtomicBool>,
    /// Taken by [`finish`](Self::finish); dropping the input stops its threads.
    handle: Option<JoinHandle<Vec<VariantRun<VariantSink<O>>>>>,
    segments: Receiver<Chunk>,
    grace: Duration,
}

impl<O> Drop for HlsInput<O> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl<O: VariantOut + 'static> HlsInput<O> {
    /// `check`: load `cfg.url` (a playlist that does not load is an error here) and monitor its
    /// chosen variants once each, to their end or [`finish`](Self::finish).
    pub fn start(
        cfg: &HlsConfig,
        opts: HlsOptions,
        make_out: impl FnMut(&Variant) -> O + Send + 'static,
    ) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let monitors = avmon_hls::resolve(cfg, cfg.format(), stop.clone())
            .map_err(|e| anyhow::anyhow!("HLS: {e}"))?;
        Self::launch(stop, false, opts, make_out, move |make_sink| {
            avmon_hls::run_monitors(monitors, make_sink)
        })
    }

    /// The service: monitor `cfg` until `stop`, whatever the origin does (a playlist that
    /// cannot be loaded is loaded again, with backoff).
    pub fn spawn(
        cfg: HlsConfig,
        opts: HlsOptions,
        stop: Arc<AtomicBool>,
        make_out: impl FnMut(&Variant) -> O + Send + 'static,
    ) -> Result<Self> {
        let monitor_stop = stop.clone();
        Self::launch(stop, true, opts, make_out, move |make_sink| {
            avmon_hls::keep_monitoring(
                &cfg,
                cfg.format(),
                monitor_stop,
                avmon_hls::Retry::default(),
                make_sink,
            )
        })
    }

    fn launch<F, R>(
        stop: Arc<AtomicBool>,
        lossy: bool,
        opts: HlsOptions,
        mut make_out: F,
        run: R,
    ) -> Result<Self>
    where
        F: FnMut(&Variant) -> O + Send + 'static,
        R: FnOnce(&mut dyn FnMut(&Variant) -> VariantSink<O>) -> Vec<VariantRun<VariantSink<O>>>
            + Send
            + 'static,
    {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let feed = Arc::new(std::sync::Mutex::new(Feed::new(tx, lossy, stop.clone())));
        // The first chosen variant is decoded; when it is a DASH video Representation, the
        // first chosen audio Representation is joined to it.
        let mut roles: Option<Track> = None;
        let mut role = move |v: &Variant| -> Option<Track> {
            let dash = |kind: &str| v.id.is_some() && v.name.starts_with(kind);
            match roles {
                None => {
                    let t = if dash("video/") {
                        Track::Video
                    } else {
                        Track::Only
                    };
                    roles = Some(t);
                    Some(t)
                }
                Some(Track::Video) if dash("audio/") => {
                    roles = Some(Track::Audio);
                    Some(Track::Audio)
                }
                _ => None,
            }
        };
        let shared_feed = feed.clone();
        let captions = Arc::new(AtomicBool::new(false));
        let declared = captions.clone();
        let sink_stop = stop.clone();
        let HlsOptions {
            stream,
            alerts,
            duration,
            grace,
            resume,
            handover,
        } = opts;
        let handle = std::thread::Builder::new()
            .name("hls".into())
            .spawn(move || {
                let mut runs = run(&mut |v| {
                    let mut engine = StreamAlerts::new(stream.clone(), alerts.clone());
                    let carried: Vec<avmon_core::Alert> = resume
                        .iter()
                        .filter(|a| {
                            a.details.get("variant").and_then(|n| n.as_str()) == Some(&v.name)
                        })
                        .cloned()
                        .collect();
                    // The variant's time line goes on from its carried alerts' latest onset.
                    let offset = carried.iter().map(|a| a.start_s).fold(0.0, f64::max);
                    if !carried.is_empty() {
                        engine.resume(carried, offset, crate::alerts::CARRY_GRACE_S);
                    }
                    let feed = role(v).map(|track| {
                        if track != Track::Audio {
                            declared.store(v.captions, Ordering::Relaxed);
                        }
                        let mut f = shared_feed.lock().unwrap_or_else(|e| e.into_inner());
                        f.two |= track == Track::Audio;
                        FeedHandle {
                            feed: shared_feed.clone(),
                            track,
                        }
                    });
                    VariantSink {
                        feed,
                        alerts: engine,
                        out: make_out(v),
                        media_t: 0.0,
                        stop_at: duration,
                        stop: sink_stop.clone(),
                        handover: handover.clone(),
                        offset,
                    }
                });
                // Monitoring is over: the decoder reads what is queued, then the end.
                feed.lock().unwrap_or_else(|e| e.into_inner()).drain(true);
                for r in &mut runs {
                    r.sink.feed = None;
                }
                drop(feed);
                runs
            })?;
        Ok(HlsInput {
            stop,
            captions,
            handle: Some(handle),
            segments: rx,
            grace,
        })
    }

    /// Whether the decoded variant declares closed captions: known once monitoring began, so
    /// by the time its first segment is decoded (see [`crate::pipeline::Pipeline::captions_declared`]).
    pub fn captions_declared(&self) -> Arc<AtomicBool> {
        self.captions.clone()
    }

    /// The decoded variant's segments from here on, for one opening of the input.
    /// `cpu`: the service's CPU permit slot, told how long each segment waited.
    pub fn source(
        &self,
        stop: Arc<AtomicBool>,
        cpu: Option<avmon_core::sched::Slot>,
    ) -> SegmentSource {
        SegmentSource {
            rx: self.segments.clone(),
            bytes: Vec::new(),
            pos: 0,
            fresh: false,
            init: None,
            stop,
            grace: self.grace,
            due: Duration::ZERO,
            last: Instant::now(),
            cpu,
        }
    }

    /// Stop monitoring and wait for every variant: their open alerts are cleared by now.
    pub fn finish(mut self) -> Result<Vec<VariantRun<VariantSink<O>>>> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .ok_or_else(|| anyhow::anyhow!("HLS: finished twice"))?
            .join()
            .map_err(|_| anyhow::anyhow!("HLS: the monitor thread panicked"))
    }
}

/// `check`'s [`VariantOut`]: the alerts once cleared, for the report.
#[derive(Default)]
pub struct Cleared(Vec<Alert>);

impl VariantOut for Cleared {
    fn alert(&mut self, ev: AlertEvent) {
        if ev.transition == Transition::Cleared {
            self.0.push(ev.alert);
        }
    }
}

/// What the HLS side adds to a report.
pub struct HlsReport {
    pub events: Vec<Event>,
    /// `summary.hls`.
    pub summary: Value,
}

/// `check`'s report of its variants' runs; `duration` (`--duration`) bounds the events.
pub fn report(
    runs: Vec<VariantRun<VariantSink<Cleared>>>,
    duration: Option<f64>,
) -> Result<HlsReport> {
    let mut events = Vec::new();
    let mut variants = Vec::new();
    let mut totals = serde_json::Map::new();
    for run in runs {
        let sink = run.sink;
        let end = match duration {
            Some(d) => sink.media_t.min(d),
            None => sink.media_t,
        };
        events.extend(sink.out.0.into_iter().map(|a| Event {
            start_s: round_ms(a.start_s),
            end_s: round_ms(a.end_s.unwrap_or(end).min(end).max(a.start_s)),
            kind: a.kind,
            severity: a.severity,
            details: a.details,
        }));
        let v = &run.variant;
        let mut entry = json!({"index": v.index, "name": v.name, "uri": v.uri.as_str(),
                               "bandwidth": v.bandwidth});
        match &run.result {
            Ok(stats) => {
                let mut s = match serde_json::to_value(stats)? {
                    Value::Object(s) => s,
                    _ => serde_json::Map::new(),
                };
                for (k, val) in s.iter_mut() {
                    if let Some(n) = val.as_u64() {
                        let t = totals.entry(k.clone()).or_insert(json!(0));
                        *t = json!(t.as_u64().unwrap_or(0) + n);
                    } else if let Some(x) = val.as_f64() {
                        *val = json!(round_ms(x));
                    }
                }
                entry["stats"] = Value::Object(s);
                entry["bitrate_bps"] = json!(stats.bitrate_bps().map(f64::round));
                entry["download_s_mean"] = json!(stats.download_s_mean().map(round_ms));
            }
            Err(e) => {
                tracing::warn!("HLS variant {}: {e}", v.index);
                entry["error"] = json!(e.to_string());
            }
        }
        variants.push(entry);
    }
    totals.insert("variants".into(), Value::Array(variants));
    Ok(HlsReport {
        events,
        summary: Value::Object(totals),
    })
}
