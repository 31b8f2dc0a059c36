"""Replay of a job's missed fires from the console, in two steps: the job page's form
posts a date range and the page lists the fires a replay would run (the engine's dry
run, which changes nothing); its confirm button posts the same range again and the
replay starts (202), the page listing the fires it runs.

The days are the browser's (its time zone, as the calendar counts them): ``from``'s
midnight up to the end of ``to``'s day. Both steps go through the engine's ``replay``,
as the JSON API's route does, and are audited there as the console's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo

from fastapi import APIRouter, Request, status
from fastapi.responses import Response
from pydantic import ValidationError

from maintd.admin_api.console.access import Access, Mutation
from maintd.admin_api.console.engines import Engined
from maintd.admin_api.console.forms import unprocessable
from maintd.admin_api.console.page_route import PageRoute
from maintd.admin_api.console.pages.job import JobId
from maintd.admin_api.console.render import page
from maintd.admin_api.console.zones import browser_zone
from maintd.admin_api.interface import ReplayIn, Unprocessable


@dataclass(frozen=True)
class ReplayForm:
    """The range as posted (ISO dates), the reason, and whether this is the confirmation."""

    from_day: str
    to_day: str
    reason: str
    confirmed: bool

    @classmethod
    def read(cls, form: dict[str, str]) -> ReplayForm:
        return cls(form.get("from", ""), form.get("to", ""), form.get("reason", "").strip(), form.get("confirm") == "1")

    def request(self, zone: tzinfo) -> ReplayIn:
        """The engine's request: a dry run until confirmed. Raises Unprocessable for a bad range."""
        try:
            first, last = date.fromisoformat(self.from_day), date.fromisoformat(self.to_day)
            after_last = last + timedelta(days=1)
        except (ValueError, OverflowError):  # OverflowError: the day after 9999-12-31
            raise Unprocessable(
                [{"type": "date", "loc": ["body", "from"], "msg": "from, to: pick the first and the last day"}]
            ) from None
        # Inclusive at both ends, as the engine takes them: the last microsecond of `to`'s day.
        start = datetime.combine(first, time(), zone)
        end = datetime.combine(after_last, time(), zone) - timedelta(microseconds=1)
        try:
            return ReplayIn.model_validate(
                {"from": start, "to": end, "dry_run": not self.confirmed, "reason": self.reason or None}
            )
        except ValidationError as exc:
            raise unprocessable(exc) from None


def router(access: Access) -> APIRouter:
    routes = APIRouter(route_class=PageRoute, include_in_schema=False)

    @routes.post("/ui/jobs/{job_id}/replay")
    async def replay(request: Request, job_id: JobId, engines: Engined) -> Response:
        admitted = await access.mutation(request, engines, "replay", job_id)
        if not isinstance(admitted, Mutation):
            return admitted
        form = ReplayForm.read(admitted.form)
        job = await engines.admin.get_job(job_id)
        try:
            asked = form.request(browser_zone(request, engines.console.default_zone()))
            replayed = await engines.admin.replay(job_id, admitted.signed.actor, asked)
        except Unprocessable as exc:
            return page(
                request, "replay.html", admitted.signed, status=status.HTTP_422_UNPROCESSABLE_CONTENT,
                job=job, form=form, replayed=None, errors=[error["msg"] for error in exc.errors],
            )  # fmt: skip
        return page(
            request, "replay.html", admitted.signed,
            status=status.HTTP_200_OK if replayed.dry_run else status.HTTP_202_ACCEPTED,
            job=job, form=form, replayed=replayed, errors=[],
        )  # fmt: skip

    return routes
