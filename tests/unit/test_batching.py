"""Calls made in one loop iteration, or while a send is in flight, go out as one (scheduler/engine/batching.py)."""

from __future__ import annotations

import asyncio

import pytest

from maintd.scheduler.engine.batching import Batcher

pytestmark = pytest.mark.unit


async def test_calls_of_one_iteration_are_sent_together_and_each_gets_its_result() -> None:
    sent: list[list[int]] = []

    async def send(items: list[int]) -> list[int]:
        sent.append(items)
        return [item * 10 for item in items]

    batcher: Batcher[int, int] = Batcher(send)
    assert await asyncio.gather(*(batcher(i) for i in range(5))) == [0, 10, 20, 30, 40]
    assert await batcher(7) == 70
    assert sent == [[0, 1, 2, 3, 4], [7]]


async def test_a_failed_send_fails_every_caller_of_that_batch_only() -> None:
    async def send(items: list[int]) -> list[int]:
        if 0 in items:
            raise OSError("database away")
        return items

    batcher: Batcher[int, int] = Batcher(send)
    results = await asyncio.gather(batcher(0), batcher(1), return_exceptions=True)
    assert [type(r) for r in results] == [OSError, OSError]
    assert await batcher(2) == 2


async def test_a_cancelled_caller_does_not_stop_the_others() -> None:
    release = asyncio.Event()

    async def send(items: list[int]) -> list[int]:
        await release.wait()
        return items

    batcher: Batcher[int, int] = Batcher(send)
    first = asyncio.create_task(batcher(1))
    second = asyncio.create_task(batcher(2))
    await asyncio.sleep(0.01)
    first.cancel()
    release.set()
    assert await second == 2
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_calls_made_while_a_send_is_in_flight_go_out_together_after_it() -> None:
    sent: list[list[int]] = []
    release = asyncio.Event()

    async def send(items: list[int]) -> list[int]:
        sent.append(items)
        await release.wait()
        return items

    batcher: Batcher[int, int] = Batcher(send)
    first = asyncio.create_task(batcher(1))
    while not sent:
        await asyncio.sleep(0)
    # Arriving over several loop iterations while the first send is in flight.
    later = []
    for item in (2, 3, 4):
        later.append(asyncio.create_task(batcher(item)))
        await asyncio.sleep(0)
    assert sent == [[1]]
    release.set()
    assert await first == 1
    assert await asyncio.gather(*later) == [2, 3, 4]
    assert sent == [[1], [2, 3, 4]]


async def test_a_call_after_a_failed_send_is_still_sent() -> None:
    sent: list[list[int]] = []

    async def send(items: list[int]) -> list[int]:
        sent.append(items)
        if 0 in items:
            raise OSError("database away")
        return items

    batcher: Batcher[int, int] = Batcher(send)
    failing = asyncio.create_task(batcher(0))
    await asyncio.sleep(0)
    queued_meanwhile = asyncio.create_task(batcher(5))
    with pytest.raises(OSError):
        await failing
    assert await queued_meanwhile == 5
    assert sent == [[0], [5]]
