"""The calendar: the last 30 days of every job's fires, one row per job, one cell per
day showing the worst outcome of the day, each cell a link to that day's runs. Days
are the browser's (see :mod:`..zones`)."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from maintd.admin_api.console.access import Access
from maintd.admin_api.console.engines import Engined
from maintd.admin_api.console.page_route import PageRoute
from maintd.admin_api.console.render import page
from maintd.admin_api.console.zones import browser_zone

DAYS = 30
# Jobs per page, as on the overview.
PAGE_SIZE = 50


def router(access: Access) -> APIRouter:
    routes = APIRouter(route_class=PageRoute, include_in_schema=False)

    @routes.get("/ui/calendar")
    async def calendar(
        request: Request,
        engines: Engined,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    ) -> HTMLResponse:
        signed = await access.signed_in(request, engines)
        zone = browser_zone(request, engines.console.default_zone())
        today = engines.console.now().astimezone(zone).date()
        days = [today - timedelta(days=back) for back in range(DAYS - 1, -1, -1)]
        start = datetime.combine(days[0], time(), zone)
        end = datetime.combine(today + timedelta(days=1), time(), zone)
        job_ids = engines.console.job_ids()
        shown = job_ids[offset : offset + PAGE_SIZE]
        cells = {(c.job_id, c.day): c for c in await engines.console.calendar(shown, start, end, zone)}
        return page(
            request, "calendar.html", signed, job_ids=shown, days=days, cells=cells, zone=zone.key,
            offset=offset, page_size=PAGE_SIZE, total=len(job_ids),
        )  # fmt: skip

    return routes
