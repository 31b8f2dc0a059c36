"""Run statuses and job states: the words the API and its clients share.

Plain values without pydantic or FastAPI, so that ``maintd jobs`` and ``maintd
trigger --wait`` read them without importing the daemon's web stack.
"""

from __future__ import annotations

from typing import Literal

ENDED_STATUSES: frozenset[str] = frozenset(
    {"succeeded", "failed", "cancelled", "timed_out", "lost", "skipped", "missed"}
)
# A job whose last run ended so is failing.
FAILING_STATUSES: frozenset[str] = frozenset({"failed", "timed_out", "lost"})
JobState = Literal["ok", "running", "failing", "overdue", "paused"]
JOB_STATES: tuple[JobState, ...] = ("ok", "running", "failing", "overdue", "paused")


def job_state(*, paused: bool, running: bool, overdue: bool | None, last_status: str | None) -> JobState:
    """A job's state in one word, the first that holds of: ``overdue`` (its dead man's
    switch fired: it needs someone, paused or not), ``paused``, ``running`` (anywhere in
    the cluster), ``failing`` (its last run failed, timed out or was lost), ``ok``.
    The one definition: the API's ``state`` and ``maintd jobs`` both use it."""
    if overdue:
        return "overdue"
    if paused:
        return "paused"
    if running:
        return "running"
    if last_status in FAILING_STATUSES:
        return "failing"
    return "ok"
