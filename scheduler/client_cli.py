"""Admin commands that talk to a running daemon's API: jobs, runs, trigger, cancel, pause, resume.

The URL comes from ``--url`` or the config's ``[server]``; the bearer token from
``$MAINTD_TOKEN``. Output is a table on a terminal, JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from scheduler.config import default_config_path, load_config

TOKEN_ENV = "MAINTD_TOKEN"
EX_FAILED = 1
EX_UNAVAILABLE = 69
WAIT_POLL_S = 0.5
_ENDED = {"succeeded", "failed", "cancelled", "timed_out", "lost", "skipped", "missed"}


class ClientError(Exception):
    """The daemon could not be reached or refused the request."""


def add_client_commands(command: Callable[..., argparse.ArgumentParser], with_config: Callable[..., None]) -> None:
    def client(name: str, handler: Callable[[argparse.Namespace, httpx.Client], int], help: str) -> argparse.ArgumentParser:
        sub = command(name, _with_client(handler), help)
        with_config(sub)
        sub.add_argument("--url", help="daemon URL (default: from the config's [server])")
        sub.add_argument("--json", action="store_true", help="print JSON instead of a table")
        return sub

    client("jobs", _jobs, "list jobs with their next and last runs")
    runs = client("runs", _runs, "list runs, newest first")
    runs.add_argument("--job", help="only this job's runs")
    runs.add_argument("--status", help="only runs with this status")
    runs.add_argument("--limit", type=int, default=20)
    trigger = client("trigger", _trigger, "run a job now")
    trigger.add_argument("job_id", metavar="JOB")
    trigger.add_argument("--wait", action="store_true", help="follow the run; exit 0 only if it succeeds")
    client("cancel", _cancel, "cancel a run in progress").add_argument("run_id", metavar="RUN", type=int)
    client("pause", _pause, "pause a job's schedule on every replica").add_argument("job_id", metavar="JOB")
    client("resume", _resume, "resume a paused job").add_argument("job_id", metavar="JOB")


def _with_client(handler: Callable[[argparse.Namespace, httpx.Client], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        url = args.url or _url_from_config(args)
        token = os.environ.get(TOKEN_ENV, "").strip()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            with httpx.Client(base_url=url, headers=headers, timeout=10) as http:
                return handler(args, http)
        except ClientError as exc:
            print(f"maintd {args.command}: {exc}", file=sys.stderr)
            return EX_UNAVAILABLE if isinstance(exc.__cause__, httpx.TransportError) else EX_FAILED

    return run


def _url_from_config(args: argparse.Namespace) -> str:
    server = load_config(args.config or default_config_path()).server
    host = "127.0.0.1" if server.host in ("0.0.0.0", "::", "") else server.host
    return f"http://{host}:{server.port}"


def _call(http: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    try:
        response = http.request(method, path, **kwargs)
    except httpx.TransportError as exc:
        raise ClientError(f"cannot reach the daemon at {http.base_url}: {exc}") from exc
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text
        hint = f" (set ${TOKEN_ENV})" if response.status_code == 401 else ""
        raise ClientError(f"{response.status_code}: {detail}{hint}")
    return response.json()


def _jobs(args: argparse.Namespace, http: httpx.Client) -> int:
    jobs = _call(http, "GET", "/admin/jobs")
    _print(args, jobs, ["id", "task", "schedule", "timezone", "paused", "running", "next_run_time", "last_run"])
    return 0


def _runs(args: argparse.Namespace, http: httpx.Client) -> int:
    params = {k: v for k, v in {"job_id": args.job, "status": args.status, "limit": args.limit}.items() if v}
    runs = _call(http, "GET", "/admin/runs", params=params)
    _print(args, runs, ["id", "job_id", "trigger", "status", "scheduled_for", "duration_s", "node", "triggered_by"])
    return 0


def _trigger(args: argparse.Namespace, http: httpx.Client) -> int:
    started = _call(http, "POST", f"/admin/trigger/{args.job_id}")
    if not args.wait:
        _print(args, started, ["job_id", "run_id", "status"])
        return 0
    run_id = started["run_id"]
    if not args.json:
        print(f"run {run_id} of {args.job_id} started", file=sys.stderr)
    last_progress = None
    while True:
        run = _call(http, "GET", f"/admin/runs/{run_id}")
        if not args.json and run.get("progress") and run["progress"] != last_progress:
            last_progress = run["progress"]
            print(f"  progress: {_cell(last_progress)}", file=sys.stderr)
        if run["status"] in _ENDED:
            break
        time.sleep(WAIT_POLL_S)
    if args.json:
        print(json.dumps(run, indent=2))
    else:
        print(f"run {run_id} {run['status']} in {run['duration_s']}s")
        if run["result"] is not None:
            print(f"result: {json.dumps(run['result'])}")
        if run["error"]:
            print(run["error"], file=sys.stderr)
    return 0 if run["status"] == "succeeded" else EX_FAILED


def _cancel(args: argparse.Namespace, http: httpx.Client) -> int:
    run = _call(http, "POST", f"/admin/runs/{args.run_id}/cancel")
    _print(args, run, ["id", "job_id", "status"])
    return 0


def _pause(args: argparse.Namespace, http: httpx.Client) -> int:
    _print(args, _call(http, "POST", f"/admin/jobs/{args.job_id}/pause"), ["id", "paused", "next_run_time"])
    return 0


def _resume(args: argparse.Namespace, http: httpx.Client) -> int:
    _print(args, _call(http, "POST", f"/admin/jobs/{args.job_id}/resume"), ["id", "paused", "next_run_time"])
    return 0


def _print(args: argparse.Namespace, data: Any, columns: Sequence[str]) -> None:
    if args.json:
        print(json.dumps(data, indent=2))
        return
    rows = data if isinstance(data, list) else [data]
    table = [list(columns)] + [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict) and "status" in value and "id" in value:  # a nested run
        return f"#{value['id']} {value['status']}"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)
