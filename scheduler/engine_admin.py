"""The engine's answers to admins: :class:`admin_api.interface.AdminEngine` (jobs, runs,
trigger, pause, cancel, audit, readiness) and the one-off run of ``maintd run-job``.

A mixin of :class:`scheduler.engine.Engine`, kept apart so that the engine module
holds the scheduling itself; it reads and writes through the run store and starts
runs with the engine's own machinery.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from maintd.admin_api.interface import (
    Actor,
    AuditOut,
    JobBusy,
    JobNotFound,
    JobOut,
    RunEnded,
    RunLogsOut,
    RunNotFound,
    RunOut,
    SchedulingSuspended,
    TriggerOut,
)
from maintd.scheduler.alerts import Alerter
from maintd.scheduler.clock_guard import ClockGuard
from maintd.scheduler.config.model import JobConfig
from maintd.scheduler.failure_log import FailureLog
from maintd.scheduler.metrics import Metrics
from maintd.scheduler.run_logs import RUN_LOGS
from maintd.scheduler.store.run_store import Claim, NewAuditEntry, RunStore

# A readiness check (and the clock check) waits this long for the database.
READINESS_TIMEOUT_S = 2.0
# What /readyz says while the database does not answer; why goes to the log (scheduler/failure_log.py).
DATABASE_NOT_ANSWERING = "database: not answering"
# At stop, alerts still being delivered get this long.
ALERTS_AT_STOP = timedelta(seconds=5)
# Fire times listed on a job object.
UPCOMING = 5


class EngineAdmin:
    """What admins ask of a running engine (the API's AdminEngine), and ``run_once``."""

    # The engine's parts this uses (scheduler.engine.Engine sets them).
    jobs: dict[str, JobConfig]
    store: RunStore
    node: str
    metrics: Metrics
    alerter: Alerter
    clock: Callable[[], datetime]
    heartbeat_interval: timedelta
    clock_guard: ClockGuard
    log: Any
    _active: dict[int, Any]
    _logs_to_close: set[int]
    _start_run: Callable[[JobConfig, RunOut], None]
    _on_cancel_request: Callable[[int, str], None]
    _listen: Callable[[], Any]
    idle: Callable[[], Any]
    _beat_own_runs: Callable[[], Any]
    _beat_own_runs_loop: Callable[[], Any]
    _heartbeat_line: Any
    _failures: FailureLog

    @property
    def running(self) -> bool:
        """Whether the scheduler runs (the engine's)."""
        raise NotImplementedError

    def _job(self, job_id: str) -> JobConfig:
        try:
            return self.jobs[job_id]
        except KeyError:
            raise JobNotFound(job_id) from None

    async def list_jobs(self) -> list[JobOut]:
        return await self._job_outs(list(self.jobs))

    async def get_job(self, job_id: str) -> JobOut:
        self._job(job_id)
        return (await self._job_outs([job_id]))[0]

    async def _job_outs(self, job_ids: list[str]) -> list[JobOut]:
        states = await self.store.job_states()
        last = await self.store.last_runs(job_ids)
        running = await self.store.running_counts()
        successes = await self.store.last_successes(job_ids)
        now = self.clock()
        outs = []
        for job_id in job_ids:
            job = self.jobs[job_id]
            paused = bool(states.get(job_id) and states[job_id]["paused"])
            upcoming = job.schedule.upcoming(now, UPCOMING)
            success, window = successes.get(job_id), job.expect_success_within
            first_seen = states[job_id]["first_seen"] if job_id in states else now
            outs.append(
                JobOut(
                    id=job.id,
                    task=job.task_ref,
                    schedule=job.schedule.expression,
                    timezone=job.timezone.key,
                    paused=paused,
                    running=running.get(job_id, 0) > 0,
                    next_run_time=None if paused else upcoming[0],
                    upcoming=upcoming,
                    last_run=last.get(job_id),
                    timeout_s=job.timeout.total_seconds() if job.timeout else None,
                    overlap=job.overlap,
                    catch_up=job.catch_up,
                    retries=job.retries,
                    expect_success_within_s=window.total_seconds() if window else None,
                    last_success_at=success,
                    overdue=job.overdue(success, first_seen, now),
                )
            )
        return outs

    async def trigger(self, job_id: str, actor: Actor) -> TriggerOut:
        job = self._job(job_id)
        if (suspended := self.clock_guard.reason()) is not None:
            raise SchedulingSuspended(suspended)
        now = self.clock()
        run = await self.store.claim_run(
            Claim(
                job_id=job.id,
                trigger="manual",
                scheduled_for=now,
                attempt=1,
                exclusive=job.overlap == "forbid",
                started_at=now,
                triggered_by=actor.name,
                node=self.node,
                ignore_pause=True,
            )
        )
        if run is None:
            busy = await self.store.running_run_of_job(job.id)
            raise JobBusy(job.id, busy.id if busy else None)
        await self.store.add_audit(NewAuditEntry(now, actor.name, "trigger", job.id, actor.client, {"run_id": run.id}))
        self._start_run(job, run)
        return TriggerOut(job_id=job.id, run_id=run.id, status=run.status)

    async def pause(self, job_id: str, actor: Actor) -> JobOut:
        return await self._set_paused(job_id, True, actor)

    async def resume(self, job_id: str, actor: Actor) -> JobOut:
        return await self._set_paused(job_id, False, actor)

    async def _set_paused(self, job_id: str, paused: bool, actor: Actor) -> JobOut:
        self._job(job_id)
        now = self.clock()
        action = "pause" if paused else "resume"
        await self.store.set_paused(
            job_id, paused, now, actor.name, NewAuditEntry(now, actor.name, action, job_id, actor.client)
        )
        self.log.info(f"job_{action}d", job_id=job_id, by=actor.name)
        return await self.get_job(job_id)

    async def list_runs(self, *, job_id: str | None, status: str | None, limit: int) -> list[RunOut]:
        return await self.store.list_runs(job_id=job_id, status=status, limit=limit)

    async def get_run(self, run_id: int) -> RunOut:
        run = await self.store.get_run(run_id)
        if run is None:
            raise RunNotFound(run_id)
        return run

    async def get_run_logs(self, run_id: int, *, after_seq: int, limit: int) -> RunLogsOut:
        if run_id in self._active or run_id in self._logs_to_close:  # ours: written first, so the answer is up to now
            await RUN_LOGS.flush([run_id], self.store.write_runs_logs)
        dropped = await self.store.run_log_lines_dropped(run_id)
        if dropped is None:
            raise RunNotFound(run_id)
        lines = await self.store.run_log_lines(run_id, after_seq, limit)
        return RunLogsOut(run_id=run_id, lines=lines, dropped=dropped)

    async def cancel_run(self, run_id: int, actor: Actor) -> RunOut:
        run = await self.store.request_cancel(run_id, actor.name)
        if run is None:
            ended = await self.get_run(run_id)
            raise RunEnded(run_id, ended.status)
        await self.store.add_audit(
            NewAuditEntry(self.clock(), actor.name, "cancel", f"run:{run_id}", actor.client, {"job_id": run.job_id})
        )
        self._on_cancel_request(run_id, actor.name)
        return run

    async def list_audit(self, *, limit: int) -> list[AuditOut]:
        return await self.store.list_audit(limit)

    async def record_denied(self, actor: Actor, action: str, target: str) -> None:
        detail = {"outcome": "denied", "reason": f"role {actor.role}; {action} needs the operator role"}
        await self.store.add_audit(NewAuditEntry(self.clock(), actor.name, action, target, actor.client, detail))

    async def readiness(self) -> list[str]:
        reasons = []
        if not self.running:
            reasons.append("scheduler: not running")
        if (suspended := self.clock_guard.reason()) is not None:
            reasons.append(suspended)
        try:
            await self.store.ping(timeout=READINESS_TIMEOUT_S)
        except Exception as exc:
            # /readyz is open: it names the failing part; the error (an address, a role) goes to the log.
            reasons.append(DATABASE_NOT_ANSWERING)
            self._failures.failed("readiness_database_failed", error=f"{type(exc).__name__}: {exc}")
        self.metrics.ready.set(0 if reasons else 1)
        return reasons

    # -- one-off runs (maintd run-job) -------------------------------------

    async def run_once(
        self, job_id: str, actor: Actor, *, on_started: Callable[[TriggerOut], object] | None = None
    ) -> RunOut:
        """Run one job now, in this process, on an engine whose scheduler is not started
        (``maintd run-job``): claim a manual run as :meth:`trigger` does (``JobBusy`` while a
        run is in progress and overlap is forbidden), heartbeat it so that no replica declares
        it lost, obey cancel requests, and return the run as recorded once it has ended.
        ``on_started`` gets the claimed run's id (for progress and cancelling) before it ends."""
        if self.running:
            raise RuntimeError("run_once is for an engine whose scheduler is not started")
        listener: asyncpg.Connection | None = None
        try:  # before the claim: a cancel sent right after it must not be missed
            listener = await self._listen()
        except Exception as exc:  # the heartbeat still picks up cancel requests
            self.log.warning("listen_failed", error=repr(exc))
        heartbeat: asyncio.Task[None] | None = None
        try:
            started = await self.trigger(job_id, actor)
            if on_started is not None:
                on_started(started)
            # Only its own run's beat: a one-off process reaps, alerts and catches up nothing.
            heartbeat = asyncio.create_task(self._beat_own_runs_loop(), name="maintd-heartbeat")
            await self.idle()
            # An outcome the database missed is retried by the beats until it is recorded.
            while started.run_id in self._active:
                await asyncio.sleep(self.heartbeat_interval.total_seconds())
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
                await asyncio.gather(heartbeat, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self._beat_own_runs()  # the run's last log lines
            await self._heartbeat_line.close()
            await self.alerter.close(ALERTS_AT_STOP)
            if listener is not None:
                with contextlib.suppress(Exception):
                    await listener.close(timeout=2)
        return await self.get_run(started.run_id)
