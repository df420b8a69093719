//! The Slack channel: an incoming webhook's message format.
//!
//! One message per event or group: a `text` line (what notifications and clients without
//! attachments show), and one attachment per event (at most [`MAX_ATTACHMENTS`], then a line
//! saying how many more), coloured by severity (green once cleared), holding a `mrkdwn` section
//! block. The whole webhook URL is a secret (its path is the token): only its host is ever shown.

use std::fmt;
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::channel::{Batch, Sent};
use crate::http::{check_url, client, post, redact};
use crate::secret::{resolve, Secret};

/// Events shown one by one in a grouped message; the rest are counted.
pub const MAX_ATTACHMENTS: usize = 20;

/// `kind = "slack"`
#[derive(Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlackConfig {
    /// The incoming webhook URL (`https://hooks.slack.com/services/…`); a secret.
    pub url: Option<Secret>,
    /// Read the URL from this environment variable instead.
    pub url_env: Option<String>,
}

impl fmt::Debug for SlackConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackConfig")
            .field("url", &self.url.as_ref().map(|u| redact(u.expose())))
            .field("url_env", &self.url_env)
            .finish()
    }
}

impl SlackConfig {
    pub fn prepare(&mut self, path: &str, errors: &mut Vec<String>) {
        let env = self.url_env.clone();
        resolve(&mut self.url, env.as_deref(), path, "url", true, errors);
        if let Some(u) = &self.url {
            check_url(u.expose(), &format!("{path}.url"), errors);
        }
    }
}

/// The attachment colour of an event: by severity while raised, green once cleared.
fn colour(p: &Value) -> &'static str {
    if p["state"] == "cleared" {
        return "#2eb67d";
    }
    match p["severity"].as_str().unwrap_or("") {
        "critical" => "#a30200",
        "major" => "#e01e5a",
        "minor" => "#f2952f",
        "warning" => "#ecb22e",
        _ => "#439fe0",
    }
}

/// One line about an event: `RAISED news-hd video.black (major) at 8.04 s`.
fn line(p: &Value) -> String {
    let state = if p["state"] == "cleared" {
        "CLEARED"
    } else {
        "RAISED"
    };
    let s = |k: &str| p[k].as_str().unwrap_or("?").to_string();
    let mut l = format!(
        "{state} {} {} ({})",
        s("stream_id"),
        s("kind"),
        s("severity")
    );
    match (p["start_s"].as_f64(), p["end_s"].as_f64()) {
        (Some(a), Some(b)) => l.push_str(&format!(", {a:.2} s to {b:.2} s")),
        (Some(a), None) => l.push_str(&format!(" at {a:.2} s")),
        _ => {}
    }
    l
}

/// The Slack message for a batch.
pub fn message(batch: &Batch<'_>) -> Value {
    let events: Vec<&Value> = batch.payloads().collect();
    let text = match events.as_slice() {
        [one] => format!("avmon: {}", line(one)),
        many => {
            let raised = many.iter().filter(|p| p["state"] != "cleared").count();
            let streams: std::collections::BTreeSet<&str> = many
                .iter()
                .filter_map(|p| p["stream_id"].as_str())
                .collect();
            format!(
                "avmon: {} alert events on {} stream(s) ({raised} raised, {} cleared)",
                many.len(),
                streams.len(),
                many.len() - raised
            )
        }
    };
    let mut attachments: Vec<Value> = events
        .iter()
        .take(MAX_ATTACHMENTS)
        .map(|p| {
            let l = line(p);
            let mut body = format!("*{l}*\nalert `{}`", p["alert_id"].as_str().unwrap_or("?"));
            if let Some(at) = p["raised_at"].as_str() {
                body.push_str(&format!(", raised {at}"));
            }
            if let Some(at) = p["cleared_at"].as_str() {
                body.push_str(&format!(", cleared {at}"));
            }
            json!({
                "color": colour(p),
                "fallback": l,
                "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": body}}],
            })
        })
        .collect();
    if events.len() > MAX_ATTACHMENTS {
        attachments.push(json!({
            "color": "#999999",
            "fallback": format!("and {} more", events.len() - MAX_ATTACHMENTS),
            "blocks": [{"type": "context", "elements": [{"type": "mrkdwn",
                "text": format!("… and {} more", events.len() - MAX_ATTACHMENTS)}]}],
        }));
    }
    json!({"text": text, "attachments": attachments})
}

pub(crate) struct Slack {
    url: Secret,
    client: reqwest::Client,
}

impl Slack {
    pub fn new(cfg: SlackConfig, timeout: Duration) -> Self {
        Slack {
            url: cfg.url.unwrap_or_default(),
            client: client(timeout),
        }
    }

    pub fn target(&self) -> String {
        format!("slack {}", redact(self.url.expose()))
    }

    pub async fn send(&self, batch: &Batch<'_>) -> Sent {
        let body = serde_json::to_vec(&message(batch)).unwrap_or_default();
        post(&self.client, self.url.expose(), HeaderMap::new(), body).await
    }
}
