"""maintd beside an application whose own packages are named `jobs` and `scheduler`.

maintd installs under the one import name `maintd`, so such a project on the
path must not break any maintd command, `maintd --help` included.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import maintd_command, run_env

pytestmark = pytest.mark.e2e

CLEANUP = """
from pydantic import BaseModel

from maintd import JobContext, task


class Params(BaseModel):
    keep: int = 1


@task()
async def purge(ctx: JobContext, params: Params) -> dict:
    return {"package": __name__, "keep": params.keep}
"""

REPORT = """
from pydantic import BaseModel

from maintd import JobContext, task


class Params(BaseModel):
    pass


@task()
async def nightly(ctx: JobContext, params: Params) -> dict:
    async with ctx.pool.acquire() as conn:
        return {"package": __name__, "answer": await conn.fetchval("SELECT 42")}
"""

JOBS = """
[jobs.purge]
task = "jobs.cleanup:purge"
schedule = "@yearly"
[jobs.purge.params]
keep = 3

[jobs.report]
task = "scheduler.report:nightly"
schedule = "@yearly"

[jobs.tick]
task = "sql"
schedule = "@yearly"
[jobs.tick.params]
sql = "SELECT 1"
"""


@pytest.fixture
def application(tmp_path: Path) -> Path:
    """An application's source tree with packages named as maintd's folders are."""
    root = tmp_path / "app"
    for package, module, source in (("jobs", "cleanup", CLEANUP), ("scheduler", "report", REPORT)):
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
        (root / package / f"{module}.py").write_text(source)
    return root


def test_the_daemon_runs_tasks_from_the_applications_own_jobs_and_scheduler_packages(
    start_daemon: Any, db_dsn: str, application: Path, repo_root: Path
) -> None:
    env = {"PYTHONPATH": str(application)}
    helped = subprocess.run(
        [*maintd_command(), "--help"], env=run_env(repo_root, **env), capture_output=True, text=True, check=False
    )
    assert helped.returncode == 0 and "usage: maintd" in helped.stdout, helped.stderr
    daemon = start_daemon(JOBS, dsn=db_dsn, env=env)
    with daemon.operator() as http:
        started = {job: http.post(f"/admin/trigger/{job}").json()["run_id"] for job in ("purge", "report", "tick")}
    ended = {job: daemon.follow(run_id) for job, run_id in started.items()}
    assert {job: run["status"] for job, run in ended.items()} == dict.fromkeys(started, "succeeded"), ended
    assert ended["purge"]["result"] == {"package": "jobs.cleanup", "keep": 3}
    assert ended["report"]["result"] == {"package": "scheduler.report", "answer": 42}
    assert ended["tick"]["result"]["status"] == "SELECT 1"


def test_maintd_never_loads_a_module_under_its_old_name(application: Path, repo_root: Path) -> None:
    """Everything the daemon and a user's tests import, imported beside the application's packages."""
    code = (
        "import sys\n"
        "import maintd, maintd.scheduler.cli.main, maintd.scheduler.app, maintd.testing\n"
        "from maintd.jobs.registry import builtin_tasks\n"
        "builtin_tasks()\n"
        "import jobs.cleanup, scheduler.report\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] in ('jobs', 'scheduler', 'admin_api')))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], env=run_env(repo_root, PYTHONPATH=str(application)), cwd=application,
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    # Only the application's own modules go by those names.
    assert loaded.stdout.split() == ["['jobs',", "'jobs.cleanup',", "'scheduler',", "'scheduler.report']"]
