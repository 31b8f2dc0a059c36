"""The web console's pages with a real history: 500 jobs and 1 M runs.

Run: ``.venv/bin/python -m bench.console [--rounds N] [--requests N] [--runs N]``
(PostgreSQL from ``$MAINTD_BENCH_DSN``, default the local server; a database of its
own, dropped at the end). Run it under ``flock -x /tmp/maintd-bench.lock``.

Why: a console that renders each row with a query of its own, or scans the history
for the overview's strips, is fine with ten jobs and unusable with a real history.
Every page must render within 100 ms p99, server side.

The history is made in SQL before the clock starts: 500 jobs (``@yearly``-like
crontabs, none due while it runs), each with ``--runs``/500 records over the last
90 days (the default retention), one every ~65 minutes: mostly succeeded, some
failed, timed out, lost, cancelled, skipped and missed; 30 log lines on the
newest run of each job; 100,000 audit entries. Then the daemon's own app (the
real engine, started, over the real pool) is driven in-process through ASGI, so
the time is the server's: routing, the engine's queries and the rendering.

Each round signs in once, then requests every page ``--requests`` times after 5
warm-ups, and for its **baseline** the JSON API's routes for the same data, in the
same round, interleaved: overview = ``GET /admin/jobs?limit=50`` (the jobs of the
page, without strips), job = ``GET /admin/jobs/{id}`` + ``GET
/admin/runs?job_id=&limit=50``, run = ``GET /admin/runs/{id}`` + its ``/logs``,
calendar = ``GET /admin/jobs?limit=50`` (the rows it shows), audit = ``GET
/admin/audit?limit=50``. It also counts the statements each page sends (the
database's committed transactions, every statement of the pool being one), which
must not grow with the rows on the page.

The summary shows per page the median over the rounds of its p50 and p99, the
spread (min-max) of the p99, and the ratio of the p99 to its baseline's.

Measured here (2 cores, shared; 3 rounds of 50): p99 overview 52.5 ms (JSON 16.7,
3.1x), job 22.3 (1.6x), run 10.0 (1.4x), calendar 54.5 (3.8x), audit 9.7 (2.2x).
Before: overview 312 ms and calendar 155 ms with 100,000 runs (the engine's
``last_runs`` read every run of the jobs; the calendar a whole month of all jobs;
the strips a template loop).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg
import httpx

from bench import scratch_database
from maintd.admin_api.auth import new_token
from maintd.scheduler.app import create_app
from maintd.scheduler.config.model import config_from_text
from maintd.scheduler.store.migrate import apply_migrations

DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
JOBS = 500
RUNS = 1_000_000
ROUNDS = 3
REQUESTS = 100
WARMUP = 5
GOAL_MS = 100.0
AUDIT = 100_000

HISTORY_SQL = """
INSERT INTO maintd.runs (job_id, trigger, status, scheduled_for, attempt, exclusive, started_at, finished_at,
                         heartbeat_at, node, error, result)
SELECT 'job_' || lpad(j::text, 3, '0'), 'schedule', s.status, f.at, 1, true,
       CASE WHEN s.status IN ('skipped', 'missed') THEN NULL ELSE f.at END,
       f.at + make_interval(secs => 0.05 + (k % 17) * 0.3),
       f.at, 'bench-node',
       CASE WHEN s.status = 'succeeded' THEN NULL ELSE s.status || ': as the bench recorded it' END,
       CASE WHEN s.status = 'succeeded' THEN jsonb_build_object('rows', k) END
FROM generate_series(1, $2::int) AS k
CROSS JOIN generate_series(1, $1::int) AS j
CROSS JOIN LATERAL (SELECT now() - make_interval(mins => (k * 129600 / $2::int)::int) - make_interval(secs => j) AS at) f
CROSS JOIN LATERAL (SELECT CASE
    WHEN (k * 7 + j) % 100 < 3 THEN 'failed'
    WHEN (k * 7 + j) % 100 = 3 THEN 'timed_out'
    WHEN (k * 7 + j) % 100 = 4 THEN 'missed'
    WHEN (k * 7 + j) % 100 = 5 THEN 'skipped'
    WHEN (k * 7 + j) % 200 = 6 THEN 'lost'
    WHEN (k * 7 + j) % 200 = 7 THEN 'cancelled'
    ELSE 'succeeded' END AS status) s
ORDER BY f.at
"""
LOGS_SQL = """
INSERT INTO maintd.run_logs (run_id, seq, at, level, event, fields)
SELECT r.id, n, r.started_at, 'info', 'batch_done', jsonb_build_object('batch', n, 'deleted', n * 1000)
FROM (SELECT DISTINCT ON (job_id) id, started_at FROM maintd.runs
      WHERE started_at IS NOT NULL ORDER BY job_id, id DESC) r
CROSS JOIN generate_series(1, 30) AS n
"""
AUDIT_SQL = """
INSERT INTO maintd.audit (at, principal, action, target, client, detail)
SELECT now() - make_interval(mins => n), (ARRAY['ops', 'alice', 'bob'])[n % 3 + 1],
       (ARRAY['trigger', 'pause', 'resume', 'cancel'])[n % 4 + 1], 'job_' || lpad((n % 500 + 1)::text, 3, '0'),
       '10.0.0.' || (n % 250), jsonb_build_object('run_id', n)
