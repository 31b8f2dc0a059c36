"""The command line loads only what a command needs: ``maintd --help``, ``preview`` and the admin
commands never import the daemon's web framework, database driver, scheduler or models.

What it costs in time is ``bench/cli.py``'s to measure; this guards the cause.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import free_port, run_env

pytestmark = pytest.mark.e2e

# The daemon's parts, each a tenth of a second or more to import.
DAEMON_ONLY = ("fastapi", "starlette", "pydantic", "asyncpg", "apscheduler", "structlog", "uvicorn", "httpx",
               "prometheus_client", "jinja2", "aiosmtplib")  # fmt: skip

# Runs a command through the console script's entry point, then reports what it imported.
PROBE = """
import json, sys
from maintd.scheduler.cli.main import main
try:
    status = main(sys.argv[1:])
except SystemExit as exc:
    status = exc.code
print(json.dumps({"status": status, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def imported(repo_root: Path, *argv: str) -> tuple[int, set[str]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], env=run_env(repo_root), capture_output=True, text=True, timeout=60
    )
    report = json.loads(done.stderr.splitlines()[-1])
    return report["status"], {name.split(".")[0] for name in report["modules"]}


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["jobs", "--help"], ["trigger", "--help"], ["run", "--help"], ["preview", "*/5 * * * *"],
     ["preview", "--help"], ["rerun", "--help"], ["replay", "--help"]],
)  # fmt: skip
def test_help_and_preview_load_none_of_the_daemon(repo_root: Path, argv: list[str]) -> None:
    status, modules = imported(repo_root, *argv)
    assert status == 0
    assert modules.isdisjoint(DAEMON_ONLY), sorted(modules & set(DAEMON_ONLY))


@pytest.mark.parametrize(
    "command",
    ["jobs", "runs", "trigger nightly", "logs 1", "cancel 1", "pause a", "resume a",
     "trigger nightly --param batch_size=500 --reason why --dry-run --idempotency-key k", "rerun 1 --no-dry-run",
     "replay nightly --from 2026-05-01T00:00:00+00:00 --to 2026-05-08T00:00:00+00:00 --dry-run"],
)  # fmt: skip
def test_admin_commands_load_none_of_the_daemon(repo_root: Path, tmp_path: Path, command: str) -> None:
    # A config the daemon would refuse (its task cannot be imported here), and nobody listening:
    # the command gets as far as the connection.
    config = tmp_path / "config.toml"
    config.write_text(f'[server]\nport = {free_port()}\n[jobs.nightly]\ntask = "mypkg.tasks:purge"\nschedule = "61"\n')
    status, modules = imported(repo_root, *command.split(), "--config", str(config))
    assert status == 69
    assert modules.isdisjoint(DAEMON_ONLY), sorted(modules & set(DAEMON_ONLY))
