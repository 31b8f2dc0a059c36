"""What a config reload sees as changed (scheduler/config/reload.py)."""

from __future__ import annotations

import pytest

from maintd.scheduler.config.reload import diff_configs
from tests.configs import make_config, sql_job

pytestmark = pytest.mark.unit


def test_same_config_is_an_empty_diff() -> None:
    config = make_config({"a": sql_job()})
    assert diff_configs(config, make_config({"a": sql_job()})).empty


def test_jobs_added_removed_and_changed_setting_by_setting() -> None:
    old = make_config({"keep": sql_job(), "gone": sql_job(), "edit": sql_job("SELECT 1", "@daily", retries=1)})
    new = make_config({"keep": sql_job(), "new": sql_job(), "edit": sql_job("SELECT 2", "@hourly", retries=1)})
    diff = diff_configs(old, new)
    assert diff.added == ["new"] and diff.removed == ["gone"]
    assert diff.changed == {
        "edit": {"schedule": ["@daily", "@hourly"], "params": [{"sql": "SELECT 1"}, {"sql": "SELECT 2"}]}
    }
    assert diff.needs_restart == [] and diff.replaced == []


def test_default_timezone_change_shows_on_the_jobs_that_follow_it() -> None:
    old = make_config({"a": sql_job(), "b": sql_job(timezone="Asia/Tokyo")})
    new = make_config({"a": sql_job(), "b": sql_job(timezone="Asia/Tokyo")}, scheduler={"timezone": "Europe/Berlin"})
    diff = diff_configs(old, new)
    assert diff.changed == {"a": {"timezone": ["UTC", "Europe/Berlin"]}}
    assert diff.needs_restart == []


def test_sections_read_at_start_only_are_reported_as_needing_a_restart() -> None:
    old = make_config({}, server={"port": 8080})
    new = make_config({}, server={"port": 9090}, scheduler={"lease": "10s"})
    assert diff_configs(old, new).needs_restart == ["server.port", "scheduler.lease"]


def test_smtp_change_is_applied_live() -> None:
    old = make_config({})
    new = make_config({}, smtp={"host": "mail.example.com", "from": "maintd@example.com"})
    assert diff_configs(old, new).replaced == ["smtp"]
