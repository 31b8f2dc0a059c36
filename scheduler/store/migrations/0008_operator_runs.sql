-- What an operator asks of a run by hand (POST /admin/trigger with a body, rerun, replay),
-- kept on the run, and the idempotency keys that make a repeated request one run.

-- params: the params the run ran with (configured, with a manual run's overrides merged
-- over them); written at the claim for runs started by hand, with the outcome for the
-- others. NULL for fires that did not run and for runs recorded before this migration.
-- reason: the operator's why. dry_run: the task was asked to change nothing; such a run
-- is never a success for the dead-man's switch, alerts, replay or the daily report.
-- overrides: the params the operator gave (a rerun takes them over the config of its
-- time). rerun_of: the run this one re-runs (no foreign key: run history is pruned).
ALTER TABLE maintd.runs
    ADD COLUMN params    jsonb,
    ADD COLUMN overrides jsonb,
    ADD COLUMN reason    text,
    ADD COLUMN dry_run   boolean NOT NULL DEFAULT false,
    ADD COLUMN rerun_of  bigint;

-- 'replay': a run of a recorded fire that did not run or never succeeded, started by
-- POST /admin/jobs/{id}/replay, with that fire's scheduled_for.
ALTER TABLE maintd.runs DROP CONSTRAINT runs_trigger_check;
ALTER TABLE maintd.runs ADD CONSTRAINT runs_trigger_check
    CHECK (trigger IN ('schedule', 'manual', 'catch_up', 'retry', 'replay'));

-- A replay run shares its fire time with the fire's own rows, so the fire key leaves it
-- out as it leaves out manual runs (built before the old one goes: the key always holds).
CREATE UNIQUE INDEX runs_fire_key_8 ON maintd.runs (job_id, scheduled_for, attempt)
    WHERE trigger NOT IN ('manual', 'replay');
DROP INDEX maintd.runs_fire_key;
ALTER INDEX maintd.runs_fire_key_8 RENAME TO runs_fire_key;
-- A fire is replayed once: two replays of one range (on two replicas, or one after the
-- other) cannot both run or both succeed for the same fire; a failed replay leaves it
-- replayable.
CREATE UNIQUE INDEX runs_replay_once ON maintd.runs (job_id, scheduled_for)
    WHERE trigger = 'replay' AND status IN ('running', 'succeeded');

-- Idempotency-Key of POST /admin/trigger/{job_id}, per principal and job: the request's
-- body (canonical JSON) as its sha256, and the run it started. A key older than 24 h no
-- longer counts; prune_history deletes the rows after their retention (by created_at).
CREATE TABLE maintd.idempotency_keys (
    principal   text        NOT NULL,
    job_id      text        NOT NULL,
    key         text        NOT NULL,
    body_sha256 text        NOT NULL,
    -- Set in the transaction that inserts the row: no other request sees it without.
    run_id      bigint,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (principal, job_id, key)
);
CREATE INDEX idempotency_keys_created_at ON maintd.idempotency_keys (created_at);
