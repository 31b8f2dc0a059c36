"""End to end: the real ``maintd run`` speaking sd_notify to a datagram socket that stands in for systemd.

Run ``.venv/bin/pytest tests/e2e/test_systemd.py -s`` to see the captured sequence.
"""

from __future__ import annotations

import itertools
import socket
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from maintd.admin_api.auth import new_token
from tests.e2e.conftest import Daemon, free_port, launch
from tests.notify_socket import NotifySocket

pytestmark = pytest.mark.e2e

WATCHDOG_S = 1.0
BLOCK_S = 3.0
DRAIN_S = 2.0

JOBS = f"""
[jobs.broken]
task = "tests.tasks:fail"
schedule = "@yearly"

[jobs.wedge]
task = "tests.tasks:block"
schedule = "@yearly"
[jobs.wedge.params]
seconds = {BLOCK_S}

[jobs.drain]
task = "tests.tasks:sleep"
schedule = "@yearly"
[jobs.drain.params]
seconds = {DRAIN_S}
"""


@dataclass(frozen=True)
class Message:
    at: float  # seconds since the test started
    wall: float  # time.time(), to compare with the times on runs
    text: str

    @property
    def fields(self) -> dict[str, str]:
        return dict(line.split("=", 1) for line in self.text.splitlines())


