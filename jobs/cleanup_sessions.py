"""The ``cleanup_sessions`` task: delete expired rows in short batches, walking the expiry index.

Each batch deletes one range ``[low, high)`` of expiry values, in a transaction of
its own (one ``DELETE``). ``high`` is the expiry of the ``batch_size + 1``-th row
from ``low`` in index order (read from the index alone), so at most ``batch_size``
rows lie in the range (plus any row inserted between the two statements with an
expiry already inside it), and the next batch starts at ``high``. Walking forward like
this, no batch reads the dead index entries earlier batches left behind, which is
what makes ``DELETE ... WHERE id IN (SELECT ... ORDER BY expires LIMIT n)`` batches
slower and slower. The last batch is the one that finds no ``high``: it deletes the
rest, up to the cutoff. When more rows share one expiry value than a batch holds,
no range of values can split them: they go ``batch_size`` at a time, by ``ctid``,
each such batch reading the group's index entries from its start again.

The cutoff is the daemon's clock at the start of the run, so a frozen test clock
governs it and rows that expire during the run are left for the next one. Rows
whose expiry is NULL never expire. The expiry column may be ``timestamptz``,
``timestamp`` or ``date`` (its midnight), the last two read in the session's time
zone: UTC on maintd's pool.
Cancellation and timeouts take effect between batches or abort the current
one, whose transaction then rolls back: the table never holds half a batch.
Each batch is fenced by the run's lease in its own statement: once the run was
declared lost (its replica frozen or cut off past the lease, the run perhaps
already running again elsewhere), no further batch deletes anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

from maintd.jobs.context import JobContext, LeaseLost
from maintd.jobs.identifiers import Identifier, TableName, quote
from maintd.jobs.queries import JOB_QUERIES as Q
from maintd.jobs.registry import task
from maintd.jobs.sql import parse_status

# Types the expiry bounds (timestamptz values) compare with, using the column's own index.
EXPIRY_TYPES = ("timestamp with time zone", "timestamp without time zone", "date")
T = TypeVar("T")


class CleanupParams(BaseModel):
    """``[jobs.<id>.params]`` of a ``cleanup_sessions`` job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    table: TableName = Field(description="table to clean, e.g. sessions or app.sessions; quoted in SQL, so case counts")
    expires_column: Identifier = Field("expires", description="its expiry column; rows before the cutoff are deleted")
    batch_size: int = Field(10_000, ge=1, description="most rows one batch (one transaction) deletes")


class CleanupTargetError(Exception):
    """The configured table cannot be cleaned: it is missing, or has no usable expiry column."""

    def __init__(self, table: str, problem: str) -> None:
        super().__init__(f"table {table}: {problem}")
        self.table = table
        self.problem = problem


@dataclass(frozen=True)
class _Statements:
    """The batch statements for one table, its quoted names substituted once per run."""

    next_bound: str
    delete_range: str
    delete_ties: str

    @classmethod
    def for_table(cls, table: str, expires: str) -> _Statements:
        names = {"table": table, "expires": expires}
        return cls(
            next_bound=Q["cleanup_next_bound"].format(**names),
            delete_range=Q["cleanup_delete_range"].format(**names),
            delete_ties=Q["cleanup_delete_ties"].format(**names),
        )


@dataclass
class _Tally:
    """Rows and batches so far, and the longest batch and statement, in seconds."""

    deleted: int = 0
    batches: int = 0
    longest_batch: float = 0.0
    longest_statement: float = 0.0

    async def timed(self, statement: Awaitable[T]) -> T:
        started = _elapsed_clock()
        result = await statement
        self.longest_statement = max(self.longest_statement, _elapsed_clock() - started)
        return result


def _elapsed_clock() -> float:
    # The loop's clock runs in real time even under a frozen test clock (freezegun's
    # real_asyncio), where time.monotonic and time.perf_counter stand still.
    return asyncio.get_running_loop().time()


@task("cleanup_sessions")
async def cleanup_sessions(ctx: JobContext, params: CleanupParams) -> dict[str, Any]:
    """Delete the rows of ``table`` that expired before the run started, in short batches."""
    cutoff = ctx.now()
    table, expires = quote(params.table), quote(params.expires_column)
    sql = _Statements.for_table(table, expires)
    tally = _Tally()
    async with ctx.pool.acquire() as conn:
        indexed = await _check_target(conn, params, table)
        ctx.log.info("cleanup_started", table=table, cutoff=cutoff.isoformat(), batch_size=params.batch_size)
        if not indexed:
            ctx.log.warning(
                "cleanup_unindexed",
                table=table,
                column=expires,
                reason=f"no valid btree index leads with {expires}: every batch reads the whole table",
                fix=f"CREATE INDEX CONCURRENTLY ON {table} ({expires})",
            )
        low: datetime | None = None
        while True:
            ctx.raise_if_cancelled()
            started = _elapsed_clock()
            high = await tally.timed(conn.fetchval(sql.next_bound, low, cutoff, params.batch_size))
            if high is not None and high == low:
                status = await tally.timed(conn.execute(sql.delete_ties, low, params.batch_size, ctx.run_id))
            else:
                status = await tally.timed(conn.execute(sql.delete_range, low, high or cutoff, ctx.run_id))
            deleted = parse_status(status)["rows"]
            # A fenced batch deletes nothing; only then is the lease asked about (one statement, rarely).
            if not deleted and await conn.fetchval(Q["cleanup_run_status"], ctx.run_id) not in (None, "running"):
                raise LeaseLost(f"run {ctx.run_id} was declared lost; stopped before batch {tally.batches + 1}")
            tally.deleted += deleted
            tally.batches += 1
            tally.longest_batch = max(tally.longest_batch, _elapsed_clock() - started)
            await ctx.report_progress(deleted=tally.deleted, batches=tally.batches)
            if high is None:
                break
            low = high
    return {
        "table": table,
        "cutoff": cutoff.isoformat(),
        "deleted": tally.deleted,
        "batches": tally.batches,
        "indexed": indexed,
        # A batch is two statements: the index read that finds its end, and the DELETE.
        "longest_batch_ms": round(tally.longest_batch * 1000, 1),
        "longest_statement_ms": round(tally.longest_statement * 1000, 1),
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
