-- What each run logged: a bounded head and tail of its events (scheduler/run_logs.py),
-- written by the run's owner while it runs and when it ends.

CREATE TABLE maintd.run_logs (
    -- Pruning run history prunes its logs with it.
    run_id bigint      NOT NULL REFERENCES maintd.runs (id) ON DELETE CASCADE,
    -- The line's number in the run's whole log: a gap is where lines were dropped,
    -- and the 'log_lines_dropped' line at its start says how many.
    seq    integer     NOT NULL CHECK (seq >= 1),
    at     timestamptz NOT NULL,
    level  text        NOT NULL,
    event  text        NOT NULL,
    fields jsonb       NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, seq)
);

-- How many lines of the run's log were dropped to keep it within its bounds.
ALTER TABLE maintd.runs ADD COLUMN log_lines_dropped integer NOT NULL DEFAULT 0;
