"""Whether this replica's clock may schedule: its skew from the database's clock.

Fire times are instants on the wall clock, and replicas agree on them only if
their clocks agree. A replica whose clock is off by more than
``scheduler.max_clock_skew`` would claim fires early (ahead) or late (behind),
and judge fires not yet due (or from before a job existed) as missed; so it takes
no part in scheduling until it is back within bound. While suspended it claims,
records and starts nothing scheduled (see :class:`~maintd.scheduler.engine.Engine`); the
replicas with a true clock do the work, and when this one is back, its spell is
caught up as downtime is.

The skew is measured against the database's ``now()`` with the midpoint of the
round trip: for a round trip of ``rtt`` the error is at most ``rtt / 2``. A round
trip longer than the bound (a busy loop, a slow database) tells nothing about the
clock and is not counted, so loop lag cannot read as skew. Between measurements
the monotonic clock (which no NTP step or wrong setting moves) tells how far the
wall clock has moved by itself: a wall clock that jumps suspends scheduling at the
very next decision, before any round trip, and a measurement then settles it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from maintd.jobs.durations import format_duration
from maintd.scheduler.clock import utcnow

# Back within bound only below this share of it: a clock hovering at the bound
# does not flap between scheduling and not (each resume catches up a spell).
RESUME_BELOW = 0.75
# While suspended, the clock is measured at most this often by the claim loop
# (besides every heartbeat), so a clock set right is back at work soon.
RECHECK_SUSPENDED = timedelta(seconds=1)
# Tries at start to get a round trip short enough to count.
START_TRIES = 3


@dataclass(frozen=True)
class Stamp:
    """The wall clock and the monotonic clock read together."""

    wall: datetime
    monotonic: float


class ClockGuard(Protocol):
    """What the engine asks: may this replica schedule now, and why not."""

    # When the current (or last) spell of suspension began, by the database's clock.
    suspended_since: datetime | None

    def listen(self, on_change: Callable[[bool], None]) -> None:
        """Call ``on_change(suspended)`` each time scheduling is suspended or resumed."""
        ...

    def stamp(self) -> Stamp: ...

    def observe(self, sent: Stamp, database_now: datetime, received: Stamp | None = None) -> None:
        """Take one reading of the database's clock, asked at ``sent`` and answered at ``received``."""
        ...

    async def measure(self, ask: Callable[[], Awaitable[datetime]]) -> None:
        """Ask the database its time and observe the answer."""
        ...

    async def establish(self, ask: Callable[[], Awaitable[datetime]]) -> None:
        """At start, before anything else: measure until a reading counts (or suspend)."""
        ...

    def suspended(self) -> bool:
        """True while this replica must take no part in scheduling."""
        ...

    def wants_measurement(self) -> bool:
        """Suspended and not measured for a while: a reading could resume scheduling."""
        ...

    def database_now(self) -> datetime:
        """The database's time now, from the last reading and the monotonic clock."""
        ...

    def reason(self) -> str | None:
        """Why this replica is not scheduling (for /readyz and a refused trigger), else None."""
        ...


