"""``maintd trigger`` and ``maintd rerun``: start a run now and, with ``--wait`` or ``--logs``, follow it to its end.

:func:`follow_run` is for any command that starts a run and answers with its
``run_id``: ``maintd trigger`` and ``maintd rerun``.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import timedelta
from typing import Any

from maintd.admin_api.statuses import ENDED_STATUSES
from maintd.jobs.durations import format_duration
from maintd.scheduler.cli.api_client import ApiClient
from maintd.scheduler.cli.exit_codes import EX_INTERRUPTED, EX_WAIT_TIMEOUT
from maintd.scheduler.cli.live import LiveLine, report_end
from maintd.scheduler.cli.logs import follow_logs
from maintd.scheduler.cli.output import show

POLL_S = 0.5


def trigger(args: argparse.Namespace, api: ApiClient) -> int:
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else None
    started = api.call("POST", f"/admin/trigger/{args.job_id}", json_body=trigger_body(args), headers=headers)
    return follow_run(args, api, started)


def trigger_body(args: argparse.Namespace) -> dict[str, Any] | None:
    """The trigger's body from the options given; None (no body: the job as configured) without any."""
    params = {**(args.params_json or {}), **dict(args.params)}
    body: dict[str, Any] = {}
    if params:
        body["params"] = params
    if args.reason is not None:
        body["reason"] = args.reason
    if args.dry_run:
        body["dry_run"] = True
    return body or None


def rerun(args: argparse.Namespace, api: ApiClient) -> int:
    body: dict[str, Any] = {}
    if args.reason is not None:
        body["reason"] = args.reason
    if args.dry_run is not None:
        body["dry_run"] = args.dry_run
    started = api.call("POST", f"/admin/runs/{args.run_id}/rerun", json_body=body or None)
    return follow_run(args, api, started)


def follow_run(args: argparse.Namespace, api: ApiClient, started: dict[str, Any]) -> int:
    """After a run started (``started``: the API's answer): say so, or with ``--wait``/``--logs``
    follow it to its end or ``--timeout``, and return the exit status that tells how it went."""
    run_id, job_id = started["run_id"], started["job_id"]
    if not (args.wait or args.logs):
        return show(
            args, started, lambda _: f"run {run_id} of {job_id} started; follow it with: maintd logs {run_id} --follow"
        )
    deadline = time.monotonic() + args.timeout if args.timeout else None
    line = LiveLine(sys.stderr)
    try:
        if args.logs:
            follow_logs(api, run_id, as_json=False, deadline=deadline, out=sys.stderr)
            run = api.call("GET", f"/admin/runs/{run_id}")
        else:
            run = wait_for_end(api, run_id, None if args.json else line, deadline)
    except KeyboardInterrupt:
        line.clear()
        print(f"\nstopped waiting; run {run_id} goes on. To cancel it: maintd cancel {run_id}", file=sys.stderr)
        return EX_INTERRUPTED
    finally:
        line.clear()
    if run["status"] not in ENDED_STATUSES:
        waited = format_duration(timedelta(seconds=args.timeout))
        print(
            f"maintd {args.command}: gave up after {waited}: run {run_id} is still {run['status']};"
            f" to cancel it: maintd cancel {run_id}",
            file=sys.stderr,
        )
        return EX_WAIT_TIMEOUT
    return report_end(run, as_json=args.json, out=sys.stdout, err=sys.stderr)


def wait_for_end(api: ApiClient, run_id: int, line: LiveLine | None, deadline: float | None) -> dict[str, Any]:
    """Poll the run until it ends or ``deadline`` (monotonic) passes; return it as last seen."""
    began = time.monotonic()
    while True:
        run: dict[str, Any] = api.call("GET", f"/admin/runs/{run_id}")
        now = time.monotonic()
        if run["status"] in ENDED_STATUSES or (deadline is not None and now >= deadline):
            return run
        if line is not None:
            line.update(run, now - began)
        time.sleep(POLL_S if deadline is None else max(0.0, min(POLL_S, deadline - now)))
