"""Cancel requests, heard at once: a connection LISTENs on the channel the API's
cancel NOTIFYs, so a cancel sent to any replica reaches the run's owner without
waiting for its next heartbeat (which picks the request up too, as a fallback)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable

import asyncpg

from maintd.scheduler.engine.state import EngineState

CANCEL_CHANNEL = "maintd_cancel"


class CancelListener:
    def __init__(self, state: EngineState, on_request: Callable[[int, str], None]) -> None:
        """``on_request(run_id, by)`` is called for every cancel request heard."""
        self._state = state
        self._on_request = on_request
        self._conn: asyncpg.Connection | None = None

    async def _listen(self) -> asyncpg.Connection:
        conn = await self._state.store.dedicated_connection()
        await conn.add_listener(CANCEL_CHANNEL, self._on_notice)
        return conn

    async def open(self) -> None:
        """LISTEN now: a cancel sent right after this returns is not missed. If the
        database does not answer, :meth:`run` tries again."""
        try:
            self._conn = await self._listen()
        except Exception as exc:
            self._state.failures.failed("listen_failed", error=repr(exc))

    async def run(self) -> None:
        """Hold the LISTEN connection, and open it again after the database comes back."""
        interval = self._state.heartbeat_interval.total_seconds()
        while True:
            try:
                conn = self._conn or await self._listen()
                self._conn = None  # from here on, this loop closes it
                try:
                    while not conn.is_closed():
                        await asyncio.sleep(interval)
                        await conn.execute("SELECT 1")  # notices a dead server
                finally:
                    # A graceful close: terminating under a pending query leaves asyncpg
                    # a future nobody retrieves. Shielded so our cancellation cannot cut it short.
                    with contextlib.suppress(Exception):
                        await asyncio.shield(conn.close(timeout=2))
            except Exception as exc:
                self._state.failures.failed("listen_failed", error=repr(exc))
            await asyncio.sleep(interval)

    async def close(self) -> None:
        """Close a connection :meth:`run` has not taken over (it closes its own when cancelled)."""
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close(timeout=2)
            self._conn = None

    def _on_notice(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        notice = json.loads(payload)
        self._on_request(notice["run_id"], notice["by"])
