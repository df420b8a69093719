//! `check` on an HLS URL: `avmon-hls` monitors delivery (stale playlist, failed and slow
//! segments, sequence, target duration, discontinuities) next to FFmpeg's decode of the same URL.
//!
//! Each chosen variant runs on its own thread with its own alert engine, so its `hls.*` findings
//! become events with the same raise/clear rules as the detectors'. Its events are on its own
//! media clock (the sum of `EXTINF` since monitoring started), which starts where FFmpeg's HLS
//! demuxer starts (three target durations from the live edge, or the first segment of an ended
//! playlist), so the two line up to within a segment.
//!
//! For now both FFmpeg and `avmon-hls` fetch the segments. When the custom-I/O ingest lands, the
//! decoder takes the bytes `avmon-hls` hands its sink ([`avmon_hls::Segment`]) instead, and
//! every segment is fetched once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Result;
use avmon_alert::{AlertConfig, AlertEngine};
use avmon_core::{round_ms, Alert, AlertEvent, Finding, StreamId, Transition};
use avmon_hls::{HlsConfig, HlsSink, Segment, VariantRun, VariantSelector};
use chrono::Utc;
use serde_json::{json, Value};

use crate::check::Event;

/// One variant's findings through its alert engine.
struct AlertSink {
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
        self.tick(s.start_t + s.duration);
    }

    fn on_tick(&mut self, media_t: f64) {
        self.tick(media_t);
    }
}

/// The HLS side of a `check`, running.
pub struct HlsCheck {
    stop: Arc<AtomicBool>,
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
    pub fn start(
        url: &str,
        variants: Vec<VariantSelector>,
        alerts: AlertConfig,
        duration: Option<f64>,
    ) -> Result<HlsCheck> {
        let stop = Arc::new(AtomicBool::new(false));
        let cfg = HlsConfig {
            variants,
            ..HlsConfig::new(url)
        };
        let monitors = avmon_hls::resolve(&cfg, Arc::new(avmon_hls::Hls), stop.clone())
            .map_err(|e| anyhow::anyhow!("HLS: {e}"))?;
        let sink_stop = stop.clone();
        let handle = std::thread::Builder::new()
            .name("hls".into())
            .spawn(move || {
                avmon_hls::run_monitors(monitors, |v| AlertSink {
                    engine: AlertEngine::new(
                        StreamId(format!("check.hls.{}", v.index)),
                        alerts.clone(),
                    ),
                    events: Vec::new(),
                    cleared: Vec::new(),
                    media_t: 0.0,
                    stop_at: duration,
                    stop: sink_stop.clone(),
                })
            })?;
        Ok(HlsCheck {
            stop,
            handle: Some(handle),
            duration,
        })
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
