//! The API's view of a cluster: every stream of the cluster (with the node that holds it), the
//! nodes and the gaps in monitoring, and stream changes made through any node. What this node
//! runs comes from the registry; the rest is read from the shared database.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use avmon_core::{Alert, AlertState, StreamId, Tier};
use avmon_server::{
    ApiError, ClusterView, MonitoringGap, StreamState, StreamStatus, UnwatchedStream,
};
use avmon_store::cluster::LEASES_CHANNEL;
use avmon_store::{AlertQuery, StreamRecord};
use chrono::Utc;

use crate::api::internal;
use crate::config::StreamConfig;
use crate::mask::masked;
use crate::placement::ClusterNode;
use crate::registry::Service;

impl Service {
    /// Every stream of the cluster: those this node runs as it sees them, the others from the
    /// database (their open alerts, the last media time and sample their node stored).
    pub(crate) fn cluster_streams(&self, c: &ClusterNode) -> Result<Vec<StreamStatus>, ApiError> {
        let records = self.store.streams().map_err(internal)?;
        let holders = c.coordinator.holders().map_err(internal)?;
        let mut open: BTreeMap<String, Vec<Alert>> = BTreeMap::new();
        let raised = self
            .store
            .alerts(&AlertQuery {
                state: Some(AlertState::Raised),
                ..AlertQuery::default()
            })
            .map_err(internal)?;
        for a in raised.into_iter().rev() {
            open.entry(a.stream_id.0.clone()).or_default().push(a);
        }
        let mut out = Vec::with_capacity(records.len());
        for rec in records {
            if let Ok(shared) = self.shared(rec.id.as_str()) {
                out.push(self.status_of(&shared));
                continue;
            }
            let node = holders.get(&rec.id).cloned().flatten();
            out.push(remote_status(
                &rec,
                node,
                open.remove(rec.id.as_str()).unwrap_or_default(),
                self.suppression.mute(rec.id.as_str(), Utc::now()),
            ));
        }
        Ok(out)
    }

    /// `POST /api/streams` in a cluster: the definition goes to the database, and the node
    /// with room claims it within a second.
    pub(crate) fn cluster_add(
        &self,
        c: &ClusterNode,
        cfg: StreamConfig,
    ) -> Result<StreamStatus, ApiError> {
        if self.cluster_record(&cfg.id)?.is_some() {
            return Err(ApiError::Conflict(format!(
                "stream {:?} already exists",
                cfg.id
            )));
        }
        if cfg.node.is_none() && crate::config::is_push_input(&cfg.url, &cfg.options) {
            return Err(ApiError::BadRequest(vec![format!(
                "node: {:?} is a push input, which reaches one host only; pin it to the node \
                 that receives it with \"node\": \"NAME\"",
                cfg.url
            )]));
        }
        let rec = record(&cfg);
        self.store.upsert_stream(&rec).map_err(internal)?;
        let _ = c.coordinator.notify(
            LEASES_CHANNEL,
            &serde_json::json!({"event": "added", "stream": cfg.id}).to_string(),
        );
        tracing::info!(stream = %cfg.id, url = %cfg.url, "stream added to the cluster");
        Ok(remote_status(&rec, None, Vec::new(), None))
    }

    /// `DELETE /api/streams/{id}` in a cluster: removed from the database; its node stops it
    /// (and clears its alerts) at its next renewal.
    pub(crate) fn cluster_remove(&self, id: &str) -> Result<(), ApiError> {
        let removed = self
            .store
            .remove_stream(&StreamId(id.to_string()))
            .map_err(internal)?;
        if !removed {
            return Err(ApiError::NotFound(format!("no stream {id:?}")));
        }
        tracing::info!(stream = %id, "stream removed from the cluster");
        Ok(())
    }

    /// `PATCH` of a stream's tier or priority in a cluster: applied here at once if this node
    /// runs it, and kept in its definition, which its node (any) applies within seconds.
    pub(crate) fn cluster_patch(
        &self,
        c: &ClusterNode,
        id: &str,
        tier: Option<Tier>,
        priority: Option<u32>,
    ) -> Result<StreamStatus, ApiError> {
        let rec = self
            .cluster_record(id)?
            .ok_or_else(|| ApiError::NotFound(format!("no stream {id:?}")))?;
        let mut config = rec.config.clone();
        if let Some(o) = config.as_object_mut() {
            if let Some(t) = tier {
                o.insert("tier".into(), t.as_str().into());
            }
            if let Some(p) = priority {
                o.insert("priority".into(), p.into());
            }
        }
        let rec = StreamRecord { config, ..rec };
        self.store.upsert_stream(&rec).map_err(internal)?;
        if let Ok(shared) = self.shared(id) {
            if let Some(t) = tier {
                shared.ceiling.set(t);
                shared.tier.set(t);
            }
            if let Some(p) = priority {
                shared.priority.store(p, Ordering::Relaxed);
            }
            return Ok(self.status_of(&shared));
        }
        let node = c
            .coordinator
            .holders()
            .map_err(internal)?
            .get(&rec.id)
            .cloned()
            .flatten();
        Ok(remote_status(&rec, node, Vec::new(), None))
    }

