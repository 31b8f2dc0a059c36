"""The admin commands: clients of a running daemon's API and nothing more.

``jobs``, ``runs``, ``trigger``, ``rerun``, ``replay``, ``logs``, ``cancel``, ``pause``,
``resume``. They
need a URL and a token (``target``), never validate the config's jobs nor import
a task. This module only declares them; each command's handler lives in the
module of its concern (``listing``, ``trigger``, ``logs``, ``actions``), named by
a string and imported when the command runs, so that ``maintd --help`` loads
none of them. A handler is ``handler(args, api) -> exit status``, ``api`` an
:class:`~maintd.scheduler.cli.api_client.ApiClient`.

Output is a table for people, JSON with ``--json``; colour only on a terminal
with ``$NO_COLOR`` unset. Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

from maintd.admin_api.statuses import JOB_STATES
from maintd.scheduler.cli.exit_codes import EX_CONFIG, EX_FAILED, EX_UNAVAILABLE, EX_USAGE
from maintd.scheduler.config.errors import ConfigError

EXIT_STATUS_HELP = """\
exit status:
  0    the run succeeded
  1    the run failed, timed out, was cancelled or lost; or the request was refused
  69   the daemon cannot be reached
  124  --timeout passed first (the run goes on; `maintd cancel RUN` stops it)
  130  interrupted by Ctrl-C (the run goes on; `maintd cancel RUN` stops it)
