"""The daily report's pure parts: its period, what needs attention, its params and its message."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from maintd.jobs.daily_report.data import (
    JobHealth,
    UnsentReport,
    attention_items,
    error_summary,
    report_period,
)
from maintd.jobs.mail import SmtpSettings
from maintd.jobs.mailer import MailNotSent, build_message, send_message
from maintd.scheduler.config.model import ConfigError
from tests.configs import make_config

pytestmark = pytest.mark.unit

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 5, 12, 9, 0, tzinfo=BERLIN)


def local(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.mark.parametrize(
    ("fire", "day", "start", "end", "hours"),
    [
        ("2026-05-12T09:00:00+02:00", "2026-05-11", "2026-05-11T00:00:00+02:00", "2026-05-12T00:00:00+02:00", 24),
        ("2026-03-29T09:00:00+02:00", "2026-03-28", "2026-03-28T00:00:00+01:00", "2026-03-29T00:00:00+01:00", 24),
        ("2026-03-30T09:00:00+02:00", "2026-03-29", "2026-03-29T00:00:00+01:00", "2026-03-30T00:00:00+02:00", 23),
        ("2026-10-26T09:00:00+01:00", "2026-10-25", "2026-10-25T00:00:00+02:00", "2026-10-26T00:00:00+01:00", 25),
        # Just after midnight the "previous day" is the one that just ended.
        ("2026-05-12T00:00:01+02:00", "2026-05-11", "2026-05-11T00:00:00+02:00", "2026-05-12T00:00:00+02:00", 24),
    ],
)
def test_previous_day_is_the_local_calendar_day_before(fire: str, day: str, start: str, end: str, hours: int) -> None:
    period = report_period("previous_day", local(fire).astimezone(UTC), BERLIN)
    assert period.report_date == date.fromisoformat(day)
    assert (period.start, period.end) == (local(start), local(end))
    assert period.length == timedelta(hours=hours)


def test_last_24h_is_24_real_hours_filed_under_the_local_date() -> None:
    period = report_period("last_24h", local("2026-03-29T09:00:00+02:00"), BERLIN)
    assert (period.start, period.end) == (local("2026-03-28T08:00:00+01:00"), local("2026-03-29T09:00:00+02:00"))
    assert period.length == timedelta(hours=24)
    assert period.report_date == date(2026, 3, 29)


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (None, ""),
        ('relation "t" does not exist\nDETAIL: ...', 'relation "t" does not exist'),
        (
            'Traceback (most recent call last):\n  File "x", line 1\n    boom()\nRuntimeError: disk full\n',
            "RuntimeError: disk full",
        ),
        ("x" * 300, "x" * 199 + "…"),
    ],
)
def test_error_summary_is_the_line_worth_reading(error: str | None, line: str) -> None:
    assert error_summary(error) == line


# An hourly job that last succeeded an hour ago.
HEALTHY = JobHealth(
    job_id="j",
    paused=False,
    paused_at=None,
    paused_by=None,
    first_seen=NOW - timedelta(days=30),
    last_success=NOW - timedelta(hours=1),
    failures_since_success=0,
    last_failure_status=None,
    last_error=None,
    ended=24,
    usual_interval=timedelta(hours=1),
    running_id=None,
    running_since=None,
    running_node=None,
)


def health(job_id: str = "j", **fields: Any) -> JobHealth:
    return dataclasses.replace(HEALTHY, job_id=job_id, **fields)


def kinds(*jobs: JobHealth, unsent: list[UnsentReport] | None = None) -> list[tuple[str, str]]:
    return [(a.job_id, a.kind) for a in attention_items(jobs, unsent or [], "report", NOW)]


def test_a_healthy_job_needs_no_attention() -> None:
    assert kinds(health()) == []


def test_failing_job_with_its_last_error() -> None:
    traceback = "Traceback (most recent call last):\nX: y"
    failing = health(failures_since_success=3, last_failure_status="timed_out", last_error=traceback)
    [item] = attention_items([failing], [], "report", NOW)
    assert (item.kind, item.count, item.status, item.error) == ("failing", 3, "timed_out", "X: y")


def test_paused_job_is_not_also_overdue() -> None:
    assert kinds(health(paused=True, paused_by="ops", last_success=NOW - timedelta(days=3))) == [("j", "paused")]


def test_overdue_after_two_usual_intervals_without_success() -> None:
    assert kinds(health(last_success=NOW - timedelta(hours=2, seconds=1))) == [("j", "overdue")]
    assert kinds(health(last_success=NOW - timedelta(hours=2))) == []


def test_never_succeeded_only_once_something_ended() -> None:
    assert kinds(health(last_success=None)) == [("j", "never_succeeded")]
    assert kinds(health(last_success=None, ended=0, running_id=5, running_since=NOW)) == []


def test_running_long_after_an_hour() -> None:
    assert kinds(health(running_id=5, running_since=NOW - timedelta(minutes=61))) == [("j", "running_long")]
    assert kinds(health(running_id=5, running_since=NOW - timedelta(minutes=59))) == []


def test_most_urgent_first() -> None:
    unsent = [UnsentReport(date(2026, 5, 10), "failed", "550 no", 3, "failed")]
    jobs = (health("a", paused=True), health("b", failures_since_success=1), health("c", last_success=None))
    assert kinds(*jobs, unsent=unsent) == [
        ("report", "report_not_sent"),
        ("b", "failing"),
        ("a", "paused"),
        ("c", "never_succeeded"),
    ]


def report_job(**params: Any) -> dict[str, Any]:
    return {"task": "daily_report", "schedule": "0 9 * * *", "params": {"to": ["ops@example.com"], **params}}


def test_params_defaults() -> None:
    params = make_config({"r": report_job()}).jobs["r"].params
    assert (params.period, params.subject, params.sessions_table) == ("previous_day", "[maintd]", None)


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"to": []}, "jobs.r.params.to: list should have at least 1 item after validation, not 0, got []"),
        ({"to": ["ops@example.com", "bob"]}, "jobs.r.params.to: not an email address: 'bob'"),
        (
            {"to": ["ops@example.com\r\nBcc: x@evil.com"]},
            "jobs.r.params.to: not an email address: 'ops@example.com\\r\\nBcc: x@evil.com'",
        ),
        ({"subject": "hi\r\nBcc: x@evil.com"}, "jobs.r.params.subject: string should match pattern"),
        ({"period": "yesterday"}, "jobs.r.params.period: must be 'previous_day' or 'last_24h', got 'yesterday'"),
        ({"timezone": "Europe/Berlin"}, "jobs.r.params.timezone: unknown key"),  # the job's own timezone is used
        (
            {"sessions_table": "sessions; DROP TABLE users", "expires_column": "expires"},
            "jobs.r.params.sessions_table: must be a plain name such as sessions or app.sessions",
        ),
        ({"sessions_table": "a.b.c", "expires_column": "x"}, "jobs.r.params.sessions_table: must be a plain name"),
        ({"sessions_table": "sessions", "expires_column": 'x"y'}, "jobs.r.params.expires_column: must be a plain name"),
        ({"sessions_table": "sessions"}, "jobs.r.params: sessions_table and expires_column go together"),
        ({"created_column": "created"}, "jobs.r.params: created_column needs sessions_table"),
    ],
)
def test_bad_params_fail_at_config_load_with_their_key_path(params: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as error:
        make_config({"r": report_job(**params)})
    [line] = error.value.problems
    assert line.startswith(problem), line


def test_message_is_multipart_alternative_text_then_html() -> None:
    message = build_message(
        sender="maintd@example.com",
        to=["a@example.com", "b@example.com"],
        subject="[maintd] Daily report",
        text="plain words\n",
        html="<p>rich words</p>\n",
        date=NOW,
        message_id="<daily-report.r.2026-05-11@example.com>",
    )
    assert message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]
    assert message["To"] == "a@example.com, b@example.com"
    assert message["Date"] == "Tue, 12 May 2026 09:00:00 +0200"
    assert message["Message-ID"] == "<daily-report.r.2026-05-11@example.com>"
    assert message.get_body(preferencelist=("plain",)).get_content() == "plain words\n"
    assert message.get_body(preferencelist=("html",)).get_content() == "<p>rich words</p>\n"


async def test_a_missing_smtp_password_fails_before_connecting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAINTD_SMTP_PASSWORD", raising=False)
    settings = SmtpSettings(port=1, username="maintd", password_env="MAINTD_SMTP_PASSWORD")
    message = build_message(
        sender="m@example.com",
        to=["a@example.com"],
        subject="s",
        text="t",
        html="h",
        date=NOW,
        message_id="<x@example.com>",
    )
    with pytest.raises(MailNotSent, match=r"127.0.0.1:1 .*: the password variable \$MAINTD_SMTP_PASSWORD is not set"):
        await send_message(settings, message)
