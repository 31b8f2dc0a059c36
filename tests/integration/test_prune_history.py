"""``prune_history`` against a real PostgreSQL: each table's retention, what always stays, batches, fencing.

The history is written straight into maintd's tables with the times a test
needs; the task runs with a fixed clock, as the daemon would run it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import structlog

from maintd.jobs.context import JobContext, LeaseLost
from maintd.jobs.prune_history import HISTORY, PruneParams, prune_history
from maintd.scheduler.config.model import ConfigError, parse_config
from maintd.scheduler.store.run_store import RunStore
from tests.configs import make_config
from tests.engines import StartEngine, run_to_end

pytestmark = pytest.mark.integration

NOW = datetime(2026, 5, 4, 3, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture
async def pool(store: RunStore) -> asyncpg.Pool:
    return store.pool


async def add_run(
    pool: asyncpg.Pool,
    job_id: str,
    started: datetime | None,
    status: str = "succeeded",
    trigger: str = "schedule",
    log_lines: int = 0,
) -> int:
    """A run (or, with ``started`` None, a fire that did not run at its time) with ``log_lines`` lines logged."""
    fire = started or NOW - 1000 * DAY
    finished = None if status == "running" else (started or fire) + timedelta(seconds=1)
    run_id: int = await pool.fetchval(
        """
        INSERT INTO maintd.runs (job_id, trigger, status, scheduled_for, exclusive, started_at, finished_at,
                                 heartbeat_at, node)
        VALUES ($1, $2, $3, $4, false, $5, $6, $5, 'node-a') RETURNING id
        """,
        job_id,
        trigger,
        status,
        fire if started is None else started,
        started,
        finished,
    )
    await pool.execute(
        "INSERT INTO maintd.run_logs (run_id, seq, at, level, event) "
        "SELECT $1, s, $2, 'info', 'line' FROM generate_series(1, $3) s",
        run_id,
        started or fire,
        log_lines,
    )
    return run_id


async def add_job(pool: asyncpg.Pool, *job_ids: str) -> None:
    await pool.execute(
        "INSERT INTO maintd.job_state (job_id, first_seen) SELECT unnest($1::text[]), $2",
        list(job_ids),
        NOW - 999 * DAY,
    )


async def add_audit(pool: asyncpg.Pool, *ats: datetime) -> None:
    await pool.execute(
        "INSERT INTO maintd.audit (at, principal, action, target) SELECT unnest($1::timestamptz[]), 'ops', 'pause', 'x'",
        list(ats),
    )


async def add_deliveries(pool: asyncpg.Pool, *days: date) -> None:
    await pool.execute(
        """
        INSERT INTO maintd.report_deliveries (job_id, report_date, period_start, period_end, state, run_id,
                                              claimed_at, sent_at, recipients, message_id)
        SELECT 'report', d, d, d + 1, 'sent', 1, d + 1, d + 1, '{ops@example.com}', 'm'
        FROM unnest($1::date[]) d
        """,
        list(days),
    )


async def prune(pool: asyncpg.Pool, run_id: int = 0, **params: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run the task with its clock at NOW; ``run_id`` 0: no such run, so no fence."""
    reports: list[dict[str, Any]] = []

    async def record(progress: dict[str, Any]) -> None:
        reports.append(progress)

    ctx = JobContext(
        job_id="prune",
        run_id=run_id,
        scheduled_for=NOW,
        pool=pool,
        log=structlog.get_logger("test"),
        now=lambda: NOW,
        _progress=record,
    )
    return await prune_history(ctx, PruneParams.model_validate(params)), reports


async def run_ids(pool: asyncpg.Pool) -> set[int]:
    return {row["id"] for row in await pool.fetch("SELECT id FROM maintd.runs")}


async def log_counts(pool: asyncpg.Pool) -> dict[int, int]:
    rows = await pool.fetch("SELECT run_id, count(*) AS n FROM maintd.run_logs GROUP BY run_id")
    return {row["run_id"]: row["n"] for row in rows}


