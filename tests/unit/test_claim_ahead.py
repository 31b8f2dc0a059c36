"""Claiming fires ahead of their time, shared out among replicas (scheduler/engine/claim_ahead.py).

The store is tests/memory_store.MemoryStore on the test's clock: it answers the
calls ClaimAhead makes (node_heartbeat_at, claim_ahead, taken_fires) as the SQL
does, and records them, so a test sees which fires a pass asked for.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from maintd.scheduler.config.model import JobConfig
from maintd.scheduler.engine.claim_ahead import TAKEN, ClaimAhead, FireKey
from maintd.scheduler.engine.clock_guard import ClockGuard
from maintd.scheduler.store.records import Run
from maintd.scheduler.store.run_store import Claim
from tests.configs import make_config, sql_job
from tests.memory_store import MemoryStore

pytestmark = pytest.mark.unit

WINDOW = timedelta(seconds=1)
LEASE = timedelta(seconds=30)
T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
# Due within the window but not within half of it, seen from T0: only owners claim it.
FIRE = T0 + timedelta(milliseconds=900)
# From here on, FIRE is within half the window: everyone claims what is undecided.
TAKEOVER = FIRE - WINDOW / 2 + timedelta(milliseconds=50)


def claims(store: MemoryStore, node: str = "solo") -> list[set[FireKey]]:
    """The fire keys of each claim ahead ``node`` sent, oldest first."""
    return [
        {(job_id, fire) for job_id, fire, _ in call["fires"]}
        for call in store.called("claim_ahead")
        if call["node"] == node
    ]


def last_claim(store: MemoryStore, node: str = "solo") -> set[FireKey]:
    sent = claims(store, node)
    return sent[-1] if sent else set()


async def store_with_nodes(live: list[str], clock: Clock) -> MemoryStore:
    """A store on ``clock`` where the ``live`` nodes have just heartbeated."""
    store = MemoryStore(clock)
    for node in live:
        await store.node_heartbeat(node, LEASE)
    return store


async def taken_elsewhere(store: MemoryStore, key: FireKey) -> None:
    """Another replica decided the fire: it recorded it as not run (the key is held, no run is)."""
    job_id, fire = key
    await store.record_unrun_fire(job_id, "schedule", "skipped", fire, 1, fire, "skipped: paused", "other")


async def still_running(store: MemoryStore, job_id: str) -> Run:
    """A run of the job in progress elsewhere: the job's fires cannot be claimed."""
    run = await store.claim_run(Claim(job_id, "manual", T0, 1, True, T0, "ops", "other", False))
    assert run is not None
    return run


class Errors(list[Exception]):
    """What a claim pass reported as failed (the engine logs it)."""


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def run_out(run_id: int, job_id: str, fire: datetime, node: str) -> Run:
    return Run(
        id=run_id,
        job_id=job_id,
        trigger="schedule",
        status="running",
        scheduled_for=fire,
        started_at=None,
        finished_at=None,
        node=node,
    )


def jobs(count: int) -> dict[str, JobConfig]:
    return dict(make_config({f"job-{n:03d}": sql_job(schedule="every 2s") for n in range(count)}).jobs)


class Schedule:
    """What the engine's _due_before answers: the given (job, fire) pairs due before ``until``."""

    def __init__(self, fires: Iterable[tuple[JobConfig, datetime]]) -> None:
        self.fires = list(fires)

    def __call__(self, until: datetime) -> list[tuple[JobConfig, datetime]]:
        return [(job, fire) for job, fire in self.fires if fire < until]


def claim_ahead(
    store: MemoryStore,
    node: str,
    schedule: Schedule,
    clock: Clock,
    errors: Errors | None = None,
    announced: list[Run] | None = None,
    clock_guard: ClockGuard | None = None,
) -> ClaimAhead:
    return ClaimAhead(
        store,
        node=node,
        window=WINDOW,
        lease=LEASE,
        due_before=schedule,
        on_win=(announced if announced is not None else []).append,
        on_late_win=lambda run: None,
        ready=_always_ready,
        clock=clock,
        on_error=(errors if errors is not None else Errors()).append,
        clock_guard=clock_guard,
    )


async def _always_ready(_now: datetime) -> bool:
    return True


