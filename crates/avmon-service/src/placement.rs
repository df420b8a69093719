//! Placement: in a cluster, which streams this node monitors.
//!
//! Every node runs the same loop, on its own thread, against the shared database
//! ([`avmon_store::cluster::Coordinator`]; the database's row locks are the only arbiter):
//!
//! - **Renew**, every quarter of the lease TTL, on a thread of its own ([`renew_thread`]), so
//!   that nothing the loop does (starting a hundred streams, stopping some) ever makes a
//!   renewal late: the node's heartbeat (with its load) and its leases. A running stream
//!   missing from the answer was taken over, handed back or removed: the loop stops it at
//!   once. A removed stream's alerts are cleared; one taken over keeps them open for its new
//!   owner. A stream held but not running (stopped through a long database outage, or after
//!   the node lost its name) is given up, as lost when it was stopped, so that it does not
//!   stay held and unwatched, and the gap is recorded from then.
//! - **The database away**: a node that cannot renew keeps monitoring the streams it holds for
//!   `[cluster] db_outage_s` (its results and notifications wait in order, [`crate::fenced`]),
//!   and claims nothing. When the database answers again its leases renew under the same
//!   epochs (nobody could claim them meanwhile) and what waited is written; every node then
//!   waits one TTL before claiming, so that each renews its own first. Past `db_outage_s` it
//!   stops its streams (without clearing their alerts) until the database answers. A node cut
//!   off alone loses its streams to the others after one TTL: what it kept is refused on its
//!   return (stale epochs), and the new owners' results stand.
//! - **Claim**, every second and whenever another node releases streams or joins or leaves
//!   (`avmon_leases`): unowned and expired leases, while the node's load stays under its fair
//!   share of the cluster's and under its capacity. Load is CPU as the scheduler measures it
//!   (each stream's busy time per second, [`avmon_core::sched::Slot::busy_s`]); a stream not
//!   measured yet is estimated from the streams of its tier measured here, or from
//!   [`relative_cost`] of [`FULL_COST`] until there are any.
//! - **Take over**: a claimed stream starts with the open alerts of its last owner (it
//!   continues them, [`crate::alerts::StreamAlerts::resume`]) and its media time line (the last
//!   known media time plus the wall time since). The time nobody watched it is recorded by the
//!   claim as a monitoring gap.
//! - **Rebalance**, every few seconds while nothing is unwatched: a node over its fair share
//!   by more than a margin, when another node is under its own, hands a few streams over
//!   ([`Coordinator::shed`], then released: the other nodes are woken and claim them within a
//!   second, no gap).
//! - **Config**: stream definitions live in the database; a running stream whose definition
//!   changed (through any node's API) has its tier and priority applied at once, and is
//!   restarted for anything else. Mutes and maintenance windows set through any node are read
//!   back every few seconds.
//!
//! On shutdown (SIGTERM) the node stops its streams without clearing their alerts, writes what
//! is queued, and deregisters, which releases every lease at once: the others take them over
//! within a second or two.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use avmon_core::{MaintenanceWindow, StreamId, Tier};
use avmon_store::cluster::{Claimed, Coordinator, Heard, NodeInfo, LEASES_CHANNEL};
use avmon_store::{Store, StoreError, StreamRecord};

use crate::config::StreamConfig;
use crate::degrade::relative_cost;
use crate::registry::Service;
use crate::stream::Resume;

/// A `full`-tier stream's CPU, in cores, assumed until streams are measured here: a 720p25
/// H.264 + AAC stream, with room to spare (lower tiers by [`relative_cost`]).
pub const FULL_COST: f64 = 0.25;

/// Streams claimed in one round at most (a round is about a second): a dead node's thousand
/// streams are taken by its peers in a few rounds.
const CLAIM_BATCH: usize = 256;

/// Streams handed over in one rebalancing step at most: this many, or [`SHED_PART`] of the
/// node's streams if more. A node joining a cluster of a thousand streams gets its share in
/// a few steps, a few seconds apart.
const SHED_BATCH: usize = 8;

/// The part of its streams a node hands over in one rebalancing step at most.
const SHED_PART: f64 = 0.25;

/// How often the loop runs with nothing waking it.
const TICK: Duration = Duration::from_secs(1);

/// How often stream definitions are compared with the running streams.
const CONFIG_EVERY: Duration = Duration::from_secs(3);

/// How often the balance between nodes is looked at.
const BALANCE_EVERY: Duration = Duration::from_secs(3);

/// A stream unwatched this long is taken by any node with room (see `Placer::urgent`).
const URGENT_AFTER: Duration = Duration::from_secs(2);

