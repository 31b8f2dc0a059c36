"""The sd_notify protocol: tell systemd that maintd is ready, how it is doing, that it is alive, that it stops.

systemd gives a ``Type=notify`` service ``$NOTIFY_SOCKET``, a datagram socket
(a path, or ``@name`` for an abstract one), and with ``WatchdogSec=`` also
``$WATCHDOG_USEC`` and ``$WATCHDOG_PID``. Without ``$NOTIFY_SOCKET`` every
call here is a no-op, so the daemon runs the same outside systemd.

Written on :mod:`socket` instead of a library: a message is one datagram of
``KEY=VALUE`` lines, an interface sd_notify(3) documents as stable for
reimplementation. ``sdnotify`` (PyPI, last release 2017) encodes Latin-1 and
hides every error behind a bare ``except`` (a wrong socket fails silently,
forever); ``systemd-python`` and ``cysystemd`` need libsystemd headers to build. None of them helps with the watchdog's timing,
which is the part that needs care.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

log = structlog.get_logger("maintd.systemd")

# How often STATUS= is recomputed; it is sent only when it changed, so a run's end shows within this.
STATUS_REFRESH_S = 1.0


class Notifier:
    """Sends sd_notify messages to one socket; without an address it sends nothing."""

    def __init__(self, address: str | None) -> None:
        self.address = address or None
        self._target: str | bytes | None = None
        self._socket: socket.socket | None = None
        self._failed = False
        if self.address is None:
            return
        if self.address.startswith("@"):
            self._target = b"\0" + self.address[1:].encode()
        elif self.address.startswith("/"):
            self._target = self.address
        else:  # e.g. "vsock:CID:PORT", systemd's channel to a whole VM, not to a service
            log.warning("systemd_notify_socket_unsupported", address=self.address)
            return
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def notify(self, **fields: object) -> bool:
        """Send ``KEY=value`` lines as one datagram; False if there is nowhere to send or sending failed."""
        if self._socket is None or self._target is None:
            return False
        # A value is one line: a newline would start a bogus KEY=VALUE of its own.
        message = "\n".join(f"{key}={' '.join(str(value).splitlines())}" for key, value in fields.items())
        try:
            # Unconnected, as libsystemd does: no connection to go stale across a systemd re-exec.
            self._socket.sendto(message.encode(), self._target)
        except OSError as exc:
            if not self._failed:  # once: a gone systemd must not flood the journal every half second
                log.warning("systemd_notify_failed", address=self.address, error=str(exc))
            self._failed = True
            return False
        self._failed = False
        return True

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def watchdog_interval(environ: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds systemd's watchdog allows between two pings, or None when it is off or not meant for ``pid``."""
    env = os.environ if environ is None else environ
    usec, for_pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec:
        return None
    try:
        interval = int(usec) / 1_000_000
        # Set by systemd for its main process; a child that inherited the variables must stay quiet.
        meant_for_us = not for_pid or int(for_pid) == (os.getpid() if pid is None else pid)
    except ValueError:
        log.warning("systemd_watchdog_env_invalid", watchdog_usec=usec, watchdog_pid=for_pid)
        return None
    return interval if interval > 0 and meant_for_us else None


@dataclass(frozen=True)
class WatchdogTiming:
    """When to ping, and when a tick came too late to vouch for the event loop."""

    interval: float

    @property
    def period(self) -> float:
        """Ping at half the interval (what sd_watchdog_enabled(3) advises): one late ping is survived."""
        return self.interval / 2

    @property
    def tolerance(self) -> float:
        """A tick later than this means the loop was blocked. Even then period + tolerance < interval."""
        return self.interval / 4

    @property
    def probe(self) -> float:
        """After a late tick, wait this long and ping only if that short wait is on time."""
        return self.interval / 8

    def on_time(self, due: float, now: float) -> bool:
        return now - due <= self.tolerance


