"""``cleanup_sessions`` against a real PostgreSQL: exact deletes, bounded batches, cancel, names, clock.

Most tests call the task with a fixed clock and watch every DELETE from the
database side: a statement trigger logs each statement's row count and
transaction, so batch bounds are observed, not taken from the task's word.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import structlog

from maintd.jobs.batch_size import FIRST_BATCH, LARGEST_BATCH, MAX_GROWTH
from maintd.jobs.batched_delete import RangeDelete
from maintd.jobs.cleanup_sessions import CleanupParams, CleanupTargetError, cleanup_sessions
from maintd.jobs.context import JobContext
from maintd.scheduler.config.model import ConfigError, parse_config
from maintd.scheduler.engine.runs import CANCEL_GRACE
from maintd.scheduler.store.run_store import RunStore
from maintd.testing import frozen_engine
from tests.configs import make_config
from tests.engines import OPS, StartEngine, run_to_end

pytestmark = pytest.mark.integration

NOW = datetime(2026, 5, 4, 3, 0, tzinfo=UTC)

# Logs each DELETE statement on a table: its row count and transaction.
STATEMENT_LOG = """
CREATE TABLE IF NOT EXISTS delete_log (id serial, txid bigint, rows int);
CREATE OR REPLACE FUNCTION log_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO delete_log (txid, rows) SELECT txid_current(), count(*) FROM gone;
    RETURN NULL;
