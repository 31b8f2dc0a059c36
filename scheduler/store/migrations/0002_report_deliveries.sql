-- The daily report's deliveries: one row per (report job, day reported), so that a
-- day's report is sent once whatever triggers, retries or replicas run the job.

CREATE TABLE maintd.report_deliveries (
    job_id       text        NOT NULL,
    -- The day the report is about, in the report's time zone: the key of "once".
    report_date  date        NOT NULL,
    period_start timestamptz NOT NULL,
    period_end   timestamptz NOT NULL,
    -- 'sending': claimed by run_id; it may be claimed again once that run has ended.
    -- 'failed': the mail server refused or could not be reached; the next run sends it.
    state        text        NOT NULL CHECK (state IN ('sending', 'sent', 'failed')),
    -- No foreign key: run history is pruned, deliveries are kept.
    run_id       bigint      NOT NULL,
    node         text,
    attempts     integer     NOT NULL DEFAULT 1 CHECK (attempts >= 1),
    claimed_at   timestamptz NOT NULL,
    sent_at      timestamptz,
    recipients   text[]      NOT NULL,
    message_id   text        NOT NULL,
    error        text,
    PRIMARY KEY (job_id, report_date),
    CHECK ((state = 'sent') = (sent_at IS NOT NULL))
);

-- The report reads one period of run history: runs by when they started, fires
-- that did not run by when they were due. Without this, a scan of all history.
CREATE INDEX runs_happened_at ON maintd.runs ((coalesce(started_at, scheduled_for)));
