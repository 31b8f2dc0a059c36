"""What a running job receives: its pool, logger, clock, cancellation and progress."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo


class JobCancelled(Exception):
    """Raised by :meth:`JobContext.raise_if_cancelled` when the run was asked to stop."""


class LeaseLost(JobCancelled):
    """Raised by a job that found its run no longer running in the database: the run
    was declared lost (its replica could not heartbeat for a lease) and may already be
    running again elsewhere, so the job must not commit more work."""


@dataclass
class JobContext:
    """Everything a job may use; built by the daemon for each run.

    ``now`` is the daemon's clock: cutoffs such as "expired before now" must be
    computed from it, so a frozen test clock governs them too.
    """

    job_id: str
    run_id: int
    scheduled_for: datetime
    pool: Any  # asyncpg.Pool; typed loosely so jobs stay importable without a database
    log: Any  # structlog BoundLogger with job_id and run_id bound
    now: Callable[[], datetime]
    timezone: ZoneInfo = ZoneInfo("UTC")  # the job's: where its days start and end
    trigger: str = "manual"  # schedule, manual, catch_up, retry or replay
    attempt: int = 1
    # Asked by an operator (a task declared with @task(dry_run=True) only): do the reading,
    # change nothing, and return what the run would have done.
    dry_run: bool = False
    smtp: Any = None  # jobs.mail.SmtpSettings from [smtp], or None when not configured
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    # The daemon's check of its lease on this run, by its own clock (no database round
    # trip): a lease that ran out sets ``cancelled``.
    check_lease: Callable[[], None] | None = None
    _progress: Callable[[dict[str, Any]], Awaitable[None]] | None = None

    def raise_if_cancelled(self) -> None:
        """Stop here if cancellation was requested or the run's lease ran out (the run may
        be declared lost and run again elsewhere); call it between steps of long work and
        before a commit."""
        if self.check_lease is not None:
            self.check_lease()
        if self.cancelled.is_set():
            raise JobCancelled(f"run {self.run_id} of {self.job_id} was cancelled")

    async def report_progress(self, **fields: Any) -> None:
        """Publish progress (e.g. rows deleted so far); shown on the run while it runs."""
        if self._progress is not None:
            await self._progress(fields)
