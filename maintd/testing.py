"""Run the engine on a frozen clock, for maintd's tests and for users' own.

Freeze a moment, advance the clock, and see the jobs that were due fire,
without real waiting::

    from maintd.testing import config_from_toml, frozen_engine

    config = config_from_toml('''
    [jobs.cleanup_sessions]
    task = "cleanup_sessions"
    schedule = "0 0 * * *"
    timezone = "Europe/Berlin"
    ''')
    async with frozen_engine(config, dsn=dsn, at="2026-03-28T23:59:59+01:00") as daemon:
        await daemon.advance(timedelta(seconds=1))
        [run] = await daemon.runs("cleanup_sessions")
        assert run.scheduled_for == datetime.fromisoformat("2026-03-29T00:00:00+01:00")

A config comes from TOML text (:func:`config_from_toml`) or a file
(:func:`config_from_file`), validated as ``maintd check-config`` validates it.
It needs freezegun (``pip install 'maintd[testing]'``). The clock is frozen with
``real_asyncio=True`` so asyncio keeps real time while ``datetime.now`` is
frozen; :meth:`FrozenEngine.advance` stops at every fire time on the way, so
each fire happens at its exact time, as in production.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

from maintd.scheduler.config.model import Config, config_from_text, load_config
from maintd.scheduler.engine import Engine
from maintd.scheduler.engine.clock_guard import NoClockGuard
from maintd.scheduler.store.migrate import apply_migrations
from maintd.scheduler.store.records import Run
from maintd.scheduler.store.run_store import RunStore, create_pool

__all__ = ["FrozenEngine", "config_from_file", "config_from_toml", "frozen_engine"]

# Enough loop iterations for APScheduler's queued wakeup to run and hand its fires over.
_YIELDS = 3


class FrozenEngine:
    """An engine whose clock moves only when the test says so."""

    def __init__(self, engine: Engine, frozen: Any) -> None:
        self.engine = engine
        self.store = engine.store
        self._frozen = frozen

    def now(self) -> datetime:
        return self.engine.clock()

    async def advance(self, delta: timedelta) -> None:
        """Move the clock forward by ``delta``, firing every job due on the way at its own time."""
        target = self.now() + delta
        while (due := self.engine.timers.next_fire_time()) is not None and due <= target:
            self._frozen.move_to(due)
            await self._process()
            if self.engine.timers.next_fire_time() == due:
                raise RuntimeError(f"fire at {due.isoformat()} was not processed")
        self._frozen.move_to(target)
        await self._process()

    async def settle(self) -> None:
        """Wait until every fire is handled and every run it started has ended."""
        await self.engine.idle()

    async def _process(self) -> None:
        self.engine.timers.wakeup()
        for _ in range(_YIELDS):
            await asyncio.sleep(0)
        await self.settle()

    async def runs(self, job_id: str | None = None) -> list[Run]:
        """Runs (and unrun fires) recorded so far, oldest first."""
        runs = await self.store.list_runs(job_id=job_id, status=None, limit=10_000)
        return sorted(runs, key=lambda run: run.id)


@asynccontextmanager
async def frozen_engine(
    config: Config, *, dsn: str, at: str | datetime, node: str = "test-node"
) -> AsyncIterator[FrozenEngine]:
    """Start an engine for ``config`` against ``dsn`` with the clock frozen at ``at``."""
    from freezegun import freeze_time

    with freeze_time(at, real_asyncio=True) as frozen:
        pool = await create_pool(dsn, max_size=config.database.pool_size)
        try:
            async with pool.acquire() as conn:
                await apply_migrations(conn)
            # Time moves only when the test says so: fires are claimed at their time, not ahead;
            # and the frozen clock is far from the database's on purpose: no clock check.
            store = RunStore(pool, dsn)
            engine = Engine(config, store, node=node, claim_ahead=timedelta(0), clock_guard=NoClockGuard())
            try:
                await engine.start()
                try:
                    yield FrozenEngine(engine, frozen)
                finally:
                    await engine.stop(config.scheduler.shutdown_grace)
            finally:
                await store.close()
        finally:
            await pool.close()


def config_from_toml(text: str) -> Config:
    """A config from TOML text, as config.toml would hold it; ``ConfigError`` names every problem."""
    return config_from_text(text, environ={})


def config_from_file(path: str | os.PathLike[str]) -> Config:
    """A config read from a file (``$MAINTD_DATABASE_DSN`` and the like are not applied)."""
    return load_config(path, environ={})
