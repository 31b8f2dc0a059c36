"""Fires waiting for room (scheduler/engine/waiting.py): each job's newest, its own share
first and the oldest first, and those past their misfire grace handed back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from maintd.scheduler.engine.waiting import WaitingFires
from tests.configs import make_config, sleep_job

pytestmark = pytest.mark.unit

T = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
JOBS = make_config(
    {
        "a": sleep_job(0, schedule="every 10s"),
        "b": sleep_job(0, schedule="every 10s"),
        "mine": sleep_job(0, schedule="every 10s"),
        "patient": {**sleep_job(0, schedule="every 10s"), "misfire_grace": "1h"},
    }
).jobs


def waiting(*mine: str) -> WaitingFires:
    return WaitingFires(lambda key: key[0] in mine)


def test_its_own_share_comes_first_then_the_oldest() -> None:
    fires = waiting("mine")
    fires.add(JOBS["a"], T)
    fires.add(JOBS["b"], T + timedelta(seconds=1))
    fires.add(JOBS["mine"], T + timedelta(seconds=2))

    chosen, expired = fires.take(2, T + timedelta(seconds=3), JOBS)

    assert [(job.id, fire) for job, fire in chosen] == [("mine", T + timedelta(seconds=2)), ("a", T)]
    assert expired == [] and fires.job_ids() == ["b"]


def test_a_newer_fire_supersedes_the_one_waiting_and_hands_it_back() -> None:
    fires = waiting()
    assert fires.add(JOBS["a"], T) is None
    assert fires.add(JOBS["a"], T + timedelta(seconds=10)) == T
    assert fires.add(JOBS["a"], T + timedelta(seconds=5)) is None  # not newer: ignored

    chosen, _ = fires.take(5, T + timedelta(seconds=11), JOBS)

    assert [(job.id, fire) for job, fire in chosen] == [("a", T + timedelta(seconds=10))]
    assert len(fires) == 0


def test_fires_past_their_grace_are_handed_back_on_the_way_without_taking_room() -> None:
    fires = waiting()
    fires.add(JOBS["a"], T)
    fires.add(JOBS["patient"], T)
    fires.add(JOBS["b"], T + timedelta(seconds=50))

    chosen, expired = fires.take(1, T + timedelta(seconds=70), JOBS)  # a: 70s > 1m; the others within

    assert [job.id for job, _ in expired] == ["a"]
    assert [job.id for job, _ in chosen] == ["patient"]
    assert fires.job_ids() == ["b"]


def test_expired_looks_at_every_fire_and_drops_removed_jobs() -> None:
    fires = waiting()
    fires.add(JOBS["patient"], T)
    fires.add(JOBS["a"], T + timedelta(seconds=1))
    fires.add(JOBS["b"], T + timedelta(seconds=2))
    remaining = {job_id: job for job_id, job in JOBS.items() if job_id != "b"}

    expired = fires.expired(T + timedelta(minutes=2), remaining)

    assert [job.id for job, _ in expired] == ["a"]
    assert fires.job_ids() == ["patient"]
    chosen, _ = fires.take(5, T + timedelta(minutes=2), remaining)
    assert [job.id for job, _ in chosen] == ["patient"]
