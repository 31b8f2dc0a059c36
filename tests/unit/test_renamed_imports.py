"""A task module written before maintd moved under one import name gets a line naming the new import."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from maintd.scheduler.config.model import ConfigError, parse_config

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def task_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str) -> str:
    (tmp_path / "oldpkg").mkdir()
    (tmp_path / "oldpkg" / "__init__.py").write_text("")
    (tmp_path / "oldpkg" / "tasks.py").write_text(module)
    # The repository's own folders are on the tests' path (pytest puts its root there): a bare
    # `jobs` there would be maintd's code under its old name, which an installed maintd never is.
    monkeypatch.setattr(sys, "path", [str(tmp_path), *(p for p in sys.path if Path(p or ".").resolve() != REPO)])
    for name in [name for name in sys.modules if name.split(".")[0] in ("oldpkg", "jobs")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ConfigError) as raised:
        parse_config({"jobs": {"purge": {"task": "oldpkg.tasks:purge", "schedule": "@daily"}}})
    [problem] = raised.value.problems
    return problem


def test_an_import_of_the_old_jobs_package_names_the_new_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    problem = task_problem(tmp_path, monkeypatch, "from jobs import JobContext, task\n")
    assert problem.startswith("jobs.purge.task: unknown task 'oldpkg.tasks:purge': cannot import 'oldpkg.tasks'")
    assert "from maintd import task, JobContext" in problem


def test_the_users_own_jobs_package_is_not_mistaken_for_maintds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "__init__.py").write_text("CLEANUP = 'the application owns this package'\n")
    problem = task_problem(tmp_path, monkeypatch, "from jobs import task\n")
    assert "cannot import name 'task' from 'jobs'" in problem and "from maintd import task, JobContext" in problem


def test_an_unrelated_import_error_gets_no_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    problem = task_problem(tmp_path, monkeypatch, "import no_such_library\n")
    assert problem.endswith("No module named 'no_such_library'")
