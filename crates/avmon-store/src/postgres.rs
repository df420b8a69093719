//! The PostgreSQL backend: what the SQLite one does, in a database that many nodes share.
//!
//! # Driver and pool
//!
//! The synchronous [`postgres`] client (sfackler's wrapper of `tokio-postgres`) behind an
//! [`r2d2`] pool of at most [`POOL_SIZE`] connections: the [`Store`] trait is synchronous, and
//! its callers are a writer thread and the HTTP API's `spawn_blocking` tasks, so a blocking
//! client fits without a runtime of our own. Each connection drives its socket with a small
//! private runtime, which is fine on plain threads and in `spawn_blocking` (tested), but would
//! panic on an async task's own thread: **never call the store from async code directly**.
//! Dropping the store closes its connections; when that happens inside a runtime's context it
//! is handed to a short-lived thread, since a client cannot be dropped there either.
//!
//! A connection is checked (an empty query) when taken from the pool, so connections broken by
//! a PostgreSQL restart are replaced instead of failing the next call. Connecting gives up
//! after [`CONNECT_TIMEOUT`] unless the URL sets `connect_timeout`, and waiting for a pooled
//! connection after [`POOL_WAIT`]: a database that is away gives an error naming it within
//! seconds, never a hang or a panic. TLS is not supported yet (`sslmode=require` is refused
//! at open).
//!
//! # Schema and migrations
//!
//! The schema is in `migrations/postgres/NNNN_name.sql`, embedded in the binary, and applied in
//! order at open: each migration in its own transaction together with a row in `avmon_schema`
//! (`version`, `applied_at`), so a failed migration leaves the previous version. Every
//! migration transaction first takes a transaction-scoped advisory lock
//! (`pg_advisory_xact_lock`, key [`MIGRATION_LOCK`]), so nodes that start at once against one
//! database migrate it once, one after the other, and the later ones find it done. A database
//! whose version is above what this build knows is refused ([`StoreError::SchemaTooNew`]).
//!
//! See `0001_initial.sql` for the tables. They mirror SQLite's, with PostgreSQL's types:
//! `timestamptz` for wall times (written truncated to milliseconds, so both backends read back
//! the same values), `bigserial` ids, `text[]` for lists, `json` where avmon hands the text
//! back as written (alert details and payloads keep their key order) and `jsonb` for a stream's
//! config, which the cluster will compare and query.
//!
//! # Metrics
//!
//! [`Store::record_metrics_batch`] writes many samples with one `INSERT … SELECT FROM UNNEST`
//! of five arrays per [`BATCH_ROWS`] values: one round trip and one statement for a whole
//! period of thousands of streams, instead of one per value.

use std::mem::ManuallyDrop;
use std::str::FromStr;
use std::time::Duration;

use avmon_core::{
    Ack, Alert, AlertEvent, AlertRecord, AlertState, Details, MaintenanceWindow, Mute, Severity,
    StreamId, Suppressed, Transition, WallTime,
};
use postgres::types::ToSql;
use postgres::{Client, GenericClient, NoTls, Row};
use r2d2_postgres::{r2d2, PostgresConnectionManager};

use crate::common::{
    corrupt, parse_state, parse_status, state_str, Aggregates, Samples, METRICS_STREAMS,
};
use crate::{
    AckOutcome, AlertQuery, AttemptOutcome, AttemptRecord, MetricsQuery, MetricsSample,
    OutboxCounts, OutboxEntry, OutboxRow, OutboxStatus, Store, StoreError, StreamRecord,
};

/// The most connections one store holds: the writer thread, the notifiers and a few API
/// requests at once. Three nodes at this size stay far below PostgreSQL's default of 100.
pub const POOL_SIZE: u32 = 8;

/// How long opening a connection may take, unless the URL says `connect_timeout`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a call waits for a pooled connection (all busy, or the database away).
pub const POOL_WAIT: Duration = Duration::from_secs(5);

/// The advisory lock key that serialises migrations: "avmonmig" in ASCII, unlikely to be
/// another application's.
pub const MIGRATION_LOCK: i64 = 0x6176_6d6f_6e6d_6967;

/// Values written per statement by [`Store::record_metrics_batch`]: large enough to amortise
/// the round trip, small enough to keep one message a few MiB.
pub const BATCH_ROWS: usize = 20_000;

/// The schema, as an ordered list of migrations: entry `i` takes the database to version `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/postgres/0001_initial.sql"),
    include_str!("../migrations/postgres/0002_cluster.sql"),
    include_str!("../migrations/postgres/0003_retention.sql"),
];

/// The advisory lock key that serialises retention's folding across nodes: "avmonret".
pub const RETENTION_LOCK: i64 = 0x6176_6d6f_6e72_6574;

type Pool = r2d2::Pool<PostgresConnectionManager<NoTls>>;
pub(crate) type Conn = r2d2::PooledConnection<PostgresConnectionManager<NoTls>>;

