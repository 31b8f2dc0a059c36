"""Shared fixtures: a PostgreSQL server for the integration and end-to-end rings.

The server is ``$MAINTD_TEST_DSN`` (default: the local one on 127.0.0.1:5432);
where none answers, an embedded server is started for the session, so the
suite also passes on a machine without PostgreSQL. Each test gets a database
of its own, cloned from a template that already holds the migrations.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from maintd.scheduler.logs import configure_logging
from maintd.scheduler.store.migrate import apply_migrations
from maintd.scheduler.store.run_store import RunStore, create_pool
from tests.blocking import run_blocking

DEFAULT_TEST_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def pytest_configure(config: pytest.Config) -> None:
    # structlog through the stdlib, as in the daemon, so caplog sees job events.
    configure_logging(json=False, through_stdlib=True)


def _with_database(dsn: str, database: str) -> str:
    """The same server, another database (works for host and unix-socket DSNs)."""
    base, _, query = dsn.partition("?")
    base = base.rsplit("/", 1)[0]
    return f"{base}/{database}" + (f"?{query}" if query else "")


async def _answers(dsn: str) -> bool:
    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except (OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


async def _admin(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture
def private_tmp() -> Iterator[Path]:
    """A fresh directory that only its owner can enter (mode 0700), like /root.

    Not pytest's tmp_path: a second pytest session resets /tmp/pytest-of-<user> to
    0700, cutting off a PostgreSQL server that runs as another OS user.
    """
    path = Path(tempfile.mkdtemp(prefix="maintd-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    """A DSN with the right to create databases."""
    dsn = os.environ.get("MAINTD_TEST_DSN", DEFAULT_TEST_DSN)
    if run_blocking(_answers(dsn)):
        yield dsn
        return
    from maintd.scheduler.store.embedded import EmbeddedPostgres

    scratch = Path(tempfile.mkdtemp(prefix="maintd-test-pg-"))
    server = EmbeddedPostgres(scratch / "data", database="postgres")
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(pg_admin_dsn: str) -> Iterator[str]:
    """A database with the migrations applied, cloned by every test."""
    name = f"maintd_tpl_{uuid.uuid4().hex[:8]}"
    run_blocking(_admin(pg_admin_dsn, f'CREATE DATABASE "{name}"'))

    async def migrate() -> None:
        conn = await asyncpg.connect(_with_database(pg_admin_dsn, name))
        try:
            await apply_migrations(conn)
        finally:
            await conn.close()

    run_blocking(migrate())
    yield name
    run_blocking(_admin(pg_admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def db_dsn(pg_admin_dsn: str, template_db: str) -> Iterator[str]:
    """A fresh database with the daemon's schema, dropped after the test."""
    name = f"maintd_t_{uuid.uuid4().hex[:12]}"
    run_blocking(_admin(pg_admin_dsn, f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"'))
    yield _with_database(pg_admin_dsn, name)
    run_blocking(_admin(pg_admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def empty_db_dsn(pg_admin_dsn: str) -> Iterator[str]:
    """A fresh database without the daemon's schema."""
    name = f"maintd_e_{uuid.uuid4().hex[:12]}"
    run_blocking(_admin(pg_admin_dsn, f'CREATE DATABASE "{name}"'))
    yield _with_database(pg_admin_dsn, name)
    run_blocking(_admin(pg_admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def store(db_dsn: str) -> AsyncIterator[RunStore]:
    pool = await create_pool(db_dsn, max_size=5)
    store = RunStore(pool, db_dsn)
    try:
        yield store
    finally:
        await store.close()
        await pool.close()


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
