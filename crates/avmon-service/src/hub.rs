//! The alert fan-out hub: one thread that keeps each stream's active alerts for the API,
//! writes the store, keeps evidence, and hands events to notifiers (whose `notify` never
//! blocks; delivery runs on the async runtime).

use std::sync::Arc;

use avmon_alert::Suppression;
use avmon_core::{AlertEvent, StreamId, Transition};
use avmon_notify::Notifier;
use avmon_server::LiveEvent;
use avmon_store::{MetricsSample, Store, StreamRecord};
use chrono::Utc;
use crossbeam_channel::Receiver;

use crate::evidence::{self, Evidence};
use crate::stream::StreamShared;

pub(crate) enum HubMsg {
    Alert(Arc<StreamShared>, AlertEvent),
    Metrics(MetricsSample),
    Upsert(StreamRecord),
    Remove(StreamId),
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
}

pub(crate) fn hub_thread(
    rx: Receiver<HubMsg>,
    store: Arc<dyn Store>,
    notifiers: Vec<Arc<dyn Notifier>>,
    out: HubOutputs,
    suppression: Arc<Suppression>,
) {
    for msg in rx {
        match msg {
            HubMsg::Alert(shared, ev) => {
                if out.print {
                    print_alert(&ev);
                }
                let transition = match ev.transition {
                    Transition::Raised => "raised",
                    Transition::Updated => "updated",
                    Transition::Cleared => "cleared",
                };
                let _ = out.events.send(LiveEvent::new(
                    "alert",
                    &serde_json::json!({"transition": transition, "alert": ev.alert}),
                ));
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
                if let Err(e) = store.record_alert(&ev) {
                    tracing::error!("storing alert {}: {e}", ev.alert.id);
                }
                if let (Some(why), Transition::Raised) = (suppressed, ev.transition) {
                    if let Err(e) = store.mark_alert(&ev.alert.id, why) {
                        tracing::error!("marking alert {}: {e}", ev.alert.id);
                    }
                }
                if suppressed.is_none() {
                    for n in &notifiers {
                        n.notify(&ev);
                    }
                }
            }
            HubMsg::Metrics(m) => {
                if let Err(e) = store.record_metrics(&m) {
                    tracing::error!("storing metrics of {}: {e}", m.stream_id);
                }
            }
            HubMsg::Upsert(rec) => {
                if let Err(e) = store.upsert_stream(&rec) {
                    tracing::error!("storing stream {}: {e}", rec.id);
                }
            }
            HubMsg::Remove(id) => {
                if let Err(e) = store.remove_stream(&id) {
                    tracing::error!("removing stream {id}: {e}");
                }
            }
        }
    }
    if let Some(e) = out.evidence {
        e.finish();
    }
}