def replica(node: str, live: list[str]) -> ClaimAhead:
    ahead = claim_ahead(MemoryStore(), node, Schedule([]), Clock(T0))
    ahead.live = live
    return ahead


def keys(count: int, fires: int = 1) -> list[FireKey]:
    return [(f"job-{n:03d}", T0 + timedelta(seconds=2 * f)) for n in range(count) for f in range(fires)]


# -- owner ------------------------------------------------------------------


def test_every_replica_names_the_same_owner_for_every_fire() -> None:
    live = ["node-a", "node-b", "node-c"]
    replicas = [replica(node, live) for node in live]
    for key in keys(50, fires=4):
        owners = {ahead.owner(key) for ahead in replicas}
        assert len(owners) == 1, key
        assert owners <= set(live)
        # Deterministic: asked again (or by a fresh object, as after a restart), the same answer.
        assert replica("node-a", live).owner(key) == replicas[0].owner(key)


def test_the_owner_depends_on_the_instant_not_on_how_it_is_written() -> None:
    """Replicas whose APScheduler hands over fire times in different zones still agree."""
    live = ["node-a", "node-b", "node-c"]
    ahead = replica("node-a", live)
    for job_id, fire in keys(50, fires=2):
        assert ahead.owner((job_id, fire)) == ahead.owner((job_id, fire.astimezone(ZoneInfo("Asia/Tokyo"))))


def test_shares_are_roughly_even_over_three_nodes() -> None:
    live = ["maintd-1", "maintd-2", "maintd-3"]
    ahead = replica("maintd-1", live)
    fire_keys = keys(200, fires=5)
    assert len(fire_keys) == 1000
    shares = Counter(ahead.owner(key) for key in fire_keys)
    assert set(shares) == set(live)
    for node in live:
        assert 250 <= shares[node] <= 420, shares


def test_a_single_live_node_owns_everything() -> None:
    ahead = replica("solo", ["solo"])
    assert {ahead.owner(key) for key in keys(100)} == {"solo"}


# -- pop and drop -----------------------------------------------------------


async def test_pop_returns_the_run_won_or_taken_or_none_and_forgets_the_key() -> None:
    [job_won, job_taken, job_undecided, job_unseen] = jobs(4).values()
    clock = Clock(TAKEOVER)
    store = MemoryStore(clock)
    await taken_elsewhere(store, (job_taken.id, FIRE))
    await still_running(store, job_undecided.id)
    announced: list[Run] = []
    schedule = Schedule((job, FIRE) for job in (job_won, job_taken, job_undecided))
    ahead = claim_ahead(store, "solo", schedule, clock, announced=announced)
    await ahead.claim_due()

    won = ahead.pop((job_won.id, FIRE))
    assert isinstance(won, Run)
    # The engine heard of the win when it was made (to prepare the run), and of nothing else.
    assert announced == [won]
    assert (won.job_id, won.scheduled_for, won.node) == (job_won.id, FIRE, "solo")
    assert ahead.pop((job_taken.id, FIRE)) is TAKEN
    assert ahead.pop((job_undecided.id, FIRE)) is None
    assert ahead.pop((job_unseen.id, FIRE)) is None
    # Popped keys are forgotten: a second look finds nothing.
    for job in (job_won, job_taken, job_undecided):
        assert ahead.pop((job.id, FIRE)) is None
    assert ahead.waiting == []


async def test_drop_returns_the_jobs_waiting_runs_and_forgets_its_keys() -> None:
    [job_x, job_y] = jobs(2).values()
    later, latest = FIRE + timedelta(milliseconds=10), FIRE + timedelta(milliseconds=20)
    clock = Clock(TAKEOVER)
    store = MemoryStore(clock)
    await taken_elsewhere(store, (job_x.id, later))
    # (job_x, latest) is left undecided: the same claim's run of job_x at FIRE holds the job.
    schedule = Schedule([(job_x, FIRE), (job_y, FIRE), (job_x, later), (job_x, latest)])
    ahead = claim_ahead(store, "solo", schedule, clock)
    await ahead.claim_due()
    assert {(run.job_id, run.scheduled_for) for run in ahead.waiting} == {(job_x.id, FIRE), (job_y.id, FIRE)}

    dropped = ahead.drop(job_x.id)
    assert [(run.job_id, run.scheduled_for) for run in dropped] == [(job_x.id, FIRE)]
    assert [run.job_id for run in ahead.waiting] == [job_y.id]
    assert ahead.pop((job_x.id, FIRE)) is None
    assert ahead.pop((job_x.id, later)) is None  # no longer TAKEN
    # Its taken and undecided fires are forgotten too: the next pass considers them again.
    await ahead.claim_due()
    assert last_claim(store) == {(job_x.id, FIRE), (job_x.id, later), (job_x.id, latest)}
    assert ahead.drop("no-such-job") == []


