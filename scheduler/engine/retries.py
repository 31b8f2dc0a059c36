"""Retries of failed runs: the next attempt fires after a backoff that every replica
computes alike (seeded by the run id), so whichever replica schedules it, the
retry is claimed once, at the same time."""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import timedelta

from maintd.scheduler.config.model import JobConfig
from maintd.scheduler.engine.state import EngineState
from maintd.scheduler.engine.timers import Timers
from maintd.scheduler.store.records import Run

# Retry backoff: base * 2**(attempt-1), capped, times a jitter in [0.5, 1.5).
RETRY_BASE = timedelta(seconds=10)
RETRY_CAP = timedelta(hours=1)
# Failed runs are picked up for retry by any replica for this long after they ended.
RETRY_LOOKBACK = timedelta(days=1)


class Retries:
    def __init__(self, state: EngineState, timers: Timers) -> None:
        self._state = state
        self._timers = timers
        # The jobs with retries, worked out again only when a reload changed the jobs:
        # the sweep runs at every heartbeat.
        self._retrying: tuple[Mapping[str, JobConfig], list[str]] | None = None

    def after_failure(self, job: JobConfig, run: Run) -> None:
        """A run failed or timed out: its next attempt fires after the backoff, if it has one left.
        A dry run or a replay is not retried: the operator asks again (a replayed fire that
        failed stays replayable)."""
        if run.attempt > job.retries or run.dry_run or run.trigger == "replay":
            return
        base = min(RETRY_BASE * 2 ** (run.attempt - 1), RETRY_CAP)
        delay = base * random.Random(run.id).uniform(0.5, 1.5)
        at = (run.finished_at or self._state.clock()) + delay
        if self._timers.add_retry(f"{job.id}#retry-of-{run.id}", at, run):
            self._state.log.info(
                "retry_scheduled", job_id=job.id, run_id=run.id, attempt=run.attempt + 1, at=at.isoformat()
            )

    async def sweep(self) -> None:
        """Schedule retries of failed runs whose owner is gone (died, or declared them lost)."""
        state = self._state
        if self._retrying is None or self._retrying[0] is not state.jobs:
            self._retrying = (state.jobs, [job.id for job in state.jobs.values() if job.retries > 0])
        retrying = self._retrying[1]
        if not retrying or not state.accepting or not state.scheduling():
            return
        for run in await state.store.runs_to_retry(retrying, state.clock() - RETRY_LOOKBACK):
            if (job := state.jobs.get(run.job_id)) is not None:  # None: removed by a reload meanwhile
                self.after_failure(job, run)
