"""The ``sql`` task: run one statement an operator configured."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from maintd.jobs.context import JobContext
from maintd.jobs.registry import task
from maintd.jobs.sql_statements import dry_run_problem

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


def _dry_runnable(params: SqlParams) -> str | None:
    return dry_run_problem(params.sql)


# The statement is never overridable: an operator would otherwise run any SQL as the
# daemon's database user.
@task("sql", dry_run=True, dry_run_check=_dry_runnable)
async def run_sql(ctx: JobContext, params: SqlParams) -> dict[str, Any]:
    """Run the configured statement; the result holds its status line and row count."""
    if ctx.dry_run:
        return await _rolled_back(ctx, params)
    async with ctx.pool.acquire() as conn:
        # The statement is the operator's, run as is (VACUUM cannot run in a transaction), so
        # the lease is checked before it starts; a lease lost while it runs cancels it.
        ctx.raise_if_cancelled()
        status = await conn.execute(params.sql)
    ctx.log.info("sql_done", status=status)
    return parse_status(status)


async def _rolled_back(ctx: JobContext, params: SqlParams) -> dict[str, Any]:
    """A dry run: the statement in a transaction that is rolled back, whatever happens.

    Prepared, so that it is one statement (the configured text could hold a COMMIT
    after a semicolon); it takes the locks it would take for real until the rollback."""
    async with ctx.pool.acquire() as conn:
        ctx.raise_if_cancelled()
        transaction = conn.transaction()
        await transaction.start()
        try:
            statement = await conn.prepare(params.sql)
            await statement.fetch()
            status = statement.get_statusmsg()
        finally:
            await transaction.rollback()
    ctx.log.info("sql_dry_run", status=status)
    return {"dry_run": True, **parse_status(status), "rolled_back": True}
