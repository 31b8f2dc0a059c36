"""The engine: APScheduler does the timing, PostgreSQL decides what runs."""

from maintd.scheduler.engine.engine import Engine

__all__ = ["Engine"]