class ServiceNotifier:
    """What maintd tells systemd over its life: READY, STATUS, WATCHDOG pings and STOPPING.

    The same object is shared by the server (READY once the port is bound,
    STOPPING on a signal) and the app's lifespan (pings and status while the
    engine runs).
    """

    def __init__(self, notifier: Notifier, watchdog: float | None, *, pid: int | None = None) -> None:
        self.notifier = notifier
        self.watchdog = WatchdogTiming(watchdog) if watchdog and notifier.enabled else None
        self.pid = os.getpid() if pid is None else pid
        self._summary: Callable[[], str] | None = None
        self._healthy: Callable[[], bool] = lambda: False
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._sent_status: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServiceNotifier:
        return cls(Notifier.from_env(environ), watchdog_interval(environ))

    @classmethod
    def disabled(cls) -> ServiceNotifier:
        return cls(Notifier(None), None)

    @property
    def enabled(self) -> bool:
        return self.notifier.enabled

    def status(self) -> str:
        summary = self._summary() if self._summary else "starting"
        return f"stopping: {summary}" if self._stopping else summary

    def start(self, *, summary: Callable[[], str], healthy: Callable[[], bool]) -> None:
        """Begin refreshing STATUS and, if systemd asked for it, pinging the watchdog while ``healthy()``."""
        self._summary, self._healthy = summary, healthy
        if not self.enabled:
            return
        self._tasks.append(asyncio.create_task(self._status_loop(), name="maintd-systemd-status"))
        if self.watchdog is not None:
            self._tasks.append(asyncio.create_task(self._watchdog_loop(self.watchdog), name="maintd-watchdog"))

    async def stop(self) -> None:
        """Stop the pings and status refreshes, leaving the final status (e.g. after a drain) with systemd."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._tasks:
            self._send_status()
        self._tasks.clear()

    def close(self) -> None:
        self.notifier.close()

    def ready(self) -> None:
        """Migrations ran, the scheduler started and the port is bound."""
        self._sent_status = self.status()
        self.notifier.notify(READY=1, STATUS=self._sent_status, MAINPID=self.pid)

    def reloading(self) -> None:
        """A config reload (SIGHUP) began; systemd shows the unit reloading until :meth:`reloaded`."""
        # MONOTONIC_USEC: CLOCK_MONOTONIC, which time.monotonic() reads on Linux.
        self.notifier.notify(RELOADING=1, MONOTONIC_USEC=time.monotonic_ns() // 1000, STATUS="reloading config")

    def reloaded(self) -> None:
        """The reload ended, applied or rejected: the unit is ready again (unless it is stopping)."""
        if self._stopping:
            return
        self._sent_status = self.status()
        self.notifier.notify(READY=1, STATUS=self._sent_status)

    def stopping(self) -> None:
        """A stop was asked for: said at once, before running jobs are drained."""
        if self._stopping:
            return
        self._stopping = True
        self._sent_status = self.status()
        self.notifier.notify(STOPPING=1, STATUS=self._sent_status)

    def _send_status(self) -> None:
        if (status := self.status()) != self._sent_status:
            # Recorded before sending: stopping() may run in between, from a signal handler.
            self._sent_status = status
            self.notifier.notify(STATUS=status)

    async def _status_loop(self) -> None:
        while True:
            self._send_status()
            await asyncio.sleep(STATUS_REFRESH_S)

    async def _watchdog_loop(self, timing: WatchdogTiming) -> None:
        # A ping vouches for the whole event loop, so it is sent from a task on that loop, and
        # only from a tick that came on time: a loop blocked (a job calling time.sleep, a
        # runaway computation) sends nothing, and once it is free again it must first prove
        # itself with a short on-time wait. A loop wedged for longer than the interval gets
        # the service restarted by systemd.
        loop = asyncio.get_running_loop()
        due = loop.time() + timing.period
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            now = loop.time()
            # After STOPPING=1 systemd no longer watches; the drain is shutdown_grace's to bound.
            if timing.on_time(due, now) and self._healthy() and not self._stopping:
                self.notifier.notify(WATCHDOG=1)
                due = now + timing.period
            else:
                due = now + timing.probe
