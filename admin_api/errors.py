"""The one place that turns errors into HTTP answers: always JSON ``{"detail": ...}``.

FastAPI already answers :class:`~fastapi.HTTPException` (our 401/403/429/503, and
Starlette's 404 for unknown routes and 405 for wrong methods) and request
validation errors (422) with that shape; this module adds the engine's errors
and a JSON 500 for anything unexpected.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
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


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    # FastAPI's own answer, except that a value JSON cannot carry (a NaN or an infinity in
    # a body, which Python's parser accepts) is echoed as text instead of failing as a 500.
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(
        {"detail": _json_safe(jsonable_encoder(exc.errors()))}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT
    )


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    return value


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Starlette re-raises after sending this, so the server still logs the traceback;
    # the client gets no internals.
    return JSONResponse({"detail": "internal error"}, status_code=status.HTTP_500_INTERNAL_SERVER_ERROR)


def install_error_handlers(app: FastAPI) -> None:
    """Map the engine's errors (:mod:`admin_api.interface`) and unexpected exceptions to JSON answers."""
    for cls in STATUS_OF:
        app.add_exception_handler(cls, _admin_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(Exception, _unexpected)