FROM generate_series(1, $1::int) AS n
"""


def config_toml(dsn: str, token_sha256: str) -> str:
    jobs = "".join(
        f'[jobs.job_{n:03d}]\ntask = "sql"\nschedule = "{n % 60} {n % 24} 1 1 *"\n[jobs.job_{n:03d}.params]\nsql = "SELECT 1"\n'
        for n in range(1, JOBS + 1)
    )
    return (
        f'[database]\ndsn = "{dsn}"\n[scheduler]\nshutdown_grace = "1s"\n'
        f'[[admin.tokens]]\nname = "ops"\nrole = "operator"\nsha256 = "{token_sha256}"\n{jobs}'
    )


async def make_history(dsn: str, runs: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await apply_migrations(conn)
        began = time.monotonic()
        await conn.execute(HISTORY_SQL, JOBS, runs // JOBS)
        await conn.execute(LOGS_SQL)
        await conn.execute(AUDIT_SQL, AUDIT)
        await conn.execute("VACUUM ANALYZE maintd.runs")
        await conn.execute("VACUUM ANALYZE maintd.run_logs")
        await conn.execute("VACUUM ANALYZE maintd.audit")
        count = await conn.fetchval("SELECT count(*) FROM maintd.runs")
        print(f"history: {count:,} runs, {AUDIT:,} audit entries in {time.monotonic() - began:.0f} s", flush=True)
    finally:
        await conn.close()


@dataclass
class Page:
    """One console page and the JSON API's requests for the same data."""

    name: str
    path: str
    baseline: list[str]
    ms: list[float] = field(default_factory=list)
    baseline_ms: list[float] = field(default_factory=list)
    statements: float = 0.0


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def timed(call: Callable[[], Awaitable[httpx.Response]]) -> float:
    began = time.perf_counter()
    response = await call()
    elapsed = (time.perf_counter() - began) * 1000
    if response.status_code != 200:
        raise AssertionError(f"{response.request.url}: {response.status_code} {response.text[:200]}")
    return elapsed


async def transactions(dsn: str) -> int:
    # Backends flush their statistics at most once a second.
    await asyncio.sleep(1.2)
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
    finally:
        await conn.close()


async def one_round(dsn: str, requests: int) -> list[Page]:
    token, sha = new_token()
    app = create_app(config_from_text(config_toml(dsn, sha)))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://bench") as browser,
            httpx.AsyncClient(
                transport=transport, base_url="http://bench", headers={"Authorization": f"Bearer {token}"}
            ) as api,
        ):
            form = (await browser.get("/ui/")).text
            nonce = re.search(r'name="nonce" value="([^"]+)"', form)
            assert nonce is not None
            signed = await browser.post("/ui/sign-in", data={"token": token, "nonce": nonce[1], "next": "/ui/"})
            assert signed.status_code == 303, signed.text
            run_id = (await api.get("/admin/runs", params={"job_id": "job_250", "limit": 1})).json()[0]["id"]
            pages = [
                Page("overview", "/ui/", ["/admin/jobs?limit=50"]),
                Page("job", "/ui/jobs/job_250", ["/admin/jobs/job_250", "/admin/runs?job_id=job_250&limit=50"]),
                Page("run", f"/ui/runs/{run_id}", [f"/admin/runs/{run_id}", f"/admin/runs/{run_id}/logs"]),
                Page("calendar", "/ui/calendar", ["/admin/jobs?limit=50"]),
                Page("audit", "/ui/audit", ["/admin/audit?limit=50"]),
            ]
            for page in pages:
                for _ in range(WARMUP):
                    await timed(lambda page=page: browser.get(page.path))
                    for path in page.baseline:
                        await timed(lambda path=path: api.get(path))
                before = await transactions(dsn)
                for _ in range(requests):
                    page.ms.append(await timed(lambda page=page: browser.get(page.path)))
                after = await transactions(dsn)
                page.statements = (after - before) / requests
                for _ in range(requests):
                    page.baseline_ms.append(
                        sum([await timed(lambda path=path: api.get(path)) for path in page.baseline])
                    )
            return pages


def summarize(rounds: list[list[Page]], runs: int) -> None:
    print(
        f"\n== {JOBS} jobs, {runs:,} runs: median (min-max) over {len(rounds)} round(s); ratio = page p99 / JSON API p99"
    )
    for index, first in enumerate(rounds[0]):
        mine = [r[index] for r in rounds]
        p50 = statistics.median(pct(p.ms, 50) for p in mine)
        p99s = [pct(p.ms, 99) for p in mine]
        base = statistics.median(pct(p.baseline_ms, 99) for p in mine)
        statements = statistics.median(p.statements for p in mine)
        verdict = "ok" if statistics.median(p99s) < GOAL_MS else f"OVER {GOAL_MS:.0f} ms"
        print(
            f"  {first.name:<9} p50 {p50:6.1f} ms  p99 {statistics.median(p99s):6.1f} ms ({min(p99s):.1f}-{max(p99s):.1f})"
            f"  JSON p99 {base:6.1f} ms  ratio {statistics.median(p99s) / base:4.1f}x"
            f"  statements/page {statements:4.1f}  {verdict}"
        )


async def run(args: argparse.Namespace) -> None:
    admin_dsn = os.environ.get("MAINTD_BENCH_DSN", DEFAULT_ADMIN_DSN)
    async with scratch_database(admin_dsn, "maintd_bench_console") as dsn:
        await make_history(dsn, args.runs)
        rounds = []
        for number in range(1, args.rounds + 1):
            pages = await one_round(dsn, args.requests)
            print(
                f"round {number}: " + ", ".join(f"{p.name} p99 {pct(p.ms, 99):.1f} ms" for p in pages),
                flush=True,
            )
            rounds.append(pages)
        summarize(rounds, args.runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.console", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"rounds (default {ROUNDS})")
    parser.add_argument(
        "--requests", type=int, default=REQUESTS, help=f"requests per page and round (default {REQUESTS})"
    )
    parser.add_argument("--runs", type=int, default=RUNS, help=f"runs of history (default {RUNS:,})")
    asyncio.run(run(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
