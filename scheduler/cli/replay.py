"""``maintd replay``: run again a job's fires in a range that were missed, skipped or never
succeeded, one after another on the replica that takes the request (``--dry-run``: list them)."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from maintd.scheduler.cli.api_client import ApiClient
from maintd.scheduler.cli.output import show
from maintd.scheduler.cli.render import local_time


def replay(args: argparse.Namespace, api: ApiClient) -> int:
    body: dict[str, Any] = {"from": args.since, "to": args.until, "dry_run": args.dry_run}
    if args.reason is not None:
        body["reason"] = args.reason
    answer = api.call("POST", f"/admin/jobs/{args.job_id}/replay", json_body=body)
    return show(args, answer, _described)


def _described(answer: dict[str, Any]) -> str:
    fires, job_id = answer["fires"], answer["job_id"]
    if not fires:
        return f"{job_id}: nothing to replay in that range"
    verb = "would replay" if answer["dry_run"] else "replaying, one after another"
    lines = [f"{job_id}: {verb} {len(fires)} fire{'s' if len(fires) != 1 else ''}:"]
    lines += [f"  {local_time(datetime.fromisoformat(fire))}  ({fire})" for fire in fires]
    if not answer["dry_run"]:
        lines.append(f"follow them with: maintd runs --job {job_id}")
    return "\n".join(lines)
