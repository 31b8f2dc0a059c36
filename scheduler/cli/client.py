"""Admin commands that talk to a running daemon's API: jobs, runs, trigger, cancel, pause, resume, logs.

The URL comes from ``--url`` or the config's ``[server]``; the bearer token from
``$MAINTD_TOKEN``. Output is a table for people, JSON with ``--json``; colour only
on a terminal with ``$NO_COLOR`` unset. Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import httpx

from maintd.admin_api.interface import ENDED_STATUSES, JOB_STATES
from maintd.jobs.durations import format_duration, parse_duration
from maintd.scheduler.cli.exit_codes import EX_FAILED, EX_INTERRUPTED, EX_UNAVAILABLE, EX_WAIT_TIMEOUT
from maintd.scheduler.cli.live import EXIT_STATUS_HELP, LiveLine, report_end
from maintd.scheduler.cli.render import jobs_table, local_time, log_line, relative, runs_table, use_colour
from maintd.scheduler.config.model import default_config_path, load_config

TOKEN_ENV = "MAINTD_TOKEN"
WAIT_POLL_S = 0.5
LOG_PAGE = 500
JOBS_PAGE = 500


class ClientError(Exception):
    """The daemon could not be reached or refused the request."""


def add_client_commands(command: Callable[..., argparse.ArgumentParser], with_config: Callable[..., None]) -> None:
    def client(
        name: str, handler: Callable[[argparse.Namespace, httpx.Client], int], help: str
    ) -> argparse.ArgumentParser:
        sub = command(name, _with_client(handler), help)
        with_config(sub)
        sub.add_argument("--url", help="daemon URL (default: from the config's [server])")
        sub.add_argument("--json", action="store_true", help="print JSON instead of a table")
        return sub

    jobs = client("jobs", _jobs, "list jobs with their schedule, next and last run, and state")
    jobs.add_argument("--state", choices=JOB_STATES, help="only jobs in this state")
    jobs.add_argument("--limit", type=int, help="at most this many (default: all)")
    jobs.add_argument("--offset", type=int, default=0, help="skip this many first (default 0)")
    runs = client("runs", _runs, "list runs, newest first")
    runs.add_argument("--job", help="only this job's runs")
    runs.add_argument("--status", help="only runs with this status (running, succeeded, failed, ...)")
    runs.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    trigger = client("trigger", _trigger, "run a job now")
    trigger.add_argument("job_id", metavar="JOB")
    trigger.add_argument("--wait", action="store_true", help="follow the run to its end; exit 0 only if it succeeds")
    trigger.add_argument(
        "--timeout",
        type=_duration,
        metavar="DURATION",
        help="with --wait: give up after this long, e.g. 10m (exit 124)",
    )
    trigger.add_argument(
        "--logs", action="store_true", help="follow the run (as --wait) showing its log lines instead of its progress"
    )
    trigger.epilog = EXIT_STATUS_HELP
    trigger.formatter_class = argparse.RawDescriptionHelpFormatter
    client("cancel", _cancel, "cancel a run in progress").add_argument("run_id", metavar="RUN", type=int)
    client("pause", _pause, "pause a job's schedule on every replica").add_argument("job_id", metavar="JOB")
    client("resume", _resume, "resume a paused job").add_argument("job_id", metavar="JOB")
    logs = client("logs", _logs, "print what a run logged (--json: one JSON object per line)")
    logs.add_argument("run_id", metavar="RUN", type=int)
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new lines until the run ends")


def _duration(text: str) -> float:
    try:
        return parse_duration(text).total_seconds()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _with_client(handler: Callable[[argparse.Namespace, httpx.Client], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        url = args.url or _url_from_config(args)
        token = os.environ.get(TOKEN_ENV, "").strip()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            try:
                http = httpx.Client(base_url=url, headers=headers, timeout=10)
            except httpx.InvalidURL as exc:
                raise ClientError(f"invalid daemon URL {url!r}: {exc}") from exc
            with http:
                return handler(args, http)
        except ClientError as exc:
            print(f"maintd {args.command}: {exc}", file=sys.stderr)
            return EX_UNAVAILABLE if isinstance(exc.__cause__, httpx.TransportError) else EX_FAILED

    return run


def _url_from_config(args: argparse.Namespace) -> str:
    server = load_config(args.config or default_config_path()).server
    host = "127.0.0.1" if server.host in ("0.0.0.0", "::", "") else server.host
    if ":" in host:  # an IPv6 address goes in brackets in a URL
        host = f"[{host}]"
    return f"http://{host}:{server.port}"


def _call(http: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    try:
        response = http.request(method, path, **kwargs)
    except httpx.TransportError as exc:
        raise ClientError(f"cannot reach the daemon at {http.base_url}: {exc}") from exc
    except httpx.InvalidURL as exc:
        raise ClientError(f"invalid daemon URL {http.base_url}: {exc}") from exc
    if response.status_code >= 400:
        try:
            body = response.json()
            detail = body.get("detail", body) if isinstance(body, dict) else body
        except ValueError:
            detail = response.text
        if isinstance(detail, list):  # FastAPI's validation errors: say which parameter and why
            detail = "; ".join(f"{e.get('loc', ['?'])[-1]}: {e.get('msg')}" for e in detail if isinstance(e, dict))
        hint = f" (set ${TOKEN_ENV})" if response.status_code == 401 else ""
        raise ClientError(f"{response.status_code}: {detail}{hint}")
    try:
        return response.json()
    except ValueError as exc:  # not the daemon's API answering (a proxy page, say)
        raise ClientError(
            f"{response.status_code} from {http.base_url}{path} is not JSON: {response.text[:80]!r}"
        ) from exc


def _now() -> datetime:
    return datetime.now(UTC)


def _show(args: argparse.Namespace, answer: Any, for_people: Callable[[Any], str]) -> int:
    """Print the API's answer: as JSON with ``--json``, else as ``for_people`` words it."""
    print(json.dumps(answer, indent=2) if args.json else for_people(answer))
    return 0


