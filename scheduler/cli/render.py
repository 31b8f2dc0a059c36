"""How the admin commands show jobs, runs, progress and logs to a person.

Pure functions of the API's JSON objects and ``now``, so they are tested without
a daemon or a terminal. Colour is an argument: the caller decides it from the
stream (a terminal, and ``$NO_COLOR`` unset).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any, TextIO

from maintd.admin_api.statuses import JobState, job_state
from maintd.jobs.durations import format_duration, format_duration_or_dash

# ANSI SGR codes; used only when colour is on.
BOLD, DIM, RED, GREEN, YELLOW = "1", "2", "31", "32", "33"
_STATUS_STYLE = {
    "succeeded": GREEN,
    "failed": RED,
    "timed_out": RED,
    "lost": RED,
    "running": YELLOW,
    "cancelled": YELLOW,
    "skipped": DIM,
    "missed": YELLOW,
}
# What a summary shows of a result or a traceback; the rest is one `--json` away.
RESULT_KEYS = 12
VALUE_CHARS = 80
ERROR_TAIL_LINES = 8


def use_colour(stream: TextIO) -> bool:
    """Colour only on a terminal, and never when ``$NO_COLOR`` is set (https://no-color.org)."""
    return stream.isatty() and not os.environ.get("NO_COLOR")


@dataclass(frozen=True)
class Cell:
    """A table cell: its text and, when colour is on, an SGR style."""

    text: str
    style: str = ""


def paint(text: str, style: str, colour: bool) -> str:
    return f"\x1b[{style}m{text}\x1b[0m" if colour and style and text else text


def table(headers: Sequence[str], rows: Sequence[Sequence[str | Cell]], *, colour: bool = False) -> str:
    """Left-aligned columns two spaces apart; widths from the plain text, colour added after padding."""
    cells = [[c if isinstance(c, Cell) else Cell(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c.text)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(paint(h.ljust(w), BOLD, colour) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in cells:
        padded = [
            paint(c.text.ljust(w) if i < len(row) - 1 else c.text, c.style, colour)
            for i, (c, w) in enumerate(zip(row, widths, strict=False))
        ]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


# -- times and durations ---------------------------------------------------


def parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def relative(when: datetime, now: datetime) -> str:
    """``in 3h 12m`` or ``2h ago``; ``just now`` within a second."""
    delta = when - now
    if abs(delta) < timedelta(seconds=1):
        return "just now"
    return f"in {_span(delta)}" if delta > timedelta(0) else f"{_span(delta)} ago"


def _span(delta: timedelta) -> str:
    """How far from now, in whole seconds (``3h 12m``, ``45s``): coarser than a run's duration."""
    return format_duration(int(abs(delta.total_seconds())))


def local_time(when: datetime, zone: tzinfo | None = None, *, seconds: bool = False) -> str:
    """The instant on the reader's clock (the local zone unless ``zone`` is given)."""
    return when.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


# -- values ------------------------------------------------------------------


def value_text(value: Any, limit: int = VALUE_CHARS) -> str:
    """A value on one line: strings bare, floats rounded, anything else as compact JSON."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, float):
        text = f"{value:.4g}"
    else:
        text = json.dumps(value, separators=(",", ":"), default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fields_text(fields: Mapping[str, Any] | None) -> str:
    """``deleted=120000 batches=12``: a progress dict or a log line's fields."""
    return " ".join(f"{k}={value_text(v, 40)}" for k, v in (fields or {}).items())


def result_lines(result: Any) -> list[str]:
    """A run's result, short: one ``key: value`` line per key of a dict, else one line."""
    if result is None:
        return []
    if not isinstance(result, dict):
        return [f"result: {value_text(result)}"]
    keys = list(result)
    width = max((len(k) for k in keys[:RESULT_KEYS]), default=0)
    lines = [f"  {k.ljust(width)}  {value_text(result[k])}" for k in keys[:RESULT_KEYS]]
    if len(keys) > RESULT_KEYS:
        lines.append(f"  … {len(keys) - RESULT_KEYS} more (--json shows all)")
    return ["result:", *lines]


def error_tail(error: str | None, lines: int = ERROR_TAIL_LINES) -> list[str]:
    """The end of a traceback, where the exception is."""
    if not error:
        return []
    # Python 3.11's ^^^^ markers under each frame take room and say little here.
    kept = [line for line in error.rstrip().splitlines() if line.strip(" ^~")]
    return (["  …"] if len(kept) > lines else []) + [f"  {line}" for line in kept[-lines:]]


# -- jobs and runs -----------------------------------------------------------

JOB_HEADERS = ("JOB", "SCHEDULE", "NEXT", "LAST", "STATE")
RUN_HEADERS = ("RUN", "JOB", "TRIGGER", "STATUS", "SCHEDULED", "STARTED", "DURATION", "NODE", "BY")


def status_style(status: str) -> str:
    return _STATUS_STYLE.get(status, "")


def status_cell(status: str) -> Cell:
    return Cell(status, status_style(status))


def job_row(job: Mapping[str, Any], now: datetime, zone: tzinfo | None = None) -> list[str | Cell]:
    """One line of ``maintd jobs``. Tolerates job objects without ``overdue``/``last_success_at``."""
    next_at = parse_time(job.get("next_run_time"))
    next_text = f"{local_time(next_at, zone)} ({relative(next_at, now)})" if next_at else "-"
    last = job.get("last_run")
    if last:
        ended = parse_time(last.get("finished_at") or last.get("started_at") or last.get("scheduled_for"))
        when = relative(ended, now) if ended else ""
        if last["status"] == "running" and ended:
            when = f"for {_span(now - ended)}"
        took = f" ({format_duration(last['duration_s'])})" if last.get("duration_s") is not None else ""
        last_cell = Cell(f"{last['status']} {when}{took}".strip(), status_style(last["status"]))
    else:
        last_cell = Cell("never run")
    return [job["id"], f"{job['schedule']} ({job['timezone']})", next_text, last_cell, _job_state(job, last, now)]


_STATE_STYLE: dict[JobState, str] = {"overdue": RED, "failing": RED, "paused": YELLOW, "running": YELLOW, "ok": GREEN}


def _job_state(job: Mapping[str, Any], last: Mapping[str, Any] | None, now: datetime) -> Cell:
    """The job's ``state`` (worked out as the daemon does where an older one sends none)."""
    state: JobState = job.get("state") or job_state(
        paused=bool(job.get("paused")),
        running=bool(job.get("running")),
        overdue=job.get("overdue"),
        last_status=last.get("status") if last else None,
    )
    text: str = state
    if state == "overdue":
        success = parse_time(job.get("last_success_at"))
        text = f"overdue (last success {relative(success, now) if success else 'never'})"
    return Cell(text, _STATE_STYLE[state])


def run_row(run: Mapping[str, Any], now: datetime, zone: tzinfo | None = None) -> list[str | Cell]:
    """One line of ``maintd runs``."""
    scheduled = parse_time(run.get("scheduled_for"))
    started = parse_time(run.get("started_at"))
    return [
        str(run["id"]),
        run["job_id"],
        run["trigger"],
        status_cell(run["status"]),
        local_time(scheduled, zone, seconds=True) if scheduled else "-",
        relative(started, now) if started else "-",
        format_duration_or_dash(run.get("duration_s")),
        run.get("node") or "-",
        run.get("triggered_by") or "-",
    ]


def jobs_table(
    jobs: Sequence[Mapping[str, Any]], now: datetime, *, colour: bool = False, zone: tzinfo | None = None
) -> str:
    return table(JOB_HEADERS, [job_row(j, now, zone) for j in jobs], colour=colour)


def runs_table(
    runs: Sequence[Mapping[str, Any]], now: datetime, *, colour: bool = False, zone: tzinfo | None = None
) -> str:
    if not runs:
        return "no runs"
    return table(RUN_HEADERS, [run_row(r, now, zone) for r in runs], colour=colour)


# -- following a run -----------------------------------------------------------


def progress_line(run: Mapping[str, Any], elapsed_s: float) -> str:
    """``run 42 cleanup_sessions running 3.2s  deleted=120000 batches=12``."""
    # Tenths of a second up to a minute: a ticking clock, not a jump from ms to s.
    elapsed = f"{elapsed_s:.1f}s" if elapsed_s < 60 else format_duration(elapsed_s)
    line = f"run {run['id']} {run['job_id']} {run['status']} {elapsed}"
    progress = fields_text(run.get("progress"))
    return f"{line}  {progress}" if progress else line


def summary_lines(run: Mapping[str, Any]) -> list[str]:
    """How a run ended, for stdout: status and duration, then its result."""
    head = f"run {run['id']} {run['job_id']} {run['status']}"
    if run.get("duration_s") is not None:
        head += f" in {format_duration(run['duration_s'])}"
    return [head, *result_lines(run.get("result"))]


def log_line(line: Mapping[str, Any], zone: tzinfo | None = None, *, colour: bool = False) -> str:
    """One line of a run's log: local time, level, event, fields."""
    at = parse_time(line.get("at"))
    level = str(line.get("level", ""))
    style = {"error": RED, "critical": RED, "warning": YELLOW, "debug": DIM}.get(level, "")
    parts = [
        local_time(at, zone, seconds=True) if at else "-",
        paint(level.ljust(7), style, colour),
        paint(str(line.get("event", "")), BOLD, colour),
        fields_text(line.get("fields")),
    ]
    return "  ".join(parts).rstrip()
