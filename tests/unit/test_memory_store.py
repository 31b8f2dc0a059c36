"""The in-memory run store itself (tests/memory_store.py): complete, without I/O, on the
test's clock. That it answers as PostgreSQL does is tests/integration/test_store_contract.py."""

from __future__ import annotations

import asyncio
import inspect
from datetime import UTC, datetime, timedelta

import pytest

from maintd.scheduler.store.run_store import Claim, RunStore
from tests.memory_store import MemoryStore

pytestmark = pytest.mark.unit

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_every_call_of_the_run_store_is_answered_in_memory() -> None:
    public = {name for name, _ in inspect.getmembers(RunStore, inspect.iscoroutinefunction) if not name.startswith("_")}
    unanswered = {name for name in public if getattr(MemoryStore, name) is getattr(RunStore, name)}
    assert unanswered == set()


async def test_the_pool_is_not_there_to_be_used() -> None:
    store = MemoryStore()
    with pytest.raises(AssertionError, match="pool.fetch"):
        await store.pool.fetch("SELECT 1")


async def test_the_test_clock_is_the_database_clock_and_calls_are_recorded() -> None:
    clock = Clock(T0)
    store = MemoryStore(clock)
    claim = Claim("nightly", "schedule", T0, 1, True, T0, None, "node-a", False)
    run = await store.claim_run(claim)
    assert run is not None
    clock.now = T0 + LEASE
    assert await store.reap_lost_runs(LEASE) == []  # silent for exactly the lease: not yet
    clock.now += timedelta(microseconds=1)
    [lost] = await store.reap_lost_runs(LEASE)
    assert (lost.status, lost.finished_at) == ("lost", clock.now)
    assert lost.error == "lost: node node-a stopped heartbeating (last at 2026-05-01 12:00:00+00)"
    assert await store.ping(timeout=1) == clock.now
    assert [call.method for call in store.calls] == ["claim_run", "reap_lost_runs", "reap_lost_runs", "ping"]
    assert store.called("claim_run") == [{"claim": claim}]


async def test_a_cancel_request_is_delivered_to_a_listening_connection() -> None:
    store = MemoryStore(Clock(T0))
    connection = await store.dedicated_connection()
    heard: list[str] = []
    await connection.add_listener("maintd_cancel", lambda _c, _pid, _channel, payload: heard.append(payload))
    run = await store.claim_run(Claim("nightly", "manual", T0, 1, True, T0, "ops", "node-a", False))
    assert run is not None
    await store.request_cancel(run.id, "ops")
    assert heard == []  # delivered after the statement, as NOTIFY is at commit
    await asyncio.sleep(0)
    assert heard == ['{"run_id" : 1, "by" : "ops"}']
    assert await connection.execute("SELECT 1") == "SELECT 1"
    await connection.close()
    assert connection.is_closed() and store.connections == []
