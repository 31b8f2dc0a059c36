"""The month-by-month walk of plain crontabs finds exactly what cronsim's day-by-day walk finds."""

from __future__ import annotations

import itertools
import random
from datetime import datetime, timedelta

import pytest
from cronsim import CronSim, CronSimError

from maintd.scheduler.cron_calendar import plain_calendar

pytestmark = pytest.mark.unit

MINUTES = ["*", "0", "59", "*/15", "5-10", "1,31,59", "10-40/7"]
HOURS = ["*", "0", "23", "*/6", "9-17", "3,15"]
DAYS = ["*", "1", "15", "29", "30", "31", "1-7", "*/10", "1,15,31", "28-31", "2-30/9"]
MONTHS = ["*", "1", "2", "12", "*/3", "2,4,6", "jan-mar", "2-11/5"]
WEEKDAYS = ["*", "0", "7", "1", "6", "1-5", "0,6", "*/2", "mon-fri", "sun", "3-7"]
STARTS = [
    datetime(2024, 2, 28, 23, 59, 30),  # a leap day next
    datetime(2025, 2, 28, 12, 0),
    datetime(2026, 12, 31, 23, 59),  # a year's last minute
    datetime(2027, 1, 31, 0, 0),
    datetime(2030, 6, 15, 9, 30, 59),
]


def cronsim_walls(fields: str, after: datetime, count: int) -> list[datetime]:
    return list(itertools.islice(CronSim(fields, after), count))


def test_random_plain_expressions_match_cronsim() -> None:
    rng = random.Random(20261207)
    compared = 0
    for _ in range(1500):
        fields = " ".join(rng.choice(options) for options in (MINUTES, HOURS, DAYS, MONTHS, WEEKDAYS))
        after = rng.choice(STARTS) + timedelta(minutes=rng.randrange(0, 60 * 24 * 400))
        try:
            expected = cronsim_walls(fields, after, 12)
        except CronSimError:  # e.g. day 30 of February only
            continue
        calendar = plain_calendar(fields)
        assert calendar is not None, fields
        assert list(itertools.islice(calendar.walls_after(after), 12)) == expected, (fields, after)
        compared += 1
    assert compared > 1000


@pytest.mark.parametrize(
    ("fields", "after"),
    [
        ("0 0 29 2 *", datetime(2025, 3, 1)),  # the next leap day, three years on
        ("0 0 29 2 1", datetime(2025, 3, 1)),  # a leap day that is a Monday (both restricted: either)
        ("30 4 31 * 5", datetime(2026, 11, 30, 4, 30)),  # the 31st or any Friday
        ("0 0 13 * 5", datetime(2026, 1, 1)),
        ("* * * * *", datetime(2026, 12, 31, 23, 58)),  # over a year's end
        ("0 12 1 1 *", datetime(2026, 1, 1, 12, 0)),  # strictly after: next year
    ],
)
def test_edge_cases_match_cronsim(fields: str, after: datetime) -> None:
    calendar = plain_calendar(fields)
    assert calendar is not None
    assert list(itertools.islice(calendar.walls_after(after), 8)) == cronsim_walls(fields, after, 8)


def test_the_walk_ends_near_the_calendars_end_as_cronsims_does() -> None:
    after = datetime(9999, 12, 30)
    calendar = plain_calendar("0 0 1 * *")
    assert calendar is not None
    assert list(calendar.walls_after(after)) == []


@pytest.mark.parametrize("fields", ["0 0 L * *", "0 0 LW * *", "0 0 * * 5L", "0 0 * * 1#2"])
def test_expressions_beyond_plain_values_are_left_to_cronsim(fields: str) -> None:
    assert plain_calendar(fields) is None
