"""Keeping this replica's lease on its runs, and giving them up when it is gone.

Heartbeats go over a line of their own (scheduler/engine/lease.py). When the
lease ran out unseen (a frozen replica, a blocked loop, a database away for as
long), or the database says a run is no longer running (declared lost by
another replica), the runs are given up before anything more is written for
them: cancelled at once, fires claimed ahead never started, and all ended as the
reaper would (lost, or missed if never started) at the next contact with the
database. Their owner's own outcome is kept only as the late outcome.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from maintd.scheduler.engine.claimed_ahead import FiresAhead
from maintd.scheduler.engine.lease import HeartbeatLine, Lease
from maintd.scheduler.engine.runs import Runs
from maintd.scheduler.engine.state import EngineState
from maintd.scheduler.store.records import Run


class Fencing:
    def __init__(
        self,
        state: EngineState,
        *,
        runs: Runs,
        ahead: FiresAhead,
        settle_reaped: Callable[[list[Run]], Awaitable[Any]],
        cancel_requested: Callable[[int, str], None],
    ) -> None:
        """``settle_reaped`` counts, logs and alerts the runs this replica ended itself;
        ``cancel_requested`` routes a cancel request a heartbeat brought back."""
        self._state = state
        self._runs = runs
        self._ahead = ahead
        self._settle_reaped = settle_reaped
        self._cancel_requested = cancel_requested
        self.lease = Lease(state.lease)
        # A beat slowed by a lagging loop still counts from when it was sent: it is given
        # up only when it could no longer keep the lease anyway.
        self.line = HeartbeatLine(state.store, timeout=state.lease)
        # Runs given up because the lease ran out unseen, whose rows may still say
        # running: ended (lost/missed) before anything else is written for them; by id.
        self._to_reap: dict[int, str] = {}
        # When the lease was last looked at (loop time): a longer gap than the lease means frozen.
        self._checked_at: float | None = None

    async def open(self) -> None:
        """Open the heartbeat line and take the lease. Done at start: under load, a
        connection opened by the first beat could take longer than the lease."""
        _, sent_at = await self.line.beat([])
        self.lease.renew(sent_at)

    async def keep(self) -> None:
        """One heartbeat of this replica's runs (and of the fires it claimed ahead). Runs of
        a lease that ran out unseen are given up (and ended as the reaper would) first; runs
        the database says are no longer running were declared lost: given up too."""
        now = asyncio.get_running_loop().time()
        if self._checked_at is not None and now - self._checked_at > self.lease.duration:
            # Frozen (SIGSTOP, a VM pause) or a loop blocked that long: no beat could be sent.
            self._state.log.error(
                "replica_was_frozen", gap_s=round(now - self._checked_at, 3), lease_s=self.lease.duration
            )
        self._checked_at = now
        self.check()
        await self.reap_given_up()
        beating = self._runs.beating() + [run.id for run in self._ahead.waiting()]
        alive, sent_at = await self.line.beat(beating)
        self.lease.renew(sent_at)
        if gone := [run_id for run_id in beating if run_id not in alive]:
            self.declared_lost(gone)
        for run_id, cancelled_by in alive.items():
            if cancelled_by:
                self._cancel_requested(run_id, cancelled_by)
        if self._runs.has_unrecorded():
            # The database answers again: what ended during the outage is settled at once,
            # not at the next housekeeping beat (other replicas' fires wait for it).
            await self._runs.flush_outcomes()

    def check(self) -> None:
        """If the lease ran out unseen, give up every run and fire claimed ahead (see the module)."""
        if not self.lease.expired():
            return
        node, lease = self._state.node, self.lease
        reason = (
            f"node {node} had no heartbeat confirmed for "
            f"{lease.duration + lease.overdue_by():.1f}s (frozen, blocked or cut off from the database)"
        )
        for active in self._runs.active.values():
            if active.fenced is None:
                self._to_reap[active.run.id] = reason
                self._runs.give_up(active, reason)
        for run in self._ahead.give_up_all(reason):
            self._to_reap[run.id] = reason
        # Runs claimed from now on are stamped from now on.
        self.lease.reset()

    def declared_lost(self, run_ids: list[int]) -> None:
        """The database no longer holds these runs as running: another replica declared
        them lost (or the fires claimed ahead missed) while this one could not beat."""
        gone = set(run_ids)
        for run_id, active in list(self._runs.active.items()):
            if run_id in gone and active.outcome is None and active.fenced is None:
                self._runs.give_up(
                    active, "it is no longer running in the database (declared lost, or lost with a failover)"
                )
        self._ahead.give_up_runs(gone, "no longer running in the database (recorded missed, or lost with a failover)")

    async def before_writing(self, run_ids: list[int]) -> None:
        """Nothing is written for a run of a lease that ran out before it is ended as the reaper would."""
        self.check()
        if any(run_id in self._to_reap for run_id in run_ids):
            await self.reap_given_up()

    async def reap_given_up(self) -> None:
        """End the given-up runs whose rows may still say running (lost, or missed if
        never started); rows another replica reaped meanwhile are left as they are."""
        if not self._to_reap:
            return
        given_up = dict(self._to_reap)
        for reason in set(given_up.values()):
            run_ids = [run_id for run_id, why in given_up.items() if why == reason]
            reaped = await self._state.store.reap_own_runs(run_ids, reason)
            for run_id in run_ids:
                self._to_reap.pop(run_id, None)
            await self._settle_reaped(reaped)

    async def close(self) -> None:
        await self.line.close()
