"""Tasks used by the tests, referenced from test configs as ``tests.tasks:<name>``."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, ConfigDict

from jobs import JobContext, task


class SleepParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float = 60.0
    # Check for cancellation between short steps (as batch jobs do) instead of being interrupted.
    cooperative: bool = False
    # Mark where the test can see it that the run has really started.
    marker: str | None = None


@task()
async def sleep(ctx: JobContext, params: SleepParams) -> dict[str, float]:
    """Sleep, optionally cooperatively, then return how long."""
    if params.marker:
        async with ctx.pool.acquire() as conn:
            await conn.execute("CREATE TABLE IF NOT EXISTS test_markers (marker text, run_id bigint)")
            await conn.execute("INSERT INTO test_markers VALUES ($1, $2)", params.marker, ctx.run_id)
    loop = asyncio.get_running_loop()
    end = loop.time() + params.seconds
    try:
        while (left := end - loop.time()) > 0:
            if params.cooperative:
                ctx.raise_if_cancelled()
            await asyncio.sleep(min(left, 0.05))
    finally:
        ctx.log.info("sleep_cleanup_ran")
    return {"slept": params.seconds}


class FailParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = "boom"


@task()
async def fail(ctx: JobContext, params: FailParams) -> None:
    """Always fail."""
    raise RuntimeError(params.message)
