"""Recovery after a database failure (scheduler/engine/recovery.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import structlog

from maintd.scheduler.engine.failure_log import FailureLog
from maintd.scheduler.engine.recovery import Recovery

pytestmark = pytest.mark.unit

T = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)


class Recorder:
    """The recovery's own step: records what it was asked, fails while told to."""

    def __init__(self) -> None:
        self.asked: list[tuple[datetime, datetime | None]] = []
        self.failing = False
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, until: datetime, since: datetime | None) -> None:
        self.asked.append((until, since))
        await self.gate.wait()
        if self.failing:
            raise ConnectionRefusedError("database away")


def recovery_with(step: Recorder) -> Recovery:
    log = structlog.get_logger("test")
    return Recovery(FailureLog(log), log, step)


async def test_no_failure_no_recovery() -> None:
    step = Recorder()
    assert await recovery_with(step).recovered(T)
    assert step.asked == []


async def test_recovery_judges_from_the_earliest_failure_and_retries_until_the_database_answers() -> None:
    step = Recorder()
    recovery = recovery_with(step)
    recovery.failed(T)
    recovery.failed(T - timedelta(minutes=5))
    recovery.failed(T + timedelta(minutes=5))

    step.failing = True
    assert not await recovery.recovered(T + timedelta(minutes=10))
    assert not recovery.ok
    step.failing = False
    assert await recovery.recovered(T + timedelta(minutes=11))

    assert step.asked == [
        (T + timedelta(minutes=10), T - timedelta(minutes=5)),
        (T + timedelta(minutes=11), T - timedelta(minutes=5)),
    ]
    assert (recovery.ok, recovery.outage_since) == (True, None)
    assert await recovery.recovered(T + timedelta(minutes=12))
    assert len(step.asked) == 2


async def test_callers_waiting_on_one_recovery_share_it() -> None:
    step = Recorder()
    step.gate.clear()
    recovery = recovery_with(step)
    recovery.failed(T)
    waiting = [asyncio.create_task(recovery.recovered(T)) for _ in range(3)]
    await asyncio.sleep(0)
    step.gate.set()
    assert await asyncio.gather(*waiting) == [True, True, True]
    assert len(step.asked) == 1
