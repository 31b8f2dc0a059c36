-- Runs (one row per fire, run or not), pause state and the admin audit trail.

CREATE TABLE maintd.runs (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id              text        NOT NULL,
    trigger             text        NOT NULL CHECK (trigger IN ('schedule', 'manual', 'catch_up', 'retry')),
    status              text        NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled',
                                                               'timed_out', 'lost', 'skipped', 'missed')),
    scheduled_for       timestamptz NOT NULL,
    attempt             integer     NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    -- overlap = 'forbid' at claim time; the partial unique index below enforces it.
    exclusive           boolean     NOT NULL,
    started_at          timestamptz,
    finished_at         timestamptz,
    -- Written with the database's clock, so the lease is immune to replicas' clock skew.
    heartbeat_at        timestamptz,
    result              jsonb,
    error               text,
    progress            jsonb,
    triggered_by        text,
    node                text        NOT NULL,
    cancel_requested_by text,
    CHECK ((status = 'running') = (finished_at IS NULL))
);

-- Exactly once per fire: a replica claims (job, fire time, attempt) by inserting
-- this key; every other replica's insert conflicts and it does nothing.
CREATE UNIQUE INDEX runs_fire_key ON maintd.runs (job_id, scheduled_for, attempt) WHERE trigger <> 'manual';
-- overlap = 'forbid', cluster-wide: at most one running run of an exclusive job.
CREATE UNIQUE INDEX runs_one_running ON maintd.runs (job_id) WHERE status = 'running' AND exclusive;
CREATE INDEX runs_job_newest ON maintd.runs (job_id, id DESC);
CREATE INDEX runs_status_newest ON maintd.runs (status, id DESC);
CREATE INDEX runs_running_heartbeat ON maintd.runs (heartbeat_at) WHERE status = 'running';

CREATE TABLE maintd.job_state (
    job_id      text        PRIMARY KEY,
    paused      boolean     NOT NULL DEFAULT false,
    -- When this job was first seen: fires before it are not "missed".
    first_seen  timestamptz NOT NULL,
    changed_at  timestamptz,
    changed_by  text
);

CREATE TABLE maintd.audit (
    id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        timestamptz NOT NULL,
    principal text        NOT NULL,
    action    text        NOT NULL,
    target    text        NOT NULL,
    client    text,
    detail    jsonb
);
