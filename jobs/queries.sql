-- The built-in jobs' queries: named, described blocks (see jobs/sql_blocks.py), one section per job.

-- daily_report

-- name: report_runs_by_job
-- Per job, its runs of the period [$1, $2) (by start; unrun fires by when they were
-- due) counted by status, and the longest; the report's own run $3 and dry runs (listed
-- apart, report_dry_runs) left out.
SELECT job_id, jsonb_object_agg(status, runs) AS counts, max(longest_s) AS longest_s
FROM (
    SELECT job_id, status, count(*)::int AS runs,
           max(extract(epoch FROM finished_at - started_at))::float8 AS longest_s
    FROM maintd.runs
    WHERE coalesce(started_at, scheduled_for) >= $1 AND coalesce(started_at, scheduled_for) < $2 AND id <> $3
      AND NOT dry_run
    GROUP BY job_id, status
) per_status
GROUP BY job_id
ORDER BY job_id;

-- name: report_failures
-- The failed, timed-out and lost runs of the period [$1, $2) (not dry runs), newest
-- first, at most $3, each with the number there were in all.
SELECT id, job_id, status, trigger, attempt, node, started_at,
       extract(epoch FROM finished_at - started_at)::float8 AS duration_s, error,
       count(*) OVER ()::int AS total
FROM maintd.runs
WHERE status IN ('failed', 'timed_out', 'lost') AND NOT dry_run
  AND coalesce(started_at, scheduled_for) >= $1 AND coalesce(started_at, scheduled_for) < $2
ORDER BY started_at DESC, id DESC
LIMIT $3;

-- name: report_longest_runs
-- The $3 longest runs (not dry runs) that started and ended in the period [$1, $2),
-- whatever their outcome.
SELECT id, job_id, status, trigger, attempt, node, started_at,
       extract(epoch FROM finished_at - started_at)::float8 AS duration_s, error
FROM maintd.runs
WHERE started_at IS NOT NULL AND finished_at IS NOT NULL AND NOT dry_run
  AND coalesce(started_at, scheduled_for) >= $1 AND coalesce(started_at, scheduled_for) < $2
ORDER BY finished_at - started_at DESC, id
LIMIT $3;

-- name: report_unrun_fires
-- Fires of the period [$1, $2) that did not run (skipped, missed), grouped by job and reason.
SELECT job_id, status, error AS reason, count(*)::int AS fires,
       min(scheduled_for) AS first, max(scheduled_for) AS last
FROM maintd.runs
WHERE status IN ('skipped', 'missed')
  AND coalesce(started_at, scheduled_for) >= $1 AND coalesce(started_at, scheduled_for) < $2
GROUP BY job_id, status, error
ORDER BY job_id, status, first;

-- name: report_job_health
-- Every job with a run or fire since $1, or a run in progress (not counting the report's
-- own run $2): pause state, last success, failures since it, the usual gap between its
-- fires (median of the last ten) and its oldest run in progress.
WITH seen AS (
    SELECT job_id, count(*) FILTER (WHERE status <> 'running')::int AS ended
    FROM maintd.runs
    WHERE (coalesce(started_at, scheduled_for) >= $1 OR status = 'running') AND id <> $2 AND NOT dry_run
    GROUP BY job_id
)
SELECT seen.job_id, seen.ended,
       coalesce(s.paused, false) AS paused, s.changed_at AS paused_at, s.changed_by AS paused_by, s.first_seen,
       ok.finished_at AS last_success,
       bad.failures, bad.last_status, bad.last_error,
       fires.usual_interval,
       busy.id AS running_id, busy.started_at AS running_since, busy.node AS running_node
