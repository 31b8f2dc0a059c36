"""Claim ahead across replicas: real engines on one database, real time.

Fires are claimed about a second before they are due, each replica its share,
and at half that window every replica takes over what is still unclaimed. These
tests wait for real fire times ("every N" schedules fire at multiples of N
seconds since the epoch) and look at maintd.runs and the engines' metrics.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from pydantic import BaseModel, ConfigDict

from maintd.admin_api.interface import Actor
from maintd.jobs import JobContext, task
from maintd.scheduler.config.model import Config
from maintd.scheduler.config.reload import diff_configs
from maintd.scheduler.engine import Engine
from maintd.scheduler.engine.claimed_ahead import ClaimedAhead, NoClaimAhead
from maintd.scheduler.store.records import Run
from maintd.scheduler.store.run_store import RunStore
from maintd.testing import frozen_engine
from tests.configs import make_config, sleep_job, sql_job
from tests.engines import StartEngine, beat

pytestmark = pytest.mark.integration

BOB = Actor("bob", "operator", "10.0.0.9")
# Beats (a third of the lease) would refresh heartbeat_at, which tells here when a run
# was claimed; with this lease none comes during a test.
LONG_LEASE = {"lease": "10m"}
MARKERS_DDL = "CREATE TABLE IF NOT EXISTS test_markers (marker text, run_id bigint)"


def now() -> datetime:
    return datetime.now(UTC)


def next_multiple(period_s: int, after: datetime) -> datetime:
    """The first fire of ``every {period_s}s`` strictly after ``after``."""
    return datetime.fromtimestamp((math.floor(after.timestamp() / period_s) + 1) * period_s, UTC)


async def sleep_until(moment: datetime) -> None:
    await asyncio.sleep(max(0.0, (moment - now()).total_seconds()))


async def eventually(check: Callable[[], Awaitable[bool]], *, timeout: float, what: str) -> None:
    """Poll a condition that has no event to await (rows in the database)."""
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"not within {timeout}s: {what}") from None


async def first_waiting(engine: Engine, *, timeout: float = 10) -> list[Run]:
    """The runs this engine claimed ahead, as soon as it holds any."""
    assert isinstance(engine.ahead, ClaimedAhead), "claiming ahead is off"
    async with asyncio.timeout(timeout):
        while not (waiting := engine.ahead.waiting()):
            await asyncio.sleep(0.005)
    return waiting


async def fire_rows(store: RunStore, fire: datetime) -> list[asyncpg.Record]:
    return await store.pool.fetch(
        "SELECT * FROM maintd.runs WHERE scheduled_for = $1 AND trigger = 'schedule' ORDER BY job_id", fire
    )


async def all_ended(store: RunStore, fire: datetime, count: int) -> bool:
    rows = await fire_rows(store, fire)
    return len(rows) == count and all(row["status"] != "running" for row in rows)


async def fire_handled(engines: list[Engine], fire: datetime) -> None:
    """Every engine's APScheduler has handed over ``fire``, and what it started has ended."""
    async with asyncio.timeout(15):
        for engine in engines:
            while (upcoming := engine.timers.next_fire_time()) is not None and upcoming <= fire:
                await asyncio.sleep(0.02)
            await engine.idle()


def fires_of(engine: Engine, outcome: str, job_ids: list[str]) -> int:
    return int(sum(engine.metrics.job(job_id).fires[outcome].value for job_id in job_ids))


async def markers_of(store: RunStore, run_id: int) -> int:
    await store.pool.execute(MARKERS_DDL)
    return int(await store.pool.fetchval("SELECT count(*) FROM test_markers WHERE run_id = $1", run_id))


def thirty_jobs(period_s: int) -> Config:
    return make_config(
        {f"job-{n:02d}": sql_job(schedule=f"every {period_s}s") for n in range(30)}, scheduler=LONG_LEASE
    )


