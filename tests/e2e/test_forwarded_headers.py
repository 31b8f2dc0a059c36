"""X-Forwarded-For from a client that is not a trusted proxy changes nothing: the audit log keeps the peer's address."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import IDLE_SQL_JOB

pytestmark = pytest.mark.e2e


def test_a_spoofed_forwarded_for_from_loopback_is_not_the_audited_client(start_daemon: Any, db_dsn: str) -> None:
    daemon = start_daemon(IDLE_SQL_JOB, dsn=db_dsn)  # [server] trusted_proxies not set: nobody is trusted
    spoofed = {"X-Forwarded-For": "198.51.100.66", "X-Forwarded-Proto": "https"}
    with daemon.operator() as http:
        assert http.post("/admin/jobs/tick/pause", headers=spoofed).status_code == 200
        [row] = http.get("/admin/audit").json()
    assert (row["principal"], row["action"], row["target"], row["client"]) == ("ops", "pause", "tick", "127.0.0.1")