/// A stream handed over (to balance) is taken by any node with room after this long: until
/// then it is for the nodes under their fair share, the ones it was handed over to. Under
/// [`avmon_store::cluster::HANDOVER_GRACE`], so that it is still not a gap.
const HANDOVER_URGENT_AFTER: Duration = Duration::from_secs(4);

/// The least a stream counts for, in cores, however little CPU its decoding takes: its threads,
/// its input's polling and its writes cost something the scheduler's busy time does not see,
/// and balancing on near-zero figures would follow their noise.
const MIN_COST: f64 = 0.002;

/// A stream's CPU is measured over at least this long before it counts.
const MEASURE_MIN: Duration = Duration::from_secs(3);

/// This node in the cluster: what every part of the service needs to know of it.
pub(crate) struct ClusterNode {
    pub(crate) coordinator: Coordinator,
    pub(crate) node: NodeInfo,
    pub(crate) ttl: Duration,
    /// The config file's maintenance windows (the API's are in the store).
    pub(crate) config_windows: Vec<MaintenanceWindow>,
    /// How long the node keeps monitoring its streams while the database does not answer.
    pub(crate) outage: Duration,
    /// Set while renewals fail: the API answers from this node's own state without waiting on
    /// the database.
    pub(crate) away: AtomicBool,
    /// The node's load (cores, an `f64`'s bits) as placement last measured it, for the
    /// heartbeat.
    load: AtomicU64,
    /// What the renewer last heard.
    renewals: Mutex<Renewals>,
}

/// What [`renew_thread`] last heard from the database, for the placement loop.
#[derive(Default)]
struct Renewals {
    /// Answers so far (each renewal, whether it worked or not).
    seq: u64,
    /// The last renewal that worked: when it was sent, and the streams the node still held.
    ok: Option<(Instant, Arc<BTreeSet<String>>)>,
    /// Since when renewals fail (the database or the network is away), and why.
    failing: Option<(Instant, String)>,
    /// When renewals last worked again after failing, and for how long they had failed (the
    /// loop may not have been looking meanwhile: it waits on the database too).
    recovered: Option<(Instant, Duration)>,
    /// Times the node found its name taken over (and registered again).
    replaced: u64,
}

impl ClusterNode {
    /// Register this node, waiting up to one TTL for a previous instance of the same name (a
    /// process that was killed and restarted at once) to expire.
    pub(crate) fn register(
        coordinator: Coordinator,
        node: NodeInfo,
        ttl: Duration,
        config_windows: Vec<MaintenanceWindow>,
        outage: Duration,
    ) -> anyhow::Result<ClusterNode> {
        let until = Instant::now() + ttl + Duration::from_secs(1);
        let mut told = false;
        loop {
            match coordinator.register(&node, ttl) {
                Ok(()) => break,
                Err(StoreError::DuplicateNode { .. }) if Instant::now() < until => {
                    if !told {
                        eprintln!(
                            "avmon: a node named {:?} was seen less than {:.0} s ago; waiting \
                             for it to expire (or is another node using this name?)",
                            node.name,
                            ttl.as_secs_f64()
                        );
                        told = true;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e @ StoreError::DuplicateNode { .. }) => {
                    anyhow::bail!(
                        "{e}: two live nodes cannot share a name; give this one another \
                         [cluster] name"
                    )
                }
                Err(e) => anyhow::bail!("joining the cluster as {:?}: {e}", node.name),
            }
        }
        Ok(ClusterNode {
            coordinator,
            node,
            ttl,
            config_windows,
            outage,
            away: AtomicBool::new(false),
            load: AtomicU64::new(0f64.to_bits()),
            renewals: Mutex::new(Renewals::default()),
        })
    }

    fn renewals(&self) -> std::sync::MutexGuard<'_, Renewals> {
        self.renewals.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Renew the node's heartbeat and leases every quarter of the TTL (every second while that
/// fails) until `stop`, and say what was heard to the placement loop. Stopped only after the
/// node's streams have stopped and written their results at shutdown, so that those writes
/// still pass the fence.
pub(crate) fn renew_thread(cluster: Arc<ClusterNode>, stop: Arc<AtomicBool>) {
    let every = cluster.ttl / 4;
    // Its own connection: a renewal never waits for a pooled one behind the API's queries.
    let c = cluster.coordinator.with_own_connection();
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep((next - now).min(Duration::from_millis(100)));
            continue;
        }
        let load = f64::from_bits(cluster.load.load(Ordering::Relaxed));
        let renewed = c
            .heartbeat(&cluster.node, load)
            .and_then(|()| c.renew(&cluster.node, cluster.ttl));
        match renewed {
            Ok(held) => {
                next = now + every;
                cluster.away.store(false, Ordering::Relaxed);
                let held: BTreeSet<String> = held.into_iter().map(|h| h.stream.0).collect();
                let mut r = cluster.renewals();
                r.seq += 1;
                r.ok = Some((now, Arc::new(held)));
                if let Some((since, _)) = r.failing.take() {
                    r.recovered = Some((Instant::now(), since.elapsed()));
                }
            }
            Err(StoreError::NotRegistered { .. }) => {
                // Another instance took this node's name (this one was stopped or cut off for
                // longer than the TTL): everything it held is someone else's now. Rejoin as a
                // new instance, so that the node works on (as a restarted one would); the loop
                // stops what it runs.
                tracing::error!(
                    node = %cluster.node.name,
                    "this node was replaced in the cluster (stopped or cut off past its lease); \
                     stopping its streams"
                );
                {
                    let mut r = cluster.renewals();
                    r.seq += 1;
                    r.replaced += 1;
                }
                let _ = c.register(&cluster.node, cluster.ttl);
                next = Instant::now() + every;
            }
            Err(e) => {
                next = Instant::now() + Duration::from_secs(1).min(every);
                cluster.away.store(true, Ordering::Relaxed);
                let mut r = cluster.renewals();
                r.seq += 1;
                if r.failing.is_none() {
                    r.failing = Some((now, e.to_string()));
                }
            }
        }
    }
}

