"""The sd_notify client against real datagram sockets standing in for systemd, and the unit file."""

from __future__ import annotations

import asyncio
import itertools
import os
import queue
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from maintd.jobs.durations import parse_duration
from maintd.scheduler.config.model import SchedulerConfig
from maintd.scheduler.engine import Engine
from maintd.scheduler.systemd import Notifier, ServiceNotifier, WatchdogTiming, watchdog_interval
from tests.configs import make_config, sql_job
from tests.notify_socket import NotifySocket

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


class Systemd(NotifySocket):
    """Every message, with when it arrived (time.monotonic)."""

    def __init__(self, address: str | bytes) -> None:
        self.messages: queue.Queue[tuple[float, str]] = queue.Queue()
        super().__init__(address)

    def received(self, at: float, text: str) -> None:
        self.messages.put((at, text))

    def next(self, timeout: float = 5) -> tuple[float, str]:
        return self.messages.get(timeout=timeout)

    def next_matching(self, pattern: str, timeout: float = 5) -> tuple[float, str]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            at, message = self.next(left)
            if re.search(pattern, message):
                return at, message
        raise AssertionError(f"no message matching {pattern!r} within {timeout}s")


@pytest.fixture
def systemd_socket(private_tmp: Path) -> Iterator[tuple[str, Systemd]]:
    """A path socket in a private directory, as systemd's /run/systemd/notify."""
    path = str(private_tmp / "notify")
    receiver = Systemd(path)
    yield path, receiver
    receiver.close()


def test_notify_sends_one_datagram_of_key_value_lines(systemd_socket: tuple[str, Systemd]) -> None:
    path, systemd = systemd_socket
    notifier = Notifier(path)
    assert notifier.enabled
    assert notifier.notify(READY=1, STATUS="two\nlines", MAINPID=42)
    assert systemd.next()[1] == "READY=1\nSTATUS=two lines\nMAINPID=42"
    notifier.close()


def test_notify_to_an_abstract_socket() -> None:
    name = f"maintd-test-{uuid.uuid4().hex}"
    systemd = Systemd(b"\0" + name.encode())
    try:
        notifier = Notifier.from_env({"NOTIFY_SOCKET": f"@{name}"})
        assert notifier.notify(STATUS="3 jobs, 0 running, last failure: none")
        assert systemd.next()[1] == "STATUS=3 jobs, 0 running, last failure: none"
        notifier.close()
    finally:
        systemd.close()


def test_without_notify_socket_everything_is_a_no_op() -> None:
    assert not Notifier.from_env({}).enabled
    assert Notifier.from_env({}).notify(READY=1) is False
    assert not Notifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled
    service = ServiceNotifier.from_env({"WATCHDOG_USEC": "1000000"})
    assert not service.enabled and service.watchdog is None
    service.ready()
    service.stopping()


async def test_service_notifier_without_socket_starts_no_task() -> None:
    service = ServiceNotifier.disabled()
    service.start(summary=lambda: "x", healthy=lambda: True)
    assert service._tasks == []
    await service.stop()


