//! The outbox-backed notifier: configuration, `notify` (filter, store, wake) and the delivery
//! task (take rows, batch, rate-limit, send, retry, record).
//!
//! # Alone or in a cluster
//!
//! The task takes its rows one of two ways ([`Claim`]). A standalone node reads the notifier's
//! pending rows (`Store::outbox_pending`): they are all its own. The nodes of a cluster share
//! one outbox, so each task *claims* rows ([`Coordinator::outbox_claim`]) for a TTL, and the
//! database hands a notifier's rows to one node at a time: whichever node is alive delivers
//! every row, each by one node, in order. After any wait (a group window, a backoff, the rate
//! limit) a task claims its rows afresh before it sends them; it waits in naps of at most a
//! third of the TTL, so the notifier stays with it meanwhile; and while a message is on its way
//! it renews the claim on its rows at the same pace, so that no other node takes a message
//! still being sent. A node that dies stops renewing; once its claims expire, the next node to
//! look takes the rows. Looking happens when this node queues something (a wake-up) and
//! otherwise every `poll`: that is how a node notices rows that another node queued but left
//! (it died, or stopped).
//!
//! Each row is sent by one node as long as a live node's claim never runs out under it (the
//! TTL is longer than `timeout_s`, and renewals reach the database); otherwise it is at least
//! once, under the same idempotency key, as always. The backoff and the rate limit are each
//! node's own: a notifier that changes hands may send its next message sooner.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use avmon_core::{AlertEvent, Severity, Transition};
use avmon_store::cluster::{Coordinator, MAX_TTL};
use avmon_store::{AttemptOutcome, OutboxEntry, OutboxRow, Store, StoreError};
use chrono::Utc;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Notify;

use crate::channel::{Batch, Sent};
use crate::command::{Command, CommandConfig};
use crate::filter::Filter;
use crate::pagerduty::{PagerDuty, PagerDutyConfig};
use crate::slack::{Slack, SlackConfig};
use crate::webhook::{Webhook, WebhookConfig};
use crate::{idempotency_key, payload, Notifier, NotifierStats};

/// How a notifier delivers, whatever its channel: filters, grouping, rate limit, retries.
/// These keys sit in the notifier's table next to `kind` and the channel's own keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Names the notifier's outbox rows, logs and metrics; letters, digits, `-`, `_`, `.`.
    /// Default: `{kind}-{index}` (its position in `[[notifiers]]`), so give one if you reorder
    /// the list while notifications are pending.
    pub id: Option<String>,
    /// Only alerts of these streams (`*` globs); empty: all.
    pub streams: Vec<String>,
    /// Only alerts of these kinds (`*` globs, e.g. `video.*`); empty: all.
    pub kinds: Vec<String>,
    /// Only alerts at least this severe (`info` < `warning` < `minor` < `major` < `critical`).
    pub min_severity: Option<Severity>,
    /// Also send `updated` transitions (severity or details changed while raised), with state
    /// `raised`. Off by default: receivers usually want one message per raise and per clear.
    pub send_updates: bool,
    /// Group events: the first pending event opens a window this long; everything queued before
    /// it closes goes out as one message. `0` (default) sends each event alone, at once.
    pub group_window_s: f64,
    /// At most this many events in one grouped message.
    pub group_max: usize,
    /// At most this many messages a minute, evenly spaced (`60 / rate` seconds apart). Events
    /// over the rate wait in the outbox; none is dropped. `0` (default): no limit.
    pub rate_limit_per_min: u32,
    /// Timeout of one attempt (HTTP request, or the command's run), seconds.
    pub timeout_s: f64,
    /// Attempts per message, the first included, before giving up on it. Default: no limit for
    /// HTTP channels (bounded by `max_age_s`), 3 for a command.
    pub max_attempts: Option<u32>,
    /// A message still failing this long after it was queued is given up on (default 24 h).
    pub max_age_s: f64,
    /// Wait before the first retry, seconds; doubles on each further retry, with jitter.
    pub backoff_initial_s: f64,
    /// Longest wait between retries, seconds.
    pub backoff_max_s: f64,
}

/// The keys of [`DeliveryConfig`], to split a notifier's table between it and its channel.
pub const DELIVERY_KEYS: &[&str] = &[
    "id",
    "streams",
    "kinds",
    "min_severity",
    "send_updates",
    "group_window_s",
    "group_max",
    "rate_limit_per_min",
    "timeout_s",
    "max_attempts",
    "max_age_s",
    "backoff_initial_s",
    "backoff_max_s",
];

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            id: None,
            streams: Vec::new(),
            kinds: Vec::new(),
            min_severity: None,
            send_updates: false,
            group_window_s: 0.0,
            group_max: 100,
            rate_limit_per_min: 0,
            timeout_s: 10.0,
            max_attempts: None,
            max_age_s: 86_400.0,
            backoff_initial_s: 1.0,
            backoff_max_s: 60.0,
        }
    }
}

