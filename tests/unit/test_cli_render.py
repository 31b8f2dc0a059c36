"""What the admin commands print for people: tables, times, durations, progress, summaries."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from maintd.scheduler.cli.live import LiveLine, report_end
from maintd.scheduler.cli.render import (
    error_tail,
    jobs_table,
    log_line,
    progress_line,
    relative,
    runs_table,
    table,
    use_colour,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def run(**fields: Any) -> dict[str, Any]:
    base = {
        "id": 42,
        "job_id": "cleanup_sessions",
        "trigger": "manual",
        "status": "succeeded",
        "scheduled_for": "2026-05-01T09:00:00+00:00",
        "started_at": "2026-05-01T09:00:00+00:00",
        "finished_at": "2026-05-01T09:01:05+00:00",
        "duration_s": 65.0,
        "result": None,
        "error": None,
        "triggered_by": "ops",
        "node": "db1:812",
        "attempt": 1,
        "progress": None,
    }
    return {**base, **fields}


def job(**fields: Any) -> dict[str, Any]:
    base = {
        "id": "cleanup_sessions",
        "task": "cleanup_sessions",
        "schedule": "0 0 * * *",
        "timezone": "Europe/Berlin",
        "paused": False,
        "running": False,
        "next_run_time": "2026-05-01T22:00:00+00:00",
        "upcoming": [],
        "last_run": run(),
    }
    return {**base, **fields}


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(hours=3, minutes=12, seconds=9), "in 3h 12m"),
        (-timedelta(hours=2), "2h ago"),
        (timedelta(seconds=45), "in 45s"),
        (-timedelta(days=2, hours=5), "2d 05h ago"),
        (timedelta(milliseconds=300), "just now"),
    ],
)
def test_relative(delta: timedelta, text: str) -> None:
    assert relative(NOW + delta, NOW) == text


def test_table_aligns_columns_and_colours_only_when_asked() -> None:
    plain = table(["A", "LONGER"], [["xyz", "1"], ["q", "22"]])
    assert plain.splitlines() == ["A    LONGER", "xyz  1", "q    22"]
    assert "\x1b[" not in plain
    assert "\x1b[1m" in table(["A"], [["x"]], colour=True)


def test_no_colour_off_a_terminal_or_with_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_colour(Tty()) and not use_colour(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_colour(Tty())


def test_jobs_table() -> None:
    jobs = [
        job(),
        job(id="report", schedule="@daily", timezone="UTC", paused=True, next_run_time=None, last_run=None),
        job(id="vacuum", last_run=run(status="failed", duration_s=0.2)),
        job(id="stale", overdue=True, last_success_at="2026-04-28T12:00:00+00:00"),
    ]
    lines = jobs_table(jobs, NOW, zone=UTC).splitlines()
    assert lines[0].split() == ["JOB", "SCHEDULE", "NEXT", "LAST", "STATE"]
    assert lines[1].split("  ")[0] == "cleanup_sessions"
    assert "0 0 * * * (Europe/Berlin)" in lines[1]
    assert "2026-05-01 22:00 (in 10h)" in lines[1]
    assert "succeeded 2h 58m ago (1m 05s)" in lines[1]
    assert lines[1].endswith("ok")
    assert "never run" in lines[2] and lines[2].endswith("paused")
    assert "failed" in lines[3] and lines[3].endswith("failing")
    assert lines[4].endswith("overdue (last success 3d ago)")


def test_the_state_column_is_the_daemons_state_worked_out_alike_for_an_older_daemon() -> None:
    # The daemon's word stands; without one (an older daemon) the same definition applies.
    said = job(state="paused", paused=True, running=True, last_run=run(status="failed"))
    assert jobs_table([said], NOW, zone=UTC).splitlines()[1].endswith("paused")
    unsaid = job(paused=True, running=True, overdue=True, last_success_at=None, last_run=run(status="failed"))
    assert jobs_table([unsaid], NOW, zone=UTC).splitlines()[1].endswith("overdue (last success never)")
    assert jobs_table([job(running=True, last_run=run(status="lost"))], NOW, zone=UTC).endswith("running")


def test_a_running_last_run_says_for_how_long() -> None:
    running = run(status="running", finished_at=None, duration_s=None, started_at="2026-05-01T11:59:00+00:00")
    line = jobs_table([job(running=True, last_run=running)], NOW, zone=UTC).splitlines()[1]
    assert "running for 1m" in line and line.endswith("running")


def test_runs_table() -> None:
    lines = runs_table(
        [run(), run(id=41, status="running", finished_at=None, duration_s=None)], NOW, zone=UTC
    ).splitlines()
    assert lines[0].split() == ["RUN", "JOB", "TRIGGER", "STATUS", "SCHEDULED", "STARTED", "DURATION", "NODE", "BY"]
    assert lines[1].split() == [
        "42",
        "cleanup_sessions",
        "manual",
        "succeeded",
        "2026-05-01",
        "09:00:00",
        "3h",
        "ago",
        "1m",
        "05s",
        "db1:812",
        "ops",
    ]
    assert lines[2].split()[3] == "running" and " - " in lines[2]
    assert runs_table([], NOW) == "no runs"


def test_progress_line() -> None:
    line = progress_line(run(status="running", progress={"deleted": 120000, "batches": 12}), 3.21)
    assert line == "run 42 cleanup_sessions running 3.2s  deleted=120000 batches=12"
    assert progress_line(run(status="running"), 0.5) == "run 42 cleanup_sessions running 0.5s"


def test_error_tail_keeps_the_end_without_caret_lines() -> None:
    error = (
        "Traceback (most recent call last):\n"
        + "".join(f'  File "x.py", line {i}, in f\n    g()\n    ^^^\n' for i in range(10))
        + "RuntimeError: boom\n"
    )
    tail = error_tail(error)
    assert tail[0] == "  …" and tail[-1] == "  RuntimeError: boom"
    assert not any(line.strip() == "^^^" for line in tail)


def test_report_end_summary_result_and_exit_status() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert report_end(run(result={"deleted": 3, "table": "sessions"}), as_json=False, out=out, err=err) == 0
    assert out.getvalue().splitlines() == [
        "run 42 cleanup_sessions succeeded in 1m 05s",
        "result:",
        "  deleted  3",
        "  table    sessions",
    ]
    out, err = io.StringIO(), io.StringIO()
    assert report_end(run(status="timed_out", error="timed out after 10m"), as_json=False, out=out, err=err) == 1
    assert "timed_out" in out.getvalue() and "timed out after 10m" in err.getvalue()


def test_live_line_rewrites_in_place_on_a_terminal_and_prints_changes_elsewhere() -> None:
    running = run(status="running", progress={"deleted": 1})
    stream = io.StringIO()
    live = LiveLine(stream, live=True)
    live.update(running, 1.0)
    live.update(running, 2.0)
    live.clear()
    assert "\n" not in stream.getvalue() and stream.getvalue().count("\r") == 4

    stream = io.StringIO()
    piped = LiveLine(stream, live=False)
    for elapsed, progress in [(1.0, {"deleted": 1}), (2.0, {"deleted": 1}), (3.0, {"deleted": 2})]:
        piped.update(run(status="running", progress=progress), elapsed)
    assert stream.getvalue().splitlines() == [
        "run 42 cleanup_sessions running 1.0s  deleted=1",
        "run 42 cleanup_sessions running 3.0s  deleted=2",
    ]


def test_log_line() -> None:
    line = {
        "seq": 3,
        "at": "2026-05-01T09:00:01+00:00",
        "level": "info",
        "event": "batch_deleted",
        "fields": {"rows": 10000},
    }
    assert log_line(line, UTC) == "2026-05-01 09:00:01  info     batch_deleted  rows=10000"