END $$;
"""


def cleanup_job(params: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
    """A ``[jobs.cleanup]`` table; ``table`` defaults to ``sessions``."""
    params = {"table": "sessions", **(params or {})}
    return {"task": "cleanup_sessions", "schedule": "@yearly", "params": params, **options}


@pytest.fixture
async def pool(store: RunStore) -> asyncpg.Pool:
    return store.pool


async def make_sessions(
    pool: asyncpg.Pool,
    expiries: list[datetime | None],
    *,
    table: str = "sessions",
    column: str = "expires",
    index: bool = True,
) -> None:
    """A sessions table holding one row per expiry, ids in insertion order, every DELETE logged."""
    await pool.execute(STATEMENT_LOG)
    await pool.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, {column} timestamptz, data text)")
    if index:
        await pool.execute(f"CREATE INDEX ON {table} ({column})")
    await pool.execute(
        f"CREATE TRIGGER log_delete AFTER DELETE ON {table} REFERENCING OLD TABLE AS gone "
        "FOR EACH STATEMENT EXECUTE FUNCTION log_delete()"
    )
    await pool.execute(
        f"INSERT INTO {table} ({column}, data) SELECT e, 'payload' FROM unnest($1::timestamptz[]) e", expiries
    )


Progress = list[dict[str, Any]]


async def run_task(pool: asyncpg.Pool, now: datetime = NOW, **params: Any) -> tuple[dict[str, Any], Progress]:
    """Run the task directly, with its clock fixed at ``now``; return its result and progress reports."""
    reports: Progress = []

    async def record(progress: dict[str, Any]) -> None:
        reports.append(progress)

    ctx = JobContext(
        job_id="cleanup",
        run_id=1,
        scheduled_for=now,
        pool=pool,
        log=structlog.get_logger("test"),
        now=lambda: now,
        _progress=record,
    )
    result = await cleanup_sessions(ctx, CleanupParams.model_validate({"table": "sessions", **params}))
    return result, reports


async def remaining(pool: asyncpg.Pool, table: str = "sessions", column: str = "expires") -> list[datetime | None]:
    return [row[0] for row in await pool.fetch(f"SELECT {column} FROM {table} ORDER BY id")]


async def delete_log(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT txid, rows FROM delete_log ORDER BY id")


def seconds(*offsets: float) -> list[datetime]:
    return [NOW + timedelta(seconds=s) for s in offsets]


async def test_deletes_exactly_the_rows_expired_before_the_clock(pool: asyncpg.Pool) -> None:
    expired = seconds(*range(-300, 0))  # one a second, the last a second before the cutoff
    kept = [NOW, NOW + timedelta(microseconds=1), *seconds(*range(1, 200))]
    rows: list[datetime | None] = [*expired, *kept, None]  # NULL: never expires
    random.Random(3).shuffle(rows)  # in no particular physical order
    await make_sessions(pool, rows)

    result, _ = await run_task(pool)

    left = await remaining(pool)
    assert left.count(None) == 1
    assert sorted(e for e in left if e is not None) == kept
    assert (result["deleted"], result["batches"]) == (300, 1)
    assert result["cutoff"] == NOW.isoformat()
    assert result["table"] == '"sessions"'
    assert result["indexed"] is True
    assert 0 < result["longest_statement_ms"] <= result["longest_batch_ms"]


async def test_the_cutoff_is_the_daemons_clock_not_the_databases(pool: asyncpg.Pool) -> None:
    # By the database's clock every row here expired long ago.
    past = datetime(2020, 1, 1, tzinfo=UTC)
    await make_sessions(pool, [past - timedelta(days=1), past, past + timedelta(days=1)])
    result, _ = await run_task(pool, now=past)
    assert result["deleted"] == 1
    assert await remaining(pool) == [past, past + timedelta(days=1)]


@pytest.mark.parametrize(
    ("column_type", "values", "left"),
    [
        # Read as UTC, maintd's session time zone.
        ("timestamp", [NOW.replace(tzinfo=None) + timedelta(seconds=s) for s in (-1, 0, 1)], 2),
        # A date is its midnight: 2026-05-04 00:00 is before the cutoff at 03:00.
        ("date", [date(2026, 5, 3), date(2026, 5, 4), date(2026, 5, 5)], 1),
    ],
)
async def test_timestamp_and_date_expiry_columns(
    pool: asyncpg.Pool, column_type: str, values: list[datetime | date], left: int
) -> None:
    await pool.execute(f"CREATE TABLE sessions (expires {column_type}); CREATE INDEX ON sessions (expires)")
    await pool.execute(f"INSERT INTO sessions SELECT unnest($1::{column_type}[])", values)
    result, _ = await run_task(pool)
    assert await pool.fetchval("SELECT array_agg(expires ORDER BY expires) FROM sessions") == values[-left:]
    assert (result["deleted"], result["indexed"]) == (3 - left, True)


@pytest.mark.parametrize("column_type", ["timestamptz", "timestamp", "date"])
async def test_batch_bounds_are_read_from_the_index_whatever_the_column_type(
    pool: asyncpg.Pool, column_type: str
) -> None:
    await pool.execute(f"CREATE TABLE sessions (expires {column_type}); CREATE INDEX ON sessions (expires)")
    async with pool.acquire() as conn:
        # With these off, a bound the index cannot give shows as a sort of the whole range.
        await conn.execute("SET enable_seqscan = off; SET enable_sort = off")
        explained = await conn.fetch(f"EXPLAIN {RangeDelete.of('sessions', 'expires').next_bound}", None, NOW, 100)
    plan = "\n".join(row[0] for row in explained)
    assert "Index Only Scan" in plan and "Sort" not in plan, plan


async def test_every_batch_is_bounded_and_its_own_transaction(pool: asyncpg.Pool) -> None:
    await make_sessions(pool, seconds(*range(-1050, 0)) + seconds(*range(1, 11)))

    result, reports = await run_task(pool, batch_size=100)

    assert (result["deleted"], result["batches"]) == (1050, 11)
    log = await delete_log(pool)
    assert [row["rows"] for row in log] == [100] * 10 + [50]
    assert len({row["txid"] for row in log}) == 11
    assert reports == [{"deleted": min(100 * n, 1050), "batches": n} for n in range(1, 12)]
    assert len(await remaining(pool)) == 10


async def test_auto_batches_delete_exactly_the_expired_rows_growing_from_a_small_first_batch(
    pool: asyncpg.Pool,
) -> None:
    expired = seconds(*range(-20_000, 0))
    kept = [NOW, *seconds(*range(1, 300))]
    rows: list[datetime | None] = [*expired, *kept, None]
    random.Random(5).shuffle(rows)
    await make_sessions(pool, rows)

    result, reports = await run_task(pool, batch_size="auto", max_statement="2s")

    left = await remaining(pool)
    assert sorted(e for e in left if e is not None) == kept and left.count(None) == 1
    sizes = [row["rows"] for row in await delete_log(pool)]
    assert sum(sizes) == result["deleted"] == 20_000
    assert len(sizes) == result["batches"] == len(reports) > 1
    # Each batch its own transaction; the first one small, then at most MAX_GROWTH times the last.
    assert len({row["txid"] for row in await delete_log(pool)}) == len(sizes)
    assert sizes[0] == FIRST_BATCH
    assert all(b <= a * MAX_GROWTH for a, b in zip(sizes, sizes[1:-1], strict=False))
    assert max(sizes) <= result["largest_batch_size"] <= LARGEST_BATCH
    assert (result["batch_size"], result["max_statement_ms"]) == ("auto", 2000.0)
    assert 0 < result["longest_statement_ms"] <= result["longest_batch_ms"]


async def test_auto_batches_keep_each_statement_within_the_budget(pool: asyncpg.Pool) -> None:
    await make_sessions(pool, seconds(*range(-2000, 0)))
    # Each DELETE statement takes 0.2 ms a row: a budget of 20 ms holds 100 rows.
    await pool.execute("""
        CREATE FUNCTION slow_rows() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_sleep(0.0002 * (SELECT count(*) FROM gone)); RETURN NULL; END $$;
        CREATE TRIGGER slow_rows AFTER DELETE ON sessions REFERENCING OLD TABLE AS gone
        FOR EACH STATEMENT EXECUTE FUNCTION slow_rows();
    """)

    result, _ = await run_task(pool, batch_size="auto", max_statement="20ms")

    sizes = [row["rows"] for row in await delete_log(pool)]
    assert sum(sizes) == result["deleted"] == 2000
    # The first batch (FIRST_BATCH rows: 100 ms) is the only one over the budget; a slower
    # machine only makes the next ones smaller. They aim at half of it, 50 rows.
    assert sizes[0] == FIRST_BATCH
    assert max(sizes[1:]) <= 100
    assert max(sizes[1:]) >= 25, sizes
    assert result["last_batch_size"] <= 100


async def test_fixed_batch_size_reports_its_batches(pool: asyncpg.Pool) -> None:
    await make_sessions(pool, seconds(*range(-250, 0)))
    result, _ = await run_task(pool, batch_size=100)
    assert [row["rows"] for row in await delete_log(pool)] == [100, 100, 50]
    assert (result["batches"], result["largest_batch_size"], result["last_batch_size"]) == (3, 100, 100)
    assert result["batch_size"] == 100


async def test_equal_expiries_across_batch_boundaries_are_all_deleted_once(pool: asyncpg.Pool) -> None:
    # Runs of 7 equal values put batch ends inside runs; a run of 250 (more than a
    # batch) can only be split by row; then runs of 7 again after it.
    expired = [t for t in seconds(*range(-100, -50)) for _ in range(7)]
    expired += [NOW - timedelta(seconds=50)] * 250
    expired += [t for t in seconds(*range(-49, 0)) for _ in range(7)]
    kept = [NOW] * 120 + seconds(*range(1, 30))
    await make_sessions(pool, kept[:60] + expired + kept[60:])

    result, reports = await run_task(pool, batch_size=100)

    assert result["deleted"] == len(expired) == 943
    assert sorted(await remaining(pool)) == sorted(kept)
    log = await delete_log(pool)
    assert sum(row["rows"] for row in log) == 943
    assert max(row["rows"] for row in log) <= 100
    assert reports[-1] == {"deleted": 943, "batches": result["batches"]}


async def test_batches_walk_forward_and_never_rescan_from_the_start(pool: asyncpg.Pool) -> None:
    await make_sessions(pool, seconds(*range(-300, 0)))
    # The first batch slips in a row that expired long before everything else: behind
    # the moving bound, so the walk never comes back for it (the next run will).
    await pool.execute("""
        CREATE FUNCTION slip_in() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM sessions WHERE data = 'behind') THEN
                INSERT INTO sessions (expires, data) VALUES (timestamptz '2000-01-01', 'behind');
            END IF;
            RETURN NULL;
        END $$;
        CREATE TRIGGER slip_in AFTER DELETE ON sessions FOR EACH STATEMENT EXECUTE FUNCTION slip_in();
    """)

    result, _ = await run_task(pool, batch_size=100)

    assert (result["deleted"], result["batches"]) == (300, 3)
    assert await pool.fetchval("SELECT data FROM sessions") == "behind"
    second, _ = await run_task(pool, batch_size=100)
    assert second["deleted"] == 1


async def test_empty_table(pool: asyncpg.Pool) -> None:
    await make_sessions(pool, [])
    result, reports = await run_task(pool)
    assert (result["deleted"], result["batches"]) == (0, 1)
    assert reports == [{"deleted": 0, "batches": 1}]


async def test_without_an_index_still_correct_and_the_log_says_why_it_is_slow(
    pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    await make_sessions(pool, seconds(*range(-250, 0)) + seconds(*range(1, 51)), index=False)

    result, _ = await run_task(pool, batch_size=100)

    assert (result["deleted"], result["batches"], result["indexed"]) == (250, 3, False)
    assert len(await remaining(pool)) == 50
    assert "cleanup_unindexed" in caplog.text
    assert 'CREATE INDEX CONCURRENTLY ON "sessions" ("expires")' in caplog.text


async def test_an_indexed_table_logs_no_warning(pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture) -> None:
    await make_sessions(pool, seconds(-1))
    await run_task(pool)
    assert "cleanup_started" in caplog.text
    assert "cleanup_unindexed" not in caplog.text


@pytest.mark.parametrize(
    ("table", "column", "params"),
    [
        ('"app"."sessions"', '"expires"', {"table": "app.sessions"}),
        ('"App"."Sessions"', '"ExpiresAt"', {"table": "App.Sessions", "expires_column": "ExpiresAt"}),
    ],
)
async def test_schema_qualified_and_quoted_table(
    pool: asyncpg.Pool, table: str, column: str, params: dict[str, str]
) -> None:
    await pool.execute('CREATE SCHEMA app; CREATE SCHEMA "App"')
    await make_sessions(pool, seconds(-2, -1, 1), table=table, column=column)
    # A table of the same name in the search_path must be left alone.
    await pool.execute("CREATE TABLE public.sessions AS SELECT $1::timestamptz AS expires", NOW - timedelta(days=1))

    result, _ = await run_task(pool, **params)

    assert result["deleted"] == 2
    assert result["table"] == table
    assert await remaining(pool, table, column) == [NOW + timedelta(seconds=1)]
    assert await pool.fetchval("SELECT count(*) FROM public.sessions") == 1


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"table": "sessions; DROP TABLE x"}, "jobs.cleanup.params.table: must be a plain name"),
        ({"table": 'app."sessions"'}, "jobs.cleanup.params.table: must be a plain name"),
        ({"table": "a.b.c"}, "jobs.cleanup.params.table: must be a plain name"),
        ({"expires_column": "expires < now() OR true"}, "jobs.cleanup.params.expires_column: must be a plain name"),
        ({"batch_size": -5}, 'jobs.cleanup.params.batch_size: must be "auto" or a whole number of rows of at least 1'),
        ({"batch_size": 0}, 'jobs.cleanup.params.batch_size: must be "auto" or a whole number of rows of at least 1'),
        ({"batch_size": "big"}, 'jobs.cleanup.params.batch_size: must be "auto" or a whole number'),
        ({"batch_size": 1.5}, 'jobs.cleanup.params.batch_size: must be "auto" or a whole number'),
        ({"max_statement": "50"}, "jobs.cleanup.params.max_statement: invalid duration '50'"),
        ({"max_statement": 50}, "jobs.cleanup.params.max_statement: expected a duration string such as '50ms'"),
        ({"max_statement": "0ms"}, "jobs.cleanup.params.max_statement: must be longer than 0ms and at most 10s"),
        ({"max_statement": "1m"}, "jobs.cleanup.params.max_statement: must be longer than 0ms and at most 10s"),
        ({"tabel": "sessions"}, "jobs.cleanup.params.tabel: unknown key"),
    ],
)
def test_bad_params_are_config_errors_naming_the_key(params: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"jobs": {"cleanup": cleanup_job(params)}})
    assert any(line.startswith(problem) for line in error.value.problems), error.value.problems


def test_good_params_load_with_their_defaults() -> None:
    config = parse_config({"jobs": {"cleanup": cleanup_job({"table": "app.sessions"})}})
    defaults = CleanupParams(
        table="app.sessions", expires_column="expires", batch_size="auto", max_statement=timedelta(milliseconds=50)
    )
    assert config.jobs["cleanup"].params == defaults


@pytest.mark.parametrize(
    ("params", "spelled"),
    [
        ({"batch_size": 500, "max_statement": "0.2s"}, {"batch_size": 500, "max_statement": "200ms"}),
        ({"max_statement": "2s"}, {"batch_size": "auto", "max_statement": "2s"}),
    ],
)
def test_params_stored_with_a_run_read_back_the_same(params: dict[str, Any], spelled: dict[str, Any]) -> None:
    # A run keeps its effective params as JSON; a rerun validates them again.
    loaded = CleanupParams.model_validate({"table": "sessions", **params})
    stored = loaded.model_dump(mode="json")
    assert stored == {"table": "sessions", "expires_column": "expires", **spelled}
    assert CleanupParams.model_validate(stored) == loaded


@pytest.mark.parametrize(
    ("setup", "params", "message"),
    [
        ("", {"table": "app.sessions"}, 'table "app"."sessions": does not exist (search_path: "$user", public)'),
        ("CREATE TABLE sessions (expires_at timestamptz)", {}, 'table "sessions": has no column "expires"'),
        (
            "CREATE TABLE sessions (expires bigint)",
            {},
            'table "sessions": column "expires" is bigint, expected one of: timestamp with time zone',
        ),
    ],
)
async def test_unusable_table_fails_the_run_with_a_clear_message(
    start_engine: StartEngine, pool: asyncpg.Pool, setup: str, params: dict[str, str], message: str
) -> None:
    if setup:
        await pool.execute(setup)
    run = await run_to_end(await start_engine(make_config({"cleanup": cleanup_job(params)})), "cleanup")
    assert run.status == "failed"
    assert f"CleanupTargetError: {message}" in (run.error or "")


async def test_direct_call_raises_the_error_with_its_data(pool: asyncpg.Pool) -> None:
    with pytest.raises(CleanupTargetError) as error:
        await run_task(pool, table="nope")
    assert (error.value.table, error.value.problem) == ('"nope"', 'does not exist (search_path: "$user", public)')


async def test_cancel_between_batches_leaves_a_consistent_table(start_engine: StartEngine, pool: asyncpg.Pool) -> None:
    await make_sessions(pool, seconds(*range(-5000, 0)) + seconds(*range(1, 101)))
    # Each DELETE statement takes 50 ms: the 50 batches would outlast the cancel's grace period.
    await pool.execute("""
        CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.05); RETURN NULL; END $$;
        CREATE TRIGGER slow AFTER DELETE ON sessions FOR EACH STATEMENT EXECUTE FUNCTION slow();
    """)
    daemon = await start_engine(make_config({"cleanup": cleanup_job({"batch_size": 100})}))
    started = await daemon.admin.trigger("cleanup", OPS)
    while (await daemon.admin.get_run(started.run_id)).progress is None:
        await asyncio.sleep(0.01)
    await daemon.admin.cancel_run(started.run_id, OPS)
    await daemon.idle()

    run = await daemon.admin.get_run(started.run_id)
    assert (run.status, run.error) == ("cancelled", "cancelled by ops")
    # Stopped at its next check between batches, not interrupted after the grace period.
    assert run.duration_s is not None and run.duration_s < CANCEL_GRACE.total_seconds()
    assert run.progress is not None
    deleted = run.progress["deleted"]
    assert 0 < deleted < 5000
    assert deleted == 100 * run.progress["batches"]
    # Whole batches only: what the run reported deleted is gone, the rest is all there.
    assert len(await remaining(pool)) == 5100 - deleted
    assert sum(row["rows"] for row in await delete_log(pool)) == deleted
    assert await pool.fetchval("SELECT count(*) FROM sessions WHERE expires > $1", NOW) == 100


BERLIN = "Europe/Berlin"


@pytest.mark.parametrize(
    ("frozen_at", "midnight"),
    [
        ("2026-06-14T23:59:59+02:00", "2026-06-15T00:00:00+02:00"),
        ("2026-03-28T23:59:59+01:00", "2026-03-29T00:00:00+01:00"),  # the night before the spring-forward day
        ("2026-10-24T23:59:59+02:00", "2026-10-25T00:00:00+02:00"),  # the night before the fall-back day
    ],
)
async def test_nightly_cleanup_fires_once_at_midnight_with_the_frozen_cutoff(
    pool: asyncpg.Pool, db_dsn: str, frozen_at: str, midnight: str
) -> None:
    fire = datetime.fromisoformat(midnight)
    tick = timedelta(microseconds=1)
    # Expired means before the frozen midnight, whatever the real clock or the database's says.
    await make_sessions(pool, [fire - timedelta(hours=1), fire - tick, fire, fire + tick, fire + timedelta(hours=1)])
    config = make_config({"cleanup": cleanup_job({"batch_size": 1}, schedule="0 0 * * *", timezone=BERLIN)})

    async with frozen_engine(config, dsn=db_dsn, at=frozen_at) as daemon:
        await daemon.advance(timedelta(seconds=1))
        await daemon.advance(timedelta(hours=1))
        runs = await daemon.runs("cleanup")

    assert [(r.trigger, r.status, r.scheduled_for) for r in runs] == [("schedule", "succeeded", fire)]
    assert runs[0].result is not None
    assert datetime.fromisoformat(runs[0].result["cutoff"]) == fire
    assert runs[0].result["deleted"] == 2
    assert await remaining(pool) == [fire, fire + tick, fire + timedelta(hours=1)]