/// `s` seconds as a Duration, or `fallback` where `s` is not a usable duration.
pub(crate) fn secs(s: f64, fallback: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or_else(|_| Duration::from_secs_f64(fallback))
}

impl DeliveryConfig {
    fn validate(&self, path: &str, errors: &mut Vec<String>) {
        if let Some(id) = &self.id {
            let ok = !id.is_empty()
                && id.len() <= 64
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !ok {
                errors.push(format!(
                    "{path}.id: use 1 to 64 letters, digits, '-', '_', '.' (got {id:?})"
                ));
            }
        }
        let seconds = |name: &str, v: f64, zero_ok: bool, errors: &mut Vec<String>| {
            if !(v.is_finite() && (v > 0.0 || (zero_ok && v == 0.0))) {
                let what = if zero_ok { "0 or more" } else { "positive" };
                errors.push(format!(
                    "{path}.{name}: must be a {what} number of seconds, got {v}"
                ));
            }
        };
        seconds("timeout_s", self.timeout_s, false, errors);
        seconds("max_age_s", self.max_age_s, false, errors);
        seconds("backoff_initial_s", self.backoff_initial_s, false, errors);
        seconds("backoff_max_s", self.backoff_max_s, false, errors);
        seconds("group_window_s", self.group_window_s, true, errors);
        if self.group_max == 0 {
            errors.push(format!("{path}.group_max: must be at least 1"));
        }
        if self.max_attempts == Some(0) {
            errors.push(format!("{path}.max_attempts: must be at least 1"));
        }
        for (name, list) in [("streams", &self.streams), ("kinds", &self.kinds)] {
            if list.iter().any(|p| p.is_empty()) {
                errors.push(format!("{path}.{name}: patterns must not be empty"));
            }
        }
    }

    /// The wait after failed attempt number `attempt` (1-based), before jitter.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let initial = self.backoff_initial_s.max(0.0);
        let s =
            (initial * 2f64.powi(attempt.saturating_sub(1).min(62) as i32)).min(self.backoff_max_s);
        secs(s, 1.0)
    }
}

/// The channel a notifier delivers through, with its own settings.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ChannelConfig {
    Webhook(WebhookConfig),
    Slack(SlackConfig),
    #[serde(rename = "pagerduty")]
    PagerDuty(PagerDutyConfig),
    Command(CommandConfig),
}

impl ChannelConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            ChannelConfig::Webhook(_) => "webhook",
            ChannelConfig::Slack(_) => "slack",
            ChannelConfig::PagerDuty(_) => "pagerduty",
            ChannelConfig::Command(_) => "command",
        }
    }
}

/// One `[[notifiers]]` entry: a channel and how to deliver through it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NotifierConfig {
    #[serde(flatten)]
    pub delivery: DeliveryConfig,
    #[serde(flatten)]
    pub channel: ChannelConfig,
}

/// Deserialize `value`, pushing the first problem with its path under `path`.
fn section<T: DeserializeOwned>(value: Value, path: &str, errors: &mut Vec<String>) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let at = if inner == "." || inner.is_empty() {
                path.to_string()
            } else {
                format!("{path}.{inner}")
            };
            errors.push(format!("{at}: {}", e.into_inner()));
            None
        }
    }
}

