"""The runs in progress on this replica, from their start to their recorded end.

A run's job gets a context (its logger, the pool, the lease check), runs under
its timeout, and can be cancelled: asked first, interrupted after a grace.
Runs ending in one loop iteration are recorded together (their logs in one
transaction, their outcomes in one statement). An outcome the database could
not take is kept, and the run stays heartbeated until a later write gets
through. A run given up with its lease keeps running to its cleanup, but its
outcome is recorded only as the run's late outcome.
"""

from __future__ import annotations

import asyncio
import functools
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from pydantic import BaseModel

from maintd.jobs.context import JobCancelled, JobContext, LeaseLost
from maintd.jobs.durations import format_duration
from maintd.scheduler.alerts import Alerter
from maintd.scheduler.config.model import JobConfig
from maintd.scheduler.engine.batching import Batcher
from maintd.scheduler.engine.gc_hold import GcHold
from maintd.scheduler.engine.recovery import Recovery
from maintd.scheduler.engine.state import EngineState
from maintd.scheduler.job_series import JobSeries
from maintd.scheduler.run_logs import RUN_LOGS
from maintd.scheduler.store.records import Run

# A cancelled job gets this long to stop at its next check before it is interrupted.
CANCEL_GRACE = timedelta(seconds=2)


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

    run: Run
    job: JobConfig
    ctx: JobContext
    # Its job's metric series, kept: a reload that removes the job drops them meanwhile.
    series: JobSeries
    # When it started here: set at the fire time for a run claimed ahead, whose claim has none.
    started_at: datetime | None = None
    task: asyncio.Task[None] | None = None
    cancelled_by: str | None = None
    hard_cancel: asyncio.TimerHandle | None = field(default=None, repr=False)
    # Set when the job has ended but the database could not be told yet.
    outcome: Outcome | None = None
    # Why this replica gave the run up: its lease ran out, or the database said it was
    # declared lost. Its outcome is then recorded only as the run's late_outcome.
    fenced: str | None = None


