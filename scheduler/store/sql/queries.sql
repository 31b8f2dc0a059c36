-- name: claim_run
-- Claim a run of a job: insert it as running unless another replica holds the same
-- fire key, an exclusive run of the job is in progress, or (for fires) the job is paused.
-- $10-$14: what an operator asked of it (effective params, overrides, reason, dry run,
-- the run it re-runs). Returns the new run, or no row.
INSERT INTO maintd.runs (job_id, trigger, status, scheduled_for, attempt, exclusive, started_at, heartbeat_at,
                         triggered_by, node, params, overrides, reason, dry_run, rerun_of)
SELECT $1, $2, 'running', $3, $4, $5, $6, now(), $7, $8, $10, $11, $12, $13, $14
WHERE $9::boolean OR NOT EXISTS (SELECT 1 FROM maintd.job_state s WHERE s.job_id = $1 AND s.paused)
ON CONFLICT DO NOTHING
RETURNING *;

-- name: claim_fires
-- Claim the scheduled fires of one APScheduler pass in one statement. Every replica
-- inserts in (job_id, scheduled_for) order, so concurrent batches wait on each other
-- instead of deadlocking. Returns the runs won.
INSERT INTO maintd.runs (job_id, trigger, status, scheduled_for, attempt, exclusive,
                         started_at, heartbeat_at, node)
SELECT f.job_id, 'schedule', 'running', f.scheduled_for, 1, f.exclusive, $4, now(), $5
FROM unnest($1::text[], $2::timestamptz[], $3::boolean[]) AS f(job_id, scheduled_for, exclusive)
WHERE NOT EXISTS (SELECT 1 FROM maintd.job_state s WHERE s.job_id = f.job_id AND s.paused)
ORDER BY f.job_id, f.scheduled_for
ON CONFLICT DO NOTHING
RETURNING *;

-- name: taken_fires
-- Which of the given first-attempt fire keys some replica has claimed or recorded.
SELECT r.job_id, r.scheduled_for FROM maintd.runs r
JOIN unnest($1::text[], $2::timestamptz[]) AS f(job_id, scheduled_for)
  ON r.job_id = f.job_id AND r.scheduled_for = f.scheduled_for
WHERE r.attempt = 1 AND r.trigger NOT IN ('manual', 'replay');

-- name: running_run_of_job
-- The exclusive run of a job in progress, if any.
SELECT * FROM maintd.runs WHERE job_id = $1 AND status = 'running' AND exclusive;

-- name: claim_blockers
-- Why a claim of fire key ($1, $2, attempt $3) inserted nothing, as the database sees
-- it now: the row holding the key (none for a manual claim, $2 NULL), whether the job
-- is paused, and the exclusive run in progress with how long its owner has been silent.
SELECT (SELECT id FROM maintd.runs
        WHERE job_id = $1 AND scheduled_for = $2 AND attempt = $3 AND trigger NOT IN ('manual', 'replay')) AS fire_run_id,
       coalesce((SELECT paused FROM maintd.job_state WHERE job_id = $1), false) AS paused,
       r.id AS running_id,
       extract(epoch FROM now() - r.heartbeat_at)::float8 AS running_silent_s
FROM (SELECT 1) AS one
LEFT JOIN maintd.runs r ON r.job_id = $1 AND r.status = 'running' AND r.exclusive;

-- name: record_unrun_fire
-- Record a fire that did not run (skipped, missed); a no-op when the fire key is taken.
INSERT INTO maintd.runs (job_id, trigger, status, scheduled_for, attempt, exclusive,
                         finished_at, error, node)
VALUES ($1, $2, $3, $4, $5, false, $6, $7, $8)
ON CONFLICT DO NOTHING
RETURNING *;

-- name: record_missed_fires
-- Record many scheduled fires that did not run as missed, each with its reason, in one
-- statement; fires whose key is taken (run, or recorded, elsewhere) are left out.
INSERT INTO maintd.runs (job_id, trigger, status, scheduled_for, attempt, exclusive,
                         finished_at, error, node)
SELECT f.job_id, 'schedule', 'missed', f.scheduled_for, 1, false, $4, f.reason, $5
FROM unnest($1::text[], $2::timestamptz[], $3::text[]) AS f(job_id, scheduled_for, reason)
ON CONFLICT DO NOTHING
RETURNING *;

