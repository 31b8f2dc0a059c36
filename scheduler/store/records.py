"""A run as the scheduler reads it from ``maintd.runs``: :class:`Run`.

The engine works with these; the API shows them through its own model
(``admin_api.interface.RunOut``), built from a :class:`Run` by :func:`run_out`.
A run is a value: a change makes a new one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import asyncpg

from maintd.admin_api.interface import RunOut


@dataclass(frozen=True, slots=True)
class LateOutcome:
    """How a run really ended, as its owner reported after its lease had run out:
    kept beside the run's ``lost``/``missed`` record, which stands."""

    status: str
    finished_at: datetime
    error: str | None = None
    result: Any = None

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> LateOutcome:
        return cls(
            status=value["status"],
            finished_at=datetime.fromisoformat(value["finished_at"]),
            error=value.get("error"),
            result=value.get("result"),
        )


@dataclass(frozen=True, slots=True)
class Run:
    """One run of a job, or one fire that did not run (``skipped``/``missed``)."""

    id: int
    job_id: str
    trigger: str
    status: str
    scheduled_for: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    node: str
    attempt: int = 1
    result: Any = None
    error: str | None = None
    triggered_by: str | None = None
    progress: dict[str, Any] | None = None
    late_outcome: LateOutcome | None = None
    # What an operator asked of the run (see migration 0008): the params it ran with
    # (JSON, as the config spells them), why, whether dry, and the run it re-runs.
    params: dict[str, Any] | None = None
    overrides: dict[str, Any] | None = None
    reason: str | None = None
    dry_run: bool = False
    rerun_of: int | None = None

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


def run_from_row(row: asyncpg.Record | Mapping[str, Any]) -> Run:
    late = row["late_outcome"]
    return Run(
        id=row["id"],
        job_id=row["job_id"],
        trigger=row["trigger"],
        status=row["status"],
        scheduled_for=row["scheduled_for"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        node=row["node"],
        attempt=row["attempt"],
        result=row["result"],
        error=row["error"],
        triggered_by=row["triggered_by"],
        progress=row["progress"],
        late_outcome=LateOutcome.from_json(late) if late is not None else None,
        params=row["params"],
        overrides=row["overrides"],
        reason=row["reason"],
        dry_run=row["dry_run"],
        rerun_of=row["rerun_of"],
    )


def run_out(run: Run) -> RunOut:
    """The run as the API shows it (the API's model checks the status and trigger)."""
    return RunOut.model_validate({**asdict(run), "duration_s": run.duration_s})
