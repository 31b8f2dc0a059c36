"""The admin commands are clients of a running daemon and nothing more.

They need a URL (``--url``, ``$MAINTD_URL``, else ``[server]`` read leniently
from the config) and a token (``$MAINTD_TOKEN``). A config the daemon runs fine
with, or one a SIGHUP rightly rejected while the daemon keeps running, must not
stop them: they never validate jobs or import tasks.
"""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import maintd_command, run_env

pytestmark = pytest.mark.e2e

# An operator's own task, importable by the daemon only (its PYTHONPATH), not by the client.
PURGE = """
from pydantic import BaseModel

from maintd import JobContext, task


class Params(BaseModel):
    keep_days: int = 30


@task()
async def purge_audit(ctx: JobContext, params: Params) -> dict:
    return {"keep_days": params.keep_days}
"""

JOBS = """
[jobs.purge_audit]
task = "mypkg.maintenance:purge_audit"
schedule = "@yearly"

[jobs.nightly]
task = "sql"
schedule = "0 3 * * *"
[jobs.nightly.params]
sql = "SELECT 1"
"""


def client(*args: str, cwd: Path, repo_root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """An admin command as an operator runs it from ``cwd``."""
    return subprocess.run(
        [*maintd_command(), *args], env=run_env(repo_root, **env), cwd=cwd, capture_output=True, text=True, timeout=60
    )


def config_of(daemon: Any, tmp_path: Path) -> Path:
    return tmp_path / f"config-{daemon.url.rsplit(':', 1)[1]}.toml"


@pytest.fixture
def mypkg(tmp_path: Path) -> Path:
    """A directory holding the operator's package ``mypkg``."""
    root = tmp_path / "app"
    (root / "mypkg").mkdir(parents=True)
    (root / "mypkg" / "__init__.py").write_text("")
    (root / "mypkg" / "maintenance.py").write_text(PURGE)
    return root


def test_jobs_and_trigger_need_not_import_the_operators_task_module(
    start_daemon: Any, db_dsn: str, tmp_path: Path, mypkg: Path, repo_root: Path
) -> None:
    daemon = start_daemon(JOBS, dsn=db_dsn, env={"PYTHONPATH": f"{repo_root}:{mypkg}"})
    config = config_of(daemon, tmp_path)
    token = {"MAINTD_TOKEN": daemon.operator_token}

    # The URL from the config's [server]; mypkg is not on the client's path.
    listed = client("jobs", "--config", str(config), cwd=tmp_path, repo_root=repo_root, **token)
    assert listed.returncode == 0, listed.stderr
    assert sorted(line.split()[0] for line in listed.stdout.splitlines()[1:]) == ["nightly", "purge_audit"]
    triggered = client(
        "trigger", "purge_audit", "--wait", "--config", str(config), cwd=tmp_path, repo_root=repo_root, **token
    )
    assert triggered.returncode == 0, triggered.stderr
    assert re.match(r"run \d+ purge_audit succeeded", triggered.stdout)
    assert re.search(r"^  keep_days +30$", triggered.stdout, re.M)


def test_jobs_and_trigger_work_while_the_daemon_runs_on_after_a_rejected_reload(
    start_daemon: Any, db_dsn: str, tmp_path: Path, mypkg: Path, repo_root: Path
) -> None:
    daemon = start_daemon(JOBS, dsn=db_dsn, env={"PYTHONPATH": f"{repo_root}:{mypkg}"})
    config = config_of(daemon, tmp_path)
    config.write_text(config.read_text().replace('schedule = "0 3 * * *"', 'shedule = "61 * * * *"'))
    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_for_event(lambda e: e.get("event") == "config_reload_rejected")
    token = {"MAINTD_TOKEN": daemon.operator_token}

    # From the config's directory, as ./config.toml by default, and by $MAINTD_CONFIG.
    (tmp_path / "config.toml").write_text(config.read_text())
    listed = client("jobs", cwd=tmp_path, repo_root=repo_root, **token)
    assert listed.returncode == 0, listed.stderr
    assert "nightly" in listed.stdout and listed.stderr == ""
    triggered = client("trigger", "nightly", cwd=tmp_path, repo_root=repo_root, MAINTD_CONFIG=str(config), **token)
    assert triggered.returncode == 0, triggered.stderr
    run_id = int(re.match(r"run (\d+) of nightly started", triggered.stdout)[1])  # type: ignore[index]
    assert daemon.follow(run_id)["status"] == "succeeded"


def test_the_url_from_the_environment_or_the_command_line_needs_no_config(
    start_daemon: Any, db_dsn: str, tmp_path: Path, repo_root: Path
) -> None:
    daemon = start_daemon(JOBS.split("[jobs.nightly]")[0].replace("mypkg.maintenance:purge_audit", "sql")
                          + '[jobs.purge_audit.params]\nsql = "SELECT 1"\n', dsn=db_dsn)  # fmt: skip
    elsewhere = tmp_path / "elsewhere"  # no config.toml here
    elsewhere.mkdir()
    token = {"MAINTD_TOKEN": daemon.viewer_token}

    by_env = client("jobs", "--json", cwd=elsewhere, repo_root=repo_root, MAINTD_URL=daemon.url, **token)
    assert by_env.returncode == 0, by_env.stderr
    assert '"id": "purge_audit"' in by_env.stdout
    # --url first: a $MAINTD_URL nobody answers at is not asked.
    unused = "http://127.0.0.1:9"
    by_flag = client("jobs", "--url", daemon.url, cwd=elsewhere, repo_root=repo_root, MAINTD_URL=unused, **token)
    assert by_flag.returncode == 0, by_flag.stderr
    nowhere = client("jobs", cwd=elsewhere, repo_root=repo_root, **token)
    assert nowhere.returncode == 78
    assert nowhere.stderr.startswith("maintd jobs: ") and "--url" in nowhere.stderr and "MAINTD_URL" in nowhere.stderr
    assert len(nowhere.stderr.splitlines()) == 1
