"""``maintd logs``: what a run logged, read a page at a time and, with ``--follow``, until it ends."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TextIO

from maintd.admin_api.statuses import ENDED_STATUSES
from maintd.scheduler.cli.api_client import ApiClient
from maintd.scheduler.cli.exit_codes import EX_INTERRUPTED, EX_OK
from maintd.scheduler.cli.render import log_line, use_colour

LOG_PAGE = 500
POLL_S = 0.5


def logs(args: argparse.Namespace, api: ApiClient) -> int:
    try:
        printed = follow_logs(api, args.run_id, as_json=args.json, deadline=None, out=sys.stdout, follow=args.follow)
    except KeyboardInterrupt:
        return EX_INTERRUPTED
    if not printed and not args.json:
        print(f"run {args.run_id} has no log lines", file=sys.stderr)
    return EX_OK


def follow_logs(
    api: ApiClient, run_id: int, *, as_json: bool, deadline: float | None, out: TextIO, follow: bool = True
) -> int:
    """Print a run's log lines; with ``follow``, until the run has ended (or ``deadline``,
    monotonic). Return how many."""
    colour = not as_json and use_colour(out)
    after, printed, dropped, ended = 0, 0, 0, False
    while True:
        page = api.call("GET", f"/admin/runs/{run_id}/logs", params={"after_seq": after, "limit": LOG_PAGE})
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
        ended = api.call("GET", f"/admin/runs/{run_id}")["status"] in ENDED_STATUSES
        if not ended:
            time.sleep(POLL_S)