FROM seen
LEFT JOIN maintd.job_state s USING (job_id)
LEFT JOIN LATERAL (
    SELECT r.id, r.finished_at FROM maintd.runs r
    WHERE r.job_id = seen.job_id AND r.status = 'succeeded' AND NOT r.dry_run
    ORDER BY r.id DESC LIMIT 1
) ok ON true
LEFT JOIN LATERAL (
    SELECT count(*)::int AS failures,
           (array_agg(r.status ORDER BY r.id DESC))[1] AS last_status,
           (array_agg(r.error ORDER BY r.id DESC))[1] AS last_error
    FROM maintd.runs r
    WHERE r.job_id = seen.job_id AND r.status IN ('failed', 'timed_out', 'lost') AND r.id > coalesce(ok.id, 0)
      AND NOT r.dry_run
) bad ON true
LEFT JOIN LATERAL (
    SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY gap) AS usual_interval
    FROM (
        SELECT fire - lag(fire) OVER (ORDER BY fire) AS gap
        FROM (
            SELECT DISTINCT r.scheduled_for AS fire FROM maintd.runs r
            WHERE r.job_id = seen.job_id AND r.trigger IN ('schedule', 'catch_up')
            ORDER BY fire DESC LIMIT 11
        ) recent
    ) gaps
) fires ON true
LEFT JOIN LATERAL (
    SELECT r.id, r.started_at, r.node FROM maintd.runs r
    WHERE r.job_id = seen.job_id AND r.status = 'running' AND r.id <> $2
    ORDER BY r.started_at LIMIT 1
) busy ON true
ORDER BY seen.job_id;

-- name: report_dry_runs
-- Per job, its dry runs of the period [$1, $2) by status: they changed nothing, so they
-- are no success (nor failure) in the report's figures and are listed apart.
SELECT job_id, jsonb_object_agg(status, runs) AS counts
FROM (
    SELECT job_id, status, count(*)::int AS runs
    FROM maintd.runs
    WHERE dry_run AND coalesce(started_at, scheduled_for) >= $1 AND coalesce(started_at, scheduled_for) < $2
    GROUP BY job_id, status
) per_status
GROUP BY job_id
ORDER BY job_id;

-- name: report_unsent_deliveries
-- Reports of job $1 for the $3 days before $2 never confirmed sent: refused, or claimed
-- by a run that ended before marking them; newest first.
SELECT d.report_date, d.state, d.error, d.run_id, r.status AS run_status
FROM maintd.report_deliveries d
LEFT JOIN maintd.runs r ON r.id = d.run_id
WHERE d.job_id = $1 AND d.report_date < $2 AND d.report_date >= $2 - $3::int
  AND (d.state = 'failed' OR (d.state = 'sending' AND r.status IS DISTINCT FROM 'running'))
ORDER BY d.report_date DESC;

-- name: report_sessions
-- In the sessions table {table} (a quoted name), by its expiry column {expires}: sessions
-- that expired in [$1, $2) and are still there, those active at $3 (now) and those
-- expired by $3, waiting for cleanup. Each count can use an index on the expiry.
SELECT (SELECT count(*) FROM {table} WHERE {expires} >= $1::timestamptz AND {expires} < $2::timestamptz) AS expired,
       (SELECT count(*) FROM {table} WHERE {expires} > $3::timestamptz) AS active,
       (SELECT count(*) FROM {table} WHERE {expires} <= $3::timestamptz) AS awaiting_cleanup;

-- name: report_sessions_created
-- Sessions of {table} (a quoted name) created in [$1, $2) by its column {created}.
SELECT count(*) FROM {table} WHERE {created} >= $1::timestamptz AND {created} < $2::timestamptz;

-- name: report_sessions_deleted
-- Rows of the table quoted as $3 that runs of the period [$1, $2) deleted, by their
-- results: cleanup_sessions returns {"table": <quoted name>, "deleted": N}. NULL: none ran.
SELECT sum((result->>'deleted')::bigint)::bigint
FROM maintd.runs
WHERE coalesce(started_at, scheduled_for) >= $1 AND coalesce(started_at, scheduled_for) < $2
  AND result->>'table' = $3 AND jsonb_typeof(result->'deleted') = 'number' AND NOT dry_run;

