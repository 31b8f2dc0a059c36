"""The job functions and their registry.

A job is an async function of a :class:`JobContext` and its typed params,
marked with :func:`task`. This package knows nothing of HTTP or scheduling.
"""

from maintd.jobs.context import JobCancelled, JobContext, LeaseLost
from maintd.jobs.registry import TaskLookupError, TaskSpec, resolve_task, task

__all__ = ["JobCancelled", "JobContext", "LeaseLost", "TaskLookupError", "TaskSpec", "resolve_task", "task"]
