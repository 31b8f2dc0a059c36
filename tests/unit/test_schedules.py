"""Fire times of schedules: crontab as Debian's cron means it, aliases, ``every N``, the APScheduler trigger.

The crontab tests compare against an oracle written here, independent of the
code under test and of cronsim: a brute-force run of Debian cron's main loop
(cron.c), minute by minute in real time, with its daylight-saving cases.
"""

from __future__ import annotations

import bisect
import itertools
import pickle
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger

from maintd.scheduler.engine.trigger import ScheduleTrigger
from maintd.scheduler.schedules import (
    CronSchedule,
    IntervalSchedule,
    ScheduleError,
    parse_schedule,
    parse_timezone,
    preview,
)

pytestmark = pytest.mark.unit


# --- the oracle: Debian cron, brute force -----------------------------------------------------

_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DOW_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _oracle_list(text: str, low: int, high: int, names: tuple[str, ...] = ()) -> set[int]:
    """entry.c get_list/get_range: items ``*``, ``N``, ``A-B``, with ``/STEP`` after ``*`` or a range."""

    def number(token: str) -> int:
        return low + names.index(token.lower()) if token.lower() in names else int(token)

    bits: set[int] = set()
    for item in text.split(","):
        span, _, step = item.partition("/")
        if span == "*":
            first, last = low, high
        else:
            start, _, end = span.partition("-")
            first = number(start)
            last = number(end) if end else first
        bits.update(range(first, last + 1, int(step) if step else 1))
    return bits


@dataclass
class OracleJob:
    """A crontab entry as entry.c stores it: value sets plus the *_STAR flags."""

    minute: set[int]
    hour: set[int]
    dom: set[int]
    month: set[int]
    dow: set[int]
    min_star: bool = False
    hr_star: bool = False
    dom_star: bool = False
    dow_star: bool = False

    @classmethod
    def parse(cls, expression: str) -> OracleJob:
        every_hour, every_dom, every_month, every_dow = (
            set(range(24)),
            set(range(1, 32)),
            set(range(1, 13)),
            set(range(8)),
        )
        # entry.c, load_entry(): the @ shortcuts set bits and flags directly.
        shortcuts = {
            "@yearly": cls({0}, {0}, {1}, {1}, every_dow, dow_star=True),
            "@annually": cls({0}, {0}, {1}, {1}, every_dow, dow_star=True),
            "@monthly": cls({0}, {0}, {1}, every_month, every_dow, dow_star=True),
            "@weekly": cls({0}, {0}, every_dom, every_month, {0, 7}, dow_star=True),
            "@daily": cls({0}, {0}, every_dom, every_month, every_dow),
            "@midnight": cls({0}, {0}, every_dom, every_month, every_dow),
            "@hourly": cls({0}, every_hour, every_dom, every_month, every_dow, hr_star=True),
        }
        if expression in shortcuts:
            return shortcuts[expression]
        minute, hour, dom, month, dow = expression.split()
        job = cls(
            _oracle_list(minute, 0, 59),
            _oracle_list(hour, 0, 23),
            _oracle_list(dom, 1, 31),
            _oracle_list(month, 1, 12, _MONTH_NAMES),
            _oracle_list(dow, 0, 7, _DOW_NAMES),
            min_star=minute.startswith("*"),
            hr_star=hour.startswith("*"),
            dom_star=dom.startswith("*"),
            dow_star=dow.startswith("*"),
        )
        if job.dow & {0, 7}:  # "make sundays equivalent"
            job.dow |= {0, 7}
        return job

    @property
    def wild(self) -> bool:
        return self.min_star or self.hr_star

    def matches(self, tm: time.struct_time) -> bool:
        """cron.c find_jobs(): the day-of-month/day-of-week rule included."""
        dow = (tm.tm_wday + 1) % 7  # struct_time counts from Monday, cron from Sunday
        if tm.tm_min not in self.minute or tm.tm_hour not in self.hour or tm.tm_mon not in self.month:
            return False
        if self.dom_star or self.dow_star:
            return dow in self.dow and tm.tm_mday in self.dom
        return dow in self.dow or tm.tm_mday in self.dom


