"""The open routes a supervisor and a scraper call: liveness, readiness and metrics."""

from __future__ import annotations

from typing import Annotated, Literal

import structlog
from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel

from maintd.admin_api.errors import responses
from maintd.admin_api.safe_input import reject_unsafe_strings
from maintd.admin_api.state import STARTING, engine_of, require_metrics_registry

log = structlog.get_logger("maintd.api")

# 422: a header holding a NUL (admin_api.safe_input), the one input these routes read.
router = APIRouter(tags=["health"], responses=responses(422), dependencies=[Depends(reject_unsafe_strings)])


class Healthy(BaseModel):
    """The process serves."""

    status: Literal["ok"] = "ok"


class Ready(BaseModel):
    """The database answers and the scheduler runs."""

    status: Literal["ready"] = "ready"


class NotReady(BaseModel):
    """Why the daemon cannot do its work yet (or any more)."""

    status: Literal["not ready"] = "not ready"
    reasons: list[str]


@router.get("/healthz")
async def healthz() -> Healthy:
    """200 while the process serves."""
    return Healthy()


@router.get("/readyz", response_model=Ready, responses={status.HTTP_503_SERVICE_UNAVAILABLE: {"model": NotReady}})
async def readyz(request: Request) -> JSONResponse:
    """200 when the engine reports no reason to be unready, else 503 with the reasons."""
    engine = engine_of(request)
    if engine is None:
        reasons = [STARTING]
    else:
        try:
            reasons = await engine.readiness()
        except Exception:
            # A probe must answer "not ready", not 500, when the check itself breaks.
            # The route is open, so the message (a DSN, a host) goes to the log only.
            log.exception("readiness_check_failed")
            reasons = ["readiness: check failed"]
    if reasons:
        return JSONResponse(NotReady(reasons=reasons).model_dump(), status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
    return JSONResponse(Ready().model_dump())


# The bare Response class leaves the 200 body undeclared, so the text format can
# be declared by hand while the 503 keeps its JSON error body.
@router.get(
    "/metrics",
    response_class=Response,
    responses={
        status.HTTP_200_OK: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        **responses(status.HTTP_503_SERVICE_UNAVAILABLE),
    },
)
async def metrics(registry: Annotated[CollectorRegistry, Depends(require_metrics_registry)]) -> Response:
    """The daemon's metrics in the Prometheus text format."""
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
