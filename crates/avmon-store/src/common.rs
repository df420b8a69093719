//! What both backends decide the same way: how alert states and outbox statuses are spelled,
//! what an attempt's outcome does to its rows, and how value rows regroup into samples.

use avmon_core::{AlertState, StreamId, WallTime};

use crate::retention::Reading;
use crate::{AttemptOutcome, MetricsSample, OutboxStatus, StoreError};

pub(crate) fn corrupt(table: &'static str, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        table,
        reason: reason.to_string(),
    }
}

pub(crate) fn state_str(s: AlertState) -> &'static str {
    match s {
        AlertState::Raised => "raised",
        AlertState::Cleared => "cleared",
    }
}

pub(crate) fn parse_state(table: &'static str, s: &str) -> Result<AlertState, StoreError> {
    match s {
        "raised" => Ok(AlertState::Raised),
        "cleared" => Ok(AlertState::Cleared),
        other => Err(corrupt(table, format_args!("unknown state {other:?}"))),
    }
}

pub(crate) fn parse_status(table: &'static str, s: &str) -> Result<OutboxStatus, StoreError> {
    match s {
        "pending" => Ok(OutboxStatus::Pending),
        "delivered" => Ok(OutboxStatus::Delivered),
        "failed" => Ok(OutboxStatus::Failed),
        other => Err(corrupt(table, format_args!("unknown status {other:?}"))),
    }
}

/// What one delivery attempt writes (see [`crate::Store::outbox_attempt`]).
pub(crate) struct AttemptEffect<'a> {
    /// The outcome as logged: `delivered`, `retry` or `failed`.
    pub name: &'static str,
    /// The rows' new status.
    pub status: OutboxStatus,
    pub group_key: Option<&'a str>,
    /// The rows' new `last_error` (kept as it was when `None`).
    pub error: Option<String>,
}

impl AttemptOutcome {
    pub(crate) fn effect(&self, detail: &serde_json::Value) -> AttemptEffect<'_> {
        let (name, status, group_key, error) = match self {
            AttemptOutcome::Delivered { group_key } => (
                "delivered",
                OutboxStatus::Delivered,
                group_key.as_deref(),
                None,
            ),
            AttemptOutcome::Retry => ("retry", OutboxStatus::Pending, None, Some(detail)),
            AttemptOutcome::Failed => ("failed", OutboxStatus::Failed, None, Some(detail)),
        };
        AttemptEffect {
            name,
            status,
            group_key,
            error: error.map(|d| d.to_string()),
        }
    }
}

/// Regroups a stream's value rows, read in stored order, into samples: a sample is stored as
/// consecutive rows sharing its wall time and media time.
pub(crate) struct Samples {
    stream: StreamId,
    out: Vec<MetricsSample>,
}

impl Samples {
    pub(crate) fn new(stream: &StreamId) -> Self {
        Samples {
            stream: stream.clone(),
            out: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, at: WallTime, media_t: f64, name: String, value: f64) {
        let same = self
            .out
            .last()
            .is_some_and(|s| s.at == at && s.media_t.to_bits() == media_t.to_bits());
        if !same {
            self.out.push(MetricsSample {
                stream_id: self.stream.clone(),
                at,
                media_t,
                values: Default::default(),
            });
        }
        if let Some(sample) = self.out.last_mut() {
            sample.values.insert(name, value);
        }
    }

    /// The samples, oldest first; the latest `limit` of them when `limit` is not 0.
    pub(crate) fn finish(mut self, limit: usize) -> Vec<MetricsSample> {
        if limit > 0 && self.out.len() > limit {
            self.out.drain(..self.out.len() - limit);
        }
        self.out
    }
}

/// Regroups a stream's aggregate rows, read by bucket start, into samples: one per bucket, each
/// value read as [`crate::retention::reading`] says, the media time the largest of the bucket's.
pub(crate) struct Aggregates {
    stream: StreamId,
    out: Vec<MetricsSample>,
}

impl Aggregates {
    pub(crate) fn new(stream: &StreamId) -> Self {
        Aggregates {
            stream: stream.clone(),
            out: Vec::new(),
        }
    }

    /// One row: `n` samples' `sum` and `max` of the value `name`.
    pub(crate) fn push(
        &mut self,
        start: WallTime,
        media_t: f64,
        name: String,
        (n, sum, max): (i64, f64, f64),
    ) {
        let value = match crate::retention::reading(&name) {
            Reading::Sum => sum,
            Reading::Max => max,
            Reading::Mean => sum / n.max(1) as f64,
        };
        match self.out.last_mut() {
            Some(s) if s.at == start => {
                s.media_t = s.media_t.max(media_t);
                s.values.insert(name, value);
            }
            _ => self.out.push(MetricsSample {
                stream_id: self.stream.clone(),
                at: start,
                media_t,
                values: [(name, value)].into(),
            }),
        }
    }

    /// Aggregates (oldest first) and raw samples (oldest first) as one series, oldest first;
    /// the latest `limit` of it when `limit` is not 0.
    pub(crate) fn merge(self, raw: Vec<MetricsSample>, limit: usize) -> Vec<MetricsSample> {
        let mut all = self.out;
        if all.is_empty() {
            all = raw;
        } else {
            all.extend(raw);
            // Stable: raw samples written late into a folded bucket stay after its aggregate.
            all.sort_by_key(|s| s.at);
        }
        if limit > 0 && all.len() > limit {
            all.drain(..all.len() - limit);
        }
        all
    }
}

/// The stream ids with metrics, raw or folded: skip scans down each table's index, a step per
/// stream rather than per row. The same text on both backends.
pub(crate) const METRICS_STREAMS: &str = "WITH RECURSIVE
   r(id) AS (SELECT min(stream_id) FROM metrics
             UNION ALL
             SELECT (SELECT min(stream_id) FROM metrics WHERE stream_id > r.id)
             FROM r WHERE r.id IS NOT NULL),
   a(id) AS (SELECT min(stream_id) FROM metrics_agg
             UNION ALL
             SELECT (SELECT min(stream_id) FROM metrics_agg WHERE stream_id > a.id)
             FROM a WHERE a.id IS NOT NULL)
 SELECT id FROM r WHERE id IS NOT NULL
 UNION SELECT id FROM a WHERE id IS NOT NULL
 ORDER BY 1";
