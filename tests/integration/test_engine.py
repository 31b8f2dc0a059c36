"""The engine against a real PostgreSQL: runs, failures, timeouts, overlap, pause, cancel, audit, drain."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from maintd.admin_api.interface import Actor, JobBusy, JobNotFound, RunEnded, RunNotFound
from maintd.scheduler.engine import Engine
from maintd.scheduler.store.run_store import RunStore
from tests.configs import make_config, sleep_job, sql_job
from tests.engines import OPS, StartEngine, beat

pytestmark = pytest.mark.integration


async def test_manual_sql_run_succeeds_with_row_count(start_engine: StartEngine) -> None:
    engine = await start_engine(
        make_config(
            {
                "make": sql_job("CREATE TABLE t AS SELECT g FROM generate_series(1, 5) g"),
                "purge": sql_job("DELETE FROM t WHERE g > 2"),
            }
        )
    )
    await engine.admin.trigger("make", OPS)
    await engine.idle()
    started = await engine.admin.trigger("purge", OPS)
    assert started.status == "running"
    await engine.idle()

    run = await engine.admin.get_run(started.run_id)
    assert run.status == "succeeded"
    assert run.result == {"status": "DELETE 3", "rows": 3}
    assert run.trigger == "manual"
    assert run.triggered_by == "ops"
    assert run.node == "node-a"
    assert run.duration_s is not None and run.duration_s >= 0
    job = await engine.admin.get_job("purge")
    assert job.last_run is not None and job.last_run.id == run.id
    assert job.running is False


async def test_failing_job_is_recorded_with_traceback_and_daemon_goes_on(start_engine: StartEngine) -> None:
    engine = await start_engine(
        make_config(
            {
                "bad": {"task": "tests.tasks:fail", "schedule": "@daily", "params": {"message": "disk on fire"}},
                "good": sql_job(),
            }
        )
    )
    failed = await engine.admin.trigger("bad", OPS)
    await engine.idle()
    run = await engine.admin.get_run(failed.run_id)
    assert run.status == "failed"
    assert run.error is not None
    assert "Traceback" in run.error and "RuntimeError: disk on fire" in run.error
    ok = await engine.admin.trigger("good", OPS)
    await engine.idle()
    assert (await engine.admin.get_run(ok.run_id)).status == "succeeded"
    assert engine.metrics.job("bad").runs["failed"].value == 1


async def test_bad_sql_fails_with_the_server_message(start_engine: StartEngine) -> None:
    engine = await start_engine(make_config({"typo": sql_job("DELETE FROM no_such_table")}))
    started = await engine.admin.trigger("typo", OPS)
    await engine.idle()
    run = await engine.admin.get_run(started.run_id)
    assert run.status == "failed"
    assert 'relation "no_such_table" does not exist' in (run.error or "")


async def test_timeout_ends_run_as_timed_out(start_engine: StartEngine) -> None:
    engine = await start_engine(make_config({"slow": sleep_job(30, timeout="200ms")}))
    started = await engine.admin.trigger("slow", OPS)
    await engine.idle()
    run = await engine.admin.get_run(started.run_id)
    assert run.status == "timed_out"
    assert run.error == "timed out after 200ms"
    assert run.duration_s is not None and run.duration_s < 5


async def test_sql_statement_is_cancelled_on_the_server_at_timeout(start_engine: StartEngine, store: RunStore) -> None:
    engine = await start_engine(make_config({"long": sql_job("SELECT pg_sleep(30)", timeout="300ms")}))
    started = await engine.admin.trigger("long", OPS)
    await engine.idle()
    assert (await engine.admin.get_run(started.run_id)).status == "timed_out"
    busy = await store.pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'"
    )
    assert busy == 0


async def test_overlap_forbid_refuses_second_trigger(start_engine: StartEngine) -> None:
    engine = await start_engine(make_config({"slow": sleep_job(30, params={"cooperative": True})}))
    first = await engine.admin.trigger("slow", OPS)
    with pytest.raises(JobBusy) as busy:
        await engine.admin.trigger("slow", OPS)
    assert busy.value.run_id == first.run_id
    assert (await engine.admin.get_job("slow")).running is True
    await engine.admin.cancel_run(first.run_id, OPS)
    await engine.idle()


async def test_overlap_allow_runs_two_at_once(start_engine: StartEngine) -> None:
    engine = await start_engine(make_config({"slow": sleep_job(30, overlap="allow", params={"cooperative": True})}))
    first = await engine.admin.trigger("slow", OPS)
    second = await engine.admin.trigger("slow", OPS)
    running = await engine.admin.list_runs(job_id="slow", status="running", limit=10)
    assert {r.id for r in running} == {first.run_id, second.run_id}
    for started in (first, second):
        await engine.admin.cancel_run(started.run_id, OPS)
    await engine.idle()


async def test_cancel_a_cooperative_run(start_engine: StartEngine) -> None:
    engine = await start_engine(make_config({"slow": sleep_job(60, params={"cooperative": True})}))
    started = await engine.admin.trigger("slow", OPS)
    accepted = await engine.admin.cancel_run(started.run_id, OPS)
    assert accepted.status == "running"
    await engine.idle()
    run = await engine.admin.get_run(started.run_id)
    assert run.status == "cancelled"
    assert run.error == "cancelled by ops"
    assert run.duration_s is not None and run.duration_s < 1.5  # stopped at its next check, not interrupted
    with pytest.raises(RunEnded):
        await engine.admin.cancel_run(started.run_id, OPS)
    with pytest.raises(RunNotFound):
        await engine.admin.cancel_run(999_999, OPS)


async def test_cancel_interrupts_a_run_that_does_not_check(start_engine: StartEngine) -> None:
    engine = await start_engine(make_config({"stubborn": sleep_job(60)}))
    started = await engine.admin.trigger("stubborn", OPS)
    await engine.admin.cancel_run(started.run_id, OPS)
    await engine.idle()
    run = await engine.admin.get_run(started.run_id)
    assert run.status == "cancelled"
    assert run.duration_s is not None and 1.5 < run.duration_s < 10


async def test_pause_is_persisted_and_seen_by_a_new_engine(start_engine: StartEngine, store: RunStore) -> None:
    config = make_config({"tick": sql_job(schedule="every 1h")})
    engine = await start_engine(config)
    paused = await engine.admin.pause("tick", OPS)
    assert paused.paused is True and paused.next_run_time is None
    assert len(paused.upcoming) == 5

    other = await start_engine(config, node="node-b")
    assert (await other.admin.get_job("tick")).paused is True
    resumed = await other.admin.resume("tick", OPS)
    assert resumed.paused is False and resumed.next_run_time == resumed.upcoming[0]
    assert (await engine.admin.get_job("tick")).paused is False


async def test_manual_trigger_runs_a_paused_job(start_engine: StartEngine) -> None:
    engine = await start_engine(make_config({"tick": sql_job()}))
    await engine.admin.pause("tick", OPS)
    started = await engine.admin.trigger("tick", OPS)
    await engine.idle()
    assert (await engine.admin.get_run(started.run_id)).status == "succeeded"


async def test_every_mutation_is_audited(start_engine: StartEngine) -> None:
    engine = await start_engine(make_config({"slow": sleep_job(60, params={"cooperative": True})}))
    started = await engine.admin.trigger("slow", OPS)
    await engine.admin.cancel_run(started.run_id, OPS)
    await engine.idle()
    await engine.admin.pause("slow", Actor("alice", "operator", "192.0.2.1"))
    await engine.admin.resume("slow", OPS)

    audit = await engine.admin.list_audit(limit=10)
    assert [(a.principal, a.action, a.target, a.client) for a in audit] == [
        ("ops", "resume", "slow", "10.0.0.7"),
        ("alice", "pause", "slow", "192.0.2.1"),
        ("ops", "cancel", f"run:{started.run_id}", "10.0.0.7"),
        ("ops", "trigger", "slow", "10.0.0.7"),
    ]
    assert audit[3].detail == {"run_id": started.run_id}
    assert [a.action for a in await engine.admin.list_audit(limit=1)] == ["resume"]


async def test_unknown_ids(start_engine: StartEngine) -> None:
    engine = await start_engine(make_config({"tick": sql_job()}))
    for call in (engine.admin.get_job("nope"), engine.admin.trigger("nope", OPS), engine.admin.pause("nope", OPS)):
        with pytest.raises(JobNotFound):
            await call
    with pytest.raises(RunNotFound):
        await engine.admin.get_run(424242)


async def test_list_runs_filters_and_orders_newest_first(start_engine: StartEngine) -> None:
    engine = await start_engine(
        make_config({"ok": sql_job(), "bad": {"task": "tests.tasks:fail", "schedule": "@daily"}})
    )
    ids = []
    for job_id in ("ok", "bad", "ok"):
        ids.append((await engine.admin.trigger(job_id, OPS)).run_id)
        await engine.idle()
    assert [r.id for r in await engine.admin.list_runs(job_id=None, status=None, limit=10)] == ids[::-1]
    assert [r.id for r in await engine.admin.list_runs(job_id="ok", status=None, limit=10)] == [ids[2], ids[0]]
    assert [r.id for r in await engine.admin.list_runs(job_id=None, status="failed", limit=10)] == [ids[1]]
    assert [r.id for r in await engine.admin.list_runs(job_id=None, status=None, limit=1)] == [ids[2]]


async def test_stop_waits_for_runs_that_finish_within_grace(store: RunStore) -> None:
    engine = Engine(make_config({"short": sleep_job(0.3)}), store, node="node-a")
    await engine.start()
    started = await engine.admin.trigger("short", OPS)
    await engine.stop(timedelta(seconds=10))
    run = await engine.admin.get_run(started.run_id)
    assert run.status == "succeeded"


async def test_stop_cancels_runs_past_grace_and_their_cleanup_runs(
    store: RunStore, caplog: pytest.LogCaptureFixture
) -> None:
    engine = Engine(make_config({"long": sleep_job(60)}), store, node="node-a")
    await engine.start()
    started = await engine.admin.trigger("long", OPS)
    await engine.stop(timedelta(milliseconds=300))
    run = await engine.admin.get_run(started.run_id)
    assert run.status == "cancelled"
    assert run.error == "cancelled by shutdown"
    assert "sleep_cleanup_ran" in caplog.text
    assert await engine.admin.readiness() == ["scheduler: not running"]


async def test_readiness_when_running(start_engine: StartEngine) -> None:
    engine = await start_engine(make_config({"tick": sql_job()}))
    assert await engine.admin.readiness() == []


async def test_lost_run_is_reaped_by_a_live_replica(start_engine: StartEngine, store: RunStore) -> None:
    config = make_config({"tick": sql_job()}, scheduler={"lease": "1s"})
    engine = await start_engine(config)
    # A run whose owner vanished: running, heartbeat two leases ago.
    run_id = await store.pool.fetchval(
        """INSERT INTO maintd.runs (job_id, trigger, status, scheduled_for, exclusive, started_at, heartbeat_at, node)
           VALUES ('tick', 'manual', 'running', now(), true, now(), now() - interval '2 seconds', 'dead-node')
           RETURNING id"""
    )
    with pytest.raises(JobBusy):
        await engine.admin.trigger("tick", OPS)
    await beat(engine)
    run = await engine.admin.get_run(run_id)
    assert run.status == "lost"
    assert "dead-node stopped heartbeating" in (run.error or "")
    started = await engine.admin.trigger("tick", OPS)
    await engine.idle()
    assert (await engine.admin.get_run(started.run_id)).status == "succeeded"


async def test_cancel_on_another_replica_reaches_the_owner_at_once(start_engine: StartEngine) -> None:
    config = make_config({"slow": sleep_job(60, params={"cooperative": True})})  # lease 30 s: beats every 10 s
    owner = await start_engine(config, node="node-a")
    other = await start_engine(config, node="node-b")
    started = await owner.admin.trigger("slow", OPS)
    accepted = await other.admin.cancel_run(started.run_id, Actor("bob", "operator", "10.0.0.9"))
    assert accepted.status == "running"
    await asyncio.wait_for(owner.idle(), timeout=5)  # NOTIFY, not the next heartbeat
    run = await other.admin.get_run(started.run_id)
    assert (run.status, run.error, run.node) == ("cancelled", "cancelled by bob", "node-a")


async def test_clock_skew_beyond_the_bound_makes_the_replica_unready(store: RunStore) -> None:
    config = make_config({"tick": sql_job()}, scheduler={"max_clock_skew": "2s"})
    engine = Engine(config, store, node="fast-clock", clock=lambda: datetime.now(UTC) + timedelta(seconds=9))
    await engine.start()
    try:
        [reason] = await engine.admin.readiness()
        assert reason.startswith("clock: +9.") and reason.endswith("off the database's clock (more than 2s)")
    finally:
        await engine.stop(timedelta(seconds=1))
