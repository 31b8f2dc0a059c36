"""Opening the daemon's database: an embedded PostgreSQL or a DSN, a pool, migrations."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import structlog

from maintd.scheduler.config.model import Config
from maintd.scheduler.store.migrate import apply_migrations
from maintd.scheduler.store.run_store import RunStore, create_pool

log = structlog.get_logger("maintd.database")


class DatabaseUnavailable(Exception):
    """The database could not be reached or prepared at start."""


@asynccontextmanager
async def embedded_or_dsn(config: Config) -> AsyncIterator[str]:
    """Yield the DSN to use, starting (and finally stopping) an embedded server if configured."""
    if not config.embedded_database:
        yield config.database.dsn
        return
    from maintd.scheduler.store.embedded import EmbeddedPostgres, EmbeddedPostgresError

    server = EmbeddedPostgres(config.database.data_dir)
    try:
        dsn = await asyncio.to_thread(server.start)
    except EmbeddedPostgresError as exc:
        raise DatabaseUnavailable(f"embedded PostgreSQL in {config.database.data_dir}: {exc}") from exc
    log.info("embedded_postgres_started", data_dir=str(config.database.data_dir))
    try:
        yield dsn
    finally:
        await asyncio.to_thread(server.stop)


@asynccontextmanager
async def open_store(config: Config) -> AsyncIterator[RunStore]:
    """Connect, apply migrations and yield the run store; close everything on exit."""
    async with embedded_or_dsn(config) as dsn:
        try:
            pool = await create_pool(dsn, max_size=config.database.pool_size)
        except (OSError, asyncpg.PostgresError) as exc:
            raise DatabaseUnavailable(f"cannot connect to the database: {exc}") from exc
        try:
            async with pool.acquire() as conn:
                applied = await apply_migrations(conn)
            if applied:
                log.info("migrations_applied", versions=[m.version for m in applied])
            store = RunStore(pool, dsn)
            try:
                yield store
            finally:
                await store.close()
        finally:
            await pool.close()
