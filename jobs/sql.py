"""The ``sql`` task: run one statement an operator configured."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from maintd.jobs.context import JobContext
from maintd.jobs.registry import task

# Command tags whose last word is a row count (PostgreSQL's CommandComplete).
_COUNTED = {"INSERT", "DELETE", "UPDATE", "SELECT", "MERGE", "MOVE", "FETCH", "COPY"}


class SqlParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sql: str = Field(min_length=1, description="one SQL statement, run as is")


def parse_status(status: str) -> dict[str, Any]:
    """Turn a command tag such as ``DELETE 42`` into ``{"status": ..., "rows": 42}``."""
    result: dict[str, Any] = {"status": status}
    words = status.split()
    if words and words[0] in _COUNTED and words[-1].isdigit():
        result["rows"] = int(words[-1])
    return result


@task("sql")
async def run_sql(ctx: JobContext, params: SqlParams) -> dict[str, Any]:
    """Run the configured statement; the result holds its status line and row count."""
    async with ctx.pool.acquire() as conn:
        # The statement is the operator's, run as is (VACUUM cannot run in a transaction), so
        # the lease is checked before it starts; a lease lost while it runs cancels it.
        ctx.raise_if_cancelled()
        status = await conn.execute(params.sql)
    ctx.log.info("sql_done", status=status)
    return parse_status(status)
