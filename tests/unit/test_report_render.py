"""Rendering the daily report: a pure function of hand-built data, no database, no server."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from maintd.jobs.daily_report.data import (
    Attention,
    JobRuns,
    ReportData,
    RunLine,
    SessionStats,
    UnrunFires,
    report_period,
)
from maintd.jobs.daily_report.render import render_report

pytestmark = pytest.mark.unit

BERLIN = ZoneInfo("Europe/Berlin")
# The report made at 09:00 on 2026-05-12 in Berlin, about 2026-05-11.
PERIOD = report_period("previous_day", datetime(2026, 5, 12, 7, 0, tzinfo=UTC), BERLIN)
XSS = "RuntimeError: <script>alert('x')</script>"


def at(hour: int, minute: int = 0) -> datetime:
    """A moment of the reported day, local time."""
    return datetime(2026, 5, 11, hour, minute, tzinfo=BERLIN)


def report(**changes: object) -> ReportData:
    data = ReportData(
        job_id="morning_report",
        period=PERIOD,
        generated_at=datetime(2026, 5, 12, 9, 0, tzinfo=BERLIN),
        subject_prefix="[maintd]",
        jobs=[
            JobRuns("cleanup_sessions", {"succeeded": 23, "failed": 1}, 12.5),
            JobRuns("vacuum_events", {"succeeded": 1, "lost": 1, "skipped": 22}, 754.2),
        ],
        failures=[
            RunLine(41, "cleanup_sessions", "failed", "schedule", 1, "db1:812", at(14, 2), 0.21, XSS),
            RunLine(17, "vacuum_events", "lost", "schedule", 1, "db2:90", at(1), 95.0, "lost: node db2:90 stopped"),
        ],
        failures_total=2,
        longest=[RunLine(40, "vacuum_events", "succeeded", "schedule", 1, "db1:812", at(3), 754.2, "")],
        unrun=[UnrunFires("vacuum_events", "skipped", 22, at(2), at(23), "skipped: the job is paused")],
        attention=[
            Attention("cleanup_sessions", "failing", at=at(13), count=1, status="failed", error=XSS),
            Attention("vacuum_events", "paused", at=at(1, 30), by="ops"),
        ],
        sessions=SessionStats("app.sessions", created=1234, expired=120, deleted=1900, active=5000, awaiting_cleanup=3),
    )
    return dataclasses.replace(data, **changes)


def test_text_part() -> None:
    assert (
        render_report(report()).text
        == f"""\
Daily report for 2026-05-11 (Europe/Berlin)
From 2026-05-11 00:00 CEST to 2026-05-12 00:00 CEST (24 hours).
Made 2026-05-12 09:00 by job morning_report.

NEEDS ATTENTION
  * cleanup_sessions: 1 failure in a row, last success 2026-05-11 13:00; last error: {XSS}
  * vacuum_events: paused since 2026-05-11 01:30 by ops

RUNS BY JOB
  job               runs  ok  failed  lost  skipped  longest
  cleanup_sessions    24  23       1     0        0      12s
  vacuum_events       24   1       0     1       22  12m 34s

FAILURES (2)
  2026-05-11 14:02  cleanup_sessions: failed after 210ms (run 41, schedule, attempt 1, db1:812)
      {XSS}
  2026-05-11 01:00  vacuum_events: lost after 1m 35s (run 17, schedule, attempt 1, db2:90)
      lost: node db2:90 stopped

LONGEST RUNS
  vacuum_events  12m 34s  run 40  2026-05-11 03:00  ok

FIRES NOT RUN
  vacuum_events: 22 skipped fires from 2026-05-11 02:00 to 2026-05-11 23:00: the job is paused

SESSIONS (app.sessions)
  created in the period *           1,234
  expired in the period *             120
  deleted by cleanup in the period  1,900
  active now                        5,000
  expired, awaiting cleanup             3
  * rows still in the table: cleanup deletes expired ones