"""

AddCommand = Callable[..., argparse.ArgumentParser]


def add_client_commands(command: AddCommand, with_config: Callable[[argparse.ArgumentParser], None]) -> None:
    """Declare the admin commands with ``command(name, handler, help)`` (main's)."""

    def client(name: str, handler: str, help: str) -> argparse.ArgumentParser:
        sub = command(name, run_client_command, help)
        sub.set_defaults(client_handler=handler)
        with_config(sub)
        sub.add_argument("--url", help="daemon URL (default: $MAINTD_URL, else the config's [server])")
        sub.add_argument("--json", action="store_true", help="print JSON instead of a table")
        return sub

    jobs = client(
        "jobs", "maintd.scheduler.cli.listing:jobs", "list jobs with their schedule, next and last run, and state"
    )
    jobs.add_argument("--state", choices=JOB_STATES, help="only jobs in this state")
    jobs.add_argument("--limit", type=int, help="at most this many (default: all)")
    jobs.add_argument("--offset", type=int, default=0, help="skip this many first (default 0)")
    runs = client("runs", "maintd.scheduler.cli.listing:runs", "list runs, newest first")
    runs.add_argument("--job", help="only this job's runs")
    runs.add_argument("--status", help="only runs with this status (running, succeeded, failed, ...)")
    runs.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    trigger = client("trigger", "maintd.scheduler.cli.trigger:trigger", "run a job now")
    trigger.add_argument("job_id", metavar="JOB")
    trigger.add_argument(
        "--param",
        dest="params",
        action="append",
        type=key_value,
        default=[],
        metavar="KEY=VALUE",
        help="a param for this run only (the task must let it change); a VALUE that parses as JSON is "
        "taken as JSON, else as a string; repeat for several",
    )
    trigger.add_argument(
        "--params-json", type=json_object, metavar="JSON", help="params for this run as a JSON object (--param on top)"
    )
    trigger.add_argument("--idempotency-key", metavar="KEY", help="the same key and request within 24 h: the same run")
    add_request_arguments(trigger)
    add_follow_arguments(trigger)
    rerun = client(
        "rerun", "maintd.scheduler.cli.trigger:rerun", "run a job again as a run was asked for (its params, dry run)"
    )
    rerun.add_argument("run_id", metavar="RUN", type=int)
    rerun.add_argument("--reason", help="why (default: the run's)")
    rerun.add_argument(
        "--dry-run", action=argparse.BooleanOptionalAction, default=None, help="a dry run or not (default: as the run)"
    )
    add_follow_arguments(rerun)
    replay = client(
        "replay",
        "maintd.scheduler.cli.replay:replay",
        "run again, one after another, a job's fires in a range that were missed, skipped or never succeeded",
    )
    replay.add_argument("job_id", metavar="JOB")
    replay.add_argument("--from", dest="since", required=True, metavar="ISO8601", help="first fire time (included)")
    replay.add_argument("--to", dest="until", required=True, metavar="ISO8601", help="last fire time (included)")
    add_request_arguments(replay, dry_run_help="only list the fires it would run")
    cancel = client("cancel", "maintd.scheduler.cli.actions:cancel", "cancel a run in progress")
    cancel.add_argument("run_id", metavar="RUN", type=int)
    pause = client("pause", "maintd.scheduler.cli.actions:pause", "pause a job's schedule on every replica")
    pause.add_argument("job_id", metavar="JOB")
    client("resume", "maintd.scheduler.cli.actions:resume", "resume a paused job").add_argument("job_id", metavar="JOB")
    logs = client(
        "logs", "maintd.scheduler.cli.logs:logs", "print what a run logged (--json: one JSON object per line)"
    )
    logs.add_argument("run_id", metavar="RUN", type=int)
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new lines until the run ends")


def add_request_arguments(
    sub: argparse.ArgumentParser, dry_run_help: str = "ask the task to change nothing and say what it would do"
) -> None:
    """``--reason`` and ``--dry-run``: what a command that starts runs may say about them."""
    sub.add_argument("--reason", help="why: kept on the run and in the audit log (at most 500 characters)")
    sub.add_argument("--dry-run", action="store_true", help=dry_run_help)


def key_value(text: str) -> tuple[str, Any]:
    """An argparse type: ``KEY=VALUE``, VALUE as JSON when it parses (``500``, ``true``,
    ``["a"]``), else as the string it is (``50ms``, ``sessions``)."""
    import json

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def json_object(text: str) -> dict[str, Any]:
    """An argparse type: a JSON object."""
    import json

    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object, e.g. '{\"batch_size\": 500}'")
    return value


def add_follow_arguments(sub: argparse.ArgumentParser) -> None:
    """``--wait``, ``--timeout`` and ``--logs``: for a command that starts a run and may follow it."""
    sub.add_argument("--wait", action="store_true", help="follow the run to its end; exit 0 only if it succeeds")
    sub.add_argument(
        "--timeout",
        type=duration_seconds,
        metavar="DURATION",
        help="with --wait: give up after this long, e.g. 10m (exit 124)",
    )
    sub.add_argument(
        "--logs", action="store_true", help="follow the run (as --wait) showing its log lines instead of its progress"
    )
    sub.epilog = EXIT_STATUS_HELP
    sub.formatter_class = argparse.RawDescriptionHelpFormatter


def duration_seconds(text: str) -> float:
    """An argparse type: a duration such as ``10m``, in seconds."""
    from maintd.jobs.durations import parse_duration

    try:
        return parse_duration(text).total_seconds()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_client_command(args: argparse.Namespace) -> int:
    """Find the daemon, open the API, run the command's handler; map what went wrong to an exit status."""
    from maintd.scheduler.cli.api_client import ApiClient, ClientError, DaemonUnreachable, InvalidUrl, RequestRefused
    from maintd.scheduler.cli.target import TOKEN_ENV, target

    def fail(message: str, status: int) -> int:
        print(f"maintd {args.command}: {message}", file=sys.stderr)
        return status

    try:
        where = target(url=args.url, config=args.config, environ=os.environ)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"maintd {args.command}: {problem}", file=sys.stderr)
        return EX_CONFIG
    handler = _resolve(args.client_handler)
    try:
        with ApiClient(where.url, where.token) as api:
            return int(handler(args, api))
    except InvalidUrl as exc:
        return fail(str(exc), EX_USAGE)
    except DaemonUnreachable as exc:
        return fail(str(exc), EX_UNAVAILABLE)
    except RequestRefused as exc:
        hint = f" (set ${TOKEN_ENV})" if exc.status == 401 else ""
        return fail(f"{exc}{hint}", EX_FAILED)
    except ClientError as exc:
        return fail(str(exc), EX_FAILED)


def _resolve(ref: str) -> Callable[..., Any]:
    """``"package.module:function"`` to the function, imported now."""
    module, _, name = ref.partition(":")
    handler: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return handler
