"""Retries of failed runs (scheduler/engine/retries.py): every replica sets the same retry."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from maintd.scheduler.engine.retries import RETRY_BASE, Retries
from maintd.scheduler.engine.timers import Timers
from maintd.scheduler.store.records import Run
from maintd.scheduler.store.run_store import Claim
from tests.configs import make_config, sleep_job
from tests.engines import memory_engine
from tests.memory_store import MemoryStore

pytestmark = pytest.mark.unit

FIRE = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
ENDED = FIRE + timedelta(seconds=5)
CONFIG = make_config({"flaky": sleep_job(0, retries=2)})


def now() -> datetime:
    return ENDED


async def failed_run(store: MemoryStore, attempt: int = 1) -> Run:
    run = await store.claim_run(
        Claim(
            "flaky",
            "schedule",
            FIRE,
            attempt,
            exclusive=True,
            started_at=FIRE,
            triggered_by=None,
            node="node-b",
            ignore_pause=False,
        )
    )
    assert run is not None
    failed = await store.finish_run(run.id, "failed", ENDED, None, "boom")
    assert failed is not None
    return failed


def retries_of(node: str, store: MemoryStore) -> tuple[Retries, Timers]:
    engine = memory_engine(CONFIG, store, clock=now, node=node)
    engine.timers.start()
    return engine.retries, engine.timers


async def test_every_replica_sets_the_same_retry_after_the_seeded_backoff() -> None:
    store = MemoryStore(now)
    await store.register_jobs(["flaky"], FIRE)
    run = await failed_run(store)
    (a, a_timers), (b, b_timers) = retries_of("node-a", store), retries_of("node-b", store)
    try:
        a.after_failure(CONFIG.jobs["flaky"], run)
        await b.sweep()  # the other replica finds the failed run in the store

        expected = ENDED + RETRY_BASE * random.Random(run.id).uniform(0.5, 1.5)
        assert a_timers.next_fire_time() == b_timers.next_fire_time() == expected
        assert ENDED + RETRY_BASE / 2 <= expected < ENDED + RETRY_BASE * 1.5
    finally:
        a_timers.shutdown()
        b_timers.shutdown()


async def test_a_run_on_its_last_attempt_gets_no_retry() -> None:
    store = MemoryStore(now)
    await store.register_jobs(["flaky"], FIRE)
    run = await failed_run(store, attempt=3)  # retries = 2: attempts 1, 2 and 3
    retries, timers = retries_of("node-a", store)
    try:
        retries.after_failure(CONFIG.jobs["flaky"], run)
        await retries.sweep()
        assert timers.next_fire_time() is None
    finally:
        timers.shutdown()
