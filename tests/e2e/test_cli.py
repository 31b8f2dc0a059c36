"""The command line as a user runs it: preview, token, and the admin client against a live daemon."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import signal
import socket
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.e2e.conftest import free_port, maintd_command, run_env

pytestmark = pytest.mark.e2e


def maintd(*args: str, repo_root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*maintd_command(), *args], env=run_env(repo_root, **env), capture_output=True, text=True, timeout=60
    )


@contextlib.contextmanager
def maintd_process(*args: str, repo_root: Path, **env: str) -> Iterator[subprocess.Popen[str]]:
    """``maintd`` with its stdout and stderr piped, for a test that reacts to its output as it comes;
    killed if still running at the end, its pipes closed."""
    with subprocess.Popen(
        [*maintd_command(), *args],
        env=run_env(repo_root, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_as_from_a_terminal,
    ) as process:
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()


def _as_from_a_terminal() -> None:
    # Ctrl-C works as in a terminal even when a shell started these tests in the background:
    # it ignores SIGINT there, and every process it starts inherits that.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def read_until(stream: Any, pattern: str) -> tuple[re.Match[str], list[str]]:
    """Read lines until one matches ``pattern``; return the match and the lines read."""
    lines = []
    for line in stream:
        lines.append(line)
        if match := re.search(pattern, line):
            return match, lines
    raise AssertionError(f"the stream ended without a line matching {pattern!r}: {lines}")


def notify(dsn: str, channel: str = "test_gate") -> None:
    """Open the gate of a tests.tasks:gated_progress run."""

    async def send() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f"NOTIFY {channel}")
        finally:
            await conn.close()

    asyncio.run(send())


def fetch(dsn: str, query: str, *args: Any) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(dsn)
        try:
            return [dict(row) for row in await conn.fetch(query, *args)]
        finally:
            await conn.close()

    return asyncio.run(run())


PING_AND_BAD = (
    '[jobs.ping]\ntask = "sql"\nschedule = "@daily"\ntimezone = "Europe/Berlin"\n[jobs.ping.params]\nsql = "SELECT 1"\n'
    '[jobs.bad]\ntask = "tests.tasks:fail"\nschedule = "@daily"\n'
)
SLEEPY = '[jobs.sleepy]\ntask = "tests.tasks:sleep"\nschedule = "@yearly"\n[jobs.sleepy.params]\nseconds = 60\n'
STEPS = '[jobs.steps]\ntask = "tests.tasks:gated_progress"\nschedule = "@yearly"\n'


def test_preview_spring_forward_midnight(repo_root: Path) -> None:
    result = maintd(
        "preview",
        "0 0 * * *",
        "--timezone",
        "Europe/Berlin",
        "--after",
        "2026-03-28T12:00:00+00:00",
        "--count",
        "3",
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
        "preview",
        "30 2 * * *",
        "--timezone",
        "Europe/Berlin",
        "--after",
        "2026-10-24T12:00:00+00:00",
        "--count",
        "3",
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


def test_token_prints_the_secret_apart_from_the_lines_to_paste(repo_root: Path) -> None:
    result = maintd("token", "--name", 'al"ice', "--role", "viewer", repo_root=repo_root)
    assert result.returncode == 0
    intro, token, blank, paste, *block = result.stdout.splitlines()
    assert "$MAINTD_TOKEN" in intro and blank == "" and paste.startswith("Paste these lines into config.toml")
    # What the README says to paste holds the token's sha256 and never the token.
    assert block[0] == "[[admin.tokens]]" and len(block) == 4
    assert token not in "\n".join(block)
    entry = tomllib.loads("\n".join(block))["admin"]["tokens"][0]
    assert entry == {"name": 'al"ice', "role": "viewer", "sha256": hashlib.sha256(token.encode()).hexdigest()}
    assert maintd("token", repo_root=repo_root).stdout != result.stdout  # fresh every time


def test_trigger_wait_exit_status_summary_and_tables(start_daemon: Any, db_dsn: str, repo_root: Path) -> None:
    daemon = start_daemon(
        PING_AND_BAD + '[jobs.idle]\ntask = "sql"\nschedule = "@hourly"\n[jobs.idle.params]\nsql = "SELECT 1"\n',
        dsn=db_dsn,
    )
    url = ["--url", daemon.url]
    token = {"MAINTD_TOKEN": daemon.operator_token}

    ok = maintd("trigger", "ping", "--wait", *url, repo_root=repo_root, **token)
    assert ok.returncode == 0, ok.stderr
    assert re.match(r"run \d+ ping succeeded in \S+\n", ok.stdout)
    assert re.search(r"^  rows +1$", ok.stdout, re.M)

    failed = maintd("trigger", "bad", "--wait", *url, repo_root=repo_root, **token)
    assert failed.returncode == 1
    assert re.match(r"run \d+ bad failed", failed.stdout) and "RuntimeError: boom" in failed.stderr
    assert maintd("pause", "idle", *url, repo_root=repo_root, **token).returncode == 0

    jobs = maintd("jobs", *url, repo_root=repo_root, **token)
    assert jobs.returncode == 0 and "\x1b" not in jobs.stdout  # no colour into a pipe
    header, *rows = jobs.stdout.splitlines()
    assert header.split() == ["JOB", "SCHEDULE", "NEXT", "LAST", "STATE"]
    by_job = {row.split()[0]: row for row in rows}
    assert "@daily (Europe/Berlin)" in by_job["ping"] and re.search(r"\(in \d+[hm]", by_job["ping"])
    assert re.search(r"succeeded (just now|\d+s ago) \(\S+\)", by_job["ping"]) and by_job["ping"].endswith("ok")
    assert "failed" in by_job["bad"] and by_job["bad"].endswith("failing")
    assert "never run" in by_job["idle"] and by_job["idle"].endswith("paused")
    as_json = json.loads(maintd("jobs", "--json", *url, repo_root=repo_root, **token).stdout)
    assert {j["id"]: j["last_run"] and j["last_run"]["status"] for j in as_json} == {
        "ping": "succeeded",
        "bad": "failed",
        "idle": None,
    }

    runs = maintd("runs", "--job", "ping", *url, repo_root=repo_root, **token).stdout.splitlines()
    assert runs[0].split() == ["RUN", "JOB", "TRIGGER", "STATUS", "SCHEDULED", "STARTED", "DURATION", "NODE", "BY"]
    assert runs[1].split()[1:4] == ["ping", "manual", "succeeded"] and runs[1].split()[-1] == "ops"
    assert len(runs) == 2
    failed_runs = maintd("runs", "--status", "failed", *url, repo_root=repo_root, **token).stdout.splitlines()
    assert [line.split()[1] for line in failed_runs[1:]] == ["bad"]

    refused = maintd("jobs", *url, repo_root=repo_root)
    assert refused.returncode == 1 and "401" in refused.stderr and "MAINTD_TOKEN" in refused.stderr
    assert len(refused.stderr.splitlines()) == 1
    bogus = maintd("runs", "--status", "bogus", *url, repo_root=repo_root, **token)
    assert bogus.returncode == 1 and bogus.stderr.startswith("maintd runs: 422: status: ")
    assert len(bogus.stderr.splitlines()) == 1
    unknown = maintd("trigger", "nope", "--wait", *url, repo_root=repo_root, **token)
    assert unknown.returncode == 1 and unknown.stderr.startswith("maintd trigger: 404")


def test_unreachable_daemon_exits_69(repo_root: Path) -> None:
    result = maintd("trigger", "ping", "--wait", "--url", f"http://127.0.0.1:{free_port()}", repo_root=repo_root)
    assert result.returncode == 69
    assert result.stderr.startswith("maintd trigger: cannot reach the daemon") and len(result.stderr.splitlines()) == 1


def test_trigger_wait_prints_one_line_per_progress_change_when_piped(
    start_daemon: Any, db_dsn: str, repo_root: Path
) -> None:
    daemon = start_daemon(STEPS, dsn=db_dsn)
    with maintd_process(
        "trigger", "steps", "--wait", "--url", daemon.url, repo_root=repo_root, MAINTD_TOKEN=daemon.operator_token
    ) as client:
        assert client.stderr is not None and client.stdout is not None
        seen = []
        for step in (1, 2, 3):
            _, lines = read_until(client.stderr, rf"step={step}\b")
            seen += lines
            notify(db_dsn)
        out, err = client.communicate(timeout=30)
    assert client.returncode == 0, err
    progress = [line.rstrip("\n") for line in seen + err.splitlines() if "step=" in line]
    assert [re.search(r"step=(\d)", line).group(1) for line in progress] == ["1", "2", "3"]  # type: ignore[union-attr]
    assert all(re.fullmatch(r"run \d+ steps running \S+  (of=3 step=\d|step=\d of=3)", line) for line in progress)
    assert "\r" not in "".join(seen) + err
    assert re.match(r"run \d+ steps succeeded", out)


def test_trigger_wait_timeout_and_ctrl_c_leave_the_run_going(start_daemon: Any, db_dsn: str, repo_root: Path) -> None:
    daemon = start_daemon(SLEEPY, dsn=db_dsn)
    url, token = ["--url", daemon.url], {"MAINTD_TOKEN": daemon.operator_token}

    timed_out = maintd("trigger", "sleepy", "--wait", "--timeout", "500ms", *url, repo_root=repo_root, **token)
    assert timed_out.returncode == 124
    run_id = int(re.search(r"maintd cancel (\d+)", timed_out.stderr).group(1))  # type: ignore[union-attr]
    assert maintd("cancel", str(run_id), *url, repo_root=repo_root, **token).returncode == 0
    assert daemon.follow(run_id)["status"] == "cancelled"

    with maintd_process("trigger", "sleepy", "--wait", *url, repo_root=repo_root, **token) as client:
        match, _ = read_until(client.stderr, r"run (\d+) sleepy running")
        client.send_signal(signal.SIGINT)
        _, err = client.communicate(timeout=30)
    assert client.returncode == 130
    assert f"maintd cancel {match.group(1)}" in err
    with daemon.operator() as http:
        assert http.get(f"/admin/runs/{match.group(1)}").json()["status"] == "running"


def test_logs_prints_and_follows_a_runs_lines(start_daemon: Any, db_dsn: str, repo_root: Path) -> None:
    daemon = start_daemon(STEPS + PING_AND_BAD, dsn=db_dsn)
    url, token = ["--url", daemon.url], {"MAINTD_TOKEN": daemon.operator_token}
    run_id = int(
        re.match(r"run (\d+)", maintd("trigger", "ping", "--wait", *url, repo_root=repo_root, **token).stdout).group(1)
    )  # type: ignore[union-attr]

    logs = maintd("logs", str(run_id), *url, repo_root=repo_root, **token)
    assert logs.returncode == 0, logs.stderr
    events = [line.split()[3] for line in logs.stdout.splitlines()]
    assert events[0] == "run_started" and events[-1] == "run_succeeded"
    as_json = [
        json.loads(line)
        for line in maintd("logs", str(run_id), "--json", *url, repo_root=repo_root, **token).stdout.splitlines()
    ]
    assert [line["event"] for line in as_json] == events and as_json[0]["seq"] == 1

    with daemon.operator() as http:
        steps_run = http.post("/admin/trigger/steps").json()["run_id"]
    with maintd_process("logs", str(steps_run), "--follow", *url, repo_root=repo_root, **token) as follower:
        for step in (1, 2, 3):
            read_until(follower.stdout, rf"step_reached +step={step}")
            notify(db_dsn)
        out, err = follower.communicate(timeout=30)
    assert follower.returncode == 0, err
    assert "run_succeeded" in out


def write_config(path: Path, dsn: str, jobs_toml: str) -> Path:
    path.write_text(f'[server]\nport = {free_port()}\n[database]\ndsn = "{dsn}"\n{jobs_toml}')
    return path


def test_run_job_runs_once_without_the_daemon_and_records_the_run(tmp_path: Path, db_dsn: str, repo_root: Path) -> None:
    config = write_config(tmp_path / "config.toml", db_dsn, PING_AND_BAD)

    ok = maintd("run-job", "ping", "--config", str(config), repo_root=repo_root)
    assert ok.returncode == 0, ok.stderr
    assert re.match(r"run \d+ ping succeeded", ok.stdout) and re.search(r"^  rows +1$", ok.stdout, re.M)
    assert "run_started" in ok.stderr  # the job's logs go to stderr
    failed = maintd("run-job", "bad", "--config", str(config), "--json", repo_root=repo_root)
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["status"] == "failed" and "RuntimeError: boom" in failed.stderr

    rows = fetch(db_dsn, "SELECT job_id, trigger, status, triggered_by, node FROM maintd.runs ORDER BY id")
    assert [(r["job_id"], r["trigger"], r["status"]) for r in rows] == [
        ("ping", "manual", "succeeded"),
        ("bad", "manual", "failed"),
    ]
    assert all(
        r["triggered_by"].startswith("run-job:") and r["node"].startswith(f"{socket.gethostname()}:") for r in rows
    )
    unknown = maintd("run-job", "nope", "--config", str(config), repo_root=repo_root)
    assert unknown.returncode == 1 and unknown.stderr.strip() == "maintd run-job: no job 'nope'"


def test_run_job_ctrl_c_cancels_the_run(tmp_path: Path, db_dsn: str, repo_root: Path) -> None:
    config = write_config(tmp_path / "config.toml", db_dsn, SLEEPY)
    with maintd_process("run-job", "sleepy", "--config", str(config), repo_root=repo_root) as process:
        match, _ = read_until(process.stderr, r"run (\d+) sleepy running")
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert re.match(rf"run {match.group(1)} sleepy cancelled", out)
    [row] = fetch(db_dsn, "SELECT status, error FROM maintd.runs WHERE id = $1", int(match.group(1)))
    assert row["status"] == "cancelled" and row["error"].startswith("cancelled by run-job:")


def test_run_job_refuses_while_the_daemon_runs_the_job(
    start_daemon: Any, tmp_path: Path, db_dsn: str, repo_root: Path
) -> None:
    daemon = start_daemon(SLEEPY, dsn=db_dsn)
    with daemon.operator() as http:
        busy = http.post("/admin/trigger/sleepy").json()["run_id"]
    config = write_config(tmp_path / "config.toml", db_dsn, SLEEPY)
    refused = maintd("run-job", "sleepy", "--config", str(config), repo_root=repo_root)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1] == (
        f"maintd run-job: job 'sleepy' is already running (run {busy}) and its overlap is 'forbid'"
    )
