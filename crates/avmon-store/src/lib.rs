//! avmon's persistence: streams, alerts and periodic metrics behind one [`Store`] trait.
//!
//! # Contract
//!
//! - The API is **synchronous**. The service calls it from one dedicated writer thread (and the
//!   HTTP API from blocking tasks), never from the decode threads, so a slow disk can delay
//!   persistence but never detection.
//! - [`open`] picks the backend from the URL scheme, as atuin does:
//!   `sqlite://relative/path.db` (relative to the working directory), `sqlite:///abs/path.db`,
//!   `sqlite::memory:` (private to the store, gone when it is dropped), a plain file path
//!   (`avmon.db`, `/var/lib/avmon/avmon.db`: SQLite), and
//!   `postgres://user:password@host:port/dbname?…` (or `postgresql://`, with libpq's URI keys)
//!   for PostgreSQL, which several avmon nodes can share. Anything else is refused with an
//!   error naming the scheme. A database that cannot be reached is an error within seconds.
//! - Each backend owns its schema and **migrates it at open**: an ordered list of migrations,
//!   the applied count kept in the database (`PRAGMA user_version` for SQLite, the
//!   `avmon_schema` table for PostgreSQL, whose migrations are serialised across nodes that
//!   start at once). A later version appends migrations; it never edits released ones. A
//!   database written by a *newer* avmon is refused rather than guessed at.
//! - Alerts are upserted by id from [`AlertEvent`]s: a raise inserts, an update or clear rewrites
//!   the mutable fields. A cleared alert is final: a late raise or update for it is ignored, so
//!   replaying events is harmless.
//! - Removing a stream only marks it removed; its alerts and metrics stay for analytics.
//! - Wall times are truncated to **milliseconds** on the way in (see [`sqlite`] for the column
//!   encoding).
//! - The **notification outbox** holds one row per (notifier, idempotency key): a notification
//!   is stored before delivery is attempted, so it survives a crash, and is marked delivered or
//!   failed after. Adding a key twice for the same notifier keeps the first row (replays are
//!   harmless). Every attempt is logged with its outcome and detail (HTTP status, a command's
//!   exit status and output).
//!
//! - Metrics come from thousands of streams: [`Store::record_metrics_batch`] writes a period's
//!   samples in one transaction (SQLite) or a few multi-row statements (PostgreSQL).
//!
//! - **Retention** ([`retention`]): raw metrics are folded into 1-minute, then 1-hour
//!   aggregates as they age, and old aggregates, cleared alerts and delivery attempts are
//!   deleted, in small transactions, by the primitives at the end of [`Store`].
//!
//! - Several nodes sharing one PostgreSQL database coordinate through [`cluster::Coordinator`]
//!   (leases with a fencing epoch, node registry, outbox claims, LISTEN/NOTIFY); SQLite has no
//!   cluster.
//!
//! Every backend passes the same behavioural suite (`tests/suite.rs`).

use std::collections::BTreeMap;

use avmon_core::{
    Ack, Alert, AlertEvent, AlertRecord, AlertState, MaintenanceWindow, Mute, Severity, StreamId,
    Suppressed, WallTime,
};

pub mod cluster;
mod common;
pub mod postgres;
pub mod retention;
pub mod spill;
pub mod sqlite;

pub use cluster::Coordinator;
pub use postgres::PostgresStore;
pub use retention::{Pruned, Retention};
pub use sqlite::SqliteStore;

/// A stream as configured, persisted so that streams added over the API survive a restart.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamRecord {
    pub id: StreamId,
    pub url: String,
    /// The stream's configuration as JSON (the same keys as a TOML `[[streams]]` table).
    pub config: serde_json::Value,
    pub created_at: WallTime,
}