def debian_cron(expressions: list[str], zone: ZoneInfo, start: datetime, end: datetime) -> list[list[datetime]]:
    """Run cron.c's main loop over ``(start, end]``; per expression, the times its job ran.

    cron keeps its clocks in minutes of local wall time since the epoch
    (``virtualTime``, ``timeRunning``); every real minute it compares the new
    wall minute with the last one it handled and picks one of its cases.
    """
    jobs = [OracleJob.parse(expression) for expression in expressions]
    fires: list[list[datetime]] = [[] for _ in jobs]

    def clock(minute: int) -> int:  # set_time(): (time + GMToff) / 60
        instant = minute * 60
        offset = datetime.fromtimestamp(instant, zone).utcoffset()
        assert offset is not None
        return (instant + int(offset.total_seconds())) // 60

    due: set[int] = set()  # job_add() queues a job once per pass

    def find_jobs(vtime: int, do_wild: bool, do_non_wild: bool) -> None:
        tm = time.gmtime(vtime * 60)
        for index, job in enumerate(jobs):
            if job.matches(tm) and ((do_non_wild and not job.wild) or (do_wild and job.wild)):
                due.add(index)

    first_minute = int(start.timestamp()) // 60
    virtual = running = clock(first_minute)
    for minute in range(first_minute + 1, int(end.timestamp()) // 60 + 1):
        if (now := clock(minute)) == running:
            continue  # cron sleeps on until the wall-clock minute changes
        running = now
        due.clear()

        time_diff = running - virtual
        if time_diff == 1:
            virtual = running
            find_jobs(virtual, True, True)
        else:
            wakeup_kind = -1
            if time_diff > -180:
                wakeup_kind = 0
            if time_diff > 0:
                wakeup_kind = 1
            if time_diff > 5:
                wakeup_kind = 2
            if time_diff > 180:
                wakeup_kind = 3
            if wakeup_kind == 1:  # woke up late: run every virtual minute
                while True:
                    virtual += 1
                    find_jobs(virtual, True, True)
                    if virtual >= running:
                        break
            elif wakeup_kind == 2:  # DST began: wildcard jobs for now, fixed-time ones for each skipped minute
                find_jobs(running, True, False)
                while True:
                    virtual += 1
                    find_jobs(virtual, False, True)
                    if virtual >= running:
                        break
            elif wakeup_kind == 0:  # DST ended: wildcard jobs only, virtual time waits
                find_jobs(running, True, False)
            else:  # the clock jumped a lot
                virtual = running
                find_jobs(running, True, True)
        for index in due:
            fires[index].append(datetime.fromtimestamp(minute * 60, zone))
    return fires


def _iso(times: list[datetime]) -> list[str]:
    return [moment.isoformat() for moment in times]


def _compare(
    expressions: list[str], zone_name: str, start: datetime, end: datetime, restarts: tuple[datetime, ...] = ()
) -> None:
    """Our fire times against the oracle's: walked from ``start``, and asked afresh from each of ``restarts``.

    Bounds are in UTC: Python compares two datetimes of one ZoneInfo by wall time, ignoring ``fold``.
    """
    zone = ZoneInfo(zone_name)
    assert all(moment.tzinfo is UTC for moment in [start, end, *restarts])
    mismatches: dict[str, object] = {}
    for expression, oracle in zip(expressions, debian_cron(expressions, zone, start, end), strict=True):
        schedule = parse_schedule(expression, zone)
        *ours, beyond = schedule.upcoming(start, len(oracle) + 1)
        if _iso(ours) != _iso(oracle) or beyond <= end:
            mismatches[expression] = {"debian": _iso(oracle), "ours": _iso([*ours, beyond])}
            continue
        # Fire times depend on the instant asked about only, not on where a walk began.
        instants = [fire.timestamp() for fire in oracle]
        for restart in restarts:
            later = bisect.bisect_right(instants, restart.timestamp())
            if later == len(oracle):
                continue
            expected = oracle[later]
            if (got := schedule.next_after(restart)).isoformat() != expected.isoformat():
                mismatches[expression] = {
                    "after": restart.isoformat(),
                    "debian": expected.isoformat(),
                    "ours": got.isoformat(),
                }
                break
    assert not mismatches, f"{zone_name} {start.isoformat()}..{end.isoformat()}: {mismatches}"


FIXED_TIME = [
    "0 0 * * *",
    "30 0 * * *",
    "0 1 * * *",
    "30 1 * * *",
    "59 1 * * *",
    "0 2 * * *",
    "30 2 * * *",
    "15,45 2 * * *",
    "0 3 * * *",
    "0,30 1-3 * * *",
    "0-59/20 0-3 * * *",
    "0 23 * * *",
    "30 23 * * *",
    "5 4 * * sun",
]
WILDCARD = [
    "* * * * *",
    "*/15 * * * *",
    "15 * * * *",
    "30 * * * *",
    "45 * * * *",
    "10-20/5 * * * *",
    "* 2 * * *",
    "* 0 * * *",
    "*/20 1-3 * * *",
    "0 */2 * * *",
]
DAYS = [
    "0 12 1,15 * mon",  # both day fields restricted: either matches
    "0 12 */2 * mon",  # '*' first in day-of-month: both must match
    "0 12 1-31/2 * mon",  # same days as */2, but restricted: either matches
    "30 7 1-7 * sat",
    "0 6 13 * fri",
    "0 6 * * 0",
    "0 6 * * 7",
    "0 6 * * sun",
    "0 6 * * mon-fri",
    "0 6 * * 1-5",
    "0 6 * * 0-7/2",
    "0 6 */3 * *",
    "0 9 * jan,mar-apr sun",
    "0 9 1 */2 *",
    "0 9 31 * *",
    "0 9 29 feb *",
]
ALIASES = ["@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually"]

# Local dates of the 2026 offset changes (checked below), and two zones without any.
DST_DAYS = [
    ("UTC", "2026-06-15"),
    ("Asia/Kolkata", "2026-03-29"),
    ("Europe/Berlin", "2026-03-29"),
    ("Europe/Berlin", "2026-10-25"),
    ("America/New_York", "2026-03-08"),
    ("America/New_York", "2026-11-01"),
    ("Australia/Lord_Howe", "2026-04-05"),  # back 30 minutes
    ("Australia/Lord_Howe", "2026-10-04"),  # forward 30 minutes
    ("America/Santiago", "2026-04-05"),  # back at midnight: 23:00-23:59 of the 4th twice
    ("America/Santiago", "2026-09-06"),  # forward at midnight: no 00:00-00:59
    ("America/Havana", "2026-03-08"),
    ("America/Havana", "2026-11-01"),
]


@pytest.mark.parametrize(("zone_name", "day"), DST_DAYS)
def test_crontab_matches_debian_cron_around_offset_changes(zone_name: str, day: str) -> None:
    zone = ZoneInfo(zone_name)
    # From 36 hours before the local day to 36 hours after its start: the day,
    # both midnights around it, and enough margin that the oracle starts in a
    # steady state (no offset change in the 3 hours before `start`).
    midnight = datetime.fromisoformat(day).replace(tzinfo=zone).astimezone(UTC)
    start, end = midnight - timedelta(hours=36), midnight + timedelta(hours=36)
    minutes = [start + timedelta(minutes=n) for n in range(72 * 60)]
    changes = [
        later
        for earlier, later in itertools.pairwise(minutes)
        if earlier.astimezone(zone).utcoffset() != later.astimezone(zone).utcoffset()
    ]
    assert len(changes) == (0 if zone_name in ("UTC", "Asia/Kolkata") else 1), "the window must hold the offset change"
    # Ask afresh every 7 minutes (so at varying minutes of the hour) within 3 hours of the change, where
    # cron.c still remembers the old clock: in the repeated hour, right after the jump.
    pivot = changes[0] if changes else midnight
    restarts = tuple(pivot + timedelta(minutes=n) for n in range(-180, 181, 7))
    _compare(FIXED_TIME + WILDCARD + ALIASES, zone_name, start, end, restarts)


def test_day_fields_and_aliases_match_debian_cron_over_months() -> None:
    # Four months of Europe/Berlin: every weekday/month-day combination, month
    # ends (30, 31, February), a new year and the March offset change.
    start = datetime(2025, 12, 30, tzinfo=UTC)
    _compare(DAYS + ALIASES + ["30 2 * * *"], "Europe/Berlin", start, start + timedelta(days=125))


def test_oracle_reproduces_the_hand_worked_berlin_cases() -> None:
    # Anchors the oracle to the reasoning in test_hand_worked_fire_times, so a
    # bug shared by oracle and implementation cannot hide there.
    zone = ZoneInfo("Europe/Berlin")
    [spring] = debian_cron(
        ["30 2 * * *"], zone, datetime(2026, 3, 28, 12, tzinfo=UTC), datetime(2026, 3, 30, tzinfo=UTC)
    )
    assert _iso(spring) == ["2026-03-29T03:00:00+02:00"]
    [autumn] = debian_cron(
        ["30 2 * * *"], zone, datetime(2026, 10, 24, 12, tzinfo=UTC), datetime(2026, 10, 26, tzinfo=UTC)
    )
    assert _iso(autumn) == ["2026-10-25T02:30:00+02:00"]
    [wildcard] = debian_cron(
        ["30 * * * *"], zone, datetime(2026, 10, 24, 23, 45, tzinfo=UTC), datetime(2026, 10, 25, 1, 45, tzinfo=UTC)
    )
    assert _iso(wildcard) == ["2026-10-25T02:30:00+02:00", "2026-10-25T02:30:00+01:00"]


# --- hand-worked fire times -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "zone", "after", "expected"),
    [
        # Berlin moves from 02:00 CET to 03:00 CEST on 2026-03-29: midnight is still CET.
        (
            "0 0 * * *",
            "Europe/Berlin",
            "2026-03-28T12:00:00+00:00",
            ["2026-03-29T00:00:00+01:00", "2026-03-30T00:00:00+02:00", "2026-03-31T00:00:00+02:00"],
        ),
        # 02:30 does not exist on 2026-03-29: the fixed-time job runs at the jump, 03:00 CEST.
        (
            "30 2 * * *",
            "Europe/Berlin",
            "2026-03-28T12:00:00+00:00",
            ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00", "2026-03-31T02:30:00+02:00"],
        ),
        # 2026-10-24T00:00Z is 02:00 CEST, so 02:30 that same morning is still ahead.
        (
            "30 2 * * *",
            "Europe/Berlin",
            "2026-10-24T00:00:00+00:00",
            ["2026-10-24T02:30:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"],
        ),
        # 02:00-02:59 happens twice on 2026-10-25 (CEST, then CET): a fixed-time job runs in the first pass only.
        (
            "30 2 * * *",
            "Europe/Berlin",
            "2026-10-24T12:00:00+00:00",
            ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00", "2026-10-27T02:30:00+01:00"],
        ),
        # ... even when asked from inside the second pass.
        ("30 2 * * *", "Europe/Berlin", "2026-10-25T02:15:00+01:00", ["2026-10-26T02:30:00+01:00"]),
        # A wildcard job runs in both passes.
        (
            "*/30 * * * *",
            "Europe/Berlin",
            "2026-10-25T01:45:00+02:00",
            [
                "2026-10-25T02:00:00+02:00",
                "2026-10-25T02:30:00+02:00",
                "2026-10-25T02:00:00+01:00",
                "2026-10-25T02:30:00+01:00",
                "2026-10-25T03:00:00+01:00",
            ],
        ),
        # Two fixed times in the skipped hour: one run at the jump.
        (
            "0,30 2 * * *",
            "Europe/Berlin",
            "2026-03-29T00:00:00+01:00",
            ["2026-03-29T03:00:00+02:00", "2026-03-30T02:00:00+02:00"],
        ),
        # A wildcard job skips the times that do not exist.
        (
            "30 * * * *",
            "Europe/Berlin",
            "2026-03-29T01:00:00+01:00",
            ["2026-03-29T01:30:00+01:00", "2026-03-29T03:30:00+02:00"],
        ),
        # Lord Howe moves 02:00 -> 02:30 on 2026-10-04: 02:45 exists and fires (cronsim 2.8 skips it).
        (
            "45 * * * *",
            "Australia/Lord_Howe",
            "2026-10-04T01:00:00+10:30",
            ["2026-10-04T01:45:00+10:30", "2026-10-04T02:45:00+11:00", "2026-10-04T03:45:00+11:00"],
        ),
        # ... and 02:15 does not exist: the fixed-time job runs at the jump.
        (
            "15 2 * * *",
            "Australia/Lord_Howe",
            "2026-10-04T01:00:00+10:30",
            ["2026-10-04T02:30:00+11:00", "2026-10-05T02:15:00+11:00"],
        ),
        # Santiago skips 00:00-00:59 on 2026-09-06: the midnight job runs at 01:00.
        (
            "0 0 * * *",
            "America/Santiago",
            "2026-09-05T12:00:00-04:00",
            ["2026-09-06T01:00:00-03:00", "2026-09-07T00:00:00-03:00"],
        ),
        # Havana repeats 00:00-00:59 on 2026-11-01: midnight runs once, in the first pass.
        (
            "0 0 * * *",
            "America/Havana",
            "2026-10-31T12:00:00-04:00",
            ["2026-11-01T00:00:00-04:00", "2026-11-02T00:00:00-05:00"],
        ),
        # Both day fields restricted: the 1st and 15th, and Mondays. 2026-06-01 is a Monday.
        (
            "0 12 1,15 * mon",
            "UTC",
            "2026-06-01T00:00:00+00:00",
            [
                "2026-06-01T12:00:00+00:00",
                "2026-06-08T12:00:00+00:00",
                "2026-06-15T12:00:00+00:00",
                "2026-06-22T12:00:00+00:00",
            ],
        ),
        # '*/2' in day-of-month: Mondays on odd days only (06-01, 06-15, 06-29).
        (
            "0 12 */2 * mon",
            "UTC",
            "2026-06-01T00:00:00+00:00",
            ["2026-06-01T12:00:00+00:00", "2026-06-15T12:00:00+00:00", "2026-06-29T12:00:00+00:00"],
        ),
        # Sunday as 7; 2026-06-07 is a Sunday.
        ("0 6 * * 7", "UTC", "2026-06-01T00:00:00+00:00", ["2026-06-07T06:00:00+00:00", "2026-06-14T06:00:00+00:00"]),
        ("@weekly", "UTC", "2026-06-01T00:00:00+00:00", ["2026-06-07T00:00:00+00:00", "2026-06-14T00:00:00+00:00"]),
        (
            "@yearly",
            "Europe/Berlin",
            "2026-06-01T00:00:00+00:00",
            ["2027-01-01T00:00:00+01:00", "2028-01-01T00:00:00+01:00"],
        ),
        ("0 0 29 2 *", "UTC", "2026-06-01T00:00:00+00:00", ["2028-02-29T00:00:00+00:00", "2032-02-29T00:00:00+00:00"]),
    ],
)
def test_hand_worked_fire_times(expression: str, zone: str, after: str, expected: list[str]) -> None:
    fires = preview(expression, zone, len(expected), datetime.fromisoformat(after))
    assert [fire.isoformat() for fire in fires] == expected


