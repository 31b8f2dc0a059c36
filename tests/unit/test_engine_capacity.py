"""A replica claims no more fires than it has room for (scheduler/engine/capacity.py):
the others wait and run late, on whichever replica frees room first, or are recorded
missed past their misfire grace."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from maintd.scheduler.engine import Engine
from maintd.scheduler.engine.state import wait_for_all
from tests import tasks
from tests.configs import make_config, sleep_job
from tests.engines import memory_engine
from tests.memory_store import MemoryStore

pytestmark = pytest.mark.unit

FIRE = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def gates() -> Iterator[None]:
    yield
    tasks.GATES.clear()


def gated(gate: str) -> dict[str, object]:
    return {"task": "tests.tasks:wait_at_gate", "schedule": "every 60s", "params": {"gate": gate}}


async def handled(*engines: Engine) -> None:
    await asyncio.sleep(0)
    for engine in engines:
        await engine.idle()


async def claims_settled(engine: Engine) -> None:
    """Until no fire is being claimed or recorded (runs may go on)."""
    await asyncio.sleep(0)
    while claiming := engine.state.tasks.named("fire:"):
        await wait_for_all(claiming)


async def store_with(jobs: list[str], now: datetime = FIRE) -> MemoryStore:
    store = MemoryStore(lambda: now)
    await store.register_jobs(jobs, FIRE - timedelta(days=1))
    return store


async def test_fires_beyond_the_room_wait_and_run_as_runs_end() -> None:
    jobs = {f"job{n}": gated(f"g{n}") for n in range(5)}
    store = await store_with(list(jobs))
    engine = memory_engine(make_config(jobs, scheduler={"max_running": 2}), store, clock=lambda: FIRE)

    engine.fires.on_fires(list(jobs), [FIRE])
    await claims_settled(engine)
    assert sorted(active.job.id for active in engine.runs.active.values()) == ["job0", "job1"]
    assert engine.fires.waiting.job_ids() == ["job2", "job3", "job4"]

    for n in range(5):  # each run that ends makes room for the next fire
        tasks.GATES.setdefault(f"g{n}", asyncio.Event()).set()
    while engine.fires.waiting or engine.runs.active:
        await handled(engine)

    runs = await store.list_runs(job_id=None, status=None, limit=10)
    assert sorted((run.job_id, run.trigger, run.status, run.scheduled_for) for run in runs) == [
        (f"job{n}", "schedule", "succeeded", FIRE) for n in range(5)
    ]


async def test_a_replica_short_of_room_leaves_the_fires_to_one_that_has_it() -> None:
    jobs = {f"job{n}": sleep_job(0, schedule="every 60s") for n in range(4)}
    store = await store_with(list(jobs))
    small = memory_engine(make_config(jobs, scheduler={"max_running": 1}), store, clock=lambda: FIRE, node="small")
    large = memory_engine(make_config(jobs, scheduler={"max_running": 10}), store, clock=lambda: FIRE, node="large")

    small.fires.on_fires(list(jobs), [FIRE])
    large.fires.on_fires(list(jobs), [FIRE])
    await handled(small, large)
    while small.fires.waiting:  # the small one learns the rest is taken as its room frees
        await handled(small)

    runs = await store.list_runs(job_id=None, status=None, limit=10)
    assert len(runs) == 4 and {run.status for run in runs} == {"succeeded"}
    per_node = sorted(run.node for run in runs)
    assert per_node.count("small") == 1 and per_node.count("large") == 3


async def test_a_fire_waiting_for_room_past_its_misfire_grace_is_recorded_missed() -> None:
    jobs = {"holder": gated("hold"), "late": {**sleep_job(0, schedule="every 60s"), "misfire_grace": "30s"}}
    now = FIRE
    store = await store_with(list(jobs))
    engine = memory_engine(make_config(jobs, scheduler={"max_running": 1}), store, clock=lambda: now)

    engine.fires.on_fires(["holder", "late"], [FIRE])
    await claims_settled(engine)
    assert engine.fires.waiting.job_ids() == ["late"]

    now = FIRE + timedelta(seconds=45)
    engine.fires.judge_waiting()  # as each heartbeat does
    await claims_settled(engine)
    assert not engine.fires.waiting
    tasks.GATES["hold"].set()
    await handled(engine)

    [missed] = await store.list_runs(job_id="late", status="missed", limit=10)
    assert missed.scheduled_for == FIRE
    assert missed.error == "missed: the cluster was 45s behind, past the job's misfire_grace of 30s"
    [caught_up] = await store.list_runs(job_id="late", status=None, limit=1)
    assert (caught_up.trigger, caught_up.attempt, caught_up.status) == ("catch_up", 2, "succeeded")
