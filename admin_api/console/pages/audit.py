"""The audit log: who did what to which job or run, when, from where and through
what (API or console); filtered by principal, action and job, paged."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from maintd.admin_api.console.access import Access
from maintd.admin_api.console.engines import Engined
from maintd.admin_api.console.page_route import PageRoute
from maintd.admin_api.console.render import page
from maintd.admin_api.safe_input import NO_NUL

PAGE_SIZE = 50
# The actions the daemon records (a free value may be typed too).
ACTIONS = ("trigger", "pause", "resume", "cancel", "rerun", "replay", "reload", "sign_in", "sign_out")
Text = Annotated[str, Query(max_length=200, pattern=NO_NUL)]


def router(access: Access) -> APIRouter:
    routes = APIRouter(route_class=PageRoute, include_in_schema=False)

    @routes.get("/ui/audit")
    async def audit(
        request: Request,
        engines: Engined,
        principal: Text = "",
        action: Text = "",
        job: Text = "",
        before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    ) -> HTMLResponse:
        signed = await access.signed_in(request, engines)
        entries = await engines.console.search_audit(
            principal=principal.strip() or None, action=action.strip() or None, job_id=job.strip() or None,
            before_id=before, limit=PAGE_SIZE + 1,
        )  # fmt: skip
        return page(
            request, "audit.html", signed, entries=entries[:PAGE_SIZE],
            older=entries[PAGE_SIZE - 1].id if len(entries) > PAGE_SIZE else None,
            principal=principal, action=action, job=job, actions=ACTIONS,
            principals=access.sessions.tokens.names(),
        )  # fmt: skip

    return routes