def test_a_repeated_wall_time_carries_the_offset_of_its_pass() -> None:
    schedule = parse_schedule("0 * * * *", "Europe/Berlin")
    first, second = schedule.upcoming(datetime(2026, 10, 24, 23, 30, tzinfo=UTC), 2)  # 01:30 CEST
    assert (first.hour, first.fold, first.utcoffset()) == (2, 0, timedelta(hours=2))
    assert (second.hour, second.fold, second.utcoffset()) == (2, 1, timedelta(hours=1))
    assert first.tzinfo is second.tzinfo is ZoneInfo("Europe/Berlin")
    # Python compares and subtracts datetimes sharing a tzinfo by wall time, fold ignored: go through UTC.
    assert second.astimezone(UTC) - first.astimezone(UTC) == timedelta(hours=1)


def test_next_after_is_strictly_after() -> None:
    schedule = parse_schedule("0 12 * * *", "UTC")
    noon = datetime(2026, 6, 1, 12, tzinfo=UTC)
    assert schedule.next_after(noon) == noon + timedelta(days=1)
    assert schedule.next_after(noon - timedelta(microseconds=1)) == noon
    assert schedule.next_after(noon.astimezone(ZoneInfo("Asia/Kolkata"))) == noon + timedelta(days=1)


def test_naive_after_is_refused_but_preview_reads_it_in_the_zone() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_schedule("@daily").next_after(datetime(2026, 6, 1))
    fires = preview("0 0 * * *", "Europe/Berlin", 1, datetime(2026, 6, 1, 23, 59))
    assert [fire.isoformat() for fire in fires] == ["2026-06-02T00:00:00+02:00"]


