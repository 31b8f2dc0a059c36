"""The dead man's switch: a job with ``expect_success_within`` and no success in that
window is overdue (failing, never run or paused alike), logged and alerted once.
Every job's last success, cluster-wide, goes into the metrics on the way."""

from __future__ import annotations

import contextlib

from maintd.jobs.durations import format_duration
from maintd.scheduler.alerts import Alerter
from maintd.scheduler.engine.state import EngineState


class OverdueWatch:
    def __init__(self, state: EngineState, alerter: Alerter) -> None:
        self._state = state
        self._alerter = alerter
        # Jobs found overdue at the last check.
        self._overdue: set[str] = set()

    async def check(self) -> None:
        state = self._state
        jobs, metrics, now = state.jobs, state.metrics, state.clock()
        last = await state.store.last_successes(list(jobs))
        first_seen = {job_id: row["first_seen"] for job_id, row in (await state.store.job_states()).items()}
        overdue = set()
        for job in jobs.values():
            success = last.get(job.id)
            if success is not None:
                metrics.job(job.id).last_success.set(success.timestamp())
            late = job.overdue(success, first_seen.get(job.id, now), now)
            if late is None:
                with contextlib.suppress(KeyError):  # the window was removed by a reload
                    metrics.overdue.remove(job.id)
                continue
            metrics.overdue.labels(job.id).set(int(late))
            if not late:
                continue
            overdue.add(job.id)
            assert job.expect_success_within is not None  # only a job with a window is overdue
            if job.id not in self._overdue:
                state.log.error(
                    "job_overdue",
                    job_id=job.id,
                    last_success=success.isoformat() if success else None,
                    expect_success_within=format_duration(job.expect_success_within),
                )
            await self._alerter.job_overdue(job.id, success, job.expect_success_within, now)
        for job_id in self._overdue - overdue:
            state.log.info("job_no_longer_overdue", job_id=job_id)
        self._overdue = overdue