impl NotifierConfig {
    /// Parse and check one notifier's table (`kind` and the rest), given as JSON. `path` is
    /// where it sits (`notifiers[0]`), `index` its position (for the default id). Secrets named
    /// by `*_env` are read from the environment here. Pushes every problem found onto `errors`.
    pub fn parse(
        value: Value,
        path: &str,
        index: usize,
        errors: &mut Vec<String>,
    ) -> Option<NotifierConfig> {
        const KINDS: &str = "\"webhook\", \"slack\", \"pagerduty\" or \"command\"";
        let Value::Object(mut table) = value else {
            errors.push(format!("{path}: must be a table"));
            return None;
        };
        let kind = match table.remove("kind") {
            Some(Value::String(k)) => k,
            Some(_) => {
                errors.push(format!("{path}.kind: must be a string"));
                return None;
            }
            None => {
                errors.push(format!("{path}.kind: missing (expected {KINDS})"));
                return None;
            }
        };
        let (common, own): (
            serde_json::Map<String, Value>,
            serde_json::Map<String, Value>,
        ) = table
            .into_iter()
            .partition(|(k, _)| DELIVERY_KEYS.contains(&k.as_str()));
        let before = errors.len();
        let delivery: Option<DeliveryConfig> = section(Value::Object(common), path, errors);
        let own = Value::Object(own);
        let channel = match kind.as_str() {
            "webhook" => section(own, path, errors).map(ChannelConfig::Webhook),
            "slack" => section(own, path, errors).map(ChannelConfig::Slack),
            "pagerduty" => section(own, path, errors).map(ChannelConfig::PagerDuty),
            "command" => section(own, path, errors).map(ChannelConfig::Command),
            other => {
                errors.push(format!(
                    "{path}.kind: unknown notifier {other:?} (expected {KINDS})"
                ));
                None
            }
        };
        let (mut delivery, mut channel) = (delivery?, channel?);
        delivery.validate(path, errors);
        match &mut channel {
            ChannelConfig::Webhook(c) => c.prepare(path, errors),
            ChannelConfig::Slack(c) => c.prepare(path, errors),
            ChannelConfig::PagerDuty(c) => c.prepare(path, errors),
            ChannelConfig::Command(c) => {
                c.prepare(path, errors);
                // A corrective action acts on one alert: grouping would hide which.
                if delivery.group_window_s > 0.0 {
                    errors.push(format!(
                        "{path}.group_window_s: a command runs once per event; grouping is \
                         for webhook, slack and pagerduty"
                    ));
                }
                delivery.max_attempts.get_or_insert(3);
            }
        }
        delivery
            .id
            .get_or_insert_with(|| format!("{}-{index}", channel.kind()));
        (errors.len() == before).then_some(NotifierConfig { delivery, channel })
    }

    /// The notifier's id (its outbox rows' name).
    pub fn id(&self) -> &str {
        self.delivery.id.as_deref().unwrap_or(self.channel.kind())
    }
}

enum Channel {
    Webhook(Webhook),
    Slack(Slack),
    PagerDuty(PagerDuty),
    Command(Command),
}

impl Channel {
    async fn send(&self, b: &Batch<'_>) -> Sent {
        match self {
            Channel::Webhook(c) => c.send(b).await,
            Channel::Slack(c) => c.send(b).await,
            Channel::PagerDuty(c) => c.send(b).await,
            Channel::Command(c) => c.send(b).await,
        }
    }
}

/// Counters and drain signalling shared by a notifier handle and its delivery task.
#[derive(Default)]
struct Shared {
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    pending: AtomicU64,
    /// Cluster: the task's last look found pending rows that it could not claim (another node
    /// holds the notifier).
    others_hold: AtomicBool,
    /// Looks at the outbox the task has finished, so that `flush` can wait for a fresh one.
    looks: AtomicU64,
    idle_lock: Mutex<()>,
    idle_cv: Condvar,
}

impl Shared {
    /// `n` pending events were delivered or given up on.
    fn finish(&self, n: u64, delivered: bool) {
        let counter = if delivered {
            &self.delivered
        } else {
            &self.failed
        };
        counter.fetch_add(n, Ordering::SeqCst);
        let before = self
            .pending
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |p| {
                Some(p.saturating_sub(n))
            })
            .unwrap_or(0);
        if before <= n {
            self.wake_flushers();
        }
    }

    /// A cluster task looked: it claimed `held` rows, or (none) saw `backlog` rows pending in
    /// the whole cluster's outbox, which another node holds when there are any.
    fn looked(&self, held: usize, backlog: u64) {
        if held > 0 {
            // At least what it holds: rows another node queued are not in the count yet.
            self.pending.fetch_max(held as u64, Ordering::SeqCst);
            self.others_hold.store(false, Ordering::SeqCst);
        } else {
            self.pending.store(backlog, Ordering::SeqCst);
            self.others_hold.store(backlog > 0, Ordering::SeqCst);
        }
        self.looks.fetch_add(1, Ordering::SeqCst);
        self.wake_flushers();
    }

    fn wake_flushers(&self) {
        let _guard = self.idle_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.idle_cv.notify_all();
    }
}

/// The default [`Claim::Cluster`] TTL: a claim not renewed for this long is taken by another
/// node. Three times the default `timeout_s` (10 s), so a message being sent outlives
/// renewals that fail for a while; and the longest a dead node's rows wait (plus `poll`).
pub const CLAIM_TTL: Duration = Duration::from_secs(30);

/// How often a delivery task looks at the outbox with nothing waking it: in a standalone node
/// a safety net only; in a cluster, how soon a node notices rows that another node queued and
/// left (the default [`Claim::Cluster`] `poll`).
pub const POLL: Duration = Duration::from_secs(5);