def test_parsed_schedule_keeps_the_expression_and_zone() -> None:
    schedule = parse_schedule("@hourly", "Asia/Kolkata")
    assert isinstance(schedule, CronSchedule)
    assert (schedule.expression, schedule.timezone, schedule.fields) == (
        "@hourly",
        ZoneInfo("Asia/Kolkata"),
        "0 * * * *",
    )
    assert not schedule.fixed_time  # Debian sets HR_STAR for @hourly
    assert parse_schedule("@daily").fixed_time
    assert parse_schedule(" 0  9 * JAN Mon-Fri ", "UTC").fields == "0 9 * JAN Mon-Fri"
    assert parse_schedule("@daily", "UTC") == parse_schedule("@daily", ZoneInfo("UTC"))


# --- every N ----------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "after",
    [datetime(2026, 5, 1, 23, 50, 17, 500000, tzinfo=UTC), datetime(2026, 5, 1, 23, 58, tzinfo=ZoneInfo("Asia/Tokyo"))],
)
def test_every_n_fires_on_multiples_of_n_since_the_epoch(after: datetime) -> None:
    interval = timedelta(minutes=7)
    fires = parse_schedule("every 7m", "UTC").upcoming(after, 20)
    assert all((fire - _EPOCH) % interval == timedelta(0) for fire in fires)
    assert after < fires[0] <= after + interval
    assert all(later - earlier == interval for earlier, later in itertools.pairwise(fires))


