//! The live feed behind `/api/events` (server-sent events): stream status changes and audio
//! levels, published from the registry's state four times a second.

use std::collections::BTreeMap;
use std::time::Duration;

use avmon_server::LiveEvent;
use avmon_store::cluster::{Heard, EVENTS_CHANNEL};

use crate::placement::ClusterNode;
use crate::registry::Service;

/// Publishes `stream` events when a stream's status, tier or active alerts change (or it
/// appears), and everyone's audio `levels`, four times a second.
pub(crate) async fn live_events(service: std::sync::Weak<Service>) {
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let Some(service) = service.upgrade() else {
            return;
        };
        if service.events.receiver_count() == 0 {
            last.clear();
            continue;
        }
        let mut levels = serde_json::Map::new();
        let mut seen = BTreeMap::new();
        for shared in service.shared_streams() {
            let status = service.status_of(&shared);
            let key = format!(
                "{:?}/{}/{}/{}",
                status.status,
                status.tier,
                status.muted.is_some(),
                status
                    .active_alerts
                    .iter()
                    .map(|a| a.id.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            );
            if last.get(&status.id) != Some(&key) {
                let _ = service.events.send(LiveEvent::new("stream", &status));
            }
            if let Ok(live) = shared.live.lock() {
                if !live.levels.is_empty() && !live.down {
                    levels.insert(status.id.clone(), serde_json::json!(live.levels));
                }
            }
            seen.insert(status.id, key);
        }
        for gone in last.keys().filter(|id| !seen.contains_key(*id)) {
            let _ = service.events.send(LiveEvent::new(
                "stream",
                &serde_json::json!({"id": gone, "removed": true}),
            ));
        }
        last = seen;
        if !levels.is_empty() {
            let _ = service.events.send(LiveEvent::new("levels", &levels));
        }
    }
}

/// In a cluster: the other nodes' alert events (told on [`EVENTS_CHANNEL`] by their hubs) to
/// this node's live feed, so that every console sees every node's alerts as they happen. On a
/// thread of its own, listening on a connection of its own, until the process ends.
pub(crate) fn cluster_events(
    node: &ClusterNode,
    events: tokio::sync::broadcast::Sender<LiveEvent>,
) {
    let (coordinator, me) = (node.coordinator.clone(), node.node.name.clone());
    let spawned = std::thread::Builder::new()
        .name("cluster-events".into())
        .spawn(move || {
            let mut listener = loop {
                match coordinator.listener().and_then(|mut l| {
                    l.listen(EVENTS_CHANNEL)?;
                    Ok(l)
                }) {
                    Ok(l) => break l,
                    Err(e) => {
                        tracing::warn!("listening for the other nodes' events: {e}");
                        std::thread::sleep(Duration::from_secs(5));
                    }
                }
            };
            loop {
                match listener.wait(Duration::from_secs(30)) {
                    Ok(Some(Heard::Notification { payload, .. })) => {
                        let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&payload) else {
                            continue;
                        };
                        // This node's own are in its feed already.
                        if v.get("node").and_then(|n| n.as_str()) == Some(me.as_str()) {
                            continue;
                        }
                        if let Some(o) = v.as_object_mut() {
                            o.remove("node");
                        }
                        let _ = events.send(LiveEvent::new("alert", &v));
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_secs(1)),
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("starting the cluster events thread: {e}");
    }
}
