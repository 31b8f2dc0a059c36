"""The ``prune_history`` task: delete what maintd keeps of its past once it is older than its retention.

Every table of maintd's that grows with use is in :data:`HISTORY`, with the time
column (or indexed expression) its rows age by and the rows it keeps whatever
their age; each has a param of its own, its retention. The batches are
:mod:`maintd.jobs.batched_delete`'s, as ``cleanup_sessions``'s are: short
transactions, cancellable between batches, fenced by the run's lease.

Run logs go before runs (pruning a run also prunes its logs, ``ON DELETE
CASCADE``, so logs are never kept longer than their run). A run in progress is
never pruned, nor are the rows the engine reads back however old they are: each
job's newest run, newest scheduled fire and newest success, without which a
long-gone job would look as if its fires had been missed or it had never
succeeded. The cutoffs are the daemon's clock at the start of the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

import asyncpg
from pydantic import BeforeValidator, Field, PlainSerializer

from maintd.jobs.batch_size import BatchParams, spell_duration
from maintd.jobs.batched_delete import RangeDelete, Tally, delete_in_batches
from maintd.jobs.context import JobContext
from maintd.jobs.durations import duration_param
from maintd.jobs.queries import JOB_QUERIES as Q
from maintd.jobs.registry import task

FOREVER = "forever"
# Younger rows are still read as the present: a fire's claim key, retries, the daily report's day.
SHORTEST_RETENTION = timedelta(days=1)


@dataclass(frozen=True)
class History:
    """One of maintd's tables that grows: the column its rows age by (indexed), and the rows it keeps.

    ``keep`` is a condition on the table's rows; with ``kept``, a query returning one
    value, read once per run (not per batch, whatever plan a statement gets), passed
    to it as ``$4``.
    """

    table: str
    key: str
    keep: str = "false"
    kept: str | None = None

    async def statements(self, conn: asyncpg.Connection) -> RangeDelete:
        args = () if self.kept is None else (await conn.fetchval(self.kept),)
        return RangeDelete.of(self.table, self.key, deletable=f"NOT ({self.keep})", args=args)


def _retention(value: Any) -> timedelta | None:
    if value is None or value == FOREVER:
        return None
    duration = duration_param(value, f"'90d' or {FOREVER!r}")
    if duration < SHORTEST_RETENTION:
        raise ValueError(f"must be at least 1d (or {FOREVER!r}), got {value!r}")
    return duration


def _spell_retention(value: timedelta | None) -> str:
    return FOREVER if value is None else spell_duration(value)


# How long rows of one table are kept; None ("forever"): never pruned.
Retention = Annotated[timedelta | None, BeforeValidator(_retention), PlainSerializer(_spell_retention, return_type=str)]


class PruneParams(BatchParams):
    """``[jobs.<id>.params]`` of a ``prune_history`` job: a retention per table (``"forever"``: keep all).

    Each table is one field, its :class:`History` in the annotation; they are pruned in this order.
    """

    run_logs: Annotated[
        Retention, History("maintd.run_logs", "at", Q["history_keep_run_logs"], Q["history_running_runs"])
    ] = Field(timedelta(days=30), description="what runs logged (never longer than the run itself)")
    runs: Annotated[
        Retention,
        History("maintd.runs", "coalesce(started_at, scheduled_for)", Q["history_keep_runs"], Q["history_kept_runs"]),
    ] = Field(timedelta(days=90), description="runs, and fires that did not run, by start (or fire) time")
    audit: Annotated[Retention, History("maintd.audit", "at")] = Field(
        timedelta(days=365), description="the admin audit log"
    )
    report_deliveries: Annotated[Retention, History("maintd.report_deliveries", "report_date")] = Field(
        timedelta(days=365), description="the daily reports sent, by the day reported"
    )
    # A key names its request's run for 24 h: a day is all it needs, and the shortest retention.
    idempotency_keys: Annotated[Retention, History("maintd.idempotency_keys", "created_at")] = Field(
        timedelta(days=1), description="the Idempotency-Keys of manual triggers, by when first used"
    )
    console_sessions: Annotated[Retention, History("maintd.console_sessions", "expires_at")] = Field(
        timedelta(days=1), description="web console sign-ins, by when they expired (an expired one is void already)"
    )


# Each table's History and the field of its retention, in PruneParams' order.
HISTORY = {
    name: next(m for m in field.metadata if isinstance(m, History))
    for name, field in PruneParams.model_fields.items()
    if any(isinstance(m, History) for m in field.metadata)
}


@task("prune_history")
async def prune_history(ctx: JobContext, params: PruneParams) -> dict[str, Any]:
    """Delete maintd's runs, run logs, audit entries, report deliveries, idempotency keys and console sessions older than their retention."""
    now = ctx.now()
    tables: dict[str, dict[str, Any]] = {}
    async with ctx.pool.acquire() as conn:
        for name, history in HISTORY.items():
            retention: timedelta | None = getattr(params, name)
            if retention is None:
                continue
            cutoff = now - retention
            ctx.log.info("prune_started", table=name, cutoff=cutoff.isoformat(), batch_size=params.batch_size)

            async def progress(tally: Tally, name: str = name) -> None:
                await ctx.report_progress(table=name, deleted=tally.deleted, batches=tally.batches)

            statements = await history.statements(conn)
            tally = await delete_in_batches(ctx, conn, statements, cutoff, params.sizer(), progress)
            ctx.log.info("prune_done", table=name, deleted=tally.deleted, batches=tally.batches)
            tables[name] = {"cutoff": cutoff.isoformat(), **tally.summary()}
    return {"deleted": sum(t["deleted"] for t in tables.values()), "tables": tables}
