"""Durations: parsed from config (``500ms``, ``30s``, ``10m``, ``2h``, ``1d``) and spelled for people.

In ``maintd.jobs`` because the daily report spells durations too, and jobs do not
import the daemon; the daemon imports it from here.
"""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
# (unit, seconds in it, the next smaller unit, seconds in that), largest first.
_TWO_UNITS = (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1))


def parse_duration(text: str) -> timedelta:
    """Parse a duration string; raise ``ValueError`` naming what is wrong."""
    match = _PATTERN.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"invalid duration {text!r}: expected a number and a unit (ms, s, m, h, d), e.g. '30s'")
    value, unit = match.groups()
    return timedelta(seconds=float(value) * _UNITS[unit])


def duration_param(value: object, examples: str) -> timedelta:
    """A task's param given as a duration string (or, read back from a run, a timedelta);
    ``examples`` for the error, as written (``"'50ms'"``)."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, str):
        return parse_duration(value)
    raise ValueError(f"expected a duration string such as {examples}, got {value!r}")


def format_duration(value: timedelta | float) -> str:
    """A duration (a timedelta, or seconds) for people, in at most two units.

    ``120ms`` below a second; ``3.2s`` below ten; then whole
    seconds and the two largest units, the smaller one dropped when it is zero:
    ``42s``, ``1m 05s``, ``10m``, ``2h 03m``, ``3d 04h`` (what is below the second
    unit is left out). A negative duration is spelled as its length.
    """
    seconds = abs(value.total_seconds() if isinstance(value, timedelta) else value)
    ms = round(seconds * 1000)
    if ms < 1000:
        return f"{ms}ms"
    if ms < 10_000:
        whole, tenths = divmod(round(ms / 100), 10)
        return f"{whole}.{tenths}s" if tenths else f"{whole}s"
    whole = round(seconds)
    for big, big_s, small, small_s in _TWO_UNITS:
        if whole >= big_s:
            major, rest = divmod(whole, big_s)
            minor = rest // small_s
            return f"{major}{big} {minor:02d}{small}" if minor else f"{major}{big}"
    return f"{whole}s"


def format_duration_or_dash(value: timedelta | float | None) -> str:
    """:func:`format_duration`, or ``-`` where there is no duration (a run not ended)."""
    return "-" if value is None else format_duration(value)
