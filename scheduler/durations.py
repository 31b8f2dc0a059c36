"""Durations in config: a number with a unit, e.g. ``500ms``, ``30s``, ``10m``, ``2h``, ``1d``."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


def parse_duration(text: str) -> timedelta:
    """Parse a duration string; raise ``ValueError`` naming what is wrong."""
    match = _PATTERN.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"invalid duration {text!r}: expected a number and a unit (ms, s, m, h, d), e.g. '30s'")
    value, unit = match.groups()
    return timedelta(seconds=float(value) * _UNITS[unit])


def format_duration(delta: timedelta) -> str:
    """The shortest exact spelling of a duration, for messages and the API."""
    ms = round(delta.total_seconds() * 1000)
    for unit, factor in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms and ms % factor == 0:
            return f"{ms // factor}{unit}"
    return f"{ms}ms"
