"""What an operator asks of a run by hand, on the real engine and PostgreSQL: params for
one run, a reason, a dry run, an Idempotency-Key (also two requests at once on two
replicas), a rerun, and a replay of the fires a job missed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from maintd.admin_api.interface import (
    DryRunRefused,
    IdempotencyKeyReused,
    JobBusy,
    ParamsRefused,
    ReasonRequired,
    ReplayIn,
    RerunIn,
    TooManyFires,
    TriggerIn,
)
from maintd.scheduler.config.model import Config
from maintd.scheduler.engine import Engine
from maintd.scheduler.store.run_store import RunStore, create_pool
from tests.configs import make_config, sql_job
from tests.engines import OPS, StartEngine
from tests.tasks import GATES

pytestmark = pytest.mark.integration


@pytest.fixture
def gate() -> str:
    """A gate of the test's own, open at the end whatever happened."""
    name = f"gate-{uuid.uuid4().hex[:8]}"
    GATES[name] = asyncio.Event()
    yield name  # type: ignore[misc]
    GATES.pop(name).set()


def config(gate: str, **admin: Any) -> Config:
    jobs = {
        "gated": {"task": "tests.tasks:dry_gate", "schedule": "@yearly", "params": {"gate": gate}},
        "cleanup": {
            "task": "cleanup_sessions",
            "schedule": "@yearly",
            "params": {"table": "sessions", "batch_size": 1000},
        },
        "statement": sql_job("DELETE FROM items WHERE id > 5", schedule="@yearly"),
        "vacuum": sql_job("VACUUM items", schedule="@yearly"),
        "prune": {"task": "prune_history", "schedule": "@yearly"},
    }
    return make_config(jobs, **({"admin": admin} if admin else {}))


async def ended(engine: Engine, run_id: int) -> Any:
    await engine.idle()
    return await engine.admin.get_run(run_id)


@pytest.fixture
async def tables(store: RunStore) -> None:
    await store.pool.execute(
        """
        CREATE TABLE sessions (id bigint GENERATED ALWAYS AS IDENTITY, expires timestamptz);
        CREATE INDEX ON sessions (expires);
        INSERT INTO sessions (expires) SELECT now() - interval '1 day' FROM generate_series(1, 1500);
        INSERT INTO sessions (expires) SELECT now() + interval '1 day' FROM generate_series(1, 300);
        CREATE TABLE items (id int);
        INSERT INTO items SELECT generate_series(1, 10);
        """
    )


# -- params ----------------------------------------------------------------------------


async def test_params_given_for_one_run_are_merged_over_the_config_and_kept_on_it(
    start_engine: StartEngine, store: RunStore, tables: None
) -> None:
    engine = await start_engine(config("unused"))
    started = await engine.admin.trigger(
        "cleanup", OPS, TriggerIn(params={"batch_size": 500}, reason="lock storm last night")
    )
    run = await ended(engine, started.run_id)
    assert run.status == "succeeded"
    assert run.result["deleted"] == 1500 and run.result["batch_size"] == 500
    assert run.result["largest_batch_size"] == 500
    assert run.params == {"batch_size": 500, "max_statement": "50ms", "table": "sessions", "expires_column": "expires"}
    assert (run.reason, run.dry_run, run.rerun_of, run.trigger) == ("lock storm last night", False, None, "manual")
    [audit] = [entry for entry in await engine.admin.list_audit(limit=10) if entry.action == "trigger"]
    assert (audit.principal, audit.client, audit.target) == ("ops", "10.0.0.7", "cleanup")
    assert audit.detail == {"run_id": run.id, "reason": "lock storm last night", "params": {"batch_size": 500}}
    # Without a body, the configured params; a scheduled run records its config's too.
    plain = await ended(engine, (await engine.admin.trigger("cleanup", OPS)).run_id)
    assert plain.params["batch_size"] == 1000 and plain.reason is None


@pytest.mark.parametrize(
    ("job_id", "params", "loc", "message"),
    [
        ("cleanup", {"batch_size": 0}, ["body", "params", "batch_size"], "params.batch_size: Value error, must be"),
        ("cleanup", {"batch_size": "lots"}, ["body", "params", "batch_size"], "params.batch_size: "),
        ("cleanup", {"table": "users"}, ["body", "params", "table"], "params.table: task 'cleanup_sessions' lets no"),
        ("cleanup", {"colour": 1}, ["body", "params", "colour"], "params.colour: task 'cleanup_sessions' has no"),
        ("statement", {"sql": "DROP TABLE items"}, ["body", "params", "sql"], "params.sql: task 'sql' lets no run"),
    ],
)
async def test_params_the_task_refuses_are_a_422_naming_the_field_and_nothing_runs(
    start_engine: StartEngine, store: RunStore, job_id: str, params: dict[str, Any], loc: list[str], message: str
) -> None:
    engine = await start_engine(config("unused"))
    with pytest.raises(ParamsRefused) as refused:
        await engine.admin.trigger(job_id, OPS, TriggerIn(params=params))
    [error] = refused.value.errors
    assert error["loc"] == loc and error["msg"].startswith(message), error
    assert await store.list_runs(job_id=None, status=None, limit=10) == []


