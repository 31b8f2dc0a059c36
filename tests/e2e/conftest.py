"""The real ``maintd`` process: started on a test config, driven over HTTP and by signals."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from maintd.admin_api.auth import new_token

READY_TIMEOUT_S = 60
# A job that only fires when triggered (in a year at most), for tests of the API around it.
IDLE_SQL_JOB = """
[jobs.tick]
task = "sql"
schedule = "@yearly"
[jobs.tick.params]
sql = "SELECT 1"
"""
ENDED = {"succeeded", "failed", "cancelled", "timed_out", "lost", "skipped", "missed"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def maintd_command() -> list[str]:
    """The installed console script, as a user runs it."""
    script = shutil.which("maintd", path=str(Path(sys.executable).parent))
    assert script, "the maintd console script is not installed in this environment"
    return [script]


def check_config(config: Path, repo_root: Path) -> subprocess.CompletedProcess[str]:
    """``maintd check-config`` on ``config``, as an operator runs it."""
    return subprocess.run(
        [*maintd_command(), "check-config", "--config", str(config)],
        env=run_env(repo_root),
        capture_output=True,
        text=True,
        timeout=30,
    )


def run_env(repo_root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAINTD_", "PG"))}
    # tests.tasks must be importable by the daemon, as an operator's own module would be.
    env["PYTHONPATH"] = str(repo_root)
    env.update(extra)
    return env


@dataclass
class Daemon:
    """A running ``maintd run`` process and what it logged."""

    process: subprocess.Popen[str]
    url: str
    operator_token: str
    viewer_token: str
    events: list[dict[str, Any]] = field(default_factory=list)
    _lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    _reader: threading.Thread | None = None

    def start_reader(self) -> None:
        def read() -> None:
            assert self.process.stderr is not None
            for line in self.process.stderr:
                self._lines.put(line)
            self._lines.put(None)

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()

    def close(self) -> None:
        """Kill the process if it still runs and release its pipe."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        if self._reader:
            self._reader.join(timeout=10)
        if self.process.stderr:
            self.process.stderr.close()

    def wait_for_event(self, predicate: Any, timeout: float = READY_TIMEOUT_S) -> dict[str, Any]:
        """Block until the daemon logs an event matching ``predicate``; fail if it exits first."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(f"maintd exited ({self.process.wait()}) first; events: {self.events[-10:]}")
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": line.rstrip()}
            self.events.append(event)
            if predicate(event):
                return event
        raise AssertionError(f"no matching event within {timeout}s; last events: {self.events[-10:]}")

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)

    def operator(self) -> httpx.Client:
        return self.client(self.operator_token)

    def follow(self, run_id: int, timeout: float = 30) -> dict[str, Any]:
        """Follow a run over the API until it ends, as an admin client does."""
        deadline = time.monotonic() + timeout
        with self.operator() as http:
            while time.monotonic() < deadline:
                run = http.get(f"/admin/runs/{run_id}").json()
                if run["status"] in ENDED:
                    return run
                time.sleep(0.1)
        raise AssertionError(f"run {run_id} still {run['status']} after {timeout}s")

    def terminate(self, timeout: float = 30) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


def serving(event: dict[str, Any]) -> bool:
    """uvicorn's line once the port is bound: the daemon is up."""
    return str(event.get("event", "")).startswith("Uvicorn running on")


def launch(
    config: Path,
    port: int,
    repo_root: Path,
    operator_token: str = "",
    viewer_token: str = "",
    env: dict[str, str] | None = None,
) -> Daemon:
    """Start ``maintd run --config CONFIG`` (with ``env`` added to its environment) and read its log events."""
    process = subprocess.Popen(
        [*maintd_command(), "run", "--config", str(config)],
        env=run_env(repo_root, **(env or {})),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    daemon = Daemon(process, f"http://127.0.0.1:{port}", operator_token, viewer_token)
    daemon.start_reader()
    return daemon


@pytest.fixture
def start_daemon(tmp_path: Path, repo_root: Path) -> Iterator[Any]:
    """Start ``maintd run`` on a config whose [jobs] (TOML text) the test gives, and the other keys of
    [server], [database] and [scheduler] if it gives them. The config is ``tmp_path/config-PORT.toml``."""
    started: list[Daemon] = []

    def start(
        jobs_toml: str,
        *,
        dsn: str,
        scheduler_toml: str = 'shutdown_grace = "5s"\n',
        database_toml: str = "",
        server_toml: str = "",
        env: dict[str, str] | None = None,
    ) -> Daemon:
        port = free_port()
        operator_token, operator_sha = new_token()
        viewer_token, viewer_sha = new_token()
        config = tmp_path / f"config-{port}.toml"
        config.write_text(
            f'[server]\nport = {port}\n{server_toml}[database]\ndsn = "{dsn}"\n{database_toml}[scheduler]\n{scheduler_toml}'
            f'[[admin.tokens]]\nname = "ops"\nrole = "operator"\nsha256 = "{operator_sha}"\n'
            f'[[admin.tokens]]\nname = "watcher"\nrole = "viewer"\nsha256 = "{viewer_sha}"\n{jobs_toml}'
        )
        daemon = launch(config, port, repo_root, operator_token, viewer_token, env)
        started.append(daemon)
        daemon.wait_for_event(serving)
        return daemon

    yield start
    for daemon in started:
        daemon.close()


# The web console's browser fixtures (tests/e2e/browser.py), offered to every e2e test module.
from tests.e2e.browser import browser, new_page, screenshots  # noqa: E402, F401
