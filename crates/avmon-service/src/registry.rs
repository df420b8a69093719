//! The stream registry: the running streams, each with its thread and shared state, started
//! and stopped here; the rest of the service reads them through it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Result;
use avmon_alert::Suppression;
use avmon_core::sched::Scheduler;
use avmon_core::{round_ms, StreamId, TierControl};
use avmon_media::Pictures;
use avmon_notify::Notifier;
use avmon_server::{ApiError, LiveEvent, StreamState, StreamStatus};
use avmon_store::{AlertQuery, MetricsQuery, Store};
use chrono::Utc;
use crossbeam_channel::Sender;

use crate::config::StreamConfig;
use crate::evidence::{ClipRing, EvidenceConfig};
use crate::hub::HubMsg;
use crate::mask::masked;
use crate::placement::ClusterNode;
use crate::stream::{stream_thread, Live, Resume, StreamShared};

pub(crate) struct StreamHandle {
    pub(crate) shared: Arc<StreamShared>,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) thread: Option<JoinHandle<()>>,
}

/// The running service; implements the API's [`Monitor`].
pub(crate) struct Service {
    pub(crate) streams: Mutex<BTreeMap<String, StreamHandle>>,
    pub(crate) hub: Sender<HubMsg>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) notifiers: Vec<Arc<dyn Notifier>>,
    pub(crate) protocols: Vec<String>,
    pub(crate) metrics_interval: Duration,
    /// Mutes and maintenance windows: which alerts are not notified.
    pub(crate) suppression: Arc<Suppression>,
    /// Live events for `/api/events`.
    pub(crate) events: tokio::sync::broadcast::Sender<LiveEvent>,
    pub(crate) evidence: EvidenceConfig,
    pub(crate) sched: Arc<Scheduler>,
    /// In a cluster: this node, its coordinator and lease timing.
    pub(crate) cluster: Option<Arc<ClusterNode>>,
}

/// Scaled copies of the picture: every second, 320 pixels wide, the last 12 (so an alert raised
/// up to ~12 s after its onset, as loudness ones are, still has the picture at the onset).
pub(crate) const PICTURE_WIDTH: u32 = 320;
pub(crate) const PICTURE_INTERVAL_S: f64 = 1.0;
pub(crate) const PICTURES_KEPT: usize = 12;

impl Service {
    /// Start monitoring a stream on this host alone (its record is written to the store). Alerts
    /// of it that the store holds as still raised (left by a process that was killed) are
    /// continued, as a cluster node continues a stream it takes over: each is cleared unless its
    /// defect is found again within [`crate::alerts::CARRY_GRACE_S`].
    pub(crate) fn start_stream(&self, cfg: StreamConfig) -> Arc<StreamShared> {
        let _ = self.hub.send(HubMsg::Upsert(crate::cluster::record(&cfg)));
        let resume = self.resume_of(&StreamId(cfg.id.clone()));
        self.start_held(cfg, None, resume)
    }

    /// A stream's alerts still raised in the store, and its media time now by its last sample.
    fn resume_of(&self, id: &StreamId) -> Option<Resume> {
        let q = AlertQuery {
            stream: Some(id.clone()),
            active_only: true,
            ..AlertQuery::default()
        };
        let alerts = match self.store.alerts(&q) {
            Ok(a) if !a.is_empty() => a,
            Ok(_) => return None,
            Err(e) => {
                tracing::warn!(stream = %id, "reading the stream's open alerts: {e}");
                return None;
            }
        };
        let last = MetricsQuery {
            limit: 1,
            ..MetricsQuery::default()
        };
        let now = chrono::Utc::now();
        let media_t = match self
            .store
            .metrics_range(id, &last)
            .ok()
            .and_then(|m| m.into_iter().last())
        {
            Some(m) => m.media_t + (now - m.at).num_milliseconds().max(0) as f64 / 1000.0,
            None => alerts.iter().map(|a| a.start_s).fold(0.0, f64::max),
        };
        tracing::info!(stream = %id, alerts = alerts.len(), "continuing alerts left open by the last run");
        Some(Resume { alerts, media_t })
    }

