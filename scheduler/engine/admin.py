"""The engine's answers to admins: the API's :class:`~maintd.admin_api.interface.AdminEngine`
(jobs, runs, trigger, pause, cancel, audit, readiness). It reads and writes
through the run store, and starts a triggered run with the engine's runs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from maintd.admin_api.interface import (
    Actor,
    AuditOut,
    IdempotencyKeyReused,
    JobBusy,
    JobNotFound,
    JobOut,
    JobState,
    ReasonRequired,
    ReplayIn,
    ReplayOut,
    RerunIn,
    RunEnded,
    RunLogsOut,
    RunNotFound,
    RunOut,
    SchedulingSuspended,
    TooManyFires,
    TriggerIn,
    TriggerOut,
    job_state,
)
from maintd.scheduler.config.model import JobConfig
from maintd.scheduler.engine.manual_runs import ManualRequest, check_request
from maintd.scheduler.engine.replays import MAX_REPLAY_FIRES, Replays
from maintd.scheduler.engine.runs import Runs
from maintd.scheduler.engine.state import EngineState
from maintd.scheduler.run_logs import RUN_LOGS
from maintd.scheduler.schedules import Schedule
from maintd.scheduler.store.records import Run, run_out
from maintd.scheduler.store.run_store import Claim, EarlierRequest, IdempotencyKey, NewAuditEntry, RunStore

# A readiness check (and the clock check) waits this long for the database.
READINESS_TIMEOUT_S = 2.0
# What /readyz says while the database does not answer; why goes to the log (scheduler/engine/failure_log.py).
DATABASE_NOT_ANSWERING = "database: not answering"
# Fire times listed on a job object.
UPCOMING = 5
# How long an Idempotency-Key names its first request's run.
IDEMPOTENCY_WINDOW = timedelta(hours=24)


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
        self._replays = Replays(state, runs)
        # Each job's upcoming fire times, under the schedule they were computed for.
        self._upcoming_cache: dict[str, tuple[Schedule, list[datetime]]] = {}

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

    async def list_jobs(
        self, *, state: JobState | None = None, limit: int | None = None, offset: int = 0
    ) -> list[JobOut]:
        job_ids = list(self.jobs)
        if state is not None:
            states = await self._states(job_ids)
            job_ids = [job_id for job_id in job_ids if states[job_id] == state]
        return await self._job_outs(job_ids[offset : None if limit is None else offset + limit])

    async def get_job(self, job_id: str) -> JobOut:
        self._job(job_id)
        return (await self._job_outs([job_id]))[0]

    async def _states(self, job_ids: list[str]) -> dict[str, JobState]:
        """The state of each job (see job_state), read with one statement per kind of fact."""
        states = await self.store.job_states()
        running = await self.store.running_counts()
        last = await self.store.last_statuses(job_ids)
        windowed = [job_id for job_id in job_ids if self.jobs[job_id].expect_success_within is not None]
        successes = await self.store.last_successes(windowed) if windowed else {}
        now = self.clock()
        return {
            job_id: job_state(
                paused=bool(job_id in states and states[job_id]["paused"]),
                running=running.get(job_id, 0) > 0,
                overdue=self._overdue(job_id, successes.get(job_id), states, now),
                last_status=last.get(job_id),
            )
            for job_id in job_ids
        }

    def _overdue(self, job_id: str, success: datetime | None, states: Mapping[str, Any], now: datetime) -> bool | None:
        first_seen = states[job_id]["first_seen"] if job_id in states else now
        return self.jobs[job_id].overdue(success, first_seen, now)

    def _upcoming(self, job: JobConfig, now: datetime) -> list[datetime]:
        """The job's next fire times after ``now``, computed again only once the first has
        passed (a listing of 10,000 jobs would otherwise compute 50,000 fire times)."""
        cached = self._upcoming_cache.get(job.id)
        if cached is None or cached[0] is not job.schedule or not cached[1] or cached[1][0] <= now:
            cached = self._upcoming_cache[job.id] = (job.schedule, job.schedule.upcoming(now, UPCOMING))
        return cached[1]

    async def _job_outs(self, job_ids: list[str]) -> list[JobOut]:
        """The job objects of ``job_ids``: one statement each for their states, last runs,
        runs in progress and last successes, whatever their number."""
        if not job_ids:
            return []
        states = await self.store.job_states(job_ids)
        last = await self.store.last_runs(job_ids)
        running = await self.store.running_counts()
        successes = await self.store.last_successes(job_ids)
        now = self.clock()
        outs = []
        for job_id in job_ids:
            job = self.jobs[job_id]
            paused = bool(states.get(job_id) and states[job_id]["paused"])
            upcoming = self._upcoming(job, now)
            success, window = successes.get(job_id), job.expect_success_within
            overdue = self._overdue(job_id, success, states, now)
            last_run = last.get(job_id)
            is_running = running.get(job_id, 0) > 0
            outs.append(
                JobOut(
                    id=job.id,
                    task=job.task_ref,
                    schedule=job.schedule.expression,
                    timezone=job.timezone.key,
                    paused=paused,
                    running=is_running,
                    next_run_time=None if paused else upcoming[0],
                    upcoming=upcoming,
                    last_run=run_out(last_run) if last_run is not None else None,
                    timeout_s=job.timeout.total_seconds() if job.timeout else None,
                    overlap=job.overlap,
                    catch_up=job.catch_up,
                    retries=job.retries,
                    expect_success_within_s=window.total_seconds() if window else None,
                    last_success_at=success,
                    overdue=overdue,
                    state=job_state(
                        paused=paused,
                        running=is_running,
                        overdue=overdue,
                        last_status=last_run.status if last_run is not None else None,
                    ),
                )
            )
        return outs

    async def trigger(
        self, job_id: str, actor: Actor, request: TriggerIn | None = None, *, idempotency_key: str | None = None
    ) -> TriggerOut:
        job = self._job(job_id)
        request = request or TriggerIn()
        asked = check_request(
            job, request.params, dry_run=request.dry_run, reason=request.reason,
            require_reason=self._state.require_reason,
        )  # fmt: skip
        key = None
        if idempotency_key is not None:
            key = IdempotencyKey(actor.name, job.id, idempotency_key, request.sha256())
        run = await self._claim_manual(job, actor, asked, key=key)
        if isinstance(run, EarlierRequest):
            assert key is not None, "only a keyed claim meets an earlier request"
            if run.body_sha256 != key.body_sha256:
                raise IdempotencyKeyReused(key.key, run.run_id)
            return await self._repeated(job, run)
        detail: dict[str, Any] = {"run_id": run.id, **_asked_detail(asked)}
        if idempotency_key is not None:
            detail["idempotency_key"] = idempotency_key
        await self.store.add_audit(NewAuditEntry.by(actor, run.started_at or self.clock(), "trigger", job.id, detail))
        self._runs.start_manual(job, run)
        return TriggerOut(job_id=job.id, run_id=run.id, status=run.status)

    async def _claim_manual(
        self, job: JobConfig, actor: Actor, asked: ManualRequest, *, key: IdempotencyKey | None = None,
        rerun_of: int | None = None,
    ) -> Run | EarlierRequest:  # fmt: skip
        """Claim a manual run as asked (under ``key``, when given): JobBusy when an
        exclusive run of the job is in progress, SchedulingSuspended when this replica
        starts none; the key's earlier request when it was used."""
        if (suspended := self._state.clock_guard.reason()) is not None:
            raise SchedulingSuspended(suspended)
        now = self.clock()
        claim = Claim(
            job_id=job.id, trigger="manual", scheduled_for=now, attempt=1, exclusive=job.overlap == "forbid",
            started_at=now, triggered_by=actor.name, node=self._state.node, ignore_pause=True,
            params=asked.params, overrides=asked.overrides, reason=asked.reason, dry_run=asked.dry_run,
            rerun_of=rerun_of,
        )  # fmt: skip
        if key is None:
            run = await self.store.claim_run(claim)
        else:
            got = await self.store.claim_keyed_run(claim, key, now, IDEMPOTENCY_WINDOW)
            if isinstance(got, EarlierRequest):
                return got
            run = got
        if run is None:
            busy = await self.store.running_run_of_job(job.id)
            raise JobBusy(job.id, busy.id if busy else None)
        return run

    async def _repeated(self, job: JobConfig, earlier: EarlierRequest) -> TriggerOut:
        """The answer to a request repeated under its Idempotency-Key: the first one's run as it is now."""
        assert earlier.run_id is not None, "a key is committed with its run"
        run = await self.store.get_run(earlier.run_id)
        if run is None:  # pruned: older than any retention allows a key to be
            raise RunNotFound(earlier.run_id)
        return TriggerOut(job_id=job.id, run_id=run.id, status=run.status, repeated=True)

    async def rerun(self, run_id: int, actor: Actor, request: RerunIn | None = None) -> TriggerOut:
        original = await self.store.get_run(run_id)
        if original is None:
            raise RunNotFound(run_id)
        job = self._job(original.job_id)
        request = request or RerunIn()
        asked = check_request(
            job, original.overrides or {},
            dry_run=original.dry_run if request.dry_run is None else request.dry_run,
            reason=request.reason if request.reason is not None else original.reason,
            require_reason=self._state.require_reason,
        )  # fmt: skip
        run = await self._claim_manual(job, actor, asked, rerun_of=run_id)
        assert isinstance(run, Run)
        await self.store.add_audit(
            NewAuditEntry.by(actor, run.started_at or self.clock(), "rerun", f"run:{run_id}",
                             {"job_id": job.id, "run_id": run.id, **_asked_detail(asked)})
        )  # fmt: skip
        self._runs.start_manual(job, run)
        return TriggerOut(job_id=job.id, run_id=run.id, status=run.status)

    async def replay(self, job_id: str, actor: Actor, request: ReplayIn) -> ReplayOut:
        job = self._job(job_id)
        if self._state.require_reason and not (request.reason and request.reason.strip()):
            raise ReasonRequired()
        fires = await self._replays.fires(job, request.from_, request.to)
        if len(fires) > MAX_REPLAY_FIRES:
            raise TooManyFires(MAX_REPLAY_FIRES)
        if not request.dry_run and fires:
            if (suspended := self._state.clock_guard.reason()) is not None:
                raise SchedulingSuspended(suspended)
            self._replays.start(job, fires, actor.name, request.reason)
        detail: dict[str, Any] = {
            "from": request.from_.isoformat(), "to": request.to.isoformat(), "fires": len(fires),
            "dry_run": request.dry_run,
        }  # fmt: skip
        if request.reason is not None:
            detail["reason"] = request.reason
        await self.store.add_audit(NewAuditEntry.by(actor, self.clock(), "replay", job.id, detail))
        return ReplayOut(job_id=job.id, fires=fires, dry_run=request.dry_run)

    async def pause(self, job_id: str, actor: Actor) -> JobOut:
        return await self._set_paused(job_id, True, actor)

    async def resume(self, job_id: str, actor: Actor) -> JobOut:
        return await self._set_paused(job_id, False, actor)

    async def _set_paused(self, job_id: str, paused: bool, actor: Actor) -> JobOut:
        self._job(job_id)
        now = self.clock()
        action = "pause" if paused else "resume"
        await self.store.set_paused(job_id, paused, now, actor.name, NewAuditEntry.by(actor, now, action, job_id))
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
            NewAuditEntry.by(actor, self.clock(), "cancel", f"run:{run_id}", {"job_id": run.job_id})
        )
        self._cancel_requested(run_id, actor.name)
        return run_out(run)

    async def list_audit(self, *, limit: int) -> list[AuditOut]:
        return await self.store.list_audit(limit)

    async def record_denied(self, actor: Actor, action: str, target: str) -> None:
        detail = {"outcome": "denied", "reason": f"role {actor.role}; {action} needs the operator role"}
        await self.store.add_audit(NewAuditEntry.by(actor, self.clock(), action, target, detail))

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


def _asked_detail(asked: ManualRequest) -> dict[str, Any]:
    """What an operator asked of a run, for its audit row: only what differs from a plain trigger."""
    detail: dict[str, Any] = {}
    if asked.reason is not None:
        detail["reason"] = asked.reason
    if asked.overrides:
        detail["params"] = asked.overrides
    if asked.dry_run:
        detail["dry_run"] = True
    return detail
