//! The SQLite backend.
//!
//! One connection behind a mutex: the writer thread is the only heavy user, and WAL mode lets
//! other processes (a `sqlite3` shell, a backup) read while it writes. A `busy_timeout` makes a
//! briefly locked database wait instead of failing.
//!
//! # Schema (version 1)
//!
//! ```sql
//! CREATE TABLE streams (
//!     id            TEXT PRIMARY KEY,
//!     url           TEXT NOT NULL,
//!     config        TEXT NOT NULL,      -- JSON
//!     created_at_ms INTEGER NOT NULL,
//!     removed_at_ms INTEGER             -- NULL while the stream is live
//! );
//! CREATE TABLE alerts (
//!     id            TEXT PRIMARY KEY,   -- UUIDv7
//!     stream_id     TEXT NOT NULL,
//!     kind          TEXT NOT NULL,      -- video.black, ...
//!     severity      TEXT NOT NULL,      -- info|warning|minor|major|critical
//!     state         TEXT NOT NULL,      -- raised|cleared
//!     start_s       REAL NOT NULL,      -- media time
//!     end_s         REAL,
//!     raised_at_ms  INTEGER NOT NULL,
//!     cleared_at_ms INTEGER,
//!     details       TEXT NOT NULL       -- JSON object
//! );
//! CREATE INDEX alerts_stream_raised ON alerts (stream_id, raised_at_ms);
//! CREATE INDEX alerts_raised ON alerts (raised_at_ms);
//! CREATE INDEX alerts_cleared ON alerts (cleared_at_ms);
//! CREATE INDEX alerts_active ON alerts (raised_at_ms) WHERE state = 'raised';
//! CREATE TABLE metrics (                -- one narrow row per value
//!     stream_id TEXT NOT NULL,
//!     at_ms     INTEGER NOT NULL,
//!     media_t   REAL NOT NULL,
//!     name      TEXT NOT NULL,
//!     value     REAL NOT NULL
//! );
//! CREATE INDEX metrics_stream_at ON metrics (stream_id, at_ms);
//! ```
//!
//! # Schema (version 2): alert management
//!
//! ```sql
//! ALTER TABLE alerts ADD COLUMN suppressed TEXT;   -- NULL (notified) | muted | maintenance
//! CREATE TABLE acks (
//!     alert_id TEXT PRIMARY KEY,        -- alerts.id
//!     by       TEXT NOT NULL,           -- the API token's name
//!     comment  TEXT NOT NULL,
//!     at_ms    INTEGER NOT NULL
//! );
//! CREATE TABLE mutes (
//!     stream_id TEXT PRIMARY KEY,
//!     until_ms  INTEGER,                -- NULL: until unmuted
//!     by        TEXT NOT NULL,
//!     comment   TEXT NOT NULL,
//!     at_ms     INTEGER NOT NULL
//! );
//! CREATE TABLE maintenance (            -- windows added over the API
//!     id       TEXT PRIMARY KEY,
//!     streams  TEXT NOT NULL,           -- JSON array of stream id globs
//!     start_ms INTEGER NOT NULL,
//!     end_ms   INTEGER NOT NULL,
//!     comment  TEXT NOT NULL,
//!     by       TEXT NOT NULL
//! );
//! # Schema (version 3): the notification outbox
//!
//! ```sql
//! CREATE TABLE outbox (
//!     id            INTEGER PRIMARY KEY AUTOINCREMENT,  -- delivery order per notifier
//!     notifier      TEXT NOT NULL,
//!     alert_id      TEXT NOT NULL,
//!     state         TEXT NOT NULL,      -- raised|updated|cleared
//!     idem_key      TEXT NOT NULL,      -- {alert_id}:{state}
//!     payload       TEXT NOT NULL,      -- JSON
//!     created_at_ms INTEGER NOT NULL,
//!     status        TEXT NOT NULL DEFAULT 'pending',   -- pending|delivered|failed
//!     attempts      INTEGER NOT NULL DEFAULT 0,
//!     last_error    TEXT,
//!     done_at_ms    INTEGER,
//!     group_key     TEXT,               -- e.g. the PagerDuty dedup key it went under
//!     UNIQUE (notifier, idem_key)
//! );
//! CREATE INDEX outbox_pending ON outbox (notifier, id) WHERE status = 'pending';
//! CREATE INDEX outbox_alert ON outbox (notifier, alert_id);
//! CREATE TABLE outbox_attempts (
//!     outbox_id INTEGER NOT NULL,       -- the first row of the batch attempted
//!     notifier  TEXT NOT NULL,
//!     at_ms     INTEGER NOT NULL,
//!     outcome   TEXT NOT NULL,          -- delivered|retry|failed
//!     detail    TEXT NOT NULL           -- JSON: HTTP status, error, command exit and output
//! );
//! CREATE INDEX outbox_attempts_notifier ON outbox_attempts (notifier, at_ms);
//! ```
//!
//! # Schema (version 4): retention
//!
//! ```sql
//! CREATE TABLE metrics_agg (            -- metrics folded with age (see crate::retention)
//!     stream_id TEXT NOT NULL,
//!     span_s    INTEGER NOT NULL,       -- 60 or 3600
//!     start_ms  INTEGER NOT NULL,       -- the bucket's start
//!     media_t   REAL NOT NULL,          -- the largest media time in it
//!     name      TEXT NOT NULL,
//!     n         INTEGER NOT NULL,       -- samples folded in
//!     v_sum     REAL NOT NULL,
//!     v_max     REAL NOT NULL,
//!     PRIMARY KEY (stream_id, span_s, start_ms, name)
//! ) WITHOUT ROWID;
//! CREATE INDEX outbox_alert_id ON outbox (alert_id);
//! CREATE INDEX outbox_attempts_at ON outbox_attempts (at_ms);
//! ```
//!
//! **Wall times are integer milliseconds since the Unix epoch, UTC** (`*_ms` columns): exact,
//! compact for the metrics table, sortable and indexable; in a shell,
//! `strftime('%Y-%m-%dT%H:%M:%fZ', raised_at_ms / 1000.0, 'unixepoch')` shows them.
//! Alerts have no foreign key to streams: one-shot runs record alerts for streams they never
//! persist, and removed streams keep their history.
//!
//! # Migrations
//!
//! [`MIGRATIONS`] is applied in order at open; `PRAGMA user_version` holds how many have been
//! applied. Each migration runs in its own `IMMEDIATE` transaction together with the version bump,
//! so a crash or a concurrent opener never leaves a half-migrated database. To change the schema,
//! append a migration; never edit one that has shipped.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use avmon_core::{
    Ack, Alert, AlertEvent, AlertRecord, AlertState, Details, MaintenanceWindow, Mute, Severity,
    StreamId, Suppressed, Transition, WallTime,
};
use rusqlite::types::Value;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::common::{
    corrupt, parse_state, parse_status, state_str, Aggregates, Samples, METRICS_STREAMS,
};
use crate::{
    AckOutcome, AlertQuery, AttemptOutcome, AttemptRecord, MetricsQuery, MetricsSample,
    OutboxCounts, OutboxEntry, OutboxRow, OutboxStatus, Store, StoreError, StreamRecord,
};

