"""Fire times of job schedules, with the meaning Debian's cron gives them.

A schedule is one of:

``MIN HOUR DOM MONTH DOW``
    A crontab expression of exactly five fields, with the syntax of Debian's
    ``crontab(5)``: each field is a comma-separated list of items, an item is
    ``*``, a number, or a range ``A-B``; ``*`` and ranges may carry a step
    (``*/15``, ``8-18/2``). Allowed values: minute 0-59, hour 0-23,
    day-of-month 1-31, month 1-12 or ``jan``-``dec``, day-of-week 0-7 or
    ``sun``-``sat`` (0 and 7 are both Sunday). Names are case-insensitive and
    may be used wherever a number may, ranges included (``mon-fri``), as
    Debian's parser accepts them.
``@yearly`` ``@annually`` ``@monthly`` ``@weekly`` ``@daily`` ``@midnight`` ``@hourly``
    Debian's aliases (case-insensitive): ``0 0 1 1 *``, ``0 0 1 * *``,
    ``0 0 * * 0``, ``0 0 * * *`` and ``0 * * * *``. ``@reboot`` is rejected:
    it is not periodic.
``every N``
    A duration with a unit (``every 30s``, ``every 5m``, ``every 1h``): a whole
    number of seconds, at least one. Fires at the instants that are multiples
    of N seconds since the Unix epoch, so every process computes the same
    ones whenever it started; the timezone only changes how they are shown.

Rejected rather than guessed: a step on a single value (``5/10``: Debian's
parser silently reads it as ``5``, other crons as ``5-59/10``), reversed
ranges, extensions other crons have (``L``, ``W``, ``#``, ``?``, a sixth field
for seconds), and expressions that can never fire (``0 0 30 2 *``).

Crontab rules followed (Debian cron 3.0pl1, ``entry.c`` and ``cron.c``):

* Day of month and day of week: when both fields are restricted, a day matches
  if either matches (``0 0 1,15 * mon`` runs on the 1st, the 15th and every
  Monday); when either field starts with ``*``, ``*/2`` included, both must
  match (``0 0 */2 * mon`` runs on Mondays that fall on odd days).
* Fields are matched against the local wall clock of the schedule's timezone.
  A job is "fixed-time" when neither its minute nor its hour field starts with
  ``*`` (``@hourly`` is not fixed-time, the other aliases are); the others are
  "wildcard" jobs. When the zone's UTC offset changes, cron.c compares the new
  wall clock with the last minute it handled:

  - forward by more than 4 minutes and less than 3 hours (spring forward,
    Lord Howe's 30 minutes included): fixed-time jobs whose time was
    skipped run once, at the first instant of the new clock (``30 2 * * *`` in
    Europe/Berlin fires at 03:00+02:00 on 2026-03-29); wildcard jobs only run
    for wall times that exist.
  - forward by at most 4 minutes: every job whose time was skipped runs
    at the first instant of the new clock.
  - back by at most 3 hours (fall back): fixed-time jobs do not run again
    for wall times already passed, so ``30 2 * * *`` fires once, at
    02:30+02:00, on 2026-10-25 in Europe/Berlin; wildcard jobs run in both
    passes of the repeated wall times.
  - any larger jump (forward 3 hours or more, back more than 3 hours): the new
    wall clock is taken as is; skipped times do not run, repeated ones run
    again.

  Debian's cron only re-reads the offset when the zone's DST flag flips; we
  follow every offset change of the tz database.

Fire times are returned as aware datetimes in the schedule's timezone, so a
wall time that occurs twice carries the offset (and ``fold``) of the pass it
fires in. Mind that Python compares and subtracts two datetimes sharing one
ZoneInfo by wall time, ``fold`` ignored: compare fire times in UTC.

``cronsim`` evaluates the crontab fields on naive wall-clock times; the
daylight-saving rules above are applied here, because cronsim's own timezone
handling misses wildcard fires around a 30-minute shift (Lord Howe) and knows
only the common cases.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim

from maintd.jobs.durations import parse_duration
from maintd.scheduler.cron_calendar import PlainCalendar, plain_calendar

__all__ = [
    "ALIASES",
    "CronSchedule",
    "IntervalSchedule",
    "Schedule",
    "ScheduleError",
    "parse_schedule",
    "parse_timezone",
    "preview",
]


class ScheduleError(ValueError):
    """A schedule expression that cannot be used; the message says what is wrong, without a key path."""


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_SECOND = timedelta(seconds=1)
# Fire times must be representable in any zone: datetime ends with the year 9999.
_LAST_INSTANT = (datetime(9999, 12, 30, tzinfo=UTC) - _EPOCH) // _SECOND


def parse_timezone(name: str) -> ZoneInfo:
    """The zone named ``name`` in the tz database; ``ValueError("unknown timezone 'Mars/Base'")`` otherwise."""
    if not isinstance(name, str):
        # Config values arrive here unchecked: one exception type for every bad value.
        raise ValueError(f"timezone must be a string, got {type(name).__name__}")  # noqa: TRY004
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # OSError: a directory of the database such as "Europe".
        raise ValueError(f"unknown timezone {name!r}") from None


@dataclass(frozen=True)
class Schedule(ABC):
    """When a job fires: a parsed expression in a timezone. Build with :func:`parse_schedule`."""

    expression: str
    timezone: ZoneInfo

    def next_after(self, after: datetime) -> datetime:
        """The first fire time strictly after ``after`` (aware), in ``self.timezone``."""
        fires = self.upcoming(after, 1)
        if not fires:
            raise ScheduleError(f"{self.expression!r} has no fire time after {after.isoformat()}")
        return fires[0]

    def upcoming(self, after: datetime, count: int) -> list[datetime]:
        """The next ``count`` fire times strictly after ``after`` (aware), in ``self.timezone``.

        Shorter than ``count`` only where the calendar ends (year 9999).
        """
        if after.tzinfo is None or after.utcoffset() is None:
            raise ValueError(f"after must be timezone-aware, got {after.isoformat()}")
        # Fire times are whole seconds, so "after a fractional second" equals
        # "after the whole second before it".
        start = (after - _EPOCH) // _SECOND
        fires: list[datetime] = []
        for instant in itertools.islice(self._instants_after(start), count):
            if instant > _LAST_INSTANT:
                break
            fires.append(_aware(instant, self.timezone))
        return fires

    @abstractmethod
    def _instants_after(self, after: int) -> Iterator[int]:
        """Fire instants in POSIX seconds, strictly after ``after``, ascending."""

    def __str__(self) -> str:
        return self.expression


@dataclass(frozen=True)
class IntervalSchedule(Schedule):
    """``every N``: the multiples of ``interval`` since the Unix epoch."""

    interval: timedelta

    def _instants_after(self, after: int) -> Iterator[int]:
        step = self.interval // _SECOND
        return itertools.count((after // step + 1) * step, step)


class _Shift(Enum):
    """How cron.c's main loop reacts when the wall clock jumps (its ``wakeupKind``)."""

    CATCH_UP_ALL = "case 1"  # small jump forward: every skipped minute is run
    CATCH_UP_FIXED = "case 2"  # DST starts: fixed-time jobs of the skipped minutes run
    NO_REPEAT_FIXED = "case 0"  # DST ends: fixed-time jobs do not run again
    RESET = "default/case 3"  # too large: the new clock is taken as is


