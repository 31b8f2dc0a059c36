"""The value types config sections share: durations, time zones and the section base.

Kept apart from :mod:`scheduler.config` so that modules defining a section of
their own (``[alerts]``) use the same types without importing the config that
imports them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, BeforeValidator, ConfigDict

from scheduler.durations import parse_duration
from scheduler.schedules import parse_timezone


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a duration string such as '30s', got {value!r}")
    return parse_duration(value)


def positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be longer than 0s")
    return value


def _timezone(value: Any) -> ZoneInfo:
    if isinstance(value, ZoneInfo):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a timezone name such as 'Europe/Berlin', got {value!r}")
    return parse_timezone(value)


Duration = Annotated[timedelta, BeforeValidator(_duration)]
TimeZone = Annotated[ZoneInfo, BeforeValidator(_timezone)]


class Section(BaseModel):
    """A config table: unknown keys are errors, values frozen once read."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)