/// How long a statement waits for a lock held by another connection before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema, as an ordered list of migrations: entry `i` takes the database to version `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: streams, alerts, metrics.
    "CREATE TABLE streams (
        id            TEXT PRIMARY KEY,
        url           TEXT NOT NULL,
        config        TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        removed_at_ms INTEGER
    );
    CREATE TABLE alerts (
        id            TEXT PRIMARY KEY,
        stream_id     TEXT NOT NULL,
        kind          TEXT NOT NULL,
        severity      TEXT NOT NULL,
        state         TEXT NOT NULL,
        start_s       REAL NOT NULL,
        end_s         REAL,
        raised_at_ms  INTEGER NOT NULL,
        cleared_at_ms INTEGER,
        details       TEXT NOT NULL
    );
    CREATE INDEX alerts_stream_raised ON alerts (stream_id, raised_at_ms);
    CREATE INDEX alerts_raised ON alerts (raised_at_ms);
    CREATE INDEX alerts_cleared ON alerts (cleared_at_ms);
    CREATE INDEX alerts_active ON alerts (raised_at_ms) WHERE state = 'raised';
    CREATE TABLE metrics (
        stream_id TEXT NOT NULL,
        at_ms     INTEGER NOT NULL,
        media_t   REAL NOT NULL,
        name      TEXT NOT NULL,
        value     REAL NOT NULL
    );
    CREATE INDEX metrics_stream_at ON metrics (stream_id, at_ms);",
    // 2: alert management: suppression marks, acknowledgements, mutes, maintenance windows.
    "ALTER TABLE alerts ADD COLUMN suppressed TEXT;
    CREATE TABLE acks (
        alert_id TEXT PRIMARY KEY,
        by       TEXT NOT NULL,
        comment  TEXT NOT NULL,
        at_ms    INTEGER NOT NULL
    );
    CREATE TABLE mutes (
        stream_id TEXT PRIMARY KEY,
        until_ms  INTEGER,
        by        TEXT NOT NULL,
        comment   TEXT NOT NULL,
        at_ms     INTEGER NOT NULL
    );
    CREATE TABLE maintenance (
        id       TEXT PRIMARY KEY,
        streams  TEXT NOT NULL,
        start_ms INTEGER NOT NULL,
        end_ms   INTEGER NOT NULL,
        comment  TEXT NOT NULL,
        by       TEXT NOT NULL
    );",
    // 3: the notification outbox and its attempt log.
    "CREATE TABLE outbox (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        notifier      TEXT NOT NULL,
        alert_id      TEXT NOT NULL,
        state         TEXT NOT NULL,
        idem_key      TEXT NOT NULL,
        payload       TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        status        TEXT NOT NULL DEFAULT 'pending',
        attempts      INTEGER NOT NULL DEFAULT 0,
        last_error    TEXT,
        done_at_ms    INTEGER,
        group_key     TEXT,
        UNIQUE (notifier, idem_key)
    );
    CREATE INDEX outbox_pending ON outbox (notifier, id) WHERE status = 'pending';
    CREATE INDEX outbox_alert ON outbox (notifier, alert_id);
    CREATE TABLE outbox_attempts (
        outbox_id INTEGER NOT NULL,
        notifier  TEXT NOT NULL,
        at_ms     INTEGER NOT NULL,
        outcome   TEXT NOT NULL,
        detail    TEXT NOT NULL
    );
    CREATE INDEX outbox_attempts_notifier ON outbox_attempts (notifier, at_ms);",
    // 4: retention: aggregated metrics, and indexes to delete by alert and by age.
    "CREATE TABLE metrics_agg (
        stream_id TEXT NOT NULL,
        span_s    INTEGER NOT NULL,
        start_ms  INTEGER NOT NULL,
        media_t   REAL NOT NULL,
        name      TEXT NOT NULL,
        n         INTEGER NOT NULL,
        v_sum     REAL NOT NULL,
        v_max     REAL NOT NULL,
        PRIMARY KEY (stream_id, span_s, start_ms, name)
    ) WITHOUT ROWID;
    CREATE INDEX outbox_alert_id ON outbox (alert_id);
    CREATE INDEX outbox_attempts_at ON outbox_attempts (at_ms);",
];

