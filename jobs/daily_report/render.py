"""The daily report as an email: subject, plain text and HTML, from :class:`ReportData` alone.

Rendering is a pure function: no database, no clock, no server. Layout lives in
the jinja2 templates ``templates/daily_report.txt`` and ``.html``; the
HTML one is autoescaped, so a job's error text (``<script>`` and all) can never
become markup. This module holds what templates do badly: formatting times in
the report's zone, durations, aligned text columns and the wording of each
attention item.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from maintd.jobs.daily_report.data import STATUSES, Attention, JobRuns, ReportData, UnrunFires
from maintd.jobs.durations import format_duration, format_duration_or_dash

_env = Environment(
    loader=PackageLoader("maintd.jobs.daily_report", "templates"),
    autoescape=select_autoescape(enabled_extensions=("html",)),
    # A misspelt field must fail the tests, not print nothing.
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)

STATUS_LABELS = {
    "succeeded": "ok",
    "failed": "failed",
    "timed_out": "timed out",
    "lost": "lost",
    "cancelled": "cancelled",
    "skipped": "skipped",
    "missed": "missed",
    "running": "running",
}


@dataclass(frozen=True)
class RenderedReport:
    """The report as mail content."""

    subject: str
    text: str
    html: str


def render_report(data: ReportData) -> RenderedReport:
    """Subject, text and HTML of the report; the same data always gives the same mail."""
    view = _View(data)
    context = {"r": data, "v": view, "status_label": STATUS_LABELS}
    return RenderedReport(
        subject=view.subject(),
        text=_env.get_template("daily_report.txt").render(context),
        html=_env.get_template("daily_report.html").render(context),
    )


def plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def text_table(rows: Sequence[Sequence[Any]], *, left: Collection[int] = (0,)) -> list[str]:
    """Lines of a plain-text table: the columns in ``left`` left-aligned, the others right-aligned."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))] if cells else []
    aligned = [
        [c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=False))]
        for row in cells
    ]
    return ["  ".join(row).rstrip() for row in aligned]