def _jobs(args: argparse.Namespace, http: httpx.Client) -> int:
    jobs = fetch_jobs(http, state=args.state, limit=args.limit, offset=args.offset)
    return _show(args, jobs, lambda jobs: jobs_table(jobs, _now(), colour=use_colour(sys.stdout)))


def fetch_jobs(http: httpx.Client, *, state: str | None, limit: int | None, offset: int) -> list[Any]:
    """The jobs asked for; without a limit, all of them, a page at a time (one answer
    about 10,000 jobs would hold the daemon's event loop for seconds)."""
    params: dict[str, Any] = {"state": state} if state else {}
    if limit is not None:
        return list(_call(http, "GET", "/admin/jobs", params={**params, "limit": limit, "offset": offset}))
    jobs: list[Any] = []
    while True:
        page = _call(http, "GET", "/admin/jobs", params={**params, "limit": JOBS_PAGE, "offset": offset + len(jobs)})
        jobs += page
        if len(page) < JOBS_PAGE:
            return jobs


def _runs(args: argparse.Namespace, http: httpx.Client) -> int:
    params = {k: v for k, v in {"job_id": args.job, "status": args.status, "limit": args.limit}.items() if v}
    runs = _call(http, "GET", "/admin/runs", params=params)
    return _show(args, runs, lambda runs: runs_table(runs, _now(), colour=use_colour(sys.stdout)))


def _trigger(args: argparse.Namespace, http: httpx.Client) -> int:
    started = _call(http, "POST", f"/admin/trigger/{args.job_id}")
    run_id = started["run_id"]
    if not (args.wait or args.logs):
        return _show(
            args,
            started,
            lambda _: f"run {run_id} of {args.job_id} started; follow it with: maintd logs {run_id} --follow",
        )
    deadline = time.monotonic() + args.timeout if args.timeout else None
    line = LiveLine(sys.stderr)
    try:
        if args.logs:
            _follow_logs(http, run_id, as_json=False, deadline=deadline, out=sys.stderr)
            run = _call(http, "GET", f"/admin/runs/{run_id}")
        else:
            run = _wait(http, run_id, None if args.json else line, deadline)
    except KeyboardInterrupt:
        line.clear()
        print(f"\nstopped waiting; run {run_id} goes on. To cancel it: maintd cancel {run_id}", file=sys.stderr)
        return EX_INTERRUPTED
    finally:
        line.clear()
    if run["status"] not in ENDED_STATUSES:
        waited = format_duration(timedelta(seconds=args.timeout))
        print(
            f"maintd trigger: gave up after {waited}: run {run_id} is still {run['status']};"
            f" to cancel it: maintd cancel {run_id}",
            file=sys.stderr,
        )
        return EX_WAIT_TIMEOUT
    return report_end(run, as_json=args.json, out=sys.stdout, err=sys.stderr)


