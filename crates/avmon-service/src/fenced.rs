//! A cluster node's writes: each under the lease epoch its stream is held by, and kept in order
//! while the database is away.
//!
//! - An alert event is written with its notifications (outbox rows) in one transaction, only
//!   while the stream's lease is still at the event's epoch
//!   ([`Coordinator::record_alert_fenced`]); metrics likewise per sample
//!   ([`Coordinator::record_metrics_fenced`]). Refused (another node took the stream over):
//!   dropped, and the stream is marked fenced so that placement stops it.
//! - The database does not answer: the write waits in a backlog, in order, with everything
//!   after it, and the backlog is retried every second until it drains. Notifications wait with
//!   their alert: they are delivered once the database is back (by whichever node claims them),
//!   under the same idempotency keys, so still once each. Alerts are never dropped; metrics
//!   samples beyond [`MAX_BACKLOG_SAMPLES`] are, oldest first, and counted.
//! - Whatever waits when the database returns is written under the epoch it was made under: if
//!   the node kept its leases (nobody could claim them while the database was away, and they
//!   renew with the same epoch), everything lands; if another node took a stream over, that
//!   stream's part is refused, and the new owner's results stand.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use avmon_core::{AlertEvent, Suppressed, Transition};
use avmon_notify::Notifier;
use avmon_store::cluster::{Coordinator, EVENTS_CHANNEL};
use avmon_store::{MetricsSample, OutboxEntry, Store, StoreError};

use crate::hub::cluster_event;
use crate::stream::StreamShared;

/// Metrics samples kept at most while the database is away (about 100 minutes of 1,000
/// streams at the default 10 s interval); older ones are dropped first.
pub const MAX_BACKLOG_SAMPLES: usize = 600_000;

/// How often the backlog is retried.
const RETRY: Duration = Duration::from_secs(1);

enum Item {
    Alert {
        shared: Arc<StreamShared>,
        ev: Box<AlertEvent>,
        epoch: i64,
        /// Each notifier's row (by its index), decided when the event was made.
        entries: Vec<(usize, OutboxEntry)>,
        suppressed: Option<Suppressed>,
    },
    Metrics(Vec<(MetricsSample, i64)>),
}

enum Outcome {
    Written,
    /// Another node holds the stream: dropped.
    Fenced,
    /// The database did not answer: kept.
    Away(StoreError),
}

/// The hub's writer in a cluster (see the module doc).
pub(crate) struct FencedWriter {
    pub(crate) coordinator: Coordinator,
    /// This node's name, on the events it tells the other nodes.
    pub(crate) node: String,
    backlog: VecDeque<Item>,
    samples: usize,
    dropped_samples: u64,
    next_retry: Instant,
    away_since: Option<Instant>,
}

impl FencedWriter {
    pub(crate) fn new(coordinator: Coordinator, node: String) -> Self {
        FencedWriter {
            coordinator,
            node,
            backlog: VecDeque::new(),
            samples: 0,
            dropped_samples: 0,
            next_retry: Instant::now(),
            away_since: None,
        }
    }

    /// Items waiting for the database.
    pub(crate) fn waiting(&self) -> usize {
        self.backlog.len()
    }

    /// An alert event of a stream held under `epoch`; `suppressed`: not notified.
    pub(crate) fn alert(
        &mut self,
        shared: Arc<StreamShared>,
        ev: AlertEvent,
        epoch: i64,
        suppressed: Option<Suppressed>,
        notifiers: &[Arc<dyn Notifier>],
    ) {
        let mut entries = Vec::new();
        if suppressed.is_none() {
            for (i, n) in notifiers.iter().enumerate() {
                if let Some(e) = n.outbox_entry(&ev) {
                    entries.push((i, e));
                }
            }
        }
        self.push(
            Item::Alert {
                shared,
                ev: Box::new(ev),
                epoch,
                entries,
                suppressed,
            },
            notifiers,
        );
    }

    /// Metrics samples, each with its epoch.
    pub(crate) fn metrics(
        &mut self,
        samples: Vec<(MetricsSample, i64)>,
        notifiers: &[Arc<dyn Notifier>],
    ) {
        if !samples.is_empty() {
            self.push(Item::Metrics(samples), notifiers);
        }
    }

    fn push(&mut self, item: Item, notifiers: &[Arc<dyn Notifier>]) {
        if let Item::Metrics(m) = &item {
            self.samples += m.len();
        }
        self.backlog.push_back(item);
        self.trim();
        // In order: only the head is written; while anything waits, so does what follows.
        if self.backlog.len() == 1 || Instant::now() >= self.next_retry {
            self.drain(notifiers);
        }
    }

