"""The ``cleanup_sessions`` task: delete expired rows in short batches, walking the expiry index.

The batches are :mod:`maintd.jobs.batched_delete`'s, with the expiry column as
their key: each its own transaction, bounded by ``batch_size`` rows or, with
``batch_size = "auto"``, sized so that no statement takes much more than
``max_statement``; cancellable between batches; fenced by the run's lease.

The cutoff is the daemon's clock at the start of the run, so a frozen test clock
governs it and rows that expire during the run are left for the next one. Rows
whose expiry is NULL never expire. The expiry column may be ``timestamptz``,
``timestamp`` or ``date`` (its midnight), the last two read in the session's time
zone: UTC on maintd's pool.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
from pydantic import Field

from maintd.jobs.batch_size import BatchParams, spell_duration
from maintd.jobs.batched_delete import RangeDelete, Tally, delete_in_batches
from maintd.jobs.context import JobContext
from maintd.jobs.identifiers import Identifier, TableName, quote
from maintd.jobs.queries import JOB_QUERIES as Q
from maintd.jobs.registry import task

# Types the expiry bounds (timestamptz values) compare with, using the column's own index.
EXPIRY_TYPES = ("timestamp with time zone", "timestamp without time zone", "date")


class CleanupParams(BatchParams):
    """``[jobs.<id>.params]`` of a ``cleanup_sessions`` job."""

    table: TableName = Field(description="table to clean, e.g. sessions or app.sessions; quoted in SQL, so case counts")
    expires_column: Identifier = Field("expires", description="its expiry column; rows before the cutoff are deleted")


class CleanupTargetError(Exception):
    """The configured table cannot be cleaned: it is missing, or has no usable expiry column."""

    def __init__(self, table: str, problem: str) -> None:
        super().__init__(f"table {table}: {problem}")
        self.table = table
        self.problem = problem


# How big the batches are may change for one run; which table and column never (an
# operator would otherwise delete from any table as the daemon's database user).
@task("cleanup_sessions", overridable=("batch_size", "max_statement"), dry_run=True)
async def cleanup_sessions(ctx: JobContext, params: CleanupParams) -> dict[str, Any]:
    """Delete the rows of ``table`` that expired before the run started, in short batches."""
    cutoff = ctx.now()
    table, expires = quote(params.table), quote(params.expires_column)
    if ctx.dry_run:
        return await _count_expired(ctx, params, table, expires, cutoff)

    async def progress(tally: Tally) -> None:
        await ctx.report_progress(deleted=tally.deleted, batches=tally.batches)

    async with ctx.pool.acquire() as conn:
        indexed = await _check_target(conn, params, table)
        ctx.log.info(
            "cleanup_started",
            table=table,
            cutoff=cutoff.isoformat(),
            batch_size=params.batch_size,
            max_statement=spell_duration(params.max_statement),
        )
        if not indexed:
            ctx.log.warning(
                "cleanup_unindexed",
                table=table,
                column=expires,
                reason=f"no valid btree index leads with {expires}: every batch reads the whole table",
                fix=f"CREATE INDEX CONCURRENTLY ON {table} ({expires})",
            )
        tally = await delete_in_batches(ctx, conn, RangeDelete.of(table, expires), cutoff, params.sizer(), progress)
    return {
        "table": table,
        "cutoff": cutoff.isoformat(),
        **tally.summary(),
        "batch_size": params.batch_size,
        "max_statement_ms": round(params.max_statement.total_seconds() * 1000, 1),
        "indexed": indexed,
    }


async def _count_expired(
    ctx: JobContext, params: CleanupParams, table: str, expires: str, cutoff: datetime
) -> dict[str, Any]:
    """A dry run: count what the cleanup would delete, with the same cutoff; delete nothing."""
    async with ctx.pool.acquire() as conn:
        indexed = await _check_target(conn, params, table)
        would_delete = await conn.fetchval(Q["cleanup_count_expired"].format(table=table, expires=expires), cutoff)
    ctx.log.info("cleanup_dry_run", table=table, cutoff=cutoff.isoformat(), would_delete=would_delete)
    return {
        "dry_run": True,
        "would_delete": would_delete,
        "table": table,
        "cutoff": cutoff.isoformat(),
        "batch_size": params.batch_size,
        "max_statement_ms": round(params.max_statement.total_seconds() * 1000, 1),
        "indexed": indexed,
    }


async def _check_target(conn: asyncpg.Connection, params: CleanupParams, table: str) -> bool:
    """Fail clearly on a missing table or an unusable expiry column; say whether the column is indexed."""
    row = await conn.fetchrow(Q["cleanup_inspect"], table, params.expires_column)
    if row["table_oid"] is None:
        raise CleanupTargetError(table, f"does not exist (search_path: {row['search_path']})")
    column = quote(params.expires_column)
    if row["column_type"] is None:
        raise CleanupTargetError(table, f"has no column {column}")
    if row["column_type"] not in EXPIRY_TYPES:
        expected = ", ".join(EXPIRY_TYPES)
        raise CleanupTargetError(table, f"column {column} is {row['column_type']}, expected one of: {expected}")
    return bool(row["indexed"])
