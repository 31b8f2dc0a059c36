"""Many awaited calls made in one event-loop iteration, sent as one call.

When a burst of runs ends together, each would otherwise pay a database round
trip and a commit of its own; the callers still await their own result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batcher(Generic[Item, Result]):
    """``await batcher(item)`` queues ``item``; right after the current loop iteration,
    ``send(items)`` handles the queue at once and each caller gets its result (or the
    exception ``send`` raised)."""

    def __init__(self, send: Callable[[list[Item]], Awaitable[Sequence[Result]]]) -> None:
        self._send = send
        self._queued: list[tuple[Item, asyncio.Future[Result]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def __call__(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        if not self._queued:
            loop.call_soon(self._flush)
        future: asyncio.Future[Result] = loop.create_future()
        self._queued.append((item, future))
        return await future

    def _flush(self) -> None:
        queued, self._queued = self._queued, []
        task = asyncio.get_running_loop().create_task(self._deliver(queued), name=f"batch-of-{len(queued)}")
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

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