def test_every_7m_across_a_utc_day_boundary() -> None:
    # 2026-05-02T00:00Z is 1777680000 s = 4232571 * 420 + 180: the grid passes midnight at 00:04.
    fires = parse_schedule("every 7m").upcoming(datetime(2026, 5, 1, 23, 50, tzinfo=UTC), 3)
    assert [fire.isoformat() for fire in fires] == [
        "2026-05-01T23:57:00+00:00",
        "2026-05-02T00:04:00+00:00",
        "2026-05-02T00:11:00+00:00",
    ]


def test_every_n_in_another_zone_keeps_the_instants() -> None:
    after = datetime(2026, 3, 28, 23, 10, tzinfo=UTC)  # Berlin's clock jumps at 01:00Z
    in_utc = parse_schedule("every 1h", "UTC").upcoming(after, 4)
    in_kolkata = parse_schedule("every 1h", "Asia/Kolkata").upcoming(after, 4)
    in_berlin = parse_schedule("every 1h", "Europe/Berlin").upcoming(after, 4)
    assert in_utc == in_kolkata == in_berlin
    assert [fire.isoformat() for fire in in_kolkata][:2] == ["2026-03-29T05:30:00+05:30", "2026-03-29T06:30:00+05:30"]
    assert [fire.isoformat() for fire in in_berlin] == [
        "2026-03-29T01:00:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T04:00:00+02:00",
        "2026-03-29T05:00:00+02:00",
    ]


