//! `check` on an HLS URL: `avmon-hls` monitors delivery (stale playlist, failed and slow
//! segments, sequence, target duration, discontinuities) next to FFmpeg's decode of the same URL.
//!
//! Each chosen variant runs on its own thread with its own alert engine, so its `hls.*` findings
//! become events with the same raise/clear rules as the detectors'. Its events are on its own
//! media clock (the sum of `EXTINF` since monitoring started), which starts where FFmpeg's HLS
//! demuxer starts (three target durations from the live edge, or the first segment of an ended
//! playlist), so the two line up to within a segment.
//!
//! Every segment is fetched once, by `avmon-hls`: the first chosen variant's segments go on, in
//! order, to FFmpeg's demuxer ([`SegmentSource`], through avmon's custom I/O) and to the TR 101
//! 290 analyser on the way, so the detectors see exactly the media the delivery checks judged.
//! A discontinuity or a missing segment starts the transport analyser afresh (continuity
//! counters need not follow on there).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use avmon_media::ByteSource;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use anyhow::Result;
use avmon_alert::{AlertConfig, AlertEngine};
use avmon_core::{round_ms, Alert, AlertEvent, Finding, StreamId, Transition};
use avmon_hls::{HlsConfig, HlsSink, Segment, VariantRun, VariantSelector};
use chrono::Utc;
use serde_json::{json, Value};

use crate::check::Event;

/// Bytes of one segment (or an initialisation section) for the decoder.
pub struct Chunk {
    bytes: Vec<u8>,
    /// Begins a new stream: after a discontinuity or a missing segment.
    fresh: bool,
}

/// The decoded variant's segments, in order, as bytes for FFmpeg's demuxer. Ends when the
/// monitor has ended and every segment was read, or at `stop`.
pub struct SegmentSource {
    rx: Receiver<Chunk>,
    chunk: Vec<u8>,
    pos: usize,
    fresh: bool,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    /// Longest wait for the next segment before the input counts as timed out.
    limit: std::time::Duration,
    last: std::time::Instant,
}