/// A [`Store`] in one SQLite database (a file, or memory).
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Open (creating it and its parent directory if needed) and migrate the database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let open_err = |reason: String| StoreError::Open {
            path: path.display().to_string(),
            reason,
        };
        if path.is_dir() {
            return Err(open_err(
                "it is a directory; give a file path such as DIR/avmon.db".to_string(),
            ));
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                open_err(format!("cannot create directory {}: {e}", parent.display()))
            })?;
        }
        // No SQLITE_OPEN_URI: the path is taken literally, never as a `file:` URI.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| open_err(e.to_string()))?;
        configure(&conn, true).map_err(|e| open_err(e.to_string()))?;
        if conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(false) {
            return Err(open_err(
                "the file is read-only; avmon needs to write to it".to_string(),
            ));
        }
        Self::with_connection(conn)
    }

    /// A fresh, private in-memory database (gone when the store is dropped).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let open_err = |e: rusqlite::Error| StoreError::Open {
            path: ":memory:".to_string(),
            reason: e.to_string(),
        };
        let conn = Connection::open_in_memory().map_err(open_err)?;
        configure(&conn, false).map_err(open_err)?;
        Self::with_connection(conn)
    }

    fn with_connection(mut conn: Connection) -> Result<Self, StoreError> {
        migrate(&mut conn, MIGRATIONS)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    /// The schema version of the open database (the number of migrations applied).
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(user_version(&self.conn())?)
    }

    /// Make the database as full as a full disk makes it: no page beyond the `pages` it has
    /// (`None`: as many as SQLite allows). Writes that need another page then fail as on a full
    /// disk ([`StoreError::Storage`]). For tests; returns the pages it has now.
    #[doc(hidden)]
    pub fn limit_pages(&self, pages: Option<i64>) -> Result<i64, StoreError> {
        let conn = self.conn();
        let now: i64 = conn.pragma_query_value(None, "page_count", |r| r.get(0))?;
        let max = pages.map_or(4_294_967_294, |p| p.max(now));
        conn.pragma_update(None, "max_page_count", max)?;
        Ok(now)
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave the connection itself inconsistent (an
        // unfinished transaction rolls back when dropped), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn configure(conn: &Connection, file: bool) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    if file {
        // Reading the journal mode back also makes SQLite touch the file, so "not a database"
        // and permission problems surface here, at open, rather than on the first write.
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(%mode, "SQLite refused WAL mode; concurrent readers may block writes");
        }
        // Durable across application crashes in WAL mode; only an OS crash can lose the last
        // transactions, which is acceptable for monitoring history.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
    }
    Ok(())
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
}

/// Apply the migrations `conn` has not seen yet. Returns how many were applied.
fn migrate(conn: &mut Connection, migrations: &[&str]) -> Result<usize, StoreError> {
    let supported = migrations.len() as i64;
    let mut applied = 0;
    loop {
        let fail = |version: usize, e: rusqlite::Error| StoreError::Migration {
            version,
            reason: e.to_string(),
        };
        // IMMEDIATE takes the write lock before reading the version, so two processes opening
        // the same new database cannot both apply migration 1.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| fail(0, e))?;
        let current = user_version(&tx).map_err(|e| fail(0, e))?;
        if current > supported {
            return Err(StoreError::SchemaTooNew {
                found: current,
                supported,
            });
        }
        if current == supported {
            return Ok(applied);
        }
        let version = current as usize + 1;
        tx.execute_batch(migrations[current as usize])
            .map_err(|e| fail(version, e))?;
        tx.pragma_update(None, "user_version", version as i64)
            .map_err(|e| fail(version, e))?;
        tx.commit().map_err(|e| fail(version, e))?;
        tracing::info!(version, "migrated the database schema");
        applied += 1;
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::{DiskFull, SystemIoFailure};
        match e.sqlite_error_code() {
            // SQLite reports a write that found no space (ENOSPC) as SQLITE_FULL, and one the
            // disk failed as SQLITE_IOERR.
            Some(DiskFull | SystemIoFailure) => StoreError::Storage(e.to_string()),
            _ => StoreError::Database(e.to_string()),
        }
    }
}

fn to_ms(t: WallTime) -> i64 {
    t.timestamp_millis()
}

fn from_ms(table: &'static str, ms: i64) -> Result<WallTime, StoreError> {
    chrono::DateTime::from_timestamp_millis(ms).ok_or_else(|| StoreError::Corrupt {
        table,
        reason: format!("time {ms} ms is out of range"),
    })
}

/// An alerts row as stored, before decoding.
struct AlertRow {
    id: String,
    stream_id: String,
    kind: String,
    severity: String,
    state: String,
    start_s: f64,
    end_s: Option<f64>,
    raised_at_ms: i64,
    cleared_at_ms: Option<i64>,
    details: String,
    suppressed: Option<String>,
    ack_by: Option<String>,
    ack_comment: Option<String>,
    ack_at_ms: Option<i64>,
}