/// Where a notifier's delivery task takes its rows from: see the module doc.
// One is made per notifier at start and moved into its task: its size does not matter, and a
// box would only make it clumsier to write.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Claim {
    /// A standalone node: every pending row of the notifier is this process's to deliver.
    Local,
    /// One node of a cluster whose nodes share the outbox in PostgreSQL: rows are claimed
    /// with [`Coordinator::outbox_claim`], so each is delivered by one node, and by whichever
    /// is alive. The coordinator must be on the same database as the notifier's store.
    Cluster {
        coordinator: Coordinator,
        /// This node's name in the cluster (whose claims are whose); the same name after a
        /// restart takes its earlier claims back at once.
        node: String,
        /// How long a claim lives without renewal ([`CLAIM_TTL`] by default): how long the
        /// rows of a dead node wait. Must be longer than the notifier's `timeout_s`.
        ttl: Duration,
        /// How often an idle task looks for rows it was not woken for ([`POLL`] by default).
        poll: Duration,
    },
}

impl Claim {
    /// Cluster delivery as node `node`, with the default TTL and poll.
    pub fn cluster(coordinator: Coordinator, node: impl Into<String>) -> Claim {
        Claim::Cluster {
            coordinator,
            node: node.into(),
            ttl: CLAIM_TTL,
            poll: POLL,
        }
    }

    /// Refuse settings under which claims would fail or run out under a live node.
    fn check(&self, id: &str, timeout: Duration) -> Result<(), StoreError> {
        let Claim::Cluster {
            node, ttl, poll, ..
        } = self
        else {
            return Ok(());
        };
        let problem = if node.is_empty() {
            "the cluster node name is empty".to_string()
        } else if *ttl <= timeout || *ttl > MAX_TTL {
            format!(
                "the claim TTL ({:.3} s) must be longer than timeout_s ({:.3} s), so that no \
                 other node takes a message still being sent, and at most {} s",
                ttl.as_secs_f64(),
                timeout.as_secs_f64(),
                MAX_TTL.as_secs()
            )
        } else if poll.is_zero() {
            "the poll interval must be more than 0".to_string()
        } else {
            return Ok(());
        };
        Err(StoreError::Invalid(format!("notifier {id}: {problem}")))
    }
}

/// A running notifier: events go to the store's outbox, a task on the runtime delivers them.
pub struct OutboxNotifier {
    name: String,
    id: String,
    filter: Filter,
    send_updates: bool,
    /// Delivers as a cluster node ([`Claim::Cluster`]).
    cluster: bool,
    store: Arc<dyn Store>,
    wake: Arc<Notify>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for OutboxNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxNotifier")
            .field("name", &self.name)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl OutboxNotifier {
    /// Start the notifier's delivery task on `rt`, as a standalone node ([`Claim::Local`]); it
    /// begins with the rows left pending by an earlier run. `cfg` comes from
    /// [`NotifierConfig::parse`] (an invalid one is not refused here: its deliveries fail).
    pub fn spawn(
        cfg: NotifierConfig,
        store: Arc<dyn Store>,
        rt: &tokio::runtime::Handle,
    ) -> Result<OutboxNotifier, StoreError> {
        OutboxNotifier::spawn_with(cfg, store, Claim::Local, rt)
    }

    /// Start the notifier's delivery task on `rt`, taking its rows as `claim` says. In a
    /// cluster, `store` is the shared PostgreSQL store, and every node starts the same
    /// notifiers (same `id`). Refused ([`StoreError::Invalid`]) when the claim's settings are
    /// unusable (see [`Claim::Cluster`]).
    pub fn spawn_with(
        cfg: NotifierConfig,
        store: Arc<dyn Store>,
        claim: Claim,
        rt: &tokio::runtime::Handle,
    ) -> Result<OutboxNotifier, StoreError> {
        let id = cfg.id().to_string();
        let d = cfg.delivery.clone();
        let timeout = secs(d.timeout_s, 10.0);
        claim.check(&id, timeout)?;
        let cluster = matches!(claim, Claim::Cluster { .. });
        let channel = match cfg.channel {
            ChannelConfig::Webhook(c) => Channel::Webhook(Webhook::new(c, timeout)),
            ChannelConfig::Slack(c) => Channel::Slack(Slack::new(c, timeout)),
            ChannelConfig::PagerDuty(c) => {
                Channel::PagerDuty(PagerDuty::new(c, timeout, store.outbox_open_groups(&id)?))
            }
            ChannelConfig::Command(c) => Channel::Command(Command::new(c, timeout)),
        };
        let target = match &channel {
            Channel::Webhook(c) => c.target(),
            Channel::Slack(c) => c.target(),
            Channel::PagerDuty(c) => c.target(),
            Channel::Command(c) => c.target(),
        };
        let name = format!("{id} ({target})");
        let counts = store.outbox_counts(&id)?;
        let shared = Arc::new(Shared::default());
        shared.pending.store(counts.pending, Ordering::SeqCst);
        if counts.pending > 0 {
            tracing::info!(notifier = %name, pending = counts.pending, "delivering notifications left pending");
        }
        let notifier = OutboxNotifier {
            name: name.clone(),
            id: id.clone(),
            filter: Filter {
                streams: d.streams.clone(),
                kinds: d.kinds.clone(),
                min_severity: d.min_severity,
            },
            send_updates: d.send_updates,
            cluster,
            store: store.clone(),
            wake: Arc::new(Notify::new()),
            shared: shared.clone(),
        };
        let poll = match &claim {
            Claim::Local => POLL,
            Claim::Cluster { poll, .. } => *poll,
        };
        let task = Task {
            name,
            id,
            cfg: d,
            channel,
            store,
            claim,
            poll,
            wake: notifier.wake.clone(),
            shared,
        };
        rt.spawn(task.run());
        Ok(notifier)
    }

    /// The notifier's id: its outbox rows' and metrics' name.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Events queued or being delivered. Standalone: this notifier's rows not yet delivered
    /// or given up on. In a cluster, the nodes share the outbox, so it is the notifier's
    /// pending rows in the whole cluster as this node last saw them: counted from the outbox
    /// whenever its task finds nothing to claim (idle, or another node delivering), plus what
    /// this node queued since, less what it finished.
    pub fn pending(&self) -> u64 {
        self.shared.pending.load(Ordering::SeqCst)
    }
}

impl Notifier for OutboxNotifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn id(&self) -> &str {
        &self.id
    }

