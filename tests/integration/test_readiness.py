"""/readyz while the database is down: the open answer names the part, the log holds the error."""

from __future__ import annotations

import pytest

from maintd.scheduler.store.run_store import RunStore
from tests.configs import make_config, sql_job
from tests.connections import allow_connections
from tests.engines import StartEngine

pytestmark = pytest.mark.integration


async def test_readiness_names_the_database_without_its_error_and_logs_the_error_once(
    start_engine: StartEngine, store: RunStore, pg_admin_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = await start_engine(make_config({"tick": sql_job()}))
    database = store.dsn.rsplit("/", 1)[1]
    await allow_connections(pg_admin_dsn, database, allowed=False)
    try:
        answers = [await engine.admin.readiness() for _ in range(3)]
    finally:
        await allow_connections(pg_admin_dsn, database, allowed=True)
    assert answers == [["database: not answering"]] * 3
    logged = [
        r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == "readiness_database_failed"
    ]
    assert len(logged) == 1
    assert logged[0]["error"]  # the exception, for the operator
    assert await engine.admin.readiness() == []