/// Put the config file's streams in the database: each one that is missing, or whose
/// definition differs. Running the same file on every node changes nothing. Returns how many
/// were written.
pub(crate) fn seed(store: &dyn Store, streams: &[StreamConfig]) -> Result<usize, StoreError> {
    let existing: BTreeMap<String, serde_json::Value> = store
        .streams()?
        .into_iter()
        .map(|r| (r.id.0, r.config))
        .collect();
    let mut written = 0;
    for cfg in streams {
        let rec = crate::cluster::record(cfg);
        if existing.get(&cfg.id) == Some(&rec.config) {
            continue;
        }
        store.upsert_stream(&rec)?;
        written += 1;
    }
    Ok(written)
}

/// A stream's CPU as the scheduler measured it.
struct Measure {
    busy_s: f64,
    at: Instant,
    /// Past its first [`MEASURE_MIN`], which is not counted: a stream's start (probing its
    /// input, its first playlist and segments at once) costs more than it will.
    warm: bool,
    /// Cores, once measured for [`MEASURE_MIN`] after that.
    rate: Option<f64>,
}

/// An alive node as the loop last read it.
struct Peer {
    name: String,
    capacity: f64,
    load: f64,
    streams: u64,
}

/// The loop's state.
struct Placer {
    service: Arc<Service>,
    cluster: Arc<ClusterNode>,
    capacity: f64,
    measures: BTreeMap<String, Measure>,
    /// The renewer's answers seen so far, and its name take-overs.
    seen_seq: u64,
    seen_replaced: u64,
    /// When this loop started each stream it runs: a renewal sent before that does not list
    /// it, and must not stop it.
    started: BTreeMap<String, Instant>,
    /// Each running stream's definition digest as last compared ([`Self::sync_configs`]).
    digests: BTreeMap<String, String>,
    next_config: Instant,
    next_balance: Instant,
    /// Streams whose definition in the database is unusable, said once each.
    refused: BTreeSet<String>,
    /// Alive nodes as last read (this one included), and how many streams wait unwatched.
    peers: Vec<Peer>,
    unwatched: usize,
    /// Streams nobody has watched for [`URGENT_AFTER`] or more (their node died, or a hand-over
    /// nobody took): any node with room under its capacity takes them, fair share or not.
    urgent: BTreeSet<String>,
    /// When each unwatched stream that was never watched was first seen so.
    first_unwatched: BTreeMap<String, Instant>,
    /// After handing streams over, the others get to claim them first (after the database was
    /// away, `may_claim` waits for the others to renew).
    no_claim_until: Instant,
    /// Since when renewals fail (the database or the network is away).
    away_since: Option<Instant>,
    /// The renewer's last recovery from failing renewals that this loop said.
    seen_recovery: Option<Instant>,
    /// When this node stopped streams it still held (a long outage, or its name taken over):
    /// they are given up once the database answers, as lost then.
    stopped_at: Option<Instant>,
}