/// Which alerts [`Store::alerts`] returns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AlertQuery {
    /// Only this stream's alerts.
    pub stream: Option<StreamId>,
    /// Only alerts raised *or* cleared at or after this time.
    pub since: Option<WallTime>,
    /// Only alerts raised or cleared at or before this time.
    pub until: Option<WallTime>,
    /// Only alerts still raised.
    pub active_only: bool,
    /// Only alerts of these kinds (any of them); empty: every kind.
    pub kinds: Vec<String>,
    /// Only alerts of these severities; empty: every severity.
    pub severities: Vec<Severity>,
    /// Only alerts in this state.
    pub state: Option<AlertState>,
    /// `Some(true)`: only acknowledged alerts; `Some(false)`: only unacknowledged ones.
    pub acked: Option<bool>,
    /// At most this many alerts; `0` means no limit.
    pub limit: usize,
}

/// What [`Store::ack_alert`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum AckOutcome {
    /// Acknowledged now.
    Acked(Box<AlertRecord>),
    /// It was already acknowledged: this is the first acknowledgement, kept.
    AlreadyAcked(Ack),
    /// No alert has that id.
    NotFound,
}

/// One period's metrics of one stream (`frames_decoded`, `decode_errors`, `black_ratio`, ...).
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsSample {
    pub stream_id: StreamId,
    /// Wall time at the end of the period.
    pub at: WallTime,
    /// Media time at the end of the period.
    pub media_t: f64,
    pub values: BTreeMap<String, f64>,
}

/// Which metrics [`Store::metrics_range`] returns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricsQuery {
    /// Samples at or after this time.
    pub since: Option<WallTime>,
    /// Samples at or before this time.
    pub until: Option<WallTime>,
    /// Only these values of each sample; empty: all of them.
    pub names: Vec<String>,
    /// At most this many samples, the latest; `0`: no limit.
    pub limit: usize,
}

/// A notification to put in the outbox (see [`Store::outbox_add`]).
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxEntry {
    /// The notifier's id (stable across restarts: `notifiers[i].id`).
    pub notifier: String,
    pub alert_id: String,
    /// `raised`, `updated` or `cleared`.
    pub state: String,
    /// The idempotency key, unique per notifier (`{alert_id}:{state}`).
    pub key: String,
    /// What the notifier sends for this event (its JSON payload).
    pub payload: serde_json::Value,
    pub created_at: WallTime,
}

/// Where an outbox row stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboxStatus {
    /// Not delivered yet: delivery is (still) being attempted.
    Pending,
    /// The receiver accepted it.
    Delivered,
    /// Given up on: rejected by the receiver, too many attempts, or older than the notifier's
    /// maximum age.
    Failed,
}

impl OutboxStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxStatus::Pending => "pending",
            OutboxStatus::Delivered => "delivered",
            OutboxStatus::Failed => "failed",
        }
    }
}

/// One row of the outbox.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxRow {
    /// Increasing with insertion: the delivery order within a notifier.
    pub id: i64,
    pub entry: OutboxEntry,
    pub status: OutboxStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// The last failed attempt's reason.
    pub last_error: Option<String>,
    /// The group (e.g. PagerDuty dedup key) it was delivered under.
    pub group_key: Option<String>,
}

/// The outcome of one delivery attempt of a batch of outbox rows.
#[derive(Clone, Debug, PartialEq)]
pub enum AttemptOutcome {
    /// Accepted: the rows are delivered, under `group_key` where the channel groups.
    Delivered { group_key: Option<String> },
    /// Failed for now: the rows stay pending.
    Retry,
    /// Given up: the rows are failed.
    Failed,
}

/// One delivery attempt, as logged.
#[derive(Clone, Debug, PartialEq)]
pub struct AttemptRecord {
    /// The first outbox row of the batch attempted.
    pub outbox_id: i64,
    pub notifier: String,
    pub at: WallTime,
    /// `delivered`, `retry` or `failed`.
    pub outcome: String,
    /// What happened: `{"status": 503}`, `{"error": "…"}`, or a command's
    /// `{"exit_code": 0, "stdout": "…", "stderr": "…", "timed_out": false}`.
    pub detail: serde_json::Value,
}

