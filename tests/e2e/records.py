"""What a cluster of ``maintd run`` replicas recorded (``maintd.runs``) and logged, read by the e2e tests.

Fault tests wait on the daemons' JSON log events, or poll a state with a
deadline; they sleep only until a wall-clock fire time of an epoch-aligned
schedule, which is inherent to them.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import asyncpg

from tests.blocking import run_blocking
from tests.e2e.conftest import Daemon

POLL_S = 0.05


def scheduler_toml(node: str, *, lease: str | None = None) -> str:
    """The [scheduler] section of a replica: a stable node name, a short grace, and a lease if given."""
    return f'node = "{node}"\nshutdown_grace = "5s"\n' + (f'lease = "{lease}"\n' if lease else "")


def fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """One query on its own connection (the test's, not a daemon's)."""

    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    return run_blocking(run())


def runs(dsn: str, job_id: str) -> list[asyncpg.Record]:
    """The job's rows, in fire order."""
    return fetch(
        dsn,
        "SELECT id, scheduled_for, status, trigger, node, attempt, error, started_at, finished_at FROM maintd.runs"
        " WHERE job_id = $1 ORDER BY scheduled_for, id",
        job_id,
    )


def epoch(at: datetime) -> int:
    """A fire time of an ``every N`` schedule as whole seconds since the epoch."""
    seconds = at.timestamp()
    assert seconds == int(seconds), f"fire time {at} is not on a whole second"
    return int(seconds)


def poll(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Call ``check`` every POLL_S until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        if result := check():
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(POLL_S)


def event(name: str, **fields: Any) -> Callable[[dict[str, Any]], bool]:
    """A predicate for ``Daemon.wait_for_event``: an event of that name carrying those fields."""
    return lambda e: e.get("event") == name and all(e.get(k) == v for k, v in fields.items())


def logged(daemon: Daemon, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10) -> dict[str, Any]:
    """An event the daemon logged already (start_daemon reads up to "Uvicorn running on"), else the next one."""
    return next((e for e in daemon.events if predicate(e)), None) or daemon.wait_for_event(predicate, timeout)


def logged_after(wall: float) -> Callable[[dict[str, Any]], bool]:
    """A predicate: an event stamped at or after the wall-clock time ``wall``."""

    def after(event: dict[str, Any]) -> bool:
        stamp = event.get("timestamp")
        return bool(stamp) and datetime.fromisoformat(stamp).timestamp() >= wall

    return after


def timeline(daemon: Daemon, since: float = 0.0) -> str:
    """The engine's events (claims, failures, recovery, catch-up) and run starts, one a line, for failure messages."""
    keys = ("scheduled_for", "trigger", "run_id", "count", "first", "fires", "run_times", "error", "reason")
    lines = []
    for e in daemon.events:
        stamp = e.get("timestamp", "")
        if e.get("logger") not in ("maintd.engine", "maintd.run") or e.get("event") in ("sql_done", "run_succeeded"):
            continue
        if since and stamp and datetime.fromisoformat(stamp).timestamp() < since:
            continue
        detail = " ".join(f"{k}={str(e[k])[:90]}" for k in keys if k in e)
        lines.append(f"  {stamp[11:23]} {e.get('event')} {detail}")
    return "\n".join(lines)


def stop_all(daemons: list[Daemon]) -> None:
    """SIGTERM every replica at once (as systemd stops a fleet), then each must exit 0."""
    for daemon in daemons:
        daemon.process.send_signal(signal.SIGTERM)
    codes = [daemon.process.wait(30) for daemon in daemons]
    assert codes == [0] * len(daemons)


def sleep_until(wall: float) -> None:
    """Wait for a wall-clock time: a fire time of an epoch-aligned schedule (inherent to these tests)."""
    time.sleep(max(0.0, wall - time.time()))
