//! The alert fan-out hub: one thread that keeps each stream's active alerts for the API,
//! writes the store, keeps evidence, and hands events to notifiers (whose `notify` never
//! blocks; delivery runs on the async runtime).

use std::sync::Arc;

use avmon_alert::Suppression;
use avmon_core::{AlertEvent, StreamId, Transition};
use avmon_notify::Notifier;
use avmon_server::LiveEvent;
use std::time::Duration;

use avmon_store::{MetricsSample, Store, StreamRecord};
use crossbeam_channel::RecvTimeoutError;

use crate::fenced::FencedWriter;
use crate::storage::StorageWatch;
use avmon_store::spill::SpillStore;
use chrono::Utc;
use crossbeam_channel::Receiver;
use std::time::Instant;

use crate::evidence::{self, Evidence};
use crate::stream::StreamShared;

/// Metrics samples written in one batch at most.
const METRICS_BATCH: usize = 2000;

pub(crate) enum HubMsg {
    Alert(Arc<StreamShared>, AlertEvent),
    /// A sample, and the lease epoch it was measured under (in a cluster).
    Metrics(MetricsSample, Option<i64>),
    Upsert(StreamRecord),
    Remove(StreamId),
    /// Answered once everything sent before it is handled.
    Barrier(crossbeam_channel::Sender<()>),
}

pub(crate) fn print_alert(ev: &AlertEvent) {
    let a = &ev.alert;
    let when = Utc::now().format("%H:%M:%S");
    match ev.transition {
        Transition::Raised => println!(
            "{when} RAISED  {:<12} {:<14} {:<8} from {:.2} s",
            a.stream_id, a.kind, a.severity, a.start_s
        ),
        Transition::Updated => {}
        Transition::Cleared => {
            let end = a.end_s.unwrap_or(a.start_s);
            println!(
                "{when} CLEARED {:<12} {:<14} {:<8} {:.2} s .. {:.2} s ({:.2} s)",
                a.stream_id,
                a.kind,
                a.severity,
                a.start_s,
                end,
                end - a.start_s
            )
        }
    }
}

/// What the hub hands alerts to besides the store and notifiers.
pub(crate) struct HubOutputs {
    pub(crate) print: bool,
    pub(crate) events: tokio::sync::broadcast::Sender<LiveEvent>,
    pub(crate) evidence: Option<Evidence>,
    /// In a cluster: writes are fenced by the streams' lease epochs and kept while the
    /// database is away, and alert events are told to the other nodes' consoles.
    pub(crate) cluster: Option<FencedWriter>,
    /// Standalone: the store, whose writes wait in memory while its disk is full; retried
    /// every second, and watched with evidence for `monitor.storage`.
    pub(crate) spill: Option<Arc<SpillStore>>,
    /// `monitor.storage`.
    pub(crate) watch: StorageWatch,
}

impl HubOutputs {
    /// Print an alert event if asked to, and tell the console.
    fn announce(&self, ev: &AlertEvent) {
        if self.print {
            print_alert(ev);
        }
        let transition = ev.transition.as_str();
        let _ = self.events.send(LiveEvent::new(
            "alert",
            &serde_json::json!({"transition": transition, "alert": ev.alert}),
        ));
    }
}

/// Store an alert event, mark it if suppressed, and hand it to the notifiers unless it is.
fn store_and_notify(
    store: &dyn Store,
    notifiers: &[Arc<dyn Notifier>],
    ev: &AlertEvent,
    suppressed: Option<avmon_core::Suppressed>,
) {
    if let Err(e) = store.record_alert(ev) {
        tracing::error!("storing alert {}: {e}", ev.alert.id);
    }
    if let (Some(why), Transition::Raised) = (suppressed, ev.transition) {
        if let Err(e) = store.mark_alert(&ev.alert.id, why) {
            tracing::error!("marking alert {}: {e}", ev.alert.id);
        }
    }
    if suppressed.is_none() {
        for n in notifiers {
            n.notify(ev);
        }
    }
}

