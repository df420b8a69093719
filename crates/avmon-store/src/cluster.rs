//! The cluster's coordination, in the PostgreSQL database that its nodes share.
//!
//! # Contract
//!
//! Every decision that two nodes could both take is taken in **one SQL statement, or one
//! transaction holding row locks**, and every time that such a decision compares is the
//! database's own `now()` (the transaction's start), never a node's clock: nodes' clocks may
//! disagree, the database's is the one they share. There is no consensus protocol of avmon's
//! own; the database's row locks are the only arbiter (the pattern of river, Oban and
//! GreptimeDB's PostgreSQL election). SQLite (a standalone node) has no cluster.
//!
//! - **Nodes** ([`Coordinator::register`]): one row per name. A name belongs to one process
//!   (an *instance*, a UUID made at start) at a time: registering is refused
//!   ([`StoreError::DuplicateNode`]) while another instance of that name was seen within the
//!   TTL and has not deregistered. Once that instance is silent past the TTL, the new one takes
//!   the name over, and the old instance's leases become claimable at once. A replaced (or
//!   deregistered) instance gets [`StoreError::NotRegistered`] from every call that acts as the
//!   node, so a process that was stopped (SIGSTOP, a partition) and comes back learns it must
//!   stop its streams.
//! - **Leases** (table `leases`, one row per stream): `node`/`instance` (the holder, `NULL` when
//!   nobody), `epoch`, `expires_at`. A lease past its expiry is *claimable*, not lost:
//!   [`Coordinator::claim`] takes unowned and expired leases with `FOR UPDATE SKIP LOCKED` (two
//!   claimers never get the same row, and never wait for each other), and each claim adds one
//!   to the epoch. Until another claim takes it, the holder may still renew an expired lease
//!   with the same epoch ([`Coordinator::renew`]): a node that kept watching through a database
//!   outage continues, and what it buffered still passes the fence.
//! - **The epoch rule**: a `(stream, epoch)` pair names one holding. Results are written with
//!   the epoch they were made under ([`Coordinator::record_alert_fenced`],
//!   [`Coordinator::record_metrics_fenced`]) and refused ([`StoreError::Fenced`]) when the
//!   stream's epoch is no longer that one. The check and the write are one transaction that
//!   holds the lease row `FOR SHARE`, so a claim (which locks it `FOR UPDATE`) orders itself
//!   entirely before or after the write: once a new owner's claim is committed, nothing of the
//!   old owner lands. A released stream keeps its epoch until the next claim, so the releasing
//!   node's final flush still passes.
//! - **Pins**: a push input reaches one host only, so a stream whose config has a `node` key
//!   (the `node = "…"` of its `[[streams]]` table, stored in `streams.config`) is only ever
//!   claimed by the node of that name. [`Coordinator::renew`] hands back a stream whose pin
//!   moved to another node, and one that was removed.
//! - **Monitoring gaps** (table `monitoring_gaps`): the claim that ends a time during which
//!   nobody watched a stream records it, in the same transaction:
//!   - `node_lost`: the previous lease expired while held (its node died or stalled); from the
//!     holder's last renewal (the last time it is known to have been watching) to the claim;
//!   - `released`: the stream was handed over cleanly but nobody claimed it within
//!     [`HANDOVER_GRACE`]; from the release to the claim. A hand-over claimed sooner (the
//!     normal case, woken by `avmon_leases`) records nothing.
//!
//!   A new stream's first claim records nothing (it was never watched). Gaps still open
//!   (streams nobody holds right now) are listed by [`Coordinator::unwatched`].
//! - **Outbox claims** ([`Coordinator::outbox_claim`]): a node claims a notifier's pending rows
//!   for a TTL (`claimed_by`, `claimed_until`); `Store::outbox_attempt` ends the claim. While
//!   any node holds a live claim on a notifier's rows, no other node claims that notifier's
//!   rows (a per-notifier advisory lock makes the check and the claim one decision): a
//!   notifier's notifications are delivered in order by one node at a time. A node that dies
//!   leaves its claims to expire; another node then takes them. The claim TTL must be longer
//!   than one delivery attempt, so a live node's claim never runs out under it.
//! - **LISTEN/NOTIFY** ([`Listener`], [`Coordinator::notify`]): wake-ups, not a log. A
//!   notification can be lost (the listener's connection broke: it then reports
//!   [`Heard::Reconnected`], and the receiver re-reads the state it cares about). Payloads are
//!   at most [`MAX_PAYLOAD`] bytes (PostgreSQL's limit); a bigger one is refused with
//!   [`StoreError::Invalid`]: send the row's id and let receivers read the row. Channels:
//!   [`EVENTS_CHANNEL`] and [`LEASES_CHANNEL`] (released streams, joining and leaving nodes:
//!   claimers wake at once instead of waiting for their next poll).
//!
//! Like [`PostgresStore`], the API is synchronous: call it from plain threads or
//! `spawn_blocking`, never on an async task's own thread.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use avmon_core::{Alert, AlertEvent, AlertState, StreamId, WallTime};
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, GenericClient, Transaction};
use uuid::Uuid;

use crate::postgres::{
    alert_record, outbox_row, stream_record, write_alert, write_metrics, write_outbox, Conn,
    ALERT_COLUMNS, OUTBOX_COLUMNS,
};
use crate::{
    AlertQuery, MetricsSample, OutboxEntry, OutboxRow, PostgresStore, Store, StoreError,
    StreamRecord,
};

/// Live events for every console (alert transitions, stream state), from every node.
pub const EVENTS_CHANNEL: &str = "avmon_events";

/// Lease changes worth acting on now: a stream released, a node joined or left. Claimers
/// listen here so that a hand-over is taken at once rather than at the next poll.
pub const LEASES_CHANNEL: &str = "avmon_leases";

/// The largest NOTIFY payload, in bytes: PostgreSQL refuses 8000 and more (with its default
/// block size).
pub const MAX_PAYLOAD: usize = 7999;

/// A released stream claimed within this time records no monitoring gap: that is a clean
/// hand-over, the next owner woken by [`LEASES_CHANNEL`]. Later than this, the wait is a gap.
pub const HANDOVER_GRACE: Duration = Duration::from_secs(5);

/// The longest TTL accepted, against a unit mistake (milliseconds given as seconds).
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// The first key of the per-notifier advisory lock of [`Coordinator::outbox_claim`] ("avmo"),
/// the second being the notifier's hash: apart from [`crate::postgres::MIGRATION_LOCK`]'s
/// one-key space.
const OUTBOX_LOCK_CLASS: i32 = 0x6176_6d6f;

