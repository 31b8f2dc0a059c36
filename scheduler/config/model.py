"""config.toml, parsed once into frozen, validated objects.

Every default is named here. Every problem is reported with its key path
(``jobs.cleanup.schedule: invalid cron expression ...``), all of them at once,
so an operator fixes a config in one round; unknown keys are errors, because a
typo such as ``shedule`` must not silently drop a schedule.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field, ValidationError, field_validator

from maintd.jobs.mail import SmtpSettings
from maintd.jobs.registry import TaskLookupError, TaskSpec, resolve_task
from maintd.scheduler.config.alerts import AlertsConfig, alerts_problems
from maintd.scheduler.config.errors import ConfigError
from maintd.scheduler.config.import_paths import add_import_paths
from maintd.scheduler.config.lenient import DEFAULT_HOST, DEFAULT_PORT, default_config_path
from maintd.scheduler.config.types import Duration, Network, Section, TimeZone, positive
from maintd.scheduler.schedules import Schedule, ScheduleError, parse_schedule, parse_timezone

T = TypeVar("T")

DSN_ENV = "MAINTD_DATABASE_DSN"
EMBEDDED = "embedded"
# A job id is a URL path segment and a metric label: keep it plain.
JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class ServerConfig(Section):
    host: str = DEFAULT_HOST
    port: int = Field(DEFAULT_PORT, ge=0, le=65535)  # 0 lets the OS pick (tests)
    # Peers whose X-Forwarded-For/-Proto are believed (the client address in the audit log
    # and in the failed-authentication count). Nobody by default: behind no proxy, a
    # local client would otherwise choose the address recorded for it.
    trusted_proxies: list[Network] = []


class DatabaseConfig(Section):
    dsn: str = EMBEDDED
    data_dir: Path = Path("var/postgres")
    pool_size: int = Field(10, ge=2, le=200)

    @field_validator("dsn")
    @classmethod
    def _dsn_scheme(cls, value: str) -> str:
        if value != EMBEDDED and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"must be 'embedded' or a 'postgresql://' URL, got {value.split('://')[0]!r}")
        return value


class SchedulerConfig(Section):
    timezone: TimeZone = ZoneInfo("UTC")
    shutdown_grace: Duration = timedelta(seconds=30)
    lease: Duration = timedelta(seconds=30)
    # Replicas agree on fire times only if their clocks do: beyond this, a replica is not
    # ready and takes no part in scheduling (scheduler/engine/clock_guard.py).
    max_clock_skew: Duration = timedelta(seconds=2)
    node: str | None = None  # name recorded on runs; default host:pid
    # A fire that cannot start within this of its time (the cluster is behind) is recorded
    # missed and caught up as the job's catch_up says; within it, it runs late.
    misfire_grace: Duration = timedelta(minutes=1)
    # Runs in progress on one replica at once, fires claimed ahead included: fires beyond
    # wait for a free slot on any replica (scheduler/engine/capacity.py).
    max_running: int = Field(500, ge=1, le=100_000)
    # Directories (relative to the config file) put first on sys.path before any task is
    # imported: where an operator's own task modules live (see import_paths.py).
    import_paths: list[str] = []

    _positive = field_validator("lease", "misfire_grace")(positive)


class TokenConfig(Section):
    name: str = Field(min_length=1)
    role: Literal["viewer", "operator"]
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")


class AdminConfig(Section):
    tokens: list[TokenConfig] = []
    # A manual trigger, rerun or replay must say why (kept on the run and in the audit log).
    require_reason: bool = False

    # A web console session ends this long after its sign-in (admin_api/console/sessions.py).
    session_ttl: Duration = timedelta(hours=12)

    _ttl_positive = field_validator("session_ttl")(positive)


class JobTable(Section):
    """A ``[jobs.<id>]`` table as written; resolved into :class:`JobConfig`."""

    task: str
    schedule: str
    timezone: str | None = None
    timeout: Duration | None = None
    overlap: Literal["forbid", "allow"] = "forbid"
    catch_up: Literal["once", "none"] = "once"
    retries: int = Field(0, ge=0, le=100)
    # Dead-man's switch: without a success for this long the job is overdue.
    expect_success_within: Duration | None = None
    # This job's K for [alerts]: a flaky job may alert after 3 failures, a critical one after 1.
    alert_after_failures: int | None = Field(None, ge=1, le=1000)
    misfire_grace: Duration | None = None  # None: [scheduler].misfire_grace
    params: dict[str, Any] = {}

    _timeout_positive = field_validator("timeout", "expect_success_within", "misfire_grace")(
        lambda v: v if v is None else positive(v)
    )


class _Document(Section):
    server: ServerConfig = ServerConfig()
    smtp: SmtpSettings | None = None
    database: DatabaseConfig = DatabaseConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    admin: AdminConfig = AdminConfig()
    jobs: dict[str, dict[str, Any]] = {}  # each checked by _resolve_job
    alerts: AlertsConfig = AlertsConfig()


@dataclass(frozen=True)
class JobConfig:
    """One job, with its task resolved, schedule parsed and params validated."""

    id: str
    task_ref: str
    task: TaskSpec
    schedule: Schedule
    timeout: timedelta | None
    overlap: Literal["forbid", "allow"]
    catch_up: Literal["once", "none"]
    retries: int
    params: BaseModel
    expect_success_within: timedelta | None = None
    alert_after_failures: int | None = None  # None: [alerts].after_failures
    misfire_grace: timedelta = SchedulerConfig.model_fields["misfire_grace"].default

    @property
    def timezone(self) -> ZoneInfo:
        return self.schedule.timezone

    def overdue(self, last_success: datetime | None, first_seen: datetime, now: datetime) -> bool | None:
        """The dead-man's switch: no success within ``expect_success_within`` (counted from
        when the job was first seen if it never succeeded); None for a job without one."""
        if self.expect_success_within is None:
            return None
        return now - (last_success or first_seen) > self.expect_success_within

    def describe(self) -> dict[str, Any]:
        """The job's settings as plain values: what a config reload compares and logs."""
        return {
            "task": self.task_ref,
            "schedule": self.schedule.expression,
            "timezone": self.timezone.key,
            "timeout": self.timeout.total_seconds() if self.timeout else None,
            "overlap": self.overlap,
            "catch_up": self.catch_up,
            "retries": self.retries,
            "expect_success_within": (
                self.expect_success_within.total_seconds() if self.expect_success_within else None
            ),
            "alert_after_failures": self.alert_after_failures,
            "misfire_grace": self.misfire_grace.total_seconds(),
            "params": self.params.model_dump(mode="json"),
        }


