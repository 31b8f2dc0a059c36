"""Fires nobody recorded (scheduler/engine/catch_up.py), on an in-memory store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.configs import make_config, sleep_job
from tests.engines import memory_engine
from tests.memory_store import MemoryStore

pytestmark = pytest.mark.unit

SEEN = datetime(2026, 12, 7, 0, 30, tzinfo=UTC)
NOW = SEEN + timedelta(hours=3)  # the hourly fires at 01:00, 02:00 and 03:00 went unrecorded


def now() -> datetime:
    return NOW


@pytest.mark.parametrize("catch_up", ["once", "none"])
async def test_after_downtime_the_missed_fires_are_recorded_and_the_latest_runs_once_if_asked(catch_up: str) -> None:
    store = MemoryStore(now)
    await store.register_jobs(["hourly"], SEEN)
    engine = memory_engine(
        make_config({"hourly": sleep_job(0, schedule="0 * * * *", catch_up=catch_up)}), store, clock=now
    )

    caught_up = await engine.catch_up.catch_up(NOW)
    await engine.idle()

    runs = sorted(await store.list_runs(job_id="hourly", status=None, limit=10), key=lambda run: run.id)
    fires = [SEEN + timedelta(minutes=30 + 60 * n) for n in range(3)]
    assert [run.scheduled_for for run in runs] == fires
    if catch_up == "once":
        assert caught_up == {"hourly"}
        assert [(run.status, run.trigger) for run in runs] == [
            ("missed", "schedule"),
            ("missed", "schedule"),
            ("succeeded", "catch_up"),
        ]
    else:
        assert caught_up == set()
        assert {run.status for run in runs} == {"missed"}
    assert all(run.error == "missed: no replica could run it" for run in runs if run.status == "missed")


async def test_a_fire_another_replica_recorded_during_an_outage_is_not_recorded_again() -> None:
    store = MemoryStore(now)
    await store.register_jobs(["hourly"], SEEN)
    other = memory_engine(make_config({"hourly": sleep_job(0, schedule="0 * * * *")}), store, clock=now, node="b")
    second = SEEN + timedelta(minutes=90)
    await other.fires.claim(other.jobs["hourly"], "schedule", second, 1, None)
    await other.idle()
    engine = memory_engine(
        make_config({"hourly": sleep_job(0, schedule="0 * * * *", catch_up="none")}), store, clock=now
    )

    # The outage began before the first fire: the fire recorded meanwhile hides neither of the others.
    await engine.catch_up.catch_up(NOW, outage_since=SEEN)

    runs = {run.scheduled_for: run for run in await store.list_runs(job_id="hourly", status=None, limit=10)}
    assert {fire: run.status for fire, run in runs.items()} == {
        SEEN + timedelta(minutes=30): "missed",
        second: "succeeded",
        SEEN + timedelta(minutes=150): "missed",
    }