async def test_replicas_share_one_fire_of_thirty_jobs_and_run_each_once(
    start_engine: StartEngine, store: RunStore
) -> None:
    period = 6
    config = thirty_jobs(period)
    job_ids = list(config.jobs)
    nodes = ["node-a", "node-b", "node-c"]
    # Start right after a fire time: the next one is then the first fire every engine
    # sees, so the fires metrics count that fire alone.
    await sleep_until(next_multiple(period, now()) + timedelta(milliseconds=50))
    fire = next_multiple(period, now())
    engines = [await start_engine(config, node=node) for node in nodes]
    # Every node registered before the first owner pass (a window before the fire).
    assert now() < fire - timedelta(seconds=2), "the engines took too long to start"

    await sleep_until(fire)
    await eventually(lambda: all_ended(store, fire, len(job_ids)), timeout=15, what="runs of the fire ended")
    await fire_handled(engines, fire)

    rows = await fire_rows(store, fire)
    assert [row["job_id"] for row in rows] == job_ids  # exactly one run per job
    assert {row["status"] for row in rows} == {"succeeded"}
    assert all(row["started_at"] is not None and row["started_at"] >= fire for row in rows)  # the start written
    # Claimed before the fire time (claim ahead), not by a race at it.
    assert all(row["heartbeat_at"] < fire for row in rows), [(r["job_id"], r["heartbeat_at"]) for r in rows]
    per_node = Counter(row["node"] for row in rows)
    assert set(per_node) == set(nodes), per_node  # each replica got a share

    for engine in engines:
        assert fires_of(engine, "ran", job_ids) == per_node[engine.node]
        assert fires_of(engine, "taken", job_ids) == len(job_ids) - per_node[engine.node]
        assert fires_of(engine, "skipped", job_ids) == fires_of(engine, "missed", job_ids) == 0
    assert sum(fires_of(engine, "taken", job_ids) for engine in engines) == len(job_ids) * (len(nodes) - 1)


async def test_a_registered_node_that_is_not_running_has_its_share_taken_over(
    start_engine: StartEngine, store: RunStore
) -> None:
    period = 2
    config = thirty_jobs(period)
    job_ids = list(config.jobs)
    # Registered and heartbeating as far as the database knows, but nothing runs it.
    await store.pool.execute(
        "INSERT INTO maintd.nodes (node, started_at, heartbeat_at) VALUES ('node-ghost', now(), now())"
    )
    engines = [await start_engine(config, node=node) for node in ("node-a", "node-b")]
    fire = next_multiple(period, now() + timedelta(seconds=1.5))
    ahead = engines[-1].ahead  # started last: it saw every node register
    assert isinstance(ahead, ClaimedAhead)
    assert ahead.decisions.live == ["node-a", "node-b", "node-ghost"]
    ghost_share = [job_id for job_id in job_ids if ahead.decisions.owner((job_id, fire)) == "node-ghost"]
    assert ghost_share  # else the test would prove nothing

    await sleep_until(fire)
    await eventually(lambda: all_ended(store, fire, len(job_ids)), timeout=15, what="runs of the fire ended")
    await fire_handled(engines, fire)

    rows = {row["job_id"]: row for row in await fire_rows(store, fire)}
    assert sorted(rows) == job_ids  # no fire missing
    assert {row["status"] for row in rows.values()} == {"succeeded"}
    assert {row["node"] for row in rows.values()} <= {"node-a", "node-b"}
    # The ghost's share was taken over ahead of time (at half the window), not at the fire time.
    late = [(job_id, rows[job_id]["heartbeat_at"]) for job_id in ghost_share if rows[job_id]["heartbeat_at"] >= fire]
    assert late == []


async def test_cancel_of_a_run_claimed_ahead_ends_it_cancelled_before_its_job_runs(
    start_engine: StartEngine, store: RunStore
) -> None:
    engine = await start_engine(
        make_config({"marked": sleep_job(1, schedule="every 2s", params={"marker": "marked"})}, scheduler=LONG_LEASE)
    )
    [waiting] = await first_waiting(engine)
    assert waiting.scheduled_for is not None and waiting.started_at is None
    accepted = await engine.admin.cancel_run(waiting.id, BOB)
    assert accepted.status == "running"
    assert now() < waiting.scheduled_for, "the cancel came too late to test a run not started yet"

    async def ended() -> bool:
        return (await engine.admin.get_run(waiting.id)).status != "running"

    await eventually(ended, timeout=15, what="the cancelled run ended")
    run = await engine.admin.get_run(waiting.id)
    assert (run.status, run.error, await markers_of(store, waiting.id)) == ("cancelled", "cancelled by bob", 0)
    assert run.started_at is None


async def test_stop_runs_the_fires_it_claimed_ahead_and_leaves_the_cluster(store: RunStore) -> None:
    config = make_config({f"job-{n}": sql_job(schedule="every 2s") for n in range(5)}, scheduler=LONG_LEASE)
    engine = Engine(config, store, node="node-leaving")
    await engine.start()
    try:
        async with asyncio.timeout(10):
            while len(waiting := await first_waiting(engine)) < len(config.jobs):
                await asyncio.sleep(0.005)
        fire = waiting[0].scheduled_for
        assert fire is not None and {run.scheduled_for for run in waiting} == {fire}
        assert now() < fire
        assert await store.pool.fetchval("SELECT count(*) FROM maintd.nodes WHERE node = 'node-leaving'") == 1
    finally:
        await engine.stop(timedelta(seconds=5))

    rows = await fire_rows(store, fire)
    assert sorted(row["id"] for row in rows) == sorted(run.id for run in waiting)
    assert [(row["status"], row["started_at"] is not None) for row in rows] == [("succeeded", True)] * len(rows)
    assert await store.pool.fetchval("SELECT count(*) FROM maintd.runs WHERE status = 'running'") == 0
    assert await store.pool.fetchval("SELECT count(*) FROM maintd.nodes WHERE node = 'node-leaving'") == 0