@dataclass(frozen=True)
class Config:
    server: ServerConfig
    database: DatabaseConfig
    scheduler: SchedulerConfig
    admin: AdminConfig
    jobs: Mapping[str, JobConfig]
    smtp: SmtpSettings | None = None
    alerts: AlertsConfig = AlertsConfig()
    path: Path | None = None

    @property
    def embedded_database(self) -> bool:
        return self.database.dsn == EMBEDDED

    @property
    def alert_thresholds(self) -> dict[str, int]:
        """The jobs with an ``alert_after_failures`` of their own, and that K."""
        return {job.id: job.alert_after_failures for job in self.jobs.values() if job.alert_after_failures}


def load_config(path: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None) -> Config:
    """Read, parse and validate a config file; raise :class:`ConfigError` listing every problem."""
    path = Path(path) if path is not None else default_config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config: {exc.strerror or exc}"]) from exc
    return config_from_text(text, path=path, environ=environ)


def config_from_text(text: str, *, path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Parse and validate the TOML text of a config (``path``: where it was read, for
    relative paths and messages); raise :class:`ConfigError` listing every problem."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path or '<config>'}: TOML syntax error: {exc}"]) from exc
    return parse_config(raw, path=path, environ=os.environ if environ is None else environ)


def parse_config(raw: Mapping[str, Any], *, path: Path | None = None, environ: Mapping[str, str] = {}) -> Config:
    """Validate an already parsed TOML document, reporting every problem at once."""
    problems: list[str] = []
    doc: _Document | None = None
    try:
        doc = _Document.model_validate(raw)
    except ValidationError as exc:
        problems += _describe(exc)
    # Before any job's task is imported: an operator's own modules may live there.
    problems += add_import_paths(raw.get("scheduler"), path)
    # Jobs are checked one by one, even when another section is wrong, so that
    # one round of fixes is enough.
    default_zone = doc.scheduler.timezone if doc else ZoneInfo("UTC")
    default_grace = doc.scheduler.misfire_grace if doc else SchedulerConfig().misfire_grace
    tables = raw.get("jobs")
    jobs: dict[str, JobConfig] = {}
    for job_id, table in tables.items() if isinstance(tables, dict) else ():
        if job := _resolve_job(job_id, table, default_zone, default_grace, problems):
            jobs[job_id] = job
    if doc is not None:
        problems += _check_tokens(doc.admin.tokens)
        problems += alerts_problems(doc.alerts, smtp=doc.smtp, given="alerts" in doc.model_fields_set)
    if problems or doc is None:
        raise ConfigError(problems)
    database = doc.database
    if dsn := environ.get(DSN_ENV):
        database = database.model_copy(update={"dsn": dsn})
    database = database.model_copy(update={"data_dir": _state_path(database.data_dir, path, environ)})
    return Config(doc.server, database, doc.scheduler, doc.admin, jobs, doc.smtp, path=path, alerts=doc.alerts)


