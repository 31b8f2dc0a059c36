"""``maintd jobs`` and ``maintd runs``: the daemon's jobs and runs as tables."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from maintd.scheduler.cli.api_client import ApiClient
from maintd.scheduler.cli.output import now, show
from maintd.scheduler.cli.render import jobs_table, runs_table, use_colour

JOBS_PAGE = 500


def jobs(args: argparse.Namespace, api: ApiClient) -> int:
    listed = fetch_jobs(api, state=args.state, limit=args.limit, offset=args.offset)
    return show(args, listed, lambda listed: jobs_table(listed, now(), colour=use_colour(sys.stdout)))


def fetch_jobs(api: ApiClient, *, state: str | None, limit: int | None, offset: int) -> list[Any]:
    """The jobs asked for; without a limit, all of them, a page at a time (one answer
    about 10,000 jobs would hold the daemon's event loop for seconds)."""
    params: dict[str, Any] = {"state": state}
    if limit is not None:
        return list(api.call("GET", "/admin/jobs", params={**params, "limit": limit, "offset": offset}))
    listed: list[Any] = []
    while True:
        page = api.call("GET", "/admin/jobs", params={**params, "limit": JOBS_PAGE, "offset": offset + len(listed)})
        listed += page
        if len(page) < JOBS_PAGE:
            return listed


def runs(args: argparse.Namespace, api: ApiClient) -> int:
    params = {k: v for k, v in {"job_id": args.job, "status": args.status, "limit": args.limit}.items() if v}
    listed = api.call("GET", "/admin/runs", params=params)
    return show(args, listed, lambda listed: runs_table(listed, now(), colour=use_colour(sys.stdout)))
