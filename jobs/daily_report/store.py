"""The daily report's database access: one typed async function per query in ``queries.sql``.

The gathering functions take a connection, so the caller can read them all in
one snapshot; they return the plain objects of :mod:`maintd.jobs.daily_report.data`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import TypeAlias

import asyncpg

from maintd.jobs.daily_report.data import (
    JobHealth,
    JobRuns,
    ReportPeriod,
    RunLine,
    SessionStats,
    UnrunFires,
    UnsentReport,
    error_summary,
)
from maintd.jobs.identifiers import quote
from maintd.jobs.queries import JOB_QUERIES as Q

# Anything with asyncpg's query methods: a pool, or a connection inside a transaction.
Executor: TypeAlias = asyncpg.Connection | asyncpg.Pool


async def runs_by_job(conn: Executor, period: ReportPeriod, own_run_id: int) -> list[JobRuns]:
    """Each job's runs of the period by status, leaving out the report's own run."""
    rows = await conn.fetch(Q["report_runs_by_job"], period.start, period.end, own_run_id)
    return [JobRuns(row["job_id"], row["counts"], row["longest_s"]) for row in rows]


async def dry_runs_by_job(conn: Executor, period: ReportPeriod) -> list[JobRuns]:
    """Each job's dry runs of the period by status (kept out of ``runs_by_job``)."""
    rows = await conn.fetch(Q["report_dry_runs"], period.start, period.end)
    return [JobRuns(row["job_id"], row["counts"], None) for row in rows]


async def failures(conn: Executor, period: ReportPeriod, limit: int) -> tuple[list[RunLine], int]:
    """The newest failures, at most ``limit``, and how many there were in all."""
    rows = await conn.fetch(Q["report_failures"], period.start, period.end, limit)
    return [_run_line(row) for row in rows], rows[0]["total"] if rows else 0


async def longest_runs(conn: Executor, period: ReportPeriod, limit: int) -> list[RunLine]:
    """The longest finished runs of the period, longest first."""
    return [_run_line(row) for row in await conn.fetch(Q["report_longest_runs"], period.start, period.end, limit)]


def _run_line(row: asyncpg.Record) -> RunLine:
    return RunLine(
        run_id=row["id"],
        job_id=row["job_id"],
        status=row["status"],
        trigger=row["trigger"],
        attempt=row["attempt"],
        node=row["node"],
        started_at=row["started_at"],
        duration_s=row["duration_s"],
        error=error_summary(row["error"]),
    )


async def unrun_fires(conn: Executor, period: ReportPeriod) -> list[UnrunFires]:
    """Skipped and missed fires of the period, grouped by job and reason."""
    rows = await conn.fetch(Q["report_unrun_fires"], period.start, period.end)
    return [
        UnrunFires(row["job_id"], row["status"], row["fires"], row["first"], row["last"], row["reason"] or "")
        for row in rows
    ]


async def job_health(conn: Executor, since: datetime, own_run_id: int) -> list[JobHealth]:
    """The state now of every job active since ``since``."""
    rows = await conn.fetch(Q["report_job_health"], since, own_run_id)
    return [
        JobHealth(
            job_id=row["job_id"],
            paused=row["paused"],
            paused_at=row["paused_at"],
            paused_by=row["paused_by"],
            first_seen=row["first_seen"],
            last_success=row["last_success"],
            failures_since_success=row["failures"],
            last_failure_status=row["last_status"],
            last_error=row["last_error"],
            ended=row["ended"],
            usual_interval=row["usual_interval"],
            running_id=row["running_id"],
            running_since=row["running_since"],
            running_node=row["running_node"],
        )
        for row in rows
    ]


async def unsent_reports(conn: Executor, job_id: str, before: date, days: int) -> list[UnsentReport]:
    """The job's reports of the ``days`` before ``before`` never confirmed sent."""
    rows = await conn.fetch(Q["report_unsent_deliveries"], job_id, before, days)
    return [
        UnsentReport(row["report_date"], row["state"], row["error"], row["run_id"], row["run_status"]) for row in rows
    ]


async def session_stats(
    conn: Executor, period: ReportPeriod, now: datetime, table: str, expires: str, created: str | None
) -> SessionStats:
    """Count sessions, and what cleanup deleted; the names were validated at config load and are quoted here."""
    names = {"table": quote(table), "expires": quote(expires)}
    row = await conn.fetchrow(Q["report_sessions"].format(**names), period.start, period.end, now)
    created_count = None
    if created is not None:
        created_count = await conn.fetchval(
            Q["report_sessions_created"].format(table=names["table"], created=quote(created)), period.start, period.end
        )
    deleted = await conn.fetchval(Q["report_sessions_deleted"], period.start, period.end, names["table"])
    return SessionStats(table, created_count, row["expired"], deleted, row["active"], row["awaiting_cleanup"])


@dataclass(frozen=True)
class Delivery:
    """One day's report of one job: who claimed it, and whether it went out."""

    job_id: str
    report_date: date
    state: str  # sending, sent or failed
    run_id: int
    node: str | None  # of the claiming run
    attempts: int
    claimed_at: datetime
    sent_at: datetime | None
    message_id: str
    error: str | None
    run_status: str | None = None  # of the claiming run; None when unknown or pruned


@dataclass(frozen=True)
class Claim:
    """What a run writes when it claims a day's report."""

    job_id: str
    period: ReportPeriod
    run_id: int
    at: datetime
    recipients: list[str]
    message_id: str


def _delivery(row: asyncpg.Record) -> Delivery:
    return Delivery(
        job_id=row["job_id"],
        report_date=row["report_date"],
        state=row["state"],
        run_id=row["run_id"],
        node=row["node"],
        attempts=row["attempts"],
        claimed_at=row["claimed_at"],
        sent_at=row["sent_at"],
        message_id=row["message_id"],
        error=row["error"],
        run_status=row.get("run_status"),
    )


async def claim_delivery(pool: Executor, claim: Claim) -> Delivery | None:
    """Claim the day's report for a run; None when it is sent or a live run is sending it."""
    row = await pool.fetchrow(
        Q["claim_report_delivery"],
        claim.job_id,
        claim.period.report_date,
        claim.period.start,
        claim.period.end,
        claim.run_id,
        claim.at,
        claim.recipients,
        claim.message_id,
    )
    return _delivery(row) if row else None


async def mark_sent(pool: Executor, job_id: str, report_date: date, run_id: int, at: datetime) -> bool:
    """Record the report as sent; False when it already was (another run sent it too)."""
    return await pool.fetchval(Q["mark_report_sent"], job_id, report_date, run_id, at) is not None


async def mark_failed(pool: Executor, job_id: str, report_date: date, run_id: int, error: str) -> None:
    """Release this run's claim, recording why the send failed."""
    await pool.execute(Q["mark_report_failed"], job_id, report_date, run_id, error)


async def get_delivery(pool: Executor, job_id: str, report_date: date) -> Delivery | None:
    """The delivery of a day's report, with the state of the run that claimed it."""
    row = await pool.fetchrow(Q["get_report_delivery"], job_id, report_date)
    return _delivery(row) if row else None
