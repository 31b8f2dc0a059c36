-- Alerts already sent, one row per (job, kind), so that among several replicas exactly
-- one sends each alert: a replica claims it by moving this row forward in one
-- statement, and the replica whose statement changes nothing stays quiet.

CREATE TABLE maintd.alert_state (
    job_id        text        NOT NULL,
    -- 'run': a run ended badly (rate limited by [alerts].min_interval);
    -- 'overdue': the dead-man's switch (once per overdue episode).
    kind          text        NOT NULL CHECK (kind IN ('run', 'overdue')),
    last_sent_at  timestamptz NOT NULL,
    -- 'run': the run alerted last, so that a run is never alerted twice even without a limit.
    run_id        bigint,
    -- 'overdue': the job's last success before the episode alerted (NULL: it never
    -- succeeded). The next success starts a new episode: this value then differs.
    after_success timestamptz,
    node          text        NOT NULL,
    PRIMARY KEY (job_id, kind)
);
