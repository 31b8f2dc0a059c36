"""A job's page: settings, next 10 fires, duration chart of its last 100 runs, its
history filtered by status and trigger (or by a calendar day) and paged, and the
operator's controls: run now, pause, resume."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Annotated, get_args

from fastapi import APIRouter, Path, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from maintd.admin_api.console.access import Access, Mutation
from maintd.admin_api.console.charts import duration_chart
from maintd.admin_api.console.engines import Engined
from maintd.admin_api.console.interface import HistoryQuery
from maintd.admin_api.console.page_route import PageRoute
from maintd.admin_api.console.render import page
from maintd.admin_api.console.zones import browser_zone
from maintd.admin_api.interface import RunStatus, RunTrigger
from maintd.admin_api.safe_input import NO_NUL

UPCOMING = 10
HISTORY_PAGE = 50
CHART_RUNS = 100

JobId = Annotated[str, Path(max_length=100, pattern=NO_NUL)]
Text = Annotated[str, Query(max_length=40, pattern=NO_NUL)]


def router(access: Access) -> APIRouter:
    routes = APIRouter(route_class=PageRoute, include_in_schema=False)

    @routes.get("/ui/jobs/{job_id}")
    async def job_page(
        request: Request,
        job_id: JobId,
        engines: Engined,
        status_filter: Annotated[str, Query(alias="status", max_length=20, pattern=NO_NUL)] = "",
        trigger: Text = "",
        day: Annotated[date | None, Query()] = None,
        before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    ) -> HTMLResponse:
        signed = await access.signed_in(request, engines)
        job = await engines.admin.get_job(job_id)
        since = until = None
        if day is not None:
            zone = browser_zone(request, engines.console.default_zone())
            since = datetime.combine(day, time(), zone)
            until = datetime.combine(day + timedelta(days=1), time(), zone)
        query = HistoryQuery(
            status=status_filter if status_filter in get_args(RunStatus) else None,
            trigger=trigger if trigger in get_args(RunTrigger) else None,
            before_id=before, since=since, until=until, limit=HISTORY_PAGE + 1,
        )  # fmt: skip
        history = await engines.console.job_history(job_id, query)
        durations = await engines.console.job_durations(job_id, CHART_RUNS)
        return page(
            request, "job.html", signed, job=job, upcoming=engines.console.upcoming(job_id, UPCOMING),
            history=history[:HISTORY_PAGE], older=history[HISTORY_PAGE - 1].id if len(history) > HISTORY_PAGE else None,
            query=query, day=day, chart=duration_chart(durations, CHART_RUNS),
            params=engines.console.configured_params(job_id),
            statuses=get_args(RunStatus), triggers=get_args(RunTrigger),
        )  # fmt: skip

    @routes.post("/ui/jobs/{job_id}/trigger")
    async def trigger(request: Request, job_id: JobId, engines: Engined) -> Response:
        admitted = await access.mutation(request, engines, "trigger", job_id)
        if not isinstance(admitted, Mutation):
            return admitted
        started = await engines.admin.trigger(job_id, admitted.signed.actor)
        return RedirectResponse(f"/ui/runs/{started.run_id}", status_code=status.HTTP_303_SEE_OTHER)

    @routes.post("/ui/jobs/{job_id}/pause")
    async def pause(request: Request, job_id: JobId, engines: Engined) -> Response:
        admitted = await access.mutation(request, engines, "pause", job_id)
        if not isinstance(admitted, Mutation):
            return admitted
        await engines.admin.pause(job_id, admitted.signed.actor)
        return RedirectResponse(f"/ui/jobs/{job_id}", status_code=status.HTTP_303_SEE_OTHER)

    @routes.post("/ui/jobs/{job_id}/resume")
    async def resume(request: Request, job_id: JobId, engines: Engined) -> Response:
        admitted = await access.mutation(request, engines, "resume", job_id)
        if not isinstance(admitted, Mutation):
            return admitted
        await engines.admin.resume(job_id, admitted.signed.actor)
        return RedirectResponse(f"/ui/jobs/{job_id}", status_code=status.HTTP_303_SEE_OTHER)

    return routes