# -- claim_due --------------------------------------------------------------


async def test_each_replica_claims_only_its_share_until_half_the_window_is_left() -> None:
    live = ["node-a", "node-b", "node-c"]
    all_jobs = list(jobs(30).values())
    clock = Clock(T0)
    store = await store_with_nodes(["node-a", "node-c"], clock)
    ahead = claim_ahead(store, "node-b", Schedule((job, FIRE) for job in all_jobs), clock)
    ahead.live = live
    owners = {job.id: ahead.owner((job.id, FIRE)) for job in all_jobs}
    ahead.live = ["node-b"]  # as at start: the first pass must learn the others from the heartbeat
    share = {(job_id, FIRE) for job_id, owner in owners.items() if owner == "node-b"}
    of_a = {(job_id, FIRE) for job_id, owner in owners.items() if owner == "node-a"}
    of_c = {(job_id, FIRE) for job_id, owner in owners.items() if owner == "node-c"}
    assert share and of_a and of_c  # the check below would prove nothing otherwise

    await ahead.claim_due()
    assert ahead.live == live
    assert last_claim(store, "node-b") == share
    assert {(run.job_id, run.scheduled_for) for run in ahead.waiting} == share

    # node-a claims its share in time; node-c is dead and never does.
    await store.claim_ahead([(job_id, fire, True) for job_id, fire in of_a], "node-a")
    clock.now = T0 + timedelta(milliseconds=200)  # FIRE still more than half a window away
    await ahead.claim_due()
    assert claims(store, "node-b") == [share]  # nothing new asked for: its share is decided

    clock.now = TAKEOVER
    await ahead.claim_due()
    assert last_claim(store, "node-b") == of_a | of_c  # everything not decided here
    assert {(run.job_id, run.scheduled_for) for run in ahead.waiting} == share | of_c

    clock.now = TAKEOVER + timedelta(milliseconds=100)
    calls = len(claims(store, "node-b"))
    await ahead.claim_due()
    assert len(claims(store, "node-b")) == calls  # all decided: no statement
    assert all(ahead.pop(key) is TAKEN for key in of_a)


async def test_fires_at_or_before_now_are_not_claimed_ahead() -> None:
    [job] = jobs(1).values()
    clock = Clock(FIRE)
    store = MemoryStore(clock)
    ahead = claim_ahead(store, "solo", Schedule([(job, FIRE - timedelta(milliseconds=1)), (job, FIRE)]), clock)
    await ahead.claim_due()
    assert claims(store) == []
    assert ahead.waiting == []


async def test_a_fire_nobody_could_claim_is_not_retried_ahead_after_the_takeover() -> None:
    live = ["node-a", "node-b", "node-c"]
    all_jobs = list(jobs(30).values())
    probe = claim_ahead(MemoryStore(), "node-a", Schedule([]), Clock(T0))
    probe.live = live
    mine = next(job for job in all_jobs if probe.owner((job.id, FIRE)) == "node-a")
    theirs = next(job for job in all_jobs if probe.owner((job.id, FIRE)) == "node-b")
    clock = Clock(T0)
    store = await store_with_nodes(live, clock)
    previous = [await still_running(store, job.id) for job in (mine, theirs)]
    ahead = claim_ahead(store, "node-a", Schedule([(mine, FIRE), (theirs, FIRE)]), clock)

    await ahead.claim_due()
    assert last_claim(store, "node-a") == {(mine.id, FIRE)}
    # Lost before the takeover point and not taken: tried again at the takeover.
    clock.now = TAKEOVER
    await ahead.claim_due()
    assert last_claim(store, "node-a") == {(mine.id, FIRE), (theirs.id, FIRE)}
    assert ahead.waiting == []

    # Lost at the takeover and still not taken: undecided, left to the claim at the fire time.
    calls = len(claims(store, "node-a"))
    for run in previous:
        await store.finish_run(run.id, "succeeded", clock.now, None, None)
    for step in (100, 200, 300):
        clock.now = TAKEOVER + timedelta(milliseconds=step)
        await ahead.claim_due()
    assert len(claims(store, "node-a")) == calls
    assert ahead.pop((mine.id, FIRE)) is None
    assert ahead.pop((theirs.id, FIRE)) is None


