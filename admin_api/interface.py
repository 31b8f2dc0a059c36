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
    ├── Unprocessable       422, naming the fields at fault (``errors``)
    │   ├── ParamsRefused         params the task does not validate, or does not let change
    │   ├── ReasonRequired        ``[admin] require_reason`` and no reason
    │   ├── DryRunRefused         the task cannot run dry, or not with these params
    │   ├── IdempotencyKeyReused  the key came before with another body
    │   └── TooManyFires          a replay of more fires than one request may run
    └── Unavailable         503
        └── SchedulingSuspended   this replica takes no part in scheduling (e.g. its clock is off)

The requests with a body (trigger, rerun, replay) come to the engine as the models
:class:`TriggerIn`, :class:`RerunIn` and :class:`ReplayIn`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer, model_validator

# Part of the seam, defined apart so that the CLI reads them without pydantic.
from maintd.admin_api.statuses import ENDED_STATUSES as ENDED_STATUSES
from maintd.admin_api.statuses import FAILING_STATUSES as FAILING_STATUSES
from maintd.admin_api.statuses import JOB_STATES as JOB_STATES
from maintd.admin_api.statuses import JobState as JobState
from maintd.admin_api.statuses import job_state as job_state

Role = Literal["viewer", "operator"]
# Where an admin action came from: the JSON API, or the web console (kept in the audit log).
Via = Literal["api", "console"]
RunTrigger = Literal["schedule", "manual", "catch_up", "retry", "replay"]
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
    # The params it ran with (the config's, with a manual run's overrides merged over
    # them; null for a fire that did not run), the operator's reason, whether it was a
    # dry run (it changed nothing; no success for the dead-man's switch, alerts, replay or
    # the daily report), and the run it re-runs.
    params: dict[str, Any] | None = None
    reason: str | None = None
    dry_run: bool = False
    rerun_of: int | None = None


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
    """A run just started by a trigger (or, for a repeated Idempotency-Key, the run the
    first request started: ``repeated``, answered 200 instead of 202)."""

    job_id: str
    run_id: int
    status: RunStatus
    repeated: bool = Field(False, exclude=True)


# The longest reason kept on a run and in the audit log.
MAX_REASON = 500
# What PostgreSQL cannot store in text or jsonb (a NUL) or UTF-8 cannot encode.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# How deep a params value may nest: params are config values, not documents.
_MAX_DEPTH = 16


