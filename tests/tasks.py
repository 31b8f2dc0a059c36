"""Tasks used by the tests, referenced from test configs as ``tests.tasks:<name>``."""

from __future__ import annotations

import asyncio
import logging
import time

from pydantic import BaseModel, ConfigDict

from maintd.jobs import JobContext, task


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


class BlockParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float = 3.0
    # Yield this long first: the trigger's answer goes out and the run is seen started before the loop blocks.
    after: float = 0.0


@task()
async def block(ctx: JobContext, params: BlockParams) -> dict[str, float]:
    """Block the whole event loop, as a job calling a blocking function in async code does (by mistake)."""
    if params.after:
        await asyncio.sleep(params.after)
    # Deliberately not asyncio.sleep: the systemd watchdog and fencing tests need a wedged loop.
    time.sleep(params.seconds)  # noqa: ASYNC251
    return {"blocked": params.seconds}


class StutterParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float = 6.0
    spell: float = 0.3


@task()
async def stutter(ctx: JobContext, params: StutterParams) -> dict[str, int]:
    """Busy but alive: block the loop ``spell`` seconds at a time (CPU-bound work done in steps), yielding
    between steps, for ``seconds``; the loop lags by up to a spell, never longer."""
    loop = asyncio.get_running_loop()
    end, spells = loop.time() + params.seconds, 0
    while loop.time() < end:
        time.sleep(params.spell)  # noqa: ASYNC251 - deliberately blocking: a step of CPU-bound work
        spells += 1
        await asyncio.sleep(0)
    return {"spells": spells}


class GatedProgressParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: int = 3
    # The test NOTIFYs this channel to let the run go past a step.
    channel: str = "test_gate"


# steps may change for one run: the console's run-now form edits it.
@task(overridable=("steps",))
async def gated_progress(ctx: JobContext, params: GatedProgressParams) -> dict[str, int]:
    """Report progress ``step=1..steps`` and log each step, then wait for a NOTIFY on ``channel``
    before the next: the test lets the run go on once it has seen the step, so none goes unseen."""
    gate: asyncio.Queue[str] = asyncio.Queue()

    def opened(*notice: object) -> None:
        gate.put_nowait(str(notice[-1]))

    async with ctx.pool.acquire() as conn:
        await conn.add_listener(params.channel, opened)
        try:
            for step in range(1, params.steps + 1):
                await ctx.report_progress(step=step, of=params.steps)
                ctx.log.info("step_reached", step=step)
                await gate.get()
        finally:
            await conn.remove_listener(params.channel, opened)
    return {"steps": params.steps}


class ChatterParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lines: int = 5
    # Raise after logging, as a failing job does.
    fail: str | None = None
    # After logging, set tests.tasks.LOGGED[hold] and wait until the run is cancelled.
    hold: str | None = None


# Set by `chatter` runs with `hold`: the test awaits the event instead of polling.
LOGGED: dict[str, asyncio.Event] = {}


@task()
async def chatter(ctx: JobContext, params: ChatterParams) -> dict[str, int]:
    """Log ``lines`` events with fields, and one through a plain stdlib logger."""
    for n in range(1, params.lines + 1):
        ctx.log.info("chatter_line", n=n, of=params.lines, table="sessions")
    logging.getLogger("tests.tasks").warning("plain stdlib logging, %d lines", params.lines)
    if params.fail:
        raise RuntimeError(params.fail)
    if params.hold:
        LOGGED.setdefault(params.hold, asyncio.Event()).set()
        await ctx.cancelled.wait()
        ctx.raise_if_cancelled()
    return {"lines": params.lines}


class GateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gate: str


# Gates that `wait_at_gate` runs wait at until the test opens them (created on first use).
GATES: dict[str, asyncio.Event] = {}


@task()
async def wait_at_gate(ctx: JobContext, params: GateParams) -> None:
    """Hold a slot of the replica until the test opens ``GATES[gate]``."""
    await GATES.setdefault(params.gate, asyncio.Event()).wait()


class DryGateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gate: str
    # What a run may change for itself: a label it returns.
    label: str = "configured"
    limit: int = 10


@task(overridable=("label", "limit"), dry_run=True)
async def dry_gate(ctx: JobContext, params: DryGateParams) -> dict[str, object]:
    """Wait at ``GATES[gate]`` like ``wait_at_gate``, then say how it ran: its label and whether dry."""
    await GATES.setdefault(params.gate, asyncio.Event()).wait()
    return {"label": params.label, "limit": params.limit, "dry_run": ctx.dry_run, "for": ctx.scheduled_for.isoformat()}
