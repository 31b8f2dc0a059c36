"""Batch sizes from statement times (jobs/batch_size.py): fed sizes and seconds, no database."""

from __future__ import annotations

from datetime import timedelta

import pytest

from maintd.jobs.batch_size import (
    FIRST_BATCH,
    LARGEST_BATCH,
    MAX_GROWTH,
    SMALLEST_BATCH,
    TARGET_SHARE,
    BatchParams,
    BudgetSize,
    FixedSize,
)

pytestmark = pytest.mark.unit

BUDGET = 0.05


def run(sizer: BudgetSize, seconds_per_row: float, batches: int, fixed_cost: float = 0.0) -> list[int]:
    """Feed the sizer ``batches`` batches on a server taking ``fixed_cost + rows * seconds_per_row``."""
    sizes = []
    for _ in range(batches):
        size = sizer.next_size()
        sizes.append(size)
        sizer.record(size, fixed_cost + size * seconds_per_row)
    return sizes


def statement_time(size: int, seconds_per_row: float, fixed_cost: float = 0.0) -> float:
    return fixed_cost + size * seconds_per_row


def test_starts_small_and_grows_to_half_the_budget() -> None:
    sizer = BudgetSize(BUDGET)
    sizes = run(sizer, seconds_per_row=2e-6, batches=12, fixed_cost=0.0005)
    assert sizes[0] == FIRST_BATCH
    # Never more than MAX_GROWTH times the last, and growing until it gets there.
    assert all(b <= a * MAX_GROWTH for a, b in zip(sizes, sizes[1:], strict=False))
    assert sizes == sorted(sizes)
    settled = statement_time(sizes[-1], 2e-6, 0.0005)
    assert settled == pytest.approx(BUDGET * TARGET_SHARE, rel=0.05)
    assert all(statement_time(s, 2e-6, 0.0005) <= BUDGET for s in sizes)


def test_a_fast_server_is_capped_at_the_largest_batch() -> None:
    sizes = run(BudgetSize(BUDGET), seconds_per_row=1e-8, batches=20)
    assert max(sizes) == sizes[-1] == LARGEST_BATCH


def test_a_larger_budget_means_larger_batches() -> None:
    small = run(BudgetSize(0.02), seconds_per_row=2e-6, batches=15)[-1]
    large = run(BudgetSize(0.08), seconds_per_row=2e-6, batches=15)[-1]
    assert large == pytest.approx(4 * small, rel=0.05)


def test_a_slow_batch_shrinks_the_next_at_once_and_it_grows_back() -> None:
    sizer = BudgetSize(BUDGET)
    settled = run(sizer, seconds_per_row=1e-6, batches=15)[-1]
    # A lock wait (or a cold cache): the batch took 20 times the budget.
    sizer.record(settled, 20 * BUDGET)
    shrunk = sizer.next_size()
    assert shrunk <= settled * TARGET_SHARE / 20 + 1
    again = run(sizer, seconds_per_row=1e-6, batches=10)
    assert again[-1] == pytest.approx(settled, rel=0.05)


def test_a_server_turned_slower_per_row_is_followed_down() -> None:
    sizer = BudgetSize(BUDGET)
    run(sizer, seconds_per_row=1e-6, batches=15)
    slower = run(sizer, seconds_per_row=1e-5, batches=3)
    # One batch too large, at most: then every statement is back within the budget.
    assert all(statement_time(s, 1e-5) <= BUDGET for s in slower[1:])
    assert statement_time(slower[-1], 1e-5) == pytest.approx(BUDGET * TARGET_SHARE, rel=0.05)


@pytest.mark.parametrize("seconds", [0.0, 1e-9, 10.0, 1e6])
def test_stays_within_its_bounds_whatever_it_is_fed(seconds: float) -> None:
    sizer = BudgetSize(BUDGET)
    for _ in range(30):
        sizer.record(sizer.next_size(), seconds)
        assert SMALLEST_BATCH <= sizer.next_size() <= LARGEST_BATCH


def test_a_first_batch_that_is_too_slow_for_the_budget_shrinks_to_the_smallest() -> None:
    sizer = BudgetSize(0.001)
    sizes = run(sizer, seconds_per_row=1e-3, batches=5)
    assert sizes[0] == FIRST_BATCH
    assert sizes[1:] == [SMALLEST_BATCH] * 4


def test_fixed_size_never_changes() -> None:
    sizer = FixedSize(10_000)
    sizer.record(10_000, 5.0)
    sizer.record(10_000, 0.0)
    assert sizer.next_size() == 10_000


def test_params_choose_the_sizer() -> None:
    auto = BatchParams().sizer()
    assert isinstance(auto, BudgetSize) and auto.budget == 0.05
    assert BatchParams(batch_size="auto", max_statement=timedelta(seconds=2)).sizer() == BudgetSize(2.0)
    assert BatchParams(batch_size=250).sizer() == FixedSize(250)


def test_a_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="budget must be positive"):
        BudgetSize(0)