def _classify_shift(shift: int) -> _Shift:
    # cron.c: timeDiff is the new wall minute minus the last one handled, so a
    # shift of s minutes gives timeDiff = s + 1.
    time_diff = shift // 60 + 1
    if 1 < time_diff <= 5:
        return _Shift.CATCH_UP_ALL
    if 5 < time_diff <= 180:
        return _Shift.CATCH_UP_FIXED
    if -180 < time_diff <= 0:
        return _Shift.NO_REPEAT_FIXED
    return _Shift.RESET


# The longest window in which cron.c keeps fixed-time jobs from repeating
# (a 3-hour fall-back): how far back to look for a change affecting `after`.
_NO_REPEAT_WINDOW = 3 * 3600
# Offset changes are searched by probing at this stride and bisecting. No two
# changes in the tz database are closer than about four days, so a change can
# neither be missed nor cancelled out between two probes.
_PROBE_STRIDE = 86400


def _aware(instant: int, zone: ZoneInfo) -> datetime:
    # Not datetime.fromtimestamp: under freezegun `datetime` is FakeDatetime, whose
    # constructors drop `fold` and so turn the second 02:30 of a fall-back night
    # into the first. _EPOCH is a real datetime (made at import), and its
    # arithmetic and astimezone keep the fold.
    return (_EPOCH + instant * _SECOND).astimezone(zone)


