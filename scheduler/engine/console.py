"""The engine's answers to the web console beyond the JSON API's: the console's
:class:`~maintd.admin_api.console.interface.ConsoleEngine` (sessions, and views of
history). Sign-ins and sign-outs are audited here, as every admin action is."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cache
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from maintd.admin_api.console.interface import (
    CalendarCell,
    DurationPoint,
    Fire,
    HistoryQuery,
    NewSession,
    ParamField,
    RunOptions,
    SessionRecord,
)
from maintd.admin_api.interface import Actor, AuditOut, JobNotFound, RunOut
from maintd.scheduler.config.model import JobConfig
from maintd.scheduler.engine.state import EngineState
from maintd.scheduler.store.console_store import ConsoleStore
from maintd.scheduler.store.records import run_out
from maintd.scheduler.store.run_store import NewAuditEntry


class EngineConsole:
    """What the console asks of a running daemon: its :class:`ConsoleEngine`."""

    def __init__(self, state: EngineState, *, default_zone: ZoneInfo) -> None:
        self._state = state
        self._runs = state.store
        self._clock = state.clock
        self._default_zone = default_zone
        self._console_store: ConsoleStore | None = None

    @property
    def _store(self) -> ConsoleStore:
        # Made on first use: engines over a store without a pool (tests' in-memory one) never need it.
        if self._console_store is None:
            self._console_store = ConsoleStore(self._state.store.pool)
        return self._console_store

    def now(self) -> datetime:
        return self._clock()

    def default_zone(self) -> ZoneInfo:
        return self._default_zone

    def _job(self, job_id: str) -> JobConfig:
        try:
            return self._state.jobs[job_id]
        except KeyError:
            raise JobNotFound(job_id) from None

    def upcoming(self, job_id: str, count: int) -> list[datetime]:
        return self._job(job_id).schedule.upcoming(self._clock(), count)

    def run_options(self, job_id: str) -> RunOptions:
        job = self._job(job_id)
        spec = job.task
        text_only = _text_only_params(spec.params_model)
        fields = tuple(
            ParamField(name, value, name in spec.overridable, name in text_only)
            for name, value in job.params.model_dump(mode="json").items()
        )
        return RunOptions(fields, dry_run=spec.dry_run, require_reason=self._state.require_reason)

    async def open_session(self, session: NewSession, actor: Actor) -> None:
        await self._store.open_session(session)
        detail = {"expires_at": session.expires_at.isoformat()}
        await self._runs.add_audit(NewAuditEntry.by(actor, session.created_at, "sign_in", "console", detail))

    async def find_session(self, id_sha256: bytes) -> SessionRecord | None:
        return await self._store.find_session(id_sha256, self._clock())

    async def end_session(self, id_sha256: bytes, actor: Actor | None) -> None:
        principal = await self._store.end_session(id_sha256)
        if principal is not None and actor is not None:
            await self._runs.add_audit(NewAuditEntry.by(actor, self._clock(), "sign_out", "console"))

    async def recent_fires(self, job_ids: Sequence[str], per_job: int) -> dict[str, list[Fire]]:
        return await self._store.recent_fires(job_ids, per_job) if job_ids else {}

    async def job_history(self, job_id: str, query: HistoryQuery) -> list[RunOut]:
        return [run_out(run) for run in await self._store.job_history(job_id, query)]

    async def job_durations(self, job_id: str, limit: int) -> list[DurationPoint]:
        return await self._store.job_durations(job_id, limit)

    def job_ids(self) -> list[str]:
        return list(self._state.jobs)

    async def calendar(
        self, job_ids: Sequence[str], start: datetime, end: datetime, zone: ZoneInfo
    ) -> list[CalendarCell]:
        return await self._store.calendar(job_ids, start, end, zone) if job_ids else []

    async def search_audit(
        self, *, principal: str | None, action: str | None, job_id: str | None, before_id: int | None, limit: int
    ) -> list[AuditOut]:
        return await self._store.search_audit(principal, action, job_id, before_id, limit)


# Per params model, once: its JSON schema takes ~0.6 ms to build, a job page's whole budget is 100.
@cache
def _text_only_params(model: type[BaseModel]) -> frozenset[str]:
    """The params that take only a string: what is typed for them is the value (a param
    that takes a number too, such as ``batch_size = "auto"``, reads the typing as JSON)."""
    properties = model.model_json_schema().get("properties", {})
    return frozenset(name for name, schema in properties.items() if schema.get("type") == "string")