/// A notifier's outbox rows by status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    pub pending: u64,
    pub delivered: u64,
    pub failed: u64,
}

/// What went wrong in the store. Messages name what to fix and include their cause, so printing
/// with `{}` is enough.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store URL is malformed.
    #[error("invalid store URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// A recognised but unavailable backend, or a scheme avmon does not know.
    #[error("{0}")]
    Unsupported(String),
    /// The database could not be opened or created.
    #[error("cannot open database {path}: {reason}")]
    Open { path: String, reason: String },
    /// The database was written by a newer avmon.
    #[error(
        "database schema version {found} is newer than this avmon supports ({supported}); \
         upgrade avmon or point it at another database"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    /// Applying a migration failed; the database is left at the previous version.
    #[error("migrating the database to schema version {version} failed: {reason}")]
    Migration { version: usize, reason: String },
    /// A query failed.
    #[error("database error: {0}")]
    Database(String),
    /// The database could not write to its disk: the disk is full, or failing. A write refused
    /// so may pass once space returns ([`spill::SpillStore`] keeps it until then).
    #[error("the database cannot write to its disk: {0}")]
    Storage(String),
    /// A stored row could not be decoded (edited by hand, or a bug).
    #[error("corrupt row in {table}: {reason}")]
    Corrupt { table: &'static str, reason: String },
    /// Another node of the cluster, alive, has this node's name.
    #[error(
        "another node named {name:?} is alive at {api_addr} (last seen {seen_ago_s:.1} s ago); \
         give this node another [cluster] name"
    )]
    DuplicateNode {
        name: String,
        api_addr: String,
        seen_ago_s: f64,
    },
    /// This process is no longer the node it registered as (another instance took its name
    /// after it went silent, or it deregistered): it must stop its streams.
    #[error("node {name:?} is no longer registered as this process: {reason}")]
    NotRegistered { name: String, reason: String },
    /// A write carried a lease epoch that is no longer the stream's: another node claimed the
    /// stream since, and this node's results for it are refused.
    #[error(
        "write for stream {stream} refused: it was held at lease epoch {epoch}, {}",
        cluster::describe_current(.current)
    )]
    Fenced {
        stream: StreamId,
        epoch: i64,
        /// The stream's epoch now (`None`: it has no lease at all).
        current: Option<i64>,
    },
    /// A value passed by the caller is out of range (a TTL, a channel name, a payload).
    #[error("{0}")]
    Invalid(String),
}

/// Persistence for avmon. Implementations are internally synchronised (`&self` everywhere).
pub trait Store: Send + Sync {
    /// Insert a stream, or update its url and config. Re-adding a removed stream revives it with
    /// the new `created_at`.
    fn upsert_stream(&self, s: &StreamRecord) -> Result<(), StoreError>;

    /// Mark a stream removed (its alerts and metrics are kept). Returns whether a live stream of
    /// that id existed.
    fn remove_stream(&self, id: &StreamId) -> Result<bool, StoreError>;

    /// Streams not removed, ordered by id.
    fn streams(&self) -> Result<Vec<StreamRecord>, StoreError>;

    /// Persist one alert transition (upsert by alert id).
    fn record_alert(&self, ev: &AlertEvent) -> Result<(), StoreError>;

    /// Alerts matching `q`, newest raise first.
    fn alerts(&self, q: &AlertQuery) -> Result<Vec<Alert>, StoreError> {
        Ok(self
            .alert_records(q)?
            .into_iter()
            .map(|r| r.alert)
            .collect())
    }

    /// Alerts matching `q` with their acknowledgement and suppression, newest raise first.
    fn alert_records(&self, q: &AlertQuery) -> Result<Vec<AlertRecord>, StoreError>;

    /// One alert by id.
    fn alert(&self, id: &str) -> Result<Option<AlertRecord>, StoreError>;

