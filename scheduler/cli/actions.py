"""``maintd cancel``, ``pause`` and ``resume``: one request each, and a line that says what follows."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from maintd.scheduler.cli.api_client import ApiClient
from maintd.scheduler.cli.output import now, show
from maintd.scheduler.cli.render import local_time, relative


def cancel(args: argparse.Namespace, api: ApiClient) -> int:
    run = api.call("POST", f"/admin/runs/{args.run_id}/cancel")
    return show(
        args,
        run,
        lambda run: (
            f"run {run['id']} of {run['job_id']}: cancel requested; `maintd runs --job {run['job_id']}` shows when it stopped"
        ),
    )


def pause(args: argparse.Namespace, api: ApiClient) -> int:
    job = api.call("POST", f"/admin/jobs/{args.job_id}/pause")
    return show(args, job, lambda job: f"{job['id']} paused on every replica; `maintd resume {job['id']}` undoes it")


def resume(args: argparse.Namespace, api: ApiClient) -> int:
    job = api.call("POST", f"/admin/jobs/{args.job_id}/resume")
    return show(args, job, _resumed)


def _resumed(job: dict[str, Any]) -> str:
    next_at = job.get("next_run_time")
    when = datetime.fromisoformat(next_at) if next_at else None
    text = f"; next run {local_time(when)} ({relative(when, now())})" if when else ""
    return f"{job['id']} resumed{text}"
