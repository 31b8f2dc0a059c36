"""Idle means idle: what a heartbeat and a pass of the claims ahead cost depends on what
runs, not on how many jobs are configured.

Counted, not timed: with 10 and with 1,000 configured jobs (none due, the same few
with a dead man's switch or retries), the same store calls, the same number of
values through them (job ids sent, rows answered), and the same number of Python
lines executed.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

import pytest

from maintd.scheduler.engine import Engine
from maintd.scheduler.engine.claimed_ahead import ClaimedAhead
from maintd.scheduler.engine.clock_guard import NoClockGuard
from maintd.scheduler.store.run_store import RunStore
from tests.configs import make_config, sql_job
from tests.engines import beat
from tests.memory_store import MemoryStore

pytestmark = pytest.mark.unit

# In the past: every fire APScheduler computes (from the real clock) is far beyond the window.
NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


@dataclass
class Cost:
    calls: list[str]
    values: int  # job ids and the like sent, rows answered
    lines: int  # Python lines executed


def _size(value: Any) -> int:
    # Concrete types: an ABC's isinstance runs Python code the first time, which would count.
    return len(value) if isinstance(value, list | tuple | dict | set | frozenset) else 0


async def _cost(store: MemoryStore, work: Callable[[], Awaitable[Any]]) -> Cost:
    answered = 0
    queries = [name for name, member in vars(RunStore).items() if inspect.iscoroutinefunction(member)]

    def counting(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            nonlocal answered
            result = await method(*args, **kwargs)
            answered += sum(_size(part) for part in result) if isinstance(result, tuple) else _size(result)
            return result

        return call

    for name in queries:
        setattr(store, name, counting(getattr(store, name)))
    lines = 0

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal lines
        if event == "line":
            lines += 1
        return trace

    store.calls.clear()
    sys.settrace(trace)
    try:
        await work()
    finally:
        sys.settrace(None)
        for name in queries:
            del store.__dict__[name]
    sent = sum(_size(value) for call in store.calls for value in call.args.values())
    return Cost([call.method for call in store.calls], sent + answered, lines)


def _config(jobs: int) -> Any:
    # Distinct crontabs on January 1st: one APScheduler timer each, none due.
    configured = {f"job_{n:04d}": sql_job(schedule=f"{n % 60} {n // 60 % 24} 1 1 *") for n in range(jobs)}
    configured["job_0000"] = sql_job(schedule="0 0 1 1 *", expect_success_within="400d")
    configured["job_0001"] = sql_job(schedule="1 0 1 1 *", retries=2)
    return make_config(configured)


async def _idle_costs(jobs: int) -> tuple[Cost, Cost]:
    """The cost of a heartbeat and of a pass of the claims ahead, once the engine has settled."""
    store = MemoryStore(clock=lambda: NOW)
    engine = Engine(
        _config(jobs), store, node="node-a", clock=lambda: NOW, claim_ahead=timedelta(seconds=1),
        clock_guard=NoClockGuard(),
    )  # fmt: skip
    await store.register_jobs(list(engine.jobs), NOW - timedelta(days=1))
    for job in engine.jobs.values():
        engine.metrics.register_job(job.id)
        engine.timers.add(job)
    engine.state.accepting = True
    engine.timers.start()
    try:
        assert isinstance(engine.ahead, ClaimedAhead)
        await engine.fencing.open()
        await engine.overdue.check()  # as the start does
        for _ in range(3):  # what is worked out once (per config) is left behind
            await beat(engine)
            await engine.ahead.decisions.claim_due()
        return await _cost(store, lambda: beat(engine)), await _cost(store, engine.ahead.decisions.claim_due)
    finally:
        engine.timers.shutdown()
        await engine.fencing.close()


async def test_idle_work_does_not_grow_with_the_configured_jobs() -> None:
    few_beat, few_pass = await _idle_costs(10)
    many_beat, many_pass = await _idle_costs(1000)
    assert many_beat.calls == few_beat.calls
    assert (many_beat.values, many_beat.lines) == (few_beat.values, few_beat.lines)
    assert (many_pass.calls, many_pass.values, many_pass.lines) == (few_pass.calls, few_pass.values, few_pass.lines)
    # The beat still does its work: the lease, the reaper, the one watched job, the retries.
    assert {"heartbeat", "reap_lost_runs", "last_successes", "successes_since", "runs_to_retry"} <= set(few_beat.calls)
