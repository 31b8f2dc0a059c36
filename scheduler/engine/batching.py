"""Many awaited calls sent as one, one send at a time (group commit).

When a burst of runs ends, each would otherwise pay a database round trip and
a commit of its own, and take a pool connection its neighbours' jobs are
waiting for. Calls made in one event-loop iteration go out together; while a
send is in flight, the calls that arrive meanwhile wait for it to finish and
then go out together as the next one. So under load the batches grow and the
bookkeeping holds one connection at most, and when idle a call is sent at once.
The callers still await their own result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batcher(Generic[Item, Result]):
    """``await batcher(item)`` queues ``item``; ``send(items)`` handles the queue at once,
    right after the current loop iteration or, when a send is in flight, right after it,
    and each caller gets its result (or the exception ``send`` raised)."""

    def __init__(self, send: Callable[[list[Item]], Awaitable[Sequence[Result]]]) -> None:
        self._send = send
        self._queued: list[tuple[Item, asyncio.Future[Result]]] = []
        self._sending: asyncio.Task[None] | None = None
        self._flush_due = False

    async def __call__(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._queued.append((item, future))
        self._flush_soon()
        return await future

    def _flush_soon(self) -> None:
        if self._flush_due or self._sending is not None or not self._queued:
            return
        self._flush_due = True
        asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_due = False
        queued, self._queued = self._queued, []
        self._sending = asyncio.get_running_loop().create_task(self._deliver(queued), name=f"batch-of-{len(queued)}")

    async def _deliver(self, queued: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            results = await self._send([item for item, _ in queued])
            for (_, future), result in zip(queued, results, strict=True):
                if not future.done():  # the caller may have been cancelled meanwhile
                    future.set_result(result)
        except BaseException as exc:
            # No caller is left waiting forever, whatever went wrong.
            for _, future in queued:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
            if not isinstance(exc, Exception):
                raise
        finally:
            self._sending = None
            self._flush_soon()
