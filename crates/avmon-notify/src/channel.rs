//! What every delivery channel (webhook, Slack, PagerDuty, command) shares with the delivery
//! loop: the [`Batch`] it is given to send, and the [`Sent`] outcome it answers with. Channels
//! and the loop both depend on this module, never on each other.

use std::time::Duration;

use avmon_store::OutboxRow;
use serde_json::Value;

/// A batch of outbox rows delivered as one message: one row, or (with grouping) every row
/// queued in the group window. Its `key` is the row's idempotency key, or for a group
/// `group:{first row's key}:{count}`, the same on every retry.
pub struct Batch<'a> {
    pub rows: &'a [OutboxRow],
    pub key: String,
}

impl<'a> Batch<'a> {
    pub(crate) fn new(rows: &'a [OutboxRow]) -> Self {
        let key = match rows {
            [one] => one.entry.key.clone(),
            _ => format!(
                "group:{}:{}",
                rows.first().map_or("", |r| r.entry.key.as_str()),
                rows.len()
            ),
        };
        Batch { rows, key }
    }

    /// Each event's payload, as sent (with its `idempotency_key`).
    pub fn payloads(&self) -> impl Iterator<Item = &'a Value> {
        self.rows.iter().map(|r| &r.entry.payload)
    }

    pub fn is_group(&self) -> bool {
        self.rows.len() > 1
    }
}

/// What one attempt came to.
pub(crate) enum Sent {
    Delivered {
        detail: Value,
        group_key: Option<String>,
    },
    Retry {
        detail: Value,
        after: Option<Duration>,
    },
    Rejected {
        detail: Value,
    },
}
