//! A store that outlives a full disk: the writes the database cannot make
//! ([`StoreError::Storage`]: no space, or the disk failing) wait in memory, in order, and are
//! made again once it can.
//!
//! - **What waits:** alert transitions and their suppression marks, metrics samples, outbox rows
//!   and the delivery attempts on them: what monitoring produces. Writes an operator makes (a
//!   stream, a mute, an acknowledgement) are not kept: they fail, and the caller says so.
//! - **In order:** once one write waits, every later one waits behind it, so the database
//!   receives them as they were made. [`SpillStore::retry`] (the hub calls it every second, and
//!   every write past the retry time does too) makes them until one fails again.
//! - **Notifying goes on.** A notification that cannot be written to the outbox is kept in a
//!   memory outbox: it reads back as pending, is delivered, and its attempts are recorded there;
//!   when space returns, it is written with them. A delivery whose attempt cannot be recorded
//!   is remembered too, so it is not sent again.
//! - **Bounded:** metrics samples beyond [`MAX_SPILLED_SAMPLES`] are dropped, oldest first, and
//!   counted; alerts and notifications never are (they are few, and they are the point).
//! - A write the database refuses for another reason is not kept: it would never pass.
//!
//! What waits is in memory: a process killed while the disk is full loses it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use avmon_core::{
    Ack, Alert, AlertEvent, AlertRecord, MaintenanceWindow, Mute, StreamId, Suppressed, WallTime,
};
use chrono::Utc;

use crate::{
    AckOutcome, AlertQuery, AttemptOutcome, AttemptRecord, MetricsQuery, MetricsSample,
    OutboxCounts, OutboxEntry, OutboxRow, OutboxStatus, Store, StoreError, StreamRecord,
};

/// Metrics samples kept at most while the database cannot write (about 100 minutes of 1,000
/// streams at the default 10 s interval); older ones are dropped first.
pub const MAX_SPILLED_SAMPLES: usize = 600_000;

/// How often what waits is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// A write waiting for the database, in the order it was made.
enum Op {
    Alert(Box<AlertEvent>),
    Mark(String, Suppressed),
    Metrics(Vec<MetricsSample>),
    /// A memory outbox row (by its negative id) to write.
    Outbox(i64),
    Attempt {
        ids: Vec<i64>,
        notifier: String,
        outcome: AttemptOutcome,
        detail: serde_json::Value,
        at: WallTime,
    },
}

/// Why writes wait, while they do.
#[derive(Clone, Debug, PartialEq)]
pub struct Spilled {
    /// When the first write that waits was refused.
    pub since: WallTime,
    /// The database's last refusal.
    pub error: String,
    /// Alert transitions waiting.
    pub alerts: usize,
    /// Notifications waiting (delivered or not).
    pub notifications: usize,
    /// Metrics samples waiting.
    pub samples: usize,
    /// Metrics samples dropped since it began, over [`MAX_SPILLED_SAMPLES`].
    pub dropped_samples: u64,
}

#[derive(Default)]
struct State {
    ops: VecDeque<Op>,
    samples: usize,
    dropped_samples: u64,
    /// Outbox rows not in the database yet, by their (negative) ids.
    mem: BTreeMap<i64, OutboxRow>,
    next_mem: i64,
    /// Memory rows since written: their ids in the database (`None`: the database had the key).
    written: HashMap<i64, Option<i64>>,
    since: Option<WallTime>,
    /// The same moment on the monotonic clock (the wall clock may be stepped meanwhile).
    since_mono: Option<Instant>,
    error: String,
    next_retry: Option<Instant>,
}

impl State {
    fn waiting(&self) -> bool {
        !self.ops.is_empty()
    }

    /// A row id as the database knows it (`None`: nothing to record there).
    fn real_id(&self, id: i64) -> Option<i64> {
        if id >= 0 {
            Some(id)
        } else {
            self.written.get(&id).copied().flatten()
        }
    }

