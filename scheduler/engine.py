"""The engine: APScheduler does the timing, PostgreSQL decides what runs.

Every fire is claimed as ``(job, fire time, attempt)`` in the database; only the
replica whose insert wins runs it. Fires are claimed about a second ahead, each
replica its share first (``scheduler/claim_ahead.py``); what was not decided
ahead is claimed when APScheduler hands the fire over. A fire that does not run
(previous run still going, job paused, daemon too busy) is recorded as
``skipped`` or ``missed``. Runs heartbeat while they run, and any replica
declares lost those whose owner stopped heartbeating for longer than the lease.
Jobs sharing a schedule share one APScheduler job. What admins ask of the
engine is in :mod:`scheduler.engine_admin`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import json
import random
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog
from apscheduler.job import Job as APJob
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger

from maintd.admin_api.interface import (
    RunOut,
)
from maintd.jobs.context import JobCancelled, JobContext, LeaseLost
from maintd.jobs.durations import format_duration
from maintd.scheduler.alerts import Alerter
from maintd.scheduler.batching import Batcher
from maintd.scheduler.claim_ahead import TAKEN, ClaimAhead
from maintd.scheduler.clock import utcnow
from maintd.scheduler.clock_guard import ClockGuard, SkewGuard
from maintd.scheduler.config.model import Config, JobConfig
from maintd.scheduler.config.reload import ConfigDiff
from maintd.scheduler.engine_admin import ALERTS_AT_STOP, READINESS_TIMEOUT_S, EngineAdmin
from maintd.scheduler.failure_log import FailureLog
from maintd.scheduler.fire_executor import FireExecutor, fire_placeholder
from maintd.scheduler.lease import HeartbeatLine, Lease
from maintd.scheduler.metrics import JobSeries, Metrics
from maintd.scheduler.run_logs import RUN_LOGS
from maintd.scheduler.schedules import ScheduleTrigger
from maintd.scheduler.store.run_store import Claim, RunStore

_EXECUTOR = "maintd"
# A cancelled job gets this long to stop at its next check before it is interrupted.
CANCEL_GRACE = timedelta(seconds=2)
# Retry backoff: base * 2**(attempt-1), capped, times a jitter in [0.5, 1.5).
RETRY_BASE = timedelta(seconds=10)
RETRY_CAP = timedelta(hours=1)
# After downtime, look back at most this far and record at most this many missed fires one by one.
CATCH_UP_HORIZON = timedelta(days=31)
CATCH_UP_MAX_ROWS = 100
# Longer than a live replica takes to claim a due fire (milliseconds, ~0.1 s for a
# burst of 1,000): fires younger than this at start are not judged missed yet.
CLAIM_SETTLE = timedelta(seconds=2)
# Failed runs are picked up for retry by any replica for this long after they ended.
RETRY_LOOKBACK = timedelta(days=1)
CANCEL_CHANNEL = "maintd_cancel"
TOO_BUSY = "missed: the daemon was too busy to fire on time"
# At stop, the catch-up of the fires just before the start gets this long beyond its settling time.
CATCH_UP_AT_STOP = timedelta(seconds=5)
# At stop, a claim ahead under way gets this long to be answered.
CLAIM_AT_STOP_S = 5.0
# Fires are claimed this long before they are due (see scheduler/claim_ahead.py).
CLAIM_AHEAD = timedelta(seconds=1)


@dataclass(frozen=True)
class Outcome:
    """How a run ended, kept until the database has recorded it."""

    status: str
    result: Any
    error: str | None
    finished_at: datetime


@dataclass
class ActiveRun:
    """A run in progress on this replica."""

    run: RunOut
    job: JobConfig
    ctx: JobContext
    # Its job's metric series, kept: a reload that removes the job drops them meanwhile.
    series: JobSeries
    task: asyncio.Task[None] | None = None
    cancelled_by: str | None = None
    hard_cancel: asyncio.TimerHandle | None = field(default=None, repr=False)
    # Set when the job has ended but the database could not be told yet.
    outcome: Outcome | None = None
    # Why this replica gave the run up: its lease ran out, or the database said it was
    # declared lost. Its outcome is then recorded only as the run's late_outcome.
    fenced: str | None = None


class Engine(EngineAdmin):
    """Schedules the configured jobs, claims and runs their fires, and serves the admin API."""

    def __init__(
        self,
        config: Config,
        store: RunStore,
        *,
        node: str,
        metrics: Metrics | None = None,
        clock: Callable[[], datetime] = utcnow,
        claim_ahead: timedelta = CLAIM_AHEAD,
        clock_guard: ClockGuard | None = None,
    ) -> None:
        self.jobs = dict(config.jobs)
        self.smtp = config.smtp
        self.store = store
        self.node = node
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.lease = config.scheduler.lease
        # Three beats per lease: one late beat never loses a run.
        self.heartbeat_interval = config.scheduler.lease / 3
        self._lease = Lease(self.lease)
        # A beat slowed by a lagging loop still counts from when it was sent: it is given
        # up only when it could no longer keep the lease anyway.
        self._heartbeat_line = HeartbeatLine(store, timeout=self.lease)
        # Runs given up because the lease ran out unseen, whose rows may still say
        # running: ended (lost/missed) before anything else is written for them; by id.
        self._to_reap: dict[int, str] = {}
        # When the lease loop last looked (loop time): a longer gap than the lease means frozen.
        self._lease_checked_at: float | None = None
        # The latest run on this replica that did not succeed: (job id, when it ended), for STATUS=.
        self.last_failure: tuple[str, datetime] | None = None
        self.log = structlog.get_logger("maintd.engine").bind(node=node)
        self._failures = FailureLog(self.log)
        # While this replica's clock is off the database's, it takes no part in scheduling.
        self.clock_guard = clock_guard or SkewGuard(config.scheduler.max_clock_skew, clock=clock, log=self.log)
        self.clock_guard.listen(self._on_clock_change)
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._active: dict[int, ActiveRun] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._background: list[asyncio.Task[None]] = []
        self._listener: asyncpg.Connection | None = None
        # Fires of the current APScheduler pass, claimed together in one statement.
        self._due: list[tuple[JobConfig, datetime]] = []
        self._accepting = False
        # False after a database call failed; see _recovered().
        self._database_ok = True
        # The moments before the start whose fires _catch_up_recent judges once they settled.
        self._recent_window: tuple[datetime, datetime] = (datetime.min.replace(tzinfo=UTC),) * 2
        # The earliest fire time the failed calls may have concerned: recovery judges from there.
        self._outage_since: datetime | None = None
        self._recovery = asyncio.Lock()
        # No claims ahead with claim_ahead=0 (frozen-clock tests: time moves only when told).
        self._ahead = (
            ClaimAhead(
                store,
                node=node,
                window=claim_ahead,
                lease=self.lease,
                due_before=self._due_before,
                on_win=self._prepare_claimed_ahead,
                on_late_win=self._start_late_win,
                ready=self._recovered,
                on_error=self._claim_ahead_failed,
                clock=clock,
                clock_guard=self.clock_guard,
            )
            if claim_ahead > timedelta(0)
            else None
        )
        self._claiming_ahead: asyncio.Task[None] | None = None
        # The newest fire APScheduler handed over, per job.
        self._newest_handed_over: dict[str, datetime] = {}
        # APScheduler job id -> the ids of the jobs sharing that schedule.
        self._timers: dict[str, list[str]] = {}
        self.alerter = Alerter(
            config.alerts, store, node=node, smtp=config.smtp, metrics=self.metrics, clock=clock,
            after_failures=config.alert_thresholds,
        )  # fmt: skip
        # Jobs found overdue at the last check (expect_success_within).
        self._overdue: set[str] = set()
        # Runs claimed ahead that started in the current APScheduler pass, recorded together.
        self._started_ahead: list[tuple[int, datetime]] = []
        # Metric updates of the fires of the current pass, made right after it, and whether
        # the garbage collector waits for that meanwhile (see _after_starts).
        self._after_pass: list[Callable[[], None]] = []
        self._gc_paused = False
        self._endings: Batcher[ActiveRun, RunOut | None] = Batcher(self._write_endings)
        # Ended and recorded runs whose log buffers the next beat writes and closes.
        self._logs_to_close: set[int] = set()
        # Runs claimed ahead, built and waiting for their fire time; by run id.
        self._prepared: dict[int, ActiveRun] = {}
        # Cancels requested for runs claimed ahead that have not started yet.
        self._cancel_before_start: dict[int, str] = {}

    # -- lifecycle -------------------------------------------------------

    async def start(self) -> None:
        """Compare the clock with the database's, register jobs, record fires missed while
        down, then start firing. A replica whose clock is off registers, records and claims
        nothing until it is back within bound (see _resume_scheduling)."""
        await self.clock_guard.establish(self._database_clock)
        scheduling = not self.clock_guard.suspended()
        now = self.clock()
        if scheduling:
            await self.store.register_jobs(list(self.jobs), now)
        # What a previous process under this node's name left running ends now, not a
        # lease later: its claims ahead would hold back this start's catch-up.
        left_running = await self.store.reap_node_runs(self.node)
        # The heartbeat line is opened (and its statement prepared) now: under load, a
        # connection opened by the first beat could take longer than the lease.
        _, sent_at = await self._heartbeat_line.beat([])
        self._lease.renew(sent_at)
        self._scheduler.add_executor(FireExecutor(self._on_fire), alias=_EXECUTOR)
        for job in self.jobs.values():
            self.metrics.register_job(job.id)
            self._add_to_timer(job)
        self._accepting = True
        judged_until = now - CLAIM_SETTLE
        caught_up = await self._catch_up(judged_until)
        # A fire the previous process had claimed ahead is one of the fires missed while
        # down: caught up on its own only where the downtime's catch-up did not cover its job.
        caught_up |= await self._on_reaped(left_running, caught_up=caught_up)
        self._scheduler.start()
        # APScheduler fires from its start on; every fire before this instant is the
        # catch-up's to judge (the few fires both see are told apart by their key).
        firing_since = self.clock()
        self._recent_window = (judged_until, firing_since)
        await self._sweep_retries()
        if scheduling:
            await self._check_overdue()
        self._listener = await self._first_listener()
        self._background += [
            asyncio.create_task(self._heartbeat_loop(self._keep_lease), name="maintd-lease"),
            asyncio.create_task(self._heartbeat_loop(self._housekeeping), name="maintd-heartbeat"),
            asyncio.create_task(self._listen_loop(), name="maintd-listen"),
            asyncio.create_task(self._catch_up_recent(judged_until, firing_since, caught_up), name="maintd-catch-up"),
        ]
        if self._ahead is not None:
            if scheduling:  # else it joins the live nodes once back within bound
                self._ahead.live = await self.store.node_heartbeat(self.node, self.lease)
            self._claiming_ahead = asyncio.create_task(self._ahead.run(), name="maintd-claim-ahead")
            self._background.append(self._claiming_ahead)
        self.log.info("engine_started", jobs=len(self.jobs), scheduling=scheduling)

    async def stop(self, grace: timedelta) -> None:
        """Stop firing, let running jobs finish for up to ``grace``, then cancel and record the rest."""
        await self._hand_over_claimed_ahead()
        self._accepting = False
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        # Fires already being claimed finish claiming (and start nothing new).
        await self._wait_tasks(t for t in self._tasks if t.get_name().startswith("fire:"))
        running = [a.task for a in self._active.values() if a.task]
        if running:
            self.log.info("drain_started", running=len(running), grace_s=grace.total_seconds())
            _, pending = await asyncio.wait(running, timeout=grace.total_seconds())
            for active in list(self._active.values()):
                if active.task in pending:
                    self._cancel_active(active, "shutdown", grace=timedelta(0))
            await self._wait_tasks(pending)
        # The fires of the moments before the start are judged even when the stop comes first:
        # no later start would look before the fires this replica ran since.
        recent = [task for task in self._background if task.get_name() == "maintd-catch-up" and not task.done()]
        if recent and self._fires_between(*self._recent_window):
            await asyncio.wait(recent, timeout=(CLAIM_SETTLE + CATCH_UP_AT_STOP).total_seconds())
        await self.idle()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._listener is not None:  # the loop may have been cancelled before it ran
            await self._listener.close(timeout=2)
        await self._heartbeat_line.close()
        if unrecorded := await self._flush_outcomes():
            self.log.error("runs_not_recorded_at_stop", run_ids=unrecorded)
        closing, self._logs_to_close = self._logs_to_close, set()
        await RUN_LOGS.flush(closing, self.store.write_runs_logs, close=True, failed=self._failures.failed)
        await self.alerter.close(ALERTS_AT_STOP)
        self._end_of_pass()  # in case the loop stops before the pass's end (the collector back on)
        self.log.info("engine_stopped")

    async def _hand_over_claimed_ahead(self) -> None:
        """Stop claiming ahead and leave the cluster's live nodes; the fires already
        claimed ahead (due within the window) still run here: nobody else would."""
        if self._ahead is None or self._claiming_ahead is None:
            return
        self._ahead.stop()
        # The claim under way is let finish, within bounds: a database that does not answer
        # must not hold the stop (a claim committed but never heard of is reaped as missed).
        _, unfinished = await asyncio.wait({self._claiming_ahead}, timeout=CLAIM_AT_STOP_S)
        for task in unfinished:
            task.cancel()
        await asyncio.gather(self._claiming_ahead, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.store.node_stopped(self.node)
        if waiting := self._ahead.waiting:
            due = max(run.scheduled_for for run in waiting if run.scheduled_for)
            self.log.info("stop_waits_for_claimed_fires", fires=len(waiting), until=due.isoformat())
            deadline = (due - self.clock()).total_seconds() + 1.0
            while self._ahead.waiting and deadline > 0:
                await asyncio.sleep(0.05)
                deadline -= 0.05
        # Not handed over in time (the scheduler stalled): recorded, not left running.
        for job_id in {run.job_id for run in self._ahead.waiting}:
            for run in self._ahead.drop(job_id):
                await self._finish_unstarted(run, "missed", "missed: the replica stopped before this fire was due")

    async def idle(self) -> None:
        """Wait until no fire is being handled and no run is in progress on this replica."""
        while self._tasks:
            await self._wait_tasks(list(self._tasks))

    @staticmethod
    async def _wait_tasks(tasks: Iterable[asyncio.Task[Any]]) -> None:
        tasks = list(tasks)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def wakeup(self) -> None:
        """Make APScheduler look for due fires now (after a test moved the clock)."""
        self._scheduler.wakeup()

    def next_fire_time(self) -> datetime | None:
        """The earliest pending fire, retries included."""
        # In UTC: aware datetimes sharing a zone compare by wall time, ignoring DST's fold.
        times = [j.next_run_time.astimezone(UTC) for j in self._scheduler.get_jobs() if j.next_run_time]
        return min(times, default=None)

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- fires -----------------------------------------------------------

    @staticmethod
    def _timer_id(job: JobConfig) -> str:
        return f"timer:{job.timezone.key}:{job.schedule.expression}"

    def _add_to_timer(self, job: JobConfig) -> None:
        """Jobs with the same schedule share one APScheduler job (a timer): they fire at
        the same instants, and APScheduler's work per fire (next fire time, job store
        update) is then paid once per schedule instead of once per job."""
        timer_id = self._timer_id(job)
        if timer_id not in self._timers:
            self._timers[timer_id] = []
            self._scheduler.add_job(
                fire_placeholder,
                trigger=ScheduleTrigger(job.schedule),
                id=timer_id,
                name=timer_id,
                executor=_EXECUTOR,
                # Late fires are never dropped by APScheduler: the engine records them.
                misfire_grace_time=None,
                coalesce=False,
            )
        self._timers[timer_id].append(job.id)

    def _remove_from_timer(self, job: JobConfig) -> None:
        timer_id = self._timer_id(job)
        self._timers[timer_id].remove(job.id)
        if not self._timers[timer_id]:
            del self._timers[timer_id]
            self._scheduler.remove_job(timer_id)

    def _due_before(self, until: datetime) -> list[tuple[JobConfig, datetime]]:
        """The next scheduled fire of each job, where it comes before ``until``."""
        return [
            (self.jobs[job_id], apjob.next_run_time.astimezone(UTC))
            for apjob in self._scheduler.get_jobs()
            if apjob.next_run_time is not None and apjob.next_run_time < until
            for job_id in self._timers.get(apjob.id, ())
        ]

    def _on_fire(self, apjob: APJob, run_times: list[datetime]) -> None:
        """Called by APScheduler (FireExecutor) in the loop when fires are due."""
        if self.clock_guard.suspended():
            return  # due by a wrong clock: the fires are judged once it is right (_resume_scheduling)
        retry_of: RunOut | None = apjob.kwargs.get("retry_of")
        if retry_of is not None:
            if (job := self.jobs.get(retry_of.job_id)) is not None:  # None: removed by a reload
                self._spawn(self._handle_fire(job, run_times, retry_of), name=f"fire:{apjob.id}")
            return
        for job_id in self._timers[apjob.id]:
            self._on_job_fire(self.jobs[job_id], run_times)

    def _on_job_fire(self, job: JobConfig, run_times: list[datetime]) -> None:
        # After a freeze, fires come in late: runs claimed ahead under a lease that ran out meanwhile must not start.
        self._check_lease()
        self._newest_handed_over[job.id] = run_times[-1]
        if self._ahead is not None:
            run_times = self._take_claimed_ahead(job, run_times)
            if not run_times:
                return
        if len(run_times) == 1:
            # APScheduler hands over every fire due in one pass synchronously; the
            # batch is flushed right after the pass, so a burst costs one round trip.
            if not self._due:
                asyncio.get_running_loop().call_soon(self._flush_due)
            self._due.append((job, run_times[0]))
            return
        self._spawn(self._handle_fire(job, run_times, None), name=f"fire:{job.id}")

    def _take_claimed_ahead(self, job: JobConfig, run_times: list[datetime]) -> list[datetime]:
        """Hand out the fires decided ahead; return those left to claim now.

        Several fires at once mean the loop was blocked past some: the newest runs
        if this replica claimed it, older ones it claimed are recorded missed, and
        fires another replica took are that replica's."""
        newest = run_times[-1]
        undecided = []
        for fire in run_times:
            claimed = self._ahead.pop((job.id, fire)) if self._ahead is not None else None
            if claimed is TAKEN:
                self._after_starts(self.metrics.job(job.id).fires["taken"].inc)
            elif isinstance(claimed, RunOut):
                if (by := self._cancel_before_start.get(claimed.id)) is not None:
                    # Cancelled before its time: recorded so, and the job never starts.
                    self._spawn(
                        self._finish_unstarted(claimed, "cancelled", f"cancelled by {by}"), name=f"fire:{job.id}"
                    )
                elif fire == newest:
                    self._start_claimed_ahead(job, claimed)
                else:
                    self._spawn(self._finish_unstarted(claimed, "missed", TOO_BUSY), name=f"fire:{job.id}")
            else:
                undecided.append(fire)
        if undecided and undecided[-1] != newest:
            # The newest was decided ahead: the older ones left are only to be recorded.
            self._spawn(self._record_missed(job, undecided), name=f"fire:{job.id}")
            return []
        return undecided

    async def _record_missed(self, job: JobConfig, fires: list[datetime]) -> None:
        try:
            for fire in fires:
                await self._record_unrun(job, "missed", fire, TOO_BUSY)
        except Exception as exc:  # recorded by the catch-up once the database is back
            self._database_failed(fires[0])
            self._failures.failed(
                "fire_failed", level="error", job_id=job.id, run_times=[t.isoformat() for t in fires], error=repr(exc)
            )

    def _start_late_win(self, run: RunOut) -> None:
        """A claim ahead won after its fire was handed over: start it now, late, unless
        the fire no longer stands (the job was removed or rescheduled, a newer fire was
        handed over meanwhile, or this replica is stopping)."""
        job, fire = self.jobs.get(run.job_id), run.scheduled_for
        assert fire is not None
        stands = (
            job is not None
            and self._accepting
            and job.schedule.next_after(fire - timedelta(microseconds=1)) == fire
            and fire >= self._newest_handed_over.get(run.job_id, fire)
        )
        if job is None or not stands:
            reason = "missed: the claim ahead was answered after the fire time, and the fire no longer stood"
            self._spawn(self._finish_unstarted(run, "missed", reason), name=f"fire:{run.job_id}")
            return
        self._start_claimed_ahead(job, run)

    def _prepare_claimed_ahead(self, run: RunOut) -> None:
        """A fire won ahead: build its run's context now, so that at the fire time (when a
        burst of fires starts together) only the start itself is left to do."""
        if (job := self.jobs.get(run.job_id)) is not None:
            self._prepared[run.id] = self._prepare_run(job, run)
        if self.clock_guard.suspended():  # the answer came after the clock went wrong
            self._hold_claimed_ahead(run)

    def _start_claimed_ahead(self, job: JobConfig, run: RunOut) -> None:
        now = self.clock()
        if not self._started_ahead:
            asyncio.get_running_loop().call_soon(self._flush_started_ahead)
        self._started_ahead.append((run.id, now))
        active = self._prepared.pop(run.id, None)
        if active is None or active.job is not job:  # not prepared, or the job was changed by a reload since
            active = self._prepare_run(job, run)
        # The run object is this engine's own (the claim's answer), not shared.
        active.run.started_at = now
        self._ran(active)

    def _flush_started_ahead(self) -> None:
        started, self._started_ahead = self._started_ahead, []
        self._spawn(self._record_started(started), name=f"fire:started-{len(started)}")

    async def _record_started(self, started: list[tuple[int, datetime]]) -> None:
        # This runs once the runs have made their first step: a run that already ended
        # has its start written with its outcome (finish_runs), one statement fewer.
        started = [
            (run_id, at) for run_id, at in started if (active := self._active.get(run_id)) and active.outcome is None
        ]
        if not started:
            return
        try:
            await self.store.mark_started(started)
        except Exception as exc:  # informational only: the runs are running either way
            self._failures.failed("start_times_not_recorded", runs=len(started), error=repr(exc))

    def _flush_due(self) -> None:
        due, self._due = self._due, []
        self._spawn(self._claim_due(due), name=f"fire:batch-of-{len(due)}")

    async def _claim_due(self, due: list[tuple[JobConfig, datetime]]) -> None:
        if not self._accepting or self.clock_guard.suspended():
            return
        try:
            if not await self._recovered(until=min(fire for _, fire in due)):
                return
            won = await self.store.claim_fires(
                [(job.id, fire, job.overlap == "forbid") for job, fire in due], self.clock(), self.node
            )
            due_jobs = {job.id: job for job, _ in due}
            for run in won:
                self._ran(self._prepare_run(due_jobs[run.job_id], run))
            claimed = {(run.job_id, run.scheduled_for) for run in won}
            lost = [(job, fire) for job, fire in due if (job.id, fire) not in claimed]
            if not lost:
                return
            taken = await self.store.taken_fires([(job.id, fire) for job, fire in lost])
            for job, fire in lost:
                if (job.id, fire) in taken:
                    # Unless it is this replica's own claim ahead, answered late (it starts then).
                    if self._ahead is None or not self._ahead.in_flight((job.id, fire)):
                        self.metrics.job(job.id).fires["taken"].inc()
                else:
                    await self._claim_fire(job, "schedule", fire, 1, None)
        except Exception as exc:  # a fire must never take the daemon down
            self._database_failed(min(fire for _, fire in due))
            self._failures.failed("fires_not_claimed", level="error", fires=len(due), error=repr(exc))

    async def _handle_fire(self, job: JobConfig, run_times: list[datetime], retry_of: RunOut | None) -> None:
        try:
            if retry_of is not None:
                assert retry_of.scheduled_for is not None
                await self._claim_fire(job, "retry", retry_of.scheduled_for, retry_of.attempt + 1, retry_of)
                return
            *late, due = run_times
            if not await self._recovered(until=run_times[0]):
                return
            # Fires APScheduler reports together came late (the loop was blocked):
            # all but the newest are recorded as missed, the newest runs.
            for fire in late:
                await self._record_unrun(job, "missed", fire, TOO_BUSY)
            await self._claim_fire(job, "schedule", due, 1, None)
        except Exception as exc:  # a fire must never take the daemon down
            # Recorded as missed (and caught up, if configured) once the database is back.
            self._database_failed(retry_of.scheduled_for or run_times[0] if retry_of is not None else run_times[0])
            self._failures.failed(
                "fire_failed",
                level="error",
                job_id=job.id,
                run_times=[t.isoformat() for t in run_times],
                error=repr(exc),
            )

    async def _claim_fire(
        self, job: JobConfig, trigger: str, fire: datetime, attempt: int, retry_of: RunOut | None
    ) -> None:
        """Claim a fire and run it; or record why it does not run (the true reason, read
        after the claim), unless another replica holds it.

        A run in the way whose owner has gone silent may have ended during a database
        outage while its owner could not say so yet: the fire waits (up to a lease) for
        that owner to settle it or for its lease to run out, rather than being judged
        skipped by a stale row."""
        settle_by = asyncio.get_running_loop().time() + (self.lease + self.heartbeat_interval).total_seconds()
        # A retry of a manual run runs though the job is paused, as the manual run did.
        ignore_pause = retry_of is not None and retry_of.trigger == "manual"
        conflicts, announced = 0, False
        while self._accepting and not self.clock_guard.suspended():
            run = await self.store.claim_run(
                Claim(
                    job_id=job.id,
                    trigger=trigger,
                    scheduled_for=fire,
                    attempt=attempt,
                    exclusive=job.overlap == "forbid",
                    started_at=self.clock(),
                    triggered_by=f"retry of run {retry_of.id}" if retry_of else None,
                    node=self.node,
                    ignore_pause=ignore_pause,
                )
            )
            if run is not None:
                self._ran(self._prepare_run(job, run))
                return
            blockers = await self.store.claim_blockers(job.id, fire, attempt)
            if blockers.fire_run_id is not None:
                self.metrics.job(job.id).fires["taken"].inc()
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
            owner_silent = (blockers.running_silent_s or 0.0) > self._silence_allowed_s
            if not owner_silent or asyncio.get_running_loop().time() >= settle_by:
                reason = f"skipped: run {blockers.running_id} was still running (overlap = 'forbid')"
                break
            if not announced:
                announced = True
                self.log.info(
                    "fire_waits_for_silent_owner", job_id=job.id, scheduled_for=fire.isoformat(),
                    run_id=blockers.running_id, silent_s=round(blockers.running_silent_s or 0.0, 3),
                )  # fmt: skip
            await asyncio.sleep(self.heartbeat_interval.total_seconds() / 4)
        else:
            return
        await self._record_unrun(job, "skipped", fire, reason, trigger=trigger, attempt=attempt)

    @property
    def _silence_allowed_s(self) -> float:
        """How long a live owner can go without heartbeating a run: one interval and a half."""
        return self.heartbeat_interval.total_seconds() * 1.5

    def _ran(self, active: ActiveRun) -> None:
        """A fire starts its run (counted into the metrics after the pass, see _after_starts)."""
        scheduled_for = active.run.scheduled_for
        assert scheduled_for is not None
        lateness = max(0.0, (self.clock() - scheduled_for).total_seconds())
        self._after_starts(functools.partial(self._count_start, active.series, lateness))
        self._launch(active)

    @staticmethod
    def _count_start(series: JobSeries, lateness: float) -> None:
        series.fires["ran"].inc()
        series.fire_lateness.observe(lateness)
        series.running.inc()

    def _after_starts(self, work: Callable[[], None]) -> None:
        """Do ``work`` (a metric update) once the runs started in this loop pass have
        started, i.e. made their first step; until then the garbage collector waits too.

        A burst of 1,000 fires makes thousands of metric updates (2-5 us each, the
        series of 1,000 jobs being spread over memory), and allocates enough to set
        off collections that walk every young object (milliseconds at times): its runs
        should not wait on either (bench/claims.py)."""
        if not self._after_pass:
            loop = asyncio.get_running_loop()
            # Two hops: the second is queued behind the first step of every run started in this pass.
            loop.call_soon(loop.call_soon, self._end_of_pass)
            self._gc_paused = gc.isenabled()
            gc.disable()
        self._after_pass.append(work)

    def _end_of_pass(self) -> None:
        if self._gc_paused:
            self._gc_paused = False
            gc.enable()
        work, self._after_pass = self._after_pass, []
        for do in work:
            do()

    async def _record_unrun(
        self, job: JobConfig, status: str, fire: datetime, reason: str, *, trigger: str = "schedule", attempt: int = 1
    ) -> None:
        if self.clock_guard.suspended():  # no fire is judged by a wrong clock
            return
        row = await self.store.record_unrun_fire(
            job.id, trigger, status, fire, attempt, self.clock(), reason, self.node
        )
        if row is not None:
            self.metrics.job(job.id).fires[status].inc()
            self.log.info(f"fire_{status}", job_id=job.id, run_id=row.id, scheduled_for=fire.isoformat(), reason=reason)

    async def _catch_up(
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
        if self.clock_guard.suspended():
            return set()
        states = await self.store.job_states()
        last_fires = await self.store.last_fires(list(self.jobs), outage_since or until)
        gaps: dict[str, tuple[list[datetime], int]] = {}
        for job in self.jobs.values():
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
            taken = await self.store.taken_fires(
                [(job_id, fire) for job_id, (fires, _) in gaps.items() for fire in fires]
            )
        caught_up = set()
        for job_id, (fires, count) in gaps.items():
            job, newest = self.jobs[job_id], fires[-1]
            missed = [fire for fire in fires if (job_id, fire) not in taken]
            if not missed:
                continue
            count -= len(fires) - len(missed)
            self.log.warning(
                "fires_missed", job_id=job.id, count=count, first=missed[0].isoformat(), catch_up=job.catch_up
            )
            run_latest = job.catch_up == "once" and job.id not in no_run_for and missed[-1] == newest
            latest = missed.pop() if run_latest else None
            for fire in missed:
                await self._record_unrun(job, "missed", fire, "missed: no replica could run it")
            if latest is not None:
                # Its own task: it may wait for a silent owner's run, and recovery must not.
                self._spawn(self._claim_catch_up(job, latest, 1), name=f"fire:{job.id}")
                caught_up.add(job.id)
        return caught_up

    def _claim_ahead_failed(self, exc: Exception) -> None:
        # The fire-time claims cover what a failed pass leaves undecided.
        self._failures.failed("claim_ahead_failed", error=repr(exc))

    async def _claim_catch_up(self, job: JobConfig, fire: datetime, attempt: int) -> None:
        try:
            await self._claim_fire(job, "catch_up", fire, attempt, None)
        except Exception as exc:  # recorded as missed by the next recovery
            self._database_failed(fire)
            self._failures.failed(
                "fire_failed", level="error", job_id=job.id, run_times=[fire.isoformat()], error=repr(exc)
            )

    async def _catch_up_recent(self, judged_until: datetime, started: datetime, caught_up: set[str]) -> None:
        """Fires of the last moments before start may be in a live replica's hands: they
        are looked at once it has had time to claim them."""
        await asyncio.sleep(CLAIM_SETTLE.total_seconds())
        try:
            await self._catch_up(started, no_run_for=caught_up)
        except Exception as exc:
            self._database_failed(judged_until)
            self._failures.failed("catch_up_failed", error=repr(exc))

    async def _recovered(self, until: datetime) -> bool:
        """After a failed database call, before claiming anything new: record how the
        runs that ended meanwhile ended, and the fires before ``until`` that went
        unclaimed. False while the database is still away."""
        if self._database_ok:
            return True
        async with self._recovery:
            if self._database_ok:
                return True
            try:
                await self._flush_outcomes()
                await self._catch_up(until, outage_since=self._outage_since)
            except Exception as exc:
                self._failures.failed("database_still_unavailable", error=repr(exc))
                return False
            self._database_ok, self._outage_since = True, None
            self.log.info("database_recovered", failures_held_back=self._failures.recovered())
            return True

    def _fires_between(self, since: datetime, until: datetime) -> bool:
        """Whether any job has a fire in (since, until)."""
        return any(job.schedule.next_after(since) < until for job in self.jobs.values())

    def _database_failed(self, since: datetime) -> None:
        """A database call failed; fires from ``since`` on may have gone unclaimed (see _recovered)."""
        self._database_ok = False
        self._outage_since = since if self._outage_since is None else min(self._outage_since, since)

    # -- runs ------------------------------------------------------------

    def _start_run(self, job: JobConfig, run: RunOut) -> None:
        active = self._prepare_run(job, run)
        active.series.running.inc()
        self._launch(active)

    def _prepare_run(self, job: JobConfig, run: RunOut) -> ActiveRun:
        """The run's context, logger and metric series; nothing is registered yet."""
        assert run.scheduled_for is not None
        log = structlog.get_logger("maintd.run").bind(job_id=job.id, run_id=run.id, node=self.node)
        ctx = JobContext(
            job_id=job.id,
            run_id=run.id,
            scheduled_for=run.scheduled_for,
            pool=self.store.pool,
            log=log,
            now=self.clock,
            timezone=job.timezone,
            trigger=run.trigger,
            attempt=run.attempt,
            smtp=self.smtp,
            check_lease=self._check_lease,
            _progress=functools.partial(self._publish_progress, run.id),
        )
        return ActiveRun(run=run, job=job, ctx=ctx, series=self.metrics.job(job.id))

    async def _publish_progress(self, run_id: int, progress: dict[str, Any]) -> None:
        if not await self.store.set_progress(run_id, progress):
            self._declared_lost([run_id])

    def _launch(self, active: ActiveRun) -> None:
        self._check_lease()  # a lease that ran out unseen ends with the runs it covered, not with this one
        run_id = active.run.id
        self._active[run_id] = active
        RUN_LOGS.open(run_id, active.job.id)
        active.task = self._spawn(self._execute(active), name=f"run:{run_id}")
        if (by := self._cancel_before_start.pop(run_id, None)) is not None:
            self._cancel_active(active, by)

    async def _execute(self, active: ActiveRun) -> None:
        job, run, log = active.job, active.run, active.ctx.log
        # This task's context only: whatever the job logs, through any logger, names its run.
        structlog.contextvars.bind_contextvars(job_id=job.id, run_id=run.id)
        log.info("run_started", trigger=run.trigger, attempt=run.attempt, scheduled_for=str(run.scheduled_for))
        status, result, error = "succeeded", None, None
        timeout = job.timeout.total_seconds() if job.timeout else None
        try:
            async with asyncio.timeout(timeout) as deadline:
                result = await job.task(active.ctx, job.params)
        except (asyncio.CancelledError, JobCancelled) as exc:
            if (task := asyncio.current_task()) is not None:
                task.uncancel()
            status, error = "cancelled", f"cancelled by {active.cancelled_by or 'the event loop'}"
            if active.fenced is not None:
                error = f"cancelled: {active.fenced}"
            elif isinstance(exc, LeaseLost):  # the job's own statement found the run declared lost
                error = f"cancelled: {exc}"
        except TimeoutError:
            if deadline.expired():
                status, error = "timed_out", f"timed out after {format_duration(job.timeout)}"  # type: ignore[arg-type]
            else:
                status, error = "failed", traceback.format_exc()
        except Exception:
            status, error = "failed", traceback.format_exc()
        finally:
            if active.hard_cancel:
                active.hard_cancel.cancel()
        active.outcome = Outcome(status, result, error, self.clock())
        # A job that ended without ever yielding lets the runs started with it start
        # before its bookkeeping (a burst of short jobs would otherwise queue behind it).
        await asyncio.sleep(0)
        series = active.series
        series.running.dec()
        duration = (active.outcome.finished_at - run.started_at).total_seconds() if run.started_at else 0.0
        series.runs[status].inc()
        series.run_duration.observe(duration)
        if status == "succeeded":
            series.last_success.set(active.outcome.finished_at.timestamp())
            log.info("run_succeeded", duration_s=round(duration, 3), result=result)
        else:
            self.last_failure = (job.id, active.outcome.finished_at)
            log.warning(f"run_{status}", duration_s=round(duration, 3), error=error)
        await self._record_outcome(active)

    async def _record_outcome(self, active: ActiveRun) -> bool:
        """Tell the database how a run ended. If it cannot be told, the run stays
        heartbeated (so no replica declares it lost) and each beat tries again."""
        run, outcome = active.run, active.outcome
        assert outcome is not None
        try:
            ended = await self._endings(active)
        except Exception as exc:
            self._database_failed(self.clock())
            self._failures.failed(
                "run_outcome_not_recorded",
                level="error",
                job_id=run.job_id,
                run_id=run.id,
                status=outcome.status,
                error=repr(exc),
            )
            return False
        self._active.pop(run.id, None)
        # What it logs from here on (a retry scheduled, an alert) is written at the next beat.
        self._logs_to_close.add(run.id)
        job = active.job
        if ended is not None and ended.late_outcome is not None:
            # The run was declared lost (and alerted so) before its owner could tell how it ended.
            active.ctx.log.warning(
                "run_outcome_after_lease", status=ended.status, late_status=outcome.status, error=outcome.error
            )
            return True
        if ended is not None:
            await self.alerter.run_ended(ended)
        if ended and ended.status in ("failed", "timed_out") and run.attempt <= job.retries and self._accepting:
            self._schedule_retry(job, ended)
        return True

    async def _write_endings(self, ended: list[ActiveRun]) -> list[RunOut | None]:
        """The runs that ended in one loop iteration (a burst of short jobs ends together):
        their logs in one transaction, then their outcomes in one statement; a run seen
        ended shows all it logged."""
        await RUN_LOGS.flush(
            [active.run.id for active in ended], self.store.write_runs_logs, failed=self._failures.failed
        )
        # Nothing is written for a run of a lease that ran out before it is ended as the reaper would.
        self._check_lease()
        if any(active.run.id in self._to_reap for active in ended):
            await self._reap_given_up()
        outcomes = []
        for active in ended:
            assert active.outcome is not None
            outcome = active.outcome
            outcomes.append(
                (
                    active.run.id,
                    outcome.status,
                    outcome.finished_at,
                    outcome.result,
                    outcome.error,
                    active.run.started_at,
                )
            )
        recorded = {run.id: run for run in await self.store.finish_runs(outcomes)}
        return [recorded.get(active.run.id) for active in ended]

    async def _flush_outcomes(self) -> list[int]:
        """Record the outcomes the database missed; return the runs still unrecorded."""
        for active in [a for a in self._active.values() if a.outcome is not None]:
            await self._record_outcome(active)
        return [run_id for run_id, a in self._active.items() if a.outcome is not None]

    def _schedule_retry(self, job: JobConfig, run: RunOut) -> None:
        """Fire the next attempt after a backoff every replica computes alike (seeded by the run id),
        so whichever replica schedules it, the retry is claimed once at the same time."""
        retry_id = f"{job.id}#retry-of-{run.id}"
        if self._scheduler.get_job(retry_id) is not None:
            return
        base = min(RETRY_BASE * 2 ** (run.attempt - 1), RETRY_CAP)
        delay = base * random.Random(run.id).uniform(0.5, 1.5)
        at = (run.finished_at or self.clock()) + delay
        self._scheduler.add_job(
            fire_placeholder,
            trigger=DateTrigger(run_date=at, timezone=UTC),
            id=retry_id,
            executor=_EXECUTOR,
            misfire_grace_time=None,
            kwargs={"retry_of": run},
        )
        self.log.info("retry_scheduled", job_id=job.id, run_id=run.id, attempt=run.attempt + 1, at=at.isoformat())

    async def _sweep_retries(self) -> None:
        """Schedule retries of failed runs whose owner is gone (died, or declared them lost)."""
        retrying = [job.id for job in self.jobs.values() if job.retries > 0]
        if not retrying or not self._accepting or self.clock_guard.suspended():
            return
        for run in await self.store.runs_to_retry(retrying, self.clock() - RETRY_LOOKBACK):
            job = self.jobs.get(run.job_id)  # None: removed by a reload meanwhile
            if job is not None and run.attempt <= job.retries:
                self._schedule_retry(job, run)

    def _cancel_active(self, active: ActiveRun, by: str, *, grace: timedelta = CANCEL_GRACE) -> None:
        """Ask a local run to stop; interrupt it if it has not stopped after ``grace``."""
        if active.cancelled_by is not None and grace > timedelta(0):
            return
        active.cancelled_by = active.cancelled_by or by
        active.ctx.cancelled.set()
        task = active.task
        # The run itself asking (raise_if_cancelled found the lease ran out) stops on the event.
        if task is None or task.done() or task is asyncio.current_task():
            return
        if grace <= timedelta(0):
            task.cancel()
        else:
            active.hard_cancel = asyncio.get_running_loop().call_later(grace.total_seconds(), task.cancel)

    # -- config reload -----------------------------------------------------

    async def apply_config(self, config: Config, diff: ConfigDiff) -> None:
        """Take the jobs and settings of a reloaded config (see scheduler/config/reload.py).
        Runs in progress finish under the settings they started with."""
        # The one step that can fail comes first, before anything changes.
        if diff.added and not self.clock_guard.suspended():  # else registered when back in bound
            await self.store.register_jobs(diff.added, self.clock())
        rescheduled = [
            job_id for job_id, settings in diff.changed.items() if {"schedule", "timezone"} & settings.keys()
        ]
        for job_id in [*diff.removed, *diff.changed]:
            self._remove_from_timer(self.jobs[job_id])
        self.jobs = dict(config.jobs)
        self.smtp = config.smtp
        self.alerter.config, self.alerter.smtp = config.alerts, config.smtp
        self.alerter.after_failures = config.alert_thresholds
        for job_id in [*diff.added, *diff.changed]:
            self.metrics.register_job(job_id)
            self._add_to_timer(self.jobs[job_id])
        # Fires claimed ahead under a schedule that no longer holds are recorded, not run.
        released = [run for job_id in [*diff.removed, *rescheduled] for run in self._drop_claimed_ahead(job_id)]
        for run in released:
            await self._finish_unstarted(
                run, "skipped", "skipped: the job was changed by a config reload before this fire"
            )
        for job_id in diff.removed:
            self.metrics.unregister_job(job_id)

    def _drop_claimed_ahead(self, job_id: str) -> list[RunOut]:
        return self._ahead.drop(job_id) if self._ahead is not None else []

    async def _finish_unstarted(self, run: RunOut, status: str, reason: str) -> None:
        """Record a fire claimed ahead that will not run here; never raises (if the
        database cannot be told, the reaper records it missed after the lease)."""
        self._cancel_before_start.pop(run.id, None)
        self._prepared.pop(run.id, None)
        try:
            recorded = await self.store.finish_run(run.id, status, self.clock(), None, reason)
        except Exception as exc:
            self._failures.failed("claimed_fire_not_recorded", job_id=run.job_id, run_id=run.id, error=repr(exc))
            return
        if recorded is None:  # the reaper (or another path) recorded it already
            return
        if run.job_id in self.jobs:  # a removed job's series are gone, not to be made again
            series = self.metrics.job(run.job_id)
            (series.runs if status == "cancelled" else series.fires)[status].inc()
        self.log.info(
            f"fire_{status}", job_id=run.job_id, run_id=run.id, scheduled_for=str(run.scheduled_for), reason=reason
        )

    # -- heartbeat and reaper ----------------------------------------------

    async def _heartbeat_loop(self, beat: Callable[[], Awaitable[None]]) -> None:
        """Call ``beat`` every heartbeat interval, counted from when each began: a slow
        beat does not push the next one back. After a failed beat the next comes sooner:
        the lease (and the recovery) resume as soon as the database answers again."""
        loop = asyncio.get_running_loop()
        interval = self.heartbeat_interval.total_seconds()
        next_at = loop.time() + interval
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            began = max(next_at, loop.time())
            try:
                await beat()
            except Exception as exc:
                self._database_failed(self.clock())
                self._failures.failed("heartbeat_failed", error=repr(exc))
                next_at = began + interval / 4
            else:
                next_at = began + interval

    async def _beat_own_runs_loop(self) -> None:
        await self._heartbeat_loop(self._beat_own_runs)

    async def beat(self) -> None:
        """One heartbeat: keep this replica's lease on its runs (and pick up cancel
        requests, a fallback for NOTIFY), then its housekeeping."""
        await self._keep_lease()
        await self._housekeeping()

    async def _beat_own_runs(self) -> None:
        """The heartbeat of a process that only runs (``maintd run-job``): its lease and its runs' writes."""
        await self._keep_lease()
        await self._write_own_runs()

    async def _housekeeping(self) -> None:
        """Check the clock, write what this replica's runs logged and how they ended, reap
        lost runs cluster-wide, and after a database outage record what it made this
        replica miss. While its clock is off, it only looks after its own runs."""
        await self._check_clock()
        scheduling = not self.clock_guard.suspended()
        if scheduling and self._ahead is not None and not self._ahead.stopping:  # a stopping replica takes no share
            self._ahead.live = await self.store.node_heartbeat(self.node, self.lease)
        if self._ahead is not None:
            for run in self._ahead.take_abandoned():
                await self._finish_unstarted(run, "missed", "missed: the fire was claimed ahead but never handed over")
        await self._write_own_runs()
        # A reaped fire is caught up by the replica that reaps it: not one that cannot.
        if scheduling:
            await self._on_reaped(await self.store.reap_lost_runs(self.lease))
            await self._check_overdue()  # overdue is judged by the clock too
        await self._recovered(until=self.clock())
        await self._sweep_retries()

    async def _write_own_runs(self) -> None:
        """What this process's runs logged since the last beat (for ended runs, before
        their outcome), and how those that ended ended, where the database missed it."""
        await RUN_LOGS.flush(list(self._active), self.store.write_runs_logs, failed=self._failures.failed)
        await self._flush_outcomes()
        closing, self._logs_to_close = self._logs_to_close, set()
        await RUN_LOGS.flush(closing, self.store.write_runs_logs, close=True, failed=self._failures.failed)

    async def _on_reaped(self, runs: list[RunOut], *, caught_up: AbstractSet[str] = frozenset()) -> set[str]:
        """Count, log and alert runs just declared lost (and fires claimed ahead recorded
        missed), by the reaper or by their own owner; return the jobs whose missed fire is
        caught up (not those in ``caught_up``: their catch-up run was claimed already)."""
        caught_up_now: set[str] = set()
        for run in runs:
            if run.status == "missed":
                self.metrics.job(run.job_id).fires["missed"].inc()
                self.log.warning("fire_missed", job_id=run.job_id, run_id=run.id, owner=run.node, reason=run.error)
                if run.job_id not in caught_up | caught_up_now and self._catch_up_reaped(run):
                    caught_up_now.add(run.job_id)
                continue
            self.metrics.job(run.job_id).runs["lost"].inc()
            self.log.warning("run_lost", job_id=run.job_id, run_id=run.id, owner=run.node, error=run.error)
            await self.alerter.run_ended(run)
        return caught_up_now

    # -- the lease (scheduler/lease.py) ------------------------------------

    async def _keep_lease(self) -> None:
        """Heartbeat this replica's runs over the line of their own. Runs of a lease that
        ran out unseen are given up (and ended as the reaper would) first; runs the
        database says are no longer running were declared lost: given up too."""
        now = asyncio.get_running_loop().time()
        if self._lease_checked_at is not None and now - self._lease_checked_at > self._lease.duration:
            # Frozen (SIGSTOP, a VM pause) or a loop blocked that long: no beat could be sent.
            self.log.error(
                "replica_was_frozen", gap_s=round(now - self._lease_checked_at, 3), lease_s=self._lease.duration
            )
        self._lease_checked_at = now
        self._check_lease()
        await self._reap_given_up()
        waiting = [run.id for run in self._ahead.waiting] if self._ahead is not None else []
        # A run that ended is not beaten: its row must look silent to others until its outcome is written.
        running = [
            run_id for run_id, active in self._active.items() if active.fenced is None and active.outcome is None
        ]
        beating = running + waiting
        alive, sent_at = await self._heartbeat_line.beat(beating)
        self._lease.renew(sent_at)
        if gone := [run_id for run_id in beating if run_id not in alive]:
            self._declared_lost(gone)
        for run_id, cancelled_by in alive.items():
            if cancelled_by:
                self._on_cancel_request(run_id, cancelled_by)
        if any(active.outcome is not None for active in self._active.values()):
            # The database answers again: what ended during the outage is settled at once,
            # not at the next housekeeping beat (other replicas' fires wait for it).
            await self._flush_outcomes()

    def _check_lease(self) -> None:
        """If this replica's lease ran out unseen, give up its runs before anything is
        written for them: they are cancelled at once (their cleanup runs), fires claimed
        ahead never start, and all are ended as lost or missed at the next contact with
        the database; their own outcomes are kept only as late outcomes."""
        if not self._lease.expired():
            return
        reason = (
            f"node {self.node} had no heartbeat confirmed for "
            f"{self._lease.duration + self._lease.overdue_by():.1f}s (frozen, blocked or cut off from the database)"
        )
        for active in self._active.values():
            if active.fenced is None:
                self._to_reap[active.run.id] = reason
                self._give_up(active, reason)
        for run in self._abandon_claimed_ahead(self._ahead.forget_all() if self._ahead is not None else [], reason):
            self._to_reap[run.id] = reason
        # Runs claimed from now on are stamped from now on.
        self._lease.reset()

    def _declared_lost(self, run_ids: list[int]) -> None:
        """The database no longer holds these runs as running: another replica declared
        them lost (or the fires claimed ahead missed) while this one could not beat."""
        gone = set(run_ids)
        for active in [a for run_id, a in self._active.items() if run_id in gone and a.outcome is None]:
            if active.fenced is None:
                self._give_up(
                    active, "it is no longer running in the database (declared lost, or lost with a failover)"
                )
        self._abandon_claimed_ahead(
            self._ahead.forget_runs(gone) if self._ahead is not None else [],
            "no longer running in the database (recorded missed, or lost with a failover)",
        )

    def _abandon_claimed_ahead(self, runs: list[RunOut], reason: str) -> list[RunOut]:
        """Fires claimed ahead that will never start here, forgotten by the claim-ahead part already."""
        for run in runs:
            self._prepared.pop(run.id, None)
            self._cancel_before_start.pop(run.id, None)
            self.log.error("lease_lost", job_id=run.job_id, run_id=run.id, reason=reason, started=False)
        return runs

    def _give_up(self, active: ActiveRun, reason: str) -> None:
        active.fenced = reason
        active.ctx.log.error("lease_lost", reason=reason, started=True)
        if active.outcome is None:
            self._cancel_active(active, "the loss of its lease", grace=timedelta(0))

    async def _reap_given_up(self) -> None:
        """End the given-up runs whose rows may still say running (lost, or missed if
        never started); rows another replica reaped meanwhile are left as they are."""
        if not self._to_reap:
            return
        given_up = dict(self._to_reap)
        for reason in set(given_up.values()):
            run_ids = [run_id for run_id, why in given_up.items() if why == reason]
            reaped = await self.store.reap_own_runs(run_ids, reason)
            for run_id in run_ids:
                self._to_reap.pop(run_id, None)
            await self._on_reaped(reaped)

    def _catch_up_reaped(self, missed: RunOut) -> bool:
        """A fire claimed ahead by a replica that died before it was due: with
        ``catch_up = "once"`` this replica (the one whose reap returned it: exactly one)
        runs it now, as the fire's second attempt, unless the job's next fire has come
        meanwhile (that one stands for it, as after downtime). True when it does."""
        job, fire = self.jobs.get(missed.job_id), missed.scheduled_for
        if job is None or fire is None or job.catch_up != "once" or missed.trigger != "schedule":
            return False
        if job.schedule.next_after(fire) <= self.clock():
            return False
        self.log.info("catch_up_of_reaped_fire", job_id=job.id, run_id=missed.id, scheduled_for=fire.isoformat())
        self._spawn(self._claim_catch_up(job, fire, missed.attempt + 1), name=f"fire:{job.id}")
        return True

    async def _check_overdue(self) -> None:
        """Every job's last success, cluster-wide, into the metrics; and the dead-man's
        switch: a job with ``expect_success_within`` and no success in that window is
        overdue (failing, never run or paused alike), logged and alerted once."""
        now = self.clock()
        last = await self.store.last_successes(list(self.jobs))
        first_seen = {job_id: state["first_seen"] for job_id, state in (await self.store.job_states()).items()}
        overdue = set()
        for job in self.jobs.values():
            success = last.get(job.id)
            if success is not None:
                self.metrics.job(job.id).last_success.set(success.timestamp())
            late = job.overdue(success, first_seen.get(job.id, now), now)
            if late is None:
                with contextlib.suppress(KeyError):  # the window was removed by a reload
                    self.metrics.overdue.remove(job.id)
                continue
            self.metrics.overdue.labels(job.id).set(int(late))
            if not late:
                continue
            overdue.add(job.id)
            assert job.expect_success_within is not None  # only a job with a window is overdue
            if job.id not in self._overdue:
                self.log.error(
                    "job_overdue",
                    job_id=job.id,
                    last_success=success.isoformat() if success else None,
                    expect_success_within=format_duration(job.expect_success_within),
                )
            await self.alerter.job_overdue(job.id, success, job.expect_success_within, now)
        for job_id in self._overdue - overdue:
            self.log.info("job_no_longer_overdue", job_id=job_id)
        self._overdue = overdue

    async def _check_clock(self) -> None:
        """Compare this replica's clock with the database's (scheduler/clock_guard.py)."""
        try:
            await self.clock_guard.measure(self._database_clock)
        except Exception as exc:  # the runs' own heartbeat must go on
            self._failures.failed("clock_check_failed", error=repr(exc))

    async def _database_clock(self) -> datetime:
        return await self.store.ping(timeout=READINESS_TIMEOUT_S)

    async def _listen(self) -> asyncpg.Connection:
        conn = await self.store.dedicated_connection()
        await conn.add_listener(CANCEL_CHANNEL, self._on_cancel_notice)
        return conn

    async def _first_listener(self) -> asyncpg.Connection | None:
        """LISTEN before start() returns: a cancel sent right after start must not be missed."""
        try:
            return await self._listen()
        except Exception as exc:
            self._failures.failed("listen_failed", error=repr(exc))
            return None

    async def _listen_loop(self) -> None:
        """Hold a connection LISTENing for cancel requests, so a cancel sent to any replica
        reaches the owner at once; reconnect after the database comes back."""
        while True:
            try:
                conn = self._listener or await self._listen()
                self._listener = None  # from here on, this loop closes it
                try:
                    while not conn.is_closed():
                        await asyncio.sleep(self.heartbeat_interval.total_seconds())
                        await conn.execute("SELECT 1")  # notices a dead server
                finally:
                    # A graceful close: terminating under a pending query leaves asyncpg
                    # a future nobody retrieves. Shielded so our cancellation cannot cut it short.
                    with contextlib.suppress(Exception):
                        await asyncio.shield(conn.close(timeout=2))
            except Exception as exc:
                self._failures.failed("listen_failed", error=repr(exc))
            await asyncio.sleep(self.heartbeat_interval.total_seconds())

    def _on_cancel_notice(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        notice = json.loads(payload)
        self._on_cancel_request(notice["run_id"], notice["by"])

    def _on_cancel_request(self, run_id: int, by: str) -> None:
        active = self._active.get(run_id)
        if active is not None and active.outcome is None:
            self._cancel_active(active, by)
        elif self._ahead is not None and any(run.id == run_id for run in self._ahead.waiting):
            self._cancel_before_start[run_id] = by

    # -- a wrong clock (scheduler/clock_guard.py) ------------------------------

    def _on_clock_change(self, suspended: bool) -> None:
        """The clock went off the database's (no part in scheduling from now on), or came back."""
        if not suspended:
            task = asyncio.create_task(self._resume_scheduling(), name="maintd-clock-resumed")
            self._background.append(task)
            return
        if self._ahead is not None:
            for run in self._ahead.waiting:
                self._hold_claimed_ahead(run)
            # The other replicas take over this one's share of the fires at once.
            self._spawn(self._leave_live_nodes(), name="clock:leave-live-nodes")

    def _hold_claimed_ahead(self, run: RunOut) -> None:
        """A fire this replica claimed ahead is still its own to run: it starts when the
        database's clock says it is due (APScheduler, on the wrong clock, would hand it
        over early or late, and while suspended its hand-over is ignored)."""
        assert run.scheduled_for is not None
        due_in = (run.scheduled_for - self.clock_guard.database_now()).total_seconds()
        asyncio.get_running_loop().call_later(max(0.0, due_in), self._start_held, run)

    def _start_held(self, run: RunOut) -> None:
        assert run.scheduled_for is not None
        if self._ahead is None or self._ahead.take_won((run.job_id, run.scheduled_for)) is None:
            return  # handed over meanwhile (the clock came back), or dropped by a reload
        if (job := self.jobs.get(run.job_id)) is not None:
            self._start_claimed_ahead(job, run)

    async def _leave_live_nodes(self) -> None:
        with contextlib.suppress(Exception):  # else it drops out after a lease
            await self.store.node_stopped(self.node)

    async def _resume_scheduling(self) -> None:
        """Back within bound: the fires of the spell that no replica recorded are judged as
        after downtime (recorded missed, and one caught up where ``catch_up = "once"``),
        those of its last moments once the live replicas have had time to claim them."""
        if not self._accepting:
            return
        now = self.clock()
        spell_began = self.clock_guard.suspended_since
        try:
            # A replica off since its start registered nothing: its jobs were there since then.
            await self.store.register_jobs(list(self.jobs), spell_began or now)
            # Fire by fire from the spell's start: fires the other replicas ran meanwhile hide nothing.
            caught_up = await self._catch_up(now - CLAIM_SETTLE, outage_since=spell_began)
        except Exception as exc:  # judged by the recovery after the outage
            self._database_failed(spell_began or now - CLAIM_SETTLE)
            self._failures.failed("catch_up_failed", error=repr(exc))
            return
        await self._catch_up_recent(now - CLAIM_SETTLE, now, caught_up)

    def status_summary(self) -> str:
        """One line for systemd's STATUS=: jobs, runs in progress on this replica, the last failure here."""
        running = sum(1 for active in self._active.values() if active.outcome is None)
        failure = "none"
        if self.last_failure is not None:
            job_id, when = self.last_failure
            failure = f"{job_id} at {when.isoformat(timespec='seconds')}"
        return f"{len(self.jobs)} jobs, {running} running, last failure: {failure}"