/// Run placement until `stop`; then the caller stops the streams and deregisters.
pub(crate) fn placement_thread(
    service: Arc<Service>,
    cluster: Arc<ClusterNode>,
    capacity: f64,
    stop: Arc<AtomicBool>,
) {
    let now = Instant::now();
    let mut p = Placer {
        service,
        cluster,
        capacity,
        measures: BTreeMap::new(),
        seen_seq: 0,
        seen_replaced: 0,
        started: BTreeMap::new(),
        digests: BTreeMap::new(),
        next_config: now + CONFIG_EVERY,
        // The peers are read at once: a node joining a cluster sizes its claims by them.
        next_balance: now,
        refused: BTreeSet::new(),
        peers: Vec::new(),
        unwatched: 0,
        urgent: BTreeSet::new(),
        first_unwatched: BTreeMap::new(),
        no_claim_until: now,
        away_since: None,
        seen_recovery: None,
        stopped_at: None,
    };
    let mut listener = match p.cluster.coordinator.listener().and_then(|mut l| {
        l.listen(LEASES_CHANNEL)?;
        Ok(l)
    }) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!("listening for hand-overs (claiming by polling only): {e}");
            None
        }
    };
    while !stop.load(Ordering::Relaxed) {
        p.round();
        // Sleep until the next round, or until another node releases, joins or leaves.
        match listener.as_mut() {
            Some(l) => match l.wait(TICK) {
                Ok(Some(Heard::Notification { .. })) | Ok(Some(Heard::Reconnected)) => {
                    // Let the burst of notifications of one hand-over arrive.
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(None) => {}
                Err(_) => std::thread::sleep(TICK),
            },
            None => std::thread::sleep(TICK),
        }
    }
}

impl Placer {
    fn round(&mut self) {
        self.measure();
        let load = self.load();
        self.cluster.load.store(load.to_bits(), Ordering::Relaxed);
        self.take_renewals();
        self.stop_fenced();
        let now = Instant::now();
        if now >= self.next_config {
            self.next_config = now + CONFIG_EVERY;
            self.sync_configs();
            self.sync_suppression();
        }
        if self.renewed_within(self.cluster.ttl) {
            if now >= self.next_balance {
                self.next_balance = now + BALANCE_EVERY;
                self.read_peers();
                self.balance();
            }
            if now >= self.no_claim_until && self.may_claim() {
                self.read_unwatched();
                // Nothing to take (every stream is held, and a new one shows as unwatched):
                // no claim, which would lock and read the leases for nothing.
                if self.unwatched > 0 {
                    self.claim();
                }
            }
        }
    }

    /// Whether the last renewal that worked was sent within `d`.
    fn renewed_within(&self, d: Duration) -> bool {
        let r = self.cluster.renewals();
        r.failing.is_none() && r.ok.as_ref().is_some_and(|(at, _)| at.elapsed() < d)
    }

    /// Whether this node may claim now, by what the renewer heard (asked again right before
    /// each claim: the loop's own steps may have waited on the database through an outage):
    /// renewals work, and it is more than a TTL since they worked again after failing, so
    /// that every node has renewed its own leases before any looks expired to another.
    fn may_claim(&self) -> bool {
        let ttl = self.cluster.ttl;
        self.renewed_within(ttl)
            && (self.cluster.renewals().recovered).is_none_or(|(at, _)| at.elapsed() >= ttl)
    }

    /// Each running stream's CPU since it was last measured.
    fn measure(&mut self) {
        let now = Instant::now();
        let mut seen = BTreeSet::new();
        for shared in self.service.shared_streams() {
            let id = shared.cfg.id.clone();
            let busy = shared.cpu.busy_s();
            let m = self.measures.entry(id.clone()).or_insert(Measure {
                busy_s: busy,
                at: now,
                warm: false,
                rate: None,
            });
            let dt = now.duration_since(m.at);
            if dt >= MEASURE_MIN && !m.warm {
                m.warm = true;
                m.busy_s = busy;
                m.at = now;
            } else if dt >= MEASURE_MIN {
                let rate = ((busy - m.busy_s) / dt.as_secs_f64()).max(MIN_COST);
                m.rate = Some(match m.rate {
                    Some(r) => 0.5 * r + 0.5 * rate,
                    None => rate,
                });
                m.busy_s = busy;
                m.at = now;
            }
            seen.insert(id);
        }
        self.measures.retain(|id, _| seen.contains(id));
    }

    /// The cost of a stream at `tier` not measured yet: the mean of those measured here at that
    /// tier; else of all measured here, scaled by the tiers' [`relative_cost`]; else the mean
    /// of the other nodes' streams (a node that just joined); else the default.
    fn estimate(&self, tier: Tier) -> f64 {
        let measured: Vec<(Tier, f64)> = self
            .service
            .shared_streams()
            .iter()
            .filter_map(|s| {
                let rate = self.measures.get(&s.cfg.id).and_then(|m| m.rate)?;
                Some((s.tier.get(), rate))
            })
            .collect();
        let mean = |v: Vec<f64>| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        let same = mean(
            measured
                .iter()
                .filter(|(t, _)| *t == tier)
                .map(|(_, r)| *r)
                .collect(),
        );
        let scaled = || {
            mean(
                measured
                    .iter()
                    .map(|(t, r)| r / relative_cost(*t) * relative_cost(tier))
                    .collect(),
            )
        };
        same.or_else(scaled)
            .or_else(|| self.peers_mean())
            .unwrap_or(FULL_COST * relative_cost(tier))
            .max(MIN_COST)
    }

