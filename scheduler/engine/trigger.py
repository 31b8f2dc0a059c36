"""A job's :class:`~maintd.scheduler.schedules.Schedule` as an APScheduler trigger.

Apart from ``schedules``, so that the schedule maths (``maintd preview``, config
checks) does not import APScheduler.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from apscheduler.triggers.base import BaseTrigger

from maintd.scheduler.schedules import Schedule, ScheduleError

_MICROSECOND = timedelta(microseconds=1)


class ScheduleTrigger(BaseTrigger):
    """An APScheduler trigger firing on a :class:`Schedule`, so APScheduler does the timing."""

    __slots__ = ("schedule",)

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        # The first fire may be `now` itself; later ones follow the previous fire
        # time, not `now`, so APScheduler sees (and can count) fires it is late for.
        after = now - _MICROSECOND if previous_fire_time is None else previous_fire_time
        try:
            # In UTC: APScheduler and the engine then never meet an ambiguous wall time.
            return self.schedule.next_after(after).astimezone(UTC)
        except ScheduleError:
            return None  # past the end of the calendar

    def __str__(self) -> str:
        return f"schedule[{self.schedule.expression}, {self.schedule.timezone.key}]"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} ({self.schedule.expression!r}, timezone={self.schedule.timezone.key!r})>"