-- name: claim_report_delivery
-- Claim the report of job $1 for day $2 (period [$3, $4)) for run $5 at $6: insert it as
-- 'sending', or take it over when its last attempt failed or the run that claimed it
-- ended without marking it (crashed, lost, cancelled mid-send). Concurrent claims of one
-- day serialize on the key and exactly one gets the row. No row: it is sent, or a live
-- run is sending it.
INSERT INTO maintd.report_deliveries AS d
    (job_id, report_date, period_start, period_end, state, run_id, node, claimed_at, recipients, message_id)
VALUES ($1, $2, $3, $4, 'sending', $5, (SELECT node FROM maintd.runs WHERE id = $5), $6, $7, $8)
ON CONFLICT (job_id, report_date) DO UPDATE
SET state = 'sending', run_id = EXCLUDED.run_id, node = EXCLUDED.node, claimed_at = EXCLUDED.claimed_at,
    period_start = EXCLUDED.period_start, period_end = EXCLUDED.period_end,
    recipients = EXCLUDED.recipients, message_id = EXCLUDED.message_id,
    attempts = d.attempts + 1, error = NULL
WHERE d.state = 'failed'
   OR (d.state = 'sending'
       AND NOT EXISTS (SELECT 1 FROM maintd.runs r WHERE r.id = d.run_id AND r.status = 'running'))
RETURNING *;

-- name: mark_report_sent
-- The mail server accepted the report of job $1 for day $2 from run $3 at $4. Recorded
-- whoever holds the claim: a report that went out is sent. No row: it was already marked.
UPDATE maintd.report_deliveries
SET state = 'sent', sent_at = $4, run_id = $3, error = NULL
WHERE job_id = $1 AND report_date = $2 AND state <> 'sent'
RETURNING job_id;

-- name: mark_report_failed
-- Release run $3's claim on the report of job $1 for day $2 with the error $4, so the
-- next run sends it.
UPDATE maintd.report_deliveries SET state = 'failed', error = $4
WHERE job_id = $1 AND report_date = $2 AND run_id = $3 AND state = 'sending';

-- name: get_report_delivery
-- The delivery of job $1's report for day $2, with how the run that claimed it stands.
SELECT d.*, r.status AS run_status
FROM maintd.report_deliveries d
LEFT JOIN maintd.runs r ON r.id = d.run_id
WHERE d.job_id = $1 AND d.report_date = $2;

-- cleanup_sessions

-- name: cleanup_inspect
-- The table named $1 (a quoted name, resolved through the search_path as the DELETE
-- resolves it) and its column $2: table_oid is NULL when there is no such table,
-- column_type when it has no such column; indexed says whether a valid, non-partial
-- btree index leads with the column, which the batches walk.
SELECT t.oid AS table_oid, current_setting('search_path') AS search_path,
       format_type(a.atttypid, NULL) AS column_type,
       EXISTS (
           SELECT 1 FROM pg_index i
           JOIN pg_class ic ON ic.oid = i.indexrelid
           JOIN pg_am am ON am.oid = ic.relam
           WHERE i.indrelid = t.oid AND i.indkey[0] = a.attnum
             AND i.indisvalid AND i.indpred IS NULL AND am.amname = 'btree'
       ) AS indexed
FROM (SELECT to_regclass($1) AS oid) t
LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped;

-- name: cleanup_count_expired
-- A dry run: how many rows of {table} (a quoted name) the cleanup would delete, those
-- with {expires} before the cutoff $1 (NULL never expires), read through the expiry index.
SELECT count(*) FROM {table} WHERE {expires} < $1::timestamptz;

-- batched deletes (jobs/batched_delete.py): cleanup_sessions, prune_history