/// The columns [`AlertRow::read`] reads, in order (`a` is alerts, `k` acks).
const ALERT_COLUMNS: &str = "a.id, a.stream_id, a.kind, a.severity, a.state, a.start_s, a.end_s,
     a.raised_at_ms, a.cleared_at_ms, a.details, a.suppressed, k.by, k.comment, k.at_ms
     FROM alerts a LEFT JOIN acks k ON k.alert_id = a.id";

impl AlertRow {
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(AlertRow {
            id: r.get(0)?,
            stream_id: r.get(1)?,
            kind: r.get(2)?,
            severity: r.get(3)?,
            state: r.get(4)?,
            start_s: r.get(5)?,
            end_s: r.get(6)?,
            raised_at_ms: r.get(7)?,
            cleared_at_ms: r.get(8)?,
            details: r.get(9)?,
            suppressed: r.get(10)?,
            ack_by: r.get(11)?,
            ack_comment: r.get(12)?,
            ack_at_ms: r.get(13)?,
        })
    }

    fn decode_record(mut self) -> Result<AlertRecord, StoreError> {
        const T: &str = "alerts";
        let suppressed = match self.suppressed.take() {
            None => None,
            Some(s) => Some(
                Suppressed::parse(&s)
                    .ok_or_else(|| corrupt(T, format_args!("unknown suppressed {s:?}")))?,
            ),
        };
        let ack = match (self.ack_by.take(), self.ack_comment.take(), self.ack_at_ms) {
            (Some(by), Some(comment), Some(ms)) => Some(Ack {
                by,
                comment,
                at: from_ms("acks", ms)?,
            }),
            _ => None,
        };
        Ok(AlertRecord {
            alert: self.decode()?,
            ack,
            suppressed,
        })
    }

    fn decode(self) -> Result<Alert, StoreError> {
        const T: &str = "alerts";
        let state = parse_state(T, &self.state)?;
        Ok(Alert {
            severity: self
                .severity
                .parse::<Severity>()
                .map_err(|e| corrupt(T, e))?,
            details: serde_json::from_str::<Details>(&self.details)
                .map_err(|e| corrupt(T, format_args!("details of {}: {e}", self.id)))?,
            raised_at: from_ms(T, self.raised_at_ms)?,
            cleared_at: self.cleared_at_ms.map(|ms| from_ms(T, ms)).transpose()?,
            id: self.id,
            stream_id: StreamId(self.stream_id),
            kind: self.kind,
            state,
            start_s: self.start_s,
            end_s: self.end_s,
        })
    }
}

