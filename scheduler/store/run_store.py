"""The run store: one typed async function per query of ``sql/queries.sql``.

Everything that changes at run time (runs, pause state, audit) lives in
PostgreSQL, in the ``maintd`` schema; this module is the only one that talks
to it on the daemon's behalf.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from maintd.admin_api.interface import Actor, AuditOut, RunLogLine
from maintd.scheduler.run_logs import LogBatch
from maintd.scheduler.store.own_connection import OwnConnection
from maintd.scheduler.store.records import Run, run_from_row
from maintd.scheduler.store.sql import QUERIES as Q


async def init_connection(conn: asyncpg.Connection) -> None:
    """Per-connection setup: jsonb as Python values, UTC session time zone."""
    await conn.set_type_codec("jsonb", encoder=_dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=_dumps, decoder=json.loads, schema="pg_catalog")


def _dumps(value: Any) -> str:
    # A task's result is "JSON-able"; anything else (dates, decimals) is shown as text.
    return json.dumps(value, default=str)


_SERVER_SETTINGS = {"application_name": "maintd", "timezone": "UTC"}


async def create_pool(dsn: str, *, max_size: int) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        dsn,
        # Connections are opened at start, not while a burst of fires waits for them.
        min_size=max_size,
        max_size=max_size,
        init=init_connection,
        server_settings=_SERVER_SETTINGS,
    )


@dataclass(frozen=True)
class Claim:
    """What to insert when claiming a run."""

    job_id: str
    trigger: str
    scheduled_for: datetime
    attempt: int
    exclusive: bool
    started_at: datetime
    triggered_by: str | None
    node: str
    ignore_pause: bool
    # What an operator asked of the run: the params it runs with (None: written with its
    # outcome, from the config), the overrides among them, why, dry, the run it re-runs.
    params: dict[str, Any] | None = None
    overrides: dict[str, Any] | None = None
    reason: str | None = None
    dry_run: bool = False
    rerun_of: int | None = None


@dataclass(frozen=True)
class IdempotencyKey:
    """An ``Idempotency-Key`` as a request uses it: whose, for which job, and its body's hash."""

    principal: str
    job_id: str
    key: str
    body_sha256: str


@dataclass(frozen=True)
class EarlierRequest:
    """The request that used an idempotency key first: its body's hash and its run."""

    body_sha256: str
    run_id: int | None


@dataclass(frozen=True)
class ClaimBlockers:
    """Why a claim inserted nothing, as the database sees it a moment later."""

    fire_run_id: int | None  # the row that holds the fire key
    paused: bool
    running_id: int | None  # the job's exclusive run in progress
    running_silent_s: float | None  # since its owner last heartbeated it


