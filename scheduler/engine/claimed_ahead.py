"""The fires this replica claimed ahead (scheduler/engine/claim_ahead.py), from their
claim to their start.

A fire won ahead gets its run built at once, so that at the fire time, when a
burst of fires starts together, only the start is left to do. It starts when
APScheduler hands the fire over; while this replica's clock is off the
database's, when the database's clock says it is due. A fire that will not start
here (cancelled before its time, the job changed by a reload, the replica
stopping or its lease gone, the hand-over never coming) is recorded, never left
running. :class:`NoClaimAhead` stands in where nothing is claimed ahead (a
frozen test clock, a one-off run), so the rest of the engine has one path.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Protocol

from maintd.jobs.durations import format_duration
from maintd.scheduler.config.model import JobConfig
from maintd.scheduler.engine.capacity import Capacity
from maintd.scheduler.engine.claim_ahead import TAKEN, ClaimAhead, FireKey
from maintd.scheduler.engine.runs import ActiveRun, Runs
from maintd.scheduler.engine.state import EngineState
from maintd.scheduler.store.records import Run


def superseded(behind: timedelta) -> str:
    """Why an older fire handed over with a newer one of its job did not run."""
    return (
        f"missed: the cluster was {format_duration(behind)} behind and a newer fire of the job was "
        "already due; that one ran in its place"
    )


def past_grace(behind: timedelta, grace: timedelta) -> str:
    """Why a fire that could not start within its misfire grace did not run."""
    return (
        f"missed: the cluster was {format_duration(behind)} behind, past the job's misfire_grace "
        f"of {format_duration(grace)}"
    )


# At stop, a claim ahead under way gets this long to be answered.
CLAIM_AT_STOP_S = 5.0


class FiresAhead(Protocol):
    async def start(self) -> asyncio.Task[None] | None:
        """Join the live nodes and start claiming; the claiming task, if any."""

    async def hand_over(self) -> None:
        """At stop: claim no more, leave the live nodes, start what was claimed until its time."""

    def take(self, job: JobConfig, run_times: list[datetime]) -> list[datetime]:
        """At the fire time: start or record the fires decided ahead; return those left to claim."""

    def take_unstarted(self, job: JobConfig, run_times: list[datetime]) -> tuple[list[Run], list[datetime]]:
        """At the fire time, for fires that are not to start: the runs this replica claimed
        ahead for them (to be recorded), and the fires nobody decided ahead."""

    async def finish_unstarted(self, run: Run, status: str, reason: str) -> Run | None:
        """Record a fire claimed ahead that will not run here; the row, unless another path
        recorded it first. Never raises."""

    def in_flight(self, key: FireKey) -> bool:
        """Whether a claim ahead under way may still win this fire (handed over before it answered)."""

    def owns(self, key: FireKey) -> bool:
        """Whether the fire is this replica's share (claimed first when fires wait for room)."""

    def waiting(self) -> list[Run]:
        """Runs claimed ahead and not started: heartbeated as the running ones are."""

    def give_up_all(self, reason: str) -> list[Run]:
        """The lease ran out: forget every fire claimed ahead; return their runs."""

    def give_up_runs(self, run_ids: set[int], reason: str) -> list[Run]:
        """The database no longer holds these runs: forget their fires; return their runs."""

    async def release(self, job_ids: list[str], reason: str) -> None:
        """Record as skipped the fires claimed ahead of these jobs (changed by a reload)."""

    async def settle_abandoned(self) -> None:
        """Record as missed the fires claimed ahead that were never handed over."""

    async def refresh_live(self) -> None:
        """Tell the cluster this replica is live (it takes a share of the fires)."""

    def hold(self) -> None:
        """The clock went off the database's: start the fires claimed ahead by the database's
        clock, and leave the live nodes (the others take over this replica's share)."""


class NoClaimAhead:
    """Nothing is claimed ahead: every fire is claimed at its time."""

    async def start(self) -> asyncio.Task[None] | None:
        return None

    async def hand_over(self) -> None:
        pass

    def take(self, job: JobConfig, run_times: list[datetime]) -> list[datetime]:
        return run_times

    def take_unstarted(self, job: JobConfig, run_times: list[datetime]) -> tuple[list[Run], list[datetime]]:
        return [], run_times

    async def finish_unstarted(self, run: Run, status: str, reason: str) -> Run | None:
        return None

    def in_flight(self, key: FireKey) -> bool:
        return False

    def owns(self, key: FireKey) -> bool:
        return True

    def waiting(self) -> list[Run]:
        return []

    def give_up_all(self, reason: str) -> list[Run]:
        return []

    def give_up_runs(self, run_ids: set[int], reason: str) -> list[Run]:
        return []

    async def release(self, job_ids: list[str], reason: str) -> None:
        pass

    async def settle_abandoned(self) -> None:
        pass

    async def refresh_live(self) -> None:
        pass

    def hold(self) -> None:
        pass


