"""What the daily report says, as plain data, and the pure decisions that shape it.

The report job gathers rows from the database into these objects, then
rendering (:mod:`maintd.jobs.daily_report.render`) turns them into text and HTML. Nothing
here does I/O or reads a clock: the period and "now" are passed in, so tests
build a report by hand and a frozen clock governs the real one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

PeriodKind = Literal["previous_day", "last_24h"]
AttentionKind = Literal["report_not_sent", "failing", "running_long", "paused", "never_succeeded", "overdue"]

# Column order of the per-job table; statuses nobody had are left out when rendering.
STATUSES = ("succeeded", "failed", "timed_out", "lost", "cancelled", "skipped", "missed", "running")
# Attention items are listed most urgent first.
ATTENTION_ORDER: tuple[AttentionKind, ...] = (
    "report_not_sent",
    "failing",
    "running_long",
    "paused",
    "never_succeeded",
    "overdue",
)
# A run still going after this long is worth a look (a job without a timeout may hang).
RUNNING_LONG = timedelta(hours=1)
# A job is overdue when it has not succeeded for this many of its usual intervals.
OVERDUE_INTERVALS = 2
ERROR_LINE_MAX = 200


@dataclass(frozen=True)
class ReportPeriod:
    """The span a report covers, and the day it is filed under (the key of "sent once")."""

    kind: PeriodKind
    start: datetime  # aware, UTC
    end: datetime  # aware, UTC; exclusive
    timezone: ZoneInfo
    report_date: date

    @property
    def length(self) -> timedelta:
        """Real elapsed time: 23 or 25 hours on daylight-saving days."""
        return self.end - self.start

    def local(self, moment: datetime) -> datetime:
        """``moment`` on the report's clocks."""
        return moment.astimezone(self.timezone)


def report_period(kind: PeriodKind, anchor: datetime, zone: ZoneInfo) -> ReportPeriod:
    """The period a report made at ``anchor`` covers.

    ``previous_day``: the calendar day before ``anchor``'s, midnight to midnight
    in ``zone`` (23, 24 or 25 hours long). ``last_24h``: the 24 hours before
    ``anchor``, filed under ``anchor``'s local date.
    """
    local_day = anchor.astimezone(zone).date()
    if kind == "last_24h":
        end = anchor.astimezone(UTC)
        return ReportPeriod(kind, end - timedelta(hours=24), end, zone, local_day)
    day = local_day - timedelta(days=1)
    # A midnight that does not exist (a zone skipping 00:00) resolves the same way for
    # the end of one day and the start of the next, so consecutive days still meet.
    start = datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)
    end = datetime.combine(local_day, time(0), tzinfo=zone).astimezone(UTC)
    return ReportPeriod(kind, start, end, zone, day)


def error_summary(error: str | None) -> str:
    """The one line of an error worth reading in a list of failures."""
    lines = [line.strip() for line in (error or "").splitlines() if line.strip()]
    if not lines:
        return ""
    # A traceback's first line says nothing; its last names the exception.
    line = lines[-1] if lines[0].startswith("Traceback (most recent call last)") else lines[0]
    return line if len(line) <= ERROR_LINE_MAX else line[: ERROR_LINE_MAX - 1] + "…"


@dataclass(frozen=True)
class JobRuns:
    """How one job's runs and unrun fires of the period ended."""

    job_id: str
    counts: Mapping[str, int]  # status -> how many; absent statuses are 0
    longest_s: float | None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def count(self, *statuses: str) -> int:
        return sum(self.counts.get(status, 0) for status in statuses)


@dataclass(frozen=True)
class RunLine:
    """One run, as listed among the failures or the longest runs."""

    run_id: int
    job_id: str
    status: str
    trigger: str
    attempt: int
    node: str
    started_at: datetime
    duration_s: float | None
    error: str  # its summary line


@dataclass(frozen=True)
class UnrunFires:
    """Fires of one job that did not run, grouped by why."""

    job_id: str
    status: str  # skipped or missed
    count: int
    first: datetime
    last: datetime
    reason: str


