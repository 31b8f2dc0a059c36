"""Fencing (scheduler/engine/fencing.py): a run the database no longer holds is given up
by its owner, and what the owner saw is kept only as the run's late outcome."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.configs import make_config, sleep_job
from tests.engines import OPS, memory_engine
from tests.memory_store import MemoryStore

pytestmark = pytest.mark.unit

T = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T

    def __call__(self) -> datetime:
        return self.now


async def test_a_run_declared_lost_elsewhere_is_cancelled_at_its_owners_next_beat_and_stays_lost() -> None:
    clock = Clock()
    store = MemoryStore(clock)
    await store.register_jobs(["slow"], T)
    engine = memory_engine(make_config({"slow": sleep_job(60)}), store, clock=clock)
    started = await engine.admin.trigger("slow", OPS)
    await engine.fencing.open()

    # Another replica's reaper, once the run's heartbeat is older than the lease.
    clock.now += engine.state.lease + timedelta(seconds=1)
    [reaped] = await store.reap_lost_runs(engine.state.lease)
    assert reaped.id == started.run_id

    await engine.fencing.keep()  # the owner's beat: the run is no longer running in the database
    await engine.idle()

    run = await store.get_run(started.run_id)
    assert run is not None and run.status == "lost"
    assert run.late_outcome is not None and run.late_outcome.status == "cancelled"
    assert run.late_outcome.error is not None and "no longer running in the database" in run.late_outcome.error
    assert engine.runs.active == {}
    await engine.fencing.close()
