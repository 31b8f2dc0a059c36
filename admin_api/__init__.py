"""The admin HTTP API: FastAPI routers for jobs, runs and audit, auth, health and metrics.

It sees the daemon only through :class:`admin_api.interface.AdminEngine`, so its
routes are testable against a fake; it holds no SQL and no scheduler of its own.
"""

from maintd.admin_api.errors import install_error_handlers
from maintd.admin_api.routes import build_routers

__all__ = ["build_routers", "install_error_handlers"]
