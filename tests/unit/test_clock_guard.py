"""The clock guard (scheduler/engine/clock_guard.py): when a replica's clock may schedule.

Readings of the database's clock are fed by hand, with the replica's wall clock
and monotonic clock moved by the test: a skew in and out of bound, the margin
before scheduling resumes, round trips too slow to tell, and a wall clock that
jumps between readings.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from maintd.scheduler.engine.clock_guard import RECHECK_SUSPENDED, NoClockGuard, SkewGuard, Stamp
from tests.memory_store import MemoryStore
from tests.unit.test_claim_ahead import (
    T0,
    Clock,
    Schedule,
    claim_ahead,
    claims,
    jobs,
)

pytestmark = pytest.mark.unit

DB = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
BOUND = timedelta(seconds=2)


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def _log(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))

    info = error = warning = _log


class Host:
    """The replica's clocks: the wall clock ``skew`` off the true time, and a monotonic clock."""

    def __init__(self, skew: float = 0.0) -> None:
        self.elapsed = 0.0
        self.skew = skew

    def wall(self) -> datetime:
        return DB + timedelta(seconds=self.elapsed + self.skew)

    def monotonic(self) -> float:
        return 1000.0 + self.elapsed


def guard(host: Host) -> tuple[SkewGuard, Log, list[bool]]:
    log, changes = Log(), []
    checked = SkewGuard(BOUND, clock=host.wall, monotonic=host.monotonic, log=log)
    checked.listen(changes.append)
    return checked, log, changes


def read(checked: SkewGuard, host: Host, *, asked: float = 0.01, answered: float = 0.01) -> None:
    """One round trip: ``asked`` seconds for the question to reach the database, ``answered`` back."""
    sent = checked.stamp()
    host.elapsed += asked
    database_now = DB + timedelta(seconds=host.elapsed)
    host.elapsed += answered
    checked.observe(sent, database_now)


def test_a_clock_within_bound_schedules() -> None:
    host = Host(skew=1.5)
    checked, _, changes = guard(host)
    read(checked, host)
    assert checked.skew is not None and abs(checked.skew.total_seconds() - 1.5) < 1e-6
    assert not checked.suspended()
    assert checked.reason() is None
    assert changes == []


@pytest.mark.parametrize(("skew", "shown"), [(10.0, "+10.000s"), (-10.0, "-10.000s")])
def test_a_clock_out_of_bound_suspends_scheduling_and_says_by_how_much(skew: float, shown: str) -> None:
    host = Host(skew=skew)
    checked, log, changes = guard(host)
    read(checked, host)
    assert checked.suspended()
    assert checked.reason() == f"clock: {shown} off the database's clock (more than 2s)"
    assert changes == [True]
    assert [event for event, _ in log.events] == ["clock_skew"]
    # Told once, not at every reading.
    read(checked, host)
    assert changes == [True]


def test_scheduling_resumes_only_well_within_bound() -> None:
    host = Host(skew=3.0)
    checked, log, changes = guard(host)
    read(checked, host)
    host.skew = 1.8  # within the bound, not within three quarters of it
    read(checked, host)
    assert checked.suspended()
    reason = checked.reason()
    assert reason == "clock: +1.800s off the database's clock (scheduling resumes within 1.5s)"
    host.skew = 1.4
    read(checked, host)
    assert not checked.suspended() and checked.reason() is None
    assert changes == [True, False]
    assert log.events[-1][0] == "clock_skew_resolved"


def test_a_round_trip_longer_than_the_bound_is_not_a_reading() -> None:
    # The answer sat 5 s in a blocked loop: its midpoint would read +2.5 s.
    host = Host()
    checked, log, changes = guard(host)
    read(checked, host, asked=0.001, answered=5.0)
    assert checked.skew is None and not checked.suspended() and changes == []
    assert log.events[0][0] == "clock_reading_ignored"