async def test_decisions_older_than_a_minute_are_forgotten() -> None:
    [job_won, job_taken, job_taken_too] = jobs(3).values()
    clock = Clock(TAKEOVER)
    store = MemoryStore(clock)
    await taken_elsewhere(store, (job_taken.id, FIRE))
    await taken_elsewhere(store, (job_taken_too.id, FIRE))
    ahead = claim_ahead(store, "solo", Schedule((job, FIRE) for job in (job_won, job_taken, job_taken_too)), clock)
    await ahead.claim_due()
    [won] = ahead.waiting
    assert won.job_id == job_won.id

    # The fire was never handed over (say the scheduler stalled): kept for a minute...
    clock.now = FIRE + timedelta(seconds=59)
    await ahead.claim_due()
    assert ahead.waiting == [won]
    assert ahead.pop((job_taken.id, FIRE)) is TAKEN
    assert ahead.take_abandoned() == []

    # ... then dropped, and handed to the engine to be recorded (it never started).
    clock.now = FIRE + timedelta(seconds=61)
    await ahead.claim_due()
    assert ahead.waiting == []
    assert ahead.pop((job_won.id, FIRE)) is None
    assert ahead.pop((job_taken_too.id, FIRE)) is None
    assert ahead.take_abandoned() == [won]
    assert ahead.take_abandoned() == []


async def test_the_loop_keeps_going_after_a_failed_pass() -> None:
    [job] = jobs(1).values()

    class FailingOnce(MemoryStore):
        failures = 1

        async def claim_ahead(self, fires: Sequence[tuple[str, datetime, bool]], node: str) -> list[Run]:
            if self.failures:
                self.failures -= 1
                raise ConnectionError("database away")
            return await super().claim_ahead(fires, node)

    clock = Clock(FIRE - timedelta(milliseconds=10))
    store = FailingOnce(clock)
    errors = Errors()
    # A short window, so that passes come every 10 ms; FIRE is within half of it.
    ahead = claim_ahead(store, "solo", Schedule([(job, FIRE)]), clock, errors)
    ahead.window = timedelta(milliseconds=40)
    loop = asyncio.create_task(ahead.run())
    try:
        async with asyncio.timeout(5):
            while not ahead.waiting:
                await asyncio.sleep(0.005)
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
    assert [str(error) for error in errors] == ["database away"]
    assert [run.job_id for run in ahead.waiting] == [job.id]


async def test_stop_lets_a_claim_under_way_finish_and_ends_the_loop() -> None:
    """A claim cut short may have committed: a fire claimed but unknown here would be lost."""
    [job] = jobs(1).values()

    class SlowAnswer(MemoryStore):
        def __init__(self, clock: Clock) -> None:
            super().__init__(clock)
            self.asked = asyncio.Event()
            self.answer = asyncio.Event()

        async def claim_ahead(self, fires: Sequence[tuple[str, datetime, bool]], node: str) -> list[Run]:
            won = await super().claim_ahead(fires, node)  # committed...
            self.asked.set()
            await self.answer.wait()  # ... but the answer is still on its way
            return won

    clock = Clock(TAKEOVER)
    store = SlowAnswer(clock)
    ahead = claim_ahead(store, "solo", Schedule([(job, FIRE)]), clock)
    loop = asyncio.create_task(ahead.run())
    try:
        await asyncio.wait_for(store.asked.wait(), timeout=5)
        ahead.stop()
        assert ahead.stopping
        store.answer.set()
        await asyncio.wait_for(asyncio.shield(loop), timeout=5)  # ends by itself
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
    assert [(run.job_id, run.scheduled_for) for run in ahead.waiting] == [(job.id, FIRE)]
    assert len(claims(store)) == 1
