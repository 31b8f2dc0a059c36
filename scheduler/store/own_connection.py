"""A connection of its own, outside the pool.

Heartbeats, claims and the outcomes of runs that ended must not wait for a pool
connection: the jobs may hold every one of them (a burst, or long statements),
and the runs they would start, record or keep alive are the ones waiting."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg


class OwnConnection:
    """Used by one caller at a time (the others wait their turn); opened when first
    needed, and opened again after a failure: a statement cut short leaves a connection
    in an unknown state, so it is never used again."""

    def __init__(self, connect: Callable[[], Awaitable[asyncpg.Connection]]) -> None:
        self._connect = connect
        self._conn: asyncpg.Connection | None = None
        self._turn = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def use(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._turn:
            try:
                if self._conn is None or self._conn.is_closed():
                    self._conn = await self._connect()
                yield self._conn
            except BaseException:
                if self._conn is not None:
                    self._conn.terminate()
                    self._conn = None
                raise

    async def open(self) -> None:
        """Connect now (at start), not when first needed: a connect cut short by a stop
        could leave its socket behind."""
        async with self.use():
            pass

    async def close(self) -> None:
        if self._conn is not None:
            try:
                await self._conn.close(timeout=2)
            except Exception:
                self._conn.terminate()
            self._conn = None
