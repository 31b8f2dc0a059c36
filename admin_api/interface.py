"""The seam between the HTTP API and the daemon: the engine Protocol, the
objects it returns, and the errors it raises.

Error hierarchy (each maps to one HTTP status in ``admin_api.errors``)::

    AdminError
    ├── NotFound            404
    │   ├── JobNotFound
    │   └── RunNotFound
    ├── Conflict            409
    │   ├── JobBusy         a run is in progress and overlap is forbidden
    │   └── RunEnded        the run is no longer in progress
    └── Unavailable         503
        └── SchedulingSuspended   this replica takes no part in scheduling (e.g. its clock is off)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

from pydantic import AwareDatetime, BaseModel, PlainSerializer

# Part of the seam, defined apart so that the CLI reads them without pydantic.
from maintd.admin_api.statuses import ENDED_STATUSES as ENDED_STATUSES
from maintd.admin_api.statuses import FAILING_STATUSES as FAILING_STATUSES
from maintd.admin_api.statuses import JOB_STATES as JOB_STATES
from maintd.admin_api.statuses import JobState as JobState
from maintd.admin_api.statuses import job_state as job_state

Role = Literal["viewer", "operator"]
# Where an admin action came from: the JSON API, or the web console (kept in the audit log).
Via = Literal["api", "console"]
RunTrigger = Literal["schedule", "manual", "catch_up", "retry"]
RunStatus = Literal["running", "succeeded", "failed", "cancelled", "timed_out", "lost", "skipped", "missed"]
# Times go out as ISO 8601 with a numeric offset ("+00:00", never "Z"), as the contract says.
Timestamp = Annotated[AwareDatetime, PlainSerializer(lambda value: value.isoformat(), return_type=str)]


@dataclass(frozen=True)
class Actor:
    """Who calls a route: the token's principal and role, the client address, and through what."""

    name: str
    role: Role
    client: str | None = None
    via: Via = "api"


class LateOutcome(BaseModel):
    """How a run really ended, as its owner reported after its lease had run out (it
    was frozen, blocked or cut off): kept beside the run's ``lost``/``missed`` record,
    which stands."""

    status: RunStatus
    finished_at: Timestamp
    error: str | None = None
    result: Any = None


class RunOut(BaseModel):
    """One run of a job, or one fire that did not run (``skipped``/``missed``)."""

    id: int
    job_id: str
    trigger: RunTrigger
    status: RunStatus
    scheduled_for: Timestamp | None
    started_at: Timestamp | None
    finished_at: Timestamp | None
    duration_s: float | None
    result: Any = None
    error: str | None = None
    triggered_by: str | None = None
    node: str
    attempt: int = 1
    progress: dict[str, Any] | None = None
    late_outcome: LateOutcome | None = None


class JobOut(BaseModel):
    """A configured job with its live state."""

    id: str
    task: str
    schedule: str
    timezone: str
    paused: bool
    running: bool
    next_run_time: Timestamp | None
    upcoming: list[Timestamp]
    last_run: RunOut | None
    timeout_s: float | None = None
    overlap: Literal["forbid", "allow"] = "forbid"
    catch_up: Literal["once", "none"] = "once"
    retries: int = 0
    # The dead-man's switch: overdue when no run succeeded within expect_success_within
    # (null when the job does not set it).
    expect_success_within_s: float | None = None
    last_success_at: Timestamp | None = None
    overdue: bool | None = None
    # See job_state: what `?state=` filters on.
    state: JobState = "ok"


class TriggerOut(BaseModel):
    """A run just started by a trigger."""

    job_id: str
    run_id: int
    status: RunStatus


class AuditOut(BaseModel):
    """One admin action in the audit log: who did what to which target, when, from where;
    ``id`` numbers the log."""

    id: int
    at: Timestamp
    principal: str
    action: str
    target: str
    client: str | None = None
    detail: dict[str, Any] | None = None


class RunLogLine(BaseModel):
    """One event a run logged; ``seq`` numbers the run's whole log, so dropped lines leave a gap."""

    seq: int
    at: Timestamp
    level: str
    event: str
    fields: dict[str, Any] = {}


class RunLogsOut(BaseModel):
    """What a run logged, oldest first: the first and the newest lines, and how many between were dropped."""

    run_id: int
    lines: list[RunLogLine]
    dropped: int = 0


class AdminError(Exception):
    """Base of the errors the engine raises to the API."""


class NotFound(AdminError):
    """The job or run does not exist."""


class Conflict(AdminError):
    """The request conflicts with the state of a job or run."""


class JobNotFound(NotFound):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job {job_id!r}")
        self.job_id = job_id


class RunNotFound(NotFound):
    def __init__(self, run_id: int) -> None:
        super().__init__(f"no run {run_id}")
        self.run_id = run_id


class JobBusy(Conflict):
    def __init__(self, job_id: str, run_id: int | None = None) -> None:
        where = f" (run {run_id})" if run_id is not None else ""
        super().__init__(f"job {job_id!r} is already running{where} and its overlap is 'forbid'")
        self.job_id = job_id
        self.run_id = run_id


class RunEnded(Conflict):
    def __init__(self, run_id: int, status: str) -> None:
        super().__init__(f"run {run_id} has already ended ({status})")
        self.run_id = run_id
        self.status = status


class Unavailable(AdminError):
    """This replica cannot do what was asked now; another replica, or this one later, can."""


class SchedulingSuspended(Unavailable):
    """This replica starts no run for now (e.g. its clock is off the database's); another may."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"this replica is not scheduling: {reason}")
        self.reason = reason


class AdminEngine(Protocol):
    """What the API needs from the daemon. Mutating calls record an audit row."""

    async def list_jobs(
        self, *, state: JobState | None = None, limit: int | None = None, offset: int = 0
    ) -> list[JobOut]:
        """The jobs in config order; only those in ``state``; from the ``offset``-th of
        them, at most ``limit`` (all: None)."""
        ...

    async def get_job(self, job_id: str) -> JobOut: ...

    async def trigger(self, job_id: str, actor: Actor) -> TriggerOut: ...

    async def pause(self, job_id: str, actor: Actor) -> JobOut: ...

    async def resume(self, job_id: str, actor: Actor) -> JobOut: ...

    async def list_runs(self, *, job_id: str | None, status: str | None, limit: int) -> list[RunOut]: ...

    async def get_run(self, run_id: int) -> RunOut: ...

    async def cancel_run(self, run_id: int, actor: Actor) -> RunOut: ...

    async def get_run_logs(self, run_id: int, *, after_seq: int, limit: int) -> RunLogsOut:
        """The run's lines after line ``after_seq`` (0: from the start), at most ``limit``."""
        ...

    async def list_audit(self, *, limit: int) -> list[AuditOut]: ...

    async def record_denied(self, actor: Actor, action: str, target: str) -> None:
        """Write a refused mutation (a viewer's ``action`` on ``target``) to the audit log as denied."""
        ...

    async def readiness(self) -> list[str]:
        """Reasons the daemon is not ready; empty when it is."""
        ...
