-- The web console's sign-ins (admin_api/console/sessions.py): kept in the database so
-- that a session is valid on every replica. Only the sha256 of the cookie's value is
-- stored, so these rows grant nothing to whoever reads them. A session ends at
-- expires_at ([admin] session_ttl after sign-in), at sign-out, or once a reload removes
-- its token; prune_history deletes the expired ones.

CREATE TABLE maintd.console_sessions (
    id_sha256    bytea       PRIMARY KEY,
    -- The [[admin.tokens]] entry signed in with: its principal and role are read from the
    -- current config on every request, so a reload that removes the token ends the session.
    token_sha256 text        NOT NULL,
    principal    text        NOT NULL,
    -- The session's CSRF token, carried by every form that changes anything.
    csrf         text        NOT NULL,
    client       text,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL
);
CREATE INDEX console_sessions_expires_at ON maintd.console_sessions (expires_at);

-- The console's calendar reads, for a page of jobs, each one's records of the last 30
-- days: one range of this index per job, answered from the index alone. Without it,
-- the whole month of every job was read and filtered (74 ms with 1 M runs, 20 ms with it).
CREATE INDEX runs_job_happened ON maintd.runs (job_id, (coalesce(started_at, scheduled_for)))
    INCLUDE (status, started_at, scheduled_for);
