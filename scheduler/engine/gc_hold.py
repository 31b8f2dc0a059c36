"""The garbage collector waits while the runs started in one event-loop pass make their first step.

A burst of 1,000 fires allocates enough to set off collections that walk every
young object (milliseconds at times): its runs should not wait on them
(bench/claims.py).
"""

from __future__ import annotations

import asyncio
import gc


class GcHold:
    def __init__(self) -> None:
        self._held = False
        self._was_enabled = False

    def hold(self) -> None:
        """Keep the collector off until the runs started in this loop pass have made their first step."""
        if self._held:
            return
        self._held = True
        loop = asyncio.get_running_loop()
        # Two hops: the second is queued behind the first step of every run started in this pass.
        loop.call_soon(loop.call_soon, self.release)
        self._was_enabled = gc.isenabled()
        gc.disable()

    def release(self) -> None:
        """Let the collector run again."""
        if self._held:
            self._held = False
            if self._was_enabled:
                gc.enable()