/// A [`Store`] in a PostgreSQL database.
///
/// Cloning is cheap and shares the pool (the [`crate::cluster::Coordinator`] holds a clone).
#[derive(Clone)]
pub struct PostgresStore {
    /// `None` only once dropped (see `Drop`).
    pool: Option<Pool>,
    /// Where the database is, for messages: `host:port/dbname`, never the password.
    target: String,
    /// How to connect, for connections outside the pool (a LISTEN connection).
    config: postgres::Config,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connect to the database `url` names (`postgres://user:password@host:port/dbname?…`, the
    /// keys of libpq's connection URIs), and migrate it.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let mut config = postgres::Config::from_str(url).map_err(|e| StoreError::InvalidUrl {
            url: redact(url),
            reason: e.to_string(),
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        // The driver's default is to probe an idle connection after two hours: a database
        // host that vanished (a partition, a power cut) would hold a query that long.
        if config.get_keepalives_idle() == Duration::from_secs(2 * 3600) {
            config.keepalives_idle(Duration::from_secs(10));
        }
        if config.get_keepalives_interval().is_none() {
            config.keepalives_interval(Duration::from_secs(5));
        }
        if config.get_keepalives_retries().is_none() {
            config.keepalives_retries(3);
        }
        if config.get_application_name().is_none() {
            config.application_name("avmon");
        }
        if config.get_ssl_mode() == postgres::config::SslMode::Require {
            return Err(StoreError::Unsupported(format!(
                "{}: TLS to PostgreSQL (sslmode=require) is not supported yet; connect over a \
                 private network or a local socket",
                redact(url)
            )));
        }
        let target = target(&config);
        let pool_config = config.clone();
        // Migrate on a connection of our own, so that a database that is away, or a bad
        // password, gives its own error at once instead of a pool timeout.
        let mut client = connect_within(&config).map_err(|reason| {
            StoreError::Database(format!(
                "cannot connect to PostgreSQL at {target}: {reason}"
            ))
        })?;
        migrate(&mut client, MIGRATIONS)?;
        drop(client);
        let pool = r2d2::Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(1))
            .connection_timeout(POOL_WAIT)
            .test_on_check_out(true)
            // We just connected: build without waiting for the pool's first connection.
            .build_unchecked(PostgresConnectionManager::new(pool_config, NoTls));
        Ok(PostgresStore {
            pool: Some(pool),
            target,
            config,
        })
    }

    /// Delete up to `max` rows of `table` (with a `bigserial` id) whose `time` is before
    /// `before`, oldest first.
    fn delete_oldest(
        &self,
        table: &str,
        time: &str,
        before: WallTime,
        max: usize,
    ) -> Result<u64, StoreError> {
        Ok(self.conn()?.execute(
            &format!(
                "DELETE FROM {table} WHERE id IN (
                     SELECT id FROM {table} WHERE {time} < $1 ORDER BY {time} LIMIT $2)"
            ),
            &[&ms(before), &(max as i64)],
        )?)
    }

    /// The schema version of the database (the number of migrations applied).
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        schema_version(&mut *self.conn()?)
    }

    /// The same database through a pool of its own of at most `size` connections: for a caller
    /// that must never wait behind the others' queries (a node's lease renewals).
    pub(crate) fn with_own_pool(&self, size: u32) -> PostgresStore {
        let pool = r2d2::Pool::builder()
            .max_size(size.max(1))
            .min_idle(Some(1))
            .connection_timeout(POOL_WAIT)
            .test_on_check_out(true)
            .build_unchecked(PostgresConnectionManager::new(self.config.clone(), NoTls));
        PostgresStore {
            pool: Some(pool),
            target: self.target.clone(),
            config: self.config.clone(),
        }
    }

    /// The cluster's coordination on this database, sharing this store's pool.
    pub fn coordinator(&self) -> crate::cluster::Coordinator {
        crate::cluster::Coordinator::from_store(self.clone())
    }

    /// `host:port/dbname`, for messages.
    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    /// A new connection outside the pool (for LISTEN, which needs a session of its own).
    pub(crate) fn connect_dedicated(&self) -> Result<Client, StoreError> {
        connect_within(&self.config).map_err(|reason| {
            StoreError::Database(format!(
                "cannot connect to PostgreSQL at {}: {reason}",
                self.target
            ))
        })
    }

    pub(crate) fn conn(&self) -> Result<Conn, StoreError> {
        let Some(pool) = &self.pool else {
            return Err(StoreError::Database("the store is closed".to_string()));
        };
        pool.get().map_err(|e| {
            StoreError::Database(format!(
                "cannot connect to PostgreSQL at {}: {e}",
                self.target
            ))
        })
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        let Some(pool) = self.pool.take() else {
            return;
        };
        // Other clones keep the connections open: only the last one closes them.
        if tokio::runtime::Handle::try_current().is_ok() {
            // Closing a connection blocks on its private runtime, which panics inside another
            // runtime's context (an async task dropping the last `Arc<dyn Store>`). If no thread
            // can be started, the connections are leaked rather than the process panicking.
            let pool = ManuallyDrop::new(pool);
            let _ = std::thread::Builder::new()
                .name("avmon-pg-close".into())
                .spawn(move || drop(ManuallyDrop::into_inner(pool)));
        }
    }
}

/// Connect, giving up after the config's connect timeout (plus a margin). The driver's timeout
/// covers the TCP connect only, not the start-up exchange, so a peer that accepts and never
/// answers (a wrong port, a stuck server) would hang here forever: the connect runs on a
/// thread of its own and we stop waiting for it. Such a thread ends with its connection.
fn connect_within(config: &postgres::Config) -> Result<Client, String> {
    let limit = config
        .get_connect_timeout()
        .copied()
        .unwrap_or(CONNECT_TIMEOUT)
        + Duration::from_secs(1);
    let (tx, rx) = std::sync::mpsc::channel();
    let config = config.clone();
    std::thread::Builder::new()
        .name("avmon-pg-connect".into())
        .spawn(move || {
            // Nobody is waiting any more when this fails: the client closes here.
            let _ = tx.send(config.connect(NoTls));
        })
        .map_err(|e| format!("cannot start a thread to connect: {e}"))?;
    match rx.recv_timeout(limit) {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(describe(&e)),
        Err(_) => Err(format!(
            "no answer within {:.0} s (is it PostgreSQL?)",
            limit.as_secs_f64()
        )),
    }
}