/// The payload of an alert event told to the other nodes on [`EVENTS_CHANNEL`]: the live
/// event's data with the node that raised it; without the details if that would be too long
/// for a notification.
pub(crate) fn cluster_event(node: &str, transition: &str, ev: &AlertEvent) -> String {
    let full = serde_json::json!({"node": node, "transition": transition, "alert": ev.alert});
    let text = full.to_string();
    if text.len() <= avmon_store::cluster::MAX_PAYLOAD {
        return text;
    }
    let mut alert = ev.alert.clone();
    alert.details = Default::default();
    serde_json::json!({"node": node, "transition": transition, "alert": alert}).to_string()
}

pub(crate) fn hub_thread(
    rx: Receiver<HubMsg>,
    store: Arc<dyn Store>,
    notifiers: Vec<Arc<dyn Notifier>>,
    mut out: HubOutputs,
    suppression: Arc<Suppression>,
) {
    // Metrics arrive from every stream at once each interval: a burst of them (everything
    // waiting, up to METRICS_BATCH) is written in one batch; any other message first writes
    // what was gathered before it, so the store sees messages in order.
    let mut metrics: Vec<(MetricsSample, Option<i64>)> = Vec::new();
    let mut cluster = out.cluster.take();
    let flush = |metrics: &mut Vec<(MetricsSample, Option<i64>)>,
                 cluster: &mut Option<FencedWriter>| {
        if metrics.is_empty() {
            return;
        }
        match cluster {
            // Each sample under its epoch: those of a stream another node took over are refused.
            Some(w) => {
                let fenced = metrics
                    .drain(..)
                    .filter_map(|(m, epoch)| Some((m, epoch?)))
                    .collect();
                w.metrics(fenced, &notifiers);
            }
            None => {
                let samples: Vec<MetricsSample> = metrics.drain(..).map(|(m, _)| m).collect();
                if let Err(e) = store.record_metrics_batch(&samples) {
                    tracing::error!("storing {} metrics samples: {e}", samples.len());
                }
            }
        }
    };
    let mut looked = Instant::now();
    loop {
        // Every second: a backlog waiting for the database is retried, and the disk's state
        // looked at.
        let first = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if looked.elapsed() >= Duration::from_secs(1) {
            looked = Instant::now();
            if let Some(spill) = &out.spill {
                spill.retry();
                if let Some(e) = &out.evidence {
                    e.want_room(spill.spilled().is_some());
                }
            }
            if let Some(ev) = out.watch.tick(out.spill.as_deref(), out.evidence.as_ref()) {
                out.announce(&ev);
                let suppressed = suppression.on_event(&ev, Utc::now());
                store_and_notify(store.as_ref(), &notifiers, &ev, suppressed);
            }
        }
        if let Some(w) = cluster.as_mut() {
            w.retry(&notifiers);
        }
        let mut next = first;
        while let Some(msg) = next.take() {
            if !matches!(msg, HubMsg::Metrics(..)) {
                flush(&mut metrics, &mut cluster);
            }
            match msg {
                HubMsg::Alert(shared, ev) => {
                    out.announce(&ev);
                    if let (Transition::Raised, Some(evidence)) = (ev.transition, &out.evidence) {
                        // How far behind the stream's latest media the onset is, in seconds.
                        let media_t = shared.live.lock().map(|l| l.media_t).unwrap_or(0.0);
                        let sources = evidence::Sources {
                            pictures: shared.pictures.clone(),
                            ring: shared.ring.clone(),
                        };
                        evidence.raised(&ev.alert, sources, media_t - ev.alert.start_s);
                    }
                    if let Ok(mut live) = shared.live.lock() {
                        match ev.transition {
                            Transition::Cleared => {
                                live.active.remove(&ev.alert.id);
                            }
                            _ => {
                                live.active.insert(ev.alert.id.clone(), ev.alert.clone());
                            }
                        }
                    }
                    // Muted or in maintenance when raised: stored, marked, not notified.
                    let suppressed = suppression.on_event(&ev, Utc::now());
                    match (cluster.as_mut(), shared.epoch) {
                        (Some(w), Some(epoch)) => {
                            w.alert(shared, ev, epoch, suppressed, &notifiers);
                        }
                        _ => store_and_notify(store.as_ref(), &notifiers, &ev, suppressed),
                    }
                }
                HubMsg::Metrics(m, epoch) => {
                    metrics.push((m, epoch));
                    if metrics.len() >= METRICS_BATCH {
                        flush(&mut metrics, &mut cluster);
                    }
                }
                HubMsg::Upsert(rec) => {
                    if let Err(e) = store.upsert_stream(&rec) {
                        tracing::error!("storing stream {}: {e}", rec.id);
                    }
                }
                HubMsg::Barrier(done) => {
                    let _ = done.send(());
                }
                HubMsg::Remove(id) => {
                    if let Err(e) = store.remove_stream(&id) {
                        tracing::error!("removing stream {id}: {e}");
                    }
                }
            }
            next = rx.try_recv().ok();
        }
        flush(&mut metrics, &mut cluster);
    }
    // Shutting down with writes waiting for the database: give it a little longer.
    if let Some(w) = cluster.as_mut() {
        let until = std::time::Instant::now() + SHUTDOWN_WAIT;
        while w.waiting() > 0 && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(200));
            w.retry(&notifiers);
        }
        if w.waiting() > 0 {
            tracing::error!(
                waiting = w.waiting(),
                "exiting with results the database did not take (it was away for the last {} s)",
                SHUTDOWN_WAIT.as_secs()
            );
        }
    }
    if let Some(e) = out.evidence {
        e.finish();
    }
    // Shutting down with writes the disk did not take: a last few tries.
    if let Some(spill) = &out.spill {
        let until = std::time::Instant::now() + SHUTDOWN_WAIT;
        while !spill.retry() && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(500));
        }
        if let Some(s) = spill.spilled() {
            tracing::error!(
                alerts = s.alerts,
                notifications = s.notifications,
                samples = s.samples,
                "exiting with results the disk did not take ({}): they are lost",
                s.error
            );
        }
    }
}

