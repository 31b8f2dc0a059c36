-- The replicas that are up: each upserts its row on every heartbeat and deletes it
-- on a clean stop. Fires due soon are shared out among the live ones (claim ahead).

CREATE TABLE maintd.nodes (
    node         text        PRIMARY KEY,
    started_at   timestamptz NOT NULL,
    -- The database's clock, like runs.heartbeat_at: immune to replicas' clock skew.
    heartbeat_at timestamptz NOT NULL
);