    fn outbox_entry(&self, ev: &AlertEvent) -> Option<OutboxEntry> {
        let wanted = match ev.transition {
            Transition::Updated => self.send_updates && self.filter.takes(&ev.alert),
            Transition::Raised => self.filter.takes(&ev.alert),
            // A clear goes exactly where its raise (or an update) went.
            Transition::Cleared => match self.store.outbox_has_alert(&self.id, &ev.alert.id) {
                Ok(told) => told,
                Err(e) => {
                    tracing::error!(notifier = %self.name, alert_id = %ev.alert.id, "reading the outbox: {e}");
                    true
                }
            },
        };
        if !wanted {
            return None;
        }
        let key = idempotency_key(ev);
        let mut body = payload(ev);
        body["idempotency_key"] = Value::String(key.clone());
        Some(OutboxEntry {
            notifier: self.id.clone(),
            alert_id: ev.alert.id.clone(),
            state: ev.transition.as_str().to_string(),
            key,
            payload: body,
            created_at: Utc::now(),
        })
    }

    fn queued(&self, n: u64) {
        if n > 0 {
            self.shared.pending.fetch_add(n, Ordering::SeqCst);
            self.wake.notify_one();
        }
    }

    fn notify(&self, ev: &AlertEvent) {
        let Some(entry) = self.outbox_entry(ev) else {
            return;
        };
        match self.store.outbox_add(&entry) {
            Ok(Some(_)) => self.queued(1),
            Ok(None) => {} // a replay of an event already queued
            Err(e) => {
                self.shared.dropped.fetch_add(1, Ordering::SeqCst);
                tracing::error!(
                    notifier = %self.name, alert_id = %ev.alert.id,
                    "cannot queue the notification in the outbox, not sent: {e}"
                );
            }
        }
    }

    /// Standalone: until every row of the notifier is delivered or given up on. In a cluster,
    /// until this node has nothing left to deliver: no row pending, or the rows pending are
    /// held by another node (a fresh look, which this asks the task for, found them claimed),
    /// which delivers them. Rows that nobody holds are this node's to deliver while it runs;
    /// once it is gone, other nodes take them (after the TTL for rows it held).
    fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let asked = self.shared.looks.load(Ordering::SeqCst);
        if self.cluster {
            // Look now rather than at the next poll: another node may have delivered.
            self.wake.notify_one();
        }
        let others_deliver = || {
            self.cluster
                && self.shared.looks.load(Ordering::SeqCst) > asked
                && self.shared.others_hold.load(Ordering::SeqCst)
        };
        let mut guard = self
            .shared
            .idle_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        while self.pending() > 0 && !others_deliver() {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            // Bounded waits: a wake-up between the check and the wait is not lost for long.
            let wait = (deadline - now).min(Duration::from_millis(100));
            guard = match self.shared.idle_cv.wait_timeout(guard, wait) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        true
    }

