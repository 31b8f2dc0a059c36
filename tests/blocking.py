"""Run a coroutine to its end from synchronous test code, whatever runs the thread.

Playwright's synchronous API keeps an event loop running in the test's thread for as
long as its browser is open (a session fixture), where ``asyncio.run`` refuses to
start another: there the coroutine runs on a thread of its own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_blocking(coro: Coroutine[Any, Any, T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
