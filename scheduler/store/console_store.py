"""The console's store: one typed async function per query of ``sql/console.sql``.

Apart from :mod:`~maintd.scheduler.store.run_store`: the console's sessions and its
views of history are read by the console alone, never by the scheduling engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

import asyncpg

from maintd.admin_api.console.interface import (
    OUTCOME_RANK,
    CalendarCell,
    DurationPoint,
    Fire,
    HistoryQuery,
    NewSession,
    SessionRecord,
)
from maintd.admin_api.interface import AuditOut
from maintd.jobs.sql_blocks import load_sql_blocks
from maintd.scheduler.store.records import Run, run_from_row

Q = load_sql_blocks("maintd.scheduler.store.sql", "console.sql")


class ConsoleStore:
    """Typed access to the console's tables and views through the daemon's pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def open_session(self, s: NewSession) -> None:
        await self.pool.execute(
            Q["open_session"], s.id_sha256, s.token_sha256, s.principal, s.csrf, s.client, s.created_at, s.expires_at
        )

    async def find_session(self, id_sha256: bytes, now: datetime) -> SessionRecord | None:
        row = await self.pool.fetchrow(Q["find_session"], id_sha256, now)
        return SessionRecord(**dict(row)) if row else None

    async def end_session(self, id_sha256: bytes) -> str | None:
        """Delete the session; its principal, or None when there was none."""
        return await self.pool.fetchval(Q["end_session"], id_sha256)

    async def recent_fires(self, job_ids: Sequence[str], per_job: int) -> dict[str, list[Fire]]:
        fires: dict[str, list[Fire]] = {job_id: [] for job_id in job_ids}
        for row in await self.pool.fetch(Q["recent_fires"], list(job_ids), per_job):
            values = dict(row)
            fires[values.pop("job_id")].append(Fire(**values))
        return fires

    async def job_history(self, job_id: str, query: HistoryQuery) -> list[Run]:
        rows = await self.pool.fetch(
            Q["job_history"],
            job_id,
            query.status,
            query.trigger,
            query.before_id,
            query.since,
            query.until,
            query.limit,
        )
        return [run_from_row(row) for row in rows]

    async def job_durations(self, job_id: str, limit: int) -> list[DurationPoint]:
        rows = await self.pool.fetch(Q["job_durations"], job_id, limit)
        return [DurationPoint(row["id"], row["status"], row["started_at"], row["duration_s"]) for row in rows]

    async def calendar(
        self, job_ids: Sequence[str], start: datetime, end: datetime, zone: ZoneInfo
    ) -> list[CalendarCell]:
        rows = await self.pool.fetch(Q["calendar"], start, end, zone.key, list(OUTCOME_RANK), list(job_ids))
        return [CalendarCell(row["job_id"], row["day"], row["records"], row["worst"]) for row in rows]

    async def search_audit(
        self, principal: str | None, action: str | None, job_id: str | None, before_id: int | None, limit: int
    ) -> list[AuditOut]:
        rows = await self.pool.fetch(Q["search_audit"], principal, action, job_id, before_id, limit)
        return [AuditOut(**dict(row)) for row in rows]
