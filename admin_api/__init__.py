"""The admin HTTP API: FastAPI routers for jobs, runs and audit, auth, health and metrics.

It sees the daemon only through :class:`admin_api.interface.AdminEngine`, so its
routes are testable against a fake; it holds no SQL and no scheduler of its own.
Names are imported when first used: the command line reads ``admin_api.statuses``
without loading FastAPI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from maintd.admin_api.errors import install_error_handlers
    from maintd.admin_api.routes import build_routers

__all__ = ["build_routers", "install_error_handlers"]
_HOMES = {"build_routers": "maintd.admin_api.routes", "install_error_handlers": "maintd.admin_api.errors"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'maintd.admin_api' has no attribute {name!r}")
