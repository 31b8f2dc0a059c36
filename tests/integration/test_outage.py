"""Database outages, step by step: no fire vanishes, and none is judged by a stale row.

The clock is frozen (it moves only when the test says so) and the database is
made unreachable at chosen steps by a store the test passes in, so each
interleaving is the same on every run.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from freezegun import freeze_time

from maintd.scheduler.config.model import Config
from maintd.scheduler.engine import Engine
from maintd.scheduler.store.records import Run
from maintd.scheduler.store.run_store import Claim, RunStore
from maintd.testing import FrozenEngine
from tests.configs import make_config, sql_job
from tests.engines import StartEngine, beat

pytestmark = pytest.mark.integration

# Beats (housekeeping, recovery) only when the test calls beat(engine); a wrong
# clock is this test's own doing, not a reason to stop scheduling.
QUIET = {"lease": "10m", "max_clock_skew": "1d"}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


class Outage(RunStore):
    """The run store, unreachable while ``down`` is set (every call is refused, as by a
    stopped server); it also tells the test which fires were claimed ahead."""

    def __init__(self, store: RunStore) -> None:
        super().__init__(store.pool, store.dsn)
        self.down = False
        self.claimed_ahead: list[Run] = []
        self._answered = asyncio.Event()

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if not name.startswith("_") and inspect.iscoroutinefunction(value) and super().__getattribute__("down"):
            return _refused
        return value

    async def claim_ahead(self, fires: Any, node: str) -> list[Run]:
        won = await super().claim_ahead(fires, node)
        self.claimed_ahead += won
        self._answered.set()
        return won

    async def wait_claimed_ahead(self, fire: datetime, timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            while not any(run.scheduled_for == fire for run in self.claimed_ahead):
                self._answered.clear()
                await self._answered.wait()


async def _refused(*_args: Any, **_kwargs: Any) -> Any:
    raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")


@asynccontextmanager
async def engine_on(
    config: Config, store: RunStore, frozen_at: str, *, claim_ahead: bool
) -> AsyncIterator[FrozenEngine]:
    with freeze_time(at(frozen_at), real_asyncio=True) as frozen:
        engine = Engine(config, store, node="node-a", claim_ahead=timedelta(seconds=1 if claim_ahead else 0))
        await engine.start()
        try:
            yield FrozenEngine(engine, frozen)
        finally:
            await engine.stop(timedelta(seconds=5))
            await RunStore.close(store)  # an Outage's own line; not refused, even while down


def by_fire(runs: list[Run]) -> dict[str, list[tuple[str, str]]]:
    rows: dict[str, list[tuple[str, str]]] = {}
    for run in runs:
        assert run.scheduled_for is not None
        rows.setdefault(run.scheduled_for.strftime("%H:%M:%S"), []).append((run.trigger, run.status))
    return rows


async def test_fires_of_an_outage_are_recorded_even_when_a_later_fire_was_claimed_ahead_first(store: RunStore) -> None:
    # overlap = "allow": the catch-up run may still be going when the next fire is claimed ahead.
    config = make_config({"tick": sql_job(schedule="every 1s", overlap="allow")}, scheduler=QUIET)
    outage = Outage(store)
    async with engine_on(config, outage, "2026-12-07T00:31:45.500+00:00", claim_ahead=True) as daemon:
        await outage.wait_claimed_ahead(at("2026-12-07T00:31:46+00:00"))
        await daemon.advance(timedelta(seconds=1))  # 00:31:46.5: the 46 s fire ran
        outage.down = True
        await daemon.advance(timedelta(seconds=13))  # 00:31:59.5: 13 fires could not be claimed
        outage.down = False
        # The database is back. The next fire is claimed ahead, started at its time, and
        # only then does a heartbeat come round to look at the outage.
        await outage.wait_claimed_ahead(at("2026-12-07T00:32:00+00:00"))
        await daemon.advance(timedelta(seconds=1))  # 00:32:00.5
        await beat(daemon.engine)
        await daemon.settle()
        rows = by_fire(await daemon.runs("tick"))

    expected = {"00:31:46": [("schedule", "succeeded")]}
    expected |= {f"00:31:{s}": [("schedule", "missed")] for s in range(47, 59)}
    expected |= {"00:31:59": [("catch_up", "succeeded")], "00:32:00": [("schedule", "succeeded")]}
    assert rows == expected


async def test_a_fire_another_replica_ran_after_the_outage_does_not_hide_the_gap_before_it(store: RunStore) -> None:
    config = make_config({"tick": sql_job(schedule="every 1s")}, scheduler=QUIET)
    outage = Outage(store)
    async with engine_on(config, outage, "2026-12-07T00:31:45.500+00:00", claim_ahead=True) as daemon:
        await outage.wait_claimed_ahead(at("2026-12-07T00:31:46+00:00"))
        await daemon.advance(timedelta(seconds=1))
        outage.down = True
        await daemon.advance(timedelta(seconds=13))  # 00:31:59.5
        # Another replica reached the database first and ran the 00:32:00 fire.
        await store.pool.execute(
            """INSERT INTO maintd.runs (job_id, trigger, status, scheduled_for, exclusive, started_at, finished_at, node)
               VALUES ('tick', 'schedule', 'succeeded', $1, true, $1, $1, 'node-b')""",
            at("2026-12-07T00:32:00+00:00"),
        )
        await daemon.advance(timedelta(seconds=1))  # 00:32:00.5
        outage.down = False
        await beat(daemon.engine)
        await daemon.settle()
        rows = by_fire(await daemon.runs("tick"))

    expected = {"00:31:46": [("schedule", "succeeded")]}
    expected |= {f"00:31:{s}": [("schedule", "missed")] for s in range(47, 60)}
    # The newer fire ran: it stands for the missed ones, as after downtime.
    expected |= {"00:32:00": [("schedule", "succeeded")]}
    assert rows == expected


async def test_a_catch_up_is_not_judged_by_a_run_whose_owner_has_not_settled_it_yet(
    store: RunStore, start_engine: StartEngine
) -> None:
    # lease 3 s: owners beat every second; a row silent for 1.5 s is one whose owner may be away.
    config = make_config({"tick": sql_job(schedule="@hourly")}, scheduler={"lease": "3s"})
    # Down for an hour, and the job's last run ended during a database outage on node-a,
    # which could not write its outcome yet: its row still says running, beaten 2 s ago.
    await store.register_jobs(["tick"], datetime.now(UTC) - timedelta(minutes=61))
    stale = await store.pool.fetchval(
        """INSERT INTO maintd.runs (job_id, trigger, status, scheduled_for, exclusive, started_at, heartbeat_at, node)
           VALUES ('tick', 'manual', 'running', now(), true, now(), now() - interval '2 s', 'node-a') RETURNING id"""
    )
    engine = await start_engine(config, node="node-b")
    await asyncio.sleep(0.5)  # what a replica that judged by the row would have recorded by now
    assert [run.status for run in await engine.admin.list_runs(job_id="tick", status=None, limit=10)] == ["running"]
    # node-a is back and writes how its run ended: the catch-up runs.
    await store.finish_runs([(stale, "succeeded", datetime.now(UTC), None, None, None, None)])
    await asyncio.wait_for(engine.idle(), 5)
    runs = await engine.admin.list_runs(job_id="tick", status=None, limit=10)
    assert [(run.trigger, run.status) for run in runs if run.id != stale] == [("catch_up", "succeeded")]


async def test_a_catch_up_behind_a_live_run_is_skipped_naming_it(store: RunStore, start_engine: StartEngine) -> None:
    config = make_config({"tick": sql_job(schedule="@hourly")}, scheduler={"lease": "3s"})
    await store.register_jobs(["tick"], datetime.now(UTC) - timedelta(minutes=61))
    busy = await store.claim_run(
        Claim("tick", "manual", datetime.now(UTC), 1, True, datetime.now(UTC), "ops", "node-a", True)
    )
    assert busy is not None
    engine = await start_engine(config, node="node-b")
    await asyncio.wait_for(engine.idle(), 5)
    runs = await engine.admin.list_runs(job_id="tick", status=None, limit=10)
    assert [(run.trigger, run.status, run.error) for run in runs if run.id != busy.id] == [
        ("catch_up", "skipped", f"skipped: run {busy.id} was still running (overlap = 'forbid')")
    ]


async def test_a_paused_jobs_fire_is_skipped_as_paused_and_a_busy_one_as_busy(
    store: RunStore, start_engine: StartEngine
) -> None:
    config = make_config({"tick": sql_job(schedule="@hourly")}, scheduler={"lease": "3s"})
    await store.register_jobs(["tick"], datetime.now(UTC) - timedelta(minutes=61))
    await store.pool.execute("UPDATE maintd.job_state SET paused = true WHERE job_id = 'tick'")
    engine = await start_engine(config, node="node-b")
    await asyncio.wait_for(engine.idle(), 5)
    [run] = await engine.admin.list_runs(job_id="tick", status=None, limit=10)
    assert (run.trigger, run.status, run.error) == ("catch_up", "skipped", "skipped: the job is paused")
