"""The embedded PostgreSQL of ``dsn = "embedded"``: real servers in private scratch directories.

Run as root too (CI is root): the module must then run the server as an
unprivileged user, through parent directories root keeps private (mode 0700).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from maintd.scheduler.store.embedded import EmbeddedPostgres, EmbeddedPostgresError, find_postgres_bindir

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().splitlines()[0])


def processes_in(data_dir: Path) -> list[int]:
    """Pids of every process whose cwd is data_dir: a postmaster and all its children chdir there."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.path.samefile(entry / "cwd", data_dir):
                    pids.append(int(entry.name))
            except OSError:
                continue  # gone, or not ours to inspect
    return pids


def wait_until_gone(data_dir: Path, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while processes_in(data_dir):
        assert time.monotonic() < deadline, f"postgres processes left in {data_dir}: {processes_in(data_dir)}"
        time.sleep(0.05)


async def fetchval(dsn: str, sql: str, *args: object) -> object:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


@pytest.fixture
def embedded() -> Iterator[Callable[..., EmbeddedPostgres]]:
    """Make EmbeddedPostgres objects; afterwards stop them and any server left on their dirs."""
    made: list[EmbeddedPostgres] = []
    data_dirs: set[Path] = set()

    def make(data_dir: Path, database: str = "maintd") -> EmbeddedPostgres:
        server = EmbeddedPostgres(data_dir, database=database)
        made.append(server)
        data_dirs.add(data_dir)
        return server

    yield make
    for server in made:
        try:
            server.stop()
        except EmbeddedPostgresError:
            pass  # the fast shutdown below still runs
    for data_dir in data_dirs:
        try:
            pid = postmaster_pid(data_dir)
        except (OSError, ValueError, IndexError):
            continue
        if pid in processes_in(data_dir):  # never signal a stranger that reused a stale pid
            os.kill(pid, signal.SIGINT)  # fast shutdown
            wait_until_gone(data_dir)


@pytest.fixture
def data_dir(private_tmp: Path) -> Path:
    # A private parent, like /root: the server's OS user must still reach the
    # data dir when we are root.
    private = private_tmp / "private"
    private.mkdir(mode=0o700)
    return private / "pgdata"


async def test_start_write_stop_restart_keeps_data(embedded: Callable[..., EmbeddedPostgres], data_dir: Path) -> None:
    server = embedded(data_dir)
    dsn = server.start()
    assert dsn == server.dsn
    assert dsn.startswith("postgresql://postgres@/maintd?host=/")
    assert server.start() == dsn  # idempotent

    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT current_database()") == "maintd"
        assert await conn.fetchval("SHOW listen_addresses") == ""  # unix socket only, no TCP port
        system_id = await conn.fetchval("SELECT system_identifier FROM pg_control_system()")
        await conn.execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('kept')")
    finally:
        await conn.close()
    pid = postmaster_pid(data_dir)
    pid_file = (data_dir / "postmaster.pid").read_text()
    if os.geteuid() == 0:
        assert data_dir.stat().st_uid != 0
        assert Path(f"/proc/{pid}").stat().st_uid != 0

    server.stop()
    assert not (data_dir / "postmaster.pid").exists()
    assert processes_in(data_dir) == []
    with pytest.raises(EmbeddedPostgresError, match="not started"):
        _ = server.dsn

    # A stale postmaster.pid (its pid gone) as a crash leaves it: pg_ctl start copes.
    (data_dir / "postmaster.pid").write_text(pid_file)
    os.chown(data_dir / "postmaster.pid", data_dir.stat().st_uid, data_dir.stat().st_gid)
    again = embedded(data_dir)
    dsn = again.start()
    # Same cluster (a second initdb would make a new system identifier), same row.
    assert await fetchval(dsn, "SELECT system_identifier FROM pg_control_system()") == system_id
    assert await fetchval(dsn, "SELECT v FROM t") == "kept"
    again.stop()
    assert processes_in(data_dir) == []


async def test_long_data_dir_and_odd_database_name(
    embedded: Callable[..., EmbeddedPostgres], private_tmp: Path
) -> None:
    data_dir = private_tmp / ("d" * 60) / "with space" / ("e" * 60)
    assert len(str(data_dir / ".s.PGSQL.5432")) > 107
    server = embedded(data_dir, database="Odd 'name'")
    dsn = server.start()
    assert await fetchval(dsn, "SELECT current_database()") == "Odd 'name'"

    socket_dir = Path((data_dir / "postmaster.pid").read_text().splitlines()[4])
    assert len(str(socket_dir / ".s.PGSQL.5432")) <= 107
    assert socket_dir.stat().st_mode & 0o777 == 0o700  # trust auth: the directory is the guard
    # Reproducible for the same data dir: a second object finds the same socket.
    assert embedded(data_dir, database="Odd 'name'").start() == dsn

    server.stop()
    assert processes_in(data_dir) == []
    assert not socket_dir.exists()


async def test_second_object_reuses_and_never_stops_the_server(
    embedded: Callable[..., EmbeddedPostgres], data_dir: Path
) -> None:
    owner = embedded(data_dir)
    dsn = owner.start()
    pid = postmaster_pid(data_dir)

    guest = embedded(data_dir)
    assert guest.start() == dsn
    assert postmaster_pid(data_dir) == pid
    guest.stop()
    assert await fetchval(dsn, "SELECT 1") == 1
    assert postmaster_pid(data_dir) == pid

    owner.stop()
    assert processes_in(data_dir) == []


async def test_reuses_a_server_left_by_a_crashed_daemon(
    embedded: Callable[..., EmbeddedPostgres], data_dir: Path
) -> None:
    # A process that starts the server and dies without stop(): the server stays.
    code = (
        "import os, sys; from pathlib import Path; from maintd.scheduler.store.embedded import EmbeddedPostgres; "
        "EmbeddedPostgres(Path(sys.argv[1])).start(); os._exit(1)"
    )
    crashed = subprocess.run(
        [sys.executable, "-c", code, str(data_dir)], cwd=REPO, capture_output=True, text=True, check=False, timeout=60
    )
    assert crashed.returncode == 1, crashed.stderr
    pid = postmaster_pid(data_dir)
    assert pid in processes_in(data_dir)

    survivor = embedded(data_dir)
    dsn = survivor.start()
    assert postmaster_pid(data_dir) == pid
    assert await fetchval(dsn, "SELECT 1") == 1
    survivor.stop()  # not its server
    assert pid in processes_in(data_dir)


async def test_restarts_after_the_server_was_killed(embedded: Callable[..., EmbeddedPostgres], data_dir: Path) -> None:
    first = embedded(data_dir)
    dsn = first.start()
    await fetchval(dsn, "CREATE TABLE t AS SELECT 42 AS v")
    os.kill(postmaster_pid(data_dir), signal.SIGKILL)
    wait_until_gone(data_dir)
    assert (data_dir / "postmaster.pid").exists()  # stale: pg_ctl start must cope

    second = embedded(data_dir)
    dsn = second.start()
    assert await fetchval(dsn, "SELECT v FROM t") == 42  # crash recovery kept the committed row
    second.stop()
    assert processes_in(data_dir) == []


def test_start_failure_reports_the_server_log(embedded: Callable[..., EmbeddedPostgres], data_dir: Path) -> None:
    server = embedded(data_dir)
    server.start()
    server.stop()
    with (data_dir / "postgresql.conf").open("a") as conf:
        conf.write("no_such_setting = 1\n")
    with pytest.raises(EmbeddedPostgresError) as failure:
        embedded(data_dir).start()
    message = str(failure.value)
    assert f"starting PostgreSQL in {data_dir}" in message
    assert "no_such_setting" in message  # from the tail of postgres.log
    assert processes_in(data_dir) == []


def test_bindir_found_without_importing_pgserver() -> None:
    code = (
        "import sys; from maintd.scheduler.store.embedded import find_postgres_bindir; "
        "print(find_postgres_bindir()); print('pgserver' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    bindir, imported = out.split()
    assert imported == "False"
    assert Path(bindir) == find_postgres_bindir()
    assert "pgserver" in Path(bindir).parts  # the bundled PostgreSQL is preferred
    assert all((Path(bindir) / name).exists() for name in ("initdb", "pg_ctl", "postgres", "psql"))