def _wait(http: httpx.Client, run_id: int, line: LiveLine | None, deadline: float | None) -> dict[str, Any]:
    """Poll the run until it ends or ``deadline`` (monotonic) passes; return it as last seen."""
    began = time.monotonic()
    while True:
        run: dict[str, Any] = _call(http, "GET", f"/admin/runs/{run_id}")
        now = time.monotonic()
        if run["status"] in ENDED_STATUSES or (deadline is not None and now >= deadline):
            return run
        if line is not None:
            line.update(run, now - began)
        time.sleep(WAIT_POLL_S if deadline is None else max(0.0, min(WAIT_POLL_S, deadline - now)))


def _cancel(args: argparse.Namespace, http: httpx.Client) -> int:
    run = _call(http, "POST", f"/admin/runs/{args.run_id}/cancel")
    return _show(
        args,
        run,
        lambda run: (
            f"run {run['id']} of {run['job_id']}: cancel requested; `maintd runs --job {run['job_id']}` shows when it stopped"
        ),
    )


def _pause(args: argparse.Namespace, http: httpx.Client) -> int:
    job = _call(http, "POST", f"/admin/jobs/{args.job_id}/pause")
    return _show(args, job, lambda job: f"{job['id']} paused on every replica; `maintd resume {job['id']}` undoes it")


def _resume(args: argparse.Namespace, http: httpx.Client) -> int:
    job = _call(http, "POST", f"/admin/jobs/{args.job_id}/resume")
    return _show(args, job, _resumed)


def _resumed(job: dict[str, Any]) -> str:
    next_at = job.get("next_run_time")
    when = datetime.fromisoformat(next_at) if next_at else None
    text = f"; next run {local_time(when)} ({relative(when, _now())})" if when else ""
    return f"{job['id']} resumed{text}"


def _logs(args: argparse.Namespace, http: httpx.Client) -> int:
    try:
        printed = _follow_logs(http, args.run_id, as_json=args.json, deadline=None, out=sys.stdout, follow=args.follow)
    except KeyboardInterrupt:
        return EX_INTERRUPTED
    if not printed and not args.json:
        print(f"run {args.run_id} has no log lines", file=sys.stderr)
    return 0


def _follow_logs(
    http: httpx.Client, run_id: int, *, as_json: bool, deadline: float | None, out: TextIO, follow: bool = True
) -> int:
    """Print a run's log lines; with ``follow``, until the run has ended (or ``deadline``). Return how many."""
    colour = not as_json and use_colour(out)
    after, printed, dropped, ended = 0, 0, 0, False
    while True:
        page = _call(http, "GET", f"/admin/runs/{run_id}/logs", params={"after_seq": after, "limit": LOG_PAGE})
        if page.get("dropped", 0) > dropped and not as_json:
            dropped = page["dropped"]
            print(
                f"({dropped} lines of run {run_id} were dropped: the daemon keeps a bounded log per run)",
                file=sys.stderr,
            )
        for entry in page["lines"]:
            out.write((json.dumps(entry) if as_json else log_line(entry, colour=colour)) + "\n")
            after = entry["seq"]
            printed += 1
        out.flush()
        if len(page["lines"]) >= LOG_PAGE:
            continue
        if not follow or ended or (deadline is not None and time.monotonic() >= deadline):
            return printed
        # Read once more after the run ended: lines logged just before its end.
        ended = _call(http, "GET", f"/admin/runs/{run_id}")["status"] in ENDED_STATUSES
        if not ended:
            time.sleep(WAIT_POLL_S)
