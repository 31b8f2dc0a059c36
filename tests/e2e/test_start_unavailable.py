"""A replica that cannot get its port or its database at start: one line on stderr, exit 69.

systemd's ``Restart=on-failure`` retries 69 (EX_UNAVAILABLE); a traceback tells the
operator nothing more, and a busy port must be found before migrations run.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from tests.conftest import _admin, _with_database
from tests.e2e.conftest import free_port, maintd_command, run_env

pytestmark = pytest.mark.e2e


def run_maintd(config: Path, repo_root: Path) -> subprocess.CompletedProcess[str]:
    config_text = config.read_text()
    # Tokens configured, so that a start that gets further logs nothing about their absence.
    config.write_text(config_text + '[[admin.tokens]]\nname = "ops"\nrole = "operator"\nsha256 = "' + "ab" * 32 + '"\n')
    return subprocess.run(
        [*maintd_command(), "run", "--config", str(config)],
        env=run_env(repo_root),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def has_schema(dsn: str) -> bool:
    async def check() -> bool:
        conn = await asyncpg.connect(dsn)
        try:
            return bool(await conn.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname = 'maintd'"))
        finally:
            await conn.close()

    return asyncio.run(check())


def test_a_busy_port_is_one_line_and_exit_69_before_migrations(
    tmp_path: Path, repo_root: Path, empty_db_dsn: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "config.toml"
        config.write_text(f'[server]\nport = {port}\n[database]\ndsn = "{empty_db_dsn}"\n')
        result = run_maintd(config, repo_root)
    assert result.returncode == 69, result.stderr
    assert result.stderr.splitlines() == [f"maintd run: cannot listen on 127.0.0.1:{port}: Address already in use"]
    assert not has_schema(empty_db_dsn)  # nothing ran: no migrations, no engine


@pytest.fixture
def role_without_connections(pg_admin_dsn: str) -> Iterator[str]:
    """A database and a role that may not connect to it (CONNECTION LIMIT 0): "too many connections"."""
    name = f"maintd_nc_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(pg_admin_dsn, f'CREATE DATABASE "{name}"', f'CREATE ROLE "{name}" LOGIN CONNECTION LIMIT 0'))
    dsn = urlsplit(_with_database(pg_admin_dsn, name))
    yield urlunsplit(dsn._replace(netloc=f"{name}@{dsn.hostname}:{dsn.port or 5432}"))
    asyncio.run(_admin(pg_admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'DROP ROLE IF EXISTS "{name}"'))


def test_too_many_connections_at_start_is_one_line_and_exit_69(
    tmp_path: Path, repo_root: Path, role_without_connections: str
) -> None:
    port = free_port()
    config = tmp_path / "config.toml"
    config.write_text(f'[server]\nport = {port}\n[database]\ndsn = "{role_without_connections}"\n')
    result = run_maintd(config, repo_root)
    assert result.returncode == 69, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("maintd run: cannot connect to the database: too many connections for role"), line
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # the port was released


def test_a_refused_connection_at_start_is_one_line_and_exit_69(tmp_path: Path, repo_root: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[server]\nport = {free_port()}\n[database]\ndsn = "postgresql://postgres@127.0.0.1:{free_port()}/x"\n'
    )
    result = run_maintd(config, repo_root)
    assert result.returncode == 69, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("maintd run: cannot connect to the database: "), line