    /// The cluster's stream `id`, if there is one.
    fn cluster_record(&self, id: &str) -> Result<Option<StreamRecord>, ApiError> {
        Ok(self
            .store
            .streams()
            .map_err(internal)?
            .into_iter()
            .find(|r| r.id.0 == id))
    }

    /// Whether `id` is one of the cluster's streams.
    pub(crate) fn cluster_known(&self, id: &str) -> Result<(), ApiError> {
        match self.cluster_record(id)? {
            Some(_) => Ok(()),
            None => Err(ApiError::NotFound(format!("no stream {id:?}"))),
        }
    }

    /// `GET /api/cluster`.
    pub(crate) fn cluster_view(&self, c: &ClusterNode) -> Result<ClusterView, ApiError> {
        let nodes = c.coordinator.nodes(c.ttl).map_err(internal)?;
        let unwatched = c.coordinator.unwatched().map_err(internal)?;
        let since = Utc::now() - chrono::Duration::hours(24);
        let mut gaps = c.coordinator.gaps(None, Some(since)).map_err(internal)?;
        gaps.reverse();
        Ok(ClusterView {
            node: c.node.name.clone(),
            lease_ttl_s: c.ttl.as_secs_f64(),
            nodes: nodes
                .into_iter()
                .map(|n| avmon_server::ClusterNode {
                    name: n.name,
                    api_addr: n.api_addr,
                    alive: n.alive,
                    left: n.left,
                    streams: n.streams,
                    load: avmon_core::round_ms(n.load),
                    capacity: n.capacity,
                    started_at: n.started_at,
                    last_seen: n.last_seen,
                    seen_ago_s: avmon_core::round_ms(n.seen_ago_s),
                })
                .collect(),
            unwatched: unwatched
                .into_iter()
                .map(|u| UnwatchedStream {
                    stream: u.stream.0,
                    since: u.since,
                    prev_node: u.prev_node,
                    pinned_node: u.pinned_node,
                })
                .collect(),
            gaps: gaps
                .into_iter()
                .map(|g| MonitoringGap {
                    duration_s: avmon_core::round_ms(g.duration().as_secs_f64()),
                    stream: g.stream.0,
                    from: g.from,
                    to: g.to,
                    prev_node: g.prev_node,
                    next_node: g.next_node,
                    reason: g.reason.as_str().to_string(),
                })
                .collect(),
        })
    }
}

/// A stream's record as the store keeps it (its config as JSON, created now).
pub(crate) fn record(cfg: &StreamConfig) -> StreamRecord {
    StreamRecord {
        id: StreamId(cfg.id.clone()),
        url: cfg.url.clone(),
        config: serde_json::to_value(cfg).unwrap_or_default(),
        created_at: Utc::now(),
    }
}

/// A stream another node runs (or none does), as the database tells it.
fn remote_status(
    rec: &StreamRecord,
    node: Option<String>,
    open: Vec<Alert>,
    muted: Option<avmon_core::Mute>,
) -> StreamStatus {
    let tier: Tier = rec
        .config
        .get("tier")
        .and_then(|t| t.as_str())
        .and_then(|t| t.parse().ok())
        .unwrap_or_default();
    let priority = rec
        .config
        .get("priority")
        .and_then(|p| p.as_u64())
        .map_or(100, |p| p.min(u64::from(u32::MAX)) as u32);
    // As its node sees it, as far as the database tells: down while `source.down` is open.
    let status = match (&node, open.is_empty()) {
        (None, _) => StreamState::Unwatched,
        (Some(_), _)
            if open
                .iter()
                .any(|a| a.kind == avmon_core::kinds::SOURCE_DOWN) =>
        {
            StreamState::Down
        }
        (Some(_), true) => StreamState::Ok,
        (Some(_), false) => StreamState::Alarm,
    };
    StreamStatus {
        id: rec.id.0.clone(),
        url: rec.url.clone(),
        status,
        media_t: open.iter().map(|a| a.start_s).fold(0.0, f64::max),
        active_alerts: open,
        last_data_at: None,
        info: None,
        frames_video: 0,
        frames_audio: 0,
        decode_errors: 0,
        reconnects: 0,
        tier,
        muted,
        config: Some(masked(rec.config.clone())),
        configured_tier: tier,
        degraded: false,
        priority,
        lag_s: 0.0,
        node,
    }
}