-- 
maintd
"""
    )


def test_subject_counts_what_went_wrong() -> None:
    subject = render_report(report()).subject
    assert subject == "[maintd] Daily report 2026-05-11: 1 failed, 1 lost, 2 items need attention"


def test_subject_of_a_quiet_day_says_all_ok() -> None:
    quiet = report(jobs=[JobRuns("cleanup_sessions", {"succeeded": 24}, 1.0)], attention=[], subject_prefix="")
    assert render_report(quiet).subject == "Daily report 2026-05-11: all OK, 24 runs"


def test_a_last_24h_report_names_its_span() -> None:
    period = report_period("last_24h", datetime(2026, 5, 12, 7, 0, tzinfo=UTC), BERLIN)
    rendered = render_report(report(period=period, attention=[]))
    assert rendered.subject == "[maintd] Report for the 24 hours to 2026-05-12 09:00 CEST: 1 failed, 1 lost"
    assert rendered.text.startswith(
        "Report for the 24 hours to 2026-05-12 09:00 CEST\n"
        "From 2026-05-11 09:00 CEST to 2026-05-12 09:00 CEST (24 hours).\n"
    )


def test_html_part_escapes_a_job_error() -> None:
    html = render_report(report()).html
    assert "<script>" not in html
    # Once in the failures, once in the attention list.
    assert html.count("RuntimeError: &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;") == 2
    assert "<title>[maintd] Daily report 2026-05-11: 1 failed, 1 lost, 2 items need attention</title>" in html
    assert '<td align="right" style="color: #b00; font-weight: bold;">1</td>' in html  # the failure stands out
    assert '<tr><td>active now</td><td align="right">5,000</td></tr>' in html


def test_a_day_with_a_clock_change_says_so_and_shows_zones() -> None:
    fall_back = report_period("previous_day", datetime(2026, 10, 26, 8, 0, tzinfo=UTC), BERLIN)
    text = render_report(
        report(
            period=fall_back,
            failures=[],
            longest=[],
            unrun=[],
            attention=[],
            sessions=None,
            generated_at=datetime(2026, 10, 26, 9, 0, tzinfo=BERLIN),
        )
    ).text
    assert "From 2026-10-25 00:00 CEST to 2026-10-26 00:00 CET (25 hours: the clocks went back)." in text
    assert "Made 2026-10-26 09:00 CET by job morning_report." in text


def test_a_long_list_of_failures_is_cut_short() -> None:
    rendered = render_report(report(failures_total=42))
    assert "FAILURES (42)" in rendered.text
    assert "  ... and 40 more: maintd runs --status failed" in rendered.text
    assert "... and 40 more" in rendered.html


def test_an_empty_day() -> None:
    text = render_report(
        report(jobs=[], failures=[], failures_total=0, longest=[], unrun=[], attention=[], sessions=None)
    ).text
    assert "NEEDS ATTENTION\n  Nothing.\n\nRUNS BY JOB\n  No runs.\n\n-- \nmaintd\n" in text


def test_sessions_that_could_not_be_counted() -> None:
    broken = SessionStats("nope", None, 0, None, 0, 0, error='relation "nope" does not exist')
    text = render_report(report(sessions=broken)).text
    assert 'SESSIONS (nope)\n  Could not count them: relation "nope" does not exist\n' in text


@pytest.mark.parametrize(
    ("item", "sentence"),
    [
        (
            Attention("j", "failing", at=None, count=3, status="timed_out"),
            "3 failures in a row (the last timed out), never succeeded",
        ),
        (
            Attention("j", "running_long", at=at(6), run_id=7, by="db1"),
            "run 7 on db1 running for 1d 03h, since 2026-05-11 06:00",
        ),
        (Attention("j", "never_succeeded", at=at(8)), "never succeeded (known since 2026-05-11 08:00)"),
        (
            Attention("j", "overdue", at=at(8), interval=timedelta(hours=1)),
            "no success for 1d 01h (last 2026-05-11 08:00), usually runs every 1h",
        ),
        (
            Attention("morning_report", "report_not_sent", error="SMTP ... 550 no", day=PERIOD.report_date),
            "the report for 2026-05-11 was not sent: SMTP ... 550 no",
        ),
        (
            Attention("morning_report", "report_not_sent", status="lost", run_id=9, day=PERIOD.report_date),
            "the report for 2026-05-11 may not have gone out: run 9 ended lost before confirming it",
        ),
        (
            Attention("morning_report", "report_not_sent", status=None, run_id=9, day=PERIOD.report_date),
            (
                "the report for 2026-05-11 may not have gone out: run 9 (no longer in the run history) "
                "ended before confirming it"
            ),
        ),
    ],
)
def test_attention_wording(item: Attention, sentence: str) -> None:
    assert f"  * {item.job_id}: {sentence}\n" in render_report(report(attention=[item])).text
