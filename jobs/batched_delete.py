"""Big deletes in short batches, walking an index forward: what ``cleanup_sessions`` and ``prune_history`` share.

Each batch deletes one range ``[low, high)`` of the key (a time column, or the
expression an index holds), in a transaction of its own (one ``DELETE``). ``high``
is the key of the ``size + 1``-th row from ``low`` in index order, so at most
``size`` rows lie in the range (plus any row inserted between the two statements
with a key already inside it), and the next batch starts at ``high``. Walking
forward like this, no batch reads the dead index entries earlier batches left
behind, which is what makes ``DELETE ... WHERE id IN (SELECT ... ORDER BY key
LIMIT n)`` batches slower and slower. The last batch is the one that finds no
``high``: it deletes the rest, up to the cutoff. When more rows share one key
than a batch holds, no range of values can split them: they go ``size`` at a
time, by ``ctid``, each such batch reading the group's index entries from its
start again.

The size of each batch comes from a :class:`~maintd.jobs.batch_size.BatchSizer`:
fixed, or sized from the statement times measured so far. A table's rows that
must stay whatever their key (a run in progress) are excluded by a condition
of its own, in every statement, so they never count towards a batch.

Cancellation and timeouts take effect between batches or abort the current one,
whose transaction then rolls back: the table never holds half a batch. Each
batch is fenced by the run's lease in its own statement: once the run was
declared lost (its replica frozen or cut off past the lease, the run perhaps
already running again elsewhere), no further batch deletes anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from maintd.jobs.batch_size import BatchSizer
from maintd.jobs.context import JobContext, LeaseLost
from maintd.jobs.queries import JOB_QUERIES as Q
from maintd.jobs.sql import parse_status


@dataclass(frozen=True)
class RangeDelete:
    """The batch statements for one table, its names substituted once per run.

    ``table`` and ``key`` are SQL: a quoted name from config, or one of maintd's own
    tables; ``deletable`` is a condition the rows deleted must meet (it may use the
    ``args``, passed as ``$4`` on, to every statement).
    """

    next_bound: str
    delete_range: str
    delete_ties: str
    args: tuple[Any, ...] = ()

    @classmethod
    def of(cls, table: str, key: str, deletable: str = "true", args: tuple[Any, ...] = ()) -> RangeDelete:
        names = {"table": table, "key": key, "deletable": f"({deletable})"}
        return cls(
            next_bound=Q["batch_next_bound"].format(**names),
            delete_range=Q["batch_delete_range"].format(**names),
            delete_ties=Q["batch_delete_ties"].format(**names),
            args=args,
        )


@dataclass
class Tally:
    """What the batches did so far: rows, batches, their sizes, the longest batch and statement (seconds)."""

    deleted: int = 0
    batches: int = 0
    largest_batch_size: int = 0
    last_batch_size: int = 0
    longest_batch: float = 0.0
    longest_statement: float = 0.0

    def add(self, size: int, deleted: int, statements: tuple[float, float], batch: float) -> None:
        self.deleted += deleted
        self.batches += 1
        self.largest_batch_size = max(self.largest_batch_size, size)
        self.last_batch_size = size
        self.longest_statement = max(self.longest_statement, *statements)
        self.longest_batch = max(self.longest_batch, batch)

    def summary(self) -> dict[str, Any]:
        """The batches as a run's result shows them."""
        return {
            "deleted": self.deleted,
            "batches": self.batches,
            "largest_batch_size": self.largest_batch_size,
            "last_batch_size": self.last_batch_size,
            # A batch is two statements: the index read that finds its end, and the DELETE.
            "longest_batch_ms": round(self.longest_batch * 1000, 1),
            "longest_statement_ms": round(self.longest_statement * 1000, 1),
        }


def _elapsed_clock() -> float:
    # The loop's clock runs in real time even under a frozen test clock (freezegun's
    # real_asyncio), where time.monotonic and time.perf_counter stand still.
    return asyncio.get_running_loop().time()


async def delete_in_batches(
    ctx: JobContext,
    conn: asyncpg.Connection,
    sql: RangeDelete,
    cutoff: datetime,
    sizer: BatchSizer,
    on_batch: Callable[[Tally], Awaitable[None]],
) -> Tally:
    """Delete the rows whose key is before ``cutoff``, batch by batch; ``on_batch`` after each one commits."""
    tally = Tally()
    low: datetime | None = None
    while True:
        ctx.raise_if_cancelled()
        size = sizer.next_size()
        started = _elapsed_clock()
        high = await conn.fetchval(sql.next_bound, low, cutoff, size, *sql.args)
        bound_found = _elapsed_clock()
        if high is not None and high == low:
            status = await conn.execute(sql.delete_ties, low, size, ctx.run_id, *sql.args)
        else:
            status = await conn.execute(sql.delete_range, low, high or cutoff, ctx.run_id, *sql.args)
        done = _elapsed_clock()
        deleted = parse_status(status)["rows"]
        # A fenced batch deletes nothing; only then is the lease asked about (one statement, rarely).
        if not deleted and await conn.fetchval(Q["batch_run_status"], ctx.run_id) not in (None, "running"):
            raise LeaseLost(f"run {ctx.run_id} was declared lost; stopped before batch {tally.batches + 1}")
        statements = (bound_found - started, done - bound_found)
        sizer.record(size, max(statements))
        tally.add(size, deleted, statements, _elapsed_clock() - started)
        await on_batch(tally)
        if high is None:
            return tally
        low = high