/// A node as it registers: who it is, where its API is, how much it can take.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeInfo {
    /// The node's name in the cluster (`[cluster] name`, the hostname by default).
    pub name: String,
    /// This process: a new one at every start, so a restarted node is told apart from the one
    /// before it.
    pub instance: Uuid,
    /// The API address other nodes and consoles reach it at.
    pub api_addr: String,
    /// What it can hold, in the scheduler's cost units.
    pub capacity: f64,
}

impl NodeInfo {
    /// A node of a new instance, its fields checked.
    pub fn new(
        name: impl Into<String>,
        api_addr: impl Into<String>,
        capacity: f64,
    ) -> Result<NodeInfo, StoreError> {
        let node = NodeInfo {
            name: name.into(),
            instance: Uuid::now_v7(),
            api_addr: api_addr.into(),
            capacity,
        };
        node.check()?;
        Ok(node)
    }

    fn check(&self) -> Result<(), StoreError> {
        let invalid = |m: String| Err(StoreError::Invalid(m));
        if self.name.is_empty() || self.name.len() > 64 {
            return invalid(format!(
                "cluster node name {:?}: must be 1 to 64 bytes",
                self.name
            ));
        }
        if self.name.chars().any(char::is_control) {
            return invalid(format!(
                "cluster node name {:?}: must not contain control characters",
                self.name
            ));
        }
        if !self.capacity.is_finite() || self.capacity < 0.0 {
            return invalid(format!(
                "cluster node {:?}: capacity {} must be a finite number >= 0",
                self.name, self.capacity
            ));
        }
        Ok(())
    }
}

/// A node as [`Coordinator::nodes`] reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeStatus {
    pub name: String,
    pub instance: Uuid,
    pub api_addr: String,
    pub capacity: f64,
    /// The load it last reported.
    pub load: f64,
    /// Seen within the TTL (by the database's clock) and not deregistered.
    pub alive: bool,
    /// Deregistered (a clean shutdown).
    pub left: bool,
    /// Streams it holds under leases not expired.
    pub streams: u64,
    pub started_at: WallTime,
    pub last_seen: WallTime,
    /// Seconds since `last_seen`, by the database's clock.
    pub seen_ago_s: f64,
}

/// Why nobody watched a stream for a while.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GapReason {
    /// Its lease expired while held: the node died, stalled or lost the database.
    NodeLost,
    /// It was handed over, and nobody claimed it within [`HANDOVER_GRACE`].
    Released,
}

impl GapReason {
    pub fn as_str(self) -> &'static str {
        match self {
            GapReason::NodeLost => "node_lost",
            GapReason::Released => "released",
        }
    }

    fn parse(s: &str) -> Result<GapReason, StoreError> {
        match s {
            "node_lost" => Ok(GapReason::NodeLost),
            "released" => Ok(GapReason::Released),
            other => Err(crate::common::corrupt(
                "monitoring_gaps",
                format_args!("unknown reason {other:?}"),
            )),
        }
    }
}

/// A time during which no node watched a stream (see the module doc).
#[derive(Clone, Debug, PartialEq)]
pub struct Gap {
    pub id: i64,
    pub stream: StreamId,
    pub from: WallTime,
    pub to: WallTime,
    /// The node that held it before (`None` for a release of a node since forgotten).
    pub prev_node: Option<String>,
    /// The node whose claim ended the gap.
    pub next_node: String,
    pub reason: GapReason,
}

impl Gap {
    /// The gap's length (zero if the clock went backwards).
    pub fn duration(&self) -> Duration {
        (self.to - self.from).to_std().unwrap_or_default()
    }
}

/// A stream taken by [`Coordinator::claim`].
#[derive(Clone, Debug, PartialEq)]
pub struct Claimed {
    pub stream: StreamRecord,
    /// The epoch to write its results under.
    pub epoch: i64,
    /// The gap this claim ended, if there was one.
    pub gap: Option<Gap>,
}

/// A stream of [`Coordinator::renew`]'s answer: still held, under this epoch.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Held {
    pub stream: StreamId,
    pub epoch: i64,
}

/// A stream that no node watches right now (an open gap, or a stream not yet claimed).
#[derive(Clone, Debug, PartialEq)]
pub struct Unwatched {
    pub stream: StreamId,
    /// The node its config pins it to, if any (if that node is down, nobody else may take it).
    pub pinned_node: Option<String>,
    /// Whoever held it last (`None`: released, or never held).
    pub prev_node: Option<String>,
    /// Since when: the last holder's last renewal, or the release; `None` if never watched.
    pub since: Option<WallTime>,
}

/// Samples that [`Coordinator::record_metrics_fenced`] refused: their stream's epoch moved on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stale {
    pub stream: StreamId,
    pub epoch: i64,
    /// The stream's epoch now (`None`: it has no lease).
    pub current: Option<i64>,
}

/// For [`StoreError::Fenced`]'s message.
pub(crate) fn describe_current(current: &Option<i64>) -> String {
    match current {
        Some(c) => format!("which is now {c} (another node took the stream over)"),
        None => "and the stream has no lease now".to_string(),
    }
}

/// The cluster's coordination on one PostgreSQL database: see the module doc.
#[derive(Clone, Debug)]
pub struct Coordinator {
    store: PostgresStore,
}

impl Coordinator {
    /// Open (and migrate) the database `url` names, as [`PostgresStore::open`].
    pub fn open(url: &str) -> Result<Coordinator, StoreError> {
        Ok(Coordinator::from_store(PostgresStore::open(url)?))
    }

    pub(crate) fn from_store(store: PostgresStore) -> Coordinator {
        Coordinator { store }
    }

    /// The store on the same pool.
    pub fn store(&self) -> &PostgresStore {
        &self.store
    }

    /// The same coordination through one connection of its own, for a node's lease renewals:
    /// they never wait behind the API's, the writer's or the notifiers' queries for a pooled
    /// connection.
    pub fn with_own_connection(&self) -> Coordinator {
        Coordinator::from_store(self.store.with_own_pool(1))
    }

    fn conn(&self) -> Result<Conn, StoreError> {
        self.store.conn()
    }

    // ---- nodes ----

