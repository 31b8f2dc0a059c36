"""An APScheduler executor that hands due fire times to the engine.

APScheduler 3 calls a job's function without telling it which fire time it is
for, and its instance limit silently drops fires. This executor passes the
fire times themselves on, and keeps no instance count: whether a fire runs is
decided by the engine's claim in the database, and a fire that does not run is
recorded, never dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from apscheduler.executors.base import BaseExecutor
from apscheduler.job import Job

FireHandler = Callable[[Job, list[datetime]], None]


class FireExecutor(BaseExecutor):
    def __init__(self, on_fire: FireHandler) -> None:
        super().__init__()
        self._on_fire = on_fire

    def submit_job(self, job: Job, run_times: list[datetime]) -> None:
        self._do_submit_job(job, run_times)

    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> None:
        self._on_fire(job, list(run_times))


def fire_placeholder(**_: object) -> None:
    """APScheduler requires a callable per job (taking its kwargs); the FireExecutor never calls it."""
    raise AssertionError("fires are handled by FireExecutor")