@pytest.mark.parametrize("change", ["rescheduled", "removed"])
async def test_reload_that_reschedules_or_removes_a_job_skips_its_fire_claimed_ahead(
    start_engine: StartEngine, store: RunStore, change: str
) -> None:
    old = make_config({"tick": sleep_job(0.2, schedule="every 2s", params={"marker": "tick"})}, scheduler=LONG_LEASE)
    new_jobs = (
        {"tick": sleep_job(0.2, schedule="every 3s", params={"marker": "tick"})} if change == "rescheduled" else {}
    )
    new = make_config(new_jobs, scheduler=LONG_LEASE)
    engine = await start_engine(old)
    [waiting] = await first_waiting(engine)
    fire = waiting.scheduled_for
    assert fire is not None
    diff = diff_configs(old, new)
    if change == "rescheduled":
        assert diff.changed == {"tick": {"schedule": ["every 2s", "every 3s"]}}
    else:
        assert diff.removed == ["tick"]
    await engine.apply_config(new, diff)
    assert now() < fire, "the reload came too late to test a fire claimed ahead"

    run = await engine.admin.get_run(waiting.id)
    assert run.status == "skipped"
    assert run.error is not None and "reload" in run.error
    assert run.finished_at is not None

    # The old fire time passes: the run is not started after all.
    await sleep_until(fire + timedelta(milliseconds=300))
    await engine.idle()
    run = await engine.admin.get_run(waiting.id)
    assert (run.status, run.started_at, await markers_of(store, waiting.id)) == ("skipped", None, 0)
    assert waiting.id not in {r.id for r in engine.ahead.waiting()}


async def test_reload_that_changes_only_a_jobs_params_runs_its_fire_claimed_ahead_with_the_new_ones(
    start_engine: StartEngine, store: RunStore
) -> None:
    # The run claimed ahead was built when claimed (scheduler/engine/claimed_ahead.py):
    # a reload in between must not leave it with the old settings.
    old = make_config({"tick": sleep_job(0, schedule="every 2s", params={"marker": "before"})}, scheduler=LONG_LEASE)
    new = make_config({"tick": sleep_job(0, schedule="every 2s", params={"marker": "after"})}, scheduler=LONG_LEASE)
    engine = await start_engine(old)
    [waiting] = await first_waiting(engine)
    fire = waiting.scheduled_for
    assert fire is not None
    diff = diff_configs(old, new)
    assert list(diff.changed) == ["tick"] and list(diff.changed["tick"]) == ["params"]
    await engine.apply_config(new, diff)
    assert now() < fire, "the reload came too late to test a fire claimed ahead"
    assert [run.id for run in engine.ahead.waiting()] == [waiting.id]  # kept

    await eventually(lambda: all_ended(store, fire, 1), timeout=10, what="the fire's run ended")
    run = await engine.admin.get_run(waiting.id)
    assert (run.status, run.started_at is not None) == ("succeeded", True)
    markers = await store.pool.fetch("SELECT marker FROM test_markers WHERE run_id = $1", waiting.id)
    assert [row["marker"] for row in markers] == ["after"]