def _utc_offset(zone: ZoneInfo, instant: int) -> int:
    offset = _aware(instant, zone).utcoffset()
    assert offset is not None  # a ZoneInfo always has one
    return offset // _SECOND


def _next_offset_change(zone: ZoneInfo, start: int, end: int, offset: int) -> int | None:
    """The first instant in ``(start, end]`` whose UTC offset is not ``offset`` (the one at ``start``)."""
    if _KNOWN_CHANGES[0] <= start and end <= _KNOWN_CHANGES[1]:
        # Looked up: a fire time is found with one probe per day otherwise, and a
        # listing of 10,000 monthly jobs' next fires took seconds.
        for chunk in range(start // _CHUNK, (end - 1) // _CHUNK + 1):
            changes = _offset_changes(zone, chunk)
            index = bisect.bisect_right(changes, start)
            if index < len(changes):
                return changes[index] if changes[index] <= end else None
        return None
    return _probe_offset_change(zone, start, end, offset)


# The span whose offset changes are listed, a chunk at a time, once per zone (1970 to 2200).
_KNOWN_CHANGES = (0, 7258118400)
# About a year: `maintd preview` lists the changes of the year it looks at, not of 230 years
# (84,000 probes, 0.2 s); a daemon lists the years its schedules reach, each once.
_CHUNK = 2**25


@functools.cache
def _offset_changes(zone: ZoneInfo, chunk: int) -> tuple[int, ...]:
    """Every instant in ``(chunk * _CHUNK, (chunk + 1) * _CHUNK]`` at which the zone's UTC
    offset changes (a few hundred probes, once per zone and chunk)."""
    changes = []
    cursor, end = chunk * _CHUNK, (chunk + 1) * _CHUNK
    offset = _utc_offset(zone, cursor)
    while (change := _probe_offset_change(zone, cursor, end, offset)) is not None:
        changes.append(change)
        cursor, offset = change, _utc_offset(zone, change)
    return tuple(changes)


def _probe_offset_change(zone: ZoneInfo, start: int, end: int, offset: int) -> int | None:
    low = start
    while low < end:
        high = min(low + _PROBE_STRIDE, end)
        if _utc_offset(zone, high) != offset:
            while high - low > 1:
                middle = (low + high) // 2
                if _utc_offset(zone, middle) == offset:
                    low = middle
                else:
                    high = middle
            return high
        low = high
    return None


def _naive(wall: int) -> datetime:
    return _NAIVE_EPOCH + timedelta(seconds=wall)


def _wall_seconds(wall: datetime) -> int:
    return (wall - _NAIVE_EPOCH) // _SECOND


@dataclass(frozen=True)
class CronSchedule(Schedule):
    """A crontab expression or alias, evaluated like Debian's cron (see the module docstring)."""

    fields: str  # the five crontab fields, an alias expanded

    @property
    def fixed_time(self) -> bool:
        """Neither minute nor hour starts with ``*``: cron.c's rules for clock changes differ."""
        minute, hour = self.fields.split()[:2]
        return not minute.startswith("*") and not hour.startswith("*")

    @functools.cached_property
    def _calendar(self) -> PlainCalendar | None:
        return plain_calendar(self.fields)

    def _walls_after(self, wall: int) -> Iterator[datetime]:
        """Matching wall-clock times strictly after ``wall`` (seconds), as naive datetimes."""
        if self._calendar is not None:
            yield from self._calendar.walls_after(_naive(wall))
            return
        try:
            yield from CronSim(self.fields, _naive(wall))
        except OverflowError:
            return  # datetime ends with the year 9999

    def _instants_after(self, after: int) -> Iterator[int]:
        zone = self.timezone
        fixed_time = self.fixed_time
        cursor = after
        offset = _utc_offset(zone, cursor)
        # Wall-clock times up to `floor` (in seconds since the naive epoch) do not fire.
        floor = cursor + offset
        if fixed_time:
            # Inside the repeated hour after a fall-back, fixed-time jobs wait for
            # wall times not yet passed in the first pass.
            window_start = cursor - _NO_REPEAT_WINDOW
            change = _next_offset_change(zone, window_start, cursor, _utc_offset(zone, window_start))
            if change is not None:
                before = _utc_offset(zone, change - 1)
                if _classify_shift(offset - before) is _Shift.NO_REPEAT_FIXED:
                    floor = max(floor, change + before - 1)
        while True:
            # Walk the matching wall times while the offset stays the same.
            for wall in self._walls_after(floor):
                instant = _wall_seconds(wall) - offset
                change = _next_offset_change(zone, cursor, instant, offset)
                if change is not None:
                    break
                yield instant
                cursor = instant
            else:
                return  # cronsim found no match within 50 years: the calendar ran out
            before, offset = offset, _utc_offset(zone, change)
            cursor = change
            floor = change + offset - 1  # every wall time of the new clock
            kind = _classify_shift(offset - before)
            if kind is _Shift.CATCH_UP_ALL or (kind is _Shift.CATCH_UP_FIXED and fixed_time):
                skipped = next(self._walls_after(change + before - 1), None)
                if skipped is not None and _wall_seconds(skipped) < change + offset:
                    yield change
                    floor = change + offset  # the new clock's first minute ran with the catch-up
            elif kind is _Shift.NO_REPEAT_FIXED and fixed_time:
                floor = change + before - 1


# The @aliases, as the five fields they stand for.
ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


# Quartz/cronie syntax some users will try: L(ast), W(eekday), nth weekday (#), "no value" (?).
_EXTENSION = re.compile(r"\?|\d*L|LW|\d+W|\w+#\w*", re.IGNORECASE)


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # names[i] stands for low + i

    def value(self, token: str, item: str) -> int:
        if token.isdigit() and token.isascii():
            number = int(token)
            if not self.low <= number <= self.high:
                raise ScheduleError(f"{self.name} must be {self.low}-{self.high}")
            return number
        if token.lower() in self.names:
            return self.low + self.names.index(token.lower())
        if not token:
            raise ScheduleError(f"{self.name} {item!r} is missing a value")
        if _EXTENSION.fullmatch(token):
            raise ScheduleError(f"{self.name} {token!r} is not supported: Debian cron has no L, W, # or ? syntax")
        if self.names:
            raise ScheduleError(f"{self.name} {token!r} is not a number or a name ({self.names[0]}-{self.names[-1]})")
        raise ScheduleError(f"{self.name} {token!r} is not a number")

    def parse(self, text: str) -> set[int]:
        """The values a field selects, following Debian's ``get_list``/``get_range``."""
        values: set[int] = set()
        for item in text.split(","):
            if not item:
                raise ScheduleError(f"{self.name} {text!r} has an empty list item")
            base, slash, step_text = item.partition("/")
            step = 1
            if slash:
                if not (step_text.isdigit() and step_text.isascii()):
                    raise ScheduleError(f"{self.name} step {step_text!r} in {item!r} is not a number")
                step = int(step_text)
                if step == 0:
                    raise ScheduleError(f"{self.name} step in {item!r} must be at least 1")
            if base == "*":
                start, end = self.low, self.high
            elif "-" in base:
                first, _, last = base.partition("-")
                start, end = self.value(first, item), self.value(last, item)
                if start > end:
                    raise ScheduleError(f"{self.name} range {base!r} must go from low to high")
            else:
                start = end = self.value(base, item)
                if slash:
                    raise ScheduleError(
                        f"{self.name} {item!r}: a step needs a range or '*' before it, e.g. '{base}-{self.high}/{step}'"
                    )
            values.update(range(start, end + 1, step))
        return values


_MINUTE = _Field("minute", 0, 59)
_HOUR = _Field("hour", 0, 23)
_DAY_OF_MONTH = _Field("day-of-month", 1, 31)
_MONTH = _Field("month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"))
_DAY_OF_WEEK = _Field("day-of-week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat"))
_DAYS_IN_MONTH = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}