    fn push(&mut self, op: Op, why: &StoreError) {
        if self.since.is_none() {
            self.since = Some(Utc::now());
            self.since_mono = Some(Instant::now());
            tracing::error!(
                "{why}: results and notifications wait in memory, in order, and are written \
                 when it can write again"
            );
        }
        self.error = why.to_string();
        if let Op::Metrics(m) = &op {
            self.samples += m.len();
        }
        self.ops.push_back(op);
        while self.samples > MAX_SPILLED_SAMPLES {
            let Some(i) = self.ops.iter().position(|o| matches!(o, Op::Metrics(_))) else {
                break;
            };
            if let Some(Op::Metrics(m)) = self.ops.remove(i) {
                self.samples -= m.len();
                self.dropped_samples += m.len() as u64;
            }
        }
        if self.next_retry.is_none() {
            self.next_retry = Some(Instant::now() + RETRY);
        }
    }

    /// What the waiting attempts did to rows in the database: their status, and attempts
    /// added, by database id.
    fn overlay(&self) -> HashMap<i64, (OutboxStatus, u32, String)> {
        let mut out: HashMap<i64, (OutboxStatus, u32, String)> = HashMap::new();
        for op in &self.ops {
            if let Op::Attempt {
                ids,
                outcome,
                detail,
                notifier,
                ..
            } = op
            {
                let status = outcome.effect(detail).status;
                for id in ids.iter().filter_map(|&id| self.real_id(id)) {
                    let e = out.entry(id).or_insert((status, 0, notifier.clone()));
                    e.0 = status;
                    e.1 += 1;
                }
            }
        }
        out
    }
}

/// A [`Store`] whose monitoring writes wait in memory while the database cannot write (see the
/// module doc).
pub struct SpillStore {
    inner: Arc<dyn Store>,
    state: Mutex<State>,
}

