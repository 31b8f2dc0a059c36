"""A run's page: what it is, its params and times, its progress and log tail kept live
while it runs (htmx polls ``/live`` every second: the status, the progress, and the
new log lines appended), its error or result, what the operator asked of it (params,
reason, dry run, the run it re-runs), cancel, and re-run."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from maintd.admin_api.console.access import Access, Mutation
from maintd.admin_api.console.engines import Engined
from maintd.admin_api.console.forms import unprocessable
from maintd.admin_api.console.page_route import PageRoute
from maintd.admin_api.console.render import page
from maintd.admin_api.interface import ENDED_STATUSES, RerunIn

RunId = Annotated[int, Path(ge=1, le=2**63 - 1)]
# The lines a run keeps are bounded (scheduler/run_logs.py): one page holds them.
LOG_LINES = 1000
POLL_S = 1


def router(access: Access) -> APIRouter:
    routes = APIRouter(route_class=PageRoute, include_in_schema=False)

    @routes.get("/ui/runs/{run_id}")
    async def run_page(request: Request, run_id: RunId, engines: Engined) -> HTMLResponse:
        signed = await access.signed_in(request, engines)
        run = await engines.admin.get_run(run_id)
        logs = await engines.admin.get_run_logs(run_id, after_seq=0, limit=LOG_LINES)
        last_seq = logs.lines[-1].seq if logs.lines else 0
        return page(
            request, "run.html", signed, run=run, logs=logs, last_seq=last_seq,
            live=run.status not in ENDED_STATUSES, poll_s=POLL_S, fragment=False,
        )  # fmt: skip

    @routes.get("/ui/runs/{run_id}/live")
    async def live(
        request: Request, run_id: RunId, engines: Engined, after_seq: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0
    ) -> Response:
        """The live part of a running run's page, and its new log lines; once the run has
        ended, a full reload (its result or error, without the polling)."""
        signed = await access.signed_in(request, engines)
        run = await engines.admin.get_run(run_id)
        if run.status in ENDED_STATUSES:
            return Response(status_code=status.HTTP_200_OK, headers={"HX-Refresh": "true"})
        logs = await engines.admin.get_run_logs(run_id, after_seq=after_seq, limit=LOG_LINES)
        last_seq = logs.lines[-1].seq if logs.lines else after_seq
        return page(
            request, "run_live.html", signed, run=run, logs=logs, last_seq=last_seq, live=True, poll_s=POLL_S, fragment=True,
        )  # fmt: skip

    @routes.post("/ui/runs/{run_id}/cancel")
    async def cancel(request: Request, run_id: RunId, engines: Engined) -> Response:
        admitted = await access.mutation(request, engines, "cancel", f"run:{run_id}")
        if not isinstance(admitted, Mutation):
            return admitted
        await engines.admin.cancel_run(run_id, admitted.signed.actor)
        return RedirectResponse(f"/ui/runs/{run_id}", status_code=status.HTTP_303_SEE_OTHER)

    @routes.post("/ui/runs/{run_id}/rerun")
    async def rerun(request: Request, run_id: RunId, engines: Engined) -> Response:
        admitted = await access.mutation(request, engines, "rerun", f"run:{run_id}")
        if not isinstance(admitted, Mutation):
            return admitted
        # No reason typed: the run's own, as the engine keeps it.
        reason = admitted.form.get("reason", "").strip() or None
        try:
            asked = RerunIn(reason=reason)
        except ValidationError as exc:
            raise unprocessable(exc) from None
        started = await engines.admin.rerun(run_id, admitted.signed.actor, asked)
        return RedirectResponse(f"/ui/runs/{started.run_id}", status_code=status.HTTP_303_SEE_OTHER)

    return routes
