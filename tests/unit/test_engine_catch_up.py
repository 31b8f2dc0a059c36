"""Fires nobody recorded (scheduler/engine/catch_up.py), on an in-memory store."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from maintd.scheduler.clock import utcnow
from maintd.scheduler.engine import Engine
from maintd.scheduler.engine.claimed_ahead import ClaimedAhead
from maintd.scheduler.engine.clock_guard import NoClockGuard
from maintd.scheduler.store.records import Run
from maintd.scheduler.store.run_store import Claim
from tests.configs import make_config, sleep_job
from tests.engines import memory_engine
from tests.memory_store import MemoryStore

pytestmark = pytest.mark.unit

SEEN = datetime(2026, 12, 7, 0, 30, tzinfo=UTC)
NOW = SEEN + timedelta(hours=3)  # the hourly fires at 01:00, 02:00 and 03:00 went unrecorded


def now() -> datetime:
    return NOW


@pytest.mark.parametrize("catch_up", ["once", "none"])
async def test_after_downtime_the_missed_fires_are_recorded_and_the_latest_runs_once_if_asked(catch_up: str) -> None:
    store = MemoryStore(now)
    await store.register_jobs(["hourly"], SEEN)
    engine = memory_engine(
        make_config({"hourly": sleep_job(0, schedule="0 * * * *", catch_up=catch_up)}), store, clock=now
    )

    caught_up = await engine.catch_up.catch_up(NOW)
    await engine.idle()

    runs = sorted(await store.list_runs(job_id="hourly", status=None, limit=10), key=lambda run: run.id)
    fires = [SEEN + timedelta(minutes=30 + 60 * n) for n in range(3)]
    assert [run.scheduled_for for run in runs] == fires
    if catch_up == "once":
        assert caught_up == {"hourly"}
        assert [(run.status, run.trigger) for run in runs] == [
            ("missed", "schedule"),
            ("missed", "schedule"),
            ("succeeded", "catch_up"),
        ]
    else:
        assert caught_up == set()
        assert {run.status for run in runs} == {"missed"}
    assert all(run.error == "missed: no replica could run it" for run in runs if run.status == "missed")


async def test_a_fire_another_replica_recorded_during_an_outage_is_not_recorded_again() -> None:
    store = MemoryStore(now)
    await store.register_jobs(["hourly"], SEEN)
    other = memory_engine(make_config({"hourly": sleep_job(0, schedule="0 * * * *")}), store, clock=now, node="b")
    second = SEEN + timedelta(minutes=90)
    await other.fires.claim(other.jobs["hourly"], "schedule", second, 1, None)
    await other.idle()
    engine = memory_engine(
        make_config({"hourly": sleep_job(0, schedule="0 * * * *", catch_up="none")}), store, clock=now
    )

    # The outage began before the first fire: the fire recorded meanwhile hides neither of the others.
    await engine.catch_up.catch_up(NOW, outage_since=SEEN)

    runs = {run.scheduled_for: run for run in await store.list_runs(job_id="hourly", status=None, limit=10)}
    assert {fire: run.status for fire, run in runs.items()} == {
        SEEN + timedelta(minutes=30): "missed",
        second: "succeeded",
        SEEN + timedelta(minutes=150): "missed",
    }


class HeldCatchUp(MemoryStore):
    """Holds a catch-up claim until the test lets it through."""

    def __init__(self) -> None:
        super().__init__(utcnow)
        self.holding = asyncio.Event()
        self.release = asyncio.Event()

    async def claim_run(self, claim: Claim) -> Run | None:
        if claim.trigger == "catch_up":
            self.holding.set()
            await self.release.wait()
        return await super().claim_run(claim)


async def test_the_next_fire_of_a_job_whose_catch_up_is_being_claimed_is_not_claimed_ahead() -> None:
    # A run claimed ahead counts as running: claimed first, it would refuse the catch-up run.
    store = HeldCatchUp()
    await store.register_jobs(["tick"], utcnow() - timedelta(seconds=30))
    config = make_config({"tick": sleep_job(0, schedule="every 10s")})
    # A window longer than the period: the job's next fire is always due within it.
    engine = Engine(config, store, node="node-a", claim_ahead=timedelta(seconds=11), clock_guard=NoClockGuard())
    assert isinstance(engine.ahead, ClaimedAhead)
    engine.state.accepting = True
    engine.timers.add(engine.jobs["tick"])
    engine.timers.start()
    try:
        assert await engine.catch_up.catch_up(utcnow()) == {"tick"}
        await store.holding.wait()

        await engine.ahead.decisions.claim_due()  # a pass while the catch-up claim is under way
        assert engine.ahead.waiting() == []

        store.release.set()
        await engine.idle()
        [caught_up] = [run for run in store.runs.values() if run.trigger == "catch_up"]
        assert caught_up.status == "succeeded"
        await engine.ahead.decisions.claim_due()  # the catch-up done, the next fire is claimed ahead
        assert [run.trigger for run in engine.ahead.waiting()] == ["schedule"]
    finally:
        engine.timers.shutdown()