    /// Start monitoring a stream: in a cluster, one this node holds under `epoch` (its record
    /// is the cluster's, in the store already), continuing from `resume` if taken over.
    pub(crate) fn start_held(
        &self,
        cfg: StreamConfig,
        epoch: Option<i64>,
        resume: Option<Resume>,
    ) -> Arc<StreamShared> {
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
            epoch,
            handover: Arc::new(AtomicBool::new(false)),
            fenced: AtomicBool::new(false),
            resume: Mutex::new(resume),
        });
        let stop = Arc::new(AtomicBool::new(false));
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

    pub(crate) fn status_of(&self, shared: &StreamShared) -> StreamStatus {
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
            node: self.cluster.as_ref().map(|c| c.node.name.clone()),
        }
    }

    /// `Ok` when `id` is a stream being monitored (in a cluster: by any node).
    pub(crate) fn known(&self, id: &str) -> Result<(), ApiError> {
        match self.shared(id) {
            Ok(_) => Ok(()),
            Err(e) => match &self.cluster {
                Some(_) => self.cluster_known(id),
                None => Err(e),
            },
        }
    }

    /// A running stream's shared state; unknown → 404.
    pub(crate) fn shared(&self, id: &str) -> Result<Arc<StreamShared>, ApiError> {
        self.streams
            .lock()
            .ok()
            .and_then(|s| s.get(id).map(|h| h.shared.clone()))
            .ok_or_else(|| ApiError::NotFound(format!("no stream {id:?}")))
    }

    pub(crate) fn shared_streams(&self) -> Vec<Arc<StreamShared>> {
        match self.streams.lock() {
            Ok(s) => s.values().map(|h| h.shared.clone()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Wait (up to 5 s) until the hub has handled everything sent to it so far.
    pub(crate) fn drain_hub(&self) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self.hub.send(HubMsg::Barrier(tx)).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(5));
        }
    }

    /// Stop every stream and wait for their threads: their open alerts are cleared, or, with
    /// `handover` (a cluster node leaving), left open for the next owner to continue.
    pub(crate) fn stop_all(&self, handover: bool) {
        let ids: Vec<String> = match self.streams.lock() {
            Ok(s) => s.keys().cloned().collect(),
            Err(_) => Vec::new(),
        };
        self.stop_streams(&ids, handover);
    }

    /// Stop these streams without waiting for their threads (they end within moments, joined
    /// on a thread of their own): for placement, whose loop must keep renewing leases.
    pub(crate) fn drop_streams(&self, ids: &[String], handover: bool) {
        let handles = self.take_streams(ids, handover);
        if handles.is_empty() {
            return;
        }
        let _ = std::thread::Builder::new()
            .name("stream-join".into())
            .spawn(move || {
                for (_, mut h) in handles {
                    if let Some(t) = h.thread.take() {
                        let _ = t.join();
                    }
                }
            });
    }

    /// Remove these streams from the registry and tell their threads to stop.
    fn take_streams(&self, ids: &[String], handover: bool) -> Vec<(String, StreamHandle)> {
        let handles: Vec<(String, StreamHandle)> = match self.streams.lock() {
            Ok(mut s) => ids
                .iter()
                .filter_map(|id| s.remove(id).map(|h| (id.clone(), h)))
                .collect(),
            Err(_) => Vec::new(),
        };
        for (_, h) in &handles {
            h.shared.handover.store(handover, Ordering::Relaxed);
            h.stop.store(true, Ordering::Relaxed);
        }
        handles
    }

    /// Stop these streams (those running) and wait for their threads; with `handover`, their
    /// open alerts stay open for the node that takes them next. Returns the ids stopped.
    pub(crate) fn stop_streams(&self, ids: &[String], handover: bool) -> Vec<String> {
        let handles = self.take_streams(ids, handover);
        let mut stopped = Vec::with_capacity(handles.len());
        for (id, mut h) in handles {
            if let Some(t) = h.thread.take() {
                let _ = t.join();
            }
            stopped.push(id);
        }
        stopped
    }
}