    fn stats(&self) -> NotifierStats {
        NotifierStats {
            delivered: self.shared.delivered.load(Ordering::SeqCst),
            failed: self.shared.failed.load(Ordering::SeqCst),
            dropped: self.shared.dropped.load(Ordering::SeqCst),
            pending: self.pending(),
        }
    }
}

/// At most `per_min` messages a minute, evenly spaced: each message waits until `60 / per_min`
/// seconds after the previous one. No bursts: a receiver's limit (Slack: about one a second) is
/// usually a spacing.
struct RateLimit {
    spacing: Option<Duration>,
    last: Option<tokio::time::Instant>,
}

impl RateLimit {
    fn new(per_min: u32) -> Self {
        RateLimit {
            spacing: (per_min > 0).then(|| Duration::from_secs_f64(60.0 / f64::from(per_min))),
            last: None,
        }
    }

    /// When the next message may go (`None`: now).
    fn next_slot(&self) -> Option<tokio::time::Instant> {
        Some(self.last? + self.spacing?)
    }

    /// A message goes now.
    fn take(&mut self) {
        self.last = Some(tokio::time::Instant::now());
    }
}

/// The delivery task of one notifier.
struct Task {
    name: String,
    id: String,
    cfg: DeliveryConfig,
    channel: Channel,
    store: Arc<dyn Store>,
    claim: Claim,
    /// How long it waits for a wake-up when it found nothing to take.
    poll: Duration,
    wake: Arc<Notify>,
    shared: Arc<Shared>,
}

/// How long past a group window's close the batch is formed (see `Task::run`).
const COMMIT_MARGIN: chrono::TimeDelta = chrono::TimeDelta::milliseconds(100);