-- name: finish_run
-- Record how a run that never started ended (a fire claimed ahead that will not run
-- here). Only a running row changes: what the reaper recorded stands.
UPDATE maintd.runs
SET status = $2, finished_at = $3, result = $4, error = $5
WHERE id = $1 AND status = 'running'
RETURNING *;

-- name: finish_runs
-- Record how the runs that ended together ended, in one statement. A running run gets
-- its outcome as its status, the params it ran with where its claim did not write them
-- (fires: their config's), and its start where mark_started was not sent (a run
-- claimed ahead that ended in its first step) or did not get through. A run declared
-- lost, or a fire recorded missed, keeps that record for good: its owner's outcome came
-- after its lease and is kept beside it as late_outcome (once: the first one stands).
UPDATE maintd.runs r
SET status = CASE WHEN r.status = 'running' THEN f.status ELSE r.status END,
    finished_at = CASE WHEN r.status = 'running' THEN f.finished_at ELSE r.finished_at END,
    result = CASE WHEN r.status = 'running' THEN f.result ELSE r.result END,
    error = CASE WHEN r.status = 'running' THEN f.error ELSE r.error END,
    started_at = CASE WHEN r.status = 'running' THEN coalesce(r.started_at, f.started_at) ELSE r.started_at END,
    params = coalesce(r.params, f.params),
    late_outcome = CASE WHEN r.status = 'running' THEN NULL ELSE jsonb_build_object(
        'status', f.status, 'finished_at', f.finished_at, 'error', f.error, 'result', f.result) END
FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::jsonb[], $5::text[], $6::timestamptz[], $7::jsonb[])
     AS f(id, status, finished_at, result, error, started_at, params)
WHERE r.id = f.id AND (r.status = 'running' OR (r.status IN ('lost', 'missed') AND r.late_outcome IS NULL))
RETURNING r.*;

-- name: set_progress
-- Publish a running run's progress; no row when the run is no longer running (its
-- owner's lease ran out and it was declared lost).
UPDATE maintd.runs SET progress = $2 WHERE id = $1 AND status = 'running'
RETURNING id;

-- name: heartbeat
-- Keep this node's runs alive; returns those whose cancellation was requested.
UPDATE maintd.runs SET heartbeat_at = now()
WHERE id = ANY($1::bigint[]) AND status = 'running'
RETURNING id, cancel_requested_by;

-- name: reap_lost_runs
-- Declare lost the runs whose owner stopped heartbeating for longer than the lease;
-- a fire claimed ahead whose owner stopped before it was due never started: missed.
UPDATE maintd.runs
SET status = CASE WHEN started_at IS NULL THEN 'missed' ELSE 'lost' END,
    finished_at = now(),
    error = CASE
        WHEN started_at IS NULL THEN 'missed: node ' || node
            || ' claimed this fire ahead and stopped heartbeating before it was due (last at ' || heartbeat_at || ')'
        ELSE 'lost: node ' || node || ' stopped heartbeating (last at ' || heartbeat_at || ')'
    END
WHERE status = 'running' AND heartbeat_at < now() - $1::interval
RETURNING *;

-- name: reap_own_runs
-- A replica that finds its lease ran out (it was frozen, its loop blocked, or the
-- database out of reach for a lease) ends its runs as the reaper would have, before
-- it writes anything else for them: started ones lost, fires claimed ahead missed.
-- $2 says why. Rows another replica reaped already are left as they are.
UPDATE maintd.runs
SET status = CASE WHEN started_at IS NULL THEN 'missed' ELSE 'lost' END,
    finished_at = now(),
    error = CASE WHEN started_at IS NULL THEN 'missed: ' ELSE 'lost: ' END || $2
WHERE id = ANY($1::bigint[]) AND status = 'running'
RETURNING *;