class RunStore:
    """Typed access to the ``maintd`` schema through a pool."""

    def __init__(self, pool: asyncpg.Pool, dsn: str) -> None:
        self.pool = pool
        self.dsn = dsn
        # Claims and outcomes go over a connection of their own (see OwnConnection), one
        # statement at a time: a burst's jobs keep every pool connection.
        self._line = OwnConnection(lambda: self.dedicated_connection())

    async def open(self) -> None:
        """Open the claims' and outcomes' connection (at the engine's start)."""
        await self._line.open()

    async def close(self) -> None:
        """Close the claims' and outcomes' connection (the pool is its owner's to close)."""
        await self._line.close()

    async def dedicated_connection(self) -> asyncpg.Connection:
        """A connection outside the pool: for LISTEN (a pool connection would be reset on
        release), and for heartbeats and outcomes that jobs holding every pooled connection
        must not starve."""
        conn = await asyncpg.connect(self.dsn, server_settings=_SERVER_SETTINGS)
        await init_connection(conn)
        return conn

    async def claim_run(self, claim: Claim, *, via: asyncpg.Connection | None = None) -> Run | None:
        row = await (via or self.pool).fetchrow(
            Q["claim_run"],
            claim.job_id,
            claim.trigger,
            claim.scheduled_for,
            claim.attempt,
            claim.exclusive,
            claim.started_at,
            claim.triggered_by,
            claim.node,
            claim.ignore_pause,
            claim.params,
            claim.overrides,
            claim.reason,
            claim.dry_run,
            claim.rerun_of,
        )
        return run_from_row(row) if row else None

    async def claim_keyed_run(
        self, claim: Claim, key: IdempotencyKey, at: datetime, window: timedelta
    ) -> Run | EarlierRequest | None:
        """Claim a manual run under an idempotency key, in one transaction: the key is taken
        first (a request with the same key in flight elsewhere is waited for), then the
        run is claimed and the key names it. The key's earlier request when it was used
        within ``window`` (nothing claimed); None when the claim inserted nothing, and then
        the key stays unused (the transaction rolls back)."""
        args = (key.principal, key.job_id, key.key)
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                if await conn.fetchrow(Q["claim_idempotency_key"], *args, key.body_sha256, at, window) is None:
                    row = await conn.fetchrow(Q["idempotency_key"], *args)
                    return EarlierRequest(row["body_sha256"], row["run_id"])
                run = await self.claim_run(claim, via=conn)
                if run is None:
                    raise _NothingClaimed
                await conn.execute(Q["set_idempotency_run"], *args, run.id)
                return run
        except _NothingClaimed:
            return None

    async def claim_fires(
        self, fires: Sequence[tuple[str, datetime, bool]], started_at: datetime, node: str
    ) -> list[Run]:
        """Claim many (job_id, fire time, exclusive) first attempts at once; return the runs won."""
        job_ids, times, exclusive = (list(column) for column in zip(*fires, strict=True))
        async with self._line.use() as conn:
            rows = await conn.fetch(Q["claim_fires"], job_ids, times, exclusive, started_at, node)
        return [run_from_row(row) for row in rows]

    async def claim_ahead(self, fires: Sequence[tuple[str, datetime, bool]], node: str) -> list[Run]:
        """Claim fires before they are due (started_at unset); return the runs won."""
        job_ids, times, exclusive = (list(column) for column in zip(*fires, strict=True))
        async with self._line.use() as conn:
            rows = await conn.fetch(Q["claim_ahead"], job_ids, times, exclusive, node)
        return [run_from_row(row) for row in rows]

    async def mark_started(self, started: Sequence[tuple[int, datetime]]) -> None:
        run_ids, times = (list(column) for column in zip(*started, strict=True))
        async with self._line.use() as conn:
            await conn.execute(Q["mark_started"], run_ids, times)

    async def last_successes(self, job_ids: Sequence[str]) -> dict[str, datetime]:
        rows = await self.pool.fetch(Q["last_successes"], list(job_ids))
        return {row["job_id"]: row["finished_at"] for row in rows}

    async def successes_since(
        self, from_id: int, running: Sequence[int] = ()
    ) -> tuple[dict[str, datetime], int, list[int]]:
        """The newest success of each job among runs numbered ``from_id`` and up and the
        runs ``running``; the number to ask from next time, and the runs running now (to
        ask about next time: they may succeed meanwhile)."""
        rows = await self.pool.fetch(Q["successes_since"], from_id, list(running))
        successes = {row["job_id"]: row["finished_at"] for row in rows if row["job_id"] is not None}
        return successes, rows[0]["next_from"], list(rows[0]["running"])

    async def node_heartbeat(self, node: str, lease: timedelta) -> list[str]:
        """Note this node as up; return the live nodes, sorted by name."""
        return [row["node"] for row in await self.pool.fetch(Q["node_heartbeat"], node, lease)]

    async def node_heartbeat_at(self, node: str, lease: timedelta) -> tuple[list[str], datetime]:
        """:meth:`node_heartbeat`, and the database's clock when it answered."""
        rows = await self.pool.fetch(Q["node_heartbeat"], node, lease)
        return [row["node"] for row in rows], rows[0]["database_now"]

    async def node_stopped(self, node: str) -> None:
        await self.pool.execute(Q["node_stopped"], node)

    async def taken_fires(self, fires: Sequence[tuple[str, datetime]]) -> set[tuple[str, datetime]]:
        job_ids, times = (list(column) for column in zip(*fires, strict=True))
        async with self._line.use() as conn:
            rows = await conn.fetch(Q["taken_fires"], job_ids, times)
        return {(row["job_id"], row["scheduled_for"]) for row in rows}

    async def claim_blockers(self, job_id: str, scheduled_for: datetime | None, attempt: int) -> ClaimBlockers:
        """What stands in the way of claiming a fire key (or a manual run: ``scheduled_for`` None)."""
        row = await self.pool.fetchrow(Q["claim_blockers"], job_id, scheduled_for, attempt)
        return ClaimBlockers(row["fire_run_id"], row["paused"], row["running_id"], row["running_silent_s"])

    async def running_run_of_job(self, job_id: str) -> Run | None:
        row = await self.pool.fetchrow(Q["running_run_of_job"], job_id)
        return run_from_row(row) if row else None

    async def record_unrun_fire(
        self,
        job_id: str,
        trigger: str,
        status: str,
        scheduled_for: datetime,
        attempt: int,
        at: datetime,
        reason: str,
        node: str,
    ) -> Run | None:
        row = await self.pool.fetchrow(
            Q["record_unrun_fire"], job_id, trigger, status, scheduled_for, attempt, at, reason, node
        )
        return run_from_row(row) if row else None

    async def record_missed_fires(
        self, fires: Sequence[tuple[str, datetime, str]], at: datetime, node: str
    ) -> list[Run]:
        """record_unrun_fire for many scheduled (job id, fire time, reason) first attempts
        missed; returns the rows recorded (not those another replica holds)."""
        job_ids, times, reasons = (list(column) for column in zip(*fires, strict=True))
        async with self._line.use() as conn:
            rows = await conn.fetch(Q["record_missed_fires"], job_ids, times, reasons, at, node)
        return [run_from_row(row) for row in rows]

    async def finish_run(self, run_id: int, status: str, at: datetime, result: Any, error: str | None) -> Run | None:
        row = await self.pool.fetchrow(Q["finish_run"], run_id, status, at, result, error)
        return run_from_row(row) if row else None

    async def finish_runs(
        self, outcomes: Sequence[tuple[int, str, datetime, Any, str | None, datetime | None, dict[str, Any] | None]]
    ) -> list[Run]:
        """finish_run for many (run id, status, finished at, result, error, started at, params
        it ran with) at once; returns the runs updated."""
        ids, statuses, times, results, errors, started, params = (
            list(column) for column in zip(*outcomes, strict=True)
        )
        async with self._line.use() as conn:
            rows = await conn.fetch(Q["finish_runs"], ids, statuses, times, results, errors, started, params)
        return [run_from_row(row) for row in rows]

    async def set_progress(self, run_id: int, progress: dict[str, Any]) -> bool:
        """Publish a run's progress; False when the run is no longer running."""
        return await self.pool.fetchval(Q["set_progress"], run_id, progress) is not None

    async def heartbeat(
        self, run_ids: Sequence[int], *, via: asyncpg.Connection | None = None
    ) -> dict[int, str | None]:
        """Refresh the given runs; map each still running one to who asked to cancel it.
        ``via``: a connection of the caller's own instead of the pool."""
        rows = await (via or self.pool).fetch(Q["heartbeat"], list(run_ids))
        return {row["id"]: row["cancel_requested_by"] for row in rows}

    async def reap_lost_runs(self, lease: timedelta) -> list[Run]:
        return [run_from_row(row) for row in await self.pool.fetch(Q["reap_lost_runs"], lease)]

    async def reap_own_runs(self, run_ids: Sequence[int], reason: str) -> list[Run]:
        """End this replica's runs whose lease ran out (lost, or missed if never started)."""
        return [run_from_row(row) for row in await self.pool.fetch(Q["reap_own_runs"], list(run_ids), reason)]

    async def reap_node_runs(self, node: str) -> list[Run]:
        """End the runs a previous process under this node's name left running."""
        return [run_from_row(row) for row in await self.pool.fetch(Q["reap_node_runs"], node)]

    async def request_cancel(self, run_id: int, by: str) -> Run | None:
        row = await self.pool.fetchrow(Q["request_cancel"], run_id, by)
        return run_from_row(row) if row else None

    async def runs_to_retry(self, job_ids: Sequence[str], since: datetime) -> list[Run]:
        return [run_from_row(row) for row in await self.pool.fetch(Q["runs_to_retry"], list(job_ids), since)]

    async def get_run(self, run_id: int) -> Run | None:
        row = await self.pool.fetchrow(Q["get_run"], run_id)
        return run_from_row(row) if row else None

    async def list_runs(self, *, job_id: str | None, status: str | None, limit: int) -> list[Run]:
        return [run_from_row(row) for row in await self.pool.fetch(Q["list_runs"], job_id, status, limit)]

    async def last_runs(self, job_ids: Sequence[str]) -> dict[str, Run]:
        rows = await self.pool.fetch(Q["last_runs"], list(job_ids))
        return {row["job_id"]: run_from_row(row) for row in rows}

    async def last_statuses(self, job_ids: Sequence[str]) -> dict[str, str]:
        """The status of each job's newest run (jobs never run: absent)."""
        rows = await self.pool.fetch(Q["last_statuses"], list(job_ids))
        return {row["job_id"]: row["status"] for row in rows}

    async def running_counts(self) -> dict[str, int]:
        return {row["job_id"]: row["running"] for row in await self.pool.fetch(Q["running_counts"])}

    async def last_fires(self, job_ids: Sequence[str], before: datetime) -> dict[str, datetime | None]:
        """Each job's latest scheduled fire before ``before``, for all jobs in one statement: a start
        with 1,000 jobs waits for one round trip, not 1,000."""
        rows = await self.pool.fetch(Q["last_fires"], list(job_ids), before)
        return {row["job_id"]: row["last_fire"] for row in rows}

    async def register_jobs(self, job_ids: Sequence[str], at: datetime) -> None:
        await self.pool.execute(Q["register_jobs"], list(job_ids), at)

    async def job_states(self, job_ids: Sequence[str] | None = None) -> dict[str, asyncpg.Record]:
        """The state of the given jobs that have one (of every job: ``job_ids`` None)."""
        ids = None if job_ids is None else list(job_ids)
        return {row["job_id"]: row for row in await self.pool.fetch(Q["job_states"], ids)}

    async def set_paused(self, job_id: str, paused: bool, at: datetime, by: str, audit: NewAuditEntry) -> None:
        """Change the pause state and record who did it, in one transaction."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(Q["set_paused"], job_id, paused, at, by)
            await _add_audit(conn, audit)

    async def add_audit(self, audit: NewAuditEntry) -> None:
        async with self.pool.acquire() as conn:
            await _add_audit(conn, audit)

    async def list_audit(self, limit: int) -> list[AuditOut]:
        return [AuditOut(**dict(row)) for row in await self.pool.fetch(Q["list_audit"], limit)]

    async def ping(self, timeout: float) -> datetime:
        """The database's clock; raises TimeoutError when it does not answer within ``timeout``.

        The bound covers getting a connection too: the pool reconnects a broken one
        on acquire, and a connect to an unreachable host would otherwise take 60 s."""
        async with asyncio.timeout(timeout):
            return await self.pool.fetchval(Q["ping"])

    # -- replays (scheduler/engine/replays.py) -----------------------------

    async def replayable_fires(self, job_id: str, since: datetime, until: datetime, limit: int) -> list[datetime]:
        """The job's fires from ``since`` to ``until`` (included) that a replay runs, oldest first, at most ``limit``."""
        rows = await self.pool.fetch(Q["replayable_fires"], job_id, since, until, limit)
        return [row["scheduled_for"] for row in rows]

    async def claim_replay(self, claim: Claim) -> Run | None:
        """Claim a replay of the fire ``claim.scheduled_for``; None: see :meth:`replay_blockers`."""
        row = await self.pool.fetchrow(
            Q["claim_replay"],
            claim.job_id,
            claim.scheduled_for,
            claim.exclusive,
            claim.started_at,
            claim.triggered_by,
            claim.node,
            claim.params,
            claim.reason,
        )
        return run_from_row(row) if row else None

    async def replay_blockers(self, job_id: str, fire: datetime) -> tuple[bool, int | None]:
        """Why a replay of the fire was not claimed: whether the fire is covered (nothing to
        replay), and the job's exclusive run in progress, if any."""
        row = await self.pool.fetchrow(Q["replay_blockers"], job_id, fire)
        return row["covered"], row["running_id"]

    # -- alerts (scheduler/alerts.py) ------------------------------------

    async def failure_streak(self, job_id: str, run_id: int, finished_at: datetime) -> int:
        """Runs of a job ended without success in a row, up to this one included."""
        return await self.pool.fetchval(Q["failure_streak"], job_id, run_id, finished_at)

    async def claim_run_alert(self, job_id: str, run_id: int, at: datetime, node: str, min_interval: timedelta) -> bool:
        """True for the one replica that is to send this run's alert; False when it is
        alerted already or the job's last run alert is more recent than ``min_interval``."""
        return await self.pool.fetchrow(Q["claim_run_alert"], job_id, run_id, at, node, min_interval) is not None

    async def claim_overdue_alert(self, job_id: str, at: datetime, node: str) -> bool:
        """True for the one replica that is to send the alert of the job's current overdue episode."""
        return await self.pool.fetchrow(Q["claim_overdue_alert"], job_id, at, node) is not None

    # -- run logs (scheduler/run_logs.py) ---------------------------------

    async def write_runs_logs(self, batches: Sequence[tuple[int, LogBatch]]) -> None:
        """Write runs' new lines and their gaps of dropped lines, in one transaction."""
        lines = [(run_id, line) for run_id, batch in batches for line in batch.lines]
        async with self._line.use() as conn, conn.transaction():
            if lines:
                await conn.execute(
                    Q["add_run_log_lines"],
                    [run_id for run_id, _ in lines],
                    [line.seq for _, line in lines],
                    [line.at for _, line in lines],
                    [line.level for _, line in lines],
                    [line.event for _, line in lines],
                    [line.fields_json for _, line in lines],
                )
            for run_id, batch in batches:
                if (marker := batch.marker()) is None:
                    continue
                await conn.execute(
                    Q["drop_run_log_lines"],
                    run_id,
                    batch.gap_after,
                    batch.keep_from,
                    marker.at,
                    marker.event,
                    marker.fields,
                    batch.dropped,
                )

    async def run_log_lines_dropped(self, run_id: int) -> int | None:
        """How many lines of the run's log were dropped; None for an unknown run."""
        return await self.pool.fetchval(Q["run_log_lines_dropped"], run_id)

    async def run_log_lines(self, run_id: int, after_seq: int, limit: int) -> list[RunLogLine]:
        rows = await self.pool.fetch(Q["run_log_lines"], run_id, after_seq, limit)
        return [RunLogLine(**dict(row)) for row in rows]


class _NothingClaimed(Exception):
    """Rolls a keyed claim's transaction back: a refused request does not use its key."""


@dataclass(frozen=True)
class NewAuditEntry:
    """An admin action to write to the audit log. The database numbers it; it is read back
    as :class:`~maintd.admin_api.interface.AuditOut`, with that ``id``."""

    at: datetime
    principal: str
    action: str
    target: str
    client: str | None = None
    detail: dict[str, Any] | None = None

    @classmethod
    def by(
        cls, actor: Actor, at: datetime, action: str, target: str, detail: dict[str, Any] | None = None
    ) -> NewAuditEntry:
        """``actor``'s action: its principal and client, and (in ``detail``) where it came
        from when that is not the JSON API."""
        if actor.via != "api":
            detail = {**(detail or {}), "via": actor.via}
        return cls(at, actor.name, action, target, actor.client, detail)


async def _add_audit(conn: asyncpg.Connection, audit: NewAuditEntry) -> None:
    await conn.execute(
        Q["add_audit"], audit.at, audit.principal, audit.action, audit.target, audit.client, audit.detail
    )