def _storable(value: Any, depth: int = 0) -> Any:
    """A JSON value that PostgreSQL's jsonb takes as is: no NUL or unpaired surrogate in a
    string or key, no NaN or infinity, nested at most a few levels; else a 422."""
    if depth > _MAX_DEPTH:
        raise ValueError(f"nested deeper than {_MAX_DEPTH} levels")
    if isinstance(value, str):
        if _UNSTORABLE.search(value):
            raise ValueError("must not contain a NUL character or an unpaired surrogate")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("numbers must be finite")
    elif isinstance(value, list):
        for item in value:
            _storable(item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            _storable(key, depth + 1)
            _storable(item, depth + 1)
    return value


def _text(value: str | None) -> str | None:
    if value is not None and _UNSTORABLE.search(value):
        raise ValueError("must not contain a NUL character or an unpaired surrogate")
    return value


Reason = Annotated[
    str | None,
    Field(max_length=MAX_REASON, description=f"Why, kept on the run and in the audit log (at most {MAX_REASON})."),
    AfterValidator(_text),
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TriggerIn(_Body):
    """The optional body of ``POST /admin/trigger/{job_id}``; no body is ``{}``."""

    params: Annotated[dict[str, Any], AfterValidator(_storable)] = Field(
        default_factory=dict,
        description="Params for this run only, merged over the configured ones; only those the task lets change.",
    )
    reason: Reason = None
    dry_run: bool = Field(False, description="Ask the task to change nothing and say what it would do.")

    def sha256(self) -> str:
        """The body as sent (fields left out stay out), as canonical JSON, hashed: what an
        Idempotency-Key compares."""
        canonical = json.dumps(
            self.model_dump(mode="json", exclude_unset=True), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


class RerunIn(_Body):
    """The optional body of ``POST /admin/runs/{run_id}/rerun``: what differs from the run re-run."""

    reason: Reason = None
    dry_run: bool | None = Field(None, description="Default: as the run re-run.")


class ReplayIn(_Body):
    """The body of ``POST /admin/jobs/{job_id}/replay``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    from_: AwareDatetime = Field(alias="from", description="The first fire time looked at (included).")
    to: AwareDatetime = Field(description="The last fire time looked at (included).")
    dry_run: bool = Field(False, description="Only list the fires a replay would run.")
    reason: Reason = None

    @model_validator(mode="after")
    def _ordered(self) -> ReplayIn:
        if self.to < self.from_:
            raise ValueError("'to' must not be before 'from'")
        return self


class ReplayOut(BaseModel):
    """The fires a replay runs (or, with ``dry_run``, would run), oldest first, one after another."""

    job_id: str
    fires: list[Timestamp]
    dry_run: bool = False


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


class Unprocessable(AdminError):
    """The request is well formed but cannot be done as asked: ``errors`` name the fields at
    fault as FastAPI's validation errors do (``loc``, ``msg``, ``type``)."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(error["msg"] for error in errors))
        self.errors = errors


def _error(loc: tuple[str | int, ...], msg: str, kind: str) -> dict[str, Any]:
    return {"type": kind, "loc": ["body", *loc], "msg": msg}


class ParamsRefused(Unprocessable):
    def __init__(self, job_id: str, errors: list[tuple[tuple[str | int, ...], str, str]]) -> None:
        """``errors``: (location under params, message, type) each."""
        super().__init__(
            [
                _error(("params", *loc), f"{'.'.join(['params', *map(str, loc)])}: {msg}", kind)
                for loc, msg, kind in errors
            ]
        )
        self.job_id = job_id


class ReasonRequired(Unprocessable):
    def __init__(self) -> None:
        super().__init__([_error(("reason",), "reason: required by [admin] require_reason", "missing")])


class DryRunRefused(Unprocessable):
    def __init__(self, job_id: str, why: str) -> None:
        super().__init__([_error(("dry_run",), f"dry_run: job {job_id!r} cannot run dry: {why}", "dry_run_refused")])
        self.job_id = job_id
        self.why = why


class IdempotencyKeyReused(Unprocessable):
    def __init__(self, key: str, run_id: int | None) -> None:
        earlier = f" (run {run_id})" if run_id is not None else ""
        super().__init__(
            [
                {
                    "type": "idempotency_key_reused",
                    "loc": ["header", "idempotency-key"],
                    "msg": f"Idempotency-Key {key!r} was used with another body{earlier} within 24 h",
                }
            ]
        )
        self.key = key
        self.run_id = run_id


class TooManyFires(Unprocessable):
    def __init__(self, limit: int) -> None:
        super().__init__(
            [_error(("from",), f"more than {limit:,} fires to replay in this range: replay a shorter one", "too_many")]
        )
        self.limit = limit


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

    async def trigger(
        self, job_id: str, actor: Actor, request: TriggerIn | None = None, *, idempotency_key: str | None = None
    ) -> TriggerOut:
        """Start a run now, with ``request``'s params, reason and dry run (None: as
        configured). With ``idempotency_key``, a request repeated within 24 h answers the
        first one's run (``repeated``) instead of starting another."""
        ...

    async def rerun(self, run_id: int, actor: Actor, request: RerunIn | None = None) -> TriggerOut:
        """Start a manual run now as ``run_id`` was asked for: its overrides over the
        configured params, its dry run and reason unless ``request`` says otherwise."""
        ...

    async def replay(self, job_id: str, actor: Actor, request: ReplayIn) -> ReplayOut:
        """Run the job's fires in the range that did not run or never succeeded, one after
        another, on this replica (with ``dry_run``: only list them)."""
        ...

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
