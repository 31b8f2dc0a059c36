"""The console's route class: the engine's errors become an HTML page, not JSON.

The status of each error is :data:`maintd.admin_api.errors.STATUS_OF`'s, the one
mapping the JSON API uses too.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from maintd.admin_api.console.render import error_page
from maintd.admin_api.errors import STATUS_OF
from maintd.admin_api.interface import AdminError


class PageRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except AdminError as exc:
                code = next(code for cls, code in STATUS_OF.items() if isinstance(exc, cls))
                return error_page(request, None, code, str(exc))

        return handle