    /// The mean cost of the other nodes' streams, from the load and count they last reported.
    fn peers_mean(&self) -> Option<f64> {
        let others = self
            .peers
            .iter()
            .filter(|p| p.name != self.cluster.node.name);
        let (load, n) = others.fold((0.0, 0u64), |(l, n), p| (l + p.load, n + p.streams));
        (n > 0 && load.is_finite() && load > 0.0).then(|| load / n as f64)
    }

    /// This node's load: its streams' measured CPU (estimated for those not measured yet).
    fn load(&self) -> f64 {
        // Each tier's estimate once (it reads every stream), not once per stream.
        let mut estimates: BTreeMap<Tier, f64> = BTreeMap::new();
        self.service
            .shared_streams()
            .iter()
            .map(
                |s| match self.measures.get(&s.cfg.id).and_then(|m| m.rate) {
                    Some(rate) => rate,
                    None => *estimates
                        .entry(s.tier.get())
                        .or_insert_with(|| self.estimate(s.tier.get())),
                },
            )
            .sum()
    }

    fn running(&self) -> BTreeSet<String> {
        match self.service.streams.lock() {
            Ok(s) => s.keys().cloned().collect(),
            Err(_) => BTreeSet::new(),
        }
    }

    /// Act on what the renewer heard since the last round: stop the streams this node no
    /// longer holds, hand back those it holds but does not run, and go into (or out of) the
    /// database-away mode.
    fn take_renewals(&mut self) {
        let (seq, ok, failing, replaced, recovered) = {
            let r = self.cluster.renewals();
            (
                r.seq,
                r.ok.clone(),
                r.failing.clone(),
                r.replaced,
                r.recovered,
            )
        };
        let c = self.cluster.clone();
        if replaced != self.seen_replaced {
            self.seen_replaced = replaced;
            let all: Vec<String> = self.running().into_iter().collect();
            self.service.drop_streams(&all, true);
            self.started.clear();
            self.stopped_at.get_or_insert(Instant::now());
        }
        if let Some((since, e)) = &failing {
            if self.away_since.is_none() {
                self.away_since = Some(*since);
                tracing::error!(
                    "renewing this node's leases: {e}; its streams stay monitored for up to \
                     {:.0} s while the database is away (results and notifications wait for \
                     it), and no stream is claimed meanwhile",
                    c.outage.as_secs_f64()
                );
            }
            // Past the outage allowance: another node (one that still reaches the database)
            // may hold these streams by now; stop them until the database answers.
            let silent = ok.as_ref().map_or(since.elapsed(), |(at, _)| at.elapsed());
            if silent >= c.outage {
                let all: Vec<String> = self.running().into_iter().collect();
                if !all.is_empty() {
                    tracing::error!(
                        streams = all.len(),
                        "leases not renewed for {:.0} s: stopping this node's streams until \
                         the database answers",
                        silent.as_secs_f64()
                    );
                    self.service.drop_streams(&all, true);
                    self.stopped_at.get_or_insert(Instant::now());
                }
            }
            return;
        }
        if seq == self.seen_seq {
            return;
        }
        self.seen_seq = seq;
        let Some((sent, held)) = ok else { return };
        self.away_since = None;
        // Claims wait a TTL after this (`may_claim`), so that every node renews its own first.
        if let Some((at, away)) = recovered.filter(|r| Some(r.0) != self.seen_recovery) {
            self.seen_recovery = Some(at);
            tracing::warn!(
                away_s = away.as_secs_f64(),
                "the database answers again: leases renewed"
            );
        }
        let running = self.running();
        self.started.retain(|id, _| running.contains(id));
        // Streams started after the renewal was sent are not in its answer.
        let lost: Vec<String> = running
            .iter()
            .filter(|id| !held.contains(*id) && self.started.get(*id).is_none_or(|t| *t < sent))
            .cloned()
            .collect();
        if !lost.is_empty() {
            self.let_go(lost);
        }
        let idle: Vec<StreamId> = held
            .iter()
            .filter(|id| !running.contains(*id))
            .map(|id| StreamId(id.clone()))
            .collect();
        let stopped = self.stopped_at.take();
        if !idle.is_empty() {
            // Write what they found under the lease first, then give them up, as lost
            // when they were stopped (the claim records the gap from then).
            self.service.drain_hub();
            let ago = stopped.map_or(Duration::ZERO, |t| t.elapsed());
            match c.coordinator.release_unwatched(&c.node, &idle, ago) {
                Ok(r) if !r.is_empty() => tracing::warn!(
                    streams = r.len(),
                    "streams held by this node but not running here: given up, as lost when \
                     they were stopped"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!("giving up streams this node does not run: {e}"),
            }
        }
    }

    /// Stop streams this node no longer holds: removed ones clear their alerts, the others
    /// leave them open for their next owner.
    fn let_go(&mut self, ids: Vec<String>) {
        let live: BTreeSet<String> = match self.service.store.streams() {
            Ok(s) => s.into_iter().map(|r| r.id.0).collect(),
            // Unknown: keep the alerts open; a removed stream's are closed by its next read.
            Err(_) => ids.iter().cloned().collect(),
        };
        let (kept, removed): (Vec<String>, Vec<String>) =
            ids.into_iter().partition(|id| live.contains(id));
        if !removed.is_empty() {
            tracing::info!(streams = ?removed, "streams removed from the cluster: stopping them");
            self.service.drop_streams(&removed, false);
        }
        if !kept.is_empty() {
            tracing::warn!(streams = ?kept, "streams no longer held by this node: stopping them");
            self.service.drop_streams(&kept, true);
        }
    }

    /// Streams whose results the store refused (another node took them over).
    fn stop_fenced(&mut self) {
        let fenced: Vec<String> = self
            .service
            .shared_streams()
            .iter()
            .filter(|s| s.fenced.load(Ordering::Relaxed))
            .map(|s| s.cfg.id.clone())
            .collect();
        if !fenced.is_empty() {
            self.service.drop_streams(&fenced, true);
        }
    }

    /// Apply definitions changed in the database to the running streams. Only digests are
    /// read every time; a definition is read (and compared with the running one) when its
    /// digest is not the one last seen for the stream.
    fn sync_configs(&mut self) {
        let c = self.cluster.clone();
        let Ok(digests) = c.coordinator.stream_digests() else {
            return;
        };
        let running = self.running();
        self.digests.retain(|id, _| running.contains(id));
        let changed: Vec<StreamId> = running
            .iter()
            .filter(|id| {
                digests
                    .get(&StreamId((*id).clone()))
                    .is_some_and(|d| self.digests.get(*id) != Some(d))
            })
            .map(|id| StreamId(id.clone()))
            .collect();
        if changed.is_empty() {
            return;
        }
        let Ok(records) = c.coordinator.streams_of(&changed) else {
            return;
        };
        for (rec, digest) in records {
            let Ok(shared) = self.service.shared(rec.id.as_str()) else {
                continue;
            };
            self.digests.insert(rec.id.0.clone(), digest);
            let current = serde_json::to_value(&shared.cfg).unwrap_or_default();
            if current == rec.config {
                continue;
            }
            let Some(cfg) = self.parse(&rec) else {
                continue;
            };
            let mut a = current.clone();
            let mut b = rec.config.clone();
            for v in [&mut a, &mut b] {
                if let Some(o) = v.as_object_mut() {
                    o.remove("tier");
                    o.remove("priority");
                }
            }
            if a == b {
                // Only the tier or priority: applied now, as the API does on one host.
                shared.ceiling.set(cfg.tier());
                shared.tier.set(cfg.tier());
                shared.priority.store(cfg.priority, Ordering::Relaxed);
                continue;
            }
            let Some(epoch) = shared.epoch else { continue };
            tracing::info!(stream = %rec.id, "stream definition changed: restarting it");
            self.service
                .stop_streams(std::slice::from_ref(&rec.id.0), true);
            let resume = self.resume_of(&rec.id);
            self.started.insert(rec.id.0.clone(), Instant::now());
            self.service.start_held(cfg, Some(epoch), resume);
        }
    }

    /// Mutes and maintenance windows set through any node's API.
    fn sync_suppression(&self) {
        let store = &self.service.store;
        if let (Ok(mutes), Ok(mut windows)) = (store.mutes(), store.windows()) {
            windows.extend(self.cluster.config_windows.iter().cloned());
            self.service.suppression.replace(mutes, windows);
        }
    }

    fn parse(&mut self, rec: &StreamRecord) -> Option<StreamConfig> {
        match StreamConfig::from_json(rec.config.clone(), &self.service.protocols) {
            Ok(cfg) if cfg.id == rec.id.0 => Some(cfg),
            Ok(cfg) => {
                if self.refused.insert(rec.id.0.clone()) {
                    tracing::error!(stream = %rec.id, "its definition names another id, {:?}", cfg.id);
                }
                None
            }
            Err(errors) => {
                if self.refused.insert(rec.id.0.clone()) {
                    tracing::error!(stream = %rec.id, "its definition is invalid: {}", errors.join("; "));
                }
                None
            }
        }
    }

    /// Read the other nodes' capacity and load, and how many streams nobody watches.
    fn read_peers(&mut self) {
        let c = &self.cluster;
        if let Ok(nodes) = c.coordinator.nodes(c.ttl) {
            self.peers = nodes
                .into_iter()
                .filter(|n| n.alive)
                .map(|n| Peer {
                    name: n.name,
                    capacity: n.capacity,
                    load: n.load,
                    streams: n.streams,
                })
                .collect();
        }
        self.read_unwatched();
    }

    /// Which streams nobody watches, and which of them for long.
    fn read_unwatched(&mut self) {
        let Ok(u) = self.cluster.coordinator.unwatched() else {
            return;
        };
        self.unwatched = u.len();
        let now = chrono::Utc::now();
        let later = Instant::now();
        let ids: BTreeSet<String> = u.iter().map(|w| w.stream.0.clone()).collect();
        self.first_unwatched.retain(|id, _| ids.contains(id));
        let lost = chrono::Duration::from_std(URGENT_AFTER).unwrap_or_default();
        let handed = chrono::Duration::from_std(HANDOVER_URGENT_AFTER).unwrap_or_default();
        self.urgent = u
            .into_iter()
            .filter(|w| match w.since {
                // Released (nobody held it last) or lost with its node.
                Some(since) if w.prev_node.is_none() => now - since >= handed,
                Some(since) => now - since >= lost,
                None => {
                    let first = *self
                        .first_unwatched
                        .entry(w.stream.0.clone())
                        .or_insert(later);
                    first.elapsed() >= URGENT_AFTER
                }
            })
            .map(|w| w.stream.0)
            .collect();
    }

    /// This node's fair share of the cluster's load (counting streams nobody holds yet at
    /// this node's estimate), by capacity.
    fn share(&self, load: f64) -> f64 {
        let me = &self.cluster.node.name;
        let mut caps = vec![self.capacity];
        let mut total = load;
        for p in &self.peers {
            if &p.name != me {
                caps.push(p.capacity);
                total += p.load;
            }
        }
        total += self.unwatched as f64 * self.estimate(Tier::Full).min(FULL_COST);
        avmon_store::cluster::fair_share(total, &caps)
            .first()
            .copied()
            .unwrap_or(self.capacity)
    }

    fn claim(&mut self) {
        let load = self.load();
        // Room: under capacity, and under the fair share with a little slack (one stream's
        // worth, so that a lone node or an idle cluster takes work without waiting).
        let share = if self.peers.len() <= 1 {
            self.capacity
        } else {
            (self.share(load) * 1.05).min(self.capacity)
        };
        if load >= share && (self.urgent.is_empty() || load >= self.capacity) {
            return;
        }
        let protocols = self.service.protocols.clone();
        let mut room = (share - load).max(0.0);
        let mut spare = self.capacity - load;
        let urgent = self.urgent.clone();
        let mut costs: BTreeMap<Tier, f64> = BTreeMap::new();
        for t in [
            Tier::Full,
            Tier::Reference,
            Tier::Keyframes,
            Tier::Transport,
        ] {
            costs.insert(t, self.estimate(t));
        }
        if !self.may_claim() {
            return;
        }
        let c = self.cluster.clone();
        let mut accept = |rec: &StreamRecord| {
            let Ok(cfg) = StreamConfig::from_json(rec.config.clone(), &protocols) else {
                return false;
            };
            let cost = costs.get(&cfg.tier()).copied().unwrap_or(FULL_COST);
            // The first stream always fits: a node with room for none would hold nothing.
            if cost <= room || room >= share {
                room -= cost;
                spare -= cost;
                true
            } else if urgent.contains(rec.id.as_str()) && cost <= spare {
                spare -= cost;
                true
            } else {
                false
            }
        };
        let claimed = match c
            .coordinator
            .claim(&c.node, c.ttl, CLAIM_BATCH, &mut accept)
        {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("claiming streams: {e}");
                return;
            }
        };
        if !claimed.is_empty() {
            tracing::info!(
                streams = claimed.len(),
                load,
                share,
                unwatched = self.unwatched,
                "claimed streams"
            );
        }
        self.start_claimed(claimed);
    }

