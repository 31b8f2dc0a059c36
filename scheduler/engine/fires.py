"""Fires claimed at their time: what APScheduler hands over and no claim ahead decided.

Every fire is claimed as ``(job, fire time, attempt)`` in the database; only the
replica whose insert wins runs it. The fires of one APScheduler pass are claimed
together in one statement, as many as this replica has room for (capacity.py);
the others wait, each job's newest fire, and are claimed as runs end and free
room here, by whichever replica has room first (this replica's share first).
A fire that does not run (the previous run still going, the job paused, a newer
fire due, the cluster behind by more than the job's misfire grace) is recorded
``skipped`` or ``missed``, with the true reason, unless another replica holds it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

from maintd.scheduler.config.model import JobConfig
from maintd.scheduler.engine.batching import Batcher
from maintd.scheduler.engine.capacity import Capacity
from maintd.scheduler.engine.claimed_ahead import FiresAhead, past_grace, superseded
from maintd.scheduler.engine.recovery import Recovery
from maintd.scheduler.engine.runs import Runs
from maintd.scheduler.engine.state import EngineState
from maintd.scheduler.engine.waiting import WaitingFires
from maintd.scheduler.store.records import Run
from maintd.scheduler.store.run_store import Claim


class FireClaims:
    def __init__(
        self,
        state: EngineState,
        *,
        recovery: Recovery,
        runs: Runs,
        ahead: FiresAhead,
        capacity: Capacity,
        check_lease: Callable[[], None],
    ) -> None:
        self._state = state
        self._check_lease = check_lease
        self._recovery = recovery
        self._runs = runs
        self._ahead = ahead
        self._capacity = capacity
        # Fires of the current APScheduler pass, claimed together in one statement.
        self._due: list[tuple[JobConfig, datetime]] = []
        # Fires waiting for room on this replica (or for another replica's claim).
        self.waiting = WaitingFires(ahead.owns)
        # One claim of waiting fires at a time: those that wait meanwhile go in the next.
        self._claiming: asyncio.Task[None] | None = None
        self._claim_due_soon = False
        # Fires recorded missed together: under overload they come by the thousand.
        self._missed: Batcher[tuple[JobConfig, datetime, str], Run | None] = Batcher(self._write_missed)

    def on_fires(self, job_ids: list[str], run_times: list[datetime]) -> None:
        """Fires handed over by APScheduler (in the loop): one per job, or several when the
        loop was blocked past some."""
        if not self._state.scheduling():
            return  # due by a wrong clock: the fires are judged once it is right
        for job_id in job_ids:
            self._on_job_fire(self._state.jobs[job_id], run_times)

    def on_retry(self, retry_of: Run, run_times: list[datetime]) -> None:
        if not self._state.scheduling():
            return
        if (job := self._state.jobs.get(retry_of.job_id)) is not None:  # None: removed by a reload
            self._state.tasks.spawn(self._handle_retry(job, run_times, retry_of), name=f"fire:retry-of-{retry_of.id}")

    def _on_job_fire(self, job: JobConfig, run_times: list[datetime]) -> None:
        # After a freeze, fires come in late: runs claimed ahead under a lease that ran out meanwhile must not start.
        self._check_lease()
        newest = run_times[-1]
        behind = self._state.clock() - newest
        if behind > job.misfire_grace:
            claimed, undecided = self._ahead.take_unstarted(job, run_times)
            reason = past_grace(behind, job.misfire_grace)
            self._state.tasks.spawn(self._past_grace(job, newest, claimed, undecided, reason), name=f"fire:{job.id}")
            return
        undecided = self._ahead.take(job, run_times)
        older = [fire for fire in undecided if fire != newest]
        if older:
            # Superseded by the newest fire (which runs, here or on the replica that claimed it ahead).
            self._state.tasks.spawn(self._record_missed(job, older), name=f"fire:{job.id}")
        if undecided and undecided[-1] == newest:
            # APScheduler hands over every fire due in one pass synchronously; the
            # batch is flushed right after the pass, so a burst costs one round trip.
            if not self._due:
                asyncio.get_running_loop().call_soon(self._flush_due)
            self._due.append((job, newest))

    def _flush_due(self) -> None:
        due, self._due = self._due, []
        for job, fire in due:
            if (older := self.waiting.add(job, fire)) is not None:
                self._state.tasks.spawn(self._record_missed(job, [older]), name=f"fire:{job.id}")
        if self._claiming is None:
            self._claim_waiting()  # already right after the pass: no further hop

    def room_freed(self) -> None:
        """A run ended here (or a fire claimed ahead was settled): waiting fires may be claimed."""
        if self.waiting:
            self._claim_waiting_soon()

    def _claim_waiting_soon(self) -> None:
        if self._claim_due_soon or self._claiming is not None:
            return
        self._claim_due_soon = True
        asyncio.get_running_loop().call_soon(self._claim_waiting)

    def _claim_waiting(self) -> None:
        self._claim_due_soon = False
        state = self._state
        if not state.accepting or not state.scheduling():
            # Stopping: what waits is judged by the next start's catch-up. A wrong clock:
            # the fires of the spell are judged once it is right.
            self.waiting.clear()
            return
        room = self._capacity.free()
        if not self.waiting or room <= 0:
            return
        chosen, expired = self.waiting.take(room, state.clock(), state.jobs)
        self._past_grace_waiting(expired)
        if not chosen:
            return
        self._claiming = state.tasks.spawn(self._claim_chosen(chosen), name=f"fire:batch-of-{len(chosen)}")

    async def _claim_chosen(self, due: list[tuple[JobConfig, datetime]]) -> None:
        try:
            with self._capacity.reserve(len(due)):
                await self._claim_due(due)
        finally:
            self._claiming = None
            self.room_freed()

    def judge_waiting(self) -> None:
        """Now and then (each heartbeat): fires waiting past their grace are recorded even
        when no run ends here to free room."""
        if self.waiting and self._state.scheduling():
            self._past_grace_waiting(self.waiting.expired(self._state.clock(), self._state.jobs))
            self._claim_waiting_soon()

    def _past_grace_waiting(self, expired: list[tuple[JobConfig, datetime]]) -> None:
        now = self._state.clock()
        for job, fire in expired:
            reason = past_grace(now - fire, job.misfire_grace)
            self._state.tasks.spawn(self._past_grace(job, fire, [], [fire], reason), name=f"fire:{job.id}")

    async def _claim_due(self, due: list[tuple[JobConfig, datetime]]) -> None:
        state = self._state
        if not state.accepting or not state.scheduling():
            return
        try:
            if not await self._recovery.recovered(until=min(fire for _, fire in due)):
                return
            won = await state.store.claim_fires(
                [(job.id, fire, job.overlap == "forbid") for job, fire in due], state.clock(), state.node
            )
            due_jobs = {job.id: job for job, _ in due}
            for run in won:
                self._runs.start_fire(self._runs.prepare(due_jobs[run.job_id], run))
            claimed = {(run.job_id, run.scheduled_for) for run in won}
            lost = [(job, fire) for job, fire in due if (job.id, fire) not in claimed]
            if not lost:
                return
            taken = await state.store.taken_fires([(job.id, fire) for job, fire in lost])
            for job, fire in lost:
                if (job.id, fire) in taken:
                    # Unless it is this replica's own claim ahead, answered late (it starts then).
                    if not self._ahead.in_flight((job.id, fire)):
                        state.metrics.job(job.id).fires["taken"].inc()
                else:
                    # In the way: a run still going, a pause. Its own task: it may wait for a
                    # silent owner, and the fires waiting behind must not.
                    state.tasks.spawn(self.claim(job, "schedule", fire, 1, None), name=f"fire:{job.id}")
        except Exception as exc:  # a fire must never take the daemon down
            self._recovery.failed(min(fire for _, fire in due))
            state.failures.failed("fires_not_claimed", level="error", fires=len(due), error=repr(exc))

    async def _handle_retry(self, job: JobConfig, run_times: list[datetime], retry_of: Run) -> None:
        assert retry_of.scheduled_for is not None
        try:
            await self.claim(job, "retry", retry_of.scheduled_for, retry_of.attempt + 1, retry_of)
        except Exception as exc:  # a fire must never take the daemon down
            self._recovery.failed(retry_of.scheduled_for)
            self._log_fire_failed(job, run_times, exc)

    async def _record_missed(self, job: JobConfig, fires: list[datetime]) -> None:
        """Fires superseded by a newer fire of their job."""
        try:
            now = self._state.clock()
            await asyncio.gather(*(self._missed((job, fire, superseded(now - fire))) for fire in fires))
        except Exception as exc:  # recorded by the catch-up once the database is back
            self._fire_failed(job, fires, exc)

    async def _write_missed(self, fires: list[tuple[JobConfig, datetime, str]]) -> list[Run | None]:
        """Record scheduled fires missed, in one statement; each gets its row, or None where
        another replica recorded or holds the fire (or this replica's clock is wrong)."""
        state = self._state
        if not state.scheduling():  # no fire is judged by a wrong clock
            return [None] * len(fires)
        rows = await state.store.record_missed_fires(
            [(job.id, fire, reason) for job, fire, reason in fires], state.clock(), state.node
        )
        recorded = {(row.job_id, row.scheduled_for): row for row in rows}
        for row in rows:
            self._recorded(row, "missed")
        return [recorded.get((job.id, fire)) for job, fire, _ in fires]

    async def _past_grace(
        self, job: JobConfig, newest: datetime, claimed: list[Run], undecided: list[datetime], reason: str
    ) -> None:
        """Fires handed over later than the job's misfire grace: recorded missed with that
        reason, the newest caught up where ``catch_up = "once"``, by the replica that
        recorded it (exactly one: the fire's row is claimed like a run)."""
        newest_is_ours = False
        for run in claimed:
            recorded = await self._ahead.finish_unstarted(run, "missed", reason)
            newest_is_ours |= recorded is not None and run.scheduled_for == newest
        fires = sorted(undecided)
        try:
            if fires and not await self._recovery.recovered(until=fires[0]):
                return
            rows = await asyncio.gather(*(self._missed((job, fire, reason)) for fire in fires))
            newest_is_ours |= any(row is not None and row.scheduled_for == newest for row in rows)
            if newest_is_ours and job.catch_up == "once":
                # The missed row holds the fire's first attempt; the catch-up run is its second.
                await self.claim(job, "catch_up", newest, 2, None)
        except Exception as exc:  # recorded by the catch-up once the database is back
            self._fire_failed(job, fires or [newest], exc)

    def _fire_failed(self, job: JobConfig, fires: list[datetime], exc: Exception) -> None:
        self._recovery.failed(fires[0])
        self._log_fire_failed(job, fires, exc)

    def _log_fire_failed(self, job: JobConfig, fires: list[datetime], exc: Exception) -> None:
        self._state.failures.failed(
            "fire_failed", level="error", job_id=job.id, run_times=[t.isoformat() for t in fires], error=repr(exc)
        )

    async def claim(self, job: JobConfig, trigger: str, fire: datetime, attempt: int, retry_of: Run | None) -> None:
        """Claim a fire and run it; or record why it does not run (the true reason, read
        after the claim), unless another replica holds it.

        A run in the way whose owner has gone silent may have ended during a database
        outage while its owner could not say so yet: the fire waits (up to a lease) for
        that owner to settle it or for its lease to run out, rather than being judged
        skipped by a stale row."""
        state = self._state
        interval = state.heartbeat_interval.total_seconds()
        loop = asyncio.get_running_loop()
        settle_by = loop.time() + state.lease.total_seconds() + interval
        # A retry of a manual run runs though the job is paused, as the manual run did.
        ignore_pause = retry_of is not None and retry_of.trigger == "manual"
        # A retry of a run given params by hand runs with them; any other takes the config's.
        asked = retry_of is not None and bool(retry_of.overrides)
        conflicts, announced = 0, False
        while state.accepting and state.scheduling():
            run = await state.store.claim_run(
                Claim(
                    job_id=job.id, trigger=trigger, scheduled_for=fire, attempt=attempt,
                    exclusive=job.overlap == "forbid", started_at=state.clock(),
                    triggered_by=f"retry of run {retry_of.id}" if retry_of else None,
                    node=state.node, ignore_pause=ignore_pause,
                    params=retry_of.params if asked and retry_of else None,
                    overrides=retry_of.overrides if asked and retry_of else None,
                    reason=retry_of.reason if retry_of else None,
                )
            )  # fmt: skip
            if run is not None:
                self._runs.start_fire(self._runs.prepare(job, run))
                return
            blockers = await state.store.claim_blockers(job.id, fire, attempt)
            if blockers.fire_run_id is not None:
                state.metrics.job(job.id).fires["taken"].inc()
                return
            if blockers.paused and not ignore_pause:
                reason = "skipped: the job is paused"
                break
            if blockers.running_id is None or job.overlap != "forbid":
                # Whatever was in the way ended meanwhile: claim again (a few times at most).
                conflicts += 1
                if conflicts < 3:
                    continue
                reason = "skipped: the claim kept conflicting with runs of the job that ended at once"
                break
            # A live owner heartbeats its runs at least every interval and a half.
            owner_silent = (blockers.running_silent_s or 0.0) > interval * 1.5
            if not owner_silent or loop.time() >= settle_by:
                reason = f"skipped: run {blockers.running_id} was still running (overlap = 'forbid')"
                break
            if not announced:
                announced = True
                state.log.info(
                    "fire_waits_for_silent_owner", job_id=job.id, scheduled_for=fire.isoformat(),
                    run_id=blockers.running_id, silent_s=round(blockers.running_silent_s or 0.0, 3),
                )  # fmt: skip
            await asyncio.sleep(interval / 4)
        else:
            return
        await self.record_unrun(job, "skipped", fire, reason, trigger=trigger, attempt=attempt)

    async def record_unrun(
        self, job: JobConfig, status: str, fire: datetime, reason: str, *, trigger: str = "schedule", attempt: int = 1
    ) -> None:
        state = self._state
        if not state.scheduling():  # no fire is judged by a wrong clock
            return
        row = await state.store.record_unrun_fire(
            job.id, trigger, status, fire, attempt, state.clock(), reason, state.node
        )
        if row is not None:
            self._recorded(row, status)

    def _recorded(self, row: Run, status: str) -> None:
        """Count and log a fire this replica recorded as not run (its reason is the row's error)."""
        assert row.scheduled_for is not None
        self._state.metrics.job(row.job_id).fires[status].inc()
        self._state.log.info(
            f"fire_{status}", job_id=row.job_id, run_id=row.id, scheduled_for=row.scheduled_for.isoformat(),
            reason=row.error,
        )  # fmt: skip