async def test_require_reason_refuses_a_trigger_without_one(start_engine: StartEngine, store: RunStore) -> None:
    engine = await start_engine(config("unused", require_reason=True))
    for request in (None, TriggerIn(reason="  ")):
        with pytest.raises(ReasonRequired):
            await engine.admin.trigger("statement", OPS, request)
    assert await store.list_runs(job_id=None, status=None, limit=10) == []


# -- dry runs --------------------------------------------------------------------------


async def test_a_dry_run_cleanup_counts_with_the_same_cutoff_and_deletes_nothing(
    start_engine: StartEngine, store: RunStore, tables: None
) -> None:
    engine = await start_engine(config("unused"))
    run = await ended(engine, (await engine.admin.trigger("cleanup", OPS, TriggerIn(dry_run=True))).run_id)
    assert run.status == "succeeded" and run.dry_run is True
    assert run.result["dry_run"] is True and run.result["would_delete"] == 1500 and run.result["indexed"] is True
    assert await store.pool.fetchval("SELECT count(*) FROM sessions") == 1800
    # No success for the dead-man's switch, and the job's state is as before it.
    assert await store.last_successes(["cleanup"]) == {}
    assert (await engine.admin.get_job("cleanup")).last_success_at is None


async def test_a_dry_run_sql_statement_is_rolled_back_with_its_row_count(
    start_engine: StartEngine, store: RunStore, tables: None
) -> None:
    engine = await start_engine(config("unused"))
    run = await ended(engine, (await engine.admin.trigger("statement", OPS, TriggerIn(dry_run=True))).run_id)
    assert run.status == "succeeded", run.error
    assert run.result == {"dry_run": True, "status": "DELETE 5", "rows": 5, "rolled_back": True}
    assert await store.pool.fetchval("SELECT count(*) FROM items") == 10


@pytest.mark.parametrize(
    ("job_id", "why"),
    [
        ("vacuum", "VACUUM cannot run inside a transaction that is rolled back"),
        ("prune", "task 'prune_history' does not support dry runs"),
    ],
)
async def test_a_dry_run_the_task_cannot_do_is_a_422(
    start_engine: StartEngine, store: RunStore, job_id: str, why: str
) -> None:
    engine = await start_engine(config("unused"))
    with pytest.raises(DryRunRefused) as refused:
        await engine.admin.trigger(job_id, OPS, TriggerIn(dry_run=True))
    assert refused.value.why == why
    assert refused.value.errors[0]["loc"] == ["body", "dry_run"]
    assert await store.list_runs(job_id=None, status=None, limit=10) == []


async def test_a_dry_run_takes_the_overlap_lock(start_engine: StartEngine, gate: str) -> None:
    engine = await start_engine(config(gate))
    dry = await engine.admin.trigger("gated", OPS, TriggerIn(dry_run=True, params={"label": "preview"}))
    with pytest.raises(JobBusy):
        await engine.admin.trigger("gated", OPS)
    GATES[gate].set()
    run = await ended(engine, dry.run_id)
    assert run.dry_run is True and run.result["dry_run"] is True and run.result["label"] == "preview"


# -- Idempotency-Key ---------------------------------------------------------------------


async def test_the_same_key_and_body_answer_the_first_run_and_another_body_is_a_422(
    start_engine: StartEngine, store: RunStore, gate: str
) -> None:
    engine = await start_engine(config(gate))
    body = TriggerIn(params={"label": "once"}, reason="double click")
    first = await engine.admin.trigger("gated", OPS, body, idempotency_key="click-1")
    again = await engine.admin.trigger("gated", OPS, body, idempotency_key="click-1")
    assert (again.run_id, again.repeated, first.repeated) == (first.run_id, True, False)
    with pytest.raises(IdempotencyKeyReused):
        await engine.admin.trigger("gated", OPS, TriggerIn(params={"label": "twice"}), idempotency_key="click-1")
    GATES[gate].set()
    await engine.idle()
    # After the run ended: still the same run, now succeeded; no body is "{}", another body.
    repeated = await engine.admin.trigger("gated", OPS, body, idempotency_key="click-1")
    assert (repeated.run_id, repeated.status) == (first.run_id, "succeeded")
    assert len(await store.list_runs(job_id="gated", status=None, limit=10)) == 1


