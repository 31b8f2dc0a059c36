"""A job's page: settings, next 10 fires, duration chart of its last 100 runs, its
history filtered by status and trigger (or by a calendar day) and paged, and the
operator's controls: run now (params for this run, a reason, a dry run), pause, resume,
and the form that starts a replay (pages/replay.py)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Annotated, get_args

from fastapi import APIRouter, Path, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from maintd.admin_api.console.access import Access, Mutation
from maintd.admin_api.console.charts import duration_chart
from maintd.admin_api.console.engines import Engined, Engines
from maintd.admin_api.console.interface import HistoryQuery
from maintd.admin_api.console.page_route import PageRoute
from maintd.admin_api.console.render import page
from maintd.admin_api.console.run_now import RunNowForm
from maintd.admin_api.console.sessions import Signed
from maintd.admin_api.console.zones import browser_zone
from maintd.admin_api.interface import RunStatus, RunTrigger, Unprocessable
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
        return await job_page_of(request, signed, engines, job_id, query=query, day=day)

    @routes.post("/ui/jobs/{job_id}/trigger")
    async def trigger(request: Request, job_id: JobId, engines: Engined) -> Response:
        admitted = await access.mutation(request, engines, "trigger", job_id)
        if not isinstance(admitted, Mutation):
            return admitted
        options = engines.console.run_options(job_id)
        form = RunNowForm.read(admitted.form, options)
        try:
            started = await engines.admin.trigger(
                job_id, admitted.signed.actor, form.request(options), idempotency_key=form.key
            )
        except Unprocessable as exc:
            # Nothing ran: the page again, as typed, with the engine's messages on their fields.
            return await job_page_of(
                request, admitted.signed, engines, job_id, run_now=form.refused(exc),
                status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            )  # fmt: skip
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


async def job_page_of(
    request: Request, signed: Signed, engines: Engines, job_id: str, *, query: HistoryQuery | None = None,
    day: date | None = None, run_now: RunNowForm | None = None, status_code: int = status.HTTP_200_OK,
) -> HTMLResponse:  # fmt: skip
    """The job page: its history as ``query`` asks, its run-now form as ``run_now`` holds it."""
    query = query or HistoryQuery(limit=HISTORY_PAGE + 1)
    job = await engines.admin.get_job(job_id)
    history = await engines.console.job_history(job_id, query)
    durations = await engines.console.job_durations(job_id, CHART_RUNS)
    options = engines.console.run_options(job_id)
    return page(
        request, "job.html", signed, status=status_code, job=job, upcoming=engines.console.upcoming(job_id, UPCOMING),
        history=history[:HISTORY_PAGE], older=history[HISTORY_PAGE - 1].id if len(history) > HISTORY_PAGE else None,
        query=query, day=day, chart=duration_chart(durations, CHART_RUNS),
        options=options, run_now=run_now or RunNowForm.configured(options),
        statuses=get_args(RunStatus), triggers=get_args(RunTrigger),
    )  # fmt: skip
