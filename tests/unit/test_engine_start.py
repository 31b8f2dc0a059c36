"""How a burst of fires claimed ahead starts, on an engine's runs with a stand-in store.

What matters at a fire time is how soon every run's job starts (bench/claims.py):
runs claimed ahead are built when claimed, and the garbage collector waits until
the runs of the pass have made their first step.
"""

from __future__ import annotations

import gc
from datetime import UTC, datetime
from typing import Any

import pytest

from maintd.jobs import JobContext, task
from maintd.jobs.registry import NoParams
from maintd.scheduler.engine import Engine
from maintd.scheduler.metrics import Metrics
from maintd.scheduler.store.records import Run
from tests.configs import make_config

pytestmark = pytest.mark.unit

FIRE = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
JOBS = 5

# What each run saw when its job started: job id -> (its fire's ran count, its running
# gauge, whether the garbage collector was on).
_SEEN: dict[str, tuple[float, float, bool]] = {}
_METRICS: list[Metrics] = []


@task()
async def note_metrics(ctx: JobContext, params: NoParams) -> None:
    [metrics] = _METRICS
    ran = metrics.job(ctx.job_id).fires["ran"].value
    running = metrics.job(ctx.job_id).running.value
    _SEEN[ctx.job_id] = (ran, running, gc.isenabled())


class StandInStore:
    """Answers the calls a run's start and end make; the runs are this test's own."""

    pool = None

    def __init__(self) -> None:
        self.started: list[tuple[int, datetime]] = []
        self.finished: list[tuple[Any, ...]] = []

    async def mark_started(self, started: list[tuple[int, datetime]]) -> None:
        self.started += started

    async def finish_runs(self, outcomes: list[tuple[Any, ...]]) -> list[Run]:
        self.finished += outcomes
        return []

    async def write_runs_logs(self, batches: list[Any]) -> None:
        pass


def claimed(run_id: int, job_id: str) -> Run:
    return Run(
        id=run_id, job_id=job_id, trigger="schedule", status="running", scheduled_for=FIRE,
        started_at=None, finished_at=None, node="node-a",
    )  # fmt: skip


async def test_a_burst_starts_every_run_with_the_collector_waiting_and_counts_each_once() -> None:
    assert gc.isenabled()
    config = make_config(
        {f"job-{n}": {"task": f"{__name__}:note_metrics", "schedule": "every 60s"} for n in range(JOBS)}
    )
    store = StandInStore()
    engine = Engine(config, store, node="node-a")  # type: ignore[arg-type]  # the stand-in answers what runs call
    _METRICS[:] = [engine.metrics]
    _SEEN.clear()
    runs = [claimed(n + 1, job_id) for n, job_id in enumerate(engine.jobs)]
    # Built when the claims ahead are won...
    prepared = [engine.runs.prepare(engine.jobs[run.job_id], run) for run in runs]

    for active in prepared:  # ...and started when APScheduler hands the fire over.
        engine.runs.start_claimed_ahead(active)
    await engine.idle()

    # Every job started with its fire counted, running, and the garbage collector waiting.
    assert _SEEN == {job_id: (1.0, 1.0, False) for job_id in engine.jobs}
    assert gc.isenabled()
    # And then each was counted once, and is no longer running.
    for job_id in engine.jobs:
        assert engine.metrics.job(job_id).fires["ran"].value == 1
        assert engine.metrics.job(job_id).running.value == 0
        assert engine.metrics.job(job_id).runs["succeeded"].value == 1
    # The jobs ended in their first step: each start time went with its outcome, not in a
    # statement of its own.
    assert store.started == []
    assert sorted(outcome[0] for outcome in store.finished) == [run.id for run in runs]
    assert all(outcome[5] is not None for outcome in store.finished)
