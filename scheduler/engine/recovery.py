"""After a failed database call, nothing new is claimed until what the outage made
this replica miss is recorded: how its runs that ended meanwhile ended, and the
fires that went unclaimed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from maintd.scheduler.engine.failure_log import FailureLog

# Records what an outage made this replica miss: (fires before this instant, the
# earliest fire the failed calls concerned); raises while the database is still away.
Recover = Callable[[datetime, datetime | None], Awaitable[None]]


class Recovery:
    def __init__(self, failures: FailureLog, log: Any, recover: Recover) -> None:
        self._failures = failures
        self._log = log
        self._recover = recover
        self.ok = True
        # The earliest fire time the failed calls may have concerned: recovery judges from there.
        self.outage_since: datetime | None = None
        self._lock = asyncio.Lock()

    def failed(self, since: datetime) -> None:
        """A database call failed; fires from ``since`` on may have gone unclaimed."""
        self.ok = False
        self.outage_since = since if self.outage_since is None else min(self.outage_since, since)

    async def recovered(self, until: datetime) -> bool:
        """Before claiming anything new: after a failure, record what the outage made this
        replica miss before ``until``. False while the database is still away."""
        if self.ok:
            return True
        async with self._lock:
            if self.ok:
                return True
            try:
                await self._recover(until, self.outage_since)
            except Exception as exc:
                self._failures.failed("database_still_unavailable", error=repr(exc))
                return False
            self.ok, self.outage_since = True, None
            self._log.info("database_recovered", failures_held_back=self._failures.recovered())
            return True
