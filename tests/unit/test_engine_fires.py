"""Fires claimed at their time (scheduler/engine/fires.py), on an in-memory store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from maintd.scheduler.engine.claimed_ahead import TOO_BUSY
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
    assert b.metrics.fires.labels("tick", "taken")._value.get() == 1
    assert b.metrics.fires.labels("tick", "ran")._value.get() == 0


async def test_a_paused_jobs_fire_is_recorded_skipped_with_its_reason() -> None:
    store = await registered_store()
    await store.set_paused("tick", True, FIRE, "ops", NewAuditEntry(FIRE, "ops", "pause", "tick", None))
    engine = memory_engine(CONFIG, store, clock=now)

    await engine.fires.claim(engine.jobs["tick"], "schedule", FIRE, 1, None)

    [run] = await store.list_runs(job_id="tick", status=None, limit=10)
    assert (run.status, run.error, run.started_at) == ("skipped", "skipped: the job is paused", None)
    assert engine.metrics.fires.labels("tick", "skipped")._value.get() == 1


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
    assert (runs[older].status, runs[older].error) == ("missed", TOO_BUSY)
    assert runs[newest].status == "succeeded"