def _resolve_job(
    job_id: str, raw: Any, default_zone: ZoneInfo, default_grace: timedelta, problems: list[str]
) -> JobConfig | None:
    """Check one ``[jobs.<id>]`` table: its shape, then what its values mean."""
    prefix = f"jobs.{job_id}"
    before = len(problems)
    if not JOB_ID_PATTERN.match(job_id):
        problems.append(f"{prefix}: invalid job id: use letters, digits, '_', '.', '-' (at most 100)")
    if not isinstance(raw, dict):
        problems.append(f"{prefix}: must be a table")
        return None
    table = None
    try:
        table = JobTable.model_validate(raw)
    except ValidationError as exc:
        problems += _describe(exc, prefix=prefix)

    # The meaning of each value is checked even when another key is wrong.
    def meaning(key: str, parse: Callable[[str], T], errors: type[Exception]) -> T | None:
        """``parse`` of the string at ``key``; None, and the problem noted, when it fails."""
        if not isinstance(raw.get(key), str):
            return None
        try:
            return parse(raw[key])
        except errors as exc:
            problems.append(f"{prefix}.{key}: {exc}")
            return None

    timezone = meaning("timezone", parse_timezone, ValueError) or default_zone
    schedule = meaning("schedule", lambda text: parse_schedule(text, timezone), ScheduleError)
    spec = meaning("task", resolve_task, TaskLookupError)
    params = None
    if spec is not None and isinstance(raw.get("params", {}), dict):
        try:
            params = spec.params_model.model_validate(raw.get("params", {}))
        except ValidationError as exc:
            problems += _describe(exc, prefix=f"{prefix}.params")
    if len(problems) > before or table is None or schedule is None or spec is None or params is None:
        return None
    return JobConfig(
        id=job_id,
        task_ref=table.task,
        task=spec,
        schedule=schedule,
        timeout=table.timeout,
        overlap=table.overlap,
        catch_up=table.catch_up,
        retries=table.retries,
        params=params,
        expect_success_within=table.expect_success_within,
        alert_after_failures=table.alert_after_failures,
        misfire_grace=table.misfire_grace if table.misfire_grace is not None else default_grace,
    )


def _check_tokens(tokens: list[TokenConfig]) -> list[str]:
    problems = []
    seen: dict[str, int] = {}
    for index, token in enumerate(tokens):
        digest = token.sha256.lower()
        if digest in seen:
            problems.append(f"admin.tokens[{index}].sha256: same token as admin.tokens[{seen[digest]}]")
        seen.setdefault(digest, index)
    return problems


def _state_path(path: Path, config_path: Path | None, environ: Mapping[str, str]) -> Path:
    """Resolve a relative state path: under systemd against $STATE_DIRECTORY, else beside the config."""
    if path.is_absolute():
        return path
    if state := environ.get("STATE_DIRECTORY"):
        # systemd may list several directories separated by ':'; the first is ours.
        return Path(state.split(":")[0]) / path
    base = config_path.parent if config_path is not None else Path.cwd()
    return (base / path).resolve()


def _describe(exc: ValidationError, prefix: str = "") -> list[str]:
    """One line per pydantic error: key path, then a message an operator understands."""
    lines = []
    for error in exc.errors(include_url=False):
        loc = prefix
        for part in error["loc"]:
            loc = f"{loc}[{part}]" if isinstance(part, int) else (f"{loc}.{part}" if loc else str(part))
        lines.append(f"{loc or '(top level)'}: {_message(error)}")
    return lines


def _message(error: Mapping[str, Any]) -> str:
    kind, value = error["type"], error.get("input")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind == "value_error":
        return str(error["ctx"]["error"])
    if kind == "literal_error":
        return f"must be {error['ctx']['expected']}, got {value!r}"
    if kind == "string_pattern_mismatch" and error["loc"][-1] == "sha256":
        return "must be 64 hex digits (the sha256 of the token; `maintd token` prints one)"
    return f"{error['msg'][0].lower()}{error['msg'][1:]}, got {value!r}"