    /// Record why an alert was not notified (called once, at its raise).
    fn mark_alert(&self, id: &str, why: Suppressed) -> Result<(), StoreError>;

    /// Acknowledge an alert (the first acknowledgement is kept).
    fn ack_alert(&self, id: &str, ack: &Ack) -> Result<AckOutcome, StoreError>;

    /// Every stored mute (expired ones included until removed), by stream id.
    fn mutes(&self) -> Result<Vec<Mute>, StoreError>;

    /// Mute a stream, replacing its mute if it had one.
    fn set_mute(&self, m: &Mute) -> Result<(), StoreError>;

    /// Unmute a stream. Returns whether it had a mute.
    fn remove_mute(&self, stream: &StreamId) -> Result<bool, StoreError>;

    /// Maintenance windows added over the API (the config file's are not stored), by start.
    fn windows(&self) -> Result<Vec<MaintenanceWindow>, StoreError>;

    /// Store a maintenance window.
    fn add_window(&self, w: &MaintenanceWindow) -> Result<(), StoreError>;

    /// Delete a maintenance window. Returns whether it existed.
    fn remove_window(&self, id: &str) -> Result<bool, StoreError>;

    /// Persist one metrics sample (one row per value, in one transaction). A sample without values
    /// stores nothing; two samples of a stream with the same `at` and `media_t` read back as one.
    fn record_metrics(&self, m: &MetricsSample) -> Result<(), StoreError>;

    /// Persist many metrics samples (as [`Store::record_metrics`] each, in order). Backends
    /// write them together: one transaction, few statements. On error, none or some of them
    /// are stored (never part of a sample on a backend that overrides this).
    fn record_metrics_batch(&self, samples: &[MetricsSample]) -> Result<(), StoreError> {
        samples.iter().try_for_each(|m| self.record_metrics(m))
    }

    /// A stream's metrics samples at or after `since`, oldest first.
    fn metrics(
        &self,
        stream: &StreamId,
        since: Option<WallTime>,
    ) -> Result<Vec<MetricsSample>, StoreError> {
        self.metrics_range(
            stream,
            &MetricsQuery {
                since,
                ..MetricsQuery::default()
            },
        )
    }

    /// A stream's metrics samples matching `q`, oldest first. Where retention has folded the raw
    /// samples into aggregates, each aggregate reads as one sample at its bucket's start, with
    /// the mean of each value and the largest media time (see [`retention`]).
    fn metrics_range(
        &self,
        stream: &StreamId,
        q: &MetricsQuery,
    ) -> Result<Vec<MetricsSample>, StoreError>;

    /// Delete metrics samples older than `before` (retention). Returns the number of rows deleted.
    fn prune_metrics(&self, before: WallTime) -> Result<u64, StoreError>;

    /// Put a notification in the outbox. Returns its row id, or `None` when the notifier already
    /// has a row with that key (a replay; the first row is kept).
    fn outbox_add(&self, e: &OutboxEntry) -> Result<Option<i64>, StoreError>;

    /// Whether `notifier` has any outbox row (any status) for `alert_id`.
    fn outbox_has_alert(&self, notifier: &str, alert_id: &str) -> Result<bool, StoreError>;

    /// A notifier's pending rows, oldest first, at most `limit`.
    fn outbox_pending(&self, notifier: &str, limit: usize) -> Result<Vec<OutboxRow>, StoreError>;

    /// Record one attempt at delivering the rows `ids` (a batch; `ids[0]` names it in the log):
    /// counts the attempt on each row, sets their status from `outcome` and logs `detail`, in one
    /// transaction.
    fn outbox_attempt(
        &self,
        ids: &[i64],
        notifier: &str,
        outcome: &AttemptOutcome,
        detail: &serde_json::Value,
        at: WallTime,
    ) -> Result<(), StoreError>;

    /// Every notifier with pending rows, and how many, by id.
    fn outbox_pending_by_notifier(&self) -> Result<Vec<(String, u64)>, StoreError>;

