"""What the engine's parts share: the jobs as configured now, the run store, this
replica's name, clock, metrics and logs, and the tasks it has under way."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from maintd.jobs.mail import SmtpSettings
from maintd.scheduler.config.model import JobConfig
from maintd.scheduler.engine.clock_guard import ClockGuard
from maintd.scheduler.engine.failure_log import FailureLog
from maintd.scheduler.metrics import Metrics
from maintd.scheduler.store.run_store import RunStore


class Tasks:
    """The fires being handled and the runs in progress: what :meth:`idle` waits for."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def named(self, prefix: str) -> list[asyncio.Task[Any]]:
        return [task for task in self._tasks if task.get_name().startswith(prefix)]

    async def idle(self) -> None:
        """Wait until none is left, including those spawned meanwhile."""
        while self._tasks:
            await wait_for_all(list(self._tasks))


async def wait_for_all(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Wait for ``tasks`` to end, whatever they raise."""
    tasks = list(tasks)
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)


@dataclass
class EngineState:
    """The engine's common ground; ``jobs`` and ``smtp`` change with a config reload."""

    jobs: dict[str, JobConfig]
    smtp: SmtpSettings | None
    store: RunStore
    node: str
    clock: Callable[[], datetime]
    metrics: Metrics
    log: Any
    failures: FailureLog
    clock_guard: ClockGuard
    # Any replica declares a run lost once its owner has not heartbeated it for this long.
    lease: timedelta
    # False before the start and from the stop on: no new fire is claimed.
    accepting: bool = False
    # [admin] require_reason: a trigger, rerun or replay without a reason is refused.
    require_reason: bool = False
    tasks: Tasks = field(default_factory=Tasks)

    @property
    def heartbeat_interval(self) -> timedelta:
        """Three beats per lease: one late beat never loses a run."""
        return self.lease / 3

    def scheduling(self) -> bool:
        """Whether this replica takes part in scheduling (its clock agrees with the database's)."""
        return not self.clock_guard.suspended()