def test_every_n_parses_the_interval() -> None:
    schedule = parse_schedule("every 90s", "Europe/Berlin")
    assert isinstance(schedule, IntervalSchedule)
    assert (schedule.expression, schedule.interval) == ("every 90s", timedelta(seconds=90))
    assert parse_schedule("every 2000ms").interval == timedelta(seconds=2)
    assert parse_schedule("every 1d").next_after(datetime(2026, 6, 1, 12, tzinfo=UTC)) == datetime(
        2026, 6, 2, tzinfo=UTC
    )


# --- the APScheduler trigger ------------------------------------------------------------------


def test_trigger_first_fire_may_be_now() -> None:
    trigger = ScheduleTrigger(parse_schedule("*/5 * * * *", "Europe/Berlin"))
    now = datetime(2026, 6, 1, 10, 15, tzinfo=ZoneInfo("Europe/Berlin"))
    assert trigger.get_next_fire_time(None, now) == now
    assert trigger.get_next_fire_time(None, now + timedelta(microseconds=1)) == now + timedelta(minutes=5)


def test_trigger_follows_the_previous_fire_not_now() -> None:
    trigger = ScheduleTrigger(parse_schedule("*/5 * * * *", "UTC"))
    previous = datetime(2026, 6, 1, 10, 15, tzinfo=UTC)
    much_later = previous + timedelta(hours=3)
    assert trigger.get_next_fire_time(previous, much_later) == previous + timedelta(minutes=5)
    assert trigger.get_next_fire_time(previous, previous) == previous + timedelta(minutes=5)


