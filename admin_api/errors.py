"""The one place that turns errors into HTTP answers: always JSON ``{"detail": ...}``.

FastAPI already answers :class:`~fastapi.HTTPException` (our 401/403/429/503, and
Starlette's 404 for unknown routes and 405 for wrong methods) and request
validation errors (422) with that shape; this module adds the engine's errors
and a JSON 500 for anything unexpected.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from maintd.admin_api.interface import AdminError, Conflict, NotFound, Unavailable, Unprocessable

STATUS_OF: dict[type[AdminError], int] = {
    NotFound: status.HTTP_404_NOT_FOUND,
    Conflict: status.HTTP_409_CONFLICT,
    Unprocessable: status.HTTP_422_UNPROCESSABLE_CONTENT,
    Unavailable: status.HTTP_503_SERVICE_UNAVAILABLE,
}


class ErrorOut(BaseModel):
    """The body of every error answer."""

    detail: Any


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries declaring an :class:`ErrorOut` body for each status code."""
    return {code: {"model": ErrorOut} for code in codes}


async def _admin_error(request: Request, exc: Exception) -> JSONResponse:
    # Starlette picks the handler by the exception's MRO, so exc is one of STATUS_OF's keys or a subclass.
    code = next(code for cls, code in STATUS_OF.items() if isinstance(exc, cls))
    # A 422 names the fields at fault as FastAPI's own validation errors do.
    detail = exc.errors if isinstance(exc, Unprocessable) else str(exc)
    return JSONResponse({"detail": detail}, status_code=code)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Starlette re-raises after sending this, so the server still logs the traceback;
    # the client gets no internals.
    return JSONResponse({"detail": "internal error"}, status_code=status.HTTP_500_INTERNAL_SERVER_ERROR)


def install_error_handlers(app: FastAPI) -> None:
    """Map the engine's errors (:mod:`admin_api.interface`) and unexpected exceptions to JSON answers."""
    for cls in STATUS_OF:
        app.add_exception_handler(cls, _admin_error)
    app.add_exception_handler(Exception, _unexpected)
