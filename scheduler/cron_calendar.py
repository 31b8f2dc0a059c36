"""The matching wall times of a plain crontab, found month by month.

cronsim finds the next match by stepping a day at a time through days that do
not match: about 0.3 ms to find the next five fires of a monthly job, so a
listing of 10,000 such jobs took 3 s (bench/idle.py). An expression of plain
values (maintd's schedules reject ``L``, ``W`` and ``#``) gives the matching days
of a month directly from its parsed sets; anything else is left to cronsim. The rules are cronsim's: day-of-month and day-of-week
both restricted match either (Debian cron), otherwise both must match; the
search ends 50 years on, as cronsim's does. tests/unit/test_cron_calendar.py
compares both on thousands of expressions.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from datetime import datetime
from typing import Any, TypeVar

from cronsim import CronSim

# cronsim gives up on an expression that matches nothing within this many years.
_SEARCH_YEARS = 50
_LAST_YEAR = 9999
_ALL_DAYS = tuple(range(1, 32))
_SHARED: dict[Any, Any] = {}
_T = TypeVar("_T")


def _shared(value: _T) -> _T:
    return _SHARED.setdefault(value, value)


class PlainCalendar:
    """A plain crontab's parsed fields (see :func:`plain_calendar`)."""

    __slots__ = ("_candidates", "_days", "_either", "_hours", "_minutes", "_months", "_weekdays")

    def __init__(self, sim: CronSim, weekdays: set[int]) -> None:
        # Shared between calendars: 10,000 jobs hold a few distinct sets, not 20 MB of copies.
        self._hours, self._minutes = _shared(tuple(sorted(sim.hours))), _shared(tuple(sorted(sim.minutes)))
        self._days, self._months = _shared(frozenset(sim.days)), _shared(frozenset(sim.months))
        self._weekdays = _shared(frozenset(weekday % 7 for weekday in weekdays))  # cron's 0 and 7 are both Sunday
        # Both restricted: either matches; else both must (one of them matches every day).
        self._either = not sim.day_and
        self._candidates = _ALL_DAYS if self._either else _shared(tuple(sorted(self._days)))

    def walls_after(self, after: datetime) -> Iterator[datetime]:
        """Matching naive wall times strictly after naive ``after``, ascending."""
        days, weekdays, either = self._days, self._weekdays, self._either
        year, month = after.year, after.month
        last_year = min(after.year + _SEARCH_YEARS, _LAST_YEAR)
        while year <= last_year:
            if month in self._months:
                first_weekday, length = calendar.monthrange(year, month)  # Monday is 0
                starting = (year, month) == (after.year, after.month)
                for day in self._candidates:
                    if day > length:
                        break
                    if starting and day < after.day:
                        continue
                    in_week = (first_weekday + day) % 7 in weekdays  # cron counts from Sunday
                    if not ((day in days or in_week) if either else in_week):
                        continue
                    for hour in self._hours:
                        for minute in self._minutes:
                            wall = datetime(year, month, day, hour, minute)
                            if wall > after:
                                yield wall
            month += 1
            if month > 12:
                year, month = year + 1, 1


def plain_calendar(fields: str) -> PlainCalendar | None:
    """The five crontab ``fields`` parsed for :meth:`PlainCalendar.walls_after`; None
    when they use ``L``, ``W`` or ``#`` (cronsim's own walk handles those)."""
    sim = CronSim(fields, datetime(2000, 1, 1))
    weekdays = {weekday for weekday in sim.weekdays if isinstance(weekday, int) and 0 <= weekday <= 7}
    plain = sim.seconds == {0} and all(1 <= day <= 31 for day in sim.days) and len(weekdays) == len(sim.weekdays)
    return PlainCalendar(sim, weekdays) if plain else None