impl Store for SqliteStore {
    fn upsert_stream(&self, s: &StreamRecord) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO streams (id, url, config, created_at_ms, removed_at_ms)
             VALUES (?1, ?2, ?3, ?4, NULL)
             ON CONFLICT (id) DO UPDATE SET
                 url = excluded.url,
                 config = excluded.config,
                 created_at_ms = CASE WHEN removed_at_ms IS NULL
                                      THEN created_at_ms ELSE excluded.created_at_ms END,
                 removed_at_ms = NULL",
            params![
                s.id.as_str(),
                s.url,
                s.config.to_string(),
                to_ms(s.created_at)
            ],
        )?;
        Ok(())
    }

    fn remove_stream(&self, id: &StreamId) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "UPDATE streams SET removed_at_ms = ?2 WHERE id = ?1 AND removed_at_ms IS NULL",
            params![id.as_str(), to_ms(chrono::Utc::now())],
        )?;
        Ok(n > 0)
    }

    fn streams(&self) -> Result<Vec<StreamRecord>, StoreError> {
        const T: &str = "streams";
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, url, config, created_at_ms FROM streams
             WHERE removed_at_ms IS NULL ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, url, config, created_at_ms) = row?;
            out.push(StreamRecord {
                config: serde_json::from_str(&config)
                    .map_err(|e| corrupt(T, format_args!("config of {id}: {e}")))?,
                id: StreamId(id),
                url,
                created_at: from_ms(T, created_at_ms)?,
            });
        }
        Ok(out)
    }

    fn record_alert(&self, ev: &AlertEvent) -> Result<(), StoreError> {
        let a = &ev.alert;
        let state = match ev.transition {
            Transition::Cleared => AlertState::Cleared,
            Transition::Raised | Transition::Updated => a.state,
        };
        let details = serde_json::Value::Object(a.details.clone()).to_string();
        // A cleared alert is final (`WHERE alerts.state = 'raised'`): replays and stragglers
        // cannot reopen it.
        self.conn().execute(
            "INSERT INTO alerts (id, stream_id, kind, severity, state, start_s, end_s,
                                 raised_at_ms, cleared_at_ms, details)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (id) DO UPDATE SET
                 severity = excluded.severity,
                 state = excluded.state,
                 end_s = excluded.end_s,
                 cleared_at_ms = excluded.cleared_at_ms,
                 details = excluded.details
             WHERE alerts.state = 'raised'",
            params![
                a.id,
                a.stream_id.as_str(),
                a.kind,
                a.severity.as_str(),
                state_str(state),
                a.start_s,
                a.end_s,
                to_ms(a.raised_at),
                a.cleared_at.map(to_ms),
                details,
            ],
        )?;
        Ok(())
    }

    fn alert_records(&self, q: &AlertQuery) -> Result<Vec<AlertRecord>, StoreError> {
        let mut sql = format!("SELECT {ALERT_COLUMNS} WHERE 1 = 1");
        let mut args: Vec<Value> = Vec::new();
        let arg = |v: Value, args: &mut Vec<Value>| {
            args.push(v);
            args.len()
        };
        if let Some(stream) = &q.stream {
            let n = arg(Value::Text(stream.0.clone()), &mut args);
            sql.push_str(&format!(" AND a.stream_id = ?{n}"));
        }
        if let Some(since) = q.since {
            let n = arg(Value::Integer(to_ms(since)), &mut args);
            sql.push_str(&format!(
                " AND (a.raised_at_ms >= ?{n} OR a.cleared_at_ms >= ?{n})"
            ));
        }
        if let Some(until) = q.until {
            let n = arg(Value::Integer(to_ms(until)), &mut args);
            sql.push_str(&format!(" AND a.raised_at_ms <= ?{n}"));
        }
        if q.active_only {
            sql.push_str(" AND a.state = 'raised'");
        }
        if let Some(state) = q.state {
            sql.push_str(&format!(" AND a.state = '{}'", state_str(state)));
        }
        for (column, values) in [
            ("a.kind", q.kinds.clone()),
            (
                "a.severity",
                q.severities.iter().map(|s| s.as_str().to_owned()).collect(),
            ),
        ] {
            if !values.is_empty() {
                let marks: Vec<String> = values
                    .into_iter()
                    .map(|v| format!("?{}", arg(Value::Text(v), &mut args)))
                    .collect();
                sql.push_str(&format!(" AND {column} IN ({})", marks.join(", ")));
            }
        }
        match q.acked {
            Some(true) => sql.push_str(" AND k.alert_id IS NOT NULL"),
            Some(false) => sql.push_str(" AND k.alert_id IS NULL"),
            None => {}
        }
        // LIMIT -1 is SQLite for "no limit".
        let limit = if q.limit == 0 {
            -1
        } else {
            i64::try_from(q.limit).unwrap_or(i64::MAX)
        };
        let n = arg(Value::Integer(limit), &mut args);
        sql.push_str(&format!(
            " ORDER BY a.raised_at_ms DESC, a.id DESC LIMIT ?{n}"
        ));

        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), AlertRow::read)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row?.decode_record()?);
        }
        Ok(out)
    }

    fn alert(&self, id: &str) -> Result<Option<AlertRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!("SELECT {ALERT_COLUMNS} WHERE a.id = ?1"))?;
        let row = stmt.query_row([id], AlertRow::read).optional()?;
        row.map(AlertRow::decode_record).transpose()
    }

    fn mark_alert(&self, id: &str, why: Suppressed) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE alerts SET suppressed = ?2 WHERE id = ?1",
            params![id, why.as_str()],
        )?;
        Ok(())
    }

    fn ack_alert(&self, id: &str, ack: &Ack) -> Result<AckOutcome, StoreError> {
        {
            let conn = self.conn();
            let exists: Option<i64> = conn
                .query_row("SELECT 1 FROM alerts WHERE id = ?1", [id], |r| r.get(0))
                .optional()?;
            if exists.is_none() {
                return Ok(AckOutcome::NotFound);
            }
            let n = conn.execute(
                "INSERT INTO acks (alert_id, by, comment, at_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (alert_id) DO NOTHING",
                params![id, ack.by, ack.comment, to_ms(ack.at)],
            )?;
            if n == 0 {
                let first = conn.query_row(
                    "SELECT by, comment, at_ms FROM acks WHERE alert_id = ?1",
                    [id],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                        ))
                    },
                )?;
                return Ok(AckOutcome::AlreadyAcked(Ack {
                    by: first.0,
                    comment: first.1,
                    at: from_ms("acks", first.2)?,
                }));
            }
        }
        match self.alert(id)? {
            Some(r) => Ok(AckOutcome::Acked(Box::new(r))),
            None => Ok(AckOutcome::NotFound),
        }
    }

    fn mutes(&self) -> Result<Vec<Mute>, StoreError> {
        const T: &str = "mutes";
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT stream_id, until_ms, by, comment, at_ms FROM mutes ORDER BY stream_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (stream_id, until, by, comment, at) = row?;
            out.push(Mute {
                stream_id,
                until: until.map(|ms| from_ms(T, ms)).transpose()?,
                by,
                comment,
                at: from_ms(T, at)?,
            });
        }
        Ok(out)
    }

    fn set_mute(&self, m: &Mute) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO mutes (stream_id, until_ms, by, comment, at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                m.stream_id,
                m.until.map(to_ms),
                m.by,
                m.comment,
                to_ms(m.at)
            ],
        )?;
        Ok(())
    }

    fn remove_mute(&self, stream: &StreamId) -> Result<bool, StoreError> {
        let n = self
            .conn()
            .execute("DELETE FROM mutes WHERE stream_id = ?1", [stream.as_str()])?;
        Ok(n > 0)
    }

    fn windows(&self) -> Result<Vec<MaintenanceWindow>, StoreError> {
        const T: &str = "maintenance";
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, streams, start_ms, end_ms, comment, by FROM maintenance
             ORDER BY start_ms, id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, streams, start, end, comment, by) = row?;
            out.push(MaintenanceWindow {
                streams: serde_json::from_str(&streams)
                    .map_err(|e| corrupt(T, format_args!("streams of {id}: {e}")))?,
                id,
                start: from_ms(T, start)?,
                end: from_ms(T, end)?,
                comment,
                by,
            });
        }
        Ok(out)
    }

    fn add_window(&self, w: &MaintenanceWindow) -> Result<(), StoreError> {
        let streams = serde_json::Value::from(w.streams.clone()).to_string();
        self.conn().execute(
            "INSERT OR REPLACE INTO maintenance (id, streams, start_ms, end_ms, comment, by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![w.id, streams, to_ms(w.start), to_ms(w.end), w.comment, w.by],
        )?;
        Ok(())
    }

    fn remove_window(&self, id: &str) -> Result<bool, StoreError> {
        let n = self
            .conn()
            .execute("DELETE FROM maintenance WHERE id = ?1", [id])?;
        Ok(n > 0)
    }

    fn record_metrics(&self, m: &MetricsSample) -> Result<(), StoreError> {
        self.record_metrics_batch(std::slice::from_ref(m))
    }

    fn record_metrics_batch(&self, samples: &[MetricsSample]) -> Result<(), StoreError> {
        // One transaction for the lot: SQLite's cost is the commit, not the row.
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO metrics (stream_id, at_ms, media_t, name, value)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for m in samples {
                let at = to_ms(m.at);
                for (name, value) in &m.values {
                    stmt.execute(params![m.stream_id.as_str(), at, m.media_t, name, value])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn metrics_range(
        &self,
        stream: &StreamId,
        q: &MetricsQuery,
    ) -> Result<Vec<MetricsSample>, StoreError> {
        let mut args: Vec<Value> = vec![
            Value::Text(stream.0.clone()),
            Value::Integer(q.since.map_or(i64::MIN, to_ms)),
            Value::Integer(q.until.map_or(i64::MAX, to_ms)),
        ];
        let mut names = String::new();
        if !q.names.is_empty() {
            let mut marks = Vec::new();
            for name in &q.names {
                args.push(Value::Text(name.clone()));
                marks.push(format!("?{}", args.len()));
            }
            names = format!(" AND name IN ({})", marks.join(", "));
        }
        // The raw samples, then what retention folded in the same range.
        let queries = [
            (
                // The same shape as the aggregates' rows: one sample, its value, its value.
                "SELECT at_ms, media_t, name, value, 1, value FROM metrics
                 WHERE stream_id = ?1 AND at_ms >= ?2 AND at_ms <= ?3",
                " ORDER BY at_ms, rowid",
            ),
            (
                "SELECT start_ms, media_t, name, v_sum, n, v_max FROM metrics_agg
                 WHERE stream_id = ?1 AND start_ms >= ?2 AND start_ms <= ?3",
                " ORDER BY start_ms, span_s, name",
            ),
        ];
        let conn = self.conn();
        let read = |(select, order): (&str, &str)| -> Result<Vec<_>, StoreError> {
            let mut stmt = conn.prepare_cached(&format!("{select}{names}{order}"))?;
            let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, f64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, f64>(3)?,
                    (r.get::<_, i64>(4)?, r.get::<_, f64>(5)?),
                ))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        };
        let mut samples = Samples::new(stream);
        for (at_ms, media_t, name, value, _) in read(queries[0])? {
            samples.push(from_ms("metrics", at_ms)?, media_t, name, value);
        }
        let mut folded = Aggregates::new(stream);
        for (start_ms, media_t, name, sum, (n, max)) in read(queries[1])? {
            let start = from_ms("metrics_agg", start_ms)?;
            folded.push(start, media_t, name, (n, sum, max));
        }
        Ok(folded.merge(samples.finish(0), q.limit))
    }

    fn prune_metrics(&self, before: WallTime) -> Result<u64, StoreError> {
        let n = self
            .conn()
            .execute("DELETE FROM metrics WHERE at_ms < ?1", [to_ms(before)])?;
        Ok(n as u64)
    }

    fn outbox_add(&self, e: &OutboxEntry) -> Result<Option<i64>, StoreError> {
        let conn = self.conn();
        let n = conn.execute(
            "INSERT INTO outbox (notifier, alert_id, state, idem_key, payload, created_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (notifier, idem_key) DO NOTHING",
            params![
                e.notifier,
                e.alert_id,
                e.state,
                e.key,
                e.payload.to_string(),
                to_ms(e.created_at)
            ],
        )?;
        Ok((n > 0).then(|| conn.last_insert_rowid()))
    }

    fn outbox_has_alert(&self, notifier: &str, alert_id: &str) -> Result<bool, StoreError> {
        Ok(self.conn().query_row(
            "SELECT EXISTS (SELECT 1 FROM outbox WHERE notifier = ?1 AND alert_id = ?2)",
            params![notifier, alert_id],
            |r| r.get(0),
        )?)
    }

    fn outbox_pending(&self, notifier: &str, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        outbox_query(
            &self.conn(),
            "WHERE notifier = ?1 AND status = 'pending' ORDER BY id LIMIT ?2",
            params![notifier, limit],
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
        let done = (effect.status != OutboxStatus::Pending).then(|| to_ms(at));
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE outbox SET attempts = attempts + 1, status = ?2,
                     last_error = COALESCE(?3, last_error), done_at_ms = ?4,
                     group_key = COALESCE(?5, group_key)
                 WHERE id = ?1 AND status = 'pending'",
            )?;
            for id in ids {
                stmt.execute(params![
                    id,
                    effect.status.as_str(),
                    effect.error,
                    done,
                    effect.group_key
                ])?;
            }
        }
        tx.execute(
            "INSERT INTO outbox_attempts (outbox_id, notifier, at_ms, outcome, detail)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![first, notifier, to_ms(at), effect.name, detail.to_string()],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn outbox_pending_by_notifier(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT notifier, COUNT(*) FROM outbox WHERE status = 'pending'
             GROUP BY notifier ORDER BY notifier",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn outbox_counts(&self, notifier: &str) -> Result<OutboxCounts, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT status, COUNT(*) FROM outbox WHERE notifier = ?1 GROUP BY status",
        )?;
        let rows = stmt.query_map([notifier], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })?;
        let mut c = OutboxCounts::default();
        for row in rows {
            let (status, n) = row?;
            let n = n.max(0) as u64;
            match parse_status("outbox", &status)? {
                OutboxStatus::Pending => c.pending = n,
                OutboxStatus::Delivered => c.delivered = n,
                OutboxStatus::Failed => c.failed = n,
            }
        }
        Ok(c)
    }

    fn outbox_rows(&self, notifier: &str) -> Result<Vec<OutboxRow>, StoreError> {
        outbox_query(
            &self.conn(),
            "WHERE notifier = ?1 ORDER BY id",
            params![notifier],
        )
    }

    fn outbox_attempts(&self, notifier: &str) -> Result<Vec<AttemptRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT outbox_id, at_ms, outcome, detail FROM outbox_attempts
             WHERE notifier = ?1 ORDER BY at_ms, rowid",
        )?;
        let rows = stmt.query_map([notifier], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (outbox_id, at_ms, outcome, detail) = row?;
            out.push(AttemptRecord {
                outbox_id,
                notifier: notifier.to_string(),
                at: from_ms("outbox_attempts", at_ms)?,
                outcome,
                detail: serde_json::from_str(&detail).map_err(|e| corrupt("outbox_attempts", e))?,
            });
        }
        Ok(out)
    }

    fn outbox_open_groups(&self, notifier: &str) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT r.alert_id, r.group_key FROM outbox r
             WHERE r.notifier = ?1 AND r.state IN ('raised', 'updated')
               AND r.status = 'delivered' AND r.group_key IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM outbox c
                               WHERE c.notifier = r.notifier AND c.alert_id = r.alert_id
                                 AND c.state = 'cleared' AND c.status != 'pending')
             ORDER BY r.id",
        )?;
        let rows = stmt.query_map([notifier], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn metrics_streams(&self) -> Result<Vec<StreamId>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(METRICS_STREAMS)?;
        let ids = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(ids
            .map(|id| id.map(StreamId))
            .collect::<Result<Vec<_>, _>>()?)
    }

    fn fold_metrics(
        &self,
        stream: &StreamId,
        from_s: u32,
        to_s: u32,
        before: WallTime,
        max_rows: usize,
    ) -> Result<u64, StoreError> {
        let span_ms = i64::from(to_s) * 1000;
        let bucket = |ms: i64| ms - ms.rem_euclid(span_ms);
        let before = to_ms(crate::retention::align_down(before, to_s));
        // The source rows: `?1` the stream, `?2` and `?3` a time range, `?4` the source span;
        // folded into `?5`-second buckets of `?6` ms.
        let (table, time, span, folds) = match from_s {
            0 => (
                "metrics",
                "at_ms",
                "?4 = 0",
                "COUNT(*), SUM(value), MAX(value)",
            ),
            _ => (
                "metrics_agg",
                "start_ms",
                "span_s = ?4",
                "SUM(n), SUM(v_sum), MAX(v_max)",
            ),
        };
        let source = format!(
            "FROM {table} WHERE stream_id = ?1 AND {time} >= ?2 AND {time} < ?3 AND {span}"
        );
        let bucket_of = format!("{time} - ({time} % ?6)");
        let fold = format!(
            "SELECT stream_id, ?5, {bucket_of}, MAX(media_t), name, {folds} {source} \
             GROUP BY {bucket_of}, name"
        );
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let first: Option<i64> = tx.query_row(
            &format!("SELECT MIN({time}) {source}"),
            params![stream.as_str(), i64::MIN, before, from_s],
            |r| r.get(0),
        )?;
        let Some(first) = first else {
            return Ok(0);
        };
        // About `max_rows` rows: up to the bucket of the row that many rows on, at least one.
        let far: Option<i64> = tx
            .query_row(
                &format!("SELECT {time} {source} ORDER BY {time} LIMIT 1 OFFSET ?5"),
                params![stream.as_str(), first, before, from_s, max_rows as i64],
                |r| r.get(0),
            )
            .optional()?;
        let end = far.map_or(before, |t| bucket(t).max(bucket(first) + span_ms));
        let (start, span) = (bucket(first), i64::from(to_s));
        tx.execute(
            &format!(
                "INSERT INTO metrics_agg
                     (stream_id, span_s, start_ms, media_t, name, n, v_sum, v_max)
                 {fold}
                 ON CONFLICT (stream_id, span_s, start_ms, name) DO UPDATE SET
                     media_t = max(media_t, excluded.media_t),
                     n = n + excluded.n,
                     v_sum = v_sum + excluded.v_sum,
                     v_max = max(v_max, excluded.v_max)"
            ),
            params![stream.as_str(), start, end, from_s, span, span_ms],
        )?;
        let n = tx.execute(
            &format!("DELETE {source}"),
            params![stream.as_str(), start, end, from_s],
        )?;
        tx.commit()?;
        Ok(n as u64)
    }

    fn delete_aggregates(
        &self,
        stream: &StreamId,
        span_s: u32,
        before: WallTime,
        max_rows: usize,
    ) -> Result<u64, StoreError> {
        let n = self.conn().execute(
            "DELETE FROM metrics_agg WHERE (stream_id, span_s, start_ms, name) IN (
                 SELECT stream_id, span_s, start_ms, name FROM metrics_agg
                 WHERE stream_id = ?1 AND span_s = ?2 AND start_ms < ?3
                 ORDER BY start_ms LIMIT ?4)",
            params![stream.as_str(), span_s, to_ms(before), max_rows as i64],
        )?;
        Ok(n as u64)
    }

    fn delete_cleared_alerts(&self, before: WallTime, max: usize) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let ids: Vec<String> = {
            let mut stmt = tx.prepare_cached(
                "SELECT id FROM alerts a
                 WHERE state = 'cleared' AND cleared_at_ms < ?1
                   AND NOT EXISTS (SELECT 1 FROM outbox o
                                   WHERE o.alert_id = a.id AND o.status = 'pending')
                 ORDER BY cleared_at_ms LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![to_ms(before), max as i64], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        for table in [
            "DELETE FROM acks WHERE alert_id = ?1",
            "DELETE FROM outbox WHERE alert_id = ?1",
            "DELETE FROM alerts WHERE id = ?1",
        ] {
            let mut stmt = tx.prepare_cached(table)?;
            for id in &ids {
                stmt.execute([id])?;
            }
        }
        tx.commit()?;
        Ok(ids.len() as u64)
    }

    fn delete_attempts(&self, before: WallTime, max: usize) -> Result<u64, StoreError> {
        let n = self.conn().execute(
            "DELETE FROM outbox_attempts WHERE rowid IN (
                 SELECT rowid FROM outbox_attempts WHERE at_ms < ?1 ORDER BY at_ms LIMIT ?2)",
            params![to_ms(before), max as i64],
        )?;
        Ok(n as u64)
    }
}