@pytest.mark.parametrize("case", ["caught up", "catch_up none", "next fire came"])
async def test_a_fire_claimed_ahead_by_a_replica_that_died_is_run_late_once_by_its_reaper(
    start_engine: StartEngine, store: RunStore, case: str
) -> None:
    if case == "next fire came":  # an "every 2s" fire 4-6 s ago: later fires stand for it
        schedule, fire = "every 2s", next_multiple(2, now()) - timedelta(seconds=6)
    else:  # today's @daily fire: the next is tomorrow
        schedule, fire = "@daily", now().replace(hour=0, minute=0, second=0, microsecond=0)
    catch_up = "none" if case == "catch_up none" else "once"
    config = make_config(
        {"nightly": sleep_job(0, schedule=schedule, catch_up=catch_up, params={"marker": "nightly"})},
        scheduler=LONG_LEASE,
    )
    engine = await start_engine(config, node="node-b")
    # A replica claimed the fire ahead, then fell silent before it was due, a lease ago. Not
    # as an exclusive claim: this engine's own fires of the job may be running meanwhile.
    [ghost] = await store.claim_ahead([("nightly", fire, False)], "node-dead")
    await store.pool.execute("UPDATE maintd.runs SET heartbeat_at = now() - interval '1 hour' WHERE id = $1", ghost.id)

    await beat(engine)
    await engine.idle()

    rows = await store.pool.fetch(
        "SELECT * FROM maintd.runs WHERE job_id = 'nightly' AND scheduled_for = $1 ORDER BY attempt", fire
    )
    assert [(row["id"], row["status"], row["node"]) for row in rows[:1]] == [(ghost.id, "missed", "node-dead")]
    if case != "caught up":
        assert len(rows) == 1
        return
    [_, late] = rows
    assert (late["trigger"], late["attempt"], late["status"], late["node"]) == ("catch_up", 2, "succeeded", "node-b")
    assert await markers_of(store, late["id"]) == 1
    # Reaped once, run once: a second beat finds nothing more to do.
    await beat(engine)
    await engine.idle()
    assert await store.pool.fetchval("SELECT count(*) FROM maintd.runs WHERE scheduled_for = $1", fire) == 2


async def test_a_run_claimed_ahead_shows_its_start_while_it_runs(start_engine: StartEngine, store: RunStore) -> None:
    # Runs ending in their first step have their start written with their outcome; one
    # still running has it written on its own, right after the fire pass.
    engine = await start_engine(
        make_config({"long": sleep_job(2, schedule="every 3s", params={"marker": "long"})}, scheduler=LONG_LEASE)
    )
    [waiting] = await first_waiting(engine)
    assert waiting.scheduled_for is not None

    async def started() -> bool:
        row = await store.pool.fetchrow("SELECT status, started_at FROM maintd.runs WHERE id = $1", waiting.id)
        return row["started_at"] is not None

    await eventually(started, timeout=10, what="the run's start written")
    row = await store.pool.fetchrow("SELECT status, started_at FROM maintd.runs WHERE id = $1", waiting.id)
    assert row["status"] == "running" and row["started_at"] >= waiting.scheduled_for


async def test_frozen_clock_engines_do_not_claim_ahead(db_dsn: str) -> None:
    config = make_config({"tick": sql_job(schedule="every 2s")})
    fire = datetime(2026, 5, 1, 12, 0, 2, tzinfo=UTC)
    async with frozen_engine(config, dsn=db_dsn, at="2026-05-01T12:00:01.500+00:00") as daemon:
        assert isinstance(daemon.engine.ahead, NoClaimAhead)
        # Real time passes (several claim-ahead passes' worth) while the clock stands half a second before the fire.
        await asyncio.sleep(0.8)
        assert await daemon.runs() == []
        await daemon.advance(timedelta(seconds=1))
        [run] = await daemon.runs("tick")
        assert (run.scheduled_for, run.started_at, run.status) == (fire, fire, "succeeded")


# Wedge runs wait for the test to open their gate, then block the loop until the given instant.
WEDGE_UNTIL: dict[str, float] = {}
WEDGE_GATES: dict[str, asyncio.Event] = {}


class WedgeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gate: str


@task()
async def wedge(ctx: JobContext, params: WedgeParams) -> dict[str, float]:
    """Block the whole event loop, as a job calling blocking code by mistake does, from the
    moment the test opens the gate (no database round trip in between) to a set instant."""
    await WEDGE_GATES.setdefault(params.gate, asyncio.Event()).wait()
    began = time.time()
    time.sleep(max(0.0, WEDGE_UNTIL[params.gate] - began))  # noqa: ASYNC251  # the point: a wedged loop
    return {"began": began}


