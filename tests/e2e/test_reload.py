"""End to end: SIGHUP reloads config.toml into the running daemon, or rejects it and keeps the old one."""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Any

import pytest

from maintd.admin_api.auth import new_token
from tests.e2e.conftest import check_config

pytestmark = pytest.mark.e2e

BEFORE = """
[jobs.nightly]
task = "sql"
schedule = "0 3 * * *"
[jobs.nightly.params]
sql = "SELECT 1"

[jobs.retired]
task = "sql"
schedule = "@weekly"
[jobs.retired.params]
sql = "SELECT 1"
"""

AFTER = """
[jobs.nightly]
task = "sql"
schedule = "30 4 * * *"
timezone = "Europe/Berlin"
[jobs.nightly.params]
sql = "SELECT 1"

[jobs.every_second]
task = "sql"
schedule = "every 1s"
[jobs.every_second.params]
sql = "SELECT 1"
"""


def _config_of(daemon: Any, tmp_path: Path) -> Path:
    port = daemon.url.rsplit(":", 1)[1]
    return tmp_path / f"config-{port}.toml"


def test_sighup_adds_changes_and_removes_jobs_and_audits_the_diff(
    start_daemon: Any, db_dsn: str, tmp_path: Path
) -> None:
    daemon = start_daemon(BEFORE, dsn=db_dsn)
    config = _config_of(daemon, tmp_path)
    with daemon.operator() as http:
        assert sorted(job["id"] for job in http.get("/admin/jobs").json()) == ["nightly", "retired"]

    config.write_text(config.read_text().replace(BEFORE, AFTER))
    daemon.process.send_signal(signal.SIGHUP)
    reloaded = daemon.wait_for_event(lambda e: e.get("event") == "config_reloaded")

    assert reloaded["added"] == ["every_second"]
    assert reloaded["removed"] == ["retired"]
    assert reloaded["changed"] == {
        "nightly": {"schedule": ["0 3 * * *", "30 4 * * *"], "timezone": ["UTC", "Europe/Berlin"]}
    }
    with daemon.operator() as http:
        jobs = {job["id"]: job for job in http.get("/admin/jobs").json()}
        assert sorted(jobs) == ["every_second", "nightly"]
        assert jobs["nightly"]["schedule"] == "30 4 * * *"
        assert jobs["nightly"]["next_run_time"].endswith(("T04:30:00+01:00", "T04:30:00+02:00"))
        assert http.get("/admin/jobs/retired").status_code == 404
        # The added job fires without a restart.
        run = daemon.wait_for_event(lambda e: e.get("event") == "run_succeeded" and e.get("job_id") == "every_second")
        assert http.get(f"/admin/runs/{run['run_id']}").json()["trigger"] == "schedule"
        audit = http.get("/admin/audit").json()
        assert audit[0]["principal"] == "SIGHUP" and audit[0]["action"] == "reload"
        assert audit[0]["target"] == str(config)
        assert audit[0]["detail"]["removed"] == ["retired"]


def test_sighup_with_a_broken_config_keeps_the_running_one(
    start_daemon: Any, db_dsn: str, tmp_path: Path, repo_root: Path
) -> None:
    daemon = start_daemon(BEFORE, dsn=db_dsn)
    config = _config_of(daemon, tmp_path)
    good = config.read_text()
    config.write_text(good.replace('schedule = "0 3 * * *"', 'shedule = "61 * * * *"'))
    daemon.process.send_signal(signal.SIGHUP)

    rejected = daemon.wait_for_event(lambda e: e.get("event") == "config_reload_rejected")
    assert sorted(rejected["problems"]) == [
        "jobs.nightly.schedule: required key is missing",
        "jobs.nightly.shedule: unknown key",
    ]
    # The same lines as `maintd check-config` prints.
    check = check_config(config, repo_root)
    assert check.returncode == 78 and check.stderr.splitlines() == rejected["problems"]
    with daemon.operator() as http:
        assert sorted(job["id"] for job in http.get("/admin/jobs").json()) == ["nightly", "retired"]
        assert http.get("/admin/jobs/nightly").json()["schedule"] == "0 3 * * *"
        assert http.get("/admin/audit").json() == []
        assert http.get("/readyz").status_code == 200


def test_sighup_replaces_admin_tokens_without_a_restart(start_daemon: Any, db_dsn: str, tmp_path: Path) -> None:
    daemon = start_daemon(BEFORE, dsn=db_dsn)
    config = _config_of(daemon, tmp_path)
    token, digest = new_token()
    # Revoke the viewer, add a new operator.
    text = re.sub(
        r'\[\[admin.tokens\]\]\nname = "watcher"\nrole = "viewer"\nsha256 = "[0-9a-f]+"\n',
        f'[[admin.tokens]]\nname = "oncall"\nrole = "operator"\nsha256 = "{digest}"\n',
        config.read_text(),
    )
    config.write_text(text)
    with daemon.client(daemon.viewer_token) as http:
        assert http.get("/admin/jobs").status_code == 200
    daemon.process.send_signal(signal.SIGHUP)
    reloaded = daemon.wait_for_event(lambda e: e.get("event") == "config_reloaded")
    assert reloaded["replaced"] == ["admin.tokens"]
    with daemon.client(daemon.viewer_token) as http:
        assert http.get("/admin/jobs").status_code == 401
    with daemon.client(token) as http:
        assert http.post("/admin/jobs/nightly/pause").json()["paused"] is True