async def test_runs_older_than_their_retention_go_with_their_logs_and_newer_ones_stay(pool: asyncpg.Pool) -> None:
    await add_job(pool, "nightly")
    old = [await add_run(pool, "nightly", NOW - d * DAY, log_lines=3) for d in (200, 120, 91)]
    missed = await add_run(pool, "nightly", None, status="missed")  # by its fire time, 1000 days ago
    kept = [await add_run(pool, "nightly", NOW - d * DAY, log_lines=2) for d in (89, 30, 1)]

    result, _ = await prune(pool, runs="90d", run_logs="forever")

    assert await run_ids(pool) == set(kept)
    assert await log_counts(pool) == dict.fromkeys(kept, 2)
    assert result["tables"]["runs"]["deleted"] == len(old) + 1 == 4
    assert result["tables"]["runs"]["cutoff"] == (NOW - 90 * DAY).isoformat()
    assert "run_logs" not in result["tables"] and missed not in await run_ids(pool)


async def test_a_run_in_progress_is_never_pruned_nor_its_logs(pool: asyncpg.Pool) -> None:
    await add_job(pool, "stuck", "other")
    running = await add_run(pool, "stuck", NOW - 400 * DAY, status="running", log_lines=4)
    newer = await add_run(pool, "stuck", NOW - 2 * DAY, log_lines=1)
    gone = await add_run(pool, "other", NOW - 400 * DAY, log_lines=1)
    await add_run(pool, "other", NOW - DAY)

    await prune(pool, runs="30d", run_logs="1d")

    ids = await run_ids(pool)
    assert running in ids and gone not in ids
    assert (await log_counts(pool)).get(running) == 4
    assert (await log_counts(pool)).get(newer) is None  # its lines are older than their retention


async def test_each_jobs_newest_run_fire_and_success_stay_however_old(pool: asyncpg.Pool) -> None:
    # A yearly job: catch-up starts from its newest fire, the dead-man's switch from its newest success.
    await add_job(pool, "yearly", "gone_job")
    first = await add_run(pool, "yearly", NOW - 800 * DAY)
    success = await add_run(pool, "yearly", NOW - 400 * DAY)
    failed_fire = await add_run(pool, "yearly", NOW - 300 * DAY, status="failed")
    manual = await add_run(pool, "yearly", NOW - 200 * DAY, status="failed", trigger="manual")
    # A job no longer configured (never seen in job_state) keeps nothing.
    unknown = await add_run(pool, "unknown", NOW - 800 * DAY)

    result, _ = await prune(pool, runs="90d")

    assert await run_ids(pool) == {success, failed_fire, manual}
    assert first not in await run_ids(pool) and unknown not in await run_ids(pool)
    assert result["tables"]["runs"]["deleted"] == 2


async def test_run_logs_have_a_retention_of_their_own(pool: asyncpg.Pool) -> None:
    await add_job(pool, "talk")
    runs = [await add_run(pool, "talk", NOW - d * DAY, log_lines=5) for d in (60, 31, 29, 2)]

    result, _ = await prune(pool, runs="90d", run_logs="30d")

    assert await run_ids(pool) == set(runs)
    assert await log_counts(pool) == {runs[2]: 5, runs[3]: 5}
    assert result["tables"]["run_logs"]["deleted"] == 10


async def test_audit_and_report_deliveries_each_keep_their_own_retention(pool: asyncpg.Pool) -> None:
    await add_audit(pool, NOW - 400 * DAY, NOW - 366 * DAY, NOW - 364 * DAY, NOW)
    days = [date(2025, 1, 1), date(2026, 3, 1), date(2026, 3, 3), date(2026, 5, 3)]
    await add_deliveries(pool, *days)

    result, _ = await prune(pool, audit="365d", report_deliveries="62d")

    assert [r["at"] for r in await pool.fetch("SELECT at FROM maintd.audit ORDER BY at")] == [NOW - 364 * DAY, NOW]
    # The cutoff, 2026-03-03 03:00: a delivery's day counts from its midnight.
    assert [r[0] for r in await pool.fetch("SELECT report_date FROM maintd.report_deliveries ORDER BY 1")] == [
        date(2026, 5, 3)
    ]
    assert (result["tables"]["audit"]["deleted"], result["tables"]["report_deliveries"]["deleted"]) == (2, 3)
    assert result["deleted"] == 5


