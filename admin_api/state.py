"""What the API reads from ``app.state``, which the daemon fills.

The daemon sets ``engine`` in its lifespan, possibly after the app is built,
so every reader must cope with it being absent while the process starts.
"""

from __future__ import annotations

from fastapi import HTTPException, Request, status
from prometheus_client import CollectorRegistry

from maintd.admin_api.interface import AdminEngine

STARTING = "starting"


def engine_of(request: Request) -> AdminEngine | None:
    """The daemon's engine, or None while it starts."""
    return getattr(request.app.state, "engine", None)


def require_engine(request: Request) -> AdminEngine:
    """Dependency: the daemon's engine; 503 while it starts."""
    engine = engine_of(request)
    if engine is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, STARTING)
    return engine


def require_metrics_registry(request: Request) -> CollectorRegistry:
    """Dependency: the registry the daemon fills; 503 until it is set."""
    registry: CollectorRegistry | None = getattr(request.app.state, "metrics_registry", None)
    if registry is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, STARTING)
    return registry