class _View:
    """The report's data, phrased: helpers the templates call, bound to the report's zone."""

    def __init__(self, data: ReportData) -> None:
        self.data = data
        self.period = data.period
        start, end = self.period.local(self.period.start), self.period.local(self.period.end)
        # Times carry their zone abbreviation only when the period crosses a clock change,
        # where 02:30 may name two different moments.
        self._time_format = "%Y-%m-%d %H:%M" + (" %Z" if start.utcoffset() != end.utcoffset() else "")
        # Statuses nobody had get no column.
        self.columns = [s for s in STATUSES if data.total(s)]

    def when(self, moment: datetime | None) -> str:
        return self.period.local(moment).strftime(self._time_format) if moment else "-"

    def age(self, moment: datetime) -> str:
        """How long before the report was made."""
        return format_duration(self.data.generated_at - moment)

    duration = staticmethod(format_duration_or_dash)

    def title(self) -> str:
        if self.period.kind == "previous_day":
            return f"Daily report for {self.period.report_date.isoformat()} ({self.period.timezone.key})"
        return f"Report for the 24 hours to {self._local(self.period.end)}"

    def span(self) -> str:
        hours = self.period.length / timedelta(hours=1)
        note = "" if hours == 24 else (": the clocks went back" if hours > 24 else ": the clocks went forward")
        return f"From {self._local(self.period.start)} to {self._local(self.period.end)} ({hours:g} hours{note})."

    def _local(self, moment: datetime) -> str:
        return self.period.local(moment).strftime("%Y-%m-%d %H:%M %Z")

    def subject(self) -> str:
        data = self.data
        heading = f"Daily report {data.period.report_date}" if data.period.kind == "previous_day" else self.title()
        problems = []
        if failed := data.total("failed", "timed_out"):
            problems.append(f"{failed:,} failed")
        if lost := data.total("lost"):
            problems.append(f"{lost:,} lost")
        if data.attention:
            problems.append(
                f"{plural(len(data.attention), 'item')} {'needs' if len(data.attention) == 1 else 'need'} attention"
            )
        status = ", ".join(problems) or f"all OK, {plural(data.total(), 'run')}"
        return " ".join(part for part in (data.subject_prefix, f"{heading}:", status) if part)

    def job_table(self) -> list[str]:
        if not self.data.jobs:
            return []
        header = ["job", "runs", *(STATUS_LABELS[s] for s in self.columns), "longest"]
        rows = [
            [
                job.job_id,
                f"{job.total:,}",
                *(f"{job.count(s):,}" for s in self.columns),
                format_duration_or_dash(job.longest_s),
            ]
            for job in self.data.jobs
        ]
        return text_table([header, *rows])

    def longest_table(self) -> list[str]:
        rows = [
            [
                run.job_id,
                format_duration_or_dash(run.duration_s),
                f"run {run.run_id}",
                self.when(run.started_at),
                STATUS_LABELS[run.status],
            ]
            for run in self.data.longest
        ]
        return text_table(rows, left=(0, 2, 3, 4))

    def fires(self, fires: UnrunFires) -> str:
        """``3 skipped fires from 2026-03-28 00:00 to 2026-03-28 02:00: the job is paused``."""
        what = plural(fires.count, f"{fires.status} fire")
        first, last = self.when(fires.first), self.when(fires.last)
        when = f"at {first}" if fires.first == fires.last else f"from {first} to {last}"
        # The engine's reasons start with the status, which the line already says.
        return f"{what} {when}: {fires.reason.removeprefix(fires.status + ': ')}"

    def dry_runs(self, runs: JobRuns) -> str:
        """``2 dry runs: 1 ok, 1 failed``: the outcomes of the runs that changed nothing."""
        outcomes = ", ".join(f"{n} {STATUS_LABELS.get(status, status)}" for status, n in sorted(runs.counts.items()))
        return f"{plural(runs.total, 'dry run')}: {outcomes}"

    def session_counts(self) -> list[tuple[str, str]]:
        sessions = self.data.sessions
        assert sessions is not None
        counts = [
            ("created in the period *", sessions.created),
            ("expired in the period *", sessions.expired),
            ("deleted by cleanup in the period", sessions.deleted),
            ("active now", sessions.active),
            ("expired, awaiting cleanup", sessions.awaiting_cleanup),
        ]
        return [(label, f"{count:,}") for label, count in counts if count is not None]

    def sessions_table(self) -> list[str]:
        return text_table(self.session_counts())

    def describe(self, item: Attention) -> str:
        """One attention item as a sentence (escaped by the HTML template like any text)."""
        if item.kind == "report_not_sent":
            if item.error:
                return f"the report for {item.day} was not sent: {item.error}"
            run = f"run {item.run_id}" if item.status else f"run {item.run_id} (no longer in the run history)"
            ended = f"ended {STATUS_LABELS[item.status]}" if item.status else "ended"
            return f"the report for {item.day} may not have gone out: {run} {ended} before confirming it"
        if item.kind == "failing":
            since = f"last success {self.when(item.at)}" if item.at else "never succeeded"
            last = "" if item.status in (None, "failed") else f" (the last {STATUS_LABELS[item.status]})"
            text = f"{plural(item.count, 'failure')} in a row{last}, {since}"
            return f"{text}; last error: {item.error}" if item.error else text
        if item.kind == "running_long":
            assert item.at is not None
            return f"run {item.run_id} on {item.by} running for {self.age(item.at)}, since {self.when(item.at)}"
        if item.kind == "paused":
            return f"paused since {self.when(item.at)}" + (f" by {item.by}" if item.by else "")
        if item.kind == "never_succeeded":
            return f"never succeeded (known since {self.when(item.at)})"
        assert item.at is not None and item.interval is not None
        return (
            f"no success for {self.age(item.at)} (last {self.when(item.at)}), "
            f"usually runs every {format_duration(item.interval)}"
        )