async def test_a_refused_request_does_not_use_its_key(start_engine: StartEngine, store: RunStore, gate: str) -> None:
    engine = await start_engine(config(gate))
    busy = await engine.admin.trigger("gated", OPS)
    with pytest.raises(JobBusy):
        await engine.admin.trigger("gated", OPS, idempotency_key="retry-me")
    with pytest.raises(ParamsRefused):
        await engine.admin.trigger("gated", OPS, TriggerIn(params={"limit": "x"}), idempotency_key="retry-me")
    GATES[gate].set()
    await engine.idle()
    GATES[gate] = asyncio.Event()
    later = await engine.admin.trigger("gated", OPS, idempotency_key="retry-me")
    assert later.run_id != busy.run_id and not later.repeated
    GATES[gate].set()


@pytest.fixture
async def second_replica(db_dsn: str, gate: str) -> AsyncIterator[Engine]:
    """A second replica with a pool of its own, on the same database."""
    pool = await create_pool(db_dsn, max_size=3)
    store = RunStore(pool, db_dsn)
    engine = Engine(config(gate), store, node="node-b")
    await engine.start()
    yield engine
    GATES[gate].set()
    await engine.stop(timedelta(seconds=5))
    await store.close()
    await pool.close()


async def waiting_on_a_lock(conn: asyncpg.Connection, statement: str) -> None:
    """Until a backend of this database running ``statement`` (a fragment of it) waits for a lock:
    PostgreSQL reports it in pg_stat_activity, and nothing else tells a test."""
    query = """
        SELECT count(*) FROM pg_stat_activity
        WHERE datname = current_database() AND wait_event_type = 'Lock' AND strpos(query, $1) > 0
    """
    while await conn.fetchval(query, statement) == 0:
        await asyncio.sleep(0.01)


async def test_two_requests_with_one_key_at_once_on_two_replicas_start_one_run(
    start_engine: StartEngine, store: RunStore, second_replica: Engine, gate: str, db_dsn: str
) -> None:
    first = await start_engine(config(gate))
    body = TriggerIn(params={"label": "race"})
    blocker, watcher = await asyncpg.connect(db_dsn), await asyncpg.connect(db_dsn)
    try:
        # Hold every new run back: replica A takes the key and waits at its claim with the
        # key's row uncommitted; replica B then waits for A's key row. Both are seen waiting
        # (from a connection of its own: a transaction sees pg_stat_activity as it first read it).
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute("LOCK TABLE maintd.runs IN SHARE MODE")
        on_a = asyncio.create_task(first.admin.trigger("gated", OPS, body, idempotency_key="race"))
        await waiting_on_a_lock(watcher, "INSERT INTO maintd.runs")
        on_b = asyncio.create_task(second_replica.admin.trigger("gated", OPS, body, idempotency_key="race"))
        await waiting_on_a_lock(watcher, "INSERT INTO maintd.idempotency_keys")
        await transaction.rollback()
        a, b = await asyncio.gather(on_a, on_b)
    finally:
        await blocker.close()
        await watcher.close()
    assert a.run_id == b.run_id and (a.repeated, b.repeated) == (False, True)
    runs = await store.list_runs(job_id="gated", status=None, limit=10)
    assert [run.id for run in runs] == [a.run_id] and runs[0].node == "node-a"


# -- rerun -----------------------------------------------------------------------------------


async def test_a_rerun_takes_the_runs_overrides_dry_run_and_reason(start_engine: StartEngine, gate: str) -> None:
    engine = await start_engine(config(gate))
    original = await engine.admin.trigger(
        "gated", OPS, TriggerIn(params={"label": "special"}, reason="check", dry_run=True)
    )
    with pytest.raises(JobBusy):  # as a trigger: the job forbids overlap
        await engine.admin.rerun(original.run_id, OPS)
    GATES[gate].set()
    await engine.idle()
    again = await ended(engine, (await engine.admin.rerun(original.run_id, OPS)).run_id)
    assert (again.rerun_of, again.reason, again.dry_run, again.trigger) == (original.run_id, "check", True, "manual")
    assert again.result["label"] == "special" and again.result["limit"] == 10
    real = await ended(
        engine, (await engine.admin.rerun(original.run_id, OPS, RerunIn(dry_run=False, reason="now"))).run_id
    )
    assert (real.dry_run, real.reason, real.result["dry_run"]) == (False, "now", False)
    audit = [entry for entry in await engine.admin.list_audit(limit=10) if entry.action == "rerun"]
    assert [entry.target for entry in audit] == [f"run:{original.run_id}"] * 2


# -- replay -----------------------------------------------------------------------------------

DAY = timedelta(days=1)
WEEK_START = datetime(2026, 5, 4, 7, 0, tzinfo=UTC)