    /// Register `node` (or refresh its registration): `last_seen = now()`. Refused with
    /// [`StoreError::DuplicateNode`] while another instance of the name was seen within `ttl`
    /// and has not left. Taking a name over makes the previous instance's leases claimable at
    /// once. Wakes [`LEASES_CHANNEL`].
    pub fn register(&self, node: &NodeInfo, ttl: Duration) -> Result<(), StoreError> {
        node.check()?;
        let ttl = secs(ttl)?;
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        // One statement decides: the upsert happens only when the row is free (ours, left, or
        // silent past the TTL), so two instances starting at once cannot both win.
        let taken = tx.query_opt(
            "INSERT INTO nodes AS n (name, instance, api_addr, capacity, load, started_at,
                                     last_seen, left_at)
             VALUES ($1, $2, $3, $4, 0, now(), now(), NULL)
             ON CONFLICT (name) DO UPDATE SET
                 instance = excluded.instance,
                 api_addr = excluded.api_addr,
                 capacity = excluded.capacity,
                 load = CASE WHEN n.instance = excluded.instance THEN n.load ELSE 0 END,
                 started_at = CASE WHEN n.instance = excluded.instance
                                   THEN n.started_at ELSE now() END,
                 last_seen = now(),
                 left_at = NULL
             WHERE n.instance = excluded.instance
                OR n.left_at IS NOT NULL
                OR n.last_seen < now() - make_interval(secs => $5)
             RETURNING name",
            &[
                &node.name,
                &node.instance,
                &node.api_addr,
                &node.capacity,
                &ttl,
            ],
        )?;
        if taken.is_none() {
            let r = tx.query_one(
                "SELECT api_addr, EXTRACT(EPOCH FROM now() - last_seen)::float8
                 FROM nodes WHERE name = $1",
                &[&node.name],
            )?;
            return Err(StoreError::DuplicateNode {
                name: node.name.clone(),
                api_addr: r.try_get(0)?,
                seen_ago_s: r.try_get::<_, f64>(1)?.max(0.0),
            });
        }
        // The name's previous instance is gone for good (it could no longer renew: renew
        // checks the instance): its leases are claimable now rather than at their expiry.
        tx.execute(
            "UPDATE leases SET expires_at = LEAST(expires_at, now())
             WHERE node = $1 AND instance <> $2",
            &[&node.name, &node.instance],
        )?;
        notify_in(
            &mut tx,
            LEASES_CHANNEL,
            &serde_json::json!({"event": "joined", "node": node.name}).to_string(),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Say that `node` is alive, with its current load. [`StoreError::NotRegistered`] when
    /// another instance took the name over, or it deregistered.
    pub fn heartbeat(&self, node: &NodeInfo, load: f64) -> Result<(), StoreError> {
        if !load.is_finite() {
            return Err(StoreError::Invalid(format!(
                "cluster node {:?}: load {load} is not a finite number",
                node.name
            )));
        }
        let mut conn = self.conn()?;
        let n = conn.execute(
            "UPDATE nodes SET last_seen = now(), load = $3
             WHERE name = $1 AND instance = $2 AND left_at IS NULL",
            &[&node.name, &node.instance, &load],
        )?;
        if n == 0 {
            return Err(not_registered(&mut *conn, node)?);
        }
        Ok(())
    }

    /// Every node ever registered (until forgotten), by name, judged alive by `ttl`.
    pub fn nodes(&self, ttl: Duration) -> Result<Vec<NodeStatus>, StoreError> {
        let ttl = secs(ttl)?;
        let rows = self.conn()?.query(
            "SELECT n.name, n.instance, n.api_addr, n.capacity, n.load,
                    n.left_at IS NULL AND n.last_seen >= now() - make_interval(secs => $1),
                    n.left_at IS NOT NULL,
                    (SELECT count(*) FROM leases l JOIN streams s ON s.id = l.stream_id
                     WHERE l.node = n.name AND l.instance = n.instance
                       AND l.expires_at > now() AND s.removed_at IS NULL),
                    n.started_at, n.last_seen,
                    EXTRACT(EPOCH FROM now() - n.last_seen)::float8
             FROM nodes n ORDER BY n.name",
            &[&ttl],
        )?;
        rows.iter()
            .map(|r| {
                Ok(NodeStatus {
                    name: r.try_get(0)?,
                    instance: r.try_get(1)?,
                    api_addr: r.try_get(2)?,
                    capacity: r.try_get(3)?,
                    load: r.try_get(4)?,
                    alive: r.try_get(5)?,
                    left: r.try_get(6)?,
                    streams: r.try_get::<_, i64>(7)?.max(0) as u64,
                    started_at: r.try_get(8)?,
                    last_seen: r.try_get(9)?,
                    seen_ago_s: r.try_get::<_, f64>(10)?.max(0.0),
                })
            })
            .collect()
    }

    /// A clean shutdown: hand every stream over (as [`Coordinator::release`]), give up the
    /// node's outbox claims, and mark it left, so its name is free at once. Returns the
    /// streams released. Wakes [`LEASES_CHANNEL`].
    pub fn deregister(&self, node: &NodeInfo) -> Result<Vec<StreamId>, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        check_registered(&mut tx, node)?;
        let released = release_in(&mut tx, node, None)?;
        tx.execute(
            "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL
             WHERE claimed_by = $1 AND status = 'pending'",
            &[&node.name],
        )?;
        tx.execute(
            "UPDATE nodes SET left_at = now(), load = 0 WHERE name = $1 AND instance = $2",
            &[&node.name, &node.instance],
        )?;
        notify_in(
            &mut tx,
            LEASES_CHANNEL,
            &serde_json::json!({"event": "left", "node": node.name, "streams": released.len()})
                .to_string(),
        )?;
        tx.commit()?;
        Ok(released)
    }

    /// Delete the rows of nodes that left or went silent more than `older_than` ago (their
    /// history stays in leases and gaps by name). Returns how many.
    pub fn forget_nodes(&self, older_than: Duration) -> Result<u64, StoreError> {
        let older_than = secs(older_than)?;
        Ok(self.conn()?.execute(
            "DELETE FROM nodes
             WHERE COALESCE(left_at, last_seen) < now() - make_interval(secs => $1)",
            &[&older_than],
        )?)
    }

    // ---- leases ----