async def test_forever_keeps_a_table_whole(pool: asyncpg.Pool) -> None:
    await add_audit(pool, NOW - 4000 * DAY)
    result, _ = await prune(pool, audit="forever")
    assert await pool.fetchval("SELECT count(*) FROM maintd.audit") == 1
    assert set(result["tables"]) == set(HISTORY) - {"audit"}


async def test_many_rows_go_in_bounded_batches_each_its_own_transaction(pool: asyncpg.Pool) -> None:
    await pool.execute("""
        CREATE TABLE delete_log (id serial, txid bigint, rows int);
        CREATE FUNCTION log_delete() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO delete_log (txid, rows) SELECT txid_current(), count(*) FROM gone; RETURN NULL; END $$;
        CREATE TRIGGER log_delete AFTER DELETE ON maintd.audit REFERENCING OLD TABLE AS gone
        FOR EACH STATEMENT EXECUTE FUNCTION log_delete();
    """)
    await pool.execute(
        "INSERT INTO maintd.audit (at, principal, action, target) "
        "SELECT $1::timestamptz - s * interval '1 minute', 'ops', 'pause', 'x' FROM generate_series(1, 1000) s",
        NOW - 365 * DAY,
    )
    await add_audit(pool, NOW - DAY)

    result, reports = await prune(pool, audit="365d", batch_size=75)

    log = await pool.fetch("SELECT txid, rows FROM delete_log ORDER BY id")
    assert [row["rows"] for row in log] == [75] * 13 + [25]
    assert len({row["txid"] for row in log}) == 14
    assert result["tables"]["audit"] | {"longest_batch_ms": 0, "longest_statement_ms": 0} == {
        "cutoff": (NOW - 365 * DAY).isoformat(),
        "deleted": 1000,
        "batches": 14,
        "largest_batch_size": 75,
        "last_batch_size": 75,
        "longest_batch_ms": 0,
        "longest_statement_ms": 0,
    }
    assert {"table": "audit", "deleted": 1000, "batches": 14} in reports
    assert await pool.fetchval("SELECT count(*) FROM maintd.audit") == 1


async def test_auto_batches_prune_every_old_run(pool: asyncpg.Pool) -> None:
    await add_job(pool, "busy")
    await pool.execute(
        """
        INSERT INTO maintd.runs (job_id, trigger, status, scheduled_for, exclusive, started_at, finished_at, node)
        SELECT 'busy', 'schedule', 'succeeded', t, false, t, t + interval '1 second', 'node-a'
        FROM generate_series($1::timestamptz - interval '30 days', $1, interval '10 seconds') t
        """,
        NOW - 100 * DAY,
    )
    newest = await add_run(pool, "busy", NOW - DAY)

    result, _ = await prune(pool, runs="90d")

    left = await pool.fetchval("SELECT array_agg(id) FROM maintd.runs")
    assert (len(left), newest in left) == (1, True)
    runs = result["tables"]["runs"]
    assert runs["deleted"] == 30 * 8640 + 1
    assert runs["batches"] > 1 and runs["largest_batch_size"] > runs["batches"]


async def test_a_lost_run_prunes_nothing_more(pool: asyncpg.Pool) -> None:
    await add_job(pool, "prune")
    run_id = await add_run(pool, "prune", NOW, status="running")
    await pool.execute("UPDATE maintd.runs SET status = 'lost', finished_at = $2 WHERE id = $1", run_id, NOW)
    await add_audit(pool, NOW - 400 * DAY)

    with pytest.raises(LeaseLost):
        await prune(pool, run_id=run_id)
    assert await pool.fetchval("SELECT count(*) FROM maintd.audit") == 1