impl SpillStore {
    pub fn new(inner: Arc<dyn Store>) -> SpillStore {
        SpillStore {
            inner,
            state: Mutex::new(State {
                next_mem: -1,
                ..State::default()
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why writes wait, or `None` when nothing does.
    pub fn spilled(&self) -> Option<Spilled> {
        let st = self.state();
        let since = st.since?;
        let mut alerts = 0;
        let mut notifications = 0;
        for op in &st.ops {
            match op {
                Op::Alert(_) => alerts += 1,
                Op::Outbox(_) => notifications += 1,
                _ => {}
            }
        }
        Some(Spilled {
            since,
            error: st.error.clone(),
            alerts,
            notifications,
            samples: st.samples,
            dropped_samples: st.dropped_samples,
        })
    }

    /// Try the waiting writes now, in order, until one is refused again. Returns whether
    /// nothing waits any more.
    pub fn retry(&self) -> bool {
        let mut st = self.state();
        self.drain(&mut st);
        !st.waiting()
    }

    /// Retry if it is time to; then, is anything waiting?
    fn settle(&self, st: &mut State) -> bool {
        if st.next_retry.is_some_and(|at| Instant::now() >= at) {
            self.drain(st);
        }
        st.waiting()
    }

    fn drain(&self, st: &mut State) {
        while let Some(op) = st.ops.front() {
            let res = match op {
                Op::Alert(ev) => self.inner.record_alert(ev),
                Op::Mark(id, why) => self.inner.mark_alert(id, *why),
                Op::Metrics(m) => self.inner.record_metrics_batch(m),
                Op::Outbox(id) => {
                    let id = *id;
                    match st.mem.get(&id).map(|r| self.inner.outbox_add(&r.entry)) {
                        Some(Ok(real)) => {
                            st.mem.remove(&id);
                            st.written.insert(id, real);
                            Ok(())
                        }
                        Some(Err(e)) => Err(e),
                        None => Ok(()),
                    }
                }
                Op::Attempt {
                    ids,
                    notifier,
                    outcome,
                    detail,
                    at,
                } => {
                    let real: Vec<i64> = ids.iter().filter_map(|&id| st.real_id(id)).collect();
                    self.inner
                        .outbox_attempt(&real, notifier, outcome, detail, *at)
                }
            };
            match res {
                Ok(()) => {}
                Err(StoreError::Storage(e)) => {
                    st.error = e;
                    st.next_retry = Some(Instant::now() + RETRY);
                    return;
                }
                Err(e) => tracing::error!("a waiting write the database refuses is dropped: {e}"),
            }
            if let Some(Op::Metrics(m)) = st.ops.pop_front() {
                st.samples -= m.len();
            }
        }
        if st.since.take().is_some() {
            let away = st
                .since_mono
                .take()
                .map_or(0.0, |t| t.elapsed().as_secs_f64());
            tracing::warn!(
                away_s = away,
                dropped_samples = st.dropped_samples,
                "the database writes again: what waited is written"
            );
        }
        st.dropped_samples = 0;
        st.next_retry = None;
        // Memory ids still held by a delivery in flight are translated a while longer.
        if st.written.len() > 10_000 {
            st.written.clear();
        }
    }

    /// Write through, or wait: `write` is tried only when nothing waits.
    fn write(
        &self,
        write: impl FnOnce(&dyn Store) -> Result<(), StoreError>,
        op: impl FnOnce() -> Op,
    ) -> Result<(), StoreError> {
        let mut st = self.state();
        if !self.settle(&mut st) {
            match write(self.inner.as_ref()) {
                Err(e @ StoreError::Storage(_)) => st.push(op(), &e),
                other => return other,
            }
        } else {
            let e = StoreError::Storage(st.error.clone());
            st.push(op(), &e);
        }
        Ok(())
    }
}

impl Store for SpillStore {
    fn upsert_stream(&self, s: &StreamRecord) -> Result<(), StoreError> {
        self.inner.upsert_stream(s)
    }

    fn remove_stream(&self, id: &StreamId) -> Result<bool, StoreError> {
        self.inner.remove_stream(id)
    }

    fn streams(&self) -> Result<Vec<StreamRecord>, StoreError> {
        self.inner.streams()
    }

    fn record_alert(&self, ev: &AlertEvent) -> Result<(), StoreError> {
        self.write(|s| s.record_alert(ev), || Op::Alert(Box::new(ev.clone())))
    }

    fn alerts(&self, q: &AlertQuery) -> Result<Vec<Alert>, StoreError> {
        self.inner.alerts(q)
    }

    fn alert_records(&self, q: &AlertQuery) -> Result<Vec<AlertRecord>, StoreError> {
        self.inner.alert_records(q)
    }

    fn alert(&self, id: &str) -> Result<Option<AlertRecord>, StoreError> {
        self.inner.alert(id)
    }

    fn mark_alert(&self, id: &str, why: Suppressed) -> Result<(), StoreError> {
        self.write(|s| s.mark_alert(id, why), || Op::Mark(id.to_string(), why))
    }

    fn ack_alert(&self, id: &str, ack: &Ack) -> Result<AckOutcome, StoreError> {
        self.inner.ack_alert(id, ack)
    }

    fn mutes(&self) -> Result<Vec<Mute>, StoreError> {
        self.inner.mutes()
    }

    fn set_mute(&self, m: &Mute) -> Result<(), StoreError> {
        self.inner.set_mute(m)
    }

    fn remove_mute(&self, stream: &StreamId) -> Result<bool, StoreError> {
        self.inner.remove_mute(stream)
    }

    fn windows(&self) -> Result<Vec<MaintenanceWindow>, StoreError> {
        self.inner.windows()
    }

    fn add_window(&self, w: &MaintenanceWindow) -> Result<(), StoreError> {
        self.inner.add_window(w)
    }

    fn remove_window(&self, id: &str) -> Result<bool, StoreError> {
        self.inner.remove_window(id)
    }

    fn record_metrics(&self, m: &MetricsSample) -> Result<(), StoreError> {
        self.record_metrics_batch(std::slice::from_ref(m))
    }

    fn record_metrics_batch(&self, samples: &[MetricsSample]) -> Result<(), StoreError> {
        self.write(
            |s| s.record_metrics_batch(samples),
            || Op::Metrics(samples.to_vec()),
        )
    }

    fn metrics_range(
        &self,
        stream: &StreamId,
        q: &MetricsQuery,
    ) -> Result<Vec<MetricsSample>, StoreError> {
        self.inner.metrics_range(stream, q)
    }

    fn prune_metrics(&self, before: WallTime) -> Result<u64, StoreError> {
        self.inner.prune_metrics(before)
    }

    fn outbox_add(&self, e: &OutboxEntry) -> Result<Option<i64>, StoreError> {
        let mut st = self.state();
        let why = if self.settle(&mut st) {
            StoreError::Storage(st.error.clone())
        } else {
            match self.inner.outbox_add(e) {
                Err(e @ StoreError::Storage(_)) => e,
                other => return other,
            }
        };
        // A replay of a key waiting here is not added again (one of a key in the database is
        // found when it is written: the database keeps its own).
        let replay = st
            .mem
            .values()
            .any(|r| r.entry.notifier == e.notifier && r.entry.key == e.key);
        if replay {
            return Ok(None);
        }
        let id = st.next_mem;
        st.next_mem -= 1;
        st.mem.insert(
            id,
            OutboxRow {
                id,
                entry: e.clone(),
                status: OutboxStatus::Pending,
                attempts: 0,
                last_error: None,
                group_key: None,
            },
        );
        st.push(Op::Outbox(id), &why);
        Ok(Some(id))
    }

    fn outbox_has_alert(&self, notifier: &str, alert_id: &str) -> Result<bool, StoreError> {
        let in_memory = self
            .state()
            .mem
            .values()
            .any(|r| r.entry.notifier == notifier && r.entry.alert_id == alert_id);
        Ok(in_memory || self.inner.outbox_has_alert(notifier, alert_id)?)
    }

    fn outbox_pending(&self, notifier: &str, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        let st = self.state();
        if !st.waiting() {
            return self.inner.outbox_pending(notifier, limit);
        }
        let overlay = st.overlay();
        let mut rows = self
            .inner
            .outbox_pending(notifier, limit.saturating_add(overlay.len()))?;
        rows.retain_mut(|r| match overlay.get(&r.id) {
            Some((status, attempts, _)) => {
                r.attempts += attempts;
                *status == OutboxStatus::Pending
            }
            None => true,
        });
        // Rows written here came after every row in the database.
        rows.extend(
            st.mem
                .values()
                .rev()
                .filter(|r| r.entry.notifier == notifier && r.status == OutboxStatus::Pending)
                .cloned(),
        );
        rows.truncate(limit);
        Ok(rows)
    }

    fn outbox_attempt(
        &self,
        ids: &[i64],
        notifier: &str,
        outcome: &AttemptOutcome,
        detail: &serde_json::Value,
        at: WallTime,
    ) -> Result<(), StoreError> {
        let mut st = self.state();
        let in_memory = ids.iter().any(|id| st.mem.contains_key(id));
        let why = if self.settle(&mut st) || in_memory {
            StoreError::Storage(st.error.clone())
        } else {
            let real: Vec<i64> = ids.iter().filter_map(|&id| st.real_id(id)).collect();
            match self
                .inner
                .outbox_attempt(&real, notifier, outcome, detail, at)
            {
                Err(e @ StoreError::Storage(_)) => e,
                other => return other,
            }
        };
        let effect = outcome.effect(detail);
        for id in ids {
            if let Some(r) = st.mem.get_mut(id) {
                r.attempts += 1;
                r.status = effect.status;
                if effect.error.is_some() {
                    r.last_error.clone_from(&effect.error);
                }
                if let Some(g) = effect.group_key {
                    r.group_key = Some(g.to_string());
                }
            }
        }
        st.push(
            Op::Attempt {
                ids: ids.to_vec(),
                notifier: notifier.to_string(),
                outcome: outcome.clone(),
                detail: detail.clone(),
                at,
            },
            &why,
        );
        Ok(())
    }

    fn outbox_pending_by_notifier(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut counts: BTreeMap<String, u64> = self
            .inner
            .outbox_pending_by_notifier()?
            .into_iter()
            .collect();
        let st = self.state();
        for (status, _, notifier) in st.overlay().values() {
            if *status != OutboxStatus::Pending {
                if let Some(n) = counts.get_mut(notifier) {
                    *n = n.saturating_sub(1);
                }
            }
        }
        for r in st.mem.values() {
            if r.status == OutboxStatus::Pending {
                *counts.entry(r.entry.notifier.clone()).or_default() += 1;
            }
        }
        Ok(counts.into_iter().filter(|(_, n)| *n > 0).collect())
    }

    fn outbox_counts(&self, notifier: &str) -> Result<OutboxCounts, StoreError> {
        let mut c = self.inner.outbox_counts(notifier)?;
        let st = self.state();
        let mut count = |status: OutboxStatus, n: i64| match status {
            OutboxStatus::Pending => c.pending = c.pending.saturating_add_signed(n),
            OutboxStatus::Delivered => c.delivered = c.delivered.saturating_add_signed(n),
            OutboxStatus::Failed => c.failed = c.failed.saturating_add_signed(n),
        };
        for (status, _, n) in st.overlay().values() {
            if n == notifier && *status != OutboxStatus::Pending {
                count(OutboxStatus::Pending, -1);
                count(*status, 1);
            }
        }
        for r in st.mem.values().filter(|r| r.entry.notifier == notifier) {
            count(r.status, 1);
        }
        Ok(c)
    }

    fn outbox_rows(&self, notifier: &str) -> Result<Vec<OutboxRow>, StoreError> {
        let mut rows = self.inner.outbox_rows(notifier)?;
        let st = self.state();
        rows.extend(
            st.mem
                .values()
                .rev()
                .filter(|r| r.entry.notifier == notifier)
                .cloned(),
        );
        Ok(rows)
    }

    fn outbox_attempts(&self, notifier: &str) -> Result<Vec<AttemptRecord>, StoreError> {
        self.inner.outbox_attempts(notifier)
    }

    fn outbox_open_groups(&self, notifier: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.inner.outbox_open_groups(notifier)
    }

    fn metrics_streams(&self) -> Result<Vec<StreamId>, StoreError> {
        self.inner.metrics_streams()
    }

    fn fold_metrics(
        &self,
        stream: &StreamId,
        from_s: u32,
        to_s: u32,
        before: WallTime,
        max_rows: usize,
    ) -> Result<u64, StoreError> {
        self.inner
            .fold_metrics(stream, from_s, to_s, before, max_rows)
    }

    fn delete_aggregates(
        &self,
        stream: &StreamId,
        span_s: u32,
        before: WallTime,
        max_rows: usize,
    ) -> Result<u64, StoreError> {
        self.inner
            .delete_aggregates(stream, span_s, before, max_rows)
    }

    fn delete_cleared_alerts(&self, before: WallTime, max: usize) -> Result<u64, StoreError> {
        self.inner.delete_cleared_alerts(before, max)
    }

    fn delete_attempts(&self, before: WallTime, max: usize) -> Result<u64, StoreError> {
        self.inner.delete_attempts(before, max)
    }

    fn delete_events(&self, before: WallTime, max: usize) -> Result<u64, StoreError> {
        self.inner.delete_events(before, max)
    }
}
