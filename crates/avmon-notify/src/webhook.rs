//! The webhook channel: POST each event (or group) as JSON, signed with HMAC-SHA256.
//!
//! Headers: `Content-Type: application/json`, `Idempotency-Key` (the event's
//! `{alert_id}:{state}`, or the group's key), `X-Avmon-Timestamp` (Unix seconds when this attempt
//! was sent) and, with a secret, `X-Avmon-Signature: sha256=<hex>`: the lower-case hex
//! HMAC-SHA256 of the exact body bytes under the secret. The body is the same on every attempt,
//! so the signature is too; replays are dropped by the idempotency key.

use std::fmt;
use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;

use crate::channel::{Batch, Sent};
use crate::http::{check_url, client, post, redact};
use crate::secret::{resolve, Secret};

/// `kind = "webhook"`
#[derive(Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to POST events: an `http://` or `https://` URL. May carry a token in its path or
    /// query; it is never logged.
    pub url: String,
    /// The HMAC-SHA256 key for `X-Avmon-Signature`. Optional: no signature without one.
    pub secret: Option<Secret>,
    /// Read the key from this environment variable instead.
    pub secret_env: Option<String>,
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &redact(&self.url))
            .field("secret", &self.secret)
            .field("secret_env", &self.secret_env)
            .finish()
    }
}

impl WebhookConfig {
    /// Check it and read `secret_env`; problems go onto `errors` under `path`.
    pub fn prepare(&mut self, path: &str, errors: &mut Vec<String>) {
        check_url(&self.url, &format!("{path}.url"), errors);
        let env = self.secret_env.clone();
        resolve(
            &mut self.secret,
            env.as_deref(),
            path,
            "secret",
            false,
            errors,
        );
    }
}

/// `sha256=<hex HMAC-SHA256 of body under secret>`, the `X-Avmon-Signature` value.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(7 + 64);
    hex.push_str("sha256=");
    for b in digest {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

pub(crate) struct Webhook {
    cfg: WebhookConfig,
    client: reqwest::Client,
}

impl Webhook {
    pub fn new(cfg: WebhookConfig, timeout: Duration) -> Self {
        Webhook {
            cfg,
            client: client(timeout),
        }
    }

    pub fn target(&self) -> String {
        format!("webhook {}", redact(&self.cfg.url))
    }

    /// One event: its payload. A group:
    /// `{"idempotency_key": "group:…", "count": N, "events": [payload, …]}`.
    pub fn body(batch: &Batch<'_>) -> Vec<u8> {
        let value = if batch.is_group() {
            json!({
                "idempotency_key": batch.key,
                "count": batch.rows.len(),
                "events": batch.payloads().collect::<Vec<_>>(),
            })
        } else {
            batch.payloads().next().cloned().unwrap_or_default()
        };
        serde_json::to_vec(&value).unwrap_or_default()
    }

    pub async fn send(&self, batch: &Batch<'_>) -> Sent {
        let body = Self::body(batch);
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&batch.key) {
            headers.insert("idempotency-key", v);
        }
        headers.insert(
            "x-avmon-timestamp",
            HeaderValue::from(chrono::Utc::now().timestamp()),
        );
        if let Some(secret) = &self.cfg.secret {
            if let Ok(v) = HeaderValue::from_str(&sign(secret.expose().as_bytes(), &body)) {
                headers.insert("x-avmon-signature", v);
            }
        }
        post(&self.client, &self.cfg.url, headers, body).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_rfc_4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let cfg = WebhookConfig {
            url: "https://user:pw@hooks.example.com:8443/T0/SECRET?token=SECRET".into(),
            secret: Some(Secret::new("HMACKEY")),
            secret_env: None,
        };
        let dbg = format!("{cfg:?}");
        assert!(
            !dbg.contains("SECRET") && !dbg.contains("pw") && !dbg.contains("HMACKEY"),
            "{dbg}"
        );
        assert_eq!(redact(&cfg.url), "https://hooks.example.com:8443");
    }
}
