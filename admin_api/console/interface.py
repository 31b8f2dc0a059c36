"""The seam between the web console and the daemon: what the console reads and writes
beyond the JSON API's :class:`~maintd.admin_api.interface.AdminEngine`.

Its sessions (kept in the database, so a session is valid on every replica), and the
views of history a page needs in one statement each: each job's recent fires, a page
of one job's runs, its durations, the calendar, the audit log searched. Jobs, runs,
triggers, pauses and cancels go through the ``AdminEngine`` the JSON API uses, so the
console has no second way to do anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from maintd.admin_api.interface import Actor, AuditOut, RunOut

# The outcomes of a record, best first: a calendar day shows the last of them it holds.
# A fire that did not run is worse than a cancel (nobody chose it), better than a failure.
OUTCOME_RANK: tuple[str, ...] = (
    "succeeded",
    "running",
    "skipped",
    "cancelled",
    "missed",
    "failed",
    "timed_out",
    "lost",
)


@dataclass(frozen=True)
class NewSession:
    """A session to open: the sha256 of its cookie's value, the token signed in with, its CSRF token."""

    id_sha256: bytes
    token_sha256: str
    principal: str
    csrf: str
    client: str | None
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class SessionRecord:
    """A session that has not expired, as stored."""

    token_sha256: str
    principal: str
    csrf: str
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class Fire:
    """One cell of a job's strip: a run, or a fire that did not run."""

    id: int
    trigger: str
    status: str
    scheduled_for: datetime | None
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def at(self) -> datetime | None:
        """When it happened: its start, or its fire time for a fire that did not run."""
        return self.started_at or self.scheduled_for


@dataclass(frozen=True)
class DurationPoint:
    """One run's duration, for a job's chart."""

    run_id: int
    status: str
    started_at: datetime
    duration_s: float


@dataclass(frozen=True)
class CalendarCell:
    """One job's day: how many records it holds and the worst outcome among them."""

    job_id: str
    day: date
    records: int
    worst: str


@dataclass(frozen=True)
class ParamField:
    """One of a job's params as the run-now form shows it: its configured value (JSON),
    whether an operator may change it for one run, and whether it is text only (what is
    typed is the value) or takes JSON (``500`` a number, ``"auto"`` or ``auto`` a string)."""

    name: str
    value: Any
    overridable: bool
    text_only: bool


@dataclass(frozen=True)
class RunOptions:
    """What the run-now form offers for a job: its params, whether its task runs dry, and
    whether a reason is required (``[admin] require_reason``)."""

    params: tuple[ParamField, ...]
    dry_run: bool
    require_reason: bool

    def configured(self) -> dict[str, Any]:
        """The params as configured, as JSON values."""
        return {field.name: field.value for field in self.params}


@dataclass(frozen=True)
class HistoryQuery:
    """A page of one job's runs: filters (None: any) and where the page starts."""

    status: str | None = None
    trigger: str | None = None
    before_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50


class ConsoleEngine(Protocol):
    """What the console needs from the daemon beside the JSON API's engine."""

    def now(self) -> datetime:
        """The daemon's clock (sessions expire by it)."""
        ...

    def default_zone(self) -> ZoneInfo:
        """``[scheduler] timezone``: the calendar's days where the browser has not said its own."""
        ...

    def upcoming(self, job_id: str, count: int) -> list[datetime]:
        """The job's next ``count`` fire times (JobNotFound for an unknown job)."""
        ...

    def run_options(self, job_id: str) -> RunOptions:
        """The job's params as configured and what its task lets a run change (JobNotFound for an unknown job)."""
        ...

    async def open_session(self, session: NewSession, actor: Actor) -> None:
        """Store a new session and audit the sign-in."""
        ...

    async def find_session(self, id_sha256: bytes) -> SessionRecord | None:
        """The session, unless it is unknown or expired."""
        ...

    async def end_session(self, id_sha256: bytes, actor: Actor | None) -> None:
        """Delete a session; audit a sign-out when ``actor`` signs out (None: ended for them)."""
        ...

    async def recent_fires(self, job_ids: Sequence[str], per_job: int) -> dict[str, list[Fire]]:
        """Each job's newest ``per_job`` records, newest first."""
        ...

    async def job_history(self, job_id: str, query: HistoryQuery) -> list[RunOut]: ...

    async def job_durations(self, job_id: str, limit: int) -> list[DurationPoint]:
        """The newest ``limit`` runs of the job that ended, newest first."""
        ...

    def job_ids(self) -> list[str]:
        """The configured jobs, in the config's order."""
        ...

    async def calendar(
        self, job_ids: Sequence[str], start: datetime, end: datetime, zone: ZoneInfo
    ) -> list[CalendarCell]:
        """The jobs' days in ``[start, end)``, days counted in ``zone``."""
        ...

    async def search_audit(
        self, *, principal: str | None, action: str | None, job_id: str | None, before_id: int | None, limit: int
    ) -> list[AuditOut]: ...
