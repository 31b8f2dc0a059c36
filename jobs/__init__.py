"""The job functions and their registry.

A job is an async function of a :class:`JobContext` and its typed params,
marked with :func:`task`. This package knows nothing of HTTP or scheduling.
Names are imported when first used: the command line reads ``jobs.durations``
without loading pydantic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from maintd.jobs.context import JobCancelled, JobContext, LeaseLost
    from maintd.jobs.registry import TaskLookupError, TaskSpec, resolve_task, task

__all__ = ["JobCancelled", "JobContext", "LeaseLost", "TaskLookupError", "TaskSpec", "resolve_task", "task"]
_HOMES = {
    "JobCancelled": "maintd.jobs.context",
    "JobContext": "maintd.jobs.context",
    "LeaseLost": "maintd.jobs.context",
    "TaskLookupError": "maintd.jobs.registry",
    "TaskSpec": "maintd.jobs.registry",
    "resolve_task": "maintd.jobs.registry",
    "task": "maintd.jobs.registry",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'maintd.jobs' has no attribute {name!r}")