    /// A notifier's rows by status.
    fn outbox_counts(&self, notifier: &str) -> Result<OutboxCounts, StoreError>;

    /// A notifier's rows in insertion order, any status (for inspection and tests).
    fn outbox_rows(&self, notifier: &str) -> Result<Vec<OutboxRow>, StoreError>;

    /// A notifier's logged attempts, oldest first.
    fn outbox_attempts(&self, notifier: &str) -> Result<Vec<AttemptRecord>, StoreError>;

    /// The groups still open for `notifier`: `(alert_id, group_key)` of each delivered raise
    /// whose clear has not been delivered or given up on.
    fn outbox_open_groups(&self, notifier: &str) -> Result<Vec<(String, String)>, StoreError>;

    // Retention primitives: [`retention::prune`] drives them. Each is one short transaction.

    /// Every stream id with stored metrics, raw or aggregated, ordered.
    fn metrics_streams(&self) -> Result<Vec<StreamId>, StoreError>;

    /// Fold the oldest of `stream`'s metrics of resolution `from_s` (0: raw samples; 60: 1-minute
    /// aggregates) that lie before `before` into `to_s`-second aggregates, whole buckets of
    /// about `max_rows` rows (at least one bucket), and delete what was folded. Folding into a
    /// bucket that has an aggregate already adds to it. Returns the rows folded: 0 when nothing
    /// older than `before` is left.
    fn fold_metrics(
        &self,
        stream: &StreamId,
        from_s: u32,
        to_s: u32,
        before: WallTime,
        max_rows: usize,
    ) -> Result<u64, StoreError>;

    /// Delete up to `max_rows` of `stream`'s `span_s`-second aggregates whose bucket starts
    /// before `before`, oldest first. Returns how many went.
    fn delete_aggregates(
        &self,
        stream: &StreamId,
        span_s: u32,
        before: WallTime,
        max_rows: usize,
    ) -> Result<u64, StoreError>;

    /// Delete up to `max` alerts cleared before `before`, with their acknowledgements and
    /// outbox rows; an alert with a notification still pending stays. Alerts still raised are
    /// never deleted. Returns how many alerts went.
    fn delete_cleared_alerts(&self, before: WallTime, max: usize) -> Result<u64, StoreError>;

    /// Delete up to `max` logged delivery attempts made before `before`, oldest first.
    fn delete_attempts(&self, before: WallTime, max: usize) -> Result<u64, StoreError>;

    /// Delete up to `max` recorded events that ended before `before`, oldest first: a
    /// cluster's monitoring gaps (a store without a cluster records none).
    fn delete_events(&self, before: WallTime, max: usize) -> Result<u64, StoreError> {
        let _ = (before, max);
        Ok(0)
    }
}

/// Open the store `url` names, creating and migrating it as needed.
///
/// ```
/// let store = avmon_store::open("sqlite::memory:").unwrap();
/// assert!(store.streams().unwrap().is_empty());
/// ```
pub fn open(url: &str) -> Result<Box<dyn Store>, StoreError> {
    match Backend::parse(url)? {
        Backend::SqliteMemory => Ok(Box::new(SqliteStore::open_in_memory()?)),
        Backend::SqliteFile(path) => Ok(Box::new(SqliteStore::open(path)?)),
        Backend::Postgres(url) => Ok(Box::new(PostgresStore::open(url)?)),
    }
}

/// Check a store URL without opening anything: `Ok` when [`open`] would know what to do with
/// it (whether the database is there is found out at open). For config validation.
pub fn check_url(url: &str) -> Result<(), StoreError> {
    Backend::parse(url).map(|_| ())
}

/// `url` for messages: a PostgreSQL URL's password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    if is_postgres_url(url) {
        postgres::redact(url)
    } else {
        url.to_string()
    }
}

/// Whether `url` names a PostgreSQL store (one that the nodes of a cluster can share).
pub fn is_postgres_url(url: &str) -> bool {
    matches!(Backend::parse(url), Ok(Backend::Postgres(_)))
}

