"""Database failures logged without flooding the journal.

While the database is away, every fire, claim pass, heartbeat and outcome write
fails: several lines a second per replica, all saying the same. Each kind of
failure (its event name) is logged the first time it happens; after that the
ones held back are counted and summed up in one line every ``every``, and once
more when the database answers again.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

# One summary line per replica this often while failures go on.
SUMMARY_EVERY_S = 30.0


class FailureLog:
    def __init__(self, log: Any, *, every_s: float = SUMMARY_EVERY_S) -> None:
        self._log = log
        self._every_s = every_s
        self._seen: set[str] = set()
        self._held: Counter[str] = Counter()
        self._summed_at: float | None = None

    def failed(self, event: str, *, level: str = "warning", **fields: Any) -> None:
        """A database call failed: log it if it is the first of its kind since the last recovery."""
        now = asyncio.get_running_loop().time()
        if event not in self._seen:
            self._seen.add(event)
            getattr(self._log, level)(event, **fields)
            self._summed_at = self._summed_at or now
            return
        self._held[event] += 1
        if self._summed_at is not None and now - self._summed_at >= self._every_s:
            self._log.warning(
                "database_failures_continue", held_back=dict(self._held), over_s=round(now - self._summed_at, 1)
            )
            self._held.clear()
            self._summed_at = now

    def recovered(self) -> dict[str, int]:
        """The database answers again: start afresh; return the failures held back since the last summary."""
        held = dict(self._held)
        self._seen.clear()
        self._held.clear()
        self._summed_at = None
        return held
