"""Fires claimed at their time (scheduler/engine/fires.py), on an in-memory store."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from maintd.scheduler.engine import Engine
from maintd.scheduler.engine.claimed_ahead import superseded
from maintd.scheduler.store.run_store import Claim, NewAuditEntry
from tests.configs import make_config, sleep_job
from tests.engines import memory_engine
from tests.memory_store import MemoryStore

pytestmark = pytest.mark.unit

FIRE = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
CONFIG = make_config({"tick": sleep_job(0, schedule="every 60s")})


def now() -> datetime:
    return FIRE


async def registered_store() -> MemoryStore:
    store = MemoryStore(now)
    await store.register_jobs(["tick"], FIRE - timedelta(days=1))
    return store


async def test_a_fire_runs_once_and_the_other_replica_counts_it_taken() -> None:
    store = await registered_store()
    a, b = (memory_engine(CONFIG, store, clock=now, node=node) for node in ("node-a", "node-b"))

    await a.fires.claim(a.jobs["tick"], "schedule", FIRE, 1, None)
    await a.idle()
    await b.fires.claim(b.jobs["tick"], "schedule", FIRE, 1, None)
    await b.idle()

    [run] = await store.list_runs(job_id="tick", status=None, limit=10)
    assert (run.status, run.node, run.scheduled_for) == ("succeeded", "node-a", FIRE)
    assert b.metrics.job("tick").fires["taken"].value == 1
    assert b.metrics.job("tick").fires["ran"].value == 0


async def test_a_paused_jobs_fire_is_recorded_skipped_with_its_reason() -> None:
    store = await registered_store()
    await store.set_paused("tick", True, FIRE, "ops", NewAuditEntry(FIRE, "ops", "pause", "tick", None))
    engine = memory_engine(CONFIG, store, clock=now)

    await engine.fires.claim(engine.jobs["tick"], "schedule", FIRE, 1, None)

    [run] = await store.list_runs(job_id="tick", status=None, limit=10)
    assert (run.status, run.error, run.started_at) == ("skipped", "skipped: the job is paused", None)
    assert engine.metrics.job("tick").fires["skipped"].value == 1


async def test_a_fire_blocked_by_a_live_run_is_skipped_and_names_that_run() -> None:
    store = await registered_store()
    earlier = FIRE - timedelta(minutes=1)
    blocking = await store.claim_run(
        Claim(
            "tick",
            "schedule",
            earlier,
            1,
            exclusive=True,
            started_at=earlier,
            triggered_by=None,
            node="node-b",
            ignore_pause=False,
        )
    )
    assert blocking is not None
    engine = memory_engine(CONFIG, store, clock=now)

    await engine.fires.claim(engine.jobs["tick"], "schedule", FIRE, 1, None)

    [run, _] = await store.list_runs(job_id="tick", status=None, limit=10)
    assert run.status == "skipped"
    assert run.error == f"skipped: run {blocking.id} was still running (overlap = 'forbid')"


async def test_fires_handed_over_together_record_the_older_missed_and_run_the_newest() -> None:
    store = await registered_store()
    engine = memory_engine(CONFIG, store, clock=now)
    older, newest = FIRE - timedelta(minutes=1), FIRE

    engine.fires.on_fires(["tick"], [older, newest])
    await engine.idle()

    runs = {run.scheduled_for: run for run in await store.list_runs(job_id="tick", status=None, limit=10)}
    assert (runs[older].status, runs[older].error) == ("missed", superseded(timedelta(minutes=1)))
    assert runs[newest].status == "succeeded"


def late_by(behind: timedelta) -> Callable[[], datetime]:
    return lambda: FIRE + behind


async def handled(engine: Engine) -> None:
    """Until the fires handed over are handled: those due in one pass are claimed together
    right after it."""
    await asyncio.sleep(0)
    await engine.idle()


@pytest.mark.parametrize("grace", ["90s", None])  # the job's own, or [scheduler]'s
async def test_a_fire_handed_over_within_its_misfire_grace_runs_late(grace: str | None) -> None:
    store = await registered_store()
    job = {**sleep_job(0, schedule="every 60s"), **({"misfire_grace": grace} if grace else {})}
    config = make_config({"tick": job}, scheduler={"misfire_grace": "90s"})
    engine = memory_engine(config, store, clock=late_by(timedelta(seconds=85)))

    engine.fires.on_fires(["tick"], [FIRE])
    await handled(engine)

    [run] = await store.list_runs(job_id="tick", status=None, limit=10)
    assert (run.trigger, run.status, run.scheduled_for) == ("schedule", "succeeded", FIRE)


async def test_a_fire_handed_over_past_its_misfire_grace_is_recorded_missed_and_caught_up_once() -> None:
    store = await registered_store()
    config = make_config({"tick": {**sleep_job(0, schedule="every 60s"), "misfire_grace": "30s"}})
    engine = memory_engine(config, store, clock=late_by(timedelta(seconds=45)))

    engine.fires.on_fires(["tick"], [FIRE])
    await engine.idle()

    runs = await store.list_runs(job_id="tick", status=None, limit=10)
    by_attempt = {run.attempt: run for run in runs}
    assert len(runs) == 2
    missed, caught_up = by_attempt[1], by_attempt[2]
    assert (missed.trigger, missed.status, missed.scheduled_for) == ("schedule", "missed", FIRE)
    assert missed.error == "missed: the cluster was 45s behind, past the job's misfire_grace of 30s"
    assert (caught_up.trigger, caught_up.status, caught_up.scheduled_for) == ("catch_up", "succeeded", FIRE)


async def test_past_its_misfire_grace_a_job_without_catch_up_only_records_the_fire_missed() -> None:
    store = await registered_store()
    job = {**sleep_job(0, schedule="every 60s"), "misfire_grace": "30s", "catch_up": "none"}
    engine = memory_engine(make_config({"tick": job}), store, clock=late_by(timedelta(seconds=45)))

    engine.fires.on_fires(["tick"], [FIRE])
    await engine.idle()

    [run] = await store.list_runs(job_id="tick", status=None, limit=10)
    assert (run.status, run.scheduled_for) == ("missed", FIRE)
    assert "misfire_grace of 30s" in (run.error or "")


async def test_a_fire_past_grace_on_two_replicas_is_recorded_once_and_caught_up_once() -> None:
    store = await registered_store()
    config = make_config({"tick": {**sleep_job(0, schedule="every 60s"), "misfire_grace": "30s"}})
    late = late_by(timedelta(seconds=45))
    a, b = (memory_engine(config, store, clock=late, node=node) for node in ("node-a", "node-b"))

    a.fires.on_fires(["tick"], [FIRE])
    b.fires.on_fires(["tick"], [FIRE])
    await a.idle()
    await b.idle()

    runs = await store.list_runs(job_id="tick", status=None, limit=10)
    assert sorted((run.attempt, run.trigger, run.status) for run in runs) == [
        (1, "schedule", "missed"),
        (2, "catch_up", "succeeded"),
    ]


async def test_a_fire_past_grace_that_another_replica_ran_in_time_is_not_caught_up() -> None:
    store = await registered_store()
    config = make_config({"tick": {**sleep_job(0, schedule="every 60s"), "misfire_grace": "30s"}})
    on_time = memory_engine(config, store, clock=late_by(timedelta(seconds=1)), node="node-a")
    behind = memory_engine(config, store, clock=late_by(timedelta(seconds=45)), node="node-b")

    on_time.fires.on_fires(["tick"], [FIRE])
    await handled(on_time)
    behind.fires.on_fires(["tick"], [FIRE])
    await behind.idle()

    [run] = await store.list_runs(job_id="tick", status=None, limit=10)
    assert (run.trigger, run.status, run.node) == ("schedule", "succeeded", "node-a")
