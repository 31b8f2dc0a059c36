-- The web console's queries (scheduler/store/console_store.py): its sessions, and the
-- views of history the JSON API does not answer. Each is one statement, whatever the
-- number of jobs or rows on the page.

-- name: open_session
-- Start a console session.
INSERT INTO maintd.console_sessions (id_sha256, token_sha256, principal, csrf, client, created_at, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7);

-- name: find_session
-- A session that has not expired at $2; no row otherwise.
SELECT token_sha256, principal, csrf, created_at, expires_at FROM maintd.console_sessions
WHERE id_sha256 = $1 AND expires_at > $2;

-- name: end_session
-- End a session (sign-out, or its token is gone); returns its principal, no row when unknown.
DELETE FROM maintd.console_sessions WHERE id_sha256 = $1
RETURNING principal;

-- name: recent_fires
-- The newest $2 records (runs, and fires that did not run) of each of the given jobs,
-- newest first: the overview's strips, one index scan of runs_job_newest per job.
SELECT j.job_id, r.id, r.trigger, r.status, r.scheduled_for, r.started_at, r.finished_at
FROM unnest($1::text[]) AS j(job_id)
CROSS JOIN LATERAL (
    SELECT id, trigger, status, scheduled_for, started_at, finished_at FROM maintd.runs
    WHERE job_id = j.job_id
    ORDER BY id DESC
    LIMIT $2
) r;

-- name: job_history
-- A page of one job's runs newest first: optionally of one status ($2) and trigger ($3),
-- older than run $4, and happened (started, or due for fires that did not run) in
-- [$5, $6); at most $7.
SELECT * FROM maintd.runs
WHERE job_id = $1
  AND ($2::text IS NULL OR status = $2)
  AND ($3::text IS NULL OR trigger = $3)
  AND ($4::bigint IS NULL OR id < $4)
  AND ($5::timestamptz IS NULL OR coalesce(started_at, scheduled_for) >= $5)
  AND ($6::timestamptz IS NULL OR coalesce(started_at, scheduled_for) < $6)
ORDER BY id DESC
LIMIT $7;

-- name: job_durations
-- The duration of the newest $2 runs of a job that started and ended, newest first.
SELECT id, status, started_at, extract(epoch FROM finished_at - started_at)::float8 AS duration_s
FROM maintd.runs
WHERE job_id = $1 AND started_at IS NOT NULL AND finished_at IS NOT NULL
ORDER BY id DESC
LIMIT $2;

-- name: calendar
-- Per job of $5 and day (in time zone $3) of [$1, $2): how many records, and the worst
-- outcome of the day by the rank the console gives each status ($4: statuses, best
-- first). Runs count on the day they started, fires that did not run on their fire time.
SELECT job_id, (coalesce(started_at, scheduled_for) AT TIME ZONE $3)::date AS day, count(*)::int AS records,
       ($4::text[])[max(array_position($4::text[], status))] AS worst
FROM maintd.runs
WHERE coalesce(started_at, scheduled_for) >= $1 AND coalesce(started_at, scheduled_for) < $2
  AND job_id = ANY($5::text[])
GROUP BY job_id, day;

-- name: search_audit
-- Admin actions newest first: optionally by one principal ($1), one action ($2), about
-- one job ($3: the job itself, or one of its runs), older than entry $4; at most $5.
SELECT * FROM maintd.audit
WHERE ($1::text IS NULL OR principal = $1)
  AND ($2::text IS NULL OR action = $2)
  AND ($3::text IS NULL OR target = $3 OR (target LIKE 'run:%' AND detail ->> 'job_id' = $3))
  AND ($4::bigint IS NULL OR id < $4)
ORDER BY id DESC
LIMIT $5;
