"""Versioned schema migrations, shipped as ``scheduler/store/migrations/NNNN_name.sql``.

Each applies in its own transaction under an advisory lock, so replicas that
start at once never race; applying again is a no-op.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

SCHEMA = "maintd"
# Any constant shared by all maintd processes; "maintd" in ASCII.
_LOCK_KEY = 0x6D61696E7464
_FILE = re.compile(r"^(\d{4})_(\w+)\.sql$")


@dataclass(frozen=True, order=True)
class Migration:
    version: int
    name: str
    sql: str


def shipped_migrations() -> list[Migration]:
    """The migrations in the package, in version order."""
    found = []
    for entry in resources.files("maintd.scheduler.store.migrations").iterdir():
        if match := _FILE.match(entry.name):
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migration versions must be 1..N without gaps, found {versions}")
    return found


class SchemaNewerThanCode(Exception):
    """The database holds migrations this maintd does not ship: a newer maintd migrated it.

    An older replica must not run against it: it would not know the newer rules (its
    writes could undo what they fence). Upgrade it first."""

    def __init__(self, database: int, code: int) -> None:
        super().__init__(
            f"the database's schema is at version {database}, newer than this maintd's ({code}): "
            f"upgrade maintd on this host before starting it"
        )
        self.database = database
        self.code = code


async def apply_migrations(conn: asyncpg.Connection) -> list[Migration]:
    """Apply the migrations not yet applied; return those applied now. Raises
    :class:`SchemaNewerThanCode`, before changing anything, when the database is ahead."""
    shipped = shipped_migrations()
    newest = None
    if await conn.fetchval(f"SELECT to_regclass('{SCHEMA}.schema_migrations')") is not None:
        newest = await conn.fetchval(f"SELECT max(version) FROM {SCHEMA}.schema_migrations")
    if newest is not None and newest > shipped[-1].version:
        raise SchemaNewerThanCode(newest, shipped[-1].version)
    applied_now = []
    for migration in shipped:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
            await conn.execute(
                f"""
                CREATE SCHEMA IF NOT EXISTS {SCHEMA};
                CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_migrations (
                    version    integer PRIMARY KEY,
                    name       text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )
                """
            )
            done = await conn.fetchval(
                f"SELECT true FROM {SCHEMA}.schema_migrations WHERE version = $1", migration.version
            )
            if done:
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                f"INSERT INTO {SCHEMA}.schema_migrations (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
            applied_now.append(migration)
    return applied_now
