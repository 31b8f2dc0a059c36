"""The console's routes, assembled: every page's, under ``/ui/``, and its static files.

None is in the OpenAPI schema (``include_in_schema=False``): they answer HTML to a
browser, not JSON to a client. Path, query and header strings are checked as the
JSON API's are (:mod:`maintd.admin_api.safe_input`).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.staticfiles import StaticFiles

from maintd.admin_api.console.access import Access
from maintd.admin_api.console.pages import audit, calendar, job, overview, replay, run, sign_in
from maintd.admin_api.console.sessions import Sessions
from maintd.admin_api.safe_input import reject_unsafe_strings

STATIC_PATH = "/ui/static"


def console_router(sessions: Sessions) -> APIRouter:
    """Every page of the console, admitted by ``sessions``."""
    access = Access(sessions)
    router = APIRouter(include_in_schema=False, dependencies=[Depends(reject_unsafe_strings)])
    for page in (sign_in, overview, job, replay, run, calendar, audit):
        router.include_router(page.router(access))
    return router


def static_files() -> StaticFiles:
    """The console's CSS, JavaScript and vendored htmx, from the installed package."""
    return StaticFiles(packages=[("maintd.admin_api.console", "static")])
