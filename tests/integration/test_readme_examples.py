"""The README's job and its frozen-clock test, run as a user would write them from it."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.MULTILINE | re.DOTALL)


async def test_the_readme_job_and_its_frozen_clock_test_pass(
    db_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    [job] = [block for block in python_blocks() if "@task()" in block]
    [test] = [block for block in python_blocks() if "frozen_engine(" in block]
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "maintenance.py").write_text(job)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mypkg", raising=False)
    (tmp_path / "test_purge.py").write_text(test)
    test_module: Any = importlib.import_module("test_purge")
    monkeypatch.delitem(sys.modules, "test_purge")

    import asyncpg

    conn = await asyncpg.connect(db_dsn)
    try:
        await conn.execute("CREATE SCHEMA app; CREATE TABLE app.audit (at timestamptz)")
        await conn.execute("INSERT INTO app.audit VALUES ('2026-06-01'), ('2026-06-13')")
        await test_module.test_purge_audit_runs_at_three(dsn=db_dsn)
        # keep_days = 7 on the frozen clock (2026-06-14 03:00): the older row went.
        assert [row["at"].date().isoformat() for row in await conn.fetch("SELECT at FROM app.audit")] == ["2026-06-13"]
    finally:
        await conn.close()