    /// Claim streams for `node`: in one transaction, the unowned and expired leases (of live
    /// streams, not pinned to another node) are locked with `FOR UPDATE SKIP LOCKED`, pinned
    /// ones first, then the longest unwatched; `accept` is asked about each candidate in turn
    /// (the node weighs its cost against its capacity) until `max` are taken. Each taken lease
    /// gets `epoch + 1` and `expires_at = now() + ttl`; the gap it ends, if any, is recorded.
    ///
    /// At most `4 × max + 16` candidates are looked at per call, so that streams that `accept`
    /// refuses (too costly for now) do not hide cheaper ones behind them.
    pub fn claim(
        &self,
        node: &NodeInfo,
        ttl: Duration,
        max: usize,
        accept: &mut dyn FnMut(&StreamRecord) -> bool,
    ) -> Result<Vec<Claimed>, StoreError> {
        let ttl = secs(ttl)?;
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.conn()?;
        // Lease rows for streams that have none yet, so that claimers can lock rows. Its own
        // statement, committed at once: claimers never wait on each other's transactions.
        conn.execute(
            "INSERT INTO leases (stream_id)
             SELECT s.id FROM streams s
             WHERE s.removed_at IS NULL
               AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.stream_id = s.id)
             ON CONFLICT DO NOTHING",
            &[],
        )?;
        let mut tx = conn.transaction()?;
        // FOR SHARE on our node row: an instance taking our name over waits for this claim,
        // and a replaced instance claims nothing.
        check_registered(&mut tx, node)?;
        let scan = i64::try_from(max.saturating_mul(4).saturating_add(16)).unwrap_or(i64::MAX);
        // FOR UPDATE re-checks the WHERE on a row another claimer changed since this
        // statement's snapshot, so a lease just taken is not taken twice; SKIP LOCKED makes
        // claimers pass each other's candidates instead of waiting.
        let rows = tx.query(
            "SELECT s.id, s.url, s.config, s.created_at,
                    l.node, COALESCE(l.renewed_at, l.expires_at), l.released_at
             FROM leases l JOIN streams s ON s.id = l.stream_id
             WHERE s.removed_at IS NULL
               AND (l.node IS NULL OR l.expires_at < now())
               AND (s.config->>'node' IS NULL OR s.config->>'node' = $1)
             ORDER BY (s.config->>'node' IS NULL), l.expires_at, l.stream_id
             LIMIT $2
             FOR UPDATE OF l SKIP LOCKED",
            &[&node.name, &scan],
        )?;
        struct Candidate {
            record: StreamRecord,
            prev_node: Option<String>,
            last_renewal: WallTime,
            released_at: Option<WallTime>,
        }
        let mut taken = Vec::new();
        for r in &rows {
            if taken.len() == max {
                break;
            }
            let record = stream_record(r, 0)?;
            if accept(&record) {
                taken.push(Candidate {
                    record,
                    prev_node: r.try_get(4)?,
                    last_renewal: r.try_get(5)?,
                    released_at: r.try_get(6)?,
                });
            }
        }
        if taken.is_empty() {
            tx.commit()?;
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = taken.iter().map(|c| c.record.id.as_str()).collect();
        // The rows are ours (locked above): the condition is repeated only as a guard.
        let updated = tx.query(
            "UPDATE leases SET node = $1, instance = $2, epoch = epoch + 1,
                 expires_at = now() + make_interval(secs => $3),
                 claimed_at = now(), renewed_at = now(), released_at = NULL
             WHERE stream_id = ANY($4) AND (node IS NULL OR expires_at < now())
             RETURNING stream_id, epoch, now()",
            &[&node.name, &node.instance, &ttl, &ids],
        )?;
        let mut epochs = HashMap::with_capacity(updated.len());
        let mut now = None;
        for r in &updated {
            epochs.insert(r.try_get::<_, String>(0)?, r.try_get::<_, i64>(1)?);
            now = Some(r.try_get::<_, WallTime>(2)?);
        }
        let now = now.unwrap_or_else(chrono::Utc::now);
        let grace = chrono::Duration::from_std(HANDOVER_GRACE).unwrap_or_default();
        // The gaps, as columns for one INSERT.
        let (mut g_stream, mut g_from, mut g_prev, mut g_reason) = (vec![], vec![], vec![], vec![]);
        for c in &taken {
            let gap = match (&c.prev_node, c.released_at) {
                (Some(prev), _) => Some((c.last_renewal, Some(prev.clone()), GapReason::NodeLost)),
                (None, Some(released)) if now - released > grace => {
                    Some((released, None, GapReason::Released))
                }
                _ => None,
            };
            if let Some((from, prev, reason)) = gap {
                g_stream.push(c.record.id.as_str());
                g_from.push(from);
                g_prev.push(prev);
                g_reason.push(reason.as_str());
            }
        }
        let mut gaps: HashMap<String, Gap> = HashMap::new();
        if !g_stream.is_empty() {
            let rows = tx.query(
                "INSERT INTO monitoring_gaps (stream_id, from_at, to_at, prev_node, next_node,
                                              reason)
                 SELECT s, f, now(), p, $5, r
                 FROM UNNEST($1::text[], $2::timestamptz[], $3::text[], $4::text[])
                      AS u (s, f, p, r)
                 RETURNING id, stream_id, from_at, to_at, prev_node, next_node, reason",
                &[&g_stream, &g_from, &g_prev, &g_reason, &node.name],
            )?;
            for r in &rows {
                let gap = gap_row(r)?;
                gaps.insert(gap.stream.0.clone(), gap);
            }
        }
        tx.commit()?;
        Ok(taken
            .into_iter()
            .filter_map(|c| {
                let epoch = *epochs.get(c.record.id.as_str())?;
                Some(Claimed {
                    gap: gaps.remove(c.record.id.as_str()),
                    stream: c.record,
                    epoch,
                })
            })
            .collect())
    }

    /// Extend every lease `node` still holds to `now() + ttl`, expired ones included while no
    /// other node has claimed them (the epoch is unchanged), and return them by stream id. The
    /// caller stops every stream missing from the answer. Leases of removed streams, and of
    /// streams now pinned to another node, are handed back here (not listed).
    /// [`StoreError::NotRegistered`] when this instance no longer owns its name.
    pub fn renew(&self, node: &NodeInfo, ttl: Duration) -> Result<Vec<Held>, StoreError> {
        let ttl = secs(ttl)?;
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        check_registered(&mut tx, node)?;
        // A removed stream goes back to nobody without a gap to record (it is not watched on
        // purpose); one pinned elsewhere is a hand-over.
        tx.execute(
            "UPDATE leases l SET node = NULL, instance = NULL, expires_at = now(),
                 released_at = CASE WHEN s.removed_at IS NULL THEN now() END
             FROM streams s
             WHERE s.id = l.stream_id AND l.node = $1 AND l.instance = $2
               AND (s.removed_at IS NOT NULL OR s.config->>'node' <> $1)",
            &[&node.name, &node.instance],
        )?;
        // Rows locked in id order, as every multi-row lock here is, so that this and a fenced
        // write of the same node never deadlock.
        let rows = tx.query(
            "UPDATE leases SET expires_at = now() + make_interval(secs => $3), renewed_at = now()
             WHERE stream_id IN (SELECT stream_id FROM leases
                                 WHERE node = $1 AND instance = $2
                                 ORDER BY stream_id FOR UPDATE)
             RETURNING stream_id, epoch",
            &[&node.name, &node.instance, &ttl],
        )?;
        tx.commit()?;
        let mut held: Vec<Held> = rows
            .iter()
            .map(|r| {
                Ok(Held {
                    stream: StreamId(r.try_get(0)?),
                    epoch: r.try_get(1)?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        held.sort();
        Ok(held)
    }

    /// Hand `streams` over (a clean shutdown, or shedding load): nobody holds them and they are
    /// claimable at once, without a gap if claimed within [`HANDOVER_GRACE`]. Stop the streams
    /// and flush their results first: the epoch stays until the next claim, so that flush
    /// passes the fence, but not after. Returns those released (held by this instance).
    /// Wakes [`LEASES_CHANNEL`].
    pub fn release(
        &self,
        node: &NodeInfo,
        streams: &[StreamId],
    ) -> Result<Vec<StreamId>, StoreError> {
        if streams.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        let released = release_in(&mut tx, node, Some(streams))?;
        notify_released(&mut tx, node, released.len())?;
        tx.commit()?;
        Ok(released)
    }

    /// Give up `streams` that `node` still holds but stopped watching `unwatched_for` ago (it
    /// stopped them through a long database outage): each lease becomes one that `node` lost
    /// then, expired and no longer its own (it cannot renew it), so that the claim that ends
    /// the gap records it from then, as a node lost. Returns those given up. Wakes
    /// [`LEASES_CHANNEL`].
    pub fn release_unwatched(
        &self,
        node: &NodeInfo,
        streams: &[StreamId],
        unwatched_for: Duration,
    ) -> Result<Vec<StreamId>, StoreError> {
        if streams.is_empty() {
            return Ok(Vec::new());
        }
        let ago = unwatched_for.as_secs_f64().min(MAX_TTL.as_secs_f64());
        let ids: Vec<&str> = streams.iter().map(|s| s.as_str()).collect();
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        let rows = tx.query(
            "UPDATE leases SET instance = NULL,
                 expires_at = now() - make_interval(secs => $4),
                 renewed_at = now() - make_interval(secs => $4)
             WHERE stream_id IN (SELECT stream_id FROM leases
                                 WHERE node = $1 AND instance = $2 AND stream_id = ANY($3)
                                 ORDER BY stream_id FOR UPDATE)
             RETURNING stream_id",
            &[&node.name, &node.instance, &ids, &ago],
        )?;
        let out = sorted_ids(&rows)?;
        notify_released(&mut tx, node, out.len())?;
        tx.commit()?;
        Ok(out)
    }

    /// Every live stream and the node holding it under a lease not expired (`None`: nobody),
    /// for `GET /api/streams`.
    pub fn holders(&self) -> Result<BTreeMap<StreamId, Option<String>>, StoreError> {
        let rows = self.conn()?.query(
            "SELECT s.id, CASE WHEN l.expires_at > now() THEN l.node END
             FROM streams s LEFT JOIN leases l ON l.stream_id = s.id
             WHERE s.removed_at IS NULL",
            &[],
        )?;
        rows.iter()
            .map(|r| Ok((StreamId(r.try_get(0)?), r.try_get(1)?)))
            .collect()
    }

    /// The node that holds `stream` under a lease not expired, and its API address, if it is
    /// alive (registered, not left).
    pub fn holder_addr(&self, stream: &StreamId) -> Result<Option<(String, String)>, StoreError> {
        let row = self.conn()?.query_opt(
            "SELECT n.name, n.api_addr FROM leases l
             JOIN nodes n ON n.name = l.node AND n.instance = l.instance
             WHERE l.stream_id = $1 AND l.expires_at > now() AND n.left_at IS NULL",
            &[&stream.as_str()],
        )?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
    }

    /// The streams nobody watches now: never claimed, released, or expired while held.
    pub fn unwatched(&self) -> Result<Vec<Unwatched>, StoreError> {
        let rows = self.conn()?.query(
            "SELECT s.id, s.config->>'node', l.node,
                    CASE WHEN l.node IS NOT NULL THEN COALESCE(l.renewed_at, l.expires_at)
                         ELSE l.released_at END
             FROM streams s LEFT JOIN leases l ON l.stream_id = s.id
             WHERE s.removed_at IS NULL
               AND (l.stream_id IS NULL OR l.node IS NULL OR l.expires_at <= now())
             ORDER BY s.id",
            &[],
        )?;
        rows.iter()
            .map(|r| {
                Ok(Unwatched {
                    stream: StreamId(r.try_get(0)?),
                    pinned_node: r.try_get(1)?,
                    prev_node: r.try_get(2)?,
                    since: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// Recorded monitoring gaps, of one stream or all, that ended at or after `since`, oldest
    /// first.
    pub fn gaps(
        &self,
        stream: Option<&StreamId>,
        since: Option<WallTime>,
    ) -> Result<Vec<Gap>, StoreError> {
        let rows = self.conn()?.query(
            "SELECT id, stream_id, from_at, to_at, prev_node, next_node, reason
             FROM monitoring_gaps
             WHERE ($1::text IS NULL OR stream_id = $1) AND ($2::timestamptz IS NULL OR to_at >= $2)
             ORDER BY to_at, id",
            &[&stream.map(|s| s.as_str()), &since],
        )?;
        rows.iter().map(gap_row).collect()
    }

    /// Each live stream's definition as a digest of its JSON (as the database keeps it): a
    /// node compares these every few seconds, and reads again only the definitions that
    /// changed ([`Coordinator::streams_of`]).
    pub fn stream_digests(&self) -> Result<HashMap<StreamId, String>, StoreError> {
        let rows = self.conn()?.query(
            "SELECT id, md5(config::text) FROM streams WHERE removed_at IS NULL",
            &[],
        )?;
        rows.iter()
            .map(|r| Ok((StreamId(r.try_get(0)?), r.try_get(1)?)))
            .collect()
    }

    /// The definitions of these streams (those live), with the digest
    /// [`Coordinator::stream_digests`] gives each.
    pub fn streams_of(
        &self,
        streams: &[StreamId],
    ) -> Result<Vec<(StreamRecord, String)>, StoreError> {
        let ids: Vec<&str> = streams.iter().map(|s| s.as_str()).collect();
        let rows = self.conn()?.query(
            "SELECT id, url, config, created_at, md5(config::text) FROM streams
             WHERE removed_at IS NULL AND id = ANY($1) ORDER BY id",
            &[&ids],
        )?;
        rows.iter()
            .map(|r| Ok((stream_record(r, 0)?, r.try_get(4)?)))
            .collect()
    }

    /// Of the streams `node` holds, `n` to hand over when shedding load: not pinned ones, the
    /// most recently claimed first (they have been running here the shortest). Picks only: stop
    /// them, then [`Coordinator::release`] them.
    pub fn shed(&self, node: &NodeInfo, n: usize) -> Result<Vec<StreamRecord>, StoreError> {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let rows = self.conn()?.query(
            "SELECT s.id, s.url, s.config, s.created_at
             FROM leases l JOIN streams s ON s.id = l.stream_id
             WHERE l.node = $1 AND l.instance = $2 AND s.removed_at IS NULL
               AND s.config->>'node' IS NULL
             ORDER BY l.claimed_at DESC NULLS LAST, l.stream_id
             LIMIT $3",
            &[&node.name, &node.instance, &n],
        )?;
        rows.iter().map(|r| stream_record(r, 0)).collect()
    }

    // ---- fenced writes ----

    /// Persist an alert transition and its notifications (outbox rows) together, only if the
    /// stream's lease is still at `epoch`; else [`StoreError::Fenced`] and nothing is written.
    /// Returns each outbox entry's row id (`None` for a replayed key), as `outbox_add`.
    pub fn record_alert_fenced(
        &self,
        ev: &AlertEvent,
        epoch: i64,
        outbox: &[OutboxEntry],
    ) -> Result<Vec<Option<i64>>, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        let stream = &ev.alert.stream_id;
        let current = lock_epochs(&mut tx, &[stream.as_str()])?.remove(stream.as_str());
        if current != Some(epoch) {
            return Err(StoreError::Fenced {
                stream: stream.clone(),
                epoch,
                current,
            });
        }
        write_alert(&mut tx, ev)?;
        let ids = outbox
            .iter()
            .map(|e| write_outbox(&mut tx, e))
            .collect::<Result<Vec<_>, _>>()?;
        tx.commit()?;
        Ok(ids)
    }

    /// Persist metrics samples, each with the epoch it was measured under, in one transaction:
    /// the samples whose stream is still at that epoch are written, the others are refused and
    /// returned (one [`Stale`] per stream and epoch).
    pub fn record_metrics_fenced(
        &self,
        samples: &[(MetricsSample, i64)],
    ) -> Result<Vec<Stale>, StoreError> {
        if samples.is_empty() {
            return Ok(Vec::new());
        }
        let streams: BTreeSet<&str> = samples.iter().map(|(m, _)| m.stream_id.as_str()).collect();
        let streams: Vec<&str> = streams.into_iter().collect();
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        let current = lock_epochs(&mut tx, &streams)?;
        let mut stale: BTreeSet<(&StreamId, i64)> = BTreeSet::new();
        let fresh = samples.iter().filter_map(|(m, epoch)| {
            if current.get(m.stream_id.as_str()) == Some(epoch) {
                Some(m)
            } else {
                stale.insert((&m.stream_id, *epoch));
                None
            }
        });
        write_metrics(&mut tx, fresh)?;
        tx.commit()?;
        Ok(stale
            .into_iter()
            .map(|(stream, epoch)| Stale {
                stream: stream.clone(),
                epoch,
                current: current.get(stream.as_str()).copied(),
            })
            .collect())
    }

    /// Where the stream's media clock stood when a node last reported it: the media time and
    /// the wall time of its latest metrics sample or alert transition, whichever is later. A
    /// new owner continues the stream's time line from there (plus the time since).
    pub fn last_media_time(
        &self,
        stream: &StreamId,
    ) -> Result<Option<(f64, WallTime)>, StoreError> {
        Ok(self
            .last_media_times(std::slice::from_ref(stream))?
            .remove(stream))
    }

    /// [`Coordinator::last_media_time`] of several streams in one query (those never reported
    /// are missing).
    pub fn last_media_times(
        &self,
        streams: &[StreamId],
    ) -> Result<HashMap<StreamId, (f64, WallTime)>, StoreError> {
        let ids: Vec<&str> = streams.iter().map(|s| s.as_str()).collect();
        let rows = self.conn()?.query(
            "SELECT s.id, t.media_t, t.at
             FROM UNNEST($1::text[]) AS s (id)
             CROSS JOIN LATERAL (
                 SELECT media_t, at FROM (
                     (SELECT media_t, at FROM metrics WHERE stream_id = s.id
                      ORDER BY at DESC LIMIT 1)
                     UNION ALL
                     (SELECT COALESCE(end_s, start_s), COALESCE(cleared_at, raised_at)
                      FROM alerts WHERE stream_id = s.id
                      ORDER BY COALESCE(cleared_at, raised_at) DESC LIMIT 1)
                 ) u ORDER BY at DESC LIMIT 1
             ) t",
            &[&ids],
        )?;
        rows.iter()
            .map(|r| {
                Ok((
                    StreamId(r.try_get::<_, String>(0)?),
                    (r.try_get(1)?, r.try_get(2)?),
                ))
            })
            .collect()
    }

    /// [`Coordinator::open_alerts`] of several streams in one query, oldest first each.
    pub fn open_alerts_of(
        &self,
        streams: &[StreamId],
    ) -> Result<HashMap<StreamId, Vec<Alert>>, StoreError> {
        let ids: Vec<&str> = streams.iter().map(|s| s.as_str()).collect();
        let rows = self.conn()?.query(
            &format!(
                "SELECT {ALERT_COLUMNS}
                 WHERE a.state = 'raised' AND a.stream_id = ANY($1)
                 ORDER BY a.raised_at, a.id"
            ),
            &[&ids],
        )?;
        let mut out: HashMap<StreamId, Vec<Alert>> = HashMap::new();
        for r in &rows {
            let a = alert_record(r)?.alert;
            out.entry(a.stream_id.clone()).or_default().push(a);
        }
        Ok(out)
    }

    /// The stream's alerts still raised, oldest first: a new owner seeds its alert engine with
    /// them, so it continues them instead of raising them again.
    pub fn open_alerts(&self, stream: &StreamId) -> Result<Vec<Alert>, StoreError> {
        let mut open = self.store.alerts(&AlertQuery {
            stream: Some(stream.clone()),
            state: Some(AlertState::Raised),
            ..AlertQuery::default()
        })?;
        open.reverse();
        Ok(open)
    }

    // ---- outbox ----

    /// Claim up to `limit` of `notifier`'s pending rows for node `node` (its name) until
    /// `now() + ttl`, oldest first: rows not claimed, or whose claim expired, or claimed by
    /// this node already. Nothing while another node holds a live claim on any of the
    /// notifier's rows (one node at a time delivers a notifier, in order). Deliver them, then
    /// `Store::outbox_attempt`, which ends the claim.
    pub fn outbox_claim(
        &self,
        notifier: &str,
        node: &str,
        limit: usize,
        ttl: Duration,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let ttl = secs(ttl)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        // Serialises the claims of one notifier across nodes, so that "nobody else holds a
        // live claim" and taking the rows are one decision.
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            &[&OUTBOX_LOCK_CLASS, &notifier],
        )?;
        let busy = tx.query_opt(
            "SELECT 1 FROM outbox
             WHERE notifier = $1 AND status = 'pending' AND claimed_until > now()
               AND claimed_by <> $2
             LIMIT 1",
            &[&notifier, &node],
        )?;
        if busy.is_some() {
            tx.commit()?;
            return Ok(Vec::new());
        }
        let rows = tx.query(
            &format!(
                "UPDATE outbox SET claimed_by = $2,
                     claimed_until = now() + make_interval(secs => $4)
                 WHERE id IN (SELECT id FROM outbox
                              WHERE notifier = $1 AND status = 'pending'
                                AND (claimed_until IS NULL OR claimed_until <= now()
                                     OR claimed_by = $2)
                              ORDER BY id LIMIT $3
                              FOR UPDATE SKIP LOCKED)
                 RETURNING {OUTBOX_COLUMNS}"
            ),
            &[&notifier, &node, &limit, &ttl],
        )?;
        tx.commit()?;
        let mut out = rows.iter().map(outbox_row).collect::<Result<Vec<_>, _>>()?;
        out.sort_by_key(|r| r.id);
        Ok(out)
    }

    // ---- LISTEN/NOTIFY ----

    /// Send `payload` on `channel` to every listening session (at once; in a transaction it
    /// would wait for the commit). At most [`MAX_PAYLOAD`] bytes.
    pub fn notify(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        check_channel(channel)?;
        notify_in(&mut *self.conn()?, channel, payload)
    }

    /// A listener on a connection of its own (see [`Listener`]).
    pub fn listener(&self) -> Result<Listener, StoreError> {
        Ok(Listener {
            store: self.store.clone(),
            client: Some(self.store.connect_dedicated()?),
            channels: BTreeSet::new(),
        })
    }
}

/// What a [`Listener`] heard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Heard {
    /// A notification.
    Notification {
        channel: String,
        payload: String,
        /// The sending session's server process id.
        pid: i32,
    },
    /// The connection broke and was made again (and its channels listened to again):
    /// notifications sent meanwhile are lost, so re-read whatever state matters.
    Reconnected,
}

/// LISTEN on a dedicated connection (a pooled one would hand its notifications to whoever
/// takes it next). After a broken connection, [`Listener::wait`] returns the error once; the
/// next call connects again and answers [`Heard::Reconnected`].
pub struct Listener {
    store: PostgresStore,
    client: Option<Client>,
    channels: BTreeSet<String>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("target", &self.store.target())
            .field("channels", &self.channels)
            .field("connected", &self.client.is_some())
            .finish()
    }
}

impl Listener {
    /// Listen on `channel` (lowercase letters, digits and `_`, at most 63).
    pub fn listen(&mut self, channel: &str) -> Result<(), StoreError> {
        check_channel(channel)?;
        self.channels.insert(channel.to_string());
        if let Some(client) = &mut self.client {
            if let Err(e) = client.batch_execute(&format!("LISTEN \"{channel}\"")) {
                self.client = None;
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Stop listening on `channel`.
    pub fn unlisten(&mut self, channel: &str) -> Result<(), StoreError> {
        check_channel(channel)?;
        self.channels.remove(channel);
        if let Some(client) = &mut self.client {
            if let Err(e) = client.batch_execute(&format!("UNLISTEN \"{channel}\"")) {
                self.client = None;
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// The next notification, waiting at most `timeout`; `None` when none came.
    pub fn wait(&mut self, timeout: Duration) -> Result<Option<Heard>, StoreError> {
        let Some(client) = &mut self.client else {
            let mut client = self.store.connect_dedicated()?;
            for c in &self.channels {
                client.batch_execute(&format!("LISTEN \"{c}\""))?;
            }
            self.client = Some(client);
            return Ok(Some(Heard::Reconnected));
        };
        let next = client.notifications().timeout_iter(timeout).next();
        match next {
            Ok(Some(n)) => Ok(Some(Heard::Notification {
                channel: n.channel().to_string(),
                payload: n.payload().to_string(),
                pid: n.process_id(),
            })),
            Err(e) => {
                self.client = None;
                let e: StoreError = e.into();
                Err(StoreError::Database(format!(
                    "the LISTEN connection to PostgreSQL at {} broke ({}); the next wait \
                     reconnects",
                    self.store.target(),
                    e.to_string().trim_start_matches("database error: ")
                )))
            }
            Ok(None) if client.is_closed() => {
                self.client = None;
                Err(StoreError::Database(format!(
                    "the LISTEN connection to PostgreSQL at {} closed",
                    self.store.target()
                )))
            }
            Ok(None) => Ok(None),
        }
    }
}

// ---- helpers ----

/// Fair targets: each node's share of `total_cost` in proportion to its capacity, and never
/// above it (what no node can take stays unplaced). A capacity that is not a finite positive
/// number gets nothing.
pub fn fair_share(total_cost: f64, capacities: &[f64]) -> Vec<f64> {
    let usable = |c: f64| if c.is_finite() && c > 0.0 { c } else { 0.0 };
    let sum: f64 = capacities.iter().map(|&c| usable(c)).sum();
    let total = if total_cost.is_finite() {
        total_cost.max(0.0)
    } else {
        0.0
    };
    capacities
        .iter()
        .map(|&c| {
            let c = usable(c);
            if sum > 0.0 {
                (total * c / sum).min(c)
            } else {
                0.0
            }
        })
        .collect()
}

/// A TTL as the seconds SQL's `make_interval` takes, checked.
fn secs(ttl: Duration) -> Result<f64, StoreError> {
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err(StoreError::Invalid(format!(
            "TTL of {:.3} s: must be more than 0 and at most {} s",
            ttl.as_secs_f64(),
            MAX_TTL.as_secs()
        )));
    }
    Ok(ttl.as_secs_f64())
}

fn check_channel(channel: &str) -> Result<(), StoreError> {
    let ok = !channel.is_empty()
        && channel.len() <= 63
        && !channel.starts_with(|c: char| c.is_ascii_digit())
        && channel
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "notification channel {channel:?}: use 1 to 63 lowercase letters, digits and _, \
             not starting with a digit"
        )))
    }
}

fn notify_in(
    client: &mut impl GenericClient,
    channel: &str,
    payload: &str,
) -> Result<(), StoreError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(StoreError::Invalid(format!(
            "notification payload on {channel} is {} bytes, over PostgreSQL's limit of \
             {MAX_PAYLOAD}: send the row's id and let receivers read the row",
            payload.len()
        )));
    }
    client.execute("SELECT pg_notify($1, $2)", &[&channel, &payload])?;
    Ok(())
}

/// Lock the lease rows of `streams` `FOR SHARE` (in id order) and return their epochs.
fn lock_epochs(
    tx: &mut Transaction<'_>,
    streams: &[&str],
) -> Result<HashMap<String, i64>, StoreError> {
    let rows = tx.query(
        "SELECT stream_id, epoch FROM leases WHERE stream_id = ANY($1)
         ORDER BY stream_id FOR SHARE",
        &[&streams],
    )?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// Check, holding our node row `FOR SHARE`, that this instance still owns the node's name.
fn check_registered(tx: &mut Transaction<'_>, node: &NodeInfo) -> Result<(), StoreError> {
    let row = tx.query_opt(
        "SELECT instance = $2 AND left_at IS NULL FROM nodes WHERE name = $1 FOR SHARE",
        &[&node.name, &node.instance],
    )?;
    match row {
        Some(r) if r.try_get::<_, bool>(0)? => Ok(()),
        _ => Err(not_registered(tx, node)?),
    }
}

/// Why `node` is not registered as this instance, as an error.
fn not_registered(
    client: &mut impl GenericClient,
    node: &NodeInfo,
) -> Result<StoreError, StoreError> {
    let row = client.query_opt(
        "SELECT instance, api_addr, left_at IS NOT NULL FROM nodes WHERE name = $1",
        &[&node.name],
    )?;
    let reason = match row {
        None => "no node of that name is registered; register it first".to_string(),
        Some(r) => {
            let (instance, addr, left): (Uuid, String, bool) =
                (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
            if instance != node.instance {
                format!(
                    "another instance ({instance}) took the name over at {addr} after this one \
                     went silent; stop its streams and register again"
                )
            } else if left {
                "it deregistered; register it again".to_string()
            } else {
                "its registration changed meanwhile; register it again".to_string()
            }
        }
    };
    Ok(StoreError::NotRegistered {
        name: node.name.clone(),
        reason,
    })
}

/// Release `node`'s leases (of `streams`, or all), locking them in id order.
/// Tell the other nodes that `node` let `n` streams go (nothing when none).
fn notify_released(tx: &mut Transaction<'_>, node: &NodeInfo, n: usize) -> Result<(), StoreError> {
    if n == 0 {
        return Ok(());
    }
    notify_in(
        tx,
        LEASES_CHANNEL,
        &serde_json::json!({"event": "released", "node": node.name, "streams": n}).to_string(),
    )
}

fn release_in(
    tx: &mut Transaction<'_>,
    node: &NodeInfo,
    streams: Option<&[StreamId]>,
) -> Result<Vec<StreamId>, StoreError> {
    let ids: Option<Vec<&str>> = streams.map(|s| s.iter().map(|s| s.as_str()).collect());
    let rows = tx.query(
        "UPDATE leases SET node = NULL, instance = NULL, expires_at = now(),
             released_at = now()
         WHERE stream_id IN (SELECT stream_id FROM leases
                             WHERE node = $1 AND instance = $2
                               AND ($3::text[] IS NULL OR stream_id = ANY($3))
                             ORDER BY stream_id FOR UPDATE)
         RETURNING stream_id",
        &[&node.name, &node.instance, &ids],
    )?;
    sorted_ids(&rows)
}

/// The stream ids in the first column of `rows`, sorted.
fn sorted_ids(rows: &[postgres::Row]) -> Result<Vec<StreamId>, StoreError> {
    let mut out: Vec<StreamId> = rows
        .iter()
        .map(|r| Ok(StreamId(r.try_get(0)?)))
        .collect::<Result<_, StoreError>>()?;
    out.sort();
    Ok(out)
}

fn gap_row(r: &postgres::Row) -> Result<Gap, StoreError> {
    Ok(Gap {
        id: r.try_get(0)?,
        stream: StreamId(r.try_get(1)?),
        from: r.try_get(2)?,
        to: r.try_get(3)?,
        prev_node: r.try_get(4)?,
        next_node: r.try_get(5)?,
        reason: GapReason::parse(r.try_get(6)?)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fair_share_is_proportional_to_capacity_and_capped() {
        assert_eq!(fair_share(30.0, &[10.0, 20.0]), vec![10.0, 20.0]);
        assert_eq!(fair_share(15.0, &[10.0, 20.0]), vec![5.0, 10.0]);
        // More work than capacity: each is full, the rest stays unplaced.
        assert_eq!(fair_share(100.0, &[10.0, 20.0]), vec![10.0, 20.0]);
        // Dead or nonsense capacities get nothing; the others share.
        assert_eq!(
            fair_share(8.0, &[0.0, f64::NAN, -3.0, 10.0, 10.0]),
            vec![0.0, 0.0, 0.0, 4.0, 4.0]
        );
        assert_eq!(fair_share(5.0, &[]), Vec::<f64>::new());
        assert_eq!(fair_share(5.0, &[0.0]), vec![0.0]);
        assert_eq!(fair_share(f64::INFINITY, &[1.0]), vec![0.0]);
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        assert!(secs(Duration::ZERO)
            .unwrap_err()
            .to_string()
            .contains("more than 0"));
        assert!(secs(Duration::from_secs(90_000)).is_err());
        assert_eq!(secs(Duration::from_millis(1500)).unwrap(), 1.5);
        for bad in ["", "Avmon", "1x", "a-b", &"x".repeat(64)] {
            assert!(check_channel(bad).is_err(), "{bad:?}");
        }
        check_channel(EVENTS_CHANNEL).unwrap();
        check_channel(LEASES_CHANNEL).unwrap();
        let err = NodeInfo::new("", "127.0.0.1:8080", 1.0).unwrap_err();
        assert!(err.to_string().contains("1 to 64 bytes"), "{err}");
        let err = NodeInfo::new("a", "x", f64::NAN).unwrap_err();
        assert!(err.to_string().contains("capacity"), "{err}");
        let a = NodeInfo::new("a", "x", 1.0).unwrap();
        let b = NodeInfo::new("a", "x", 1.0).unwrap();
        assert_ne!(a.instance, b.instance, "every process is a new instance");
    }

    #[test]
    fn fenced_errors_say_what_happened() {
        let e = StoreError::Fenced {
            stream: StreamId("cam1".into()),
            epoch: 3,
            current: Some(4),
        };
        assert_eq!(
            e.to_string(),
            "write for stream cam1 refused: it was held at lease epoch 3, which is now 4 \
             (another node took the stream over)"
        );
        let e = StoreError::DuplicateNode {
            name: "n1".into(),
            api_addr: "10.0.0.1:8080".into(),
            seen_ago_s: 2.25,
        };
        assert_eq!(
            e.to_string(),
            "another node named \"n1\" is alive at 10.0.0.1:8080 (last seen 2.2 s ago); give \
             this node another [cluster] name"
        );
    }
}