async def record(store: RunStore, job_id: str, fire: datetime, status: str, attempt: int = 1) -> None:
    """A fire of the past as the engine would have recorded it."""
    await store.pool.execute(
        """
        INSERT INTO maintd.runs (job_id, trigger, status, scheduled_for, attempt, exclusive, started_at,
                                 finished_at, node, error)
        VALUES ($1, CASE WHEN $4::int = 1 THEN 'schedule' ELSE 'catch_up' END, $3::text, $2::timestamptz, $4::int,
                true, CASE WHEN $3::text IN ('missed', 'skipped') THEN NULL ELSE $2::timestamptz END,
                $2::timestamptz + interval '1 minute', 'old', NULL)
        """,
        job_id,
        fire,
        status,
        attempt,
    )


async def test_a_replay_runs_each_fire_that_never_succeeded_one_after_another_for_its_own_time(
    start_engine: StartEngine, store: RunStore, gate: str
) -> None:
    engine = await start_engine(config(gate))
    fires = [WEEK_START + n * DAY for n in range(7)]
    for fire, status in zip(
        fires, ["succeeded", "missed", "succeeded", "failed", "skipped", "succeeded", "missed"], strict=True
    ):
        await record(store, "gated", fire, status)
    await record(store, "gated", fires[6], "succeeded", attempt=2)  # caught up: covered
    window = ReplayIn.model_validate({"from": fires[0].isoformat(), "to": fires[-1].isoformat()})

    listed = await engine.admin.replay("gated", OPS, window.model_copy(update={"dry_run": True}))
    assert listed.fires == [fires[1], fires[3], fires[4]] and listed.dry_run
    assert await store.running_counts() == {}

    started = await engine.admin.replay("gated", OPS, window.model_copy(update={"reason": "outage"}))
    assert started.fires == [fires[1], fires[3], fires[4]] and not started.dry_run
    # One after another: one replay run at a time.
    GATES[gate].set()
    await engine.idle()
    replays = sorted(
        (run for run in await store.list_runs(job_id="gated", status=None, limit=50) if run.trigger == "replay"),
        key=lambda run: run.id,
    )
    assert [(run.scheduled_for, run.status, run.reason) for run in replays] == [
        (fire, "succeeded", "outage") for fire in started.fires
    ]
    assert [run.result["for"] for run in replays] == [fire.isoformat() for fire in started.fires]
    assert all(a.finished_at <= b.started_at for a, b in zip(replays, replays[1:], strict=False))
    # Covered now: a second replay of the range has nothing to run.
    assert (await engine.admin.replay("gated", OPS, window)).fires == []
    [audit, *_] = [entry for entry in await engine.admin.list_audit(limit=10) if entry.action == "replay"]
    assert audit.detail is not None and audit.detail["fires"] == 0 and audit.client == "10.0.0.7"


async def test_what_a_stop_interrupts_stays_replayable(db_dsn: str, store: RunStore, gate: str) -> None:
    fires = [WEEK_START + n * DAY for n in range(3)]
    for fire in fires:
        await record(store, "gated", fire, "missed")
    engine = Engine(config(gate), store, node="node-a")
    await engine.start()
    window = ReplayIn.model_validate({"from": fires[0].isoformat(), "to": fires[-1].isoformat()})
    await engine.admin.replay("gated", OPS, window)
    while not await store.running_counts():  # the first replay run has started
        await asyncio.sleep(0.01)
    await engine.stop(timedelta(0))  # its run is cancelled, the others never start
    again = Engine(config(gate), store, node="node-a")
    await again.start()
    try:
        assert (await again.admin.replay("gated", OPS, window.model_copy(update={"dry_run": True}))).fires == fires
    finally:
        await again.stop(timedelta(0))


async def test_a_replay_of_more_than_1000_fires_is_a_422(start_engine: StartEngine, store: RunStore) -> None:
    engine = await start_engine(config("unused"))
    await store.pool.execute(
        """
        INSERT INTO maintd.runs (job_id, trigger, status, scheduled_for, exclusive, finished_at, node)
        SELECT 'gated', 'schedule', 'missed', t, false, t, 'old'
        FROM generate_series('2026-01-01'::timestamptz, '2026-01-01'::timestamptz + interval '1000 minutes',
                             interval '1 minute') AS t
        """
    )
    window = ReplayIn.model_validate({"from": "2026-01-01T00:00:00+00:00", "to": "2026-01-02T00:00:00+00:00"})
    with pytest.raises(TooManyFires):
        await engine.admin.replay("gated", OPS, window)
    shorter = window.model_copy(update={"to": datetime(2026, 1, 1, 16, 39, tzinfo=UTC), "dry_run": True})
    assert len((await engine.admin.replay("gated", OPS, shorter)).fires) == 1000