async def test_the_shipped_task_runs_in_the_daemon(start_engine: StartEngine, pool: asyncpg.Pool) -> None:
    await add_audit(pool, datetime.now(UTC) - 400 * DAY, datetime.now(UTC))
    engine = await start_engine(make_config({"prune": {"task": "prune_history", "schedule": "@daily"}}))

    run = await run_to_end(engine, "prune")

    assert run.status == "succeeded" and run.result is not None
    assert run.result["tables"]["audit"]["deleted"] == 1


def test_params_read_back_from_their_json_the_same() -> None:
    # A run keeps its effective params as JSON; a rerun validates them again.
    params = PruneParams.model_validate({"audit": "forever", "runs": "2160h", "max_statement": "0.1s"})
    assert params.model_dump(mode="json") == {
        "batch_size": "auto",
        "max_statement": "100ms",
        "run_logs": "30d",
        "runs": "90d",
        "audit": "forever",
        "report_deliveries": "365d",
        "idempotency_keys": "1d",
        "console_sessions": "1d",
    }
    assert PruneParams.model_validate(params.model_dump(mode="json")) == params


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"runs": "12h"}, "jobs.prune.params.runs: must be at least 1d (or 'forever'), got '12h'"),
        ({"audit": "a year"}, "jobs.prune.params.audit: invalid duration 'a year'"),
        ({"run_logs": 30}, "jobs.prune.params.run_logs: expected a duration string such as '90d' or 'forever', got 30"),
        ({"max_statement": "fast"}, "jobs.prune.params.max_statement: invalid duration 'fast'"),
        ({"sessions": "1d"}, "jobs.prune.params.sessions: unknown key"),
    ],
)
def test_bad_params_are_config_errors_naming_the_key(params: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"jobs": {"prune": {"task": "prune_history", "schedule": "@daily", "params": params}}})
    assert any(line.startswith(problem) for line in error.value.problems), error.value.problems


# maintd's tables that do not grow with use: one row per job, per (job, alert kind), per live replica.
BOUNDED = {"maintd.schema_migrations", "maintd.job_state", "maintd.alert_state", "maintd.nodes"}


async def test_every_table_of_maintd_is_bounded_or_has_a_retention(pool: asyncpg.Pool) -> None:
    tables = {
        row[0] for row in await pool.fetch("SELECT 'maintd.' || tablename FROM pg_tables WHERE schemaname = 'maintd'")
    }
    retained = {history.table for history in HISTORY.values()}
    assert tables - BOUNDED == retained


async def test_each_table_is_walked_on_an_index_of_its_key(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        # Empty tables: with these off, only a missing index shows, as a sort of the whole table.
        await conn.execute("SET enable_seqscan = off; SET enable_sort = off")
        for history in HISTORY.values():
            statements = await history.statements(conn)
            explained = await conn.fetch(f"EXPLAIN {statements.next_bound}", None, NOW, 100, *statements.args)
            plan = "\n".join(row[0] for row in explained)
            assert "Index" in plan and "Sort" not in plan, (history.table, plan)


async def test_console_sessions_go_a_day_after_they_expired(pool: asyncpg.Pool) -> None:
    for n, expires in enumerate((NOW - 3 * DAY, NOW - 2 * DAY, NOW - DAY / 2, NOW + DAY)):
        await pool.execute(
            "INSERT INTO maintd.console_sessions (id_sha256, token_sha256, principal, csrf, created_at, expires_at)"
            " VALUES ($1, 'ab', 'ops', 'x', $2, $3)",
            bytes([n]),
            expires - DAY,
            expires,
        )

    result, _ = await prune(pool)

    kept = [r[0] for r in await pool.fetch("SELECT expires_at FROM maintd.console_sessions ORDER BY 1")]
    assert kept == [NOW - DAY / 2, NOW + DAY]
    assert result["tables"]["console_sessions"]["deleted"] == 2
