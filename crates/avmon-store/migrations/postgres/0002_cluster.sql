-- avmon on PostgreSQL, schema version 2: the cluster's coordination (see src/cluster.rs).
--
-- Every time in these tables comes from the database's own now(), never a node's clock: the
-- nodes' clocks may disagree, the database's is the one they share.

-- One row per node name. A name is one node at a time: a row whose instance was seen within
-- the lease TTL (and has not left) cannot be taken by another instance.
CREATE TABLE nodes (
    name       text COLLATE "C" PRIMARY KEY,
    instance   uuid NOT NULL,                 -- a fresh one per process start
    api_addr   text NOT NULL,                 -- advertised API address (host:port or URL)
    capacity   double precision NOT NULL,     -- in the scheduler's cost units
    load       double precision NOT NULL DEFAULT 0,
    started_at timestamptz NOT NULL DEFAULT now(),
    last_seen  timestamptz NOT NULL DEFAULT now(),
    left_at    timestamptz                    -- set by a clean shutdown; NULL while running
);

-- One lease per stream: who watches it, under which epoch, until when. A row is created for
-- every live stream before a claim (INSERT … ON CONFLICT DO NOTHING), so that claimers can
-- lock existing rows with FOR UPDATE SKIP LOCKED.
--
-- The epoch grows by one at every claim and at nothing else: a (stream, epoch) pair names one
-- holding, and a write carrying an epoch other than the current one is refused (fencing).
-- A lease past expires_at is claimable, not lost: its holder may still renew it (same epoch)
-- until another claim takes it.
CREATE TABLE leases (
    stream_id   text COLLATE "C" PRIMARY KEY,
    node        text COLLATE "C",             -- NULL: never held, or released
    instance    uuid,                         -- the holder's instance (a restarted node is another)
    epoch       bigint NOT NULL DEFAULT 0,
    expires_at  timestamptz NOT NULL DEFAULT now(),
    claimed_at  timestamptz,                  -- the holder's claim
    renewed_at  timestamptz,                  -- the holder's last claim or renewal
    released_at timestamptz                   -- when the last holder handed it over
);
CREATE INDEX leases_node ON leases (node) WHERE node IS NOT NULL;

-- Time during which no node watched a stream, recorded by the claim that ended it.
CREATE TABLE monitoring_gaps (
    id        bigserial PRIMARY KEY,
    stream_id text COLLATE "C" NOT NULL,
    from_at   timestamptz NOT NULL,           -- the previous holder's last renewal, or its release
    to_at     timestamptz NOT NULL,           -- the claim that ended it
    prev_node text,
    next_node text NOT NULL,
    reason    text NOT NULL CHECK (reason IN ('node_lost', 'released'))
);
CREATE INDEX monitoring_gaps_stream ON monitoring_gaps (stream_id, to_at);
CREATE INDEX monitoring_gaps_to ON monitoring_gaps (to_at);

-- The outbox is delivered by whichever node claims its rows: a claim names the node and lasts
-- until claimed_until, after which any node may take the row again.
ALTER TABLE outbox ADD COLUMN claimed_by text;
ALTER TABLE outbox ADD COLUMN claimed_until timestamptz;