@dataclass(frozen=True)
class SessionStats:
    """The sessions table, when the report is configured with one."""

    table: str
    # Created and expired count the rows still in the table: cleanup deletes expired ones.
    created: int | None  # None without a created column
    expired: int
    deleted: int | None  # by cleanup runs of the period, from their results; None: none ran
    active: int
    awaiting_cleanup: int
    error: str | None = None  # why it could not be counted; the rest of the report still goes out


@dataclass(frozen=True)
class JobHealth:
    """A job's state as of now, for deciding whether it needs attention."""

    job_id: str
    paused: bool
    paused_at: datetime | None
    paused_by: str | None
    first_seen: datetime | None
    last_success: datetime | None
    failures_since_success: int  # failed, timed out or lost runs since the last success
    last_failure_status: str | None
    last_error: str | None
    ended: int  # its runs and fires that have ended, not counting any still running
    usual_interval: timedelta | None  # median gap between its recent fires
    running_id: int | None
    running_since: datetime | None
    running_node: str | None


@dataclass(frozen=True)
class UnsentReport:
    """An earlier report of this job whose delivery was never confirmed."""

    report_date: date
    state: str  # failed, or sending by a run that has ended
    error: str | None
    run_id: int
    run_status: str | None  # None when the run has been pruned from history


@dataclass(frozen=True)
class Attention:
    """Something an admin should look at; which fields are set depends on ``kind``."""

    job_id: str
    kind: AttentionKind
    at: datetime | None = None  # last success, paused at, running since, or first seen
    count: int = 0  # failures in a row
    status: str | None = None  # of the last failure, or how the run that claimed an unsent report ended
    by: str | None = None  # who paused it, or the node running it
    run_id: int | None = None  # the run still going, or the one that claimed an unsent report
    error: str | None = None
    interval: timedelta | None = None  # usual interval, for overdue
    day: date | None = None  # the unsent report's day


@dataclass(frozen=True)
class ReportData:
    """Everything the report shows; the renderer's only input."""

    job_id: str
    period: ReportPeriod
    generated_at: datetime
    subject_prefix: str
    jobs: Sequence[JobRuns]
    failures: Sequence[RunLine]  # newest first, possibly cut short
    failures_total: int
    longest: Sequence[RunLine]
    unrun: Sequence[UnrunFires]
    attention: Sequence[Attention]
    sessions: SessionStats | None = None
    # Runs that were asked to change nothing: no success or failure in the figures above.
    dry_runs: Sequence[JobRuns] = ()

    def total(self, *statuses: str) -> int:
        """Runs of all jobs with any of ``statuses``, or all runs without any."""
        return sum(job.count(*statuses) if statuses else job.total for job in self.jobs)


def attention_items(
    health: Iterable[JobHealth], unsent: Iterable[UnsentReport], report_job: str, now: datetime
) -> list[Attention]:
    """Decide which jobs need a look, most urgent first."""
    items = [
        Attention(report_job, "report_not_sent", status=u.run_status, run_id=u.run_id, error=u.error, day=u.report_date)
        for u in unsent
    ]
    for job in health:
        items += _job_attention(job, now)
    return sorted(items, key=lambda item: (ATTENTION_ORDER.index(item.kind), item.job_id))


def _job_attention(job: JobHealth, now: datetime) -> list[Attention]:
    items = []
    failing = job.failures_since_success > 0
    if failing:
        items.append(
            Attention(
                job.job_id,
                "failing",
                at=job.last_success,
                count=job.failures_since_success,
                status=job.last_failure_status,
                error=error_summary(job.last_error),
            )
        )
    if job.running_since is not None and now - job.running_since > RUNNING_LONG:
        items.append(
            Attention(job.job_id, "running_long", at=job.running_since, run_id=job.running_id, by=job.running_node)
        )
    if job.paused:
        items.append(Attention(job.job_id, "paused", at=job.paused_at, by=job.paused_by))
    if failing or job.paused:
        return items  # already explained; overdue or never succeeded would say it again
    if job.last_success is None and job.ended:
        items.append(Attention(job.job_id, "never_succeeded", at=job.first_seen))
    elif (
        job.last_success is not None
        and job.usual_interval
        and now - job.last_success > OVERDUE_INTERVALS * job.usual_interval
    ):
        items.append(Attention(job.job_id, "overdue", at=job.last_success, interval=job.usual_interval))
    return items