/// `host:port/dbname` of a connection config, for messages (no user, no password).
fn target(config: &postgres::Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match h {
                postgres::config::Host::Tcp(h) => format!("{h}:{port}"),
                postgres::config::Host::Unix(dir) => format!("{}:{port}", dir.display()),
            }
        })
        .collect();
    let hosts = if hosts.is_empty() {
        "localhost:5432".to_string()
    } else {
        hosts.join(",")
    };
    format!("{hosts}/{}", config.get_dbname().unwrap_or("(default)"))
}

/// `url` with its password replaced by `***`, for messages.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// An error with its cause: the driver's `Display` says only "db error" for the server's own.
fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{}: {} ({detail})", db.severity(), db.message()),
            None => format!("{}: {}", db.severity(), db.message()),
        },
        None => match std::error::Error::source(e) {
            Some(cause) if !e.to_string().contains(&cause.to_string()) => format!("{e}: {cause}"),
            _ => e.to_string(),
        },
    }
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        use postgres::error::SqlState;
        if e.code() == Some(&SqlState::DISK_FULL) || e.code() == Some(&SqlState::IO_ERROR) {
            StoreError::Storage(describe(&e))
        } else if e.as_db_error().is_some() {
            StoreError::Database(describe(&e))
        } else {
            StoreError::Database(format!("PostgreSQL connection failed: {}", describe(&e)))
        }
    }
}

fn schema_version(client: &mut impl GenericClient) -> Result<i64, StoreError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('avmon_schema') IS NOT NULL", &[])?
        .get(0);
    if !exists {
        return Ok(0);
    }
    Ok(client
        .query_one(
            "SELECT COALESCE(max(version), 0)::bigint FROM avmon_schema",
            &[],
        )?
        .get(0))
}

/// Apply the migrations the database has not seen yet. Returns how many were applied.
pub(crate) fn migrate(client: &mut Client, migrations: &[&str]) -> Result<usize, StoreError> {
    let supported = migrations.len() as i64;
    let mut applied = 0;
    loop {
        let fail = |version: usize, e: StoreError| StoreError::Migration {
            version,
            reason: match e {
                StoreError::Database(reason) => reason,
                other => other.to_string(),
            },
        };
        let mut tx = client.transaction().map_err(|e| fail(0, e.into()))?;
        // Held until this transaction ends: a second node opening now waits here, then reads
        // the version this one commits.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .map_err(|e| fail(0, e.into()))?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS avmon_schema (
                 version    integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .map_err(|e| fail(0, e.into()))?;
        let current = schema_version(&mut tx).map_err(|e| fail(0, e))?;
        if current > supported {
            return Err(StoreError::SchemaTooNew {
                found: current,
                supported,
            });
        }
        if current == supported {
            tx.commit().map_err(|e| fail(0, e.into()))?;
            return Ok(applied);
        }
        let version = current as usize + 1;
        tx.batch_execute(migrations[current as usize])
            .map_err(|e| fail(version, e.into()))?;
        tx.execute(
            "INSERT INTO avmon_schema (version) VALUES ($1)",
            &[&(version as i32)],
        )
        .map_err(|e| fail(version, e.into()))?;
        tx.commit().map_err(|e| fail(version, e.into()))?;
        tracing::info!(version, "migrated the PostgreSQL schema");
        applied += 1;
    }
}

/// A wall time as stored: truncated to milliseconds, as SQLite's integer columns hold it.
pub(crate) fn ms(t: WallTime) -> WallTime {
    chrono::DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// The columns [`alert_record`] reads, in order (`a` is alerts, `k` acks).
pub(crate) const ALERT_COLUMNS: &str =
    "a.id, a.stream_id, a.kind, a.severity, a.state, a.start_s, a.end_s,
     a.raised_at, a.cleared_at, a.details, a.suppressed, k.author, k.comment, k.acked_at
     FROM alerts a LEFT JOIN acks k ON k.alert_id = a.id";

pub(crate) fn alert_record(r: &Row) -> Result<AlertRecord, StoreError> {
    const T: &str = "alerts";
    let id: String = r.try_get(0)?;
    let state = parse_state(T, r.try_get(4)?)?;
    let details = match r.try_get::<_, serde_json::Value>(9)? {
        serde_json::Value::Object(m) => m,
        other => {
            return Err(corrupt(
                T,
                format_args!("details of {id}: not an object: {other}"),
            ))
        }
    };
    let suppressed = match r.try_get::<_, Option<&str>>(10)? {
        None => None,
        Some(s) => Some(
            Suppressed::parse(s)
                .ok_or_else(|| corrupt(T, format_args!("unknown suppressed {s:?}")))?,
        ),
    };
    let ack = match (
        r.try_get::<_, Option<String>>(11)?,
        r.try_get::<_, Option<String>>(12)?,
        r.try_get::<_, Option<WallTime>>(13)?,
    ) {
        (Some(by), Some(comment), Some(at)) => Some(Ack { by, comment, at }),
        _ => None,
    };
    Ok(AlertRecord {
        alert: Alert {
            stream_id: StreamId(r.try_get(1)?),
            kind: r.try_get(2)?,
            severity: r
                .try_get::<_, &str>(3)?
                .parse::<Severity>()
                .map_err(|e| corrupt(T, e))?,
            state,
            start_s: r.try_get(5)?,
            end_s: r.try_get(6)?,
            raised_at: r.try_get(7)?,
            cleared_at: r.try_get(8)?,
            details: details as Details,
            id,
        },
        ack,
        suppressed,
    })
}

/// Query parameters built up with a statement (`$1`, `$2`, … in push order).
#[derive(Default)]
struct Params(Vec<Box<dyn ToSql + Sync>>);

impl Params {
    /// Add a parameter; returns its placeholder.
    fn push(&mut self, v: impl ToSql + Sync + 'static) -> String {
        self.0.push(Box::new(v));
        format!("${}", self.0.len())
    }

    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.0.iter().map(|b| b.as_ref()).collect()
    }
}

