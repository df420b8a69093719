//! The PagerDuty channel: Events API v2 (`POST /v2/enqueue`).
//!
//! - A raise triggers an incident whose `dedup_key` is the alert id. With grouping, a batch's
//!   raises trigger **one** incident, keyed by the first raised alert's id (the group key), whose
//!   `custom_details` list every event: one outage of 100 streams is one page.
//! - A clear resolves its group's incident once **every** alert of the group is cleared (a lone
//!   alert is a group of one). Which alerts are open in which group is kept in the outbox rows
//!   (`group_key`), so it survives a restart.
//! - Severity: `critical` → critical, `major` → error, `minor` and `warning` → warning,
//!   `info` → info.
//! - PagerDuty answers `202` when it accepted an event; `400` is a rejection; `429` and `5xx`
//!   are retried.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::channel::{Batch, Sent};
use crate::http::{check_url, client, post, redact};
use crate::secret::{resolve, Secret};

pub const EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// `kind = "pagerduty"`
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PagerDutyConfig {
    /// The integration's routing key; a secret.
    pub routing_key: Option<Secret>,
    /// Read the routing key from this environment variable instead.
    pub routing_key_env: Option<String>,
    /// The Events API endpoint (default `https://events.pagerduty.com/v2/enqueue`).
    pub url: String,
    /// `payload.source` of the events (default `avmon`); the stream id is added as `component`.
    pub source: String,
}

impl Default for PagerDutyConfig {
    fn default() -> Self {
        PagerDutyConfig {
            routing_key: None,
            routing_key_env: None,
            url: EVENTS_URL.to_string(),
            source: "avmon".to_string(),
        }
    }
}

impl fmt::Debug for PagerDutyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PagerDutyConfig")
            .field("routing_key", &self.routing_key)
            .field("routing_key_env", &self.routing_key_env)
            .field("url", &redact(&self.url))
            .field("source", &self.source)
            .finish()
    }
}

impl PagerDutyConfig {
    pub fn prepare(&mut self, path: &str, errors: &mut Vec<String>) {
        check_url(&self.url, &format!("{path}.url"), errors);
        let env = self.routing_key_env.clone();
        resolve(
            &mut self.routing_key,
            env.as_deref(),
            path,
            "routing_key",
            true,
            errors,
        );
        if self.source.trim().is_empty() {
            errors.push(format!("{path}.source: must not be empty"));
        }
    }
}

/// PagerDuty's severity for avmon's.
pub fn severity(s: &str) -> &'static str {
    match s {
        "critical" => "critical",
        "major" => "error",
        "minor" | "warning" => "warning",
        _ => "info",
    }
}

/// Open groups: dedup key → alerts still raised in it; and alert → its group.
#[derive(Clone, Default)]
struct Groups {
    members: BTreeMap<String, BTreeSet<String>>,
    of: BTreeMap<String, String>,
}

impl Groups {
    /// The groups of `(alert_id, group_key)` pairs.
    fn of(open: Vec<(String, String)>) -> Groups {
        let mut groups = Groups::default();
        for (alert, group) in open {
            groups.join(&alert, &group);
        }
        groups
    }

    fn join(&mut self, alert: &str, group: &str) {
        self.members
            .entry(group.to_string())
            .or_default()
            .insert(alert.to_string());
        self.of.insert(alert.to_string(), group.to_string());
    }

    /// Remove a cleared alert; returns its group's key when that group is now empty.
    fn leave(&mut self, alert: &str) -> Option<String> {
        let group = self.of.remove(alert).unwrap_or_else(|| alert.to_string());
        let empty = match self.members.get_mut(&group) {
            Some(m) => {
                m.remove(alert);
                m.is_empty()
            }
            None => true,
        };
        if empty {
            self.members.remove(&group);
            Some(group)
        } else {
            None
        }
    }
}

pub(crate) struct PagerDuty {
    cfg: PagerDutyConfig,
    key: Secret,
    client: reqwest::Client,
    groups: Mutex<Groups>,
}

impl PagerDuty {
    /// `open`: the groups still open, from `Store::outbox_open_groups`.
    pub fn new(cfg: PagerDutyConfig, timeout: Duration, open: Vec<(String, String)>) -> Self {
        PagerDuty {
            key: cfg.routing_key.clone().unwrap_or_default(),
            cfg,
            client: client(timeout),
            groups: Mutex::new(Groups::of(open)),
        }
    }

