"""Jobs fire at their exact times on a frozen clock, daylight-saving days included.

These drive the real engine (APScheduler, claims in PostgreSQL) through
``maintd.testing``; no test waits for real time to pass.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from maintd.admin_api.interface import Actor
from maintd.testing import frozen_engine
from tests.configs import make_config, sql_job

pytestmark = pytest.mark.integration


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def local(runs: list, zone: str = "Europe/Berlin") -> list[str]:
    from zoneinfo import ZoneInfo

    return [run.scheduled_for.astimezone(ZoneInfo(zone)).isoformat() for run in runs]


BERLIN_MIDNIGHT = make_config({"nightly": sql_job(schedule="0 0 * * *", timezone="Europe/Berlin")})


@pytest.mark.parametrize(
    ("frozen_at", "first", "next_day"),
    [
        # An ordinary night.
        ("2026-06-14T23:59:59+02:00", "2026-06-15T00:00:00+02:00", "2026-06-16T00:00:00+02:00"),
        # Into the spring-forward day (the jump is at 02:00, after midnight).
        ("2026-03-28T23:59:59+01:00", "2026-03-29T00:00:00+01:00", "2026-03-30T00:00:00+02:00"),
        # Into the day after: APScheduler 3.11's CronTrigger skips 2026-03-30.
        ("2026-03-29T23:59:59+02:00", "2026-03-30T00:00:00+02:00", "2026-03-31T00:00:00+02:00"),
        # Into the fall-back day, a 25-hour day.
        ("2026-10-24T23:59:59+02:00", "2026-10-25T00:00:00+02:00", "2026-10-26T00:00:00+01:00"),
    ],
)
async def test_midnight_job_fires_once_at_midnight(db_dsn: str, frozen_at: str, first: str, next_day: str) -> None:
    async with frozen_engine(BERLIN_MIDNIGHT, dsn=db_dsn, at=frozen_at) as daemon:
        assert await daemon.runs() == []
        await daemon.advance(timedelta(seconds=1))
        runs = await daemon.runs("nightly")
        assert local(runs) == [first]
        assert [(r.trigger, r.status, r.attempt) for r in runs] == [("schedule", "succeeded", 1)]
        assert runs[0].started_at == at(first)  # the daemon's (frozen) clock, to the microsecond

        # Up to a second before the next midnight, however long the day (23, 24 or 25 hours).
        await daemon.advance(at(next_day) - daemon.now() - timedelta(seconds=1))
        assert local(await daemon.runs("nightly")) == [first]
        await daemon.advance(timedelta(seconds=2))
        assert local(await daemon.runs("nightly")) == [first, next_day]


async def test_fixed_time_in_skipped_hour_runs_right_after_the_jump(db_dsn: str) -> None:
    config = make_config({"half_past_two": sql_job(schedule="30 2 * * *", timezone="Europe/Berlin")})
    async with frozen_engine(config, dsn=db_dsn, at="2026-03-29T01:59:59+01:00") as daemon:
        await daemon.advance(timedelta(hours=3))
        assert local(await daemon.runs()) == ["2026-03-29T03:00:00+02:00"]


async def test_fixed_time_in_repeated_hour_runs_once(db_dsn: str) -> None:
    config = make_config({"half_past_two": sql_job(schedule="30 2 * * *", timezone="Europe/Berlin")})
    async with frozen_engine(config, dsn=db_dsn, at="2026-10-25T01:59:59+02:00") as daemon:
        await daemon.advance(timedelta(hours=4))
        assert local(await daemon.runs()) == ["2026-10-25T02:30:00+02:00"]
        await daemon.advance(timedelta(days=1))
        assert local(await daemon.runs()) == ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]


async def test_hourly_wildcard_follows_the_wall_clock_through_fall_back(db_dsn: str) -> None:
    config = make_config({"hourly": sql_job(schedule="0 * * * *", timezone="Europe/Berlin")})
    async with frozen_engine(config, dsn=db_dsn, at="2026-10-25T00:30:00+02:00") as daemon:
        await daemon.advance(timedelta(hours=4))
        assert local(await daemon.runs()) == [
            "2026-10-25T01:00:00+02:00",
            "2026-10-25T02:00:00+02:00",
            "2026-10-25T02:00:00+01:00",
            "2026-10-25T03:00:00+01:00",
        ]


async def test_every_interval_is_aligned_to_the_epoch(db_dsn: str) -> None:
    config = make_config({"tick": sql_job(schedule="every 7m")})
    async with frozen_engine(config, dsn=db_dsn, at="2026-05-01T10:00:00+00:00") as daemon:
        await daemon.advance(timedelta(minutes=30))
        runs = await daemon.runs()
        assert len(runs) == 4
        for run in runs:
            assert run.scheduled_for.timestamp() % 420 == 0
        # 10:00 UTC is 1777629600 s after the epoch; the next multiple of 420 s is 10:04.
        assert local(runs, "UTC")[0] == "2026-05-01T10:04:00+00:00"


async def test_paused_job_fire_is_recorded_as_skipped(db_dsn: str) -> None:
    config = make_config({"nightly": sql_job(schedule="0 0 * * *")})
    async with frozen_engine(config, dsn=db_dsn, at="2026-05-01T23:00:00+00:00") as daemon:
        await daemon.engine.admin.pause("nightly", Actor("ops", "operator"))
        await daemon.advance(timedelta(hours=2))
        [run] = await daemon.runs()
        assert (run.status, run.trigger, run.error) == ("skipped", "schedule", "skipped: the job is paused")
        assert run.scheduled_for == at("2026-05-02T00:00:00+00:00")
        assert run.started_at is None


async def test_failed_run_is_retried_with_backoff_then_gives_up(db_dsn: str) -> None:
    config = make_config({"flaky": {"task": "tests.tasks:fail", "schedule": "0 6 * * *", "retries": 2}})
    async with frozen_engine(config, dsn=db_dsn, at="2026-05-01T05:59:59+00:00") as daemon:
        await daemon.advance(timedelta(hours=1))
        runs = await daemon.runs()
        assert [(r.trigger, r.status, r.attempt) for r in runs] == [
            ("schedule", "failed", 1),
            ("retry", "failed", 2),
            ("retry", "failed", 3),
        ]
        assert {r.scheduled_for for r in runs} == {at("2026-05-01T06:00:00+00:00")}
        first_delay = (runs[1].started_at - runs[0].finished_at).total_seconds()
        second_delay = (runs[2].started_at - runs[1].finished_at).total_seconds()
        assert 5 <= first_delay < 15  # 10 s with jitter
        assert 10 <= second_delay < 30  # doubled
        assert runs[1].triggered_by == f"retry of run {runs[0].id}"


@pytest.mark.parametrize("catch_up", ["once", "none"])
async def test_fires_missed_while_down_are_recorded_and_caught_up(db_dsn: str, catch_up: str) -> None:
    config = make_config({"nightly": sql_job(schedule="0 0 * * *", catch_up=catch_up)})
    async with frozen_engine(config, dsn=db_dsn, at="2026-05-01T23:59:59+00:00") as daemon:
        await daemon.advance(timedelta(seconds=1))
    # Down for three nights, back at noon.
    async with frozen_engine(config, dsn=db_dsn, at="2026-05-05T12:00:00+00:00") as daemon:
        await daemon.settle()
        runs = await daemon.runs()
    after_downtime = sorted(runs[1:], key=lambda r: r.scheduled_for)
    expected = ["2026-05-03T00:00:00+00:00", "2026-05-04T00:00:00+00:00", "2026-05-05T00:00:00+00:00"]
    assert local(after_downtime, "UTC") == expected
    if catch_up == "once":
        assert [(r.trigger, r.status) for r in after_downtime] == [
            ("schedule", "missed"),
            ("schedule", "missed"),
            ("catch_up", "succeeded"),
        ]
    else:
        assert [(r.trigger, r.status) for r in after_downtime] == [("schedule", "missed")] * 3


async def test_a_failed_run_whose_owner_died_is_retried_by_another_replica(db_dsn: str, store) -> None:
    config = make_config({"flaky": {"task": "tests.tasks:fail", "schedule": "0 6 * * *", "retries": 1}})
    # A replica that has since died recorded this failure; it never scheduled the retry.
    await store.register_jobs(["flaky"], at("2026-05-01T00:00:00+00:00"))
    failed_id = await store.pool.fetchval(
        """INSERT INTO maintd.runs (job_id, trigger, status, scheduled_for, exclusive, started_at, finished_at, error, node)
           VALUES ('flaky', 'schedule', 'failed', '2026-05-01T06:00:00+00', true,
                   '2026-05-01T06:00:00+00', '2026-05-01T06:00:01+00', 'boom', 'dead-node')
           RETURNING id"""
    )
    async with frozen_engine(config, dsn=db_dsn, at="2026-05-01T06:00:02+00:00") as daemon:
        await daemon.advance(timedelta(seconds=30))
        runs = await daemon.runs()
    retry = [r for r in runs if r.trigger == "retry"]
    assert [(r.attempt, r.node, r.triggered_by) for r in retry] == [(2, "test-node", f"retry of run {failed_id}")]
    assert retry[0].scheduled_for == at("2026-05-01T06:00:00+00:00")
