"""Failed authentications: counted, logged at a bounded rate, and slowed down per client address.

Every failure (no bearer token, or an unknown one) counts in
``maintd_auth_failures_total{reason}``. A client address that has failed
``limit`` times within ``window`` is answered 429 with ``Retry-After`` until
its oldest failure in the window has aged out; a valid token from that address
still works, so an operator is never locked out by someone guessing beside them.

Memory is bounded: the last ``limit`` failure times of at most ``max_clients``
addresses (the least recently failing address is forgotten first). Counting is
per replica, in memory. The log gets at most one line per address per window
when it starts failing and one when it is limited, and at most
``log_lines_per_window`` lines per window in all; the presented token is never
logged.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Literal

import structlog
from prometheus_client import Counter

log = structlog.get_logger("maintd.api")

Reason = Literal["missing", "invalid"]
REASONS: tuple[Reason, ...] = ("missing", "invalid")

LIMIT = 20
WINDOW_S = 60.0
MAX_CLIENTS = 4096
LOG_LINES_PER_WINDOW = 60


class AuthFailures:
    """The failure record of one replica; :meth:`record` is called on every failed authentication.

    ``counter`` is ``maintd_auth_failures`` with its one label, ``reason``.
    """

    def __init__(
        self,
        counter: Counter,
        *,
        limit: int = LIMIT,
        window_s: float = WINDOW_S,
        max_clients: int = MAX_CLIENTS,
        log_lines_per_window: int = LOG_LINES_PER_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._counters = {reason: counter.labels(reason) for reason in REASONS}
        self.limit = limit
        self.window_s = window_s
        self._max_clients = max_clients
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._log_budget = log_lines_per_window
        self._log_window_start = clock()
        self._log_lines = 0
        self._unlogged = 0

    def record(self, client: str, reason: Reason, path: str) -> float | None:
        """Count one failure from ``client``; the seconds it must wait (Retry-After) once it is
        limited, else None (the caller answers 401)."""
        self._counters[reason].inc()
        now = self._clock()
        times = self._failures.pop(client, None)
        if times is None:
            times = deque(maxlen=self.limit)
        self._failures[client] = times  # now the most recently failing address
        while len(self._failures) > self._max_clients:
            self._failures.popitem(last=False)
        was_limited = self._retry_after(times, now) is not None
        if not times or now - times[-1] >= self.window_s:
            self._log("auth_failed", client=client, reason=reason, path=path)
        times.append(now)
        if was_limited:
            return self._retry_after(times, now)
        if self._retry_after(times, now) is not None:  # this failure reached the limit: the next is a 429
            self._log("auth_client_limited", client=client, failures=self.limit, window_s=self.window_s)
        return None

    def _retry_after(self, times: deque[float], now: float) -> float | None:
        if len(times) < self.limit:
            return None
        wait = times[0] + self.window_s - now
        return wait if wait > 0 else None

    def _log(self, event: str, **fields: object) -> None:
        now = self._clock()
        if now - self._log_window_start >= self.window_s:
            self._log_window_start, self._log_lines = now, 0
        if self._log_lines >= self._log_budget:
            self._unlogged += 1
            return
        self._log_lines += 1
        if self._unlogged:
            fields["unlogged_before"] = self._unlogged
            self._unlogged = 0
        log.warning(event, **fields)
