"""Claim fires shortly before they are due, shared out among the live replicas.

A claim at the fire time costs a database round trip before the run can start,
and when many fires fall due at once the first replica's statement wins all of
them, so one replica starts every run while the others idle. Claiming ahead
takes both off the fire time: about ``window`` before a fire, the replica whose
share it is (by a hash of the fire key over the sorted live nodes) claims it;
at half the window every replica claims what is still unclaimed, which takes
over the share of a replica that died or lags, and tells the others that the
fire is taken. At the fire time the owner starts the run from memory.

The database still decides: a claim ahead is the same insert of the fire key as
a claim at the fire time, so two replicas that disagree on the live nodes can
waste a statement, never run a fire twice. A fire that could not be claimed
ahead (e.g. the job's previous run is still going) is claimed at its time.
A run claimed ahead is ``running`` from its claim on (a manual trigger
in that last second is refused as overlapping), and a pause that lands after it
no longer stops that one fire.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from maintd.scheduler.config.model import JobConfig
from maintd.scheduler.engine.capacity import Capacity, Unbounded
from maintd.scheduler.engine.clock_guard import ClockGuard, NoClockGuard
from maintd.scheduler.store.records import Run
from maintd.scheduler.store.run_store import RunStore

FireKey = tuple[str, datetime]
# How often the loop looks for fires coming due: a quarter of the window, so the
# owner's claim and the takeover each get at least one chance.
_PASSES_PER_WINDOW = 4
# Decisions about fires this long past are dropped (the job was removed, or the
# scheduler stopped before handing the fire over).
_FORGET_AFTER = timedelta(minutes=1)
# A reading of the database's clock while suspended waits this long at most.
_CLOCK_TIMEOUT_S = 2.0


def _fire_time(fire: tuple[JobConfig, datetime]) -> datetime:
    return fire[1]


class Taken:
    """A fire another replica claimed (or recorded)."""


TAKEN = Taken()


class ClaimAhead:
    def __init__(
        self,
        store: RunStore,
        *,
        node: str,
        window: timedelta,
        lease: timedelta,
        due_before: Callable[[datetime], list[tuple[JobConfig, datetime]]],
        on_win: Callable[[Run], None],
        on_late_win: Callable[[Run], None],
        ready: Callable[[datetime], Awaitable[bool]],
        on_error: Callable[[Exception], None],
        clock: Callable[[], datetime],
        clock_guard: ClockGuard | None = None,
        capacity: Capacity | None = None,
    ) -> None:
        self.store = store
        self.node = node
        self.window = window
        self.lease = lease
        self._due_before = due_before
        self._on_win = on_win
        self._on_late_win = on_late_win
        self._ready = ready
        self._clock = clock
        self._on_error = on_error
        self._guard = clock_guard or NoClockGuard()
        self._capacity = capacity or Unbounded()
        self.live: list[str] = [node]
        self._won: dict[FireKey, Run] = {}
        self._taken: set[FireKey] = set()
        # Claimed ahead by nobody (e.g. the previous run was still going): claimed at
        # the fire time as usual, not tried again ahead.
        self._undecided: set[FireKey] = set()
        self._abandoned: list[Run] = []
        # Fires in the claim statement under way, and those of them handed over before it answered.
        self._claiming: set[FireKey] = set()
        self._handed_over: set[FireKey] = set()
        self._stopping = asyncio.Event()

    def owner(self, key: FireKey) -> str:
        """The live node whose share the fire is; every replica computes the same."""
        job_id, fire = key
        digest = zlib.crc32(f"{job_id}@{fire.timestamp():.6f}".encode())
        return self.live[digest % len(self.live)]

    def pop(self, key: FireKey) -> Run | Taken | None:
        """At the fire time: the run this replica claimed, TAKEN, or None to claim it now."""
        self._undecided.discard(key)
        if key in self._taken:
            self._taken.discard(key)
            return TAKEN
        if (run := self._won.pop(key, None)) is None and key in self._claiming:
            # The claim under way may win it after all: see claim_due.
            self._handed_over.add(key)
        return run

    def take_won(self, key: FireKey) -> Run | None:
        """The run this replica claimed for the fire, taken out of the waiting ones."""
        return self._won.pop(key, None)

    def drop(self, job_id: str) -> list[Run]:
        """Forget a job's fires (it was removed or rescheduled); return its runs claimed ahead."""
        dropped = [run for key, run in self._won.items() if key[0] == job_id]
        self._won = {key: run for key, run in self._won.items() if key[0] != job_id}
        self._taken = {key for key in self._taken if key[0] != job_id}
        self._undecided = {key for key in self._undecided if key[0] != job_id}
        return dropped

    def forget_all(self) -> list[Run]:
        """Forget every fire claimed ahead (this replica's lease ran out); return their runs."""
        forgotten, self._won = list(self._won.values()), {}
        return forgotten

    def forget_runs(self, run_ids: set[int]) -> list[Run]:
        """Forget the fires of these runs (they were recorded missed meanwhile); return their runs."""
        forgotten = [run for run in self._won.values() if run.id in run_ids]
        self._won = {key: run for key, run in self._won.items() if run.id not in run_ids}
        return forgotten

    def in_flight(self, key: FireKey) -> bool:
        """Handed over before any claim ahead decided it: a claim under way may still win it."""
        return key in self._handed_over

    @property
    def waiting(self) -> list[Run]:
        """Runs claimed ahead whose fire time has not come yet (they are heartbeated too)."""
        return list(self._won.values())

    async def run(self) -> None:
        """Claim until :meth:`stop`; a claim under way is finished, never cut short (its
        insert may have committed, and a fire claimed but unknown here would be lost)."""
        pause = self.window.total_seconds() / _PASSES_PER_WINDOW
        while not self._stopping.is_set():
            try:
                await self.claim_due()
            except Exception as exc:  # the fire-time claim covers what this misses
                self._on_error(exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), pause)

    def stop(self) -> None:
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def take_abandoned(self) -> list[Run]:
        """Runs claimed ahead whose fire was never handed over (and so never started)."""
        abandoned, self._abandoned = self._abandoned, []
        return abandoned

    async def claim_due(self) -> None:
        """One pass: claim this replica's share of the fires due within the window, and
        every fire still unclaimed within half of it; none while the clock is off the
        database's (the pass then reads the database's clock now and then, to resume soon)."""
        if self._guard.suspended():
            if self._guard.wants_measurement():
                await self._guard.measure(lambda: self.store.ping(timeout=_CLOCK_TIMEOUT_S))
            return
        now = self._clock()
        # After a database outage, what it made the replica miss is recorded first.
        if not await self._ready(now):
            return
        self._forget(now - _FORGET_AFTER)
        takeover_from = now + self.window / 2
        coming = [
            (job, fire)
            for job, fire in self._due_before(now + self.window)
            if fire > now
            and (key := (job.id, fire)) not in self._won
            and key not in self._taken
            and key not in self._undecided
        ]
        if not coming:
            return
        # Watched from here on: a fire handed over while this pass waits is known to be.
        self._claiming = {(job.id, fire) for job, fire in coming}
        try:
            # Shares follow the nodes live right now: a replica that just started takes
            # its share of the very next fires. The same statement reads the database's
            # clock: a wall clock that went wrong is caught before the claim.
            sent = self._guard.stamp()
            self.live, database_now = await self.store.node_heartbeat_at(self.node, self.lease)
            self._guard.observe(sent, database_now)
            if self._guard.suspended():
                return
            own, others = [], []
            for job, fire in coming:
                if self.owns((job.id, fire)):
                    own.append((job, fire))
                elif fire <= takeover_from:
                    others.append((job, fire))
            # This replica's share first, then what the others left; no more than it has room for.
            fires = (sorted(own, key=_fire_time) + sorted(others, key=_fire_time))[: self._capacity.free()]
            if not fires:
                return
            with self._capacity.reserve(len(fires)):
                won = await self.store.claim_ahead(
                    [(job.id, fire, job.overlap == "forbid") for job, fire in fires], self.node
                )
        finally:
            self._claiming = set()
        for run in won:
            assert run.scheduled_for is not None
            key = (run.job_id, run.scheduled_for)
            if key in self._handed_over:
                # The answer came after the fire time (a slow database): the claim made at
                # the fire time lost to this one, so the run is ours to start, late.
                self._handed_over.discard(key)
                self._on_late_win(run)
            else:
                self._won[key] = run
                self._on_win(run)
        won_keys = {(run.job_id, run.scheduled_for) for run in won}
        lost = [(job.id, fire) for job, fire in fires if (job.id, fire) not in won_keys]
        if lost:
            taken = await self.store.taken_fires(lost)
            self._taken |= taken
            self._undecided |= {key for key in lost if key not in taken and key[1] <= takeover_from}

    def owns(self, key: FireKey) -> bool:
        """Whether the fire is this replica's share."""
        return self.owner(key) == self.node

    def _forget(self, before: datetime) -> None:
        for key in [key for key in self._won if key[1] < before]:
            self._abandoned.append(self._won.pop(key))
        self._taken = {key for key in self._taken if key[1] >= before}
        self._handed_over = {key for key in self._handed_over if key[1] >= before}
        self._undecided = {key for key in self._undecided if key[1] >= before}
