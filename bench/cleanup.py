"""Session cleanup against one raw DELETE: 1,000,000 expired rows out of 2,000,000, in the same run.

Run: ``.venv/bin/python -m bench.cleanup [--layout jittered|ordered|random] [--rounds N] [--no-naive]``
(PostgreSQL from ``$MAINTD_BENCH_DSN``, default
``postgresql://postgres@127.0.0.1:5432/postgres``; the bench creates a database
of its own and drops it at the end, even on error).

Each round builds two identical tables (the same rows in the same physical
order, a primary key and an index on ``expires``, vacuumed and analyzed, then a
CHECKPOINT) and deletes the expired half of each:

* **raw DELETE**, the baseline: one ``DELETE ... WHERE expires < cutoff``;
* **cleanup_sessions**: the task function as the daemon calls it, with a real
  :class:`~jobs.context.JobContext` on a maintd pool, its progress written to
  a run row after every batch, and its default ``batch_size``.

Rounds alternate which of the two goes first. The ratio is the raw DELETE's
time over the task's, per round; the median is printed. The longest statement
is the task's own per-statement timing (``longest_statement_ms``), the slowest
of all rounds. Once per run, on a third identical table, the **naive** batches
(``DELETE ... WHERE id IN (SELECT id ... ORDER BY expires LIMIT n FOR UPDATE
SKIP LOCKED)`` until a batch comes back short), which rescan the dead index
entries of earlier batches, give a second reference (``--no-naive`` skips it).

Layouts: rows are inserted in creation order, one session created every 0.86 s
over 20 days; the cutoff is the median expiry.

* ``jittered`` (default): expiry = creation + 24 h + a random 0-2 h, as with a
  fixed lifetime that some sessions extend a little;
* ``ordered``: expiry = creation + 24 h exactly;
* ``random``: expiry unrelated to creation, the worst case for any walk in
  expiry order (each batch's rows are spread over the whole table).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

import asyncpg
import structlog

from bench import scratch_database
from maintd.jobs.cleanup_sessions import CleanupParams, cleanup_sessions
from maintd.jobs.context import JobContext
from maintd.jobs.sql import parse_status
from maintd.scheduler.logs import configure_logging
from maintd.scheduler.store.migrate import apply_migrations
from maintd.scheduler.store.run_store import Claim, RunStore, create_pool

DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
ROWS = 2_000_000
EXPIRED = 1_000_000
EXPIRIES = {
    "jittered": "created + interval '24 hours' + random() * interval '2 hours'",
    "ordered": "created + interval '24 hours'",
    "random": "timestamptz '2026-01-01' + random() * interval '21 days'",
}
SOURCE = "bench_source"
# The bench's own statements, on its own tables: names are constants of this file.
MAKE_SOURCE = f"""
CREATE UNLOGGED TABLE {SOURCE} AS
SELECT g AS id, g % 50000 AS user_id, created, {{expires}} AS expires
FROM generate_series(1, {ROWS}) g,
     LATERAL (SELECT timestamptz '2026-01-01' + g * interval '20 days' / {ROWS} AS created) c
