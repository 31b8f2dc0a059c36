"""This replica's lease on its runs, as the replica itself can know it.

Any replica declares a run lost once its owner has not heartbeated it for a lease
(``heartbeat_at`` is stamped with the database's clock). An owner that was frozen
(SIGSTOP, a VM or GC pause), whose event loop was blocked, or that could not reach
the database for that long cannot tell whether that happened, so it must assume it
did: the lease it can count on runs for ``lease`` from the moment it *sent* the last
heartbeat the database confirmed. The database stamps that heartbeat later than it
was sent, so this end always comes first. Times are the event loop's clock
(monotonic, and real time under a frozen test clock).

Heartbeats go over a connection of their own: jobs holding every pooled connection
must not starve the beat that keeps them alive.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from maintd.scheduler.store.own_connection import OwnConnection
from maintd.scheduler.store.run_store import RunStore


def _now() -> float:
    return asyncio.get_running_loop().time()


class Lease:
    """When this replica's runs may have been declared lost, by its own clock."""

    def __init__(self, duration: timedelta) -> None:
        self.duration = duration.total_seconds()
        self._until: float | None = None

    def renew(self, sent_at: float | None = None) -> None:
        """The database confirmed a heartbeat sent at ``sent_at`` (default: a claim made
        now, whose rows are stamped from now on)."""
        start = _now() if sent_at is None else sent_at
        self._until = max(self._until or 0.0, start + self.duration)

    def reset(self) -> None:
        """After the runs of an expired lease were given up: runs claimed from now on are
        stamped from now on."""
        self._until = _now() + self.duration

    def expired(self) -> bool:
        return self._until is not None and _now() >= self._until

    def overdue_by(self) -> float:
        """Seconds since the lease ran out (0 while it holds)."""
        return 0.0 if self._until is None else max(0.0, _now() - self._until)


class HeartbeatLine:
    """Sends heartbeats over a connection of its own, each bounded by ``timeout``."""

    def __init__(self, store: RunStore, *, timeout: timedelta) -> None:
        self.store = store
        self.timeout = timeout.total_seconds()
        self._line = OwnConnection(lambda: store.dedicated_connection())

    async def beat(self, run_ids: list[int]) -> tuple[dict[int, str | None], float]:
        """Refresh ``run_ids``; return the ones still running (with who asked to cancel
        them) and the loop time the beat was sent at. Raises when the database does not
        answer in time; the next beat opens a new connection."""
        sent_at = _now()
        async with asyncio.timeout(self.timeout), self._line.use() as conn:
            answer = await self.store.heartbeat(run_ids, via=conn)
        return answer, sent_at

    async def close(self) -> None:
        await self._line.close()