-- name: batch_next_bound
-- The end of the next batch in {table} (a quoted name or one of maintd's tables): the
-- value of {key} (a column, or the expression an index holds) of the ($3 + 1)-th row,
-- in index order, of those with {key} in [$1, $2) ($1 NULL: from the start) that
-- {deletable} allows to go, so at most $3 of them lie below it. No row: at most $3 are left.
-- Named apart from {key}: ORDER BY a plain column name would otherwise sort by the output
-- column, the cast, which no index of a date or timestamp column holds.
SELECT {key}::timestamptz AS bound FROM {table}
WHERE {key} >= coalesce($1::timestamptz, '-infinity') AND {key} < $2::timestamptz AND {deletable}
ORDER BY {key}
OFFSET $3 LIMIT 1;

-- name: batch_delete_range
-- Delete the rows of {table} with {key} in [$1, $2) ($1 NULL: from the start) that
-- {deletable} allows to go, only while run $3 holds its lease: its row, locked until this
-- batch commits so that no replica can declare it lost meanwhile, must still be running
-- (else nothing is deleted; see batch_run_status). No such run (the task called outside
-- the daemon): no fence.
WITH lease AS (
    SELECT status FROM maintd.runs WHERE id = $3 FOR SHARE
)
DELETE FROM {table}
WHERE {key} >= coalesce($1::timestamptz, '-infinity') AND {key} < $2::timestamptz AND {deletable}
  AND NOT EXISTS (SELECT 1 FROM lease WHERE status <> 'running');

-- name: batch_delete_ties
-- Delete at most $2 of the rows of {table} whose {key} is exactly $1 (and that {deletable}
-- allows to go): more rows share that value than one batch holds, so no range of values
-- can split them. By ctid alone: a condition on {key} here would let the planner scan the
-- whole group instead. Fenced by run $3's lease as batch_delete_range is.
WITH lease AS (
    SELECT status FROM maintd.runs WHERE id = $3 FOR SHARE
)
DELETE FROM {table}
WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} WHERE {key} = $1::timestamptz AND {deletable} LIMIT $2))
  AND NOT EXISTS (SELECT 1 FROM lease WHERE status <> 'running');

-- name: batch_run_status
-- After a batch that deleted nothing: whether run $1 still holds its lease (NULL: no such run).
SELECT status FROM maintd.runs WHERE id = $1;

-- prune_history

-- name: history_kept_runs
-- The runs the engine reads back however old they are, read once per prune_history run:
-- of every job it has seen, its newest run, its newest scheduled fire (where catch-up
-- starts looking for missed ones) and its newest success (what the dead-man's switch
-- measures from).
SELECT coalesce(array_agg(kept.id), '{}')
FROM maintd.job_state j
CROSS JOIN LATERAL (
    SELECT (SELECT r.id FROM maintd.runs r WHERE r.job_id = j.job_id ORDER BY r.id DESC LIMIT 1)
    UNION
    SELECT (SELECT r.id FROM maintd.runs r WHERE r.job_id = j.job_id AND r.trigger IN ('schedule', 'catch_up')
            ORDER BY r.scheduled_for DESC LIMIT 1)
    UNION
    SELECT (SELECT r.id FROM maintd.runs r WHERE r.job_id = j.job_id AND r.status = 'succeeded' AND NOT r.dry_run
            ORDER BY r.id DESC LIMIT 1)
) AS kept(id)
WHERE kept.id IS NOT NULL;

-- name: history_keep_runs
-- The runs prune_history keeps whatever their age (a condition on maintd.runs): those in
-- progress, and those of history_kept_runs, passed as $4.
status = 'running' OR id = ANY($4::bigint[]);

-- name: history_running_runs
-- The runs in progress, read once per prune_history run: a run that starts later has
-- no line older than a day, the shortest retention.
SELECT coalesce(array_agg(id), '{}') FROM maintd.runs WHERE status = 'running';

-- name: history_keep_run_logs
-- The run log lines prune_history keeps whatever their age (a condition on
-- maintd.run_logs): those of runs in progress (history_running_runs, passed as $4).
run_id = ANY($4::bigint[]);