def test_loop_lag_within_the_bound_never_reads_as_skew() -> None:
    # The worst case the bound lets through: all of the round trip on the way back.
    host = Host()
    checked, _, changes = guard(host)
    read(checked, host, asked=0.0, answered=BOUND.total_seconds())
    assert checked.skew == BOUND / 2
    assert not checked.suspended() and changes == []


def test_a_wall_clock_that_jumps_suspends_before_the_next_reading() -> None:
    host = Host()
    checked, _, changes = guard(host)
    read(checked, host)
    host.elapsed += 5.0
    assert not checked.suspended()  # time passing is no skew
    host.skew = 10.0  # the wall clock is set 10 s ahead
    assert checked.suspended()
    assert checked.reason() == "clock: +10.000s off the database's clock (more than 2s)"
    assert changes == [True]
    # A reading confirms it; the clock set right again and read, scheduling resumes.
    read(checked, host)
    assert checked.suspended()
    host.skew = 0.0
    read(checked, host)
    assert not checked.suspended() and changes == [True, False]


def test_the_database_clock_is_estimated_from_the_monotonic_clock() -> None:
    host = Host(skew=-10.0)
    checked, _, _ = guard(host)
    read(checked, host, asked=0.02, answered=0.02)
    host.elapsed += 3.0
    assert abs((checked.database_now() - (DB + timedelta(seconds=host.elapsed))).total_seconds()) < 1e-6


def test_a_suspended_guard_asks_for_a_reading_at_most_once_a_recheck() -> None:
    host = Host(skew=10.0)
    checked, _, _ = guard(host)
    read(checked, host)
    assert not checked.wants_measurement()
    host.elapsed += RECHECK_SUSPENDED.total_seconds()
    assert checked.wants_measurement()


async def test_start_suspends_when_no_reading_can_tell() -> None:
    host = Host()
    checked, _, changes = guard(host)

    async def slow_database() -> datetime:
        host.elapsed += 3.0
        return DB + timedelta(seconds=host.elapsed)

    await checked.establish(slow_database)
    assert checked.suspended() and changes == [True]
    assert checked.reason() == "clock: not compared with the database's yet (its answers were too slow to tell)"
    # The first reading that counts decides by the bound itself (the margin is for a clock known to be off).
    host.skew = 1.8
    read(checked, host)
    assert not checked.suspended() and changes == [True, False]


async def test_start_takes_the_first_reading_that_counts() -> None:
    host = Host(skew=0.2)
    checked, _, changes = guard(host)
    delays = iter([3.0, 0.01])

    async def database() -> datetime:
        host.elapsed += next(delays)
        return DB + timedelta(seconds=host.elapsed)

    await checked.establish(database)
    assert not checked.suspended() and changes == []


def test_the_null_guard_never_suspends() -> None:
    checked = NoClockGuard()
    checked.observe(Stamp(DB + timedelta(days=400), 0.0), DB)
    assert not checked.suspended() and checked.reason() is None and not checked.wants_measurement()


async def test_a_claim_pass_whose_node_heartbeat_reads_the_clock_off_claims_nothing() -> None:
    # The database says T0 (the store's clock); this host's wall clock says 10 s later.
    host = Clock(T0 + timedelta(seconds=10))
    checked = SkewGuard(BOUND, clock=host, monotonic=lambda: 1000.0, log=Log())
    store = MemoryStore(Clock(T0))
    [job] = jobs(1).values()
    ahead = claim_ahead(
        store, "node-a", Schedule([(job, host.now + timedelta(milliseconds=400))]), host, clock_guard=checked
    )
    await ahead.claim_due()
    assert len(store.called("node_heartbeat_at")) == 1 and claims(store, "node-a") == []
    assert checked.suspended()
    # Suspended: no more passes at the database until a reading is due.
    await ahead.claim_due()
    assert len(store.called("node_heartbeat_at")) == 1 and claims(store, "node-a") == []
