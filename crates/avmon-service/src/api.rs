//! The API's [`Monitor`] implemented over the registry and the store.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Result;
use avmon_core::{AlertRecord, MaintenanceWindow, Mute};
use avmon_core::{StreamId, Tier, WallTime};
use avmon_server::{
    AlertsQuery, ApiError, EvidenceKind, LiveEvent, MetricsPoint, MetricsQuery, Monitor,
    StreamStatus,
};
use avmon_store::{AckOutcome, AlertQuery};
use chrono::Utc;

use crate::config::StreamConfig;
use crate::evidence::{self};
use crate::hub::HubMsg;
use crate::registry::Service;

impl Monitor for Service {
    fn streams(&self) -> Vec<StreamStatus> {
        if let Some(c) = self
            .cluster
            .as_ref()
            .filter(|c| !c.away.load(Ordering::Relaxed))
        {
            match self.cluster_streams(c) {
                Ok(s) => return s,
                // The database is away: what this node runs, at least.
                Err(e) => tracing::warn!("listing the cluster's streams: {e}"),
            }
        }
        self.shared_streams()
            .iter()
            .map(|s| self.status_of(s))
            .collect()
    }

    fn add_stream(&self, spec: serde_json::Value) -> Result<StreamStatus, ApiError> {
        let cfg = StreamConfig::from_json(spec, &self.protocols).map_err(ApiError::BadRequest)?;
        if let Some(c) = &self.cluster {
            return self.cluster_add(c, cfg);
        }
        if cfg.node.is_some() {
            return Err(ApiError::BadRequest(vec![
                "node: only for a cluster (this host has no [cluster] in its config)".into(),
            ]));
        }
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
        if let Some(c) = &self.cluster {
            return self.cluster_patch(c, id, Some(tier), None);
        }
        let shared = self.shared(id)?;
        // The operator's tier is the ceiling, and applies now (the decode thread reads it at
        // its next packet: no reconnect); automatic degradation may lower it again.
        shared.ceiling.set(tier);
        shared.tier.set(tier);
        tracing::info!(stream = %id, %tier, "tier set");
        Ok(self.status_of(&shared))
    }

    fn set_priority(&self, id: &str, priority: u32) -> Result<StreamStatus, ApiError> {
        if let Some(c) = &self.cluster {
            return self.cluster_patch(c, id, None, Some(priority));
        }
        let shared = self.shared(id)?;
        shared.priority.store(priority, Ordering::Relaxed);
        tracing::info!(stream = %id, priority, "priority set");
        Ok(self.status_of(&shared))
    }

    fn remove_stream(&self, id: &str) -> Result<(), ApiError> {
        if self.cluster.is_some() {
            return self.cluster_remove(id);
        }
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
        self.prometheus_text()
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

    fn peers(&self) -> Vec<String> {
        let Some(c) = self
            .cluster
            .as_ref()
            .filter(|c| !c.away.load(Ordering::Relaxed))
        else {
            return Vec::new();
        };
        c.coordinator
            .nodes(c.ttl)
            .map(|nodes| {
                nodes
                    .into_iter()
                    .filter(|n| n.alive && n.name != c.node.name)
                    .map(|n| n.api_addr)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn holder_of(&self, stream: &str) -> Option<String> {
        let c = self
            .cluster
            .as_ref()
            .filter(|c| !c.away.load(Ordering::Relaxed))?;
        c.coordinator
            .holder_addr(&StreamId(stream.to_string()))
            .ok()
            .flatten()
            .filter(|(name, _)| *name != c.node.name)
            .map(|(_, addr)| addr)
    }

    fn cluster(&self) -> Result<avmon_server::ClusterView, ApiError> {
        match &self.cluster {
            Some(c) => self.cluster_view(c),
            None => Err(ApiError::NotFound(
                "this node is not part of a cluster (no [cluster] in its config)".into(),
            )),
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
pub(crate) fn ms(t: WallTime) -> WallTime {
    use chrono::SubsecRound;
    t.trunc_subsecs(3)
}

pub(crate) fn internal(e: avmon_store::StoreError) -> ApiError {
    ApiError::Internal(e.to_string())
}
