"""How many fires this replica takes on: a bound on its runs in progress.

A replica that claims more fires than it can run makes them wait inside it, for
a pool connection or the CPU, while the other replicas idle; under overload its
loop falls so far behind that its heartbeats come late and its own runs are
declared lost. So each replica claims at most ``[scheduler] max_running`` runs
at once, counting the runs in progress, the fires claimed ahead and the fires
being claimed. A fire beyond that waits (see fires.py) until a slot frees on
whichever replica, and runs late, or is recorded missed past its misfire grace.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator


class Capacity:
    def __init__(self, limit: int, taken: Callable[[], int]) -> None:
        """``taken()``: the runs in progress and the fires claimed ahead, now."""
        self.limit = limit
        self._taken = taken
        self._reserved = 0

    def free(self) -> int:
        """How many more fires may be claimed now."""
        return max(0, self.limit - self._taken() - self._reserved)

    @contextlib.contextmanager
    def reserve(self, count: int) -> Iterator[None]:
        """Count ``count`` fires being claimed against the bound until the claim has answered
        (the fires won are in progress by then)."""
        self._reserved += count
        try:
            yield
        finally:
            self._reserved -= count


class Unbounded(Capacity):
    """No bound (a one-off run, and parts driven alone in unit tests)."""

    def __init__(self) -> None:
        super().__init__(limit=0, taken=lambda: 0)

    def free(self) -> int:
        return 1 << 30
