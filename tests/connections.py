"""Cutting a test database off from new and existing connections, as a server refusing them would."""

from __future__ import annotations

import asyncpg


async def allow_connections(admin_dsn: str, database: str, allowed: bool) -> None:
    """Let ``database`` take connections again, or refuse new ones and end those it has."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", database)
    finally:
        await conn.close()
