"""Replays: the fires of a range that did not run, or never succeeded, run again now.

A replay runs on the replica that took the request, one fire after another, each
as a run with trigger ``replay`` and its fire's ``scheduled_for`` (so a replayed
``daily_report`` reports its own day). Nothing of a replay is kept but its runs:
a fire whose replay a stop or crash interrupted before it ran has no replay run,
and one cut short was not a success, so both stay replayable. A fire covered
meanwhile (it succeeded, or another replay of it runs or succeeded) is passed
over: the claim itself checks, so two replays of one range never run a fire twice.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from maintd.scheduler.config.model import JobConfig
from maintd.scheduler.engine.runs import Runs
from maintd.scheduler.engine.state import EngineState
from maintd.scheduler.store.records import Run
from maintd.scheduler.store.run_store import Claim

# The most fires one replay request may run: a long outage is replayed in parts.
MAX_REPLAY_FIRES = 1000


class Replays:
    def __init__(self, state: EngineState, runs: Runs) -> None:
        self._state = state
        self._runs = runs

    async def fires(self, job: JobConfig, since: datetime, until: datetime) -> list[datetime]:
        """The fires a replay of ``since`` to ``until`` would run, oldest first (one more
        than :data:`MAX_REPLAY_FIRES` at most, to tell that there are too many)."""
        return await self._state.store.replayable_fires(job.id, since, until, MAX_REPLAY_FIRES + 1)

    def start(self, job: JobConfig, fires: list[datetime], by: str, reason: str | None) -> None:
        """Run the fires in the background, one after another."""
        self._state.tasks.spawn(self._replay(job.id, fires, by, reason), name=f"replay:{job.id}")

    async def _replay(self, job_id: str, fires: list[datetime], by: str, reason: str | None) -> None:
        log = self._state.log.bind(job_id=job_id)
        log.info("replay_started", fires=len(fires), first=fires[0].isoformat(), last=fires[-1].isoformat())
        ran = 0
        for index, fire in enumerate(fires):
            job = self._state.jobs.get(job_id)
            if job is None or not self._state.accepting:
                # Stopping, or the job was removed by a reload: what is left stays replayable.
                log.warning("replay_interrupted", remaining=len(fires) - index, next=fire.isoformat())
                return
            try:
                run = await self._claim(job, fire, by, reason)
            except Exception as exc:  # the database away: what is left stays replayable
                log.error("replay_interrupted", remaining=len(fires) - index, next=fire.isoformat(), error=repr(exc))
                return
            if run is None:
                continue
            ran += 1
            active = self._runs.start_manual(job, run)
            if active.task is not None:
                await asyncio.wait([active.task])
        log.info("replay_done", fires=len(fires), ran=ran)

    async def _claim(self, job: JobConfig, fire: datetime, by: str, reason: str | None) -> Run | None:
        """The replay run of ``fire``; None when the fire was covered meanwhile. While an
        exclusive run of the job is in progress (anywhere), the replay waits for it."""
        state = self._state
        wait = state.heartbeat_interval.total_seconds() / 4
        while state.accepting:
            if state.scheduling():
                run = await state.store.claim_replay(
                    Claim(
                        job_id=job.id, trigger="replay", scheduled_for=fire, attempt=1,
                        exclusive=job.overlap == "forbid", started_at=state.clock(), triggered_by=by,
                        node=state.node, ignore_pause=True, params=job.params.model_dump(mode="json"), reason=reason,
                    )
                )  # fmt: skip
                if run is not None:
                    return run
                covered, _running = await state.store.replay_blockers(job.id, fire)
                if covered:
                    state.log.info("replay_fire_covered", job_id=job.id, scheduled_for=fire.isoformat())
                    return None
            await asyncio.sleep(wait)
        return None