def test_a_vanished_systemd_is_logged_not_raised(private_tmp: Path) -> None:
    notifier = Notifier(str(private_tmp / "gone"))
    assert notifier.notify(WATCHDOG=1) is False
    assert notifier.notify(WATCHDOG=1) is False
    notifier.close()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "4242"}, 1.0),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "me"}, None),
        ({"WATCHDOG_PID": "4242"}, None),
    ],
)
def test_watchdog_interval_from_env(env: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval(env, pid=4242) == expected


def test_watchdog_timing_pings_at_half_and_refuses_late_ticks() -> None:
    timing = WatchdogTiming(1.0)
    assert (timing.period, timing.tolerance, timing.probe) == (0.5, 0.25, 0.125)
    assert timing.on_time(due=10.0, now=10.2)
    assert not timing.on_time(due=10.0, now=10.3)
    # Even a ping at the edge of the tolerance comes before systemd's deadline.
    assert timing.period + timing.tolerance < timing.interval


def test_ready_and_stopping(systemd_socket: tuple[str, Systemd]) -> None:
    path, systemd = systemd_socket
    service = ServiceNotifier(Notifier(path), None, pid=4242)
    service._summary = lambda: "2 jobs, 0 running, last failure: none"
    service.ready()
    assert systemd.next()[1] == "READY=1\nSTATUS=2 jobs, 0 running, last failure: none\nMAINPID=4242"
    service.stopping()
    service.stopping()  # a second signal says nothing new
    assert systemd.next()[1] == "STOPPING=1\nSTATUS=stopping: 2 jobs, 0 running, last failure: none"
    with pytest.raises(queue.Empty):
        systemd.next(timeout=0.2)
    service.close()


def test_a_reload_is_announced_and_ends_ready(systemd_socket: tuple[str, Systemd]) -> None:
    path, systemd = systemd_socket
    service = ServiceNotifier(Notifier(path), None, pid=4242)
    service._summary = lambda: "3 jobs, 0 running, last failure: none"
    before = time.monotonic_ns() // 1000
    service.reloading()
    fields = dict(line.split("=", 1) for line in systemd.next()[1].splitlines())
    assert fields["RELOADING"] == "1" and fields["STATUS"] == "reloading config"
    # systemd compares MONOTONIC_USEC with its own CLOCK_MONOTONIC reading.
    assert before <= int(fields["MONOTONIC_USEC"]) <= time.monotonic_ns() // 1000
    service.reloaded()
    assert systemd.next()[1] == "READY=1\nSTATUS=3 jobs, 0 running, last failure: none"
    service.close()


async def test_status_is_sent_when_it_changes(systemd_socket: tuple[str, Systemd]) -> None:
    path, systemd = systemd_socket
    status = ["1 jobs, 0 running, last failure: none"]
    service = ServiceNotifier(Notifier(path), None)
    service.start(summary=lambda: status[0], healthy=lambda: True)
    try:
        assert (await asyncio.to_thread(systemd.next))[1] == f"STATUS={status[0]}"
        status[0] = "1 jobs, 1 running, last failure: none"
        assert (await asyncio.to_thread(systemd.next))[1] == f"STATUS={status[0]}"
    finally:
        await service.stop()
        service.close()


async def test_watchdog_pings_stop_while_the_loop_is_blocked(systemd_socket: tuple[str, Systemd]) -> None:
    path, systemd = systemd_socket
    interval = 0.4
    service = ServiceNotifier(Notifier(path), interval)
    service.start(summary=lambda: "ok", healthy=lambda: True)
    try:
        pings = [(await asyncio.to_thread(systemd.next_matching, "^WATCHDOG=1$"))[0] for _ in range(3)]
        assert all(b > a for a, b in itertools.pairwise(pings))
        # A job calling time.sleep in async code: the loop runs nothing, for 5 periods.
        blocked_from = time.monotonic()
        time.sleep(1.0)
        blocked_until = time.monotonic()
        after = (await asyncio.to_thread(systemd.next_matching, "^WATCHDOG=1$"))[0]
        seen = [at for at, message in _drain(systemd) if message == "WATCHDOG=1"]
        assert not [at for at in [after, *seen] if blocked_from < at < blocked_until], "pinged while blocked"
        # The late tick right after the block does not ping: a short on-time wait must come first.
        assert after - blocked_until >= WatchdogTiming(interval).probe / 2
        # ... and then pings resume.
        await asyncio.to_thread(systemd.next_matching, "^WATCHDOG=1$")
    finally:
        await service.stop()
        service.close()


async def test_no_pings_while_the_scheduler_is_not_running(systemd_socket: tuple[str, Systemd]) -> None:
    path, systemd = systemd_socket
    healthy = [False]
    service = ServiceNotifier(Notifier(path), 0.2)
    service.start(summary=lambda: "ok", healthy=lambda: healthy[0])
    try:
        await asyncio.sleep(0.5)  # five periods without a ping: absence cannot be awaited
        assert [m for _, m in _drain(systemd) if m == "WATCHDOG=1"] == []
        healthy[0] = True
        await asyncio.to_thread(systemd.next_matching, "^WATCHDOG=1$")
    finally:
        await service.stop()
        service.close()


def _drain(systemd: Systemd) -> list[tuple[float, str]]:
    got = []
    while True:
        try:
            got.append(systemd.messages.get_nowait())
        except queue.Empty:
            return got


def test_engine_status_summary() -> None:
    config = make_config({"a": sql_job(), "b": sql_job()})
    engine = Engine(config, store=object(), node="n1")  # type: ignore[arg-type]  # summary needs no database
    assert engine.status_summary() == "2 jobs, 0 running, last failure: none"
    engine.runs.last_failure = ("b", datetime(2026, 11, 24, 3, 0, 0, 123456, tzinfo=UTC))
    assert engine.status_summary() == "2 jobs, 0 running, last failure: b at 2026-11-24T03:00:00+00:00"


def _unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file: section -> key -> values (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_the_unit_file_speaks_notify_restarts_and_is_hardened() -> None:
    service = _unit(REPO / "deploy" / "maintd.service")["Service"]
    one = {key: values[-1] for key, values in service.items()}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main"
    assert parse_duration(one["WatchdogSec"]) == timedelta(seconds=30)
    assert one["Restart"] == "on-failure"
    assert "78" in one["RestartPreventExitStatus"].split()  # a config error does not heal by restarting
    assert parse_duration(one["TimeoutStopSec"]) > SchedulerConfig().shutdown_grace
    assert one["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert one["EnvironmentFile"] == "-/etc/maintd/maintd.env"
    assert one["StateDirectory"] == one["ConfigurationDirectory"] == "maintd"
    assert one["DynamicUser"] == "yes"
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome", "PrivateDevices"):
        assert one[key] == "yes", key
    assert one["ProtectSystem"] == "strict"
    env_example = (REPO / "deploy" / "maintd.env.example").read_text()
    assert "MAINTD_DATABASE_DSN=" in env_example
    assert os.path.basename(one["EnvironmentFile"].lstrip("-")) == "maintd.env"
