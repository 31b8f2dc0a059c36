"""The browser's time zone, as ``static/console.js`` reports it in the ``maintd_tz``
cookie: the calendar counts days in it. Without it (no JavaScript yet), the daemon's
``[scheduler] timezone``."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import Request

COOKIE = "maintd_tz"


def browser_zone(request: Request, default: ZoneInfo) -> ZoneInfo:
    name = request.cookies.get(COOKIE, "")
    # IANA names only: a path or anything odd never reaches the zone database lookup.
    if not name or len(name) > 64 or not all(c.isalnum() or c in "/_+-" for c in name) or ".." in name:
        return default
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return default
