"""Fires nobody recorded: missed while no replica was up, while the database was
away or while this replica's clock was wrong, and fires claimed ahead by a replica
that died before they were due. Each is recorded ``missed``; with
``catch_up = "once"`` the latest missed fire of a job runs now, late."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Set as AbstractSet
from datetime import datetime, timedelta

from maintd.scheduler.alerts import Alerter
from maintd.scheduler.config.model import JobConfig
from maintd.scheduler.engine.fires import FireClaims
from maintd.scheduler.engine.recovery import Recovery
from maintd.scheduler.engine.state import EngineState
from maintd.scheduler.store.records import Run

# After downtime, look back at most this far and record at most this many missed fires one by one.
CATCH_UP_HORIZON = timedelta(days=31)
CATCH_UP_MAX_ROWS = 100
# Longer than a live replica takes to claim a due fire (milliseconds, ~0.1 s for a
# burst of 1,000): fires younger than this at start are not judged missed yet.
CLAIM_SETTLE = timedelta(seconds=2)


class CatchUp:
    def __init__(self, state: EngineState, *, fires: FireClaims, recovery: Recovery, alerter: Alerter) -> None:
        self._state = state
        self._fires = fires
        self._recovery = recovery
        self._alerter = alerter
        # Jobs whose catch-up run is being claimed: their next fires are not claimed ahead
        # meanwhile (a run claimed ahead counts as running, and would refuse the catch-up).
        self.claiming: set[str] = set()

    async def catch_up(
        self, until: datetime, *, outage_since: datetime | None = None, no_run_for: AbstractSet[str] = frozenset()
    ) -> set[str]:
        """Record the fires before ``until`` that no replica recorded (no replica up, or the
        database away), and claim one catch-up run per job where configured; return the
        jobs that got one. ``no_run_for``: jobs whose catch-up run was already claimed.

        After downtime every fire since a job's newest recorded one went unrecorded. After
        an outage (``outage_since``: the earliest fire the failed calls concerned), fires
        since then may have been recorded meanwhile (by other replicas, or claimed ahead
        here once the database answered): the gap is looked for from the newest fire
        before the outage, fire by fire, so a fire recorded after it cannot hide it. A
        job whose latest fire before ``until`` was run gets no catch-up run: that fire
        stands for the others."""
        state = self._state
        if not state.scheduling():
            return set()
        jobs = state.jobs
        states = await state.store.job_states()
        last_fires = await state.store.last_fires(list(jobs), outage_since or until)
        gaps: dict[str, tuple[list[datetime], int]] = {}
        for job in jobs.values():
            last = last_fires[job.id]
            since = max(last or states[job.id]["first_seen"], until - CATCH_UP_HORIZON)
            unrecorded: deque[datetime] = deque(maxlen=CATCH_UP_MAX_ROWS)
            count = 0
            fire = job.schedule.next_after(since)
            while fire < until:
                unrecorded.append(fire)
                count += 1
                fire = job.schedule.next_after(fire)
            if count:
                gaps[job.id] = (list(unrecorded), count)
        taken: set[tuple[str, datetime]] = set()
        if outage_since is not None and gaps:
            taken = await state.store.taken_fires(
                [(job_id, fire) for job_id, (fires, _) in gaps.items() for fire in fires]
            )
        caught_up = set()
        for job_id, (fires, count) in gaps.items():
            job, newest = jobs[job_id], fires[-1]
            missed = [fire for fire in fires if (job_id, fire) not in taken]
            if not missed:
                continue
            count -= len(fires) - len(missed)
            state.log.warning(
                "fires_missed", job_id=job.id, count=count, first=missed[0].isoformat(), catch_up=job.catch_up
            )
            run_latest = job.catch_up == "once" and job.id not in no_run_for and missed[-1] == newest
            latest = missed.pop() if run_latest else None
            for fire in missed:
                await self._fires.record_unrun(job, "missed", fire, "missed: no replica could run it")
            if latest is not None:
                # Its own task: it may wait for a silent owner's run, and recovery must not.
                self._claim_later(job, latest, 1)
                caught_up.add(job.id)
        return caught_up

    def _claim_later(self, job: JobConfig, fire: datetime, attempt: int) -> None:
        self.claiming.add(job.id)
        self._state.tasks.spawn(self._claim(job, fire, attempt), name=f"fire:{job.id}")

    async def _claim(self, job: JobConfig, fire: datetime, attempt: int) -> None:
        try:
            await self._fires.claim(job, "catch_up", fire, attempt, None)
        except Exception as exc:  # recorded as missed by the next recovery
            self._recovery.failed(fire)
            self._state.failures.failed(
                "fire_failed", level="error", job_id=job.id, run_times=[fire.isoformat()], error=repr(exc)
            )
        finally:
            self.claiming.discard(job.id)

    async def catch_up_recent(self, judged_until: datetime, started: datetime, caught_up: set[str]) -> None:
        """Fires of the last moments before start may be in a live replica's hands: they
        are looked at once it has had time to claim them."""
        await asyncio.sleep(CLAIM_SETTLE.total_seconds())
        try:
            await self.catch_up(started, no_run_for=caught_up)
        except Exception as exc:
            self._recovery.failed(judged_until)
            self._state.failures.failed("catch_up_failed", error=repr(exc))

    def fires_between(self, since: datetime, until: datetime) -> bool:
        """Whether any job has a fire in (since, until)."""
        return any(job.schedule.next_after(since) < until for job in self._state.jobs.values())

    async def settle_reaped(self, runs: list[Run], *, caught_up: AbstractSet[str] = frozenset()) -> set[str]:
        """Count, log and alert runs just declared lost (and fires claimed ahead recorded
        missed), by the reaper or by their own owner; return the jobs whose missed fire is
        caught up (not those in ``caught_up``: their catch-up run was claimed already)."""
        state = self._state
        caught_up_now: set[str] = set()
        for run in runs:
            if run.status == "missed":
                state.metrics.job(run.job_id).fires["missed"].inc()
                state.log.warning("fire_missed", job_id=run.job_id, run_id=run.id, owner=run.node, reason=run.error)
                if run.job_id not in caught_up | caught_up_now and self._catch_up_reaped(run):
                    caught_up_now.add(run.job_id)
                continue
            state.metrics.job(run.job_id).runs["lost"].inc()
            state.log.warning("run_lost", job_id=run.job_id, run_id=run.id, owner=run.node, error=run.error)
            await self._alerter.run_ended(run)
        return caught_up_now

    def _catch_up_reaped(self, missed: Run) -> bool:
        """A fire claimed ahead by a replica that died before it was due: with
        ``catch_up = "once"`` this replica (the one whose reap returned it: exactly one)
        runs it now, as the fire's second attempt, unless the job's next fire has come
        meanwhile (that one stands for it, as after downtime). True when it does."""
        job, fire = self._state.jobs.get(missed.job_id), missed.scheduled_for
        if job is None or fire is None or job.catch_up != "once" or missed.trigger != "schedule":
            return False
        if job.schedule.next_after(fire) <= self._state.clock():
            return False
        self._state.log.info("catch_up_of_reaped_fire", job_id=job.id, run_id=missed.id, scheduled_for=fire.isoformat())
        self._claim_later(job, fire, missed.attempt + 1)
        return True