    /// Where streams taken over continue from: their open alerts and their media time lines
    /// (two queries for all of them).
    fn resumes_of(&self, ids: &[StreamId]) -> BTreeMap<StreamId, Resume> {
        let c = &self.cluster.coordinator;
        let mut alerts = c.open_alerts_of(ids).unwrap_or_default();
        let mut last = c.last_media_times(ids).unwrap_or_default();
        let now = chrono::Utc::now();
        let mut out = BTreeMap::new();
        for id in ids {
            let alerts = alerts.remove(id).unwrap_or_default();
            let last = last.remove(id);
            if alerts.is_empty() && last.is_none() {
                continue;
            }
            let media_t = match last {
                Some((t, at)) => t + (now - at).num_milliseconds().max(0) as f64 / 1000.0,
                None => alerts.iter().map(|a| a.start_s).fold(0.0, f64::max),
            };
            out.insert(id.clone(), Resume { alerts, media_t });
        }
        out
    }

    fn resume_of(&self, id: &StreamId) -> Option<Resume> {
        self.resumes_of(std::slice::from_ref(id)).remove(id)
    }

    fn start_claimed(&mut self, claimed: Vec<Claimed>) {
        let ids: Vec<StreamId> = claimed.iter().map(|c| c.stream.id.clone()).collect();
        let mut resumes = self.resumes_of(&ids);
        for cl in claimed {
            let id = cl.stream.id.clone();
            let Some(cfg) = self.parse(&cl.stream) else {
                // Unusable: hand it back (after its lease, another node sees the same).
                let _ = self
                    .cluster
                    .coordinator
                    .release(&self.cluster.node, std::slice::from_ref(&id));
                continue;
            };
            if let Some(gap) = &cl.gap {
                tracing::warn!(
                    stream = %id, gap_s = gap.duration().as_secs_f64(), reason = gap.reason.as_str(),
                    prev = ?gap.prev_node, "taking the stream over after a gap in monitoring"
                );
            }
            let resume = resumes.remove(&id);
            if let Some(r) = &resume {
                if !r.alerts.is_empty() {
                    tracing::info!(stream = %id, alerts = r.alerts.len(), "continuing open alerts");
                }
            }
            // Already running (a restart of the same holding): leave it.
            if self.service.shared(id.as_str()).is_ok() {
                continue;
            }
            self.started.insert(id.0.clone(), Instant::now());
            self.service.start_held(cfg, Some(cl.epoch), resume);
        }
    }