    /// Forget what this process knew of the open groups and take `open` instead: in a
    /// cluster, other nodes deliver this notifier too, and the outbox is where they record
    /// which groups they opened and closed.
    pub fn reload(&self, open: Vec<(String, String)>) {
        *self.groups.lock().unwrap_or_else(|p| p.into_inner()) = Groups::of(open);
    }

    pub fn target(&self) -> String {
        format!("pagerduty {}", redact(&self.cfg.url))
    }

    fn trigger(&self, dedup_key: &str, raised: &[&Value]) -> Value {
        let s = |p: &Value, k: &str| p[k].as_str().unwrap_or("?").to_string();
        let first = raised[0];
        let worst = raised
            .iter()
            .filter_map(|p| p["severity"].as_str())
            .max_by_key(|s| {
                ["info", "warning", "minor", "major", "critical"]
                    .iter()
                    .position(|x| x == s)
            })
            .unwrap_or("info");
        let (summary, component, details) = match raised {
            [one] => (
                format!(
                    "{} on {} ({})",
                    s(one, "kind"),
                    s(one, "stream_id"),
                    s(one, "severity")
                ),
                s(one, "stream_id"),
                (*one).clone(),
            ),
            many => {
                let streams: BTreeSet<String> = many.iter().map(|p| s(p, "stream_id")).collect();
                let kinds: BTreeSet<String> = many.iter().map(|p| s(p, "kind")).collect();
                (
                    format!(
                        "{} alerts on {} stream(s): {}",
                        many.len(),
                        streams.len(),
                        kinds.into_iter().collect::<Vec<_>>().join(", ")
                    ),
                    streams.into_iter().collect::<Vec<_>>().join(","),
                    json!({"count": many.len(), "events": many}),
                )
            }
        };
        let summary: String = summary.chars().take(1024).collect();
        json!({
            "routing_key": self.key.expose(),
            "event_action": "trigger",
            "dedup_key": dedup_key,
            "client": "avmon",
            "payload": {
                "summary": summary,
                "source": self.cfg.source,
                "severity": severity(worst),
                "timestamp": first["raised_at"],
                "component": component,
                "class": s(first, "kind"),
                "custom_details": details,
            }
        })
    }

    pub async fn send(&self, batch: &Batch<'_>) -> Sent {
        // Plan on a copy: the groups change only once every request of the batch succeeded, so
        // a retry plans the same requests.
        let mut groups = self
            .groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let raised: Vec<&Value> = batch
            .payloads()
            .filter(|p| p["state"] != "cleared")
            .collect();
        let group_key = raised
            .first()
            .and_then(|p| p["alert_id"].as_str())
            .map(str::to_string);
        let mut events = Vec::new();
        if let Some(g) = &group_key {
            for p in &raised {
                groups.join(p["alert_id"].as_str().unwrap_or(""), g);
            }
            events.push(self.trigger(g, &raised));
        }
        for p in batch.payloads().filter(|p| p["state"] == "cleared") {
            if let Some(done) = groups.leave(p["alert_id"].as_str().unwrap_or("")) {
                events.push(json!({
                    "routing_key": self.key.expose(),
                    "event_action": "resolve",
                    "dedup_key": done,
                }));
            }
        }
        let mut details = Vec::new();
        for ev in &events {
            let body = serde_json::to_vec(ev).unwrap_or_default();
            match post(&self.client, &self.cfg.url, HeaderMap::new(), body).await {
                Sent::Delivered { detail, .. } => details.push(
                    json!({"action": ev["event_action"], "dedup_key": ev["dedup_key"], "status": detail["status"]}),
                ),
                other => return other,
            }
        }
        *self.groups.lock().unwrap_or_else(|p| p.into_inner()) = groups;
        Sent::Delivered {
            detail: json!({"events": details}),
            group_key,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_resolves_when_its_last_alert_clears() {
        let mut g = Groups::default();
        g.join("a", "a");
        g.join("b", "a");
        assert_eq!(g.leave("a"), None);
        assert_eq!(g.leave("b"), Some("a".to_string()));
        // An alert never seen (its raise given up on) resolves its own key.
        assert_eq!(g.leave("zz"), Some("zz".to_string()));
    }

    #[test]
    fn routing_key_stays_out_of_debug() {
        let c = PagerDutyConfig {
            routing_key: Some(Secret::new("R0UTINGKEY")),
            ..Default::default()
        };
        assert!(!format!("{c:?}").contains("R0UTINGKEY"));
    }
}