class SkewGuard:
    """Suspends scheduling while this replica's clock is off the database's by more than ``max_skew``."""

    def __init__(
        self,
        max_skew: timedelta,
        *,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        log: Any,
    ) -> None:
        self.max_skew = max_skew
        self._clock = clock
        self._monotonic = monotonic
        self._log = log
        self._on_change: Callable[[bool], None] = lambda suspended: None
        # The last reading that counted: the skew, and the database's time and the
        # monotonic clock at the moment the database read its clock.
        self.skew: timedelta | None = None
        self._database_at: datetime | None = None
        self._monotonic_at = 0.0
        self._wall_at: datetime | None = None
        self._suspended = False
        self._unmeasured = False
        # When the current (or last) spell began, by the database's clock.
        self.suspended_since: datetime | None = None

    def listen(self, on_change: Callable[[bool], None]) -> None:
        self._on_change = on_change

    def stamp(self) -> Stamp:
        return Stamp(self._clock(), self._monotonic())

    def observe(self, sent: Stamp, database_now: datetime, received: Stamp | None = None) -> None:
        received = received or self.stamp()
        round_trip = received.monotonic - sent.monotonic
        if round_trip > self.max_skew.total_seconds():
            self._log.info("clock_reading_ignored", round_trip_s=round(round_trip, 3))
            return
        # The database read its clock somewhere in the round trip: the midpoint is off
        # by rtt/2 at most. Taken back from the answer's arrival, so that a wall clock
        # that jumped while the question was out is read as it is now.
        midpoint = received.wall - timedelta(seconds=round_trip / 2)
        self.skew = midpoint - database_now
        self._database_at, self._monotonic_at = database_now, received.monotonic - round_trip / 2
        self._wall_at = midpoint
        # The margin is for a clock known to be off, not for one not read yet.
        resuming = self._suspended and not self._unmeasured
        self._unmeasured = False
        bound = self.max_skew * RESUME_BELOW if resuming else self.max_skew
        self._set(abs(self.skew) > bound, self.skew)

    async def measure(self, ask: Callable[[], Awaitable[datetime]]) -> None:
        sent = self.stamp()
        database_now = await ask()
        self.observe(sent, database_now)

    async def establish(self, ask: Callable[[], Awaitable[datetime]]) -> None:
        for _ in range(START_TRIES):
            await self.measure(ask)
            if self.skew is not None:
                return
        # Unknown is not trusted: the heartbeat measures again.
        self._unmeasured = True
        self._set(True, None)

    def estimate(self) -> timedelta | None:
        """The skew now: the last reading plus how far the wall clock moved apart from the
        monotonic one since (a jump, or a clock set by hand)."""
        if self.skew is None or self._wall_at is None:
            return None
        wall = self._clock() - self._wall_at
        elapsed = timedelta(seconds=self._monotonic() - self._monotonic_at)
        return self.skew + (wall - elapsed)

    def suspended(self) -> bool:
        if not self._suspended and (skew := self.estimate()) is not None and abs(skew) > self.max_skew:
            self._set(True, skew)
        return self._suspended

    def wants_measurement(self) -> bool:
        return self._suspended and (
            self._database_at is None or self._monotonic() - self._monotonic_at >= RECHECK_SUSPENDED.total_seconds()
        )

    def database_now(self) -> datetime:
        if self._database_at is None:
            return self._clock()
        return self._database_at + timedelta(seconds=self._monotonic() - self._monotonic_at)

    def reason(self) -> str | None:
        if not self.suspended():
            return None
        if self._unmeasured or self.skew is None:
            return "clock: not compared with the database's yet (its answers were too slow to tell)"
        skew = self.estimate() or self.skew
        if abs(skew) > self.max_skew:
            limit = f"more than {format_duration(self.max_skew)}"
        else:  # within the bound, not yet within the margin that resumes scheduling
            limit = f"scheduling resumes within {format_duration(self.max_skew * RESUME_BELOW)}"
        return f"clock: {skew.total_seconds():+.3f}s off the database's clock ({limit})"

    def _set(self, suspended: bool, skew: timedelta | None) -> None:
        if suspended == self._suspended:
            return
        self._suspended = suspended
        skew_s = round(skew.total_seconds(), 3) if skew is not None else None
        if suspended:
            self.suspended_since = self.database_now()
            self._log.error(
                "clock_skew",
                skew_s=skew_s,
                max_s=self.max_skew.total_seconds(),
                hint="this replica schedules nothing until its clock is right; fix NTP on this host",
            )
        else:
            self._log.info(
                "clock_skew_resolved",
                skew_s=skew_s,
                since=self.suspended_since.isoformat() if self.suspended_since else None,
            )
        self._on_change(suspended)


class NoClockGuard:
    """Never suspends: for an engine whose clock is deliberately not the database's (a
    frozen test clock, :mod:`maintd.testing`)."""

    suspended_since: datetime | None = None

    def listen(self, on_change: Callable[[bool], None]) -> None:
        pass

    def stamp(self) -> Stamp:
        return Stamp(utcnow(), time.monotonic())

    def observe(self, sent: Stamp, database_now: datetime, received: Stamp | None = None) -> None:
        pass

    async def measure(self, ask: Callable[[], Awaitable[datetime]]) -> None:
        pass

    async def establish(self, ask: Callable[[], Awaitable[datetime]]) -> None:
        pass

    def suspended(self) -> bool:
        return False

    def wants_measurement(self) -> bool:
        return False

    def database_now(self) -> datetime:
        return utcnow()

    def reason(self) -> str | None:
        return None
