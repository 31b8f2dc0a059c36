"""maintd: a scheduler daemon for periodic maintenance jobs against PostgreSQL.

What a job imports, all from here::

    from maintd import JobContext, task

The daemon itself is ``maintd.scheduler``, the built-in tasks ``maintd.jobs`` and the
HTTP API ``maintd.admin_api``; a user's frozen-clock tests use ``maintd.testing``.
Names are imported when first used, so that ``import maintd`` (the CLI's first step)
costs nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from maintd.jobs import JobCancelled, JobContext, LeaseLost, task

__all__ = ["JobCancelled", "JobContext", "LeaseLost", "task"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("maintd.jobs"), name)
    raise AttributeError(f"module 'maintd' has no attribute {name!r}")