def _check_cron_fields(text: str) -> str:
    """Validate a five-field expression; return its fields joined by single spaces."""
    fields = text.split()
    if len(fields) != 5:
        raise ScheduleError(f"expected 5 fields, got {len(fields)} (minute hour day-of-month month day-of-week)")
    minute, hour, day_of_month, month, day_of_week = fields
    _MINUTE.parse(minute)
    _HOUR.parse(hour)
    days = _DAY_OF_MONTH.parse(day_of_month)
    months = _MONTH.parse(month)
    _DAY_OF_WEEK.parse(day_of_week)
    # With a '*' in either day field both must match (otherwise either may), so
    # only then can a day-of-month that no selected month has make it silent.
    # Every date falls on every weekday in the 400-year Gregorian cycle.
    both_must_match = day_of_month.startswith("*") or day_of_week.startswith("*")
    if both_must_match and not any(day <= _DAYS_IN_MONTH[m] for m in months for day in days):
        raise ScheduleError(f"never fires: day-of-month {day_of_month!r} does not occur in month {month!r}")
    return " ".join(fields)


_EVERY = re.compile(r"every\s+(.*)", re.IGNORECASE)


def _parse_interval(text: str) -> timedelta:
    match = _EVERY.fullmatch(text)
    try:
        interval = parse_duration(match.group(1)) if match else None
    except ValueError:
        interval = None
    if interval is None:
        raise ScheduleError(
            f"invalid interval {text!r}: expected 'every' and a duration with a unit (ms, s, m, h, d), e.g. 'every 30s'"
        )
    if interval < _SECOND:
        raise ScheduleError(f"invalid interval {text!r}: must be at least 1s")
    if interval % _SECOND:
        raise ScheduleError(f"invalid interval {text!r}: must be a whole number of seconds")
    return interval


