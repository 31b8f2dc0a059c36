"""The failure record behind 429: a sliding window per client address, in bounded memory."""

import pytest
from prometheus_client import CollectorRegistry, Counter

from maintd.admin_api.auth_failures import AuthFailures

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def failures(clock: Clock, **options: int) -> AuthFailures:
    counter = Counter("maintd_auth_failures", "test", ["reason"], registry=CollectorRegistry())
    return AuthFailures(counter, clock=clock, **options)


def test_limited_after_limit_failures_within_the_window() -> None:
    clock = Clock()
    record = failures(clock, limit=3)
    assert [record.record("a", "invalid", "/admin/jobs") for _ in range(3)] == [None, None, None]
    assert record.record("a", "invalid", "/admin/jobs") == pytest.approx(60.0)


def test_failures_spread_wider_than_the_window_never_limit() -> None:
    clock = Clock()
    record = failures(clock, limit=3)
    for _ in range(10):
        assert record.record("a", "missing", "/admin/jobs") is None
        clock.now += 30.1


def test_memory_is_bounded_by_forgetting_the_least_recently_failing_address() -> None:
    clock = Clock()
    record = failures(clock, limit=2, max_clients=2)
    record.record("a", "invalid", "/")
    record.record("a", "invalid", "/")
    assert record.record("a", "invalid", "/") is not None  # limited
    record.record("b", "invalid", "/")
    record.record("c", "invalid", "/")  # a is forgotten
    assert record.record("a", "invalid", "/") is None