/// How long a node shutting down waits for the database to take what waits for it.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(15);

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn sample(stream: &str, i: usize) -> MetricsSample {
        MetricsSample {
            stream_id: StreamId(stream.into()),
            at: chrono::DateTime::from_timestamp(1_700_000_000 + i as i64, 0).unwrap(),
            media_t: i as f64,
            values: BTreeMap::from([("frames_video".to_string(), i as f64)]),
        }
    }

    /// A burst larger than a batch, with a stream record in the middle: every sample is
    /// stored, in order, and the record too.
    #[test]
    fn bursts_of_metrics_are_stored_whole_and_in_order() {
        let store: Arc<dyn Store> = Arc::from(avmon_store::open("sqlite::memory:").unwrap());
        let (tx, rx) = crossbeam_channel::unbounded();
        let n = METRICS_BATCH * 2 + 7;
        for i in 0..n {
            let stream = if i % 2 == 0 { "a" } else { "b" };
            tx.send(HubMsg::Metrics(sample(stream, i), None)).unwrap();
            if i == n / 2 {
                tx.send(HubMsg::Upsert(StreamRecord {
                    id: StreamId("a".into()),
                    url: "udp://127.0.0.1:5000".into(),
                    config: serde_json::json!({"id": "a"}),
                    created_at: Utc::now(),
                }))
                .unwrap();
            }
        }
        drop(tx);
        let (events, _) = tokio::sync::broadcast::channel(4);
        let out = HubOutputs {
            print: false,
            events,
            evidence: None,
            cluster: None,
            spill: None,
            watch: StorageWatch::new(store.as_ref(), crate::storage::self_stream(None), vec![], 0),
        };
        let suppression = Arc::new(Suppression::new(Vec::new(), Vec::new()));
        hub_thread(rx, store.clone(), Vec::new(), out, suppression);
        for stream in ["a", "b"] {
            let got = store.metrics(&StreamId(stream.into()), None).unwrap();
            let want: Vec<f64> = (0..n)
                .filter(|i| (i % 2 == 0) == (stream == "a"))
                .map(|i| i as f64)
                .collect();
            let media: Vec<f64> = got.iter().map(|m| m.media_t).collect();
            assert_eq!(media, want, "stream {stream}");
        }
        assert_eq!(store.streams().unwrap().len(), 1);
    }
}