-- name: reap_node_runs
-- At start: the runs a previous process under this node's name left running. That
-- process is gone (the node name is one replica's), so they end now instead of a
-- lease later: started ones lost, fires it claimed ahead missed.
UPDATE maintd.runs
SET status = CASE WHEN started_at IS NULL THEN 'missed' ELSE 'lost' END,
    finished_at = now(),
    error = CASE WHEN started_at IS NULL THEN 'missed: ' ELSE 'lost: ' END
        || 'node ' || node || ' restarted (last heartbeat at ' || heartbeat_at || ')'
WHERE node = $1 AND status = 'running'
RETURNING *;

-- name: request_cancel
-- Ask the owner of a running run to cancel it, and wake it through NOTIFY (delivered
-- at commit); no row when the run is not running.
WITH asked AS (
    UPDATE maintd.runs SET cancel_requested_by = $2
    WHERE id = $1 AND status = 'running'
    RETURNING *
)
SELECT asked.*,
       pg_notify('maintd_cancel', json_build_object('run_id', asked.id, 'by', $2::text)::text) AS notified
FROM asked;

-- name: runs_to_retry
-- Failed, timed-out or lost runs of the given jobs, ended since $2, whose next
-- attempt no replica has claimed yet. Dry runs and replays are not retried (the
-- operator asks again; a replayed fire that failed stays replayable).
SELECT r.* FROM maintd.runs r
WHERE r.job_id = ANY($1::text[])
  AND r.status IN ('failed', 'timed_out', 'lost')
  AND r.finished_at > $2
  AND NOT r.dry_run AND r.trigger <> 'replay'
  AND NOT EXISTS (
      SELECT 1 FROM maintd.runs n
      WHERE n.job_id = r.job_id AND n.scheduled_for = r.scheduled_for
        AND n.attempt = r.attempt + 1 AND n.trigger NOT IN ('manual', 'replay')
  );

-- name: get_run
-- One run by id.
SELECT * FROM maintd.runs WHERE id = $1;

-- name: list_runs
-- Runs newest first, optionally of one job and/or one status.
SELECT * FROM maintd.runs
WHERE ($1::text IS NULL OR job_id = $1) AND ($2::text IS NULL OR status = $2)
ORDER BY id DESC
LIMIT $3;

-- name: last_runs
-- The newest run of each of the given jobs: one index lookup per job (DISTINCT ON read
-- every run of the jobs, 150 ms for 500 jobs with 1 M runs: bench/console.py).
SELECT r.* FROM unnest($1::text[]) AS j(job_id)
CROSS JOIN LATERAL (
    SELECT * FROM maintd.runs WHERE job_id = j.job_id ORDER BY id DESC LIMIT 1
) r;

-- name: last_statuses
-- The status of the newest run of each of the given jobs (one index lookup per job),
-- dry runs left out: one neither makes a job failing nor ok.
SELECT j.job_id, r.status
FROM unnest($1::text[]) AS j(job_id)
CROSS JOIN LATERAL (
    SELECT status FROM maintd.runs WHERE job_id = j.job_id AND NOT dry_run ORDER BY id DESC LIMIT 1
) r;

-- name: running_counts
-- How many runs of each job are in progress, cluster-wide.
SELECT job_id, count(*) AS running FROM maintd.runs WHERE status = 'running' GROUP BY job_id;

-- name: last_fires
-- The latest scheduled fire of each job before $2 recorded by any replica (run or not),
-- NULL for a job with none; one index lookup per job.
SELECT j.job_id, (
    SELECT max(r.scheduled_for) FROM maintd.runs r
    WHERE r.job_id = j.job_id AND r.trigger IN ('schedule', 'catch_up') AND r.scheduled_for < $2
) AS last_fire
FROM unnest($1::text[]) AS j(job_id);

-- name: register_jobs
-- Note when each configured job was first seen; returns every job's state.
INSERT INTO maintd.job_state AS s (job_id, first_seen)
SELECT unnest($1::text[]), $2
ON CONFLICT (job_id) DO NOTHING;

-- name: job_states
-- Pause state and first sighting of the given jobs (of every job: $1 NULL).
SELECT job_id, paused, first_seen, changed_at, changed_by FROM maintd.job_state
WHERE $1::text[] IS NULL OR job_id = ANY($1::text[]);

-- name: set_paused
-- Pause or resume a job, cluster-wide.
INSERT INTO maintd.job_state (job_id, paused, first_seen, changed_at, changed_by)
VALUES ($1, $2, $3, $3, $4)
ON CONFLICT (job_id) DO UPDATE
SET paused = EXCLUDED.paused, changed_at = EXCLUDED.changed_at, changed_by = EXCLUDED.changed_by;

-- name: add_audit
-- Record one admin action.
INSERT INTO maintd.audit (at, principal, action, target, client, detail)
VALUES ($1, $2, $3, $4, $5, $6);

-- name: list_audit
-- Admin actions newest first.
SELECT * FROM maintd.audit ORDER BY id DESC LIMIT $1;

-- name: ping
-- Readiness: the database answers; also returns its clock.
SELECT now();

-- name: claim_ahead
-- Claim first attempts of fires due shortly, before their time: the rows are running
-- with started_at unset until the owner starts them at the fire time. Same order
-- and conflict rules as claim_fires.
INSERT INTO maintd.runs (job_id, trigger, status, scheduled_for, attempt, exclusive, heartbeat_at, node)
SELECT f.job_id, 'schedule', 'running', f.scheduled_for, 1, f.exclusive, now(), $4
FROM unnest($1::text[], $2::timestamptz[], $3::boolean[]) AS f(job_id, scheduled_for, exclusive)
WHERE NOT EXISTS (SELECT 1 FROM maintd.job_state s WHERE s.job_id = f.job_id AND s.paused)
ORDER BY f.job_id, f.scheduled_for
ON CONFLICT DO NOTHING
RETURNING *;

-- name: mark_started
-- Record when runs claimed ahead really started.
UPDATE maintd.runs r SET started_at = f.started_at
FROM unnest($1::bigint[], $2::timestamptz[]) AS f(id, started_at)
WHERE r.id = f.id AND r.started_at IS NULL;

-- name: node_heartbeat
-- Note that this node is up; return the live nodes (heartbeat within the lease), sorted,
-- each with the database's clock (for the clock check, without a round trip of its own).
-- Nodes silent for a day are forgotten.
WITH me AS (
    INSERT INTO maintd.nodes AS n (node, started_at, heartbeat_at) VALUES ($1, now(), now())
    ON CONFLICT (node) DO UPDATE SET heartbeat_at = now()
    RETURNING n.node
), forgotten AS (
    DELETE FROM maintd.nodes WHERE heartbeat_at < now() - interval '1 day' AND node <> $1
)
SELECT node, now() AS database_now FROM me
UNION
SELECT node, now() FROM maintd.nodes WHERE heartbeat_at > now() - $2::interval
ORDER BY node;

-- name: node_stopped
-- A clean stop: the other replicas take over this node's share at once.
DELETE FROM maintd.nodes WHERE node = $1;

-- name: failure_streak
-- Alerts (scheduler/alerts.py). How many runs of job $1 in a row, up to run $2 (ended
-- at $3) included, ended without success: failed, timed_out, lost or cancelled since
-- the latest success. Fires that did not run (skipped, missed) and dry runs neither
-- count nor break the streak. Runs are ordered by when they ended: a lost run ends when
-- it is reaped.
WITH last_success AS (
    SELECT finished_at, id FROM maintd.runs
    WHERE job_id = $1 AND status = 'succeeded' AND NOT dry_run AND (finished_at, id) <= ($3::timestamptz, $2::bigint)
    ORDER BY finished_at DESC, id DESC
    LIMIT 1
)
SELECT count(*) FROM maintd.runs r
WHERE r.job_id = $1
  AND r.status IN ('failed', 'timed_out', 'lost', 'cancelled') AND NOT r.dry_run
  AND (r.finished_at, r.id) <= ($3::timestamptz, $2::bigint)
  AND NOT EXISTS (SELECT 1 FROM last_success s WHERE (r.finished_at, r.id) <= (s.finished_at, s.id));

-- name: claim_run_alert
-- Claim the alert for run $2 of job $1 at $3: won (one row) unless this run was alerted
-- already or the job's last run alert was sent less than $5 before $3. One statement,
-- so that of several replicas exactly one wins.
INSERT INTO maintd.alert_state AS a (job_id, kind, last_sent_at, run_id, node)
VALUES ($1, 'run', $3, $2, $4)
ON CONFLICT (job_id, kind) DO UPDATE
SET last_sent_at = EXCLUDED.last_sent_at, run_id = EXCLUDED.run_id, node = EXCLUDED.node
WHERE a.run_id IS DISTINCT FROM EXCLUDED.run_id AND a.last_sent_at <= EXCLUDED.last_sent_at - $5::interval
RETURNING a.job_id;

-- name: claim_overdue_alert
-- Claim the overdue alert of job $1 at $2: won (one row, with the job's last success)
-- once per episode, an episode being the time after one last success (or none ever;
-- a dry run is none).
INSERT INTO maintd.alert_state AS a (job_id, kind, last_sent_at, after_success, node)
SELECT $1, 'overdue', $2, max(finished_at), $3
FROM maintd.runs WHERE job_id = $1 AND status = 'succeeded' AND NOT dry_run
ON CONFLICT (job_id, kind) DO UPDATE
SET last_sent_at = EXCLUDED.last_sent_at, after_success = EXCLUDED.after_success, node = EXCLUDED.node
WHERE a.after_success IS DISTINCT FROM EXCLUDED.after_success
RETURNING a.after_success;

-- run logs

-- name: add_run_log_lines
-- Write captured lines of runs; a line already written (a flush retried after its
-- commit went unconfirmed) is left as it is.
INSERT INTO maintd.run_logs (run_id, seq, at, level, event, fields)
SELECT l.run_id, l.seq, l.at, l.level, l.event, l.fields::jsonb
FROM unnest($1::bigint[], $2::integer[], $3::timestamptz[], $4::text[], $5::text[], $6::text[])
     AS l(run_id, seq, at, level, event, fields)
ON CONFLICT (run_id, seq) DO NOTHING;

-- name: drop_run_log_lines
-- Delete a run's lines dropped since they were written ($2 + 1 < seq < $3), put the
-- line saying how many were dropped ($7) at the start of the gap, and count them on the run.
WITH gone AS (
    DELETE FROM maintd.run_logs WHERE run_id = $1 AND seq > $2 + 1 AND seq < $3
), marker AS (
    INSERT INTO maintd.run_logs (run_id, seq, at, level, event, fields)
    VALUES ($1, $2 + 1, $4, 'warning', $5, $6)
    ON CONFLICT (run_id, seq) DO UPDATE
    SET at = EXCLUDED.at, level = EXCLUDED.level, event = EXCLUDED.event, fields = EXCLUDED.fields
)
UPDATE maintd.runs SET log_lines_dropped = $7 WHERE id = $1;

-- name: run_log_lines_dropped
-- How many lines of a run's log were dropped; no row for an unknown run.
SELECT log_lines_dropped FROM maintd.runs WHERE id = $1;

-- name: run_log_lines
-- A run's lines after line $2, in order, at most $3.
SELECT seq, at, level, event, fields FROM maintd.run_logs
WHERE run_id = $1 AND seq > $2
ORDER BY seq
LIMIT $3;

-- name: last_successes
-- When each of the given jobs last succeeded, on any replica (newest first on the
-- (job_id, id) index: the scan stops at the first success). A dry run changed nothing:
-- it is no success for the dead-man's switch.
SELECT j.job_id, r.finished_at
FROM unnest($1::text[]) AS j(job_id)
CROSS JOIN LATERAL (
    SELECT finished_at FROM maintd.runs
    WHERE job_id = j.job_id AND status = 'succeeded' AND NOT dry_run
    ORDER BY id DESC LIMIT 1
) r;

-- name: successes_since
-- The newest success (by id) of each job among the runs numbered $1 and up and the runs
-- $2 (those running when last asked: they may have succeeded since), every row with
-- where to ask from next time (the next run number) and the runs running now. One row
-- with job_id NULL when there is no such success.
WITH next AS (
    SELECT (SELECT coalesce(max(id), 0) + 1 FROM maintd.runs) AS next_from,
           (SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM maintd.runs WHERE status = 'running') AS running
)
SELECT s.job_id, s.finished_at, next.next_from, next.running FROM next
LEFT JOIN (
    SELECT DISTINCT ON (job_id) job_id, finished_at FROM maintd.runs
    WHERE status = 'succeeded' AND NOT dry_run AND (id >= $1 OR id = ANY($2::bigint[]))
    ORDER BY job_id, id DESC
) s ON true;

-- operator requests (scheduler/engine/admin.py, scheduler/engine/replays.py)

-- name: claim_idempotency_key
-- Take Idempotency-Key $3 of principal $1 for job $2, for a request whose body has the
-- sha256 $4, at $5: insert it, or take over the row of a key used longer than $6 ago (it
-- no longer counts). A request with the same key in flight elsewhere holds the row until
-- its transaction ends: this waits for it, then finds its row. A row (run_id NULL): the
-- key is this request's. No row: it is an earlier request's (idempotency_key).
INSERT INTO maintd.idempotency_keys AS k (principal, job_id, key, body_sha256, run_id, created_at)
VALUES ($1, $2, $3, $4, NULL, $5)
ON CONFLICT (principal, job_id, key) DO UPDATE
SET body_sha256 = EXCLUDED.body_sha256, run_id = NULL, created_at = EXCLUDED.created_at
WHERE k.created_at <= EXCLUDED.created_at - $6::interval
RETURNING k.*;

-- name: idempotency_key
-- Idempotency-Key $3 of principal $1 for job $2: the earlier request's body sha256 and run.
SELECT * FROM maintd.idempotency_keys WHERE principal = $1 AND job_id = $2 AND key = $3;

-- name: set_idempotency_run
-- The run that the request holding Idempotency-Key $3 of principal $1 for job $2 started.
UPDATE maintd.idempotency_keys SET run_id = $4 WHERE principal = $1 AND job_id = $2 AND key = $3;

-- name: replayable_fires
-- The fires of job $1 from $2 to $3 (both included) a replay runs, oldest first, at most
-- $4: fire times recorded by a scheduled, catch-up or retry row (run or not) of which no
-- row, nor any replay's, succeeded (a dry run is no success) or is running.
SELECT f.scheduled_for
FROM (
    SELECT DISTINCT scheduled_for FROM maintd.runs
    WHERE job_id = $1 AND scheduled_for >= $2 AND scheduled_for <= $3 AND trigger NOT IN ('manual', 'replay')
) f
WHERE NOT EXISTS (
    SELECT 1 FROM maintd.runs r
    WHERE r.job_id = $1 AND r.scheduled_for = f.scheduled_for AND r.trigger NOT IN ('manual', 'replay')
      AND ((r.status = 'succeeded' AND NOT r.dry_run) OR r.status = 'running')
) AND NOT EXISTS (
    SELECT 1 FROM maintd.runs r
    WHERE r.job_id = $1 AND r.scheduled_for = f.scheduled_for AND r.trigger = 'replay'
      AND r.status IN ('running', 'succeeded')
)
ORDER BY f.scheduled_for
LIMIT $4;

-- name: claim_replay
-- Claim the replay of job $1's fire $2 ($3: exclusive) for node $6 at $4, by $5, with the
-- params $7 and reason $8: a run with trigger 'replay' and the fire's scheduled_for,
-- unless the fire succeeded meanwhile, a replay of it runs or succeeded
-- (runs_replay_once), or an exclusive run of the job is in progress. The job's pause
-- does not hold: a replay is an operator's request. No row: see replay_blockers.
INSERT INTO maintd.runs (job_id, trigger, status, scheduled_for, attempt, exclusive, started_at, heartbeat_at,
                         triggered_by, node, params, reason)
SELECT $1, 'replay', 'running', $2, 1, $3, $4, now(), $5, $6, $7, $8
WHERE NOT EXISTS (
    SELECT 1 FROM maintd.runs r
    WHERE r.job_id = $1 AND r.scheduled_for = $2 AND r.trigger NOT IN ('manual', 'replay')
      AND r.status = 'succeeded' AND NOT r.dry_run
)
ON CONFLICT DO NOTHING
RETURNING *;

-- name: replay_blockers
-- Why the replay of job $1's fire $2 was not claimed: covered (it succeeded, or a replay
-- of it runs or succeeded: nothing to replay), or the job's exclusive run in progress.
SELECT EXISTS (
           SELECT 1 FROM maintd.runs r
           WHERE r.job_id = $1 AND r.scheduled_for = $2 AND r.trigger <> 'manual'
             AND ((r.status = 'succeeded' AND NOT r.dry_run) OR (r.trigger = 'replay' AND r.status = 'running'))
       ) AS covered,
       (SELECT id FROM maintd.runs WHERE job_id = $1 AND status = 'running' AND exclusive) AS running_id;