impl Store for PostgresStore {
    fn upsert_stream(&self, s: &StreamRecord) -> Result<(), StoreError> {
        self.conn()?.execute(
            "INSERT INTO streams (id, url, config, created_at, removed_at)
             VALUES ($1, $2, $3, $4, NULL)
             ON CONFLICT (id) DO UPDATE SET
                 url = excluded.url,
                 config = excluded.config,
                 created_at = CASE WHEN streams.removed_at IS NULL
                                   THEN streams.created_at ELSE excluded.created_at END,
                 removed_at = NULL",
            &[&s.id.as_str(), &s.url, &s.config, &ms(s.created_at)],
        )?;
        Ok(())
    }

    fn remove_stream(&self, id: &StreamId) -> Result<bool, StoreError> {
        let n = self.conn()?.execute(
            "UPDATE streams SET removed_at = $2 WHERE id = $1 AND removed_at IS NULL",
            &[&id.as_str(), &ms(chrono::Utc::now())],
        )?;
        Ok(n > 0)
    }

    fn streams(&self) -> Result<Vec<StreamRecord>, StoreError> {
        let rows = self.conn()?.query(
            "SELECT id, url, config, created_at FROM streams
             WHERE removed_at IS NULL ORDER BY id",
            &[],
        )?;
        rows.iter().map(|r| stream_record(r, 0)).collect()
    }

    fn record_alert(&self, ev: &AlertEvent) -> Result<(), StoreError> {
        write_alert(&mut *self.conn()?, ev)
    }

    fn alert_records(&self, q: &AlertQuery) -> Result<Vec<AlertRecord>, StoreError> {
        let mut sql = format!("SELECT {ALERT_COLUMNS} WHERE TRUE");
        let mut p = Params::default();
        if let Some(stream) = &q.stream {
            sql.push_str(&format!(" AND a.stream_id = {}", p.push(stream.0.clone())));
        }
        if let Some(since) = q.since {
            let n = p.push(ms(since));
            sql.push_str(&format!(" AND (a.raised_at >= {n} OR a.cleared_at >= {n})"));
        }
        if let Some(until) = q.until {
            sql.push_str(&format!(" AND a.raised_at <= {}", p.push(ms(until))));
        }
        if q.active_only {
            sql.push_str(" AND a.state = 'raised'");
        }
        if let Some(state) = q.state {
            sql.push_str(&format!(" AND a.state = {}", p.push(state_str(state))));
        }
        if !q.kinds.is_empty() {
            sql.push_str(&format!(" AND a.kind = ANY({})", p.push(q.kinds.clone())));
        }
        if !q.severities.is_empty() {
            let severities: Vec<&'static str> = q.severities.iter().map(|s| s.as_str()).collect();
            sql.push_str(&format!(" AND a.severity = ANY({})", p.push(severities)));
        }
        match q.acked {
            Some(true) => sql.push_str(" AND k.alert_id IS NOT NULL"),
            Some(false) => sql.push_str(" AND k.alert_id IS NULL"),
            None => {}
        }
        // LIMIT NULL is PostgreSQL for "no limit".
        let limit = (q.limit > 0).then(|| i64::try_from(q.limit).unwrap_or(i64::MAX));
        sql.push_str(&format!(
            " ORDER BY a.raised_at DESC, a.id DESC LIMIT {}",
            p.push(limit)
        ));
        let rows = self.conn()?.query(&sql, &p.refs())?;
        rows.iter().map(alert_record).collect()
    }

    fn alert(&self, id: &str) -> Result<Option<AlertRecord>, StoreError> {
        let row = self
            .conn()?
            .query_opt(&format!("SELECT {ALERT_COLUMNS} WHERE a.id = $1"), &[&id])?;
        row.as_ref().map(alert_record).transpose()
    }

    fn mark_alert(&self, id: &str, why: Suppressed) -> Result<(), StoreError> {
        self.conn()?.execute(
            "UPDATE alerts SET suppressed = $2 WHERE id = $1",
            &[&id, &why.as_str()],
        )?;
        Ok(())
    }

    fn ack_alert(&self, id: &str, ack: &Ack) -> Result<AckOutcome, StoreError> {
        let mut conn = self.conn()?;
        // One statement decides, so two nodes acknowledging at once keep exactly one: the
        // insert happens only for an existing alert, and a conflict leaves the first.
        let inserted = conn.execute(
            "INSERT INTO acks (alert_id, author, comment, acked_at)
             SELECT id, $2, $3, $4 FROM alerts WHERE id = $1
             ON CONFLICT (alert_id) DO NOTHING",
            &[&id, &ack.by, &ack.comment, &ms(ack.at)],
        )?;
        if inserted == 0 {
            let first = conn.query_opt(
                "SELECT author, comment, acked_at FROM acks WHERE alert_id = $1",
                &[&id],
            )?;
            return Ok(match first {
                Some(r) => AckOutcome::AlreadyAcked(Ack {
                    by: r.try_get(0)?,
                    comment: r.try_get(1)?,
                    at: r.try_get(2)?,
                }),
                None => AckOutcome::NotFound,
            });
        }
        drop(conn);
        match self.alert(id)? {
            Some(r) => Ok(AckOutcome::Acked(Box::new(r))),
            None => Ok(AckOutcome::NotFound),
        }
    }

    fn mutes(&self) -> Result<Vec<Mute>, StoreError> {
        let rows = self.conn()?.query(
            "SELECT stream_id, until_at, author, comment, created_at FROM mutes
             ORDER BY stream_id",
            &[],
        )?;
        rows.iter()
            .map(|r| {
                Ok(Mute {
                    stream_id: r.try_get(0)?,
                    until: r.try_get(1)?,
                    by: r.try_get(2)?,
                    comment: r.try_get(3)?,
                    at: r.try_get(4)?,
                })
            })
            .collect()
    }