impl Task {
    /// Run `f` on the store off the async workers (SQLite and PostgreSQL calls block).
    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .unwrap_or_else(|e| Err(StoreError::Database(format!("store task failed: {e}"))))
    }

    /// In a cluster, what a claim needs (the coordinator, this node's name, the TTL), owned, to
    /// move into a blocking call.
    fn claimer(&self) -> Option<(Coordinator, String, Duration)> {
        match &self.claim {
            Claim::Local => None,
            Claim::Cluster {
                coordinator,
                node,
                ttl,
                ..
            } => Some((coordinator.clone(), node.clone(), *ttl)),
        }
    }

    /// The oldest rows this node may deliver now, at most `group_max`: the pending rows, or in
    /// a cluster the rows it claims (which renews its claim on those it held).
    async fn take(&self) -> Result<Vec<OutboxRow>, StoreError> {
        let (id, limit) = (self.id.clone(), self.cfg.group_max.max(1));
        let Some((c, node, ttl)) = self.claimer() else {
            return self.db(move |s| s.outbox_pending(&id, limit)).await;
        };
        let (rows, backlog) = self
            .db(move |s| {
                let rows = c.outbox_claim(&id, &node, limit, ttl)?;
                // Nothing to claim: none pending, or another node holds them. The count says
                // which, and keeps `pending` true to the shared outbox.
                let backlog = if rows.is_empty() {
                    s.outbox_counts(&id)?.pending
                } else {
                    0
                };
                Ok((rows, backlog))
            })
            .await?;
        self.shared.looked(rows.len(), backlog);
        Ok(rows)
    }

    /// How long to sleep before looking again, for a wait of `d` while holding rows: in a
    /// cluster, short enough that looking again renews the claim before it runs out.
    fn nap(&self, d: Duration) -> Duration {
        match &self.claim {
            Claim::Local => d,
            Claim::Cluster { ttl, .. } => d.min(*ttl / 3),
        }
    }

    /// What the channel must know before sending that other nodes may have changed: in a
    /// cluster, PagerDuty's open groups (another node may have raised or resolved one).
    async fn prepare(&self) -> Result<(), StoreError> {
        if let (Channel::PagerDuty(pd), Claim::Cluster { .. }) = (&self.channel, &self.claim) {
            let id = self.id.clone();
            pd.reload(self.db(move |s| s.outbox_open_groups(&id)).await?);
        }
        Ok(())
    }

    /// Send `batch`; in a cluster, renewing the claim on its rows while it is on its way (a
    /// slow receiver, or several requests for one batch, may take longer than the TTL).
    async fn send(&self, batch: &Batch<'_>) -> Sent {
        let Claim::Cluster { ttl, .. } = &self.claim else {
            return self.channel.send(batch).await;
        };
        let every = *ttl / 3;
        let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let send = self.channel.send(batch);
        tokio::pin!(send);
        loop {
            tokio::select! {
                sent = &mut send => return sent,
                _ = renew.tick() => self.renew(batch),
            }
        }
    }

    /// Claim `batch`'s rows again (they are the notifier's oldest pending rows), without
    /// waiting for the answer: the send goes on meanwhile.
    fn renew(&self, batch: &Batch<'_>) {
        let Some((c, node, ttl)) = self.claimer() else {
            return;
        };
        let (id, name, key, n) = (
            self.id.clone(),
            self.name.clone(),
            batch.key.clone(),
            batch.rows.len(),
        );
        tokio::task::spawn_blocking(move || match c.outbox_claim(&id, &node, n, ttl) {
            Ok(rows) if rows.is_empty() => tracing::warn!(
                notifier = %name, %key,
                "the claim on a notification being sent ran out and another node took it: it \
                 may be delivered twice"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(notifier = %name, %key, "renewing the claim: {e}"),
        });
    }

    async fn run(self) {
        let window = secs(self.cfg.group_window_s, 0.0);
        let max_age = secs(self.cfg.max_age_s, 86_400.0);
        let mut rate = RateLimit::new(self.cfg.rate_limit_per_min);
        // Consecutive failed attempts of the batch at the head, for the backoff.
        let mut failures = 0u32;
        // The backoff: not before this instant, for the batch whose first row has this id.
        let mut retry: Option<(i64, tokio::time::Instant)> = None;
        loop {
            let rows = match self.take().await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!(notifier = %self.name, "reading the outbox: {e}");
                    tokio::time::sleep(self.poll).await;
                    continue;
                }
            };
            let Some(first) = rows.first() else {
                let _ = tokio::time::timeout(self.poll, self.wake.notified()).await;
                continue;
            };
            // The group window closes `window` after the first event was queued. Wait a little
            // past it, so that a row stamped just before the close but committed just after is
            // in the batch: the batch must be what a retry after a restart would form again.
            let close = first.entry.created_at + window;
            let open_for = (close + COMMIT_MARGIN - Utc::now())
                .to_std()
                .unwrap_or_default();
            if !window.is_zero() && !open_for.is_zero() {
                tokio::time::sleep(self.nap(open_for)).await;
                continue;
            }
            // The backoff and the rate limit: wait, then take the rows again (the same batch;
            // in a cluster, that renews the claim on it).
            let now = tokio::time::Instant::now();
            let backoff = retry.filter(|(head, _)| *head == first.id).map(|r| r.1);
            if let Some(at) = backoff.max(rate.next_slot()).filter(|at| *at > now) {
                tokio::time::sleep(self.nap(at - now)).await;
                continue;
            }
            retry = None;
            if let Err(e) = self.prepare().await {
                tracing::error!(notifier = %self.name, "reading the outbox: {e}");
                tokio::time::sleep(self.poll).await;
                continue;
            }
            let n = if window.is_zero() {
                1
            } else {
                rows.iter()
                    .take_while(|r| r.entry.created_at < close)
                    .count()
                    .max(1)
            };
            let batch = Batch::new(&rows[..n]);
            rate.take();
            let sent = self.send(&batch).await;
            let ids: Vec<i64> = batch.rows.iter().map(|r| r.id).collect();
            let count = ids.len() as u64;
            let (outcome, detail, wait) = match sent {
                Sent::Delivered { detail, group_key } => {
                    tracing::debug!(notifier = %self.name, key = %batch.key, count, "delivered");
                    failures = 0;
                    (AttemptOutcome::Delivered { group_key }, detail, None)
                }
                Sent::Rejected { detail } => {
                    tracing::warn!(
                        notifier = %self.name, key = %batch.key, count, %detail,
                        "the receiver rejected the notification; not retrying"
                    );
                    failures = 0;
                    (AttemptOutcome::Failed, detail, None)
                }
                Sent::Retry { detail, after } => {
                    failures += 1;
                    let attempts = first.attempts + 1;
                    let age = (Utc::now() - first.entry.created_at)
                        .to_std()
                        .unwrap_or_default();
                    let out_of_attempts = self.cfg.max_attempts.is_some_and(|m| attempts >= m);
                    if out_of_attempts || age >= max_age {
                        let why = if out_of_attempts {
                            format!("after {attempts} attempts")
                        } else {
                            format!("{:.0} s after it was queued", age.as_secs_f64())
                        };
                        tracing::warn!(
                            notifier = %self.name, key = %batch.key, count, %detail,
                            "giving up on the notification {why}"
                        );
                        failures = 0;
                        (AttemptOutcome::Failed, detail, None)
                    } else {
                        let cap = secs(self.cfg.backoff_max_s, 60.0);
                        // Equal jitter: half the backoff, plus up to the other half at random,
                        // so notifiers retrying together spread out.
                        let b = self.cfg.backoff(failures);
                        let mut wait = b / 2 + b.mul_f64(fastrand::f64() / 2.0);
                        if let Some(after) = after {
                            wait = wait.max(after).min(cap);
                        }
                        // Say it on the 1st, 2nd, 4th, 8th... failure: a receiver down for an
                        // hour does not flood the log.
                        if failures.is_power_of_two() {
                            tracing::warn!(
                                notifier = %self.name, key = %batch.key, attempts, %detail,
                                wait_s = wait.as_secs_f64(), "notification not delivered; will retry"
                            );
                        }
                        (AttemptOutcome::Retry, detail, Some(wait))
                    }
                }
            };
            let finished = match &outcome {
                AttemptOutcome::Delivered { .. } => Some(true),
                AttemptOutcome::Failed => Some(false),
                AttemptOutcome::Retry => None,
            };
            let notifier = self.id.clone();
            let recorded = self
                .db(move |s| s.outbox_attempt(&ids, &notifier, &outcome, &detail, Utc::now()))
                .await;
            match recorded {
                Ok(()) => {
                    if let Some(delivered) = finished {
                        self.shared.finish(count, delivered);
                    }
                }
                Err(e) => {
                    // The rows stay pending and go again: at least once.
                    tracing::error!(notifier = %self.name, "recording a delivery attempt: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            if let Some(wait) = wait {
                retry = Some((first.id, tokio::time::Instant::now() + wait));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<NotifierConfig, Vec<String>> {
        let mut errors = Vec::new();
        match NotifierConfig::parse(v, "notifiers[0]", 0, &mut errors) {
            Some(c) if errors.is_empty() => Ok(c),
            _ => Err(errors),
        }
    }

    #[test]
    fn defaults_and_the_table_split() {
        let c = parse(json!({"kind": "webhook", "url": "https://h.example/x",
                             "kinds": ["video.*"], "min_severity": "major"}))
        .unwrap();
        assert_eq!(c.id(), "webhook-0");
        assert_eq!(c.delivery.kinds, ["video.*"]);
        assert_eq!(c.delivery.min_severity, Some(Severity::Major));
        assert_eq!(c.delivery.max_attempts, None);
        assert_eq!(c.delivery.max_age_s, 86_400.0);
        let cmd =
            parse(json!({"kind": "command", "command": ["/bin/true"], "id": "switch"})).unwrap();
        assert_eq!((cmd.id(), cmd.delivery.max_attempts), ("switch", Some(3)));
    }

    #[test]
    fn every_problem_with_its_path() {
        let e = parse(json!({"kind": "webhook", "url": "ftp://x", "timeout_s": 0,
                             "group_max": 0, "id": "a b"}))
        .unwrap_err();
        let all = e.join("\n");
        for needle in [
            "notifiers[0].url: unsupported scheme \"ftp\"",
            "notifiers[0].timeout_s: must be a positive number",
            "notifiers[0].group_max: must be at least 1",
            "notifiers[0].id: use 1 to 64",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in\n{all}");
        }
        let e = parse(json!({"kind": "webhook", "uri": "x"})).unwrap_err();
        assert!(e[0].contains("unknown field `uri`"), "{e:?}");
        let e = parse(json!({"kind": "pager"})).unwrap_err();
        assert!(e[0].starts_with("notifiers[0].kind: unknown notifier \"pager\""));
        let e =
            parse(json!({"kind": "command", "command": ["x"], "group_window_s": 5})).unwrap_err();
        assert!(e[0].contains("runs once per event"), "{e:?}");
        let e = parse(
            json!({"kind": "slack", "url": "https://hooks.slack.com/services/T/B/SECRET",
                             "min_severity": "loud"}),
        )
        .unwrap_err();
        assert!(
            e[0].starts_with("notifiers[0].min_severity: unknown variant"),
            "{e:?}"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let cfg = DeliveryConfig {
            backoff_initial_s: 0.5,
            backoff_max_s: 3.0,
            ..Default::default()
        };
        let waits: Vec<f64> = (1..=5).map(|a| cfg.backoff(a).as_secs_f64()).collect();
        assert_eq!(waits, vec![0.5, 1.0, 2.0, 3.0, 3.0]);
        assert_eq!(cfg.backoff(u32::MAX).as_secs_f64(), 3.0);
    }
}
