"""The engine: the parts wired together, and their lifecycles (a daemon's start and
stop, the one-off run of ``maintd run-job``).

Where each concern lives, in this package:

- ``timers``: APScheduler, one timer per schedule and one per retry;
- ``claim_ahead`` and ``claimed_ahead``: fires claimed before they are due, and
  those runs from their claim to their start (``NoClaimAhead`` where none is);
- ``fires``: fires claimed at their time, and fires recorded as not run;
- ``runs``: runs in progress on this replica, from their start to their recorded end;
- ``fencing`` and ``lease``: this replica's lease on its runs, kept or lost;
- ``catch_up``: fires nobody recorded, and runs reaped as lost;
- ``recovery``: what an outage made this replica miss, recorded before new claims;
- ``retries``, ``overdue``, ``cancels``: retries of failed runs, the dead man's
  switch, cancel requests heard over LISTEN;
- ``clock_guard``: whether this replica's clock may schedule;
- ``admin``: the answers to the API; ``console``: the web console's, beyond them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from maintd.admin_api.interface import Actor, RunOut, TriggerOut
from maintd.scheduler.alerts import Alerter
from maintd.scheduler.clock import utcnow
from maintd.scheduler.config.model import Config, JobConfig
from maintd.scheduler.config.reload import ConfigDiff
from maintd.scheduler.engine.admin import READINESS_TIMEOUT_S, EngineAdmin
from maintd.scheduler.engine.cancels import CancelListener
from maintd.scheduler.engine.capacity import Capacity
from maintd.scheduler.engine.catch_up import CLAIM_SETTLE, CatchUp
from maintd.scheduler.engine.claimed_ahead import ClaimedAhead, FiresAhead, NoClaimAhead
from maintd.scheduler.engine.clock_guard import ClockGuard, SkewGuard
from maintd.scheduler.engine.console import EngineConsole
from maintd.scheduler.engine.failure_log import FailureLog
from maintd.scheduler.engine.fencing import Fencing
from maintd.scheduler.engine.fires import FireClaims
from maintd.scheduler.engine.overdue import OverdueWatch
from maintd.scheduler.engine.recovery import Recovery
from maintd.scheduler.engine.retries import Retries
from maintd.scheduler.engine.runs import Runs
from maintd.scheduler.engine.state import EngineState, wait_for_all
from maintd.scheduler.engine.timers import Timers
from maintd.scheduler.metrics import Metrics
from maintd.scheduler.store.run_store import RunStore

# Fires are claimed this long before they are due (see claim_ahead.py).
CLAIM_AHEAD = timedelta(seconds=1)
# At stop, the catch-up of the fires just before the start gets this long beyond its settling time.
CATCH_UP_AT_STOP = timedelta(seconds=5)
# At stop, alerts still being delivered get this long.
ALERTS_AT_STOP = timedelta(seconds=5)


class Engine:
    """Schedules the configured jobs, claims and runs their fires; :attr:`admin` answers the API."""

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
        """``claim_ahead=0`` claims every fire at its time (a frozen test clock: time moves
        only when told); ``clock_guard`` compares this replica's clock with the database's."""
        self.store, self.node, self.clock = store, node, clock
        self.metrics = metrics or Metrics()
        self.log = structlog.get_logger("maintd.engine").bind(node=node)
        self.state = state = EngineState(
            jobs=dict(config.jobs), smtp=config.smtp, store=store, node=node, clock=clock, metrics=self.metrics,
            log=self.log, failures=FailureLog(self.log), lease=config.scheduler.lease,
            # While this replica's clock is off the database's, it takes no part in scheduling.
            clock_guard=clock_guard or SkewGuard(config.scheduler.max_clock_skew, clock=clock, log=self.log),
            require_reason=config.admin.require_reason,
        )  # fmt: skip
        state.clock_guard.listen(self._on_clock_change)
        self.alerter = Alerter(
            config.alerts, store, node=node, smtp=config.smtp, metrics=self.metrics, clock=clock,
            after_failures=config.alert_thresholds,
        )  # fmt: skip
        self.recovery = Recovery(state.failures, self.log, self._recover)
        # The lambdas reach parts built below: the parts call on each other both ways.
        self.runs = Runs(
            state, recovery=self.recovery, alerter=self.alerter,
            check_lease=lambda: self.fencing.check(),
            before_writing=lambda run_ids: self.fencing.before_writing(run_ids),
            declared_lost=lambda run_ids: self.fencing.declared_lost(run_ids),
            failed=lambda job, run: self.retries.after_failure(job, run),
            room_freed=lambda: self.fires.room_freed(),
        )  # fmt: skip
        self.capacity = Capacity(
            config.scheduler.max_running, taken=lambda: self.runs.running_count() + len(self.ahead.waiting())
        )
        self.timers = Timers(
            on_fires=lambda job_ids, times: self.fires.on_fires(job_ids, times),
            on_retry=lambda run, times: self.fires.on_retry(run, times),
        )
        self.ahead: FiresAhead = (
            ClaimedAhead(
                state,
                runs=self.runs,
                window=claim_ahead,
                due_before=self._due_for_claims_ahead,
                ready=self.recovery.recovered,
                capacity=self.capacity,
            )  # fmt: skip
            if claim_ahead > timedelta(0)
            else NoClaimAhead()
        )
        self.fencing = Fencing(
            state, runs=self.runs, ahead=self.ahead, settle_reaped=lambda runs: self.catch_up.settle_reaped(runs),
            cancel_requested=self._on_cancel_request,
        )  # fmt: skip
        self.fires = FireClaims(
            state, recovery=self.recovery, runs=self.runs, ahead=self.ahead, capacity=self.capacity,
            check_lease=self.fencing.check,
        )  # fmt: skip
        self.catch_up = CatchUp(state, fires=self.fires, recovery=self.recovery, alerter=self.alerter)
        self.retries = Retries(state, self.timers)
        self.overdue = OverdueWatch(state, self.alerter)
        self.cancels = CancelListener(state, self._on_cancel_request)
        self.admin = EngineAdmin(
            state, runs=self.runs, running=lambda: self.timers.running, cancel_requested=self._on_cancel_request
        )
        self.console = EngineConsole(state, default_zone=config.scheduler.timezone)
        self._background: list[asyncio.Task[Any]] = []
        # The moments before the start whose fires the catch-up judges once they settled.
        self._recent_window: tuple[datetime, datetime] = (datetime.min.replace(tzinfo=UTC),) * 2

    @property
    def jobs(self) -> dict[str, JobConfig]:
        return self.state.jobs

    @property
    def running(self) -> bool:
        return self.timers.running

    @property
    def last_failure(self) -> tuple[str, datetime] | None:
        """The latest run on this replica that did not succeed: (job id, when it ended)."""
        return self.runs.last_failure

    # -- a daemon's lifecycle ----------------------------------------------------

    async def start(self) -> None:
        """Compare the clock with the database's, register jobs, record fires missed while
        down, then start firing. A replica whose clock is off registers, records and claims
        nothing until it is back within bound (see _resume_scheduling)."""
        state = self.state
        await state.clock_guard.establish(self._database_clock)
        scheduling = state.scheduling()
        now = self.clock()
        if scheduling:
            await self.store.register_jobs(list(self.jobs), now)
        # What a previous process under this node's name left running ends now, not a
        # lease later: its claims ahead would hold back this start's catch-up.
        left_running = await self.store.reap_node_runs(self.node)
        await self.fencing.open()
        await self.store.open()
        for job in self.jobs.values():
            self.metrics.register_job(job.id)
            self.timers.add(job)
        state.accepting = True
        judged_until = now - CLAIM_SETTLE
        caught_up = await self.catch_up.catch_up(judged_until)
        # A fire the previous process had claimed ahead is one of the fires missed while
        # down: caught up on its own only where the downtime's catch-up did not cover its job.
        caught_up |= await self.catch_up.settle_reaped(left_running, caught_up=caught_up)
        self.timers.start()
        # APScheduler fires from its start on; every fire before this instant is the
        # catch-up's to judge (the few fires both see are told apart by their key).
        firing_since = self.clock()
        self._recent_window = (judged_until, firing_since)
        await self.retries.sweep()
        if scheduling:
            await self.overdue.check()
        await self.cancels.open()
        self._background += [
            asyncio.create_task(self._every_beat(self.fencing.keep), name="maintd-lease"),
            asyncio.create_task(self._every_beat(self.housekeeping), name="maintd-heartbeat"),
            asyncio.create_task(self.cancels.run(), name="maintd-listen"),
            asyncio.create_task(
                self.catch_up.catch_up_recent(judged_until, firing_since, caught_up), name="maintd-catch-up"
            ),
        ]
        if (claiming := await self.ahead.start()) is not None:
            self._background.append(claiming)
        self.log.info("engine_started", jobs=len(self.jobs), scheduling=scheduling)

    async def stop(self, grace: timedelta) -> None:
        """Stop firing, let running jobs finish for up to ``grace``, then cancel and record the rest."""
        await self.ahead.hand_over()
        self.state.accepting = False
        self.timers.shutdown()
        # Fires already being claimed finish claiming (and start nothing new).
        await wait_for_all(self.state.tasks.named("fire:"))
        running = [a.task for a in self.runs.active.values() if a.task]
        if running:
            self.log.info("drain_started", running=len(running), grace_s=grace.total_seconds())
            _, pending = await asyncio.wait(running, timeout=grace.total_seconds())
            for active in list(self.runs.active.values()):
                if active.task in pending:
                    self.runs.cancel(active, "shutdown", grace=timedelta(0))
            await wait_for_all(pending)
        # The fires of the moments before the start are judged even when the stop comes first:
        # no later start would look before the fires this replica ran since.
        recent = [task for task in self._background if task.get_name() == "maintd-catch-up" and not task.done()]
        if recent and self.catch_up.fires_between(*self._recent_window):
            await asyncio.wait(recent, timeout=(CLAIM_SETTLE + CATCH_UP_AT_STOP).total_seconds())
        await self.idle()
        for task in self._background:
            task.cancel()
        await wait_for_all(self._background)
        await self.cancels.close()
        await self.fencing.close()
        if unrecorded := await self.runs.flush_outcomes():
            self.log.error("runs_not_recorded_at_stop", run_ids=unrecorded)
        await self.runs.close_logs()
        await self.alerter.close(ALERTS_AT_STOP)
        self.runs.gc_hold.release()  # in case the loop stops before the pass's end
        self.log.info("engine_stopped")

    async def idle(self) -> None:
        """Wait until no fire is being handled and no run is in progress on this replica."""
        await self.state.tasks.idle()

    async def _every_beat(self, beat: Callable[[], Awaitable[None]]) -> None:
        """Call ``beat`` every heartbeat interval, counted from when each began: a slow
        beat does not push the next one back. After a failed beat the next comes sooner:
        the lease (and the recovery) resume as soon as the database answers again."""
        loop = asyncio.get_running_loop()
        interval = self.state.heartbeat_interval.total_seconds()
        next_at = loop.time() + interval
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            began = max(next_at, loop.time())
            try:
                await beat()
            except Exception as exc:
                self.recovery.failed(self.clock())
                self.state.failures.failed("heartbeat_failed", error=repr(exc))
                next_at = began + interval / 4
            else:
                next_at = began + interval

    async def housekeeping(self) -> None:
        """The heartbeat's second part, after the lease (``fencing.keep``): check the clock, write what this replica's runs logged and how they ended, reap
        lost runs cluster-wide, and after a database outage record what it made this
        replica miss. While its clock is off, it only looks after its own runs."""
        await self._check_clock()
        scheduling = self.state.scheduling()
        if scheduling:
            await self.ahead.refresh_live()
        await self.ahead.settle_abandoned()
        await self.runs.write_logs()
        # A reaped fire is caught up by the replica that reaps it: not one that cannot.
        if scheduling:
            await self.catch_up.settle_reaped(await self.store.reap_lost_runs(self.state.lease))
            await self.overdue.check()  # overdue is judged by the clock too
        await self.recovery.recovered(until=self.clock())
        await self.retries.sweep()
        self.fires.judge_waiting()

    async def _recover(self, until: datetime, outage_since: datetime | None) -> None:
        """After an outage: how this replica's runs that ended meanwhile ended, then the fires it missed."""
        await self.runs.flush_outcomes()
        await self.catch_up.catch_up(until, outage_since=outage_since)

    def _due_for_claims_ahead(self, until: datetime) -> list[tuple[str, datetime]]:
        """The next fire of each job before ``until``, but for jobs whose catch-up run is
        being claimed: that claim comes first, and their fires are claimed at their time."""
        claiming = self.catch_up.claiming
        return [(job_id, fire) for job_id, fire in self.timers.due_before(until) if job_id not in claiming]

    def _on_cancel_request(self, run_id: int, by: str) -> None:
        self.runs.request_cancel(run_id, by, claimed_ahead=any(run.id == run_id for run in self.ahead.waiting()))

    # -- a config reload -----------------------------------------------------------

    async def apply_config(self, config: Config, diff: ConfigDiff) -> None:
        """Take the jobs and settings of a reloaded config (see scheduler/config/reload.py).
        Runs in progress finish under the settings they started with."""
        state = self.state
        # The one step that can fail comes first, before anything changes.
        if diff.added and state.scheduling():  # else registered when back in bound
            await self.store.register_jobs(diff.added, self.clock())
        rescheduled = [
            job_id for job_id, settings in diff.changed.items() if {"schedule", "timezone"} & settings.keys()
        ]
        for job_id in [*diff.removed, *diff.changed]:
            self.timers.remove(state.jobs[job_id])
        state.jobs = dict(config.jobs)
        state.smtp = config.smtp
        state.require_reason = config.admin.require_reason
        self.alerter.config, self.alerter.smtp = config.alerts, config.smtp
        self.alerter.after_failures = config.alert_thresholds
        for job_id in [*diff.added, *diff.changed]:
            self.metrics.register_job(job_id)
            self.timers.add(state.jobs[job_id])
        # Fires claimed ahead under a schedule that no longer holds are recorded, not run.
        await self.ahead.release(
            [*diff.removed, *rescheduled], "skipped: the job was changed by a config reload before this fire"
        )
        for job_id in diff.removed:
            self.metrics.unregister_job(job_id)

    # -- a wrong clock (clock_guard.py) ---------------------------------------------

    async def _check_clock(self) -> None:
        try:
            await self.state.clock_guard.measure(self._database_clock)
        except Exception as exc:  # the runs' own heartbeat must go on
            self.state.failures.failed("clock_check_failed", error=repr(exc))

    async def _database_clock(self) -> datetime:
        return await self.store.ping(timeout=READINESS_TIMEOUT_S)

    def _on_clock_change(self, suspended: bool) -> None:
        """The clock went off the database's (no part in scheduling from now on), or came back."""
        if suspended:
            self.ahead.hold()
        else:
            self._background.append(asyncio.create_task(self._resume_scheduling(), name="maintd-clock-resumed"))

    async def _resume_scheduling(self) -> None:
        """Back within bound: the fires of the spell that no replica recorded are judged as
        after downtime (recorded missed, and one caught up where ``catch_up = "once"``),
        those of its last moments once the live replicas have had time to claim them."""
        if not self.state.accepting:
            return
        now = self.clock()
        spell_began = self.state.clock_guard.suspended_since
        try:
            # A replica off since its start registered nothing: its jobs were there since then.
            await self.store.register_jobs(list(self.jobs), spell_began or now)
            # Fire by fire from the spell's start: fires the other replicas ran meanwhile hide nothing.
            caught_up = await self.catch_up.catch_up(now - CLAIM_SETTLE, outage_since=spell_began)
        except Exception as exc:  # judged by the recovery after the outage
            self.recovery.failed(spell_began or now - CLAIM_SETTLE)
            self.state.failures.failed("catch_up_failed", error=repr(exc))
            return
        await self.catch_up.catch_up_recent(now - CLAIM_SETTLE, now, caught_up)

    def status_summary(self) -> str:
        """One line for systemd's STATUS=: jobs, runs in progress on this replica, the last failure here."""
        failure = "none"
        if self.last_failure is not None:
            job_id, when = self.last_failure
            failure = f"{job_id} at {when.isoformat(timespec='seconds')}"
        return f"{len(self.jobs)} jobs, {self.runs.running_count()} running, last failure: {failure}"

    # -- a one-off run's lifecycle (maintd run-job) ------------------------------------

    async def run_once(
        self, job_id: str, actor: Actor, *, on_started: Callable[[TriggerOut], object] | None = None
    ) -> RunOut:
        """Run one job now, in this process, on an engine that is not started: claim a
        manual run as the API's trigger does (``JobBusy`` while a run is in progress and
        overlap is forbidden), heartbeat it so that no replica declares it lost, obey
        cancel requests, and return the run as recorded once it has ended. ``on_started``
        gets the claimed run's id (for progress and cancelling) before it ends."""
        if self.running:
            raise RuntimeError("run_once is for an engine that is not started")
        await self.cancels.open()  # before the claim: a cancel sent right after it must not be missed
        heartbeat: asyncio.Task[None] | None = None
        try:
            started = await self.admin.trigger(job_id, actor)
            if on_started is not None:
                on_started(started)
            # Only its own run's beat: a one-off process reaps, alerts and catches up nothing.
            heartbeat = asyncio.create_task(self._every_beat(self._beat_own_run), name="maintd-heartbeat")
            await self.idle()
            # An outcome the database missed is retried by the beats until it is recorded.
            while started.run_id in self.runs.active:
                await asyncio.sleep(self.state.heartbeat_interval.total_seconds())
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
                await wait_for_all([heartbeat])
            with contextlib.suppress(Exception):
                await self._beat_own_run()  # the run's last log lines
            await self.fencing.close()
            await self.alerter.close(ALERTS_AT_STOP)
            await self.cancels.close()
        return await self.admin.get_run(started.run_id)

    async def _beat_own_run(self) -> None:
        await self.fencing.keep()
        await self.runs.write_logs()