    fn set_mute(&self, m: &Mute) -> Result<(), StoreError> {
        self.conn()?.execute(
            "INSERT INTO mutes (stream_id, until_at, author, comment, created_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (stream_id) DO UPDATE SET
                 until_at = excluded.until_at, author = excluded.author,
                 comment = excluded.comment, created_at = excluded.created_at",
            &[&m.stream_id, &m.until.map(ms), &m.by, &m.comment, &ms(m.at)],
        )?;
        Ok(())
    }

    fn remove_mute(&self, stream: &StreamId) -> Result<bool, StoreError> {
        let n = self.conn()?.execute(
            "DELETE FROM mutes WHERE stream_id = $1",
            &[&stream.as_str()],
        )?;
        Ok(n > 0)
    }

    fn windows(&self) -> Result<Vec<MaintenanceWindow>, StoreError> {
        let rows = self.conn()?.query(
            "SELECT id, streams, start_at, end_at, comment, author FROM maintenance
             ORDER BY start_at, id",
            &[],
        )?;
        rows.iter()
            .map(|r| {
                Ok(MaintenanceWindow {
                    id: r.try_get(0)?,
                    streams: r.try_get(1)?,
                    start: r.try_get(2)?,
                    end: r.try_get(3)?,
                    comment: r.try_get(4)?,
                    by: r.try_get(5)?,
                })
            })
            .collect()
    }

    fn add_window(&self, w: &MaintenanceWindow) -> Result<(), StoreError> {
        self.conn()?.execute(
            "INSERT INTO maintenance (id, streams, start_at, end_at, comment, author)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (id) DO UPDATE SET
                 streams = excluded.streams, start_at = excluded.start_at,
                 end_at = excluded.end_at, comment = excluded.comment, author = excluded.author",
            &[
                &w.id,
                &w.streams,
                &ms(w.start),
                &ms(w.end),
                &w.comment,
                &w.by,
            ],
        )?;
        Ok(())
    }

    fn remove_window(&self, id: &str) -> Result<bool, StoreError> {
        let n = self
            .conn()?
            .execute("DELETE FROM maintenance WHERE id = $1", &[&id])?;
        Ok(n > 0)
    }

    fn record_metrics(&self, m: &MetricsSample) -> Result<(), StoreError> {
        self.record_metrics_batch(std::slice::from_ref(m))
    }

    fn record_metrics_batch(&self, samples: &[MetricsSample]) -> Result<(), StoreError> {
        if samples.iter().all(|s| s.values.is_empty()) {
            return Ok(());
        }
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        write_metrics(&mut tx, samples.iter())?;
        tx.commit()?;
        Ok(())
    }

