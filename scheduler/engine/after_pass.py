"""Work put off until the runs started in one event-loop pass have made their first step.

A burst of 1,000 fires makes thousands of metric updates (2-5 us each, the
series of 1,000 jobs being spread over memory), and allocates enough to set off
collections that walk every young object (milliseconds at times): its runs
should not wait on either (bench/claims.py). So the updates are queued, and the
garbage collector waits too, until every run of the pass has started.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable


class AfterPass:
    def __init__(self) -> None:
        self._work: list[Callable[[], None]] = []
        self._gc_paused = False

    def defer(self, work: Callable[[], None]) -> None:
        """Do ``work`` once the runs started in this loop pass have made their first step."""
        if not self._work:
            loop = asyncio.get_running_loop()
            # Two hops: the second is queued behind the first step of every run started in this pass.
            loop.call_soon(loop.call_soon, self.end)
            self._gc_paused = gc.isenabled()
            gc.disable()
        self._work.append(work)

    def end(self) -> None:
        """Do the deferred work now, and let the garbage collector run again."""
        if self._gc_paused:
            self._gc_paused = False
            gc.enable()
        work, self._work = self._work, []
        for do in work:
            do()