class ClaimedAhead:
    def __init__(
        self,
        state: EngineState,
        *,
        runs: Runs,
        window: timedelta,
        due_before: Callable[[datetime], list[tuple[str, datetime]]],
        ready: Callable[[datetime], Awaitable[bool]],
        capacity: Capacity,
    ) -> None:
        """``due_before(until)``: the next fire of each job before ``until``, as (job id,
        fire time); ``ready(now)``: False while an outage is not recovered from."""
        self._state = state
        self._runs = runs
        self._due_before = due_before
        self.decisions = ClaimAhead(
            state.store, node=state.node, window=window, lease=state.lease, due_before=self._jobs_due_before,
            on_win=self._prepare, on_late_win=self._start_late_win, ready=ready, on_error=self._failed,
            clock=state.clock, clock_guard=state.clock_guard, capacity=capacity,
        )  # fmt: skip
        self._claiming: asyncio.Task[None] | None = None
        # Runs claimed ahead, built and waiting for their fire time; by run id.
        self._prepared: dict[int, ActiveRun] = {}
        # The newest fire APScheduler handed over, per job.
        self._newest_handed_over: dict[str, datetime] = {}

    def _jobs_due_before(self, until: datetime) -> list[tuple[JobConfig, datetime]]:
        jobs = self._state.jobs
        return [(jobs[job_id], fire) for job_id, fire in self._due_before(until)]

    def _failed(self, exc: Exception) -> None:
        # The fire-time claims cover what a failed pass leaves undecided.
        self._state.failures.failed("claim_ahead_failed", error=repr(exc))

    async def start(self) -> asyncio.Task[None] | None:
        if self._state.scheduling():  # else it joins the live nodes once back within bound
            self.decisions.live = await self._state.store.node_heartbeat(self._state.node, self._state.lease)
        self._claiming = asyncio.create_task(self.decisions.run(), name="maintd-claim-ahead")
        return self._claiming

    async def refresh_live(self) -> None:
        if not self.decisions.stopping:  # a stopping replica takes no share
            self.decisions.live = await self._state.store.node_heartbeat(self._state.node, self._state.lease)

    def waiting(self) -> list[Run]:
        return self.decisions.waiting

    def in_flight(self, key: FireKey) -> bool:
        return self.decisions.in_flight(key)

    def owns(self, key: FireKey) -> bool:
        return self.decisions.owns(key)

    # -- from the claim to the start ---------------------------------------------

    def _prepare(self, run: Run) -> None:
        """A fire won ahead: build its run now (see the module)."""
        if (job := self._state.jobs.get(run.job_id)) is not None:
            self._prepared[run.id] = self._runs.prepare(job, run)
        if not self._state.scheduling():  # the answer came after the clock went wrong
            self._hold(run)

    def _start(self, job: JobConfig, run: Run) -> None:
        active = self._prepared.pop(run.id, None)
        if active is None or active.job is not job:  # not prepared, or the job was changed by a reload since
            active = self._runs.prepare(job, run)
        self._runs.start_claimed_ahead(active)

    def take(self, job: JobConfig, run_times: list[datetime]) -> list[datetime]:
        """Several fires at once mean the loop was blocked past some: the newest runs if
        this replica claimed it, older ones it claimed are recorded missed, and fires
        another replica took are that replica's."""
        newest = run_times[-1]
        claimed, undecided = self.take_unstarted(job, run_times)
        for run in claimed:
            assert run.scheduled_for is not None
            if (by := self._runs.cancel_requested(run.id)) is not None:
                # Cancelled before its time: recorded so, and the job never starts.
                self._finish_later(run, "cancelled", f"cancelled by {by}")
            elif run.scheduled_for == newest:
                self._start(job, run)
            else:
                self._finish_later(run, "missed", superseded(self._state.clock() - run.scheduled_for))
        return undecided

    def take_unstarted(self, job: JobConfig, run_times: list[datetime]) -> tuple[list[Run], list[datetime]]:
        self._newest_handed_over[job.id] = run_times[-1]
        claimed, undecided = [], []
        for fire in run_times:
            decided = self.decisions.pop((job.id, fire))
            if decided is TAKEN:
                self._state.metrics.job(job.id).fires["taken"].inc()
            elif isinstance(decided, Run):
                claimed.append(decided)
            else:
                undecided.append(fire)
        return claimed, undecided

    def _start_late_win(self, run: Run) -> None:
        """A claim ahead won after its fire was handed over: start it now, late, unless
        the fire no longer stands (the job was removed or rescheduled, a newer fire was
        handed over meanwhile, or this replica is stopping)."""
        job, fire = self._state.jobs.get(run.job_id), run.scheduled_for
        assert fire is not None
        if (
            job is None
            or not self._state.accepting
            or job.schedule.next_after(fire - timedelta(microseconds=1)) != fire
            or fire < self._newest_handed_over.get(run.job_id, fire)
        ):
            reason = "missed: the claim ahead was answered after the fire time, and the fire no longer stood"
            self._finish_later(run, "missed", reason)
            return
        self._start(job, run)

    def _hold(self, run: Run) -> None:
        """A fire this replica claimed ahead is still its own to run: it starts when the
        database's clock says it is due (APScheduler, on the wrong clock, would hand it
        over early or late, and while suspended its hand-over is ignored)."""
        assert run.scheduled_for is not None
        due_in = (run.scheduled_for - self._state.clock_guard.database_now()).total_seconds()
        asyncio.get_running_loop().call_later(max(0.0, due_in), self._start_held, run)

    def _start_held(self, run: Run) -> None:
        assert run.scheduled_for is not None
        if self.decisions.take_won((run.job_id, run.scheduled_for)) is None:
            return  # handed over meanwhile (the clock came back), or dropped by a reload
        if (job := self._state.jobs.get(run.job_id)) is not None:
            self._start(job, run)

    def hold(self) -> None:
        for run in self.decisions.waiting:
            self._hold(run)
        self._state.tasks.spawn(self._leave_live_nodes(), name="clock:leave-live-nodes")

    async def _leave_live_nodes(self) -> None:
        with contextlib.suppress(Exception):  # else it drops out after a lease
            await self._state.store.node_stopped(self._state.node)

    # -- fires that will not start here ------------------------------------------

    def give_up_all(self, reason: str) -> list[Run]:
        return self._abandon(self.decisions.forget_all(), reason)

    def give_up_runs(self, run_ids: set[int], reason: str) -> list[Run]:
        return self._abandon(self.decisions.forget_runs(run_ids), reason)

    def _abandon(self, runs: list[Run], reason: str) -> list[Run]:
        for run in runs:
            self._prepared.pop(run.id, None)
            self._runs.forget_unstarted(run.id)
            self._state.log.error("lease_lost", job_id=run.job_id, run_id=run.id, reason=reason, started=False)
        return runs

    async def release(self, job_ids: list[str], reason: str) -> None:
        for run in [run for job_id in job_ids for run in self.decisions.drop(job_id)]:
            await self.finish_unstarted(run, "skipped", reason)

    async def settle_abandoned(self) -> None:
        for run in self.decisions.take_abandoned():
            await self.finish_unstarted(run, "missed", "missed: the fire was claimed ahead but never handed over")

    async def hand_over(self) -> None:
        """Stop claiming ahead and leave the cluster's live nodes; the fires already
        claimed ahead (due within the window) still run here: nobody else would."""
        if self._claiming is None:
            return
        self.decisions.stop()
        # The claim under way is let finish, within bounds: a database that does not answer
        # must not hold the stop (a claim committed but never heard of is reaped as missed).
        _, unfinished = await asyncio.wait({self._claiming}, timeout=CLAIM_AT_STOP_S)
        for task in unfinished:
            task.cancel()
        await asyncio.gather(self._claiming, return_exceptions=True)
        await self._leave_live_nodes()
        if waiting := self.decisions.waiting:
            due = max(run.scheduled_for for run in waiting if run.scheduled_for)
            self._state.log.info("stop_waits_for_claimed_fires", fires=len(waiting), until=due.isoformat())
            deadline = (due - self._state.clock()).total_seconds() + 1.0
            while self.decisions.waiting and deadline > 0:
                await asyncio.sleep(0.05)
                deadline -= 0.05
        # Not handed over in time (the scheduler stalled): recorded, not left running.
        for job_id in {run.job_id for run in self.decisions.waiting}:
            for run in self.decisions.drop(job_id):
                await self.finish_unstarted(run, "missed", "missed: the replica stopped before this fire was due")

    def _finish_later(self, run: Run, status: str, reason: str) -> None:
        self._state.tasks.spawn(self.finish_unstarted(run, status, reason), name=f"fire:{run.job_id}")

    async def finish_unstarted(self, run: Run, status: str, reason: str) -> Run | None:
        """Record a fire claimed ahead that will not run here; never raises (if the
        database cannot be told, the reaper records it missed after the lease)."""
        self._runs.forget_unstarted(run.id)
        self._prepared.pop(run.id, None)
        state = self._state
        try:
            recorded = await state.store.finish_run(run.id, status, state.clock(), None, reason)
        except Exception as exc:
            state.failures.failed("claimed_fire_not_recorded", job_id=run.job_id, run_id=run.id, error=repr(exc))
            return None
        if recorded is None:  # the reaper (or another path) recorded it already
            return None
        if run.job_id in state.jobs:  # a removed job's series are gone, not to be made again
            series = state.metrics.job(run.job_id)
            (series.runs if status == "cancelled" else series.fires)[status].inc()
        state.log.info(
            f"fire_{status}", job_id=run.job_id, run_id=run.id, scheduled_for=str(run.scheduled_for), reason=reason
        )
        return recorded