/// Where a store URL points.
#[derive(Debug, PartialEq)]
enum Backend<'a> {
    SqliteMemory,
    SqliteFile(&'a str),
    /// The whole URL: the driver parses the rest.
    Postgres(&'a str),
}

impl<'a> Backend<'a> {
    fn parse(url: &'a str) -> Result<Self, StoreError> {
        let invalid = |reason: &str| StoreError::InvalidUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        // A plain file path (`avmon.db`, `/var/lib/avmon/avmon.db`, `./a:b.db`) is SQLite's.
        let Some((scheme, rest)) = url
            .split_once(':')
            .filter(|(scheme, _)| !scheme.contains(['/', '.']))
        else {
            return match url {
                "" => Err(invalid(
                    "empty; expected a file path, sqlite://PATH or postgres://USER@HOST/DB",
                )),
                p if p.ends_with('/') => Err(invalid("a directory; give a database file's path")),
                p => Ok(Backend::SqliteFile(p)),
            };
        };
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => {
                // `sqlite://rel/path`, `sqlite:///abs/path` and the bare `sqlite:path` all work:
                // drop the authority marker, keep what follows as a filesystem path.
                let path = rest.strip_prefix("//").unwrap_or(rest);
                match path {
                    ":memory:" => Ok(Backend::SqliteMemory),
                    "" => Err(invalid("no database path; expected sqlite://PATH")),
                    p if p.contains('?') => Err(invalid(
                        "query parameters are not supported; give a plain path",
                    )),
                    p => Ok(Backend::SqliteFile(p)),
                }
            }
            "postgres" | "postgresql" => Ok(Backend::Postgres(url)),
            "" => Err(invalid("empty scheme; expected sqlite://PATH")),
            other => Err(StoreError::Unsupported(format!(
                "unsupported store URL scheme {other:?}; expected sqlite://PATH, sqlite::memory: \
                 or postgres://USER@HOST/DB"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_choose_the_backend() {
        assert_eq!(
            Backend::parse("sqlite::memory:").unwrap(),
            Backend::SqliteMemory
        );
        assert_eq!(
            Backend::parse("sqlite://:memory:").unwrap(),
            Backend::SqliteMemory
        );
        assert_eq!(
            Backend::parse("sqlite://data/avmon.db").unwrap(),
            Backend::SqliteFile("data/avmon.db")
        );
        assert_eq!(
            Backend::parse("sqlite:///var/lib/avmon.db").unwrap(),
            Backend::SqliteFile("/var/lib/avmon.db")
        );
        assert_eq!(
            Backend::parse("SQLITE:avmon.db").unwrap(),
            Backend::SqliteFile("avmon.db")
        );
        // A plain path is a SQLite file, colons and all.
        for path in [
            "avmon.db",
            "/var/lib/avmon/avmon.db",
            "./a:b.db",
            "data/x:y.db",
        ] {
            assert_eq!(Backend::parse(path).unwrap(), Backend::SqliteFile(path));
        }
        for url in [
            "postgres://avmon@db.example/avmon",
            "postgresql://avmon:pw@10.0.0.5:5433/avmon?connect_timeout=2",
            "POSTGRES://h/db",
        ] {
            assert_eq!(Backend::parse(url).unwrap(), Backend::Postgres(url));
        }
    }

    #[test]
    fn bad_urls_say_what_to_fix() {
        let msg = |u: &str| Backend::parse(u).unwrap_err().to_string();
        assert!(
            msg("mysql://h/db").contains("\"mysql\""),
            "{}",
            msg("mysql://h/db")
        );
        assert!(msg("").contains("empty"));
        assert!(msg("data/").contains("directory"));
        assert!(msg("sqlite://").contains("no database path"));
        assert!(msg("sqlite://a.db?mode=ro").contains("query parameters"));
        assert!(msg(":memory:").contains("empty scheme"));
    }
}
