"""The dead-man's switch (``expect_success_within``) on a real engine and database.

The engine's clock is moved forward by hand: overdue is judged against the
job's last success, or when it was first seen if it never succeeded.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.configs import make_config, sleep_job
from tests.engines import OPS, StartEngine, beat, run_to_end
from tests.tasks import FailParams  # noqa: F401 - tests.tasks:fail is referenced by name below

pytestmark = pytest.mark.integration


class MovableClock:
    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def _overdue_gauge(engine, job_id: str) -> float:  # type: ignore[no-untyped-def]
    return engine.metrics.registry.get_sample_value("maintd_job_overdue", {"job_id": job_id})


async def test_a_job_without_success_in_its_window_is_overdue_until_it_succeeds(start_engine: StartEngine) -> None:
    clock = MovableClock()
    config = make_config(
        {
            "backup": sleep_job(0, expect_success_within="1h"),
            "flaky": {"task": "tests.tasks:fail", "schedule": "@yearly", "expect_success_within": "1h"},
            "held": sleep_job(0, expect_success_within="1h"),
            "unwatched": sleep_job(0),
        }
    )
    engine = await start_engine(config, clock=clock)
    assert (await engine.admin.get_job("backup")).overdue is False
    assert (await engine.admin.get_job("unwatched")).overdue is None

    assert (await run_to_end(engine, "backup")).status == "succeeded"
    assert (await run_to_end(engine, "flaky")).status == "failed"
    await engine.admin.pause("held", OPS)
    clock.offset = timedelta(minutes=59)
    await beat(engine)
    assert {job.id for job in await engine.admin.list_jobs() if job.overdue} == set()

    # An hour on: the job that never succeeded (failing) and the paused one are overdue;
    # the one that succeeded 61 minutes ago too.
    clock.offset = timedelta(minutes=61)
    await beat(engine)
    jobs = {job.id: job for job in await engine.admin.list_jobs()}
    assert {job_id for job_id, job in jobs.items() if job.overdue} == {"backup", "flaky", "held"}
    assert jobs["backup"].last_success_at is not None and jobs["flaky"].last_success_at is None
    assert jobs["backup"].expect_success_within_s == 3600
    assert [_overdue_gauge(engine, j) for j in ("backup", "flaky", "held")] == [1.0, 1.0, 1.0]

    # A success ends it.
    assert (await run_to_end(engine, "backup")).status == "succeeded"
    await beat(engine)
    assert (await engine.admin.get_job("backup")).overdue is False
    assert _overdue_gauge(engine, "backup") == 0.0
    assert _overdue_gauge(engine, "flaky") == 1.0


async def test_overdue_is_logged_once_per_episode(start_engine: StartEngine, caplog: pytest.LogCaptureFixture) -> None:
    clock = MovableClock()
    engine = await start_engine(make_config({"backup": sleep_job(0, expect_success_within="10m")}), clock=clock)
    clock.offset = timedelta(minutes=11)
    for _ in range(3):
        await beat(engine)
    assert sum("job_overdue" in record.getMessage() for record in caplog.records) == 1
    await run_to_end(engine, "backup")
    await beat(engine)
    assert sum("job_no_longer_overdue" in record.getMessage() for record in caplog.records) == 1
