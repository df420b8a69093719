-- Retention (see crate::retention): metrics folded into 1-minute and 1-hour aggregates as they
-- age, and indexes to delete outbox rows by alert and attempts by age.

CREATE TABLE metrics_agg (
    stream_id text COLLATE "C" NOT NULL,
    span_s    integer NOT NULL,          -- 60 or 3600
    start_at  timestamptz NOT NULL,      -- the bucket's start
    media_t   double precision NOT NULL, -- the largest media time in it
    name      text NOT NULL,
    n         bigint NOT NULL,           -- samples folded in
    v_sum     double precision NOT NULL,
    v_max     double precision NOT NULL,
    PRIMARY KEY (stream_id, span_s, start_at, name)
);
CREATE INDEX outbox_alert_id ON outbox (alert_id);
CREATE INDEX outbox_attempts_at ON outbox_attempts (at);