@dataclass
class StandInSystemd(NotifySocket):
    """systemd's side of $NOTIFY_SOCKET: records each datagram, and checks the port the moment READY=1 arrives."""

    path: Path
    port: int
    started: float = field(default_factory=time.monotonic)
    messages: list[Message] = field(default_factory=list)
    timeline: list[tuple[float, str, str]] = field(default_factory=list)
    ready_probe: str = "READY=1 never arrived"
    process_alive_at_stopping: bool | None = None
    process: object = None
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        NotifySocket.__init__(self, str(self.path))

    def received(self, at: float, text: str) -> None:
        message = Message(at - self.started, time.time(), text)
        fields = message.fields
        if fields.get("READY") == "1":
            # Right now, before reading on: had READY come before the bind, this would fail.
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=5).close()
                response = httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=5)
                self.ready_probe = f"port bound, /readyz {response.status_code}"
            except (OSError, httpx.HTTPError) as exc:
                self.ready_probe = f"port not answering: {exc!r}"
        if fields.get("STOPPING") == "1":
            self.process_alive_at_stopping = self.process.poll() is None  # type: ignore[attr-defined]
        with self._changed:
            self.messages.append(message)
            self.timeline.append((message.at, "systemd <-", " | ".join(message.text.splitlines())))
            if fields.get("READY") == "1":
                self.timeline.append((time.monotonic() - self.started, "test", f"{self.ready_probe} on READY"))
            self._changed.notify_all()

    def note(self, what: str) -> None:
        with self._changed:
            self.timeline.append((time.monotonic() - self.started, "test", what))

    def wait_for(self, predicate: Callable[[Message], bool], *, start: int = 0, timeout: float = 60) -> int:
        """Index of the first message from ``start`` on that matches."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for index in range(start, len(self.messages)):
                    if predicate(self.messages[index]):
                        return index
                if not self._changed.wait(deadline - time.monotonic()):
                    raise AssertionError(f"no matching notify message within {timeout}s:\n{self.render()}")

    def pings(self, since: float = float("-inf"), until: float = float("inf")) -> list[Message]:
        with self._changed:
            return [m for m in self.messages if m.text == "WATCHDOG=1" and since <= m.wall <= until]

    def render(self) -> str:
        with self._changed:
            return "\n".join(f"{at:+9.3f}s  {who:<10}  {what}" for at, who, what in sorted(self.timeline))


def is_ping(message: Message) -> bool:
    return message.text == "WATCHDOG=1"


def test_notify_sequence_watchdog_and_stop(private_tmp: Path, repo_root: Path, empty_db_dsn: str) -> None:
    port = free_port()
    token, sha = new_token()
    config = private_tmp / "config.toml"
    config.write_text(
        f'[server]\nport = {port}\n[database]\ndsn = "{empty_db_dsn}"\n[scheduler]\nshutdown_grace = "10s"\n'
        f'[[admin.tokens]]\nname = "ops"\nrole = "operator"\nsha256 = "{sha}"\n{JOBS}'
    )
    systemd = StandInSystemd(private_tmp / "notify", port)
    env = {"NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": str(int(WATCHDOG_S * 1_000_000))}
    daemon: Daemon | None = None
    try:
        daemon = launch(config, port, repo_root, token, env=env)
        systemd.process = daemon.process
        systemd.note(f"maintd run started (pid {daemon.process.pid}), WATCHDOG_USEC={env['WATCHDOG_USEC']}")

        # READY=1 once migrations ran (an empty database), the scheduler started and the port is bound.
        ready = systemd.wait_for(lambda m: m.fields.get("READY") == "1")
        fields = systemd.messages[ready].fields
        assert systemd.ready_probe == "port bound, /readyz 200"
        assert fields["MAINPID"] == str(daemon.process.pid)
        assert fields["STATUS"] == "3 jobs, 0 running, last failure: none"

        # WATCHDOG=1 at about half the interval while all is well.
        indexes = [systemd.wait_for(is_ping, start=ready)]
        for _ in range(4):
            indexes.append(systemd.wait_for(is_ping, start=indexes[-1] + 1))
        pings = [systemd.messages[i].at for i in indexes]
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        systemd.note(f"ping gaps {', '.join(f'{g:.3f}s' for g in gaps)}")
        assert WATCHDOG_S / 4 <= statistics.median(gaps) <= WATCHDOG_S * 0.75

        with daemon.operator() as http:
            # STATUS= follows a failed run.
            systemd.note("trigger broken (fails)")
            assert http.post("/admin/trigger/broken").status_code == 202
            systemd.wait_for(lambda m: "last failure: broken at" in m.fields.get("STATUS", ""))

            # A job that blocks the event loop: no ping for as long as it blocks, then pings resume.
            systemd.note(f"trigger wedge (time.sleep({BLOCK_S}) on the event loop)")
            run_id = http.post("/admin/trigger/wedge").json()["run_id"]
            run = daemon.follow(run_id)
            assert run["status"] == "succeeded"
            unblocked = datetime.fromisoformat(run["finished_at"]).timestamp()
            blocked = unblocked - BLOCK_S  # the sleep ended just before finished_at was taken
            systemd.note(
                f"wedge run {run_id} blocked the loop from {_rel(systemd, blocked)} to {_rel(systemd, unblocked)}"
            )
            resumed = systemd.wait_for(lambda m: is_ping(m) and m.wall > unblocked)
            during = systemd.pings(since=blocked + 0.1, until=unblocked - 0.05)
            assert during == [], f"pinged while the loop was blocked:\n{systemd.render()}"
            before = systemd.pings(until=blocked)[-1]
            systemd.note(
                f"no ping for {systemd.messages[resumed].at - before.at:.3f}s around the block, then pings resume"
            )

            # SIGTERM: STOPPING=1 at once, while a running job is still being drained; then exit 0.
            systemd.note(f"trigger drain (asyncio.sleep({DRAIN_S}))")
            assert http.post("/admin/trigger/drain").status_code == 202
            systemd.wait_for(lambda m: m.fields.get("STATUS", "").startswith("3 jobs, 1 running"), start=resumed)
        systemd.note("SIGTERM")
        status = daemon.terminate()
        systemd.note(f"maintd exited {status}")
        stopping = systemd.wait_for(lambda m: m.fields.get("STOPPING") == "1", timeout=5)
        assert not systemd.pings(since=systemd.messages[stopping].wall), "systemd stopped watching at STOPPING=1"
        assert systemd.process_alive_at_stopping is True, "STOPPING=1 must come before the drain, not at exit"
        assert systemd.messages[stopping].fields["STATUS"].startswith("stopping: 3 jobs, 1 running")
        assert status == 0
        # After the drain, the last word: nothing running any more.
        assert systemd.messages[-1].fields["STATUS"].startswith("stopping: 3 jobs, 0 running")
        assert [m for m in systemd.messages if m.fields.get("READY") == "1"] == [systemd.messages[ready]]
    finally:
        if daemon is not None:
            daemon.close()
        systemd.close()
        print(f"\nsd_notify sequence seen by the stand-in systemd (WATCHDOG_USEC={WATCHDOG_S:g}s):")
        print(systemd.render())


def _rel(systemd: StandInSystemd, wall: float) -> str:
    """A wall-clock instant as seconds since the test started."""
    return f"{wall - (time.time() - (time.monotonic() - systemd.started)):+.3f}s"