/// Outbox rows matching `tail` (a `WHERE … ORDER BY …` clause on `params`).
fn outbox_query(
    conn: &Connection,
    tail: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<OutboxRow>, StoreError> {
    const T: &str = "outbox";
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT id, notifier, alert_id, state, idem_key, payload, created_at_ms, status,
                attempts, last_error, group_key
         FROM outbox {tail}"
    ))?;
    #[allow(clippy::type_complexity)]
    let rows = stmt.query_map(params, |r| {
        Ok((
            r.get::<_, i64>(0)?,
            (
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ),
            (
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, i64>(6)?,
            ),
            (r.get::<_, String>(7)?, r.get::<_, i64>(8)?),
            (
                r.get::<_, Option<String>>(9)?,
                r.get::<_, Option<String>>(10)?,
            ),
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (
            id,
            (notifier, alert_id, state),
            (key, payload, created),
            (status, attempts),
            (last_error, group_key),
        ) = row?;
        let status = parse_status(T, &status)?;
        out.push(OutboxRow {
            id,
            entry: OutboxEntry {
                notifier,
                alert_id,
                state,
                key,
                payload: serde_json::from_str(&payload)
                    .map_err(|e| corrupt(T, format_args!("payload of row {id}: {e}")))?,
                created_at: from_ms(T, created)?,
            },
            status,
            attempts: u32::try_from(attempts).unwrap_or(0),
            last_error,
            group_key,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_migrations_apply_on_top_of_earlier_ones() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut conn, &MIGRATIONS[..1]).unwrap(), 1);
        assert_eq!(migrate(&mut conn, &MIGRATIONS[..1]).unwrap(), 0);
        // A version 1 database (before alert management and the outbox) takes the later ones.
        assert_eq!(
            migrate(&mut conn, MIGRATIONS).unwrap(),
            MIGRATIONS.len() - 1
        );
        let mut v2: Vec<&str> = MIGRATIONS.to_vec();
        v2.push("ALTER TABLE streams ADD COLUMN note TEXT");
        assert_eq!(migrate(&mut conn, &v2).unwrap(), 1, "only the new one runs");
        assert_eq!(user_version(&conn).unwrap(), v2.len() as i64);
        // An older build refuses the newer database rather than guessing.
        assert!(matches!(
            migrate(&mut conn, MIGRATIONS),
            Err(StoreError::SchemaTooNew { found, supported })
                if found == v2.len() as i64 && supported == MIGRATIONS.len() as i64
        ));
    }

    #[test]
    fn a_failing_migration_leaves_the_previous_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        let bad = [
            MIGRATIONS[0],
            "CREATE TABLE x (a); CREATE TABLE streams (b)",
        ];
        let err = migrate(&mut conn, &bad).unwrap_err();
        assert!(
            matches!(err, StoreError::Migration { version: 2, .. }),
            "{err}"
        );
        assert_eq!(user_version(&conn).unwrap(), 1);
        let x: Option<String> = conn
            .query_row("SELECT name FROM sqlite_master WHERE name = 'x'", [], |r| {
                r.get(0)
            })
            .optional()
            .unwrap();
        assert_eq!(x, None, "the failed migration rolled back entirely");
    }
}
