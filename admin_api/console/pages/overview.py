"""The overview, the first page after sign-in: every job with its state, schedule,
next fire, last run and the strip of its last 30 fires; filtered by state and text,
paged, refreshed by itself (htmx polls the page and swaps the table in)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from maintd.admin_api.console.access import Access
from maintd.admin_api.console.engines import Engined
from maintd.admin_api.console.page_route import PageRoute
from maintd.admin_api.console.pages.sign_in import sign_in_form
from maintd.admin_api.console.render import page
from maintd.admin_api.interface import JOB_STATES, JobOut
from maintd.admin_api.safe_input import NO_NUL

# Jobs per page: a page of 50 strips is 1,500 cells (rendering them is most of the page's time).
PAGE_SIZE = 50
STRIP = 30
REFRESH_S = 10


def matches(job: JobOut, text: str) -> bool:
    needle = text.lower()
    return needle in job.id.lower() or needle in job.task.lower() or needle in job.schedule.lower()


def router(access: Access) -> APIRouter:
    routes = APIRouter(route_class=PageRoute, include_in_schema=False)

    @routes.get("/ui/")
    async def overview(
        request: Request,
        engines: Engined,
        state: Annotated[str, Query(max_length=20, pattern=NO_NUL)] = "",
        q: Annotated[str, Query(max_length=200, pattern=NO_NUL)] = "",
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    ) -> HTMLResponse:
        signed = await access.sessions.current(request, engines.console)
        if signed is None:
            return sign_in_form(request)
        chosen = next((s for s in JOB_STATES if s == state), None)
        if chosen is None and not q.strip():
            # Unfiltered: only the page's jobs are built (500 job objects cost more than the page).
            shown = await engines.admin.list_jobs(limit=PAGE_SIZE, offset=offset)
            total = len(engines.console.job_ids())
        else:
            jobs = await engines.admin.list_jobs(state=chosen)
            if q.strip():
                jobs = [job for job in jobs if matches(job, q.strip())]
            shown, total = jobs[offset : offset + PAGE_SIZE], len(jobs)
        fires = await engines.console.recent_fires([job.id for job in shown], STRIP)
        return page(
            request, "overview.html", signed, jobs=shown, fires=fires, total=total, offset=offset,
            page_size=PAGE_SIZE, state=chosen or "", q=q, states=JOB_STATES, refresh_s=REFRESH_S, strip=STRIP,
        )  # fmt: skip

    return routes
