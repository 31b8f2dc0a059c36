"""The value types config sections share: durations, time zones, networks and the section base.

Kept apart from :mod:`scheduler.config` so that modules defining a section of
their own (``[alerts]``) use the same types without importing the config that
imports them.
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, BeforeValidator, ConfigDict

from maintd.jobs.durations import parse_duration
from maintd.scheduler.schedules import parse_timezone


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


def _network(value: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected an address or network such as '10.0.0.0/8', got {value!r}")
    try:
        return ipaddress.ip_network(value)
    except ValueError as exc:  # "'10.1.2.3/8' does not appear to be an IPv4 or IPv6 network", "... has host bits set"
        raise ValueError(f"not an address or network: {exc}") from None


Duration = Annotated[timedelta, BeforeValidator(_duration)]
# An IP address (a network of one) or a network in CIDR notation.
Network = Annotated[ipaddress.IPv4Network | ipaddress.IPv6Network, BeforeValidator(_network)]
TimeZone = Annotated[ZoneInfo, BeforeValidator(_timezone)]


class Section(BaseModel):
    """A config table: unknown keys are errors, values frozen once read."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)
