"""Database failures during an outage: the first of each kind logged, the rest summed up."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from maintd.scheduler.engine.failure_log import FailureLog

pytestmark = pytest.mark.unit


class Lines:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **fields: self.lines.append((level, event, fields))


async def test_each_kind_is_logged_once_then_summed_up_until_the_database_answers() -> None:
    lines = Lines()
    failures = FailureLog(lines, every_s=0.05)
    for _ in range(10):
        failures.failed("claim_ahead_failed", error="refused")
    failures.failed("fires_not_claimed", level="error", fires=1)
    assert [(level, event) for level, event, _ in lines.lines] == [
        ("warning", "claim_ahead_failed"),
        ("error", "fires_not_claimed"),
    ]
    await asyncio.sleep(0.06)
    failures.failed("claim_ahead_failed", error="refused")
    level, event, fields = lines.lines[-1]
    assert (level, event, fields["held_back"]) == ("warning", "database_failures_continue", {"claim_ahead_failed": 10})
    failures.failed("claim_ahead_failed", error="refused")
    assert failures.recovered() == {"claim_ahead_failed": 1}
    # A new outage is news again.
    failures.failed("claim_ahead_failed", error="refused")
    assert lines.lines[-1][1] == "claim_ahead_failed" and len(lines.lines) == 4
