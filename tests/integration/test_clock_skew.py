"""A replica whose clock is off the database's takes no part in scheduling (scheduler/engine/clock_guard.py).

Engines on a real PostgreSQL, one with a clock of the test's own (the true time
plus an offset the test moves), the other on the true clock. Every run notes the
true time it started at, so a run started early shows whatever its replica's
clock wrote. Schedules are epoch-aligned ``every 1s``: waiting for fire times is
inherent here.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from maintd.admin_api.interface import SchedulingSuspended
from maintd.jobs import JobContext, task
from maintd.jobs.registry import NoParams
from maintd.scheduler.engine import Engine
from maintd.scheduler.engine.catch_up import CLAIM_SETTLE
from maintd.scheduler.store.records import Run
from maintd.scheduler.store.run_store import RunStore
from tests.configs import make_config
from tests.engines import OPS, beat

pytestmark = pytest.mark.integration

# The true time each run started at: (job id, fire time, trigger, true start).
STARTS: list[tuple[str, datetime, str, datetime]] = []
OFF = timedelta(seconds=10)
# Asyncio's timers may fire a hair before their time on the monotonic clock.
TIMER_SLACK = timedelta(milliseconds=20)


@task()
async def note_start(ctx: JobContext, params: NoParams) -> None:
    STARTS.append((ctx.job_id, ctx.scheduled_for, ctx.trigger, datetime.now(UTC)))


def tick_config(catch_up: str = "once") -> Any:
    return make_config({"tick": {"task": f"{__name__}:note_start", "schedule": "every 1s", "catch_up": catch_up}})


class MovableClock:
    """The true time plus ``offset``: a host clock set wrong, and set right again."""

    def __init__(self, offset: timedelta = timedelta(0)) -> None:
        self.offset = offset

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest.fixture
async def replica(store: RunStore) -> AsyncIterator[Callable[..., Awaitable[Engine]]]:
    """Start an engine (its clock checked against the database's, as in production); stopped after the test."""
    STARTS.clear()
    engines: list[Engine] = []

    async def start(node: str, clock: MovableClock | None = None, catch_up: str = "once") -> Engine:
        engine = Engine(tick_config(catch_up), store, node=node, **({"clock": clock} if clock else {}))
        await engine.start()
        engines.append(engine)
        return engine

    yield start
    for engine in engines:
        if engine.running:
            await engine.stop(timedelta(seconds=5))


async def rows(store: RunStore) -> list[Run]:
    runs = await store.list_runs(job_id="tick", status=None, limit=10_000)
    return sorted(runs, key=lambda run: (run.scheduled_for or datetime.min.replace(tzinfo=UTC), run.id))


def fires(runs: list[Run]) -> Counter[float]:
    return Counter(run.scheduled_for.timestamp() for run in runs if run.scheduled_for and run.trigger != "manual")


def named_skew(text: str) -> float | None:
    """The skew a readiness reason or an error names, in seconds."""
    found = re.search(r"clock: ([+-]\d+\.\d{3})s off the database's clock", text)
    return float(found.group(1)) if found else None


def started_early() -> list[tuple[str, float]]:
    return [
        (fire.isoformat(), round((fire - at).total_seconds(), 3))
        for _, fire, _, at in STARTS
        if at < fire - TIMER_SLACK
    ]


@pytest.mark.parametrize("offset", [OFF, -OFF], ids=["ahead", "behind"])
async def test_a_replica_with_a_wrong_clock_claims_and_records_nothing(
    replica: Callable[..., Awaitable[Engine]], store: RunStore, offset: timedelta
) -> None:
    # Ahead, it would judge fires not yet due at its start; behind, it would note the
    # job first seen before it was, for the true replica's start to judge from.
    if offset > timedelta(0):
        true = await replica("true")
        skewed = await replica("skewed", MovableClock(offset))
    else:
        skewed = await replica("skewed", MovableClock(offset))
        true = await replica("true")
    both_up = datetime.now(UTC)
    await asyncio.sleep(3.5)

    refused: SchedulingSuspended | None = None
    try:
        await skewed.admin.trigger("tick", OPS)
    except SchedulingSuspended as exc:
        refused = exc
    [reason] = await skewed.admin.readiness()
    await skewed.stop(timedelta(seconds=5))
    await true.stop(timedelta(seconds=5))

    runs = await rows(store)
    first_seen = (await store.job_states())["tick"]["first_seen"]
    per_fire = fires(runs)
    assert [(run.scheduled_for, run.status, run.error) for run in runs if run.status != "succeeded"] == []
    assert [run for run in runs if run.node == "skewed"] == []
    assert max(per_fire.values()) == 1
    assert sorted(per_fire) == [float(t) for t in range(int(min(per_fire)), int(max(per_fire)) + 1)]
    assert sum(fire > both_up.timestamp() for fire in per_fire) >= 3
    assert started_early() == []
    # The job was first seen by the replica with the true clock.
    assert (
        first_seen >= both_up - timedelta(seconds=5)
        if offset > timedelta(0)
        else first_seen >= both_up - timedelta(seconds=1)
    )
    assert refused is not None and named_skew(str(refused)) == pytest.approx(offset.total_seconds(), abs=0.1)
    assert named_skew(reason) == pytest.approx(offset.total_seconds(), abs=0.1) and reason.endswith("(more than 2s)")


@pytest.mark.parametrize(("offset", "catch_up"), [(OFF, "once"), (-OFF, "none")], ids=["ahead-once", "behind-none"])
async def test_back_within_bound_the_spell_is_caught_up_as_after_downtime(
    replica: Callable[..., Awaitable[Engine]], store: RunStore, offset: timedelta, catch_up: str
) -> None:
    clock = MovableClock(offset)
    started = datetime.now(UTC)
    engine = await replica("alone", clock, catch_up)
    await asyncio.sleep(3.2)
    assert await rows(store) == []  # nothing claimed, nothing recorded

    clock.offset = timedelta(0)
    await beat(engine)  # the heartbeat's reading: back within bound
    resumed = datetime.now(UTC)
    assert await engine.admin.readiness() == []
    await asyncio.sleep(CLAIM_SETTLE.total_seconds() + 1.5)
    await engine.stop(timedelta(seconds=5))

    runs = await rows(store)
    per_fire = fires(runs)
    spell = [run for run in runs if run.scheduled_for and run.scheduled_for < resumed]
    after = [run for run in runs if run.scheduled_for and run.scheduled_for >= resumed]
    assert max(per_fire.values()) == 1
    assert sorted(per_fire) == [float(t) for t in range(int(min(per_fire)), int(max(per_fire)) + 1)]
    # From the replica's start (by the true clock), not before: the job did not exist earlier.
    assert started.timestamp() - 1 <= min(per_fire) <= started.timestamp() + 1
    caught_up = [run for run in spell if run.trigger == "catch_up"]
    assert [run.status for run in caught_up] == (["succeeded"] if catch_up == "once" else [])
    assert {(run.trigger, run.status) for run in spell if run not in caught_up} == {("schedule", "missed")}
    assert len(spell) >= 3
    assert after and {(run.trigger, run.status) for run in after} == {("schedule", "succeeded")}
    assert started_early() == []


async def test_a_clock_that_jumps_claims_nothing_more_and_runs_what_it_claimed_on_time(
    replica: Callable[..., Awaitable[Engine]], store: RunStore
) -> None:
    clock = MovableClock()
    jumpy = await replica("jumpy", clock)
    true = await replica("true")
    await asyncio.sleep(2.6)
    clock.offset = OFF  # NTP steps the wall clock, or an operator sets it by hand
    jumped = datetime.now(UTC)
    await asyncio.sleep(3.0)
    reasons = await jumpy.admin.readiness()
    # Claims of fires its wrong clock says are due shortly would be running rows by now.
    claimed_late_on = [run for run in await rows(store) if run.node == "jumpy" and run.scheduled_for > jumped]
    live = [row["node"] for row in await store.pool.fetch("SELECT node FROM maintd.nodes ORDER BY node")]
    await jumpy.stop(timedelta(seconds=5))
    await true.stop(timedelta(seconds=5))

    runs = await rows(store)
    per_fire = fires(runs)
    by_jumpy_after = [run for run in runs if run.node == "jumpy" and run.scheduled_for and run.scheduled_for > jumped]
    assert [run for run in runs if run.status != "succeeded"] == []
    assert max(per_fire.values()) == 1
    assert sorted(per_fire) == [float(t) for t in range(int(min(per_fire)), int(max(per_fire)) + 1)]
    # Only fires it had claimed ahead before the jump (within the claim window) are still its own.
    assert all(run.scheduled_for <= jumped + timedelta(seconds=1.5) for run in claimed_late_on), claimed_late_on
    assert all(run.scheduled_for <= jumped + timedelta(seconds=1.5) for run in by_jumpy_after), by_jumpy_after
    assert started_early() == []
    # Caught at once from the monotonic clock, before any reading of the database's; the
    # other replica took over its share of the fires at once.
    assert live == ["true"]
    assert len(reasons) == 1 and named_skew(reasons[0]) == pytest.approx(OFF.total_seconds(), abs=0.1)
