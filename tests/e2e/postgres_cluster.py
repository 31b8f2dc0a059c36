"""PostgreSQL servers of a test's own on TCP ports of 127.0.0.1: a primary and its streaming standby.

For the failover tests, and for benches that need other server settings
(``bench/cleanup.py``): the shared server on 5432 is never stopped or
reconfigured; these are initialised, started, crashed and promoted by the
test. The system's binaries (``pg_config --bindir``) run as the OS user
``postgres`` when the tests run as root (PostgreSQL refuses root). Settings go
on the command line; the servers open no unix socket, so they cannot clash
with another server's socket, and they skip fsync (throwaway data).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import subprocess
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest

from tests.e2e.conftest import free_port

TIMEOUT_S = 60
_OPTIONS = "-c listen_addresses=127.0.0.1 -c unix_socket_directories= -c fsync=off -c full_page_writes=off"


def _bindir() -> Path:
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        pytest.skip("no pg_config: the PostgreSQL server binaries are not installed")
    return Path(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True).stdout.strip())


def _as_server(args: list[str]) -> list[str]:
    """The command run as `postgres` when we are root: initdb and postgres refuse root."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def _run(args: list[str | Path]) -> None:
    # PG* variables (PGPORT, PGHOST, ...) would change what the tools do; "/" is a cwd any user can enter.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    command = _as_server([str(a) for a in args])
    result = subprocess.run(command, check=False, capture_output=True, text=True, env=env, cwd="/", timeout=TIMEOUT_S)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} failed ({result.returncode}):\n{result.stdout}{result.stderr}")


def make_server_base(base: Path) -> None:
    """Create ``base``, the directory the servers' data dirs go in."""
    base.mkdir()
    if os.geteuid() == 0:
        # The servers run as `postgres`: it must reach base (through its private parent) and own it.
        entry = pwd.getpwnam("postgres")
        os.chown(base, entry.pw_uid, entry.pw_gid)
        base.parent.chmod(base.parent.stat().st_mode | 0o011)


@dataclass
class PgServer:
    """One server of the test's: its data dir and its port."""

    data_dir: Path
    port: int
    bindir: Path = field(default_factory=_bindir)
    # More settings for the command line, e.g. {"shared_buffers": "256MB"}.
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def log(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    def dsn(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        """initdb: a new, empty cluster in data_dir."""
        _run([self.bindir / "initdb", "-D", self.data_dir, "-U", "postgres", "--auth=trust", "-E", "UTF8",
              "--no-locale"])  # fmt: skip

    def start(self) -> None:
        settings = "".join(f" -c {name}={value}" for name, value in self.settings.items())
        _run([self.bindir / "pg_ctl", "start", "-w", "-t", str(TIMEOUT_S), "-D", self.data_dir, "-l", self.log,
              "-o", f"{_OPTIONS} -c port={self.port}{settings}"])  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """``mode="immediate"``: a crash (no checkpoint, clients cut off), as a dead primary host."""
        _run([self.bindir / "pg_ctl", "stop", "-w", "-t", str(TIMEOUT_S), "-m", mode, "-D", self.data_dir])

    def promote(self) -> None:
        """Make a standby the primary; returns once it accepts writes."""
        _run([self.bindir / "pg_ctl", "promote", "-w", "-t", str(TIMEOUT_S), "-D", self.data_dir])

    def running_pid(self) -> int | None:
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            return None
        return pid


class PrimaryAndStandby:
    """A primary with a database, and a standby streaming from it (``pg_basebackup -R``)."""

    def __init__(self, base: Path, database: str = "maintd") -> None:
        self.database = database
        make_server_base(base)
        self.primary = PgServer(base / "primary", free_port())
        self.standby = PgServer(base / "standby", free_port())

    def start(self) -> None:
        primary, standby = self.primary, self.standby
        primary.init()
        primary.start()
        asyncio.run(_execute(primary.dsn("postgres"), f'CREATE DATABASE "{self.database}"'))
        # -R: standby.signal and primary_conninfo; -X stream: the WAL written meanwhile comes along.
        _run([standby.bindir / "pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
              "-D", standby.data_dir, "-R", "-X", "stream", "-c", "fast"])  # fmt: skip
        standby.start()

    def multi_host_dsn(self) -> str:
        """Both hosts; asyncpg tries them in order and takes the one that accepts writes."""
        return (
            f"postgresql://postgres@127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}/{self.database}"
            "?target_session_attrs=read-write"
        )

    def close(self) -> None:
        """Stop whatever still runs; a server that does not stop is sent SIGQUIT (immediate shutdown)."""
        for server in (self.standby, self.primary):
            if server.running_pid() is None:
                continue
            with suppress(RuntimeError, subprocess.SubprocessError):
                server.stop("immediate")
            if (pid := server.running_pid()) is not None:
                os.kill(pid, signal.SIGQUIT)


async def _execute(dsn: str, statement: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()
