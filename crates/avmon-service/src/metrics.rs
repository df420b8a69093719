//! `/metrics`: the Prometheus exposition of every stream's figures.

use std::fmt::Write as _;
use std::sync::Arc;

use avmon_server::{StreamState, StreamStatus};

use crate::registry::Service;
use crate::stream::{StreamShared, VariantFigures};

impl Service {
    /// Every stream's figures in Prometheus's text format.
    pub(crate) fn prometheus_text(&self) -> String {
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
}

/// A Prometheus label value, escaped.
pub(crate) fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Each HLS variant's delivery, labelled by stream, variant index and name.
pub(crate) fn hls_metrics(out: &mut String, streams: &[Arc<StreamShared>]) {
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
