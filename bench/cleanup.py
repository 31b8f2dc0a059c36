"""Session cleanup against one raw DELETE: 1,000,000 expired rows out of 2,000,000, on two kinds of server.

Run: ``.venv/bin/python -m bench.cleanup [--server default|tuned|both] [--sizes auto,10000]
[--layout jittered|ordered|random] [--rounds N] [--naive]`` (under
``flock /tmp/maintd-bench.lock`` on a shared machine). The bench creates a
database of its own and drops it at the end, even on error.

Servers (``--server``, default both, one after the other):

* **default**: the PostgreSQL at ``$MAINTD_BENCH_DSN`` (default
  ``postgresql://postgres@127.0.0.1:5432/postgres``), as it is configured;
* **tuned**: a throwaway cluster of the bench's own (initdb'd in a temporary
  directory, tests/e2e/postgres_cluster.py, stopped and removed at the end)
  set as many production servers are: ``shared_buffers`` 256MB, a large
  ``max_wal_size`` (no checkpoint during a delete), and ``fsync`` off (a
  commit costs no disk flush here, as on a server with a battery-backed
  cache); each table and its indexes are loaded into shared buffers
  (``pg_prewarm``) before it is deleted from. Where the server is fast, the
  fixed costs of each batch (round trips, commits, progress) weigh most.

Each round builds identical tables (the same rows in the same physical order,
a primary key and an index on ``expires``, vacuumed and analyzed, then a
CHECKPOINT) and deletes the expired half of each:

* **raw DELETE**, the baseline: one ``DELETE ... WHERE expires < cutoff``;
* **cleanup_sessions** once per ``--sizes`` entry (``batch_size`` = ``auto``:
  sized to ``max_statement``, 50ms; or a fixed number of rows): the task
  function as the daemon calls it, with a real
  :class:`~jobs.context.JobContext` on a maintd pool, its progress written to
  a run row after every batch.

Rounds rotate which goes first. Each figure is the raw DELETE's time over the
task's, per round (the ratio; higher is better, 1.0x is as fast as one
statement); the summary gives each one's median and spread (lowest-highest)
over the rounds, the longest statement of all rounds (the task's own
per-statement timing, ``longest_statement_ms``), and the batches of the median
round. ``--naive`` adds one round, on the default server, of the naive batches
(``DELETE ... WHERE id IN (SELECT id ... ORDER BY expires LIMIT n FOR UPDATE
SKIP LOCKED)`` until a batch comes back short), which rescan the dead index
entries of earlier batches.

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
import shutil
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
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
from tests.e2e.conftest import free_port
from tests.e2e.postgres_cluster import PgServer, make_server_base

DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
# The tuned server's settings (beside the fsync = off of every test server).
TUNED = {"shared_buffers": "256MB", "max_wal_size": "8GB", "checkpoint_timeout": "30min"}
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
# The table and its indexes into shared buffers (tuned server only).
PREWARM = (
    "SELECT sum(pg_prewarm(c.oid)) FROM pg_class c "
    "WHERE c.oid = '{table}'::regclass OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = '{table}'::regclass)"
)
RAW_DELETE = "DELETE FROM {table} WHERE expires < $1"
NAIVE_BATCH = (
    "DELETE FROM {table} WHERE id IN "
    "(SELECT id FROM {table} WHERE expires < $1 ORDER BY expires LIMIT $2 FOR UPDATE SKIP LOCKED)"
)
RAW = "raw DELETE"


@dataclass(frozen=True)
class Measured:
    """One way of deleting the expired rows, timed."""

    seconds: float
    deleted: int
    batches: int
    longest_statement_ms: float
    largest_batch_size: int = 0
    last_batch_size: int = 0

    @property
    def rows_per_s(self) -> float:
        return self.deleted / self.seconds


@dataclass(frozen=True)
class Server:
    """Where one half of the bench runs, and how its tables are made ready."""

    name: str
    admin_dsn: str
    prewarm: bool


async def main(servers: list[str], sizes: list[int | str], layout: str, rounds: int, naive: bool) -> None:
    began = time.perf_counter()
    for name in servers:
        async with _server(name) as server, scratch_database(server.admin_dsn, "maintd_bench_cleanup") as dsn:
            pool = await create_pool(dsn, max_size=3)
            try:
                await _bench(server, pool, dsn, sizes, layout, rounds, naive and name == "default")
            finally:
                await pool.close()
    print(f"\ntotal bench time: {time.perf_counter() - began:.0f} s")


@asynccontextmanager
async def _server(name: str) -> AsyncIterator[Server]:
    if name == "default":
        yield Server(name, os.environ.get("MAINTD_BENCH_DSN", DEFAULT_ADMIN_DSN), prewarm=False)
        return
    scratch = Path(tempfile.mkdtemp(prefix="maintd-bench-pg-"))
    base = scratch / "servers"
    make_server_base(base)
    server = PgServer(base / "tuned", free_port(), settings=TUNED)
    try:
        await asyncio.to_thread(server.init)
        await asyncio.to_thread(server.start)
        yield Server(name, server.dsn("postgres"), prewarm=True)
    finally:
        if server.running_pid() is not None:
            await asyncio.to_thread(server.stop)
        shutil.rmtree(scratch, ignore_errors=True)


async def _bench(
    server: Server, pool: asyncpg.Pool, dsn: str, sizes: list[int | str], layout: str, rounds: int, naive: bool
) -> None:
    async with pool.acquire() as conn:
        await apply_migrations(conn)
        if server.prewarm:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        await conn.execute("SELECT setseed(0.42)")  # the same rows on every run of a layout
        await conn.execute(MAKE_SOURCE.format(expires=EXPIRIES[layout]))
        cutoff: datetime = await conn.fetchval(CUTOFF)
        expired = await conn.fetchval(COUNT_EXPIRED, cutoff)
        version = await conn.fetchval("SHOW server_version")
        settings = {name: await conn.fetchval(f"SHOW {name}") for name in ("shared_buffers", "fsync", "max_wal_size")}
    print(
        f"\n######## bench.cleanup, {server.name} server: {ROWS:,} rows, {expired:,} expired (cutoff "
        f"{cutoff.isoformat()}), layout {layout}: expiry = {EXPIRIES[layout]}; PostgreSQL {version}, "
        + ", ".join(f"{k} {v}" for k, v in settings.items())
        + (", tables prewarmed" if server.prewarm else "")
        + f"; {os.cpu_count()} CPUs"
    )
    store = RunStore(pool, dsn)
    methods: dict[str, Callable[[int], Awaitable[Measured]]] = {
        RAW: lambda number: _raw_delete(server, pool, "raw_delete", cutoff)
    }
    for size in sizes:
        methods[_label(size)] = lambda number, size=size: _cleanup_task(  # type: ignore[misc]
            server, pool, store, f"cleanup_{size}", cutoff, number, size
        )
    results: dict[str, list[Measured]] = {label: [] for label in methods}
    labels = list(methods)
    for number in range(1, rounds + 1):
        shift = (number - 1) % len(labels)
        for label in labels[shift:] + labels[:shift]:
            results[label].append(await methods[label](number))
        raw = results[RAW][-1]
        shown = ", ".join(
            f"{label} {m[-1].seconds:.2f} s ({m[-1].batches} batches, longest statement "
            f"{m[-1].longest_statement_ms:.1f} ms) {raw.seconds / m[-1].seconds:.2f}x"
            for label, m in results.items()
            if label != RAW
        )
        print(f"round {number}: raw DELETE {raw.seconds:.2f} s; {shown}")
    print(f"\n{server.name} server, {rounds} round(s): median (lowest-highest)")
    raw_times = [m.seconds for m in results[RAW]]
    print(f"  {RAW:30s} {_spread(raw_times, 's')}")
    for label, measured in results.items():
        if label == RAW:
            continue
        ratios = [r.seconds / m.seconds for r, m in zip(results[RAW], measured, strict=True)]
        typical = _median(measured)
        print(
            f"  {label:30s} {_spread([m.seconds for m in measured], 's')}  ratio {_spread(ratios, 'x')}  "
            f"longest statement {max(m.longest_statement_ms for m in measured):.1f} ms  "
            f"batches {typical.batches} (largest {typical.largest_batch_size:,}, last {typical.last_batch_size:,} rows)"
        )
    print("  targets: ratio >= 0.5x, longest statement < 100 ms")
    if naive:
        naive_run = await _naive(pool, "naive", cutoff, 10_000)
        print(f"\nnaive batches of 10,000, 1 round (raw DELETE median {statistics.median(raw_times):.2f} s):")
        ratio = statistics.median(raw_times) / naive_run.seconds
        print(
            f"  {naive_run.seconds:.2f} s, {naive_run.batches} batches, longest statement "
            f"{naive_run.longest_statement_ms:.1f} ms, ratio {ratio:.2f}x"
        )


def _label(size: int | str) -> str:
    return f"cleanup_sessions {size}" if size == "auto" else f"cleanup_sessions {size:,}"


def _spread(values: list[float], unit: str) -> str:
    number = "{:.2f}"
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{number.format(mid)}{unit} ({number.format(low)}-{number.format(high)})"


async def _make_table(server: Server, pool: asyncpg.Pool, table: str) -> None:
    async with pool.acquire() as conn:
        for statement in MAKE_TABLE:
            await conn.execute(statement.format(table=table))
        if server.prewarm:
            await conn.execute(PREWARM.format(table=table))


async def _raw_delete(server: Server, pool: asyncpg.Pool, table: str, cutoff: datetime) -> Measured:
    await _make_table(server, pool, table)
    async with pool.acquire() as conn:
        started = time.perf_counter()
        status = await conn.execute(RAW_DELETE.format(table=table), cutoff)
        seconds = time.perf_counter() - started
    return Measured(seconds, parse_status(status)["rows"], 1, seconds * 1000)


async def _cleanup_task(
    server: Server, pool: asyncpg.Pool, store: RunStore, table: str, cutoff: datetime, number: int, size: int | str
) -> Measured:
    """Run the task as the daemon runs it: a claimed run, a context, progress written to the run row."""
    await _make_table(server, pool, table)
    run = await store.claim_run(
        Claim(
            job_id=f"cleanup_sessions_{size}",
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
    params = CleanupParams.model_validate({"table": table, "batch_size": size})
    started = time.perf_counter()
    result = await cleanup_sessions(ctx, params)
    seconds = time.perf_counter() - started
    return Measured(
        seconds,
        result["deleted"],
        result["batches"],
        result["longest_statement_ms"],
        result["largest_batch_size"],
        result["last_batch_size"],
    )


async def _naive(pool: asyncpg.Pool, table: str, cutoff: datetime, batch_size: int) -> Measured:
    await _make_table(Server("default", "", prewarm=False), pool, table)
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


def _size(text: str) -> int | str:
    return text if text == "auto" else int(text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.cleanup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=["default", "tuned", "both"], default="both", help="default: both")
    parser.add_argument(
        "--sizes",
        default="auto,10000",
        help="cleanup_sessions batch_size values to measure, comma-separated (default: auto,10000)",
    )
    parser.add_argument("--layout", choices=sorted(EXPIRIES), default="jittered", help="how expiry follows insertion")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per server (default 5)")
    parser.add_argument("--naive", action="store_true", help="also the naive batches on the default server (~30 s)")
    args = parser.parse_args()
    configure_logging(level="warning", json=False)
    servers = ["default", "tuned"] if args.server == "both" else [args.server]
    asyncio.run(main(servers, [_size(s) for s in args.sizes.split(",")], args.layout, args.rounds, args.naive))
