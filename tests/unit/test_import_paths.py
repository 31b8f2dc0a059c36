"""``[scheduler] import_paths``: an operator's task package beside the config becomes importable."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

from maintd.scheduler.config.model import ConfigError, load_config

pytestmark = pytest.mark.unit

TASK = """
from pydantic import BaseModel

from maintd import JobContext, task


class Params(BaseModel):
    keep: int


@task()
async def purge(ctx: JobContext, params: Params) -> dict:
    return {"keep": params.keep}
"""


@pytest.fixture(autouse=True)
def own_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a test adds to sys.path goes when it ends."""
    monkeypatch.setattr(sys, "path", list(sys.path))


@pytest.fixture
def package(tmp_path: Path) -> str:
    """A task package under tmp_path/src/, named for this test alone (modules are cached by name)."""
    name = f"ops_{uuid.uuid4().hex[:8]}"
    (tmp_path / "src" / name).mkdir(parents=True)
    (tmp_path / "src" / name / "__init__.py").write_text("")
    (tmp_path / "src" / name / "tasks.py").write_text(TASK)
    return name


def config(tmp_path: Path, scheduler: str, package: str) -> Path:
    path = tmp_path / "etc" / "config.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(
        f"[scheduler]\n{scheduler}\n"
        f'[jobs.purge]\ntask = "{package}.tasks:purge"\nschedule = "@daily"\n[jobs.purge.params]\nkeep = 3\n'
    )
    return path


def test_a_directory_relative_to_the_config_comes_first_on_sys_path(tmp_path: Path, package: str) -> None:
    loaded = load_config(config(tmp_path, 'import_paths = ["../src"]', package))
    assert loaded.jobs["purge"].params.keep == 3  # type: ignore[attr-defined]
    assert loaded.scheduler.import_paths == ["../src"]
    assert sys.path[0] == str(tmp_path / "src")
    load_config(config(tmp_path, 'import_paths = ["../src"]', package))  # a reload adds it once
    assert sys.path.count(str(tmp_path / "src")) == 1


def test_without_it_the_package_is_not_found(tmp_path: Path, package: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(config(tmp_path, "", package))
    assert raised.value.problems == [
        f"jobs.purge.task: unknown task '{package}.tasks:purge': cannot import '{package}.tasks':"
        f" No module named '{package}'"
    ]


def test_a_missing_directory_is_a_problem_naming_the_key(tmp_path: Path, package: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(config(tmp_path, 'import_paths = ["../src", "../lib"]', package))
    # The directories that exist are used: only the missing one is a problem.
    assert raised.value.problems == [f"scheduler.import_paths[1]: no such directory: {tmp_path / 'lib'}"]


def test_it_is_a_list_of_strings(tmp_path: Path, package: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(config(tmp_path, 'import_paths = "../src"', package))
    assert raised.value.problems[0] == "scheduler.import_paths: input should be a valid list, got '../src'"
