"""Fixtures of the integration ring: engines on the test's database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from maintd.scheduler.config.model import Config
from maintd.scheduler.engine import Engine
from maintd.scheduler.engine.clock_guard import ClockGuard, NoClockGuard
from maintd.scheduler.store.run_store import RunStore
from tests.engines import Clock, StartEngine


@pytest.fixture
async def start_engine(store: RunStore) -> AsyncIterator[StartEngine]:
    """Start engines on the test database, each one a replica; all are stopped after the test."""
    engines: list[Engine] = []

    async def start(
        config: Config, node: str = "node-a", clock: Clock | None = None, clock_guard: ClockGuard | None = None
    ) -> Engine:
        # A test's own clock is far from the database's on purpose, unless the test checks it.
        if clock is not None and clock_guard is None:
            clock_guard = NoClockGuard()
        engine = Engine(config, store, node=node, **({"clock": clock} if clock else {}), clock_guard=clock_guard)
        await engine.start()
        engines.append(engine)
        return engine

    yield start
    for engine in engines:
        await engine.stop(timedelta(seconds=5))