class Runs:
    def __init__(
        self,
        state: EngineState,
        *,
        recovery: Recovery,
        alerter: Alerter,
        check_lease: Callable[[], None],
        before_writing: Callable[[list[int]], Awaitable[None]],
        declared_lost: Callable[[list[int]], None],
        failed: Callable[[JobConfig, Run], None],
        room_freed: Callable[[], None],
    ) -> None:
        """``check_lease`` gives every run up if the lease ran out unseen; ``before_writing``
        does so and ends the given-up runs among these before their outcomes are written;
        ``declared_lost`` gives up runs the database no longer holds as running; ``failed``
        is told of a run that failed or timed out (a retry may be due); ``room_freed``, of
        a run that ended (fires waiting for room may be claimed)."""
        self._state = state
        self._recovery = recovery
        self._alerter = alerter
        self._check_lease = check_lease
        self._before_writing = before_writing
        self._declared_lost = declared_lost
        self._failed = failed
        self._room_freed = room_freed
        self.active: dict[int, ActiveRun] = {}
        # The latest run on this replica that did not succeed: (job id, when it ended), for STATUS=.
        self.last_failure: tuple[str, datetime] | None = None
        self.gc_hold = GcHold()
        self._endings: Batcher[ActiveRun, Run | None] = Batcher(self._write_endings)
        # Ended and recorded runs whose log buffers the next beat writes and closes.
        self._logs_to_close: set[int] = set()
        # Cancels requested for runs claimed ahead that have not started yet.
        self._cancel_before_start: dict[int, str] = {}
        # Runs claimed ahead that started in the current loop pass, recorded together.
        self._started_ahead: list[tuple[int, datetime]] = []

    # -- starting ----------------------------------------------------------

    def prepare(self, job: JobConfig, run: Run) -> ActiveRun:
        """The run's context, logger and metric series; nothing is registered yet."""
        assert run.scheduled_for is not None
        state = self._state
        log = structlog.get_logger("maintd.run").bind(job_id=job.id, run_id=run.id, node=state.node)
        ctx = JobContext(
            job_id=job.id,
            run_id=run.id,
            scheduled_for=run.scheduled_for,
            pool=state.store.pool,
            log=log,
            now=state.clock,
            timezone=job.timezone,
            trigger=run.trigger,
            attempt=run.attempt,
            dry_run=run.dry_run,
            smtp=state.smtp,
            check_lease=self._check_lease,
            _progress=functools.partial(self._publish_progress, run.id),
        )
        return ActiveRun(run=run, job=job, ctx=ctx, series=state.metrics.job(job.id), started_at=run.started_at)

    def start_fire(self, active: ActiveRun) -> None:
        """A fire starts its run."""
        scheduled_for = active.run.scheduled_for
        assert scheduled_for is not None
        series = active.series
        series.fires["ran"].inc()
        series.fire_lateness.observe(max(0.0, (self._state.clock() - scheduled_for).total_seconds()))
        series.running.inc()
        self.gc_hold.hold()
        self._launch(active)

    def start_claimed_ahead(self, active: ActiveRun) -> None:
        """A fire claimed ahead starts at its time; its start time is written after its first step."""
        now = self._state.clock()
        if not self._started_ahead:
            asyncio.get_running_loop().call_soon(self._flush_started_ahead)
        self._started_ahead.append((active.run.id, now))
        active.started_at = now
        self.start_fire(active)

    def start_manual(self, job: JobConfig, run: Run) -> ActiveRun:
        """A run an operator started (trigger, rerun, replay); its task ends once its outcome is recorded."""
        active = self.prepare(job, run)
        active.series.running.inc()
        self._launch(active)
        return active

    def _launch(self, active: ActiveRun) -> None:
        self._check_lease()  # a lease that ran out unseen ends with the runs it covered, not with this one
        run_id = active.run.id
        self.active[run_id] = active
        RUN_LOGS.open(run_id, active.job.id)
        active.task = self._state.tasks.spawn(self._execute(active), name=f"run:{run_id}")
        if (by := self._cancel_before_start.pop(run_id, None)) is not None:
            self.cancel(active, by)

    def _flush_started_ahead(self) -> None:
        started, self._started_ahead = self._started_ahead, []
        self._state.tasks.spawn(self._record_started(started), name=f"fire:started-{len(started)}")

    async def _record_started(self, started: list[tuple[int, datetime]]) -> None:
        # This runs once the runs have made their first step: a run that already ended
        # has its start written with its outcome (finish_runs).
        started = [
            (run_id, at) for run_id, at in started if (active := self.active.get(run_id)) and active.outcome is None
        ]
        if not started:
            return
        try:
            await self._state.store.mark_started(started)
        except Exception as exc:  # informational only: the runs are running either way
            self._state.failures.failed("start_times_not_recorded", runs=len(started), error=repr(exc))

    async def _publish_progress(self, run_id: int, progress: dict[str, Any]) -> None:
        if not await self._state.store.set_progress(run_id, progress):
            self._declared_lost([run_id])

    # -- running -----------------------------------------------------------

    async def _execute(self, active: ActiveRun) -> None:
        job, run, log = active.job, active.run, active.ctx.log
        # This task's context only: whatever the job logs, through any logger, names its run.
        structlog.contextvars.bind_contextvars(job_id=job.id, run_id=run.id)
        log.info("run_started", trigger=run.trigger, attempt=run.attempt, scheduled_for=str(run.scheduled_for))
        status, result, error = "succeeded", None, None
        timeout = job.timeout.total_seconds() if job.timeout else None
        try:
            async with asyncio.timeout(timeout) as deadline:
                result = await job.task(active.ctx, _params(active))
        except (asyncio.CancelledError, JobCancelled) as exc:
            if (task := asyncio.current_task()) is not None:
                task.uncancel()
            status, error = "cancelled", f"cancelled by {active.cancelled_by or 'the event loop'}"
            if active.fenced is not None:
                error = f"cancelled: {active.fenced}"
            elif isinstance(exc, LeaseLost):  # the job's own statement found the run declared lost
                error = f"cancelled: {exc}"
        except TimeoutError:
            if deadline.expired() and job.timeout is not None:
                status, error = "timed_out", f"timed out after {format_duration(job.timeout)}"
            else:
                status, error = "failed", traceback.format_exc()
        except Exception:
            status, error = "failed", traceback.format_exc()
        finally:
            if active.hard_cancel:
                active.hard_cancel.cancel()
        active.outcome = Outcome(status, result, error, self._state.clock())
        self._room_freed()
        # A job that ended without ever yielding lets the runs started with it start
        # before its bookkeeping (a burst of short jobs would otherwise queue behind it).
        await asyncio.sleep(0)
        series = active.series
        series.running.dec()
        started_at = active.started_at
        duration = (active.outcome.finished_at - started_at).total_seconds() if started_at else 0.0
        series.runs[status].inc()
        series.run_duration.observe(duration)
        if status == "succeeded":
            if not run.dry_run:  # a dry run changed nothing: no success
                series.last_success.set(active.outcome.finished_at.timestamp())
            log.info("run_succeeded", duration_s=round(duration, 3), result=result)
        else:
            self.last_failure = (job.id, active.outcome.finished_at)
            log.warning(f"run_{status}", duration_s=round(duration, 3), error=error)
        await self._record_outcome(active)

    def cancel(self, active: ActiveRun, by: str, *, grace: timedelta = CANCEL_GRACE) -> None:
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
            # A step later: a task cancelled before its first step never enters _execute,
            # and its outcome would go unrecorded. Its first step is queued before this.
            asyncio.get_running_loop().call_soon(task.cancel)
        else:
            active.hard_cancel = asyncio.get_running_loop().call_later(grace.total_seconds(), task.cancel)

    def request_cancel(self, run_id: int, by: str, *, claimed_ahead: bool) -> None:
        """A cancel request for a run of this replica's: in progress, or claimed ahead and not started yet."""
        active = self.active.get(run_id)
        if active is not None and active.outcome is None:
            self.cancel(active, by)
        elif claimed_ahead:
            self._cancel_before_start[run_id] = by

    def cancel_requested(self, run_id: int) -> str | None:
        """Who asked to cancel this run claimed ahead before it started, if anyone did."""
        return self._cancel_before_start.get(run_id)

    def forget_unstarted(self, run_id: int) -> None:
        """A run claimed ahead will not start here."""
        self._cancel_before_start.pop(run_id, None)

    def give_up(self, active: ActiveRun, reason: str) -> None:
        """The run's lease is gone: cancel it at once; its outcome becomes a late outcome."""
        active.fenced = reason
        active.ctx.log.error("lease_lost", reason=reason, started=True)
        if active.outcome is None:
            self.cancel(active, "the loss of its lease", grace=timedelta(0))

    # -- what the heartbeat needs --------------------------------------------

    def beating(self) -> list[int]:
        """The runs to heartbeat: in progress and not given up. A run that ended is not
        beaten: its row must look silent to others until its outcome is written."""
        return [run_id for run_id, active in self.active.items() if active.fenced is None and active.outcome is None]

    def running_count(self) -> int:
        return sum(1 for active in self.active.values() if active.outcome is None)

    def has_unrecorded(self) -> bool:
        return any(active.outcome is not None for active in self.active.values())

    def holds_logs_of(self, run_id: int) -> bool:
        """Whether this replica has log lines of the run it may not have written yet."""
        return run_id in self.active or run_id in self._logs_to_close

    # -- recording -------------------------------------------------------------

    async def _record_outcome(self, active: ActiveRun) -> bool:
        """Tell the database how a run ended. If it cannot be told, the run stays
        heartbeated (so no replica declares it lost) and each beat tries again."""
        run, outcome = active.run, active.outcome
        assert outcome is not None
        try:
            ended = await self._endings(active)
        except Exception as exc:
            self._recovery.failed(self._state.clock())
            self._state.failures.failed(
                "run_outcome_not_recorded", level="error", job_id=run.job_id, run_id=run.id,
                status=outcome.status, error=repr(exc),
            )  # fmt: skip
            return False
        self.active.pop(run.id, None)
        # What it logs from here on (a retry scheduled, an alert) is written at the next beat.
        self._logs_to_close.add(run.id)
        if ended is not None and ended.late_outcome is not None:
            # The run was declared lost (and alerted so) before its owner could tell how it ended.
            active.ctx.log.warning(
                "run_outcome_after_lease", status=ended.status, late_status=outcome.status, error=outcome.error
            )
            return True
        if ended is not None:
            await self._alerter.run_ended(ended)
            if ended.status in ("failed", "timed_out") and self._state.accepting:
                self._failed(active.job, ended)
        return True

    async def _write_endings(self, ended: list[ActiveRun]) -> list[Run | None]:
        """The runs that ended in one loop iteration (a burst of short jobs ends together):
        their logs in one transaction, then their outcomes in one statement; a run seen
        ended shows all it logged."""
        run_ids = [active.run.id for active in ended]
        store = self._state.store
        await RUN_LOGS.flush(run_ids, store.write_runs_logs, failed=self._state.failures.failed)
        await self._before_writing(run_ids)
        outcomes = []
        for active in ended:
            outcome = active.outcome
            assert outcome is not None
            # A run claimed with its params keeps them; a fire records its config's.
            params = None if active.run.params is not None else active.job.params.model_dump(mode="json")
            outcomes.append(
                (active.run.id, outcome.status, outcome.finished_at, outcome.result, outcome.error,
                 active.started_at, params)
            )  # fmt: skip
        recorded = {run.id: run for run in await store.finish_runs(outcomes)}
        return [recorded.get(run_id) for run_id in run_ids]

    async def flush_outcomes(self) -> list[int]:
        """Record the outcomes the database missed; return the runs still unrecorded."""
        for active in [a for a in self.active.values() if a.outcome is not None]:
            await self._record_outcome(active)
        return [run_id for run_id, a in self.active.items() if a.outcome is not None]

    async def write_logs(self) -> None:
        """What the runs logged since the last beat (for ended runs, before their outcome),
        and how those that ended ended, where the database missed it."""
        failed = self._state.failures.failed
        await RUN_LOGS.flush(list(self.active), self._state.store.write_runs_logs, failed=failed)
        await self.flush_outcomes()
        await self.close_logs()

    async def close_logs(self) -> None:
        """Write and close the log buffers of the runs ended and recorded."""
        closing, self._logs_to_close = self._logs_to_close, set()
        failed = self._state.failures.failed
        await RUN_LOGS.flush(closing, self._state.store.write_runs_logs, close=True, failed=failed)


def _params(active: ActiveRun) -> BaseModel:
    """The params the run runs with: those its claim recorded (a manual run's overrides,
    validated again by the task's model, as the config may have changed since), else the
    job's as configured."""
    if active.run.params is None:
        return active.job.params
    return active.job.task.params_model.model_validate(active.run.params)