    /// Retry the backlog if it is time to.
    pub(crate) fn retry(&mut self, notifiers: &[Arc<dyn Notifier>]) {
        if !self.backlog.is_empty() && Instant::now() >= self.next_retry {
            self.drain(notifiers);
        }
    }

    fn drain(&mut self, notifiers: &[Arc<dyn Notifier>]) {
        while let Some(item) = self.backlog.front() {
            let mut outcome = self.write(item, notifiers);
            if let Outcome::Away(e) = &outcome {
                // The database answers, yet refused this write: once more, and if it is
                // refused again it would never pass, and must not hold up the rest. Unless its
                // disk is full: that passes once space returns.
                let full = matches!(e, StoreError::Storage(_));
                if !full && self.coordinator.store().schema_version().is_ok() {
                    outcome = match self.write(item, notifiers) {
                        Outcome::Away(again) => {
                            tracing::error!("a write the database refuses is dropped: {again}");
                            Outcome::Fenced
                        }
                        other => other,
                    };
                } else {
                    tracing::debug!("writing: {e}");
                }
            }
            match outcome {
                Outcome::Written | Outcome::Fenced => {
                    if let Some(Item::Metrics(m)) = self.backlog.pop_front() {
                        self.samples -= m.len();
                    }
                }
                Outcome::Away(e) => {
                    if self.away_since.is_none() {
                        tracing::error!(
                            "the database does not answer ({e}): results and notifications \
                             wait here, in order, and are written when it is back"
                        );
                        self.away_since = Some(Instant::now());
                    }
                    self.next_retry = Instant::now() + RETRY;
                    return;
                }
            }
        }
        if let Some(since) = self.away_since.take() {
            tracing::warn!(
                away_s = since.elapsed().as_secs_f64(),
                dropped_samples = self.dropped_samples,
                "the database is back: what waited is written"
            );
            self.dropped_samples = 0;
        }
    }

    /// Keep the backlog's metrics under the bound, dropping the oldest.
    fn trim(&mut self) {
        while self.samples > MAX_BACKLOG_SAMPLES {
            let Some(i) = self
                .backlog
                .iter()
                .position(|it| matches!(it, Item::Metrics(_)))
            else {
                return;
            };
            if let Some(Item::Metrics(m)) = self.backlog.remove(i) {
                self.samples -= m.len();
                self.dropped_samples += m.len() as u64;
            }
        }
    }

    fn write(&self, item: &Item, notifiers: &[Arc<dyn Notifier>]) -> Outcome {
        match item {
            Item::Alert {
                shared,
                ev,
                epoch,
                entries,
                suppressed,
            } => {
                let rows: Vec<OutboxEntry> = entries.iter().map(|(_, e)| e.clone()).collect();
                match self.coordinator.record_alert_fenced(ev, *epoch, &rows) {
                    Ok(ids) => {
                        for ((i, _), id) in entries.iter().zip(ids) {
                            if id.is_some() {
                                notifiers[*i].queued(1);
                            }
                        }
                        if let (Some(why), Transition::Raised) = (suppressed, ev.transition) {
                            if let Err(e) = self.coordinator.store().mark_alert(&ev.alert.id, *why)
                            {
                                tracing::error!("marking alert {}: {e}", ev.alert.id);
                            }
                        }
                        let payload = cluster_event(&self.node, ev.transition.as_str(), ev);
                        if let Err(e) = self.coordinator.notify(EVENTS_CHANNEL, &payload) {
                            tracing::debug!("telling the cluster of alert {}: {e}", ev.alert.id);
                        }
                        Outcome::Written
                    }
                    Err(StoreError::Fenced { current, .. }) => {
                        if !shared.fenced.swap(true, Ordering::Relaxed) {
                            tracing::warn!(
                                stream = %ev.alert.stream_id, epoch, current = ?current,
                                "another node holds the stream now: this node's results for it \
                                 are refused, and it stops monitoring it"
                            );
                        }
                        Outcome::Fenced
                    }
                    Err(e) => Outcome::Away(e),
                }
            }
            Item::Metrics(samples) => match self.coordinator.record_metrics_fenced(samples) {
                Ok(stale) => {
                    for s in stale {
                        tracing::warn!(
                            stream = %s.stream, epoch = s.epoch, current = ?s.current,
                            "metrics not stored: another node holds the stream now"
                        );
                    }
                    Outcome::Written
                }
                Err(e) => Outcome::Away(e),
            },
        }
    }
}
