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

from tests.e2e.conftest import check_config, maintd_command, run_env

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


PURGE_AUDIT = """
from pydantic import BaseModel

from maintd import JobContext, task


class Params(BaseModel):
    keep_days: int = 30


@task()
async def purge_audit(ctx: JobContext, params: Params) -> dict:
    async with ctx.pool.acquire() as conn:
        return {"module": __name__, "keep_days": params.keep_days, "answer": await conn.fetchval("SELECT 42")}
"""

MYPKG_JOB = """
[jobs.purge_audit]
task = "mypkg.maintenance:purge_audit"
schedule = "@yearly"
[jobs.purge_audit.params]
keep_days = 7
"""


def test_import_paths_make_the_operators_own_package_importable(
    start_daemon: Any, db_dsn: str, tmp_path: Path, repo_root: Path
) -> None:
    """mypkg lives beside the config, not on the daemon's path nor in its working directory."""
    (tmp_path / "app" / "mypkg").mkdir(parents=True)
    (tmp_path / "app" / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "app" / "mypkg" / "maintenance.py").write_text(PURGE_AUDIT)
    daemon = start_daemon(MYPKG_JOB, dsn=db_dsn, scheduler_toml='shutdown_grace = "5s"\nimport_paths = ["app"]\n')
    with daemon.operator() as http:
        run_id = http.post("/admin/trigger/purge_audit").json()["run_id"]
    run = daemon.follow(run_id)
    assert run["status"] == "succeeded", run["error"]
    assert run["result"] == {"module": "mypkg.maintenance", "keep_days": 7, "answer": 42}

    config = tmp_path / f"config-{daemon.url.rsplit(':', 1)[1]}.toml"
    checked = check_config(config, repo_root)
    assert checked.returncode == 0, checked.stderr
    once = subprocess.run(
        [*maintd_command(), "run-job", "purge_audit", "--config", str(config), "--json"],
        env=run_env(repo_root), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert once.returncode == 0, once.stderr
    assert '"module": "mypkg.maintenance"' in once.stdout

    # Without the key the package is not found: the daemon's cwd is not where the config is.
    config.write_text(config.read_text().replace('import_paths = ["app"]\n', ""))
    unset = check_config(config, repo_root)
    assert unset.returncode == 78 and "No module named 'mypkg'" in unset.stderr
    config.write_text(config.read_text().replace("[scheduler]\n", '[scheduler]\nimport_paths = ["app", "lib"]\n'))
    missing = check_config(config, repo_root)
    assert missing.returncode == 78
    assert missing.stderr.splitlines() == [f"scheduler.import_paths[1]: no such directory: {tmp_path / 'lib'}"]
