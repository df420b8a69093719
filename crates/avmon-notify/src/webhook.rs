//! The webhook channel: POST each event (or group) as JSON, signed as the Standard Webhooks
//! specification says (<https://www.standardwebhooks.com/>), so that receivers can verify it
//! with the specification's own libraries.
//!
//! Headers: `Content-Type: application/json`; `webhook-id` and `Idempotency-Key`, both the
//! event's `{alert_id}:{state}` or the group's key (the same on every attempt); `webhook-timestamp`,
//! Unix seconds when this attempt was sent; and, with a secret, `webhook-signature:
//! v1,<base64>`: the HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}`. The timestamp is
//! signed, so a receiver that rejects timestamps outside a tolerance (the libraries' default: 5
//! minutes) cannot be fed a captured request again later; within it, `webhook-id` tells a
//! replay. The key is the secret's bytes after `whsec_` decoded from base64 (the
//! specification's form), or, for any other secret, its bytes as written: a receiver's library
//! then takes `whsec_` followed by the base64 of the secret.

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
    /// The signing secret for `webhook-signature`: `whsec_` and base64 (as the Standard
    /// Webhooks libraries generate them), or any other string, used as written. Optional: no
    /// signature without one.
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
        if let Some(Err(e)) = self.secret.as_ref().map(|s| signing_key(s.expose())) {
            errors.push(format!("{path}.secret: {e}"));
        }
    }
}

/// The HMAC key a secret stands for: base64-decoded after `whsec_`, else its bytes.
pub fn signing_key(secret: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    match secret.strip_prefix("whsec_") {
        Some(b64) => match base64::engine::general_purpose::STANDARD.decode(b64) {
            Ok(key) if !key.is_empty() => Ok(key),
            _ => Err(
                "a secret starting with whsec_ must continue in base64 (as the Standard \
                      Webhooks libraries make them)"
                    .into(),
            ),
        },
        None => Ok(secret.as_bytes().to_vec()),
    }
}

/// The `webhook-signature` value: `v1,` and the base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`
/// under `key`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    use base64::Engine;
    // HMAC takes keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
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
        let timestamp = chrono::Utc::now().timestamp();
        if let Ok(v) = HeaderValue::from_str(&batch.key) {
            headers.insert("webhook-id", v);
        }
        headers.insert("webhook-timestamp", HeaderValue::from(timestamp));
        if let Some(Ok(key)) = self.cfg.secret.as_ref().map(|s| signing_key(s.expose())) {
            if let Ok(v) = HeaderValue::from_str(&sign(&key, &batch.key, timestamp, &body)) {
                headers.insert("webhook-signature", v);
            }
        }
        post(&self.client, &self.cfg.url, headers, body).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_specifications_example() {
        // The example in the Standard Webhooks specification (spec/standard-webhooks.md).
        let key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_are_the_specifications_form_or_plain_bytes() {
        assert_eq!(signing_key("plain-secret").unwrap(), b"plain-secret");
        assert_eq!(signing_key("whsec_aGVsbG8=").unwrap(), b"hello");
        assert!(signing_key("whsec_not base64!").is_err());
        assert!(signing_key("whsec_").is_err());
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
