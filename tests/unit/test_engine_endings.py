"""How a burst's endings reach the database (scheduler/engine/runs.py): runs that end
while an outcome write is in flight are recorded together in the next one, so a burst
of short jobs ending over many loop passes costs a few statements, not one (and a
pool connection) per pass."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from maintd.scheduler.store.records import Run
from tests.configs import make_config, sleep_job
from tests.engines import OPS, memory_engine
from tests.memory_store import MemoryStore

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
JOBS = 20


class SlowOutcomes(MemoryStore):
    """Outcome writes wait until released, and are counted."""

    def __init__(self) -> None:
        super().__init__(lambda: NOW)
        self.outcome_writes: list[int] = []
        self.release = asyncio.Event()

    async def finish_runs(
        self, outcomes: Sequence[tuple[int, str, datetime, Any, str | None, datetime | None]]
    ) -> list[Run]:
        self.outcome_writes.append(len(outcomes))
        await self.release.wait()
        return await super().finish_runs(outcomes)


async def test_runs_ending_while_an_outcome_write_is_in_flight_are_recorded_in_one_more_write() -> None:
    store = SlowOutcomes()
    # Each job ends in a loop pass of its own: 10 ms apart.
    config = make_config({f"job{n}": sleep_job(0.01 * n) for n in range(JOBS)})
    await store.register_jobs(list(config.jobs), NOW)
    engine = memory_engine(config, store, clock=lambda: NOW)
    for job_id in config.jobs:
        await engine.admin.trigger(job_id, OPS)
    while len(engine.runs.active) < JOBS or any(a.outcome is None for a in engine.runs.active.values()):
        await asyncio.sleep(0.01)  # every job ends while the first ending's write waits

    store.release.set()
    await engine.idle()

    assert store.outcome_writes == [1, JOBS - 1]
    runs = await store.list_runs(job_id=None, status=None, limit=100)
    assert sorted(run.status for run in runs) == ["succeeded"] * JOBS
