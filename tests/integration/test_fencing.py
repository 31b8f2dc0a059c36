"""Fencing: a replica whose lease on a run ran out never writes over what the cluster decided.

Each test makes the owner lose its lease in a chosen way (its loop blocked past the
lease, the run reaped while it could not beat, its pool held by its own jobs) and
checks the record: ``lost`` stays ``lost``, the owner's outcome comes beside it as
``late_outcome``, and the run is stopped at once.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
import structlog

from maintd.jobs import JobContext, LeaseLost
from maintd.jobs.cleanup_sessions import CleanupParams, cleanup_sessions
from maintd.scheduler.engine import Engine
from maintd.scheduler.store.run_store import RunStore, create_pool
from tests.configs import make_config, sleep_job, sql_job
from tests.engines import OPS, StartEngine, beat

pytestmark = pytest.mark.integration


def block_job(seconds: float) -> dict[str, object]:
    return {"task": "tests.tasks:block", "schedule": "@yearly", "params": {"seconds": seconds}}


async def test_a_run_that_blocked_the_loop_past_its_lease_stays_lost_with_its_outcome_beside_it(
    start_engine: StartEngine, caplog: pytest.LogCaptureFixture
) -> None:
    engine = await start_engine(make_config({"wedge": block_job(1.6)}, scheduler={"lease": "1s"}))
    started = await engine.admin.trigger("wedge", OPS)
    await asyncio.wait_for(engine.idle(), 10)
    run = await engine.admin.get_run(started.run_id)
    # No beat could go out for 1.6 s: the replica gives the run up before writing its outcome.
    assert run.status == "lost", run
    assert "had no heartbeat confirmed" in (run.error or "")
    assert run.late_outcome is not None and run.late_outcome.status == "succeeded"
    assert run.result is None and run.late_outcome.result == {"blocked": 1.6}
    assert "run_outcome_after_lease" in caplog.text


async def test_a_run_declared_lost_elsewhere_is_cancelled_at_its_owners_next_beat(
    start_engine: StartEngine, store: RunStore, caplog: pytest.LogCaptureFixture
) -> None:
    engine = await start_engine(make_config({"slow": sleep_job(60)}))
    started = await engine.admin.trigger("slow", OPS)
    # Another replica's reaper, while this one could not beat (a partition, a long pause).
    await store.pool.execute(
        "UPDATE maintd.runs SET status = 'lost', finished_at = now(), error = 'lost: reaped' WHERE id = $1",
        started.run_id,
    )
    await beat(engine)
    await asyncio.wait_for(engine.idle(), 5)  # at once, not after the job's 60 s
    run = await engine.admin.get_run(started.run_id)
    assert (run.status, run.error) == ("lost", "lost: reaped")
    assert run.late_outcome is not None and run.late_outcome.status == "cancelled"
    assert "declared lost" in (run.late_outcome.error or "")
    assert "sleep_cleanup_ran" in caplog.text and "lease_lost" in caplog.text


async def test_raise_if_cancelled_fires_once_the_lease_ran_out(start_engine: StartEngine) -> None:
    engine = await start_engine(
        make_config({"steps": sleep_job(60, params={"cooperative": True})}, scheduler={"lease": "1s"})
    )
    started = await engine.admin.trigger("steps", OPS)
    await asyncio.sleep(0.1)
    time.sleep(1.3)  # the loop (this test shares it) is blocked past the lease: no beat goes out
    await asyncio.wait_for(engine.idle(), 5)
    run = await engine.admin.get_run(started.run_id)
    assert run.status == "lost"
    assert run.late_outcome is not None and run.late_outcome.status == "cancelled"
    assert "had no heartbeat confirmed" in (run.late_outcome.error or "")


async def test_a_busy_replica_keeps_its_lease_while_its_jobs_hold_every_pooled_connection(
    store: RunStore, start_engine: StartEngine
) -> None:
    config = make_config(
        {f"hog{i}": sql_job("SELECT pg_sleep(2.5)", overlap="allow") for i in range(2)},
        scheduler={"lease": "1s"},
        database={"pool_size": 2},
    )
    pool = await create_pool(store.dsn, max_size=2)
    busy_store = RunStore(pool, store.dsn)
    busy = Engine(config, busy_store, node="busy")
    await busy.start()
    try:
        await start_engine(config, node="reaper")  # beats (and reaps) every 1/3 s
        runs = [await busy.admin.trigger(f"hog{i}", OPS) for i in range(2)]
        await asyncio.wait_for(busy.idle(), 10)
        ended = [await busy.admin.get_run(run.run_id) for run in runs]
        assert [(run.status, run.late_outcome) for run in ended] == [("succeeded", None)] * 2
    finally:
        await busy.stop(timedelta(seconds=1))
        await busy_store.close()
        await pool.close()


async def test_cleanup_deletes_nothing_once_its_run_was_declared_lost(store: RunStore) -> None:
    await store.pool.execute("CREATE TABLE sessions (id int, expires timestamptz)")
    await store.pool.execute(
        "INSERT INTO sessions SELECT i, '2026-01-01'::timestamptz + i * interval '1 minute' FROM generate_series(1, 50) i"
    )
    run_id = await store.pool.fetchval(
        """INSERT INTO maintd.runs (job_id, trigger, status, scheduled_for, exclusive, started_at, finished_at, node)
           VALUES ('cleanup', 'schedule', 'lost', now(), true, now(), now(), 'frozen') RETURNING id"""
    )
    late = datetime(2027, 1, 1, tzinfo=UTC)  # every row has expired
    log = structlog.get_logger("test")
    ctx = JobContext(job_id="cleanup", run_id=run_id, scheduled_for=late, pool=store.pool, log=log, now=lambda: late)
    with pytest.raises(LeaseLost):
        await cleanup_sessions(ctx, CleanupParams(table="sessions", batch_size=10))
    assert await store.pool.fetchval("SELECT count(*) FROM sessions") == 50


async def test_a_replica_restarted_under_its_node_name_ends_what_its_previous_process_left_running(
    start_engine: StartEngine, store: RunStore
) -> None:
    # The previous process under this name claimed a fire ahead and ran a job, then died a moment ago:
    # their heartbeats are fresh, so any other replica would wait a lease before ending them.
    left = await store.pool.fetch(
        """INSERT INTO maintd.runs (job_id, trigger, status, scheduled_for, exclusive, started_at, heartbeat_at, node)
           VALUES ('slow', 'manual', 'running', now(), true, now(), now(), 'stable'),
                  ('tick', 'schedule', 'running', now() + interval '1 s', true, NULL, now(), 'stable')
           RETURNING id"""
    )
    config = make_config({"slow": sleep_job(60), "tick": sql_job(schedule="@yearly")})
    await start_engine(config, node="stable")
    ended = {run.id: (run.status, run.error) for run in [await store.get_run(row["id"]) for row in left] if run}
    assert [status for status, _ in ended.values()] == ["lost", "missed"]
    assert all("node stable restarted" in (error or "") for _, error in ended.values())
