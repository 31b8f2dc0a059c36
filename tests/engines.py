"""Driving an engine in integration tests: a principal, and a run followed to its end."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from maintd.admin_api.interface import Actor
from maintd.scheduler.config.model import Config
from maintd.scheduler.engine import Engine
from maintd.scheduler.engine.clock_guard import NoClockGuard
from maintd.scheduler.store.records import Run
from tests.memory_store import MemoryStore

OPS = Actor(name="ops", role="operator", client="10.0.0.7")
# start_engine(config, node="node-a", clock=None, clock_guard=None) -> a started Engine, stopped
# after the test; with a clock of the test's own and no guard, its clock is not checked.
StartEngine = Callable[..., Awaitable[Engine]]
Clock = Callable[[], datetime]


def memory_engine(config: Config, store: MemoryStore, *, clock: Clock, node: str = "node-a") -> Engine:
    """An engine on an in-memory store, for driving its parts one by one in unit tests:
    nothing is started, fires are claimed at their time, and the clock is not checked."""
    engine = Engine(config, store, node=node, clock=clock, claim_ahead=timedelta(0), clock_guard=NoClockGuard())
    engine.state.accepting = True  # as after start(): fires may be claimed
    return engine


async def beat(engine: Engine) -> None:
    """One heartbeat now, as the engine's loops make it: the lease on its runs (and the
    cancel requests it brings back), then the housekeeping."""
    await engine.fencing.keep()
    await engine.housekeeping()


async def run_to_end(engine: Engine, job_id: str) -> Run:
    """Trigger a job and wait for the run to end."""
    started = await engine.admin.trigger(job_id, OPS)
    await engine.idle()
    return await engine.admin.get_run(started.run_id)


__all__ = ["OPS", "Clock", "Config", "StartEngine", "beat", "memory_engine", "run_to_end"]
