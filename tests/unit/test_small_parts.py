"""Small pure pieces: durations, SQL blocks, the sql task's status parsing, the task registry."""

from __future__ import annotations

from datetime import timedelta

import pytest

from maintd.jobs.durations import format_duration, format_duration_or_dash, parse_duration
from maintd.jobs.registry import TaskLookupError, builtin_tasks, resolve_task
from maintd.jobs.sql import parse_status
from maintd.jobs.sql_blocks import parse_sql_blocks
from maintd.scheduler.store.sql import QUERIES

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500ms", timedelta(milliseconds=500)),
        ("30s", timedelta(seconds=30)),
        ("10m", timedelta(minutes=10)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("1.5s", timedelta(seconds=1.5)),
        (" 5 m ", timedelta(minutes=5)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["10", "10 minutes", "-5s", "s", "", "1w"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.12, "120ms"),
        (timedelta(milliseconds=200), "200ms"),
        (timedelta(milliseconds=1500), "1.5s"),
        (3.21, "3.2s"),
        (timedelta(seconds=2), "2s"),
        (42.4, "42s"),
        (65, "1m 05s"),
        (timedelta(seconds=90), "1m 30s"),
        (timedelta(minutes=10), "10m"),
        (185, "3m 05s"),
        (timedelta(hours=2), "2h"),
        (7380, "2h 03m"),
        (7620, "2h 07m"),
        (timedelta(hours=26), "1d 02h"),
        (timedelta(days=1), "1d"),
        (273600, "3d 04h"),
        (-timedelta(days=2, hours=5), "2d 05h"),
    ],
)
def test_format_duration_spells_two_units_at_most(value: timedelta | float, text: str) -> None:
    assert format_duration(value) == text


def test_no_duration_is_a_dash() -> None:
    assert (format_duration_or_dash(None), format_duration_or_dash(0.12)) == ("-", "120ms")


def test_sql_blocks_need_a_description_and_are_unique() -> None:
    assert parse_sql_blocks("-- name: a\n-- does a\nSELECT 1;\n-- name: b\n-- does b\nSELECT 2;\n") == {
        "a": "SELECT 1",
        "b": "SELECT 2",
    }
    with pytest.raises(ValueError, match="description"):
        parse_sql_blocks("-- name: a\nSELECT 1;\n")
    with pytest.raises(ValueError, match="twice"):
        parse_sql_blocks("-- name: a\n-- x\nSELECT 1;\n-- name: a\n-- y\nSELECT 2;\n")


def test_daemon_queries_load() -> None:
    assert "claim_run" in QUERIES and QUERIES["claim_run"].startswith("INSERT INTO maintd.runs")


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("DELETE 42", {"status": "DELETE 42", "rows": 42}),
        ("INSERT 0 3", {"status": "INSERT 0 3", "rows": 3}),
        ("VACUUM", {"status": "VACUUM"}),
        ("CREATE TABLE", {"status": "CREATE TABLE"}),
    ],
)
def test_sql_task_status(status: str, expected: dict) -> None:
    assert parse_status(status) == expected


def test_builtin_tasks_are_registered() -> None:
    assert "sql" in builtin_tasks()
    assert resolve_task("sql").params_model.__name__ == "SqlParams"
    with pytest.raises(TaskLookupError, match="expected 'package.module:function'"):
        resolve_task("pkg:")