    fn metrics_range(
        &self,
        stream: &StreamId,
        q: &MetricsQuery,
    ) -> Result<Vec<MetricsSample>, StoreError> {
        // The same conditions on the raw samples' time and on the aggregates' bucket start.
        let mut p = Params::default();
        p.push(stream.0.clone());
        let mut conds: Vec<(&str, String)> = Vec::new();
        if let Some(since) = q.since {
            conds.push((">=", p.push(ms(since))));
        }
        if let Some(until) = q.until {
            conds.push(("<=", p.push(ms(until))));
        }
        let names = match q.names.is_empty() {
            true => String::new(),
            false => format!(" AND name = ANY({})", p.push(q.names.clone())),
        };
        let filter = |time: &str| {
            let range: String = conds
                .iter()
                .map(|(op, param)| format!(" AND {time} {op} {param}"))
                .collect();
            format!("WHERE stream_id = $1{range}{names}")
        };
        let mut conn = self.conn()?;
        let rows = conn.query(
            &format!(
                "SELECT at, media_t, name, value FROM metrics {} ORDER BY at, id",
                filter("at")
            ),
            &p.refs(),
        )?;
        let mut samples = Samples::new(stream);
        for r in &rows {
            samples.push(r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
        }
        let rows = conn.query(
            &format!(
                "SELECT start_at, media_t, name, v_sum, n, v_max FROM metrics_agg {} \
                 ORDER BY start_at, span_s, name",
                filter("start_at")
            ),
            &p.refs(),
        )?;
        let mut folded = Aggregates::new(stream);
        for r in &rows {
            let row = (r.try_get(4)?, r.try_get(3)?, r.try_get(5)?);
            folded.push(r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, row);
        }
        Ok(folded.merge(samples.finish(0), q.limit))
    }

    fn prune_metrics(&self, before: WallTime) -> Result<u64, StoreError> {
        Ok(self
            .conn()?
            .execute("DELETE FROM metrics WHERE at < $1", &[&ms(before)])?)
    }

    fn outbox_add(&self, e: &OutboxEntry) -> Result<Option<i64>, StoreError> {
        write_outbox(&mut *self.conn()?, e)
    }

    fn outbox_has_alert(&self, notifier: &str, alert_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()?
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM outbox WHERE notifier = $1 AND alert_id = $2)",
                &[&notifier, &alert_id],
            )?
            .try_get(0)?)
    }

    fn outbox_pending(&self, notifier: &str, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        outbox_query(
            &mut self.conn()?,
            "WHERE notifier = $1 AND status = 'pending' ORDER BY id LIMIT $2",
            &[&notifier, &limit],
        )
    }

    fn outbox_attempt(
        &self,
        ids: &[i64],
        notifier: &str,
        outcome: &AttemptOutcome,
        detail: &serde_json::Value,
        at: WallTime,
    ) -> Result<(), StoreError> {
        let Some(&first) = ids.first() else {
            return Ok(());
        };
        let effect = outcome.effect(detail);
        let at = ms(at);
        let done = (effect.status != OutboxStatus::Pending).then_some(at);
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        // Only pending rows change: a finished row is final, whatever a late attempt says.
        // The attempt ends the rows' delivery claim (a cluster's outbox_claim): whatever
        // node comes next may take a row still pending.
        tx.execute(
            "UPDATE outbox SET attempts = attempts + 1, status = $2,
                 last_error = COALESCE($3, last_error), done_at = $4,
                 group_key = COALESCE($5, group_key),
                 claimed_by = NULL, claimed_until = NULL
             WHERE id = ANY($1) AND status = 'pending'",
            &[
                &ids,
                &effect.status.as_str(),
                &effect.error,
                &done,
                &effect.group_key,
            ],
        )?;
        tx.execute(
            "INSERT INTO outbox_attempts (outbox_id, notifier, at, outcome, detail)
             VALUES ($1, $2, $3, $4, $5)",
            &[&first, &notifier, &at, &effect.name, detail],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn outbox_pending_by_notifier(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = self.conn()?.query(
            "SELECT notifier, COUNT(*) FROM outbox WHERE status = 'pending'
             GROUP BY notifier ORDER BY notifier",
            &[],
        )?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get::<_, i64>(1)?.max(0) as u64)))
            .collect()
    }

    fn outbox_counts(&self, notifier: &str) -> Result<OutboxCounts, StoreError> {
        let rows = self.conn()?.query(
            "SELECT status, COUNT(*) FROM outbox WHERE notifier = $1 GROUP BY status",
            &[&notifier],
        )?;
        let mut c = OutboxCounts::default();
        for r in &rows {
            let n = r.try_get::<_, i64>(1)?.max(0) as u64;
            match parse_status("outbox", r.try_get(0)?)? {
                OutboxStatus::Pending => c.pending = n,
                OutboxStatus::Delivered => c.delivered = n,
                OutboxStatus::Failed => c.failed = n,
            }
        }
        Ok(c)
    }

    fn outbox_rows(&self, notifier: &str) -> Result<Vec<OutboxRow>, StoreError> {
        outbox_query(
            &mut self.conn()?,
            "WHERE notifier = $1 ORDER BY id",
            &[&notifier],
        )
    }

    fn outbox_attempts(&self, notifier: &str) -> Result<Vec<AttemptRecord>, StoreError> {
        let rows = self.conn()?.query(
            "SELECT outbox_id, at, outcome, detail FROM outbox_attempts
             WHERE notifier = $1 ORDER BY at, id",
            &[&notifier],
        )?;
        rows.iter()
            .map(|r| {
                Ok(AttemptRecord {
                    outbox_id: r.try_get(0)?,
                    notifier: notifier.to_string(),
                    at: r.try_get(1)?,
                    outcome: r.try_get(2)?,
                    detail: r.try_get(3)?,
                })
            })
            .collect()
    }

    fn outbox_open_groups(&self, notifier: &str) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self.conn()?.query(
            "SELECT r.alert_id, r.group_key FROM outbox r
             WHERE r.notifier = $1 AND r.state IN ('raised', 'updated')
               AND r.status = 'delivered' AND r.group_key IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM outbox c
                               WHERE c.notifier = r.notifier AND c.alert_id = r.alert_id
                                 AND c.state = 'cleared' AND c.status != 'pending')
             ORDER BY r.id",
            &[&notifier],
        )?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    fn metrics_streams(&self) -> Result<Vec<StreamId>, StoreError> {
        let rows = self.conn()?.query(METRICS_STREAMS, &[])?;
        rows.iter().map(|r| Ok(StreamId(r.try_get(0)?))).collect()
    }

    fn fold_metrics(
        &self,
        stream: &StreamId,
        from_s: u32,
        to_s: u32,
        before: WallTime,
        max_rows: usize,
    ) -> Result<u64, StoreError> {
        let before = crate::retention::align_down(before, to_s);
        let (from, to) = (from_s as i32, to_s as i32);
        // The source rows: $1 the stream, $2 and $3 a time range, $4 the source span; folded
        // into $5-second buckets.
        let (table, time, span, folds) = match from_s {
            0 => (
                "metrics",
                "at",
                "$4 = 0",
                "count(*), sum(value), max(value)",
            ),
            _ => (
                "metrics_agg",
                "start_at",
                "span_s = $4",
                "sum(n), sum(v_sum), max(v_max)",
            ),
        };
        let source = format!(
            "FROM {table} WHERE stream_id = $1 AND {time} >= $2 AND {time} < $3 AND {span}"
        );
        let select = format!(
            "SELECT stream_id, $5::integer, date_bin($5::integer * interval '1 second', {time}, \
             'epoch'), max(media_t), name, {folds} {source} GROUP BY stream_id, 3, name"
        );
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        // Nodes fold one at a time: two folding the same rows would count them twice.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&RETENTION_LOCK])?;
        let floor = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
        let first: Option<WallTime> = tx
            .query_one(
                &format!("SELECT min({time}) {source}"),
                &[&stream.as_str(), &floor, &before, &from],
            )?
            .try_get(0)?;
        let Some(first) = first else {
            return Ok(0);
        };
        let start = crate::retention::align_down(first, to_s);
        let span = chrono::Duration::seconds(i64::from(to_s));
        // About `max_rows` rows: up to the bucket of the row that many rows on, at least one.
        let far = tx.query_opt(
            &format!("SELECT {time} {source} ORDER BY {time} LIMIT 1 OFFSET $5"),
            &[&stream.as_str(), &start, &before, &from, &(max_rows as i64)],
        )?;
        let end = match far {
            Some(r) => crate::retention::align_down(r.try_get(0)?, to_s).max(start + span),
            None => before,
        };
        tx.execute(
            &format!(
                "INSERT INTO metrics_agg
                     (stream_id, span_s, start_at, media_t, name, n, v_sum, v_max)
                 {select}
                 ON CONFLICT (stream_id, span_s, start_at, name) DO UPDATE SET
                     media_t = greatest(metrics_agg.media_t, excluded.media_t),
                     n = metrics_agg.n + excluded.n,
                     v_sum = metrics_agg.v_sum + excluded.v_sum,
                     v_max = greatest(metrics_agg.v_max, excluded.v_max)"
            ),
            &[&stream.as_str(), &start, &end, &from, &to],
        )?;
        let n = tx.execute(
            &format!("DELETE {source}"),
            &[&stream.as_str(), &start, &end, &from],
        )?;
        tx.commit()?;
        Ok(n)
    }

    fn delete_aggregates(
        &self,
        stream: &StreamId,
        span_s: u32,
        before: WallTime,
        max_rows: usize,
    ) -> Result<u64, StoreError> {
        Ok(self.conn()?.execute(
            "DELETE FROM metrics_agg WHERE (stream_id, span_s, start_at, name) IN (
                 SELECT stream_id, span_s, start_at, name FROM metrics_agg
                 WHERE stream_id = $1 AND span_s = $2 AND start_at < $3
                 ORDER BY start_at LIMIT $4)",
            &[
                &stream.as_str(),
                &(span_s as i32),
                &ms(before),
                &(max_rows as i64),
            ],
        )?)
    }

    fn delete_cleared_alerts(&self, before: WallTime, max: usize) -> Result<u64, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        // Acknowledgements go with their alert (ON DELETE CASCADE).
        let ids: Vec<String> = tx
            .query(
                "SELECT id FROM alerts a
                 WHERE state = 'cleared' AND cleared_at < $1
                   AND NOT EXISTS (SELECT 1 FROM outbox o
                                   WHERE o.alert_id = a.id AND o.status = 'pending')
                 ORDER BY cleared_at LIMIT $2",
                &[&ms(before), &(max as i64)],
            )?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        tx.execute("DELETE FROM outbox WHERE alert_id = ANY($1)", &[&ids])?;
        let n = tx.execute("DELETE FROM alerts WHERE id = ANY($1)", &[&ids])?;
        tx.commit()?;
        Ok(n)
    }

    fn delete_attempts(&self, before: WallTime, max: usize) -> Result<u64, StoreError> {
        self.delete_oldest("outbox_attempts", "at", before, max)
    }

    fn delete_events(&self, before: WallTime, max: usize) -> Result<u64, StoreError> {
        self.delete_oldest("monitoring_gaps", "to_at", before, max)
    }
}