def test_trigger_fires_on_the_day_after_spring_forward_where_crontrigger_does_not() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    previous = datetime(2026, 3, 29, 0, 0, tzinfo=berlin)
    now = datetime(2026, 3, 29, 12, 0, tzinfo=berlin)
    ours = ScheduleTrigger(parse_schedule("0 0 * * *", berlin)).get_next_fire_time(previous, now)
    assert ours.astimezone(berlin).isoformat() == "2026-03-30T00:00:00+02:00"
    assert ours.tzinfo is UTC  # APScheduler never meets an ambiguous wall time
    theirs = CronTrigger(hour=0, minute=0, timezone=berlin).get_next_fire_time(previous, now)
    assert theirs != ours  # APScheduler 3.11 skips 2026-03-30 (FACTS.md); if this fails, it was fixed


def test_trigger_survives_pickling_and_describes_itself() -> None:
    trigger = ScheduleTrigger(parse_schedule("30 2 * * *", "Europe/Berlin"))
    copy = pickle.loads(pickle.dumps(trigger))
    assert copy.schedule == trigger.schedule
    assert str(trigger) == "schedule[30 2 * * *, Europe/Berlin]"
    after = datetime(2026, 3, 28, 12, tzinfo=UTC)
    assert copy.get_next_fire_time(after, after) == trigger.get_next_fire_time(after, after)


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("61 * * * *", "invalid cron expression '61 * * * *': minute must be 0-59"),
        ("0 24 * * *", "invalid cron expression '0 24 * * *': hour must be 0-23"),
        ("0 0 0 * *", "invalid cron expression '0 0 0 * *': day-of-month must be 1-31"),
        ("0 0 32 * *", "invalid cron expression '0 0 32 * *': day-of-month must be 1-31"),
        ("0 0 * 13 *", "invalid cron expression '0 0 * 13 *': month must be 1-12"),
        ("0 0 * * 8", "invalid cron expression '0 0 * * 8': day-of-week must be 0-7"),
        ("1-70/5 * * * *", "invalid cron expression '1-70/5 * * * *': minute must be 0-59"),
        (
            "* * * * * *",
            "invalid cron expression '* * * * * *': expected 5 fields, got 6 (minute hour day-of-month month day-of-week)",
        ),
        (
            "0 0 * *",
            "invalid cron expression '0 0 * *': expected 5 fields, got 4 (minute hour day-of-month month day-of-week)",
        ),
        (
            "0 0 30 2 *",
            "invalid cron expression '0 0 30 2 *': never fires: day-of-month '30' does not occur in month '2'",
        ),
        (
            "0 0 31 4,jun,9 *",
            "invalid cron expression '0 0 31 4,jun,9 *': never fires: day-of-month '31' does not occur in month '4,jun,9'",
        ),
        (
            "5/10 * * * *",
            "invalid cron expression '5/10 * * * *': minute '5/10': a step needs a range or '*' before it, e.g. '5-59/10'",
        ),
        ("*/0 * * * *", "invalid cron expression '*/0 * * * *': minute step in '*/0' must be at least 1"),
        ("*/x * * * *", "invalid cron expression '*/x * * * *': minute step 'x' in '*/x' is not a number"),
        ("30-10 * * * *", "invalid cron expression '30-10 * * * *': minute range '30-10' must go from low to high"),
        (
            "0 0 * * fri-mon",
            "invalid cron expression '0 0 * * fri-mon': day-of-week range 'fri-mon' must go from low to high",
        ),
        ("1,,2 * * * *", "invalid cron expression '1,,2 * * * *': minute '1,,2' has an empty list item"),
        ("-5 * * * *", "invalid cron expression '-5 * * * *': minute '-5' is missing a value"),
        ("x * * * *", "invalid cron expression 'x * * * *': minute 'x' is not a number"),
        (
            "0 0 * smarch *",
            "invalid cron expression '0 0 * smarch *': month 'smarch' is not a number or a name (jan-dec)",
        ),
        (
            "0 0 * * monday",
            "invalid cron expression '0 0 * * monday': day-of-week 'monday' is not a number or a name (sun-sat)",
        ),
        (
            "0 0 L * *",
            "invalid cron expression '0 0 L * *': day-of-month 'L' is not supported: Debian cron has no L, W, # or ? syntax",
        ),
        (
            "0 0 15W * *",
            "invalid cron expression '0 0 15W * *': day-of-month '15W' is not supported: Debian cron has no L, W, # or ? syntax",
        ),
        (
            "0 0 * * 5#3",
            "invalid cron expression '0 0 * * 5#3': day-of-week '5#3' is not supported: Debian cron has no L, W, # or ? syntax",
        ),
        (
            "0 0 ? * 1",
            "invalid cron expression '0 0 ? * 1': day-of-month '?' is not supported: Debian cron has no L, W, # or ? syntax",
        ),
        (
            "@fortnightly",
            "unknown alias '@fortnightly': expected one of @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly",
        ),
        ("@reboot", "'@reboot' is not supported: it is not a periodic schedule"),
        ("every 0s", "invalid interval 'every 0s': must be at least 1s"),
        ("every 500ms", "invalid interval 'every 500ms': must be at least 1s"),
        ("every 1500ms", "invalid interval 'every 1500ms': must be a whole number of seconds"),
        (
            "every 5",
            "invalid interval 'every 5': expected 'every' and a duration with a unit (ms, s, m, h, d), e.g. 'every 30s'",
        ),
        (
            "every",
            "invalid interval 'every': expected 'every' and a duration with a unit (ms, s, m, h, d), e.g. 'every 30s'",
        ),
        ("   ", "empty schedule: expected a crontab expression, an @alias or 'every N'"),
    ],
)
def test_bad_expressions_say_what_is_wrong(expression: str, message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(expression, "UTC")
    assert str(caught.value) == message
    assert isinstance(caught.value, ValueError)


def test_a_schedule_must_be_a_string() -> None:
    with pytest.raises(ScheduleError, match="^a schedule must be a string, got int$"):
        parse_schedule(5)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["Mars/Base", "Europe", "", "../etc/passwd", "/etc/localtime"])
def test_unknown_timezone(name: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_timezone(name)
    assert str(caught.value) == f"unknown timezone {name!r}"
    with pytest.raises(ValueError, match="unknown timezone"):
        parse_schedule("@daily", name)


def test_known_timezone() -> None:
    assert parse_timezone("Australia/Lord_Howe") == ZoneInfo("Australia/Lord_Howe")
