"""Benchmarks that print ratios against a baseline measured in the same run."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg


@asynccontextmanager
async def scratch_database(admin_dsn: str, prefix: str) -> AsyncIterator[str]:
    """Create a database of its own on ``admin_dsn``'s server; yield its DSN; drop it at the end, even on error."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            base, _, query = admin_dsn.partition("?")
            yield f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
