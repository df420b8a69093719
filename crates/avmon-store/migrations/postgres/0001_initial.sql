-- avmon on PostgreSQL, schema version 1: everything the SQLite schema (versions 1 to 3) holds.
--
-- Conventions, kept by later migrations:
-- * wall times are timestamptz, written truncated to milliseconds by avmon;
-- * ids that are listed in order (stream ids, alert ids, notifier ids) use COLLATE "C", so they
--   sort by bytes, as in SQLite, whatever the database's default collation;
-- * JSON that avmon hands back as written (alert details, notification payloads, attempt
--   details) is `json`, which keeps the text and its key order; JSON that is compared or
--   queried (a stream's config) is `jsonb`;
-- * no foreign key from alerts or metrics to streams: one-shot runs record alerts for streams
--   they never persist, and a removed stream keeps its history.
-- The cluster (leases with an epoch per stream, a nodes table, epoch-carrying writes) comes in
-- later migrations next to these tables.

CREATE TABLE streams (
    id         text COLLATE "C" PRIMARY KEY,
    url        text NOT NULL,
    config     jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    removed_at timestamptz              -- NULL while the stream is live
);

CREATE TABLE alerts (
    id         text COLLATE "C" PRIMARY KEY,   -- UUIDv7
    stream_id  text COLLATE "C" NOT NULL,
    kind       text NOT NULL,                  -- video.black, ...
    severity   text NOT NULL,                  -- info|warning|minor|major|critical
    state      text NOT NULL CHECK (state IN ('raised', 'cleared')),
    start_s    double precision NOT NULL,      -- media time
    end_s      double precision,
    raised_at  timestamptz NOT NULL,
    cleared_at timestamptz,
    details    json NOT NULL,                  -- a JSON object
    suppressed text                            -- NULL (notified) | muted | maintenance
);
CREATE INDEX alerts_stream_raised ON alerts (stream_id, raised_at);
CREATE INDEX alerts_raised ON alerts (raised_at);
CREATE INDEX alerts_cleared ON alerts (cleared_at);
CREATE INDEX alerts_active ON alerts (raised_at) WHERE state = 'raised';

-- One narrow row per value, as in SQLite: any value of any stream can be selected by name.
CREATE TABLE metrics (
    id        bigserial,                 -- insertion order: a sample's values read back together
    stream_id text COLLATE "C" NOT NULL,
    at        timestamptz NOT NULL,
    media_t   double precision NOT NULL,
    name      text NOT NULL,
    value     double precision NOT NULL
);
CREATE INDEX metrics_stream_at ON metrics (stream_id, at);
-- Retention deletes by time across streams; rows arrive in time order, so a BRIN index is
-- enough for that and costs almost nothing to keep up to date.
CREATE INDEX metrics_at ON metrics USING brin (at);

CREATE TABLE acks (
    alert_id  text COLLATE "C" PRIMARY KEY REFERENCES alerts (id) ON DELETE CASCADE,
    author    text NOT NULL,             -- the API token's name
    comment   text NOT NULL,
    acked_at  timestamptz NOT NULL
);

CREATE TABLE mutes (
    stream_id  text COLLATE "C" PRIMARY KEY,
    until_at   timestamptz,              -- NULL: until unmuted
    author     text NOT NULL,
    comment    text NOT NULL,
    created_at timestamptz NOT NULL
);

CREATE TABLE maintenance (               -- windows added over the API
    id       text COLLATE "C" PRIMARY KEY,
    streams  text[] NOT NULL,            -- stream id globs
    start_at timestamptz NOT NULL,
    end_at   timestamptz NOT NULL,
    comment  text NOT NULL,
    author   text NOT NULL
);

-- The notification outbox: one row per (notifier, idempotency key), stored before delivery.
-- Any node may deliver later (claiming rows with FOR UPDATE SKIP LOCKED): the unique key is
-- what makes a key delivered once across the cluster.
CREATE TABLE outbox (
    id         bigserial PRIMARY KEY,    -- delivery order per notifier
    notifier   text COLLATE "C" NOT NULL,
    alert_id   text COLLATE "C" NOT NULL,
    state      text NOT NULL,            -- raised|updated|cleared
    idem_key   text NOT NULL,            -- {alert_id}:{state}
    payload    json NOT NULL,
    created_at timestamptz NOT NULL,
    status     text NOT NULL DEFAULT 'pending'
               CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts   integer NOT NULL DEFAULT 0,
    last_error text,
    done_at    timestamptz,
    group_key  text,                     -- e.g. the PagerDuty dedup key it went under
    UNIQUE (notifier, idem_key)
);
CREATE INDEX outbox_pending ON outbox (notifier, id) WHERE status = 'pending';
CREATE INDEX outbox_alert ON outbox (notifier, alert_id);

CREATE TABLE outbox_attempts (
    id        bigserial PRIMARY KEY,     -- the log's order among attempts at the same time
    outbox_id bigint NOT NULL,           -- the first row of the batch attempted
    notifier  text COLLATE "C" NOT NULL,
    at        timestamptz NOT NULL,
    outcome   text NOT NULL,             -- delivered|retry|failed
    detail    json NOT NULL              -- HTTP status, error, command exit and output
);
CREATE INDEX outbox_attempts_notifier ON outbox_attempts (notifier, at, id);
