"""The dead man's switch: a job with ``expect_success_within`` and no success in that
window is overdue (failing, never run or paused alike), logged and alerted once.
Every job's last success, cluster-wide, goes into the metrics on the way.

A beat costs what changed, not what is configured: the watch reads the last
success of the jobs with a window only, and the metrics learn of the successes
recorded since the previous beats (see :class:`LastSuccesses`).
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Mapping
from datetime import datetime

from maintd.jobs.durations import format_duration
from maintd.scheduler.alerts import Alerter
from maintd.scheduler.config.model import JobConfig
from maintd.scheduler.engine.state import EngineState

# Successes are asked for from where the check before last left off: a claim's insert
# still uncommitted then (it drew its run number before others committed) has long
# committed since.
_LAG_CHECKS = 2
# No run is numbered this high: asks for no success, only where to start.
_NONE = 2**63 - 1


class OverdueWatch:
    def __init__(self, state: EngineState, alerter: Alerter) -> None:
        self._state = state
        self._alerter = alerter
        # Jobs found overdue at the last check.
        self._overdue: set[str] = set()
        # Jobs whose overdue gauge is set.
        self._gauged: set[str] = set()
        # When each job was first seen: written once (its first registration), read once.
        self._first_seen: dict[str, datetime] = {}
        self._watched: tuple[Mapping[str, JobConfig], list[JobConfig]] | None = None
        self.last_successes = LastSuccesses(state)

    def _windowed(self) -> list[JobConfig]:
        """The jobs with ``expect_success_within``, worked out again only after a reload."""
        jobs = self._state.jobs
        if self._watched is None or self._watched[0] is not jobs:
            self._watched = (jobs, [job for job in jobs.values() if job.expect_success_within is not None])
        return self._watched[1]

    async def check(self) -> None:
        state = self._state
        metrics, now = state.metrics, state.clock()
        await self.last_successes.refresh()
        windowed = self._windowed()
        last: dict[str, datetime] = {}
        if windowed:
            ids = [job.id for job in windowed]
            # Read for these jobs every time: an alert must not hang on the metrics' catching up.
            last = await state.store.last_successes(ids)
            if unseen := [job_id for job_id in ids if job_id not in self._first_seen]:
                states = await state.store.job_states(unseen)
                self._first_seen.update({job_id: row["first_seen"] for job_id, row in states.items()})
        for job_id in self._gauged - {job.id for job in windowed}:  # the window was removed by a reload
            with contextlib.suppress(KeyError):  # or the job with it
                metrics.overdue.remove(job_id)
            self._gauged.discard(job_id)
        overdue = set()
        for job in windowed:
            success = last.get(job.id)
            late = job.overdue(success, self._first_seen.get(job.id, now), now)
            assert late is not None and job.expect_success_within is not None  # a job with a window
            metrics.overdue.labels(job.id).set(int(late))
            self._gauged.add(job.id)
            if not late:
                continue
            overdue.add(job.id)
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


class LastSuccesses:
    """Keeps ``maintd_last_success_timestamp_seconds`` of every job, on any replica,
    current: each job's last success once (at start, or when a reload adds it), then at
    each check the successes of the runs numbered since and of those running then: a
    check reads what changed, whatever the number of jobs."""

    def __init__(self, state: EngineState) -> None:
        self._state = state
        # What each of the last checks would ask about next, oldest first: from which run
        # number on, and the runs running then.
        self._asks: deque[tuple[int, list[int]]] = deque(maxlen=_LAG_CHECKS)
        self._jobs: Mapping[str, JobConfig] = {}

    async def refresh(self) -> None:
        state = self._state
        # Where to ask from next is known before anything is read: nothing falls between.
        from_id = self._asks[0][0] if self._asks else _NONE
        # The runs running at either of the last checks (one may have committed its claim
        # only after the older one looked).
        running = sorted({run_id for _, ids in self._asks for run_id in ids})
        successes, next_from, running_now = await state.store.successes_since(from_id, running)
        self._asks.append((next_from, running_now))
        if state.jobs is not self._jobs:  # the start, or a reload
            if new := [job_id for job_id in state.jobs if job_id not in self._jobs]:
                successes = {**await state.store.last_successes(new), **successes}
            self._jobs = state.jobs
        for job_id, at in successes.items():
            if job_id in state.jobs:  # a removed job's series are gone, not to be made again
                state.metrics.set_last_success(job_id, at.timestamp())
