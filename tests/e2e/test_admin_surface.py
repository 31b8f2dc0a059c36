"""The admin surface of the real daemon: failed logins, viewers' refused mutations, /readyz while the database is down."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.connections import allow_connections
from tests.e2e.conftest import IDLE_SQL_JOB

pytestmark = pytest.mark.e2e


def auth_failures(metrics: str, reason: str) -> float:
    prefix = f'maintd_auth_failures_total{{reason="{reason}"}} '
    [line] = [line for line in metrics.splitlines() if line.startswith(prefix)]
    return float(line.removeprefix(prefix))


def test_failed_logins_are_counted_logged_and_limited_and_a_valid_token_still_works(
    start_daemon: Any, db_dsn: str
) -> None:
    daemon = start_daemon(IDLE_SQL_JOB, dsn=db_dsn)
    with daemon.client("guess-0123456789") as guesser, daemon.operator() as operator:
        statuses = [guesser.get("/admin/jobs").status_code for _ in range(20)]
        limited = guesser.get("/admin/jobs")
        assert operator.get("/admin/jobs").status_code == 200
        metrics = operator.get("/metrics").text
    assert statuses == [401] * 20
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert auth_failures(metrics, "invalid") == 21
    assert auth_failures(metrics, "missing") == 0
    limited_event = daemon.wait_for_event(lambda e: e.get("event") == "auth_client_limited")
    assert limited_event["client"] == "127.0.0.1"
    logged = [e for e in daemon.events if str(e.get("event", "")).startswith("auth_")]
    assert [e["event"] for e in logged] == ["auth_failed", "auth_client_limited"]
    assert "guess-0123456789" not in str(daemon.events)


def test_a_viewers_refused_mutation_is_in_the_audit_log_as_denied(start_daemon: Any, db_dsn: str) -> None:
    daemon = start_daemon(IDLE_SQL_JOB, dsn=db_dsn)
    with daemon.client(daemon.viewer_token) as viewer:
        refused = [viewer.post(path).status_code for path in ("/admin/jobs/tick/pause", "/admin/trigger/tick")]
        refused.append(viewer.post("/admin/runs/7/cancel").status_code)
        audit = viewer.get("/admin/audit").json()
        job = viewer.get("/admin/jobs/tick").json()
    assert refused == [403, 403, 403]
    assert [(a["principal"], a["action"], a["target"], a["client"], a["detail"]) for a in audit] == [
        (
            "watcher",
            "cancel",
            "run:7",
            "127.0.0.1",
            {"outcome": "denied", "reason": "role viewer; cancel needs the operator role"},
        ),
        (
            "watcher",
            "trigger",
            "tick",
            "127.0.0.1",
            {"outcome": "denied", "reason": "role viewer; trigger needs the operator role"},
        ),
        (
            "watcher",
            "pause",
            "tick",
            "127.0.0.1",
            {"outcome": "denied", "reason": "role viewer; pause needs the operator role"},
        ),
    ]
    assert job["paused"] is False and job["last_run"] is None


def test_readyz_names_the_database_not_its_address_while_it_is_down(
    start_daemon: Any, db_dsn: str, pg_admin_dsn: str
) -> None:
    daemon = start_daemon(IDLE_SQL_JOB, dsn=db_dsn)
    database = db_dsn.rsplit("/", 1)[1]
    asyncio.run(allow_connections(pg_admin_dsn, database, allowed=False))
    try:
        with daemon.client() as anyone:
            response = anyone.get("/readyz")
    finally:
        asyncio.run(allow_connections(pg_admin_dsn, database, allowed=True))
    assert response.status_code == 503
    assert response.json() == {"status": "not ready", "reasons": ["database: not answering"]}
    event = daemon.wait_for_event(lambda e: e.get("event") == "readiness_database_failed")
    assert event["error"]
