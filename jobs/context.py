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
    trigger: str = "manual"  # schedule, manual, catch_up or retry
    attempt: int = 1
    smtp: Any = None  # jobs.mail.SmtpSettings from [smtp], or None when not configured
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    _progress: Callable[[dict[str, Any]], Awaitable[None]] | None = None

    def raise_if_cancelled(self) -> None:
        """Stop here if cancellation was requested; call it between steps of long work."""
        if self.cancelled.is_set():
            raise JobCancelled(f"run {self.run_id} of {self.job_id} was cancelled")

    async def report_progress(self, **fields: Any) -> None:
        """Publish progress (e.g. rows deleted so far); shown on the run while it runs."""
        if self._progress is not None:
            await self._progress(fields)
