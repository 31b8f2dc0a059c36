"""The command line as a user runs it: preview, token, and the admin client against a live daemon."""

from __future__ import annotations

import hashlib
import json
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import maintd_command, run_env

pytestmark = pytest.mark.e2e


def maintd(*args: str, repo_root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*maintd_command(), *args], env=run_env(repo_root, **env), capture_output=True, text=True, timeout=60
    )


def test_preview_spring_forward_midnight(repo_root: Path) -> None:
    result = maintd(
        "preview", "0 0 * * *", "--timezone", "Europe/Berlin", "--after", "2026-03-28T12:00:00+00:00", "--count", "3",
        repo_root=repo_root,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "2026-03-29T00:00:00+01:00",
        "2026-03-30T00:00:00+02:00",
        "2026-03-31T00:00:00+02:00",
    ]


def test_preview_fall_back_half_past_two_runs_once(repo_root: Path) -> None:
    result = maintd(
        "preview", "30 2 * * *", "--timezone", "Europe/Berlin", "--after", "2026-10-24T12:00:00+00:00", "--count", "3",
        repo_root=repo_root,
    )
    assert result.stdout.splitlines() == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
        "2026-10-27T02:30:00+01:00",
    ]


def test_preview_rejects_a_bad_expression(repo_root: Path) -> None:
    result = maintd("preview", "61 * * * *", repo_root=repo_root)
    assert result.returncode == 64
    assert result.stdout == ""
    assert result.stderr.strip() == "maintd preview: invalid cron expression '61 * * * *': minute must be 0-59"


def test_token_prints_lines_to_paste(repo_root: Path) -> None:
    result = maintd("token", "--name", "alice", "--role", "viewer", repo_root=repo_root)
    assert result.returncode == 0
    token = result.stdout.splitlines()[1].removeprefix("# ")
    entry = tomllib.loads(result.stdout)["admin"]["tokens"][0]
    assert entry == {"name": "alice", "role": "viewer", "sha256": hashlib.sha256(token.encode()).hexdigest()}
    assert maintd("token", repo_root=repo_root).stdout != result.stdout  # fresh every time


def test_admin_client_commands(start_daemon: Any, db_dsn: str, repo_root: Path) -> None:
    daemon = start_daemon(
        '[jobs.ping]\ntask = "sql"\nschedule = "@daily"\n[jobs.ping.params]\nsql = "SELECT 1"\n'
        '[jobs.bad]\ntask = "tests.tasks:fail"\nschedule = "@daily"\n',
        dsn=db_dsn,
    )
    url = ["--url", daemon.url]
    token = {"MAINTD_TOKEN": daemon.operator_token}

    ok = maintd("trigger", "ping", "--wait", *url, repo_root=repo_root, **token)
    assert ok.returncode == 0, ok.stderr
    assert "succeeded" in ok.stdout and '"rows": 1' in ok.stdout

    failed = maintd("trigger", "bad", "--wait", *url, repo_root=repo_root, **token)
    assert failed.returncode == 1
    assert "failed" in failed.stdout and "RuntimeError: boom" in failed.stderr

    jobs = json.loads(maintd("jobs", "--json", *url, repo_root=repo_root, **token).stdout)
    assert {j["id"]: j["last_run"]["status"] for j in jobs} == {"ping": "succeeded", "bad": "failed"}

    table = maintd("runs", "--job", "ping", *url, repo_root=repo_root, **token).stdout.splitlines()
    assert table[0].split()[:4] == ["id", "job_id", "trigger", "status"]
    assert table[1].split()[1:4] == ["ping", "manual", "succeeded"]

    refused = maintd("jobs", *url, repo_root=repo_root)
    assert refused.returncode == 1 and "401" in refused.stderr and "MAINTD_TOKEN" in refused.stderr