impl ByteSource for SegmentSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.chunk.len() {
            if self.stop.load(Ordering::Relaxed) {
                return Err(io::ErrorKind::Interrupted.into());
            }
            match self.rx.recv_timeout(avmon_media::ingest::POLL) {
                Ok(c) => {
                    self.last = std::time::Instant::now();
                    self.chunk = c.bytes;
                    self.pos = 0;
                    self.fresh |= c.fresh;
                }
                Err(RecvTimeoutError::Timeout) if !self.done.load(Ordering::Relaxed) => {
                    if self.last.elapsed() > self.limit {
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }

    fn restarted(&mut self) -> bool {
        std::mem::take(&mut self.fresh)
    }
}

/// One variant's findings through its alert engine.
struct AlertSink {
    /// Where the decoded variant's segments go.
    feed: Option<Sender<Chunk>>,
    engine: AlertEngine,
    events: Vec<AlertEvent>,
    cleared: Vec<Alert>,
    media_t: f64,
    stop_at: Option<f64>,
    stop: Arc<AtomicBool>,
}

impl AlertSink {
    fn collect(&mut self) {
        for ev in self.events.drain(..) {
            if ev.transition == Transition::Cleared {
                self.cleared.push(ev.alert);
            }
        }
    }

    fn tick(&mut self, t: f64) {
        self.media_t = self.media_t.max(t);
        self.engine.on_tick(t, Utc::now(), &mut self.events);
        self.collect();
        if self.stop_at.is_some_and(|d| self.media_t >= d) {
            self.stop.store(true, Ordering::Relaxed);
        }
    }
}

impl HlsSink for AlertSink {
    fn on_finding(&mut self, f: Finding) {
        self.engine.on_finding(&f, Utc::now(), &mut self.events);
        self.collect();
    }

    fn on_segment(&mut self, s: &Segment<'_>) {
        if let Some(tx) = &self.feed {
            let mut fresh = s.discontinuity || s.after_gap;
            let mut ok = true;
            if let Some(init) = s.init {
                ok &= tx
                    .send(Chunk {
                        bytes: init.to_vec(),
                        fresh,
                    })
                    .is_ok();
                fresh = false;
            }
            ok &= tx
                .send(Chunk {
                    bytes: s.bytes.to_vec(),
                    fresh,
                })
                .is_ok();
            if !ok {
                // The decoder is gone: monitoring goes on without it.
                self.feed = None;
            }
        }
        self.tick(s.start_t + s.duration);
    }

    fn on_tick(&mut self, media_t: f64) {
        self.tick(media_t);
    }
}

/// The HLS side of a `check`, running.
pub struct HlsCheck {
    stop: Arc<AtomicBool>,
    /// Set once every variant's monitor has ended.
    done: Arc<AtomicBool>,
    /// Taken by [`finish`](Self::finish); dropping a running check stops its threads.
    handle: Option<JoinHandle<Vec<VariantRun<AlertSink>>>>,
    duration: Option<f64>,
}

impl Drop for HlsCheck {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What the HLS side adds to a report.
pub struct HlsReport {
    pub events: Vec<Event>,
    /// `summary.hls`.
    pub summary: Value,
}

impl HlsCheck {
    /// Load `url` and start monitoring its chosen variants; a bad playlist is an error here.
    /// The first chosen variant's segments go to `feed`.
    pub fn start(
        url: &str,
        variants: Vec<VariantSelector>,
        alerts: AlertConfig,
        duration: Option<f64>,
        feed: Sender<Chunk>,
    ) -> Result<HlsCheck> {
        let stop = Arc::new(AtomicBool::new(false));
        let cfg = HlsConfig {
            variants,
            ..HlsConfig::new(url)
        };
        let monitors = avmon_hls::resolve(&cfg, Arc::new(avmon_hls::Hls), stop.clone())
            .map_err(|e| anyhow::anyhow!("HLS: {e}"))?;
        let sink_stop = stop.clone();
        let done = Arc::new(AtomicBool::new(false));
        let monitors_done = done.clone();
        let mut feed = Some(feed);
        let handle = std::thread::Builder::new()
            .name("hls".into())
            .spawn(move || {
                let runs = avmon_hls::run_monitors(monitors, |v| AlertSink {
                    feed: feed.take(),
                    engine: AlertEngine::new(
                        StreamId(format!("check.hls.{}", v.index)),
                        alerts.clone(),
                    ),
                    events: Vec::new(),
                    cleared: Vec::new(),
                    media_t: 0.0,
                    stop_at: duration,
                    stop: sink_stop.clone(),
                });
                monitors_done.store(true, Ordering::Relaxed);
                runs
            })?;
        Ok(HlsCheck {
            stop,
            done,
            handle: Some(handle),
            duration,
        })
    }

    /// The decoded variant's segments, read from the other end of `start`'s `feed`; no segment
    /// for `limit` is a timed-out input (the playlist's own staleness is `hls.stale`).
    pub fn source(
        &self,
        rx: Receiver<Chunk>,
        stop: Arc<AtomicBool>,
        limit: std::time::Duration,
    ) -> SegmentSource {
        SegmentSource {
            limit,
            last: std::time::Instant::now(),
            rx,
            chunk: Vec::new(),
            pos: 0,
            fresh: false,
            stop,
            done: self.done.clone(),
        }
    }

    /// Stop monitoring (the decode side is done) and report.
    pub fn finish(mut self) -> Result<HlsReport> {
        self.stop.store(true, Ordering::Relaxed);
        let runs = self
            .handle
            .take()
            .ok_or_else(|| anyhow::anyhow!("HLS: finished twice"))?
            .join()
            .map_err(|_| anyhow::anyhow!("HLS: the monitor thread panicked"))?;
        let mut events = Vec::new();
        let mut variants = Vec::new();
        let mut totals = serde_json::Map::new();
        for mut run in runs {
            let sink = &mut run.sink;
            let end = match self.duration {
                Some(d) => sink.media_t.min(d),
                None => sink.media_t,
            };
            sink.engine.clear_all(end, Utc::now(), &mut sink.events);
            sink.collect();
            events.extend(sink.cleared.drain(..).map(|a| Event {
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
}
