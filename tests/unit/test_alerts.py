"""Alert rendering and decisions, without I/O: payloads, one-line text, mail, K failures in a row, retries."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from maintd.scheduler.alerts import (
    Alerter,
    DeliveryFailed,
    error_summary,
    error_tail,
    overdue_alert,
    run_alert,
    should_alert,
)
from maintd.scheduler.config.alerts import AlertsConfig
from maintd.scheduler.store.records import Run
from tests.memory_store import MemoryStore

pytestmark = pytest.mark.unit

AT = datetime(2026, 5, 12, 7, 30, tzinfo=UTC)
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "jobs/sql.py", line 40, in run\n'
    "    await conn.execute(sql)\n"
    'asyncpg.exceptions.UndefinedTableError: relation "events" does not exist\n'
)


def a_run(status: str = "failed", error: str | None = TRACEBACK, **fields: Any) -> Run:
    values: dict[str, Any] = {
        "id": 42,
        "job_id": "vacuum_events",
        "trigger": "schedule",
        "status": status,
        "scheduled_for": datetime(2026, 5, 12, 7, 0, tzinfo=UTC),
        "started_at": datetime(2026, 5, 12, 7, 0, 0, 5000, tzinfo=UTC),
        "finished_at": datetime(2026, 5, 12, 7, 0, 2, tzinfo=UTC),
        "error": error,
        "node": "node-a",
        **fields,
    }
    return Run(**values)


def test_a_run_alert_payload_has_every_field_and_the_run_as_the_api_shows_it() -> None:
    alert = run_alert(a_run(), failures=3, node="node-b", at=AT)
    text = (
        "maintd: job vacuum_events failed (run 42 on node-a, 3 in a row): "
        'asyncpg.exceptions.UndefinedTableError: relation "events" does not exist'
    )
    assert alert.payload == {
        "text": text,
        "event": "run_failed",
        "job_id": "vacuum_events",
        "run": {
            "id": 42,
            "job_id": "vacuum_events",
            "trigger": "schedule",
            "status": "failed",
            "scheduled_for": "2026-05-12T07:00:00+00:00",
            "started_at": "2026-05-12T07:00:00.005000+00:00",
            "finished_at": "2026-05-12T07:00:02+00:00",
            "duration_s": 1.995,
            "result": None,
            "error": TRACEBACK,
            "triggered_by": None,
            "node": "node-a",
            "attempt": 1,
            "progress": None,
            "late_outcome": None,
            "params": None,
            "reason": None,
            "dry_run": False,
            "rerun_of": None,
        },
        "consecutive_failures": 3,
        "last_success": None,
        "expect_success_within": None,
        "node": "node-b",
        "at": "2026-05-12T07:30:00+00:00",
    }
    assert alert.text == text
    json.dumps(alert.payload)  # what is posted


@pytest.mark.parametrize(
    ("status", "error", "event", "text"),
    [
        (
            "failed",
            "RuntimeError: boom",
            "run_failed",
            "maintd: job vacuum_events failed (run 42 on node-a): RuntimeError: boom",
        ),
        (
            "timed_out",
            "timed out after 10m",
            "run_timed_out",
            "maintd: job vacuum_events timed out (run 42 on node-a): timed out after 10m",
        ),
        ("lost", None, "run_lost", "maintd: job vacuum_events was lost (run 42 on node-a): lost"),
    ],
)
def test_the_text_is_one_line_per_status(status: str, error: str | None, event: str, text: str) -> None:
    alert = run_alert(a_run(status, error), failures=1, node="node-a", at=AT)
    assert (alert.event, alert.text) == (event, text)
    assert "\n" not in alert.text


def test_slack_control_characters_are_escaped_in_the_text_only() -> None:
    alert = run_alert(a_run(error="ValueError: <!channel> & a > b"), failures=1, node="n", at=AT)
    assert alert.text.endswith("ValueError: &lt;!channel&gt; &amp; a &gt; b")
    assert alert.payload["text"] == alert.text
    assert alert.payload["run"]["error"] == "ValueError: <!channel> & a > b"
    assert "ValueError: <!channel> & a > b" in alert.body


def test_the_mail_says_what_failed_where_with_the_end_of_the_traceback() -> None:
    alert = run_alert(a_run(), failures=2, node="node-b", at=AT)
    assert alert.subject == "[maintd] vacuum_events failed (run 42, 2 in a row)"
    assert "Run:        42 (trigger schedule, attempt 1)" in alert.body
    assert "Runs without success in a row: 2" in alert.body
    assert "Error (its end):\n" + TRACEBACK + "\n" in alert.body
    assert "Sent by maintd on node-b at 2026-05-12T07:30:00+00:00." in alert.body


def test_an_overdue_alert_has_no_run_and_says_since_when() -> None:
    last = datetime(2026, 5, 11, 3, 0, tzinfo=UTC)
    alert = overdue_alert("backup", last_success=last, window=timedelta(hours=26), node="node-a", at=AT)
    assert alert.payload == {
        "text": "maintd: job backup is overdue: no success within 1d 02h (last success 2026-05-11T03:00:00+00:00)",
        "event": "job_overdue",
        "job_id": "backup",
        "run": None,
        "consecutive_failures": None,
        "last_success": "2026-05-11T03:00:00+00:00",
        "expect_success_within": "1d 02h",
        "node": "node-a",
        "at": "2026-05-12T07:30:00+00:00",
    }
    assert alert.subject == "[maintd] backup overdue: no success within 1d 02h"
    never = overdue_alert("backup", last_success=None, window=timedelta(hours=1), node="n", at=AT)
    assert never.text.endswith("(it never succeeded)")
    assert "Last success: never" in never.body


def test_error_summary_and_tail() -> None:
    assert error_summary(TRACEBACK) == 'asyncpg.exceptions.UndefinedTableError: relation "events" does not exist'
    assert error_summary(None) == error_summary("\n  \n") == ""
    assert len(error_summary("x" * 1000)) == 300
    long = "\n".join(f"line {n}" for n in range(100))
    assert error_tail(long).splitlines() == [f"line {n}" for n in range(60, 100)]
    assert len(error_tail("y" * 10_000)) == 6001


@pytest.mark.parametrize(
    ("status", "failures", "after", "on", "alerts"),
    [
        ("failed", 1, 1, None, True),
        ("timed_out", 1, 1, None, True),
        ("lost", 1, 1, None, True),
        ("succeeded", 0, 1, None, False),
        ("cancelled", 3, 1, None, False),
        ("skipped", 3, 1, None, False),
        ("failed", 2, 3, None, False),
        ("failed", 3, 3, None, True),
        ("failed", 4, 3, None, True),  # still failing: alerts again, as min_interval allows
        ("lost", 1, 1, ["failed"], False),
    ],
)
def test_should_alert(status: str, failures: int, after: int, on: list[str] | None, alerts: bool) -> None:
    config = AlertsConfig(after_failures=after, **({"on": on} if on is not None else {}))
    assert should_alert(status, failures, config) is alerts


def test_a_job_of_its_own_k_overrides_the_section() -> None:
    config = AlertsConfig(after_failures=3)
    assert should_alert("failed", 1, config, after_failures=1)
    assert not should_alert("failed", 2, AlertsConfig(), after_failures=5)


def alerter(store: MemoryStore | None = None, **config: Any) -> Alerter:
    webhooks = [{"url": "http://127.0.0.1:9/hook"}]
    return Alerter(AlertsConfig(webhooks=webhooks, **config), store or MemoryStore(), node="n", retry_delays=(0, 0, 0))


@pytest.mark.parametrize("status", ["succeeded", "cancelled", "skipped", "missed"])
async def test_endings_that_never_alert_cost_nothing(status: str) -> None:
    store = MemoryStore()
    subject = alerter(store)
    await subject.run_ended(a_run(status, error=None))
    assert not subject._tasks
    assert store.calls == []  # decided before any query
    await subject.close(timedelta(seconds=1))


async def test_statuses_left_out_of_on_and_a_config_without_channels_do_nothing() -> None:
    store = MemoryStore()
    subject = alerter(store, on=["failed"])
    await subject.run_ended(a_run("timed_out"))
    await subject.job_overdue("x", None, timedelta(hours=1), AT)
    assert not subject._tasks
    silent = Alerter(AlertsConfig(), store, node="n")
    await silent.run_ended(a_run("failed"))
    assert not silent._tasks
    assert store.calls == []
    await subject.close(timedelta(seconds=1))
    await silent.close(timedelta(seconds=1))


async def test_retries_until_success_and_gives_up_at_once_on_a_permanent_failure() -> None:
    subject = alerter()
    alert = run_alert(a_run(), failures=1, node="n", at=AT)
    answers = [DeliveryFailed("HTTP 500", retry=True), DeliveryFailed("HTTP 502", retry=True), None]
    calls: list[int] = []

    async def flaky() -> None:
        calls.append(1)
        if answer := answers.pop(0):
            raise answer

    await subject._with_retries(alert, "webhook", "t", flaky)
    assert len(calls) == 3

    calls.clear()

    async def gone() -> None:
        calls.append(1)
        raise DeliveryFailed("HTTP 404 Not Found", retry=False)

    await subject._with_retries(alert, "webhook", "t", gone)
    assert len(calls) == 1

    calls.clear()

    async def down() -> None:
        calls.append(1)
        raise OSError("connection refused")

    await subject._with_retries(alert, "webhook", "t", down)
    assert len(calls) == 4  # the first attempt and one per retry delay
    await subject.close(timedelta(seconds=1))