/// A stream read from four consecutive columns from `at`: id, url, config, created_at.
pub(crate) fn stream_record(r: &Row, at: usize) -> Result<StreamRecord, StoreError> {
    Ok(StreamRecord {
        id: StreamId(r.try_get(at)?),
        url: r.try_get(at + 1)?,
        config: r.try_get(at + 2)?,
        created_at: r.try_get(at + 3)?,
    })
}

/// Persist one alert transition (upsert by alert id), on a connection or in a transaction.
pub(crate) fn write_alert(
    client: &mut impl GenericClient,
    ev: &AlertEvent,
) -> Result<(), StoreError> {
    let a = &ev.alert;
    let state = match ev.transition {
        Transition::Cleared => AlertState::Cleared,
        Transition::Raised | Transition::Updated => a.state,
    };
    let details = serde_json::Value::Object(a.details.clone());
    // A cleared alert is final (`WHERE alerts.state = 'raised'`): replays and stragglers
    // cannot reopen it.
    client.execute(
        "INSERT INTO alerts (id, stream_id, kind, severity, state, start_s, end_s,
                             raised_at, cleared_at, details)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (id) DO UPDATE SET
             severity = excluded.severity,
             state = excluded.state,
             end_s = excluded.end_s,
             cleared_at = excluded.cleared_at,
             details = excluded.details
         WHERE alerts.state = 'raised'",
        &[
            &a.id,
            &a.stream_id.as_str(),
            &a.kind,
            &a.severity.as_str(),
            &state_str(state),
            &a.start_s,
            &a.end_s,
            &ms(a.raised_at),
            &a.cleared_at.map(ms),
            &details,
        ],
    )?;
    Ok(())
}

/// Put a notification in the outbox (see [`Store::outbox_add`]).
pub(crate) fn write_outbox(
    client: &mut impl GenericClient,
    e: &OutboxEntry,
) -> Result<Option<i64>, StoreError> {
    let row = client.query_opt(
        "INSERT INTO outbox (notifier, alert_id, state, idem_key, payload, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (notifier, idem_key) DO NOTHING
         RETURNING id",
        &[
            &e.notifier,
            &e.alert_id,
            &e.state,
            &e.key,
            &e.payload,
            &ms(e.created_at),
        ],
    )?;
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}

/// Write metrics samples in a transaction, [`BATCH_ROWS`] values per statement.
pub(crate) fn write_metrics<'a>(
    tx: &mut postgres::Transaction<'_>,
    samples: impl Iterator<Item = &'a MetricsSample>,
) -> Result<(), StoreError> {
    let mut cols = MetricsColumns::with_capacity(1024);
    for s in samples {
        let at = ms(s.at);
        for (name, value) in &s.values {
            cols.push(s.stream_id.as_str(), at, s.media_t, name, *value);
            if cols.len() == BATCH_ROWS {
                cols.insert(tx)?;
            }
        }
    }
    cols.insert(tx)
}