def parse_schedule(expression: str, timezone: str | ZoneInfo = "UTC") -> Schedule:
    """Parse a schedule (see the module docstring); raise :class:`ScheduleError` naming what is wrong.

    An unknown timezone name raises ``ValueError`` from :func:`parse_timezone`.
    """
    if not isinstance(expression, str):
        raise ScheduleError(f"a schedule must be a string, got {type(expression).__name__}")
    zone = timezone if isinstance(timezone, ZoneInfo) else parse_timezone(timezone)
    text = expression.strip()
    if not text:
        raise ScheduleError("empty schedule: expected a crontab expression, an @alias or 'every N'")
    if text.startswith("@"):
        if text.lower() == "@reboot":
            raise ScheduleError("'@reboot' is not supported: it is not a periodic schedule")
        fields = ALIASES.get(text.lower())
        if fields is None:
            raise ScheduleError(f"unknown alias {text!r}: expected one of {', '.join(ALIASES)}")
        return CronSchedule(expression, zone, fields)
    if text.lower().startswith("every"):
        return IntervalSchedule(expression, zone, _parse_interval(text))
    try:
        fields = _check_cron_fields(text)
    except ScheduleError as error:
        raise ScheduleError(f"invalid cron expression {expression!r}: {error}") from None
    return CronSchedule(expression, zone, fields)


def preview(expression: str, timezone: str, count: int, after: datetime) -> list[datetime]:
    """The next ``count`` fire times of ``expression`` strictly after ``after``, in ``timezone``.

    A naive ``after`` is read as wall time in ``timezone``. Raises
    :class:`ScheduleError` for a bad expression, ``ValueError`` for an unknown zone.
    """
    zone = parse_timezone(timezone)
    if after.tzinfo is None:
        after = after.replace(tzinfo=zone)
    return parse_schedule(expression, zone).upcoming(after, count)