async def test_a_blocked_loop_records_the_older_fire_claimed_ahead_missed_and_runs_the_newest(
    start_engine: StartEngine, store: RunStore
) -> None:
    gate = "blocked-loop"
    WEDGE_GATES[gate] = asyncio.Event()
    engine = await start_engine(
        make_config(
            {
                # No catch-up: a start just after a boundary would otherwise catch that fire up,
                # and its run could still be going when the newest fire is claimed.
                "tick": sql_job(schedule="every 2s", catch_up="none"),
                "wedge": {"task": f"{__name__}:wedge", "schedule": "@yearly", "params": {"gate": gate}},
            },
            scheduler=LONG_LEASE,
        )
    )
    wedged = await engine.admin.trigger("wedge", BOB)  # waits at its gate
    [claimed] = await first_waiting(engine)
    fire = claimed.scheduled_for
    assert fire is not None
    newest = fire + timedelta(seconds=2)
    # Blocked from now (before the fire) until past the next fire: APScheduler then hands both over at once.
    WEDGE_UNTIL[gate] = (newest + timedelta(milliseconds=300)).timestamp()
    WEDGE_GATES[gate].set()
    await fire_handled([engine], newest)
    wedge_run = await engine.admin.get_run(wedged.run_id)
    assert wedge_run.status == "succeeded"
    assert wedge_run.result["began"] < fire.timestamp(), "the loop was blocked too late"

    async def both_recorded() -> bool:
        return await all_ended(store, fire, 1) and await all_ended(store, newest, 1)

    await eventually(both_recorded, timeout=10, what="both fires recorded")
    [older_row], [newest_row] = await fire_rows(store, fire), await fire_rows(store, newest)
    assert (older_row["id"], older_row["status"], older_row["started_at"]) == (claimed.id, "missed", None)
    assert (
        older_row["error"].startswith("missed: the cluster was ")
        and "a newer fire of the job was already due" in older_row["error"]
    )
    assert (newest_row["status"], newest_row["error"]) == ("succeeded", None)


class SlowReplies(RunStore):
    """claim_ahead's answer arrives late, as over a slow network: the rows are
    committed before the engine hears of them."""

    def __init__(self, store: RunStore) -> None:
        super().__init__(store.pool, store.dsn)
        self.answering = asyncio.Event()

    async def claim_ahead(self, fires: Sequence[tuple[str, datetime, bool]], node: str) -> list[Run]:
        won = await super().claim_ahead(fires, node)
        self.answering.set()
        await asyncio.sleep(0.3)
        return won


async def test_stop_during_a_claim_ahead_statement_leaves_no_fire_claimed_and_unrun(store: RunStore) -> None:
    config = make_config({f"job-{n}": sql_job(schedule="every 2s") for n in range(5)}, scheduler=LONG_LEASE)
    slow = SlowReplies(store)
    engine = Engine(config, slow, node="node-leaving")
    await engine.start()
    try:
        await asyncio.wait_for(slow.answering.wait(), timeout=10)
    finally:
        await engine.stop(timedelta(seconds=5))
        await slow.close()

    rows = await store.pool.fetch("SELECT job_id, status, started_at FROM maintd.runs ORDER BY job_id")
    # The claim committed: the fires it took are run here before the stop completes, not left running.
    assert [row["job_id"] for row in rows] == list(config.jobs)
    assert [(row["status"], row["started_at"] is not None) for row in rows] == [("succeeded", True)] * len(rows)


class LateReplies(RunStore):
    """claim_ahead's answer reaches the engine only after the fires it claimed are due:
    a slow network, or a loop blocked by a job between the commit and the reply."""

    def __init__(self, pool: asyncpg.Pool, dsn: str) -> None:
        super().__init__(pool, dsn)
        self.late: list[Run] = []
        self.answered = asyncio.Event()

    async def claim_ahead(self, fires: Sequence[tuple[str, datetime, bool]], node: str) -> list[Run]:
        won = await super().claim_ahead(fires, node)
        due = [run.scheduled_for for run in won if run.scheduled_for is not None]
        if due:
            await sleep_until(max(due) + timedelta(milliseconds=200))
            self.late += won
            self.answered.set()
        return won


async def test_a_fire_whose_claim_ahead_answer_comes_after_its_time_is_not_lost(store: RunStore) -> None:
    config = make_config({"tick": sql_job(schedule="every 2s")}, scheduler=LONG_LEASE)
    late = LateReplies(store.pool, store.dsn)
    engine = Engine(config, late, node="node-a")
    await engine.start()
    try:
        await asyncio.wait_for(late.answered.wait(), 10)
        [claimed] = late.late  # answered 200 ms after its fire time
        fire = claimed.scheduled_for
        assert fire is not None and now() > fire
        await fire_handled([engine], fire)

        async def decided() -> bool:
            return (await engine.admin.get_run(claimed.id)).status != "running"

        # Not left running (it would block the job's next fires as overlapping for a minute).
        await eventually(decided, timeout=5, what=f"run {claimed.id}, claimed ahead, ran or was recorded")
        # Run late rather than lost: the claim made at the fire time lost to this one.
        assert (await engine.admin.get_run(claimed.id)).status == "succeeded"
        # One replica: no fire can have been taken by another.
        assert fires_of(engine, "taken", ["tick"]) == 0
    finally:
        await engine.stop(timedelta(seconds=5))
        await late.close()
