"""Fires waiting for room on this replica (see capacity.py): each job's newest.

Kept in the order they came, this replica's share apart from the others', so
that the fires claimed when room frees are the oldest of its own share first
(the replicas then claim different fires), and a fire that waited past its
job's misfire grace is met on the way and handed back to be recorded missed.
A newer fire of a job supersedes the one waiting; the older is handed back too.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime

from maintd.scheduler.config.model import JobConfig

FireKey = tuple[str, datetime]
Fire = tuple[JobConfig, datetime]


class WaitingFires:
    def __init__(self, owns: Callable[[FireKey], bool]) -> None:
        """``owns(key)``: whether the fire is this replica's share."""
        self._owns = owns
        self._newest: dict[str, Fire] = {}
        # (job id, fire time) in the order they came; an entry whose job has a newer fire
        # waiting, or none, is stale and skipped.
        self._own: deque[FireKey] = deque()
        self._others: deque[FireKey] = deque()

    def __len__(self) -> int:
        return len(self._newest)

    def job_ids(self) -> list[str]:
        return sorted(self._newest)

    def add(self, job: JobConfig, fire: datetime) -> datetime | None:
        """Let the fire wait; return the older fire of the job it supersedes, if one waited."""
        older = self._newest.get(job.id)
        if older is not None and older[1] >= fire:
            return None
        self._newest[job.id] = (job, fire)
        (self._own if self._owns((job.id, fire)) else self._others).append((job.id, fire))
        return older[1] if older is not None else None

    def take(self, room: int, now: datetime, jobs: Mapping[str, JobConfig]) -> tuple[list[Fire], list[Fire]]:
        """Up to ``room`` fires to claim now, with the job's settings as configured now; and
        the fires met on the way that waited past their job's misfire grace. Fires of jobs a
        reload removed are dropped."""
        chosen: list[Fire] = []
        expired: list[Fire] = []
        for queue in (self._own, self._others):
            while queue and len(chosen) < room:
                job_id, fire = queue.popleft()
                if (waiting := self._newest.get(job_id)) is None or waiting[1] != fire:
                    continue
                del self._newest[job_id]
                if (job := jobs.get(job_id)) is None:
                    continue
                (expired if now - fire > job.misfire_grace else chosen).append((job, fire))
        return chosen, expired

    def expired(self, now: datetime, jobs: Mapping[str, JobConfig]) -> list[Fire]:
        """Take out every fire that waited past its job's misfire grace (and those of removed
        jobs), however far back it waits; the order is rebuilt without stale entries."""
        expired: list[Fire] = []
        for job_id, (_, fire) in list(self._newest.items()):
            job = jobs.get(job_id)
            if job is None or now - fire > job.misfire_grace:
                del self._newest[job_id]
                if job is not None:
                    expired.append((job, fire))
        for queue in (self._own, self._others):
            kept = [key for key in queue if (waiting := self._newest.get(key[0])) is not None and waiting[1] == key[1]]
            queue.clear()
            queue.extend(kept)
        return expired

    def clear(self) -> None:
        self._newest.clear()
        self._own.clear()
        self._others.clear()