    /// Over the fair share by more than a margin while another node is under its own: hand a
    /// few streams over.
    fn balance(&mut self) {
        if self.unwatched > 0 || self.peers.len() <= 1 {
            return;
        }
        // Only on measured figures: a stream just claimed counts at an estimate, and shedding
        // on estimates makes streams go back and forth.
        let streams = self.service.shared_streams();
        let n = streams.len();
        let measured = streams.iter().all(|s| {
            self.measures
                .get(&s.cfg.id)
                .is_some_and(|m| m.rate.is_some())
        });
        if n == 0 || !measured {
            return;
        }
        let load = self.load();
        let share = self.share(load);
        let per = load / n as f64;
        let margin = (0.1 * share).max(per);
        let me = &self.cluster.node.name;
        let total: f64 = self.peers.iter().map(|p| p.load).sum();
        let caps: Vec<f64> = self.peers.iter().map(|p| p.capacity).collect();
        let shares = avmon_store::cluster::fair_share(total, &caps);
        // The lightest node under its share, its load as if it had this node's capacity.
        let lightest = self
            .peers
            .iter()
            .zip(&shares)
            .filter(|(p, s)| &p.name != me && p.load + margin < **s && p.capacity > 0.0)
            .map(|(p, _)| p.load * self.capacity / p.capacity)
            .min_by(f64::total_cmp);
        let Some(lightest) = lightest else { return };
        if load <= share + margin {
            return;
        }
        // No more than this node's excess over its share, and never so many that the
        // lightest node would end up above this one (on figures as noisy as a few streams'
        // CPU, that would hand streams back and forth).
        let per = per.max(1e-6);
        let most = SHED_BATCH.max((n as f64 * SHED_PART) as usize);
        let excess = ((load - share) / per).floor() as usize;
        let no_flip = ((load - lightest) / (2.0 * per)).floor() as usize;
        let k = excess.min(no_flip).min(most);
        if k == 0 {
            return;
        }
        let c = self.cluster.clone();
        let picks = match c.coordinator.shed(&c.node, k) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("choosing streams to hand over: {e}");
                return;
            }
        };
        let ids: Vec<String> = picks.into_iter().map(|r| r.id.0).collect();
        if ids.is_empty() {
            return;
        }
        tracing::info!(streams = ?ids, load, share, "handing streams over to balance the cluster");
        // Stop first (what they found is written under their epoch), then release.
        let stopped = self.service.stop_streams(&ids, true);
        self.service.drain_hub();
        let ids: Vec<StreamId> = stopped.into_iter().map(StreamId).collect();
        if let Err(e) = c.coordinator.release(&c.node, &ids) {
            tracing::warn!("releasing streams: {e}");
        }
        // Let the others claim them before this node looks for work again.
        self.next_balance = Instant::now() + BALANCE_EVERY;
        self.no_claim_until = Instant::now() + Duration::from_secs(3);
    }
}
