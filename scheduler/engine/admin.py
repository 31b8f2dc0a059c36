"""The engine's answers to admins: the API's :class:`~maintd.admin_api.interface.AdminEngine`
(jobs, runs, trigger, pause, cancel, audit, readiness). It reads and writes
through the run store, and starts a triggered run with the engine's runs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

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
from maintd.scheduler.config.model import JobConfig
from maintd.scheduler.engine.runs import Runs
from maintd.scheduler.engine.state import EngineState
from maintd.scheduler.run_logs import RUN_LOGS
from maintd.scheduler.store.records import run_out
from maintd.scheduler.store.run_store import Claim, NewAuditEntry, RunStore

# A readiness check (and the clock check) waits this long for the database.
READINESS_TIMEOUT_S = 2.0
# What /readyz says while the database does not answer; why goes to the log (scheduler/engine/failure_log.py).
DATABASE_NOT_ANSWERING = "database: not answering"
# Fire times listed on a job object.
UPCOMING = 5


class EngineAdmin:
    """What admins ask of a running engine: the API's :class:`AdminEngine`."""

    def __init__(
        self,
        state: EngineState,
        *,
        runs: Runs,
        running: Callable[[], bool],
        cancel_requested: Callable[[int, str], None],
    ) -> None:
        """``running()``: whether the scheduler runs; ``cancel_requested(run_id, by)``
        routes a cancel to a run of this replica's, if it is one."""
        self._state = state
        self._runs = runs
        self._running = running
        self._cancel_requested = cancel_requested

    @property
    def jobs(self) -> dict[str, JobConfig]:
        return self._state.jobs

    @property
    def store(self) -> RunStore:
        return self._state.store

    @property
    def clock(self) -> Callable[[], datetime]:
        return self._state.clock

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
                    last_run=run_out(last[job_id]) if job_id in last else None,
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
        if (suspended := self._state.clock_guard.reason()) is not None:
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
                node=self._state.node,
                ignore_pause=True,
            )
        )
        if run is None:
            busy = await self.store.running_run_of_job(job.id)
            raise JobBusy(job.id, busy.id if busy else None)
        await self.store.add_audit(NewAuditEntry(now, actor.name, "trigger", job.id, actor.client, {"run_id": run.id}))
        self._runs.start_manual(job, run)
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
        self._state.log.info(f"job_{action}d", job_id=job_id, by=actor.name)
        return await self.get_job(job_id)

    async def list_runs(self, *, job_id: str | None, status: str | None, limit: int) -> list[RunOut]:
        return [run_out(run) for run in await self.store.list_runs(job_id=job_id, status=status, limit=limit)]

    async def get_run(self, run_id: int) -> RunOut:
        run = await self.store.get_run(run_id)
        if run is None:
            raise RunNotFound(run_id)
        return run_out(run)

    async def get_run_logs(self, run_id: int, *, after_seq: int, limit: int) -> RunLogsOut:
        if self._runs.holds_logs_of(run_id):  # ours: written first, so the answer is up to now
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
        self._cancel_requested(run_id, actor.name)
        return run_out(run)

    async def list_audit(self, *, limit: int) -> list[AuditOut]:
        return await self.store.list_audit(limit)

    async def record_denied(self, actor: Actor, action: str, target: str) -> None:
        detail = {"outcome": "denied", "reason": f"role {actor.role}; {action} needs the operator role"}
        await self.store.add_audit(NewAuditEntry(self.clock(), actor.name, action, target, actor.client, detail))

    async def readiness(self) -> list[str]:
        reasons = []
        if not self._running():
            reasons.append("scheduler: not running")
        if (suspended := self._state.clock_guard.reason()) is not None:
            reasons.append(suspended)
        try:
            await self.store.ping(timeout=READINESS_TIMEOUT_S)
        except Exception as exc:
            # /readyz is open: it names the failing part; the error (an address, a role) goes to the log.
            reasons.append(DATABASE_NOT_ANSWERING)
            self._state.failures.failed("readiness_database_failed", error=f"{type(exc).__name__}: {exc}")
        self._state.metrics.ready.set(0 if reasons else 1)
        return reasons