/// Metrics rows gathered column by column, written with one `INSERT … SELECT FROM UNNEST`.
struct MetricsColumns<'a> {
    stream_id: Vec<&'a str>,
    at: Vec<WallTime>,
    media_t: Vec<f64>,
    name: Vec<&'a str>,
    value: Vec<f64>,
}

impl<'a> MetricsColumns<'a> {
    fn with_capacity(n: usize) -> Self {
        MetricsColumns {
            stream_id: Vec::with_capacity(n),
            at: Vec::with_capacity(n),
            media_t: Vec::with_capacity(n),
            name: Vec::with_capacity(n),
            value: Vec::with_capacity(n),
        }
    }

    fn len(&self) -> usize {
        self.value.len()
    }

    fn push(&mut self, stream_id: &'a str, at: WallTime, media_t: f64, name: &'a str, value: f64) {
        self.stream_id.push(stream_id);
        self.at.push(at);
        self.media_t.push(media_t);
        self.name.push(name);
        self.value.push(value);
    }

    /// Write and clear the gathered rows.
    fn insert(&mut self, tx: &mut postgres::Transaction<'_>) -> Result<(), StoreError> {
        if self.value.is_empty() {
            return Ok(());
        }
        // WITH ORDINALITY … ORDER BY: the ids (the read-back order) follow the input order.
        tx.execute(
            "INSERT INTO metrics (stream_id, at, media_t, name, value)
             SELECT s, a, m, n, v
             FROM UNNEST($1::text[], $2::timestamptz[], $3::float8[], $4::text[], $5::float8[])
                  WITH ORDINALITY AS u (s, a, m, n, v, i)
             ORDER BY i",
            &[
                &self.stream_id,
                &self.at,
                &self.media_t,
                &self.name,
                &self.value,
            ],
        )?;
        self.stream_id.clear();
        self.at.clear();
        self.media_t.clear();
        self.name.clear();
        self.value.clear();
        Ok(())
    }
}

/// The columns [`outbox_row`] reads, in order.
pub(crate) const OUTBOX_COLUMNS: &str = "id, notifier, alert_id, state, idem_key, payload, \
     created_at, status, attempts, last_error, group_key";

/// Outbox rows matching `tail` (a `WHERE … ORDER BY …` clause on `params`).
fn outbox_query(
    conn: &mut Conn,
    tail: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<OutboxRow>, StoreError> {
    let rows = conn.query(
        &format!("SELECT {OUTBOX_COLUMNS} FROM outbox {tail}"),
        params,
    )?;
    rows.iter().map(outbox_row).collect()
}

/// One outbox row read with [`OUTBOX_COLUMNS`].
pub(crate) fn outbox_row(r: &Row) -> Result<OutboxRow, StoreError> {
    Ok(OutboxRow {
        id: r.try_get(0)?,
        entry: OutboxEntry {
            notifier: r.try_get(1)?,
            alert_id: r.try_get(2)?,
            state: r.try_get(3)?,
            key: r.try_get(4)?,
            payload: r.try_get(5)?,
            created_at: r.try_get(6)?,
        },
        status: parse_status("outbox", r.try_get(7)?)?,
        attempts: u32::try_from(r.try_get::<_, i32>(8)?).unwrap_or(0),
        last_error: r.try_get(9)?,
        group_key: r.try_get(10)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use avmon_testpg::TestPg;

    #[test]
    fn later_migrations_apply_on_top_and_a_failed_one_rolls_back() {
        let url = TestPg::shared().fresh_database("unit_migrations");
        let mut client = Client::connect(&url, NoTls).unwrap();
        assert_eq!(migrate(&mut client, MIGRATIONS).unwrap(), MIGRATIONS.len());
        assert_eq!(migrate(&mut client, MIGRATIONS).unwrap(), 0);
        let mut next: Vec<&str> = MIGRATIONS.to_vec();
        next.push("ALTER TABLE streams ADD COLUMN node text");
        assert_eq!(
            migrate(&mut client, &next).unwrap(),
            1,
            "only the new one runs"
        );
        // A migration that fails half-way leaves nothing of itself.
        let mut bad = next.clone();
        bad.push("CREATE TABLE x (a int); CREATE TABLE streams (b int)");
        let err = migrate(&mut client, &bad).unwrap_err();
        let version = next.len() + 1;
        assert!(
            matches!(&err, StoreError::Migration { version: v, reason }
                if *v == version && reason.contains("already exists")),
            "{err}"
        );
        assert_eq!(schema_version(&mut client).unwrap(), next.len() as i64);
        let x: bool = client
            .query_one("SELECT to_regclass('x') IS NOT NULL", &[])
            .unwrap()
            .get(0);
        assert!(!x, "the failed migration rolled back entirely");
        // The older build refuses what the newer one made.
        assert!(matches!(
            migrate(&mut client, MIGRATIONS),
            Err(StoreError::SchemaTooNew { found, supported })
                if found == next.len() as i64 && supported == MIGRATIONS.len() as i64
        ));
    }

    #[test]
    fn messages_never_show_the_password() {
        assert_eq!(
            redact("postgres://avmon:s3cret@db:5432/avmon?sslmode=disable"),
            "postgres://avmon:***@db:5432/avmon?sslmode=disable"
        );
        assert_eq!(
            redact("postgres://avmon@db/avmon"),
            "postgres://avmon@db/avmon"
        );
        assert_eq!(redact("postgres://db/x"), "postgres://db/x");
        let cfg = postgres::Config::from_str("postgres://u:pw@h1:5433,h2/db").unwrap();
        assert_eq!(target(&cfg), "h1:5433,h2:5432/db");
        assert!(!target(&cfg).contains("pw"));
    }
}