"""
CUTOFF = f"SELECT expires FROM {SOURCE} ORDER BY expires OFFSET {EXPIRED} LIMIT 1"
COUNT_EXPIRED = f"SELECT count(*) FROM {SOURCE} WHERE expires < $1"
MAKE_TABLE = [
    f"DROP TABLE IF EXISTS {{table}}; CREATE TABLE {{table}} (LIKE {SOURCE})",
    f"INSERT INTO {{table}} SELECT * FROM {SOURCE} ORDER BY id",
    "ALTER TABLE {table} ADD PRIMARY KEY (id)",
    "CREATE INDEX ON {table} (expires)",
    "VACUUM ANALYZE {table}",
    "CHECKPOINT",
]
RAW_DELETE = "DELETE FROM {table} WHERE expires < $1"
NAIVE_BATCH = (
    "DELETE FROM {table} WHERE id IN "
    "(SELECT id FROM {table} WHERE expires < $1 ORDER BY expires LIMIT $2 FOR UPDATE SKIP LOCKED)"
)


@dataclass(frozen=True)
class Measured:
    """One way of deleting the expired rows, timed."""

    seconds: float
    deleted: int
    batches: int
    longest_statement_ms: float

    @property
    def rows_per_s(self) -> float:
        return self.deleted / self.seconds


async def main(layout: str, rounds: int, naive: bool) -> None:
    began = time.perf_counter()
    async with scratch_database(os.environ.get("MAINTD_BENCH_DSN", DEFAULT_ADMIN_DSN), "maintd_bench_cleanup") as dsn:
        pool = await create_pool(dsn, max_size=3)
        try:
            await _bench(pool, dsn, layout, rounds, naive)
        finally:
            await pool.close()
    print(f"\ntotal bench time: {time.perf_counter() - began:.0f} s")


async def _bench(pool: asyncpg.Pool, dsn: str, layout: str, rounds: int, naive: bool) -> None:
    async with pool.acquire() as conn:
        await apply_migrations(conn)
        await conn.execute("SELECT setseed(0.42)")  # the same rows on every run of a layout
        await conn.execute(MAKE_SOURCE.format(expires=EXPIRIES[layout]))
        cutoff: datetime = await conn.fetchval(CUTOFF)
        expired = await conn.fetchval(COUNT_EXPIRED, cutoff)
        version = await conn.fetchval("SHOW server_version")
        shared_buffers = await conn.fetchval("SHOW shared_buffers")
    batch_size = CleanupParams(table="t").batch_size
    print(
        f"bench.cleanup: {ROWS:,} rows, {expired:,} expired (cutoff {cutoff.isoformat()}), layout {layout}: "
        f"expiry = {EXPIRIES[layout]}; PostgreSQL {version}, shared_buffers {shared_buffers}, "
        f"{os.cpu_count()} CPUs; batch_size {batch_size:,}"
    )
    store = RunStore(pool, dsn)
    raw: list[Measured] = []
    task: list[Measured] = []
    for number in range(1, rounds + 1):
        steps = [
            (raw, partial(_raw_delete, pool, "raw_delete", cutoff)),
            (task, partial(_cleanup_task, pool, store, "cleanup", cutoff, number)),
        ]
        for results, measure in steps if number % 2 else reversed(steps):
            results.append(await measure())
        print(
            f"round {number}: raw DELETE {raw[-1].seconds:.2f} s, cleanup_sessions {task[-1].seconds:.2f} s "
            f"({task[-1].batches} batches, longest statement {task[-1].longest_statement_ms:.1f} ms), "
            f"ratio {raw[-1].seconds / task[-1].seconds:.2f}x"
        )
    ratio = statistics.median(r.seconds / t.seconds for r, t in zip(raw, task, strict=True))
    print(f"\nmedian of {rounds} round(s):")
    _line("raw DELETE (one statement)", _median(raw))
    _line("cleanup_sessions", _median(task), ratio=ratio)
    print(f"  ratio {ratio:.2f}x (target >= 0.5x)")
    longest = max(t.longest_statement_ms for t in task)
    print(f"  longest cleanup_sessions statement of all rounds: {longest:.1f} ms (target <= 100 ms)")
    if naive:
        measured = await _naive(pool, "naive", cutoff, batch_size)
        print(f"\nnaive batches, 1 round (raw DELETE median {_median(raw).seconds:.2f} s):")
        _line("naive id IN (... LIMIT n)", measured, ratio=_median(raw).seconds / measured.seconds)


async def _make_table(pool: asyncpg.Pool, table: str) -> None:
    async with pool.acquire() as conn:
        for statement in MAKE_TABLE:
            await conn.execute(statement.format(table=table))


async def _raw_delete(pool: asyncpg.Pool, table: str, cutoff: datetime) -> Measured:
    await _make_table(pool, table)
    async with pool.acquire() as conn:
        started = time.perf_counter()
        status = await conn.execute(RAW_DELETE.format(table=table), cutoff)
        seconds = time.perf_counter() - started
    return Measured(seconds, parse_status(status)["rows"], 1, seconds * 1000)


async def _cleanup_task(pool: asyncpg.Pool, store: RunStore, table: str, cutoff: datetime, number: int) -> Measured:
    """Run the task as the daemon runs it: a claimed run, a context, progress written to the run row."""
    await _make_table(pool, table)
    run = await store.claim_run(
        Claim(
            job_id="cleanup_sessions",
            trigger="manual",
            scheduled_for=cutoff,
            attempt=number,
            exclusive=False,
            started_at=cutoff,
            triggered_by="bench",
            node="bench",
            ignore_pause=True,
        )
    )
    assert run is not None

    async def progress(fields: dict[str, Any]) -> None:
        await store.set_progress(run.id, fields)

    ctx = JobContext(
        job_id=run.job_id,
        run_id=run.id,
        scheduled_for=cutoff,
        pool=pool,
        log=structlog.get_logger("bench"),
        now=lambda: cutoff,
        _progress=progress,
    )
    started = time.perf_counter()
    result = await cleanup_sessions(ctx, CleanupParams(table=table))
    seconds = time.perf_counter() - started
    return Measured(seconds, result["deleted"], result["batches"], result["longest_statement_ms"])


async def _naive(pool: asyncpg.Pool, table: str, cutoff: datetime, batch_size: int) -> Measured:
    await _make_table(pool, table)
    statement = NAIVE_BATCH.format(table=table)
    deleted = batches = 0
    longest = 0.0
    async with pool.acquire() as conn:
        started = time.perf_counter()
        while True:
            before = time.perf_counter()
            rows = parse_status(await conn.execute(statement, cutoff, batch_size))["rows"]
            longest = max(longest, time.perf_counter() - before)
            deleted, batches = deleted + rows, batches + 1
            if rows < batch_size:
                break
        seconds = time.perf_counter() - started
    return Measured(seconds, deleted, batches, longest * 1000)


def _median(results: list[Measured]) -> Measured:
    return sorted(results, key=lambda m: m.seconds)[len(results) // 2]


def _line(label: str, m: Measured, ratio: float | None = None) -> None:
    share = f"  {ratio:.2f}x of raw" if ratio is not None else ""
    print(
        f"  {label:28s} {m.seconds:6.2f} s  {m.rows_per_s:>10,.0f} rows/s  {m.deleted:,} rows  "
        f"batches {m.batches}  longest statement {m.longest_statement_ms:.1f} ms{share}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.cleanup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--layout", choices=sorted(EXPIRIES), default="jittered", help="how expiry follows insertion")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of raw DELETE and cleanup_sessions (default 3)")
    parser.add_argument("--no-naive", dest="naive", action="store_false", help="skip the naive batches (~30 s)")
    args = parser.parse_args()
    configure_logging(level="warning", json=False)
    asyncio.run(main(args.layout, args.rounds, args.naive))
