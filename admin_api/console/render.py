"""The console's HTML: one Jinja2 environment over ``templates/``, its filters, and
the page and error responses every route returns.

Times are rendered in UTC inside ``<time datetime="...">``; ``static/console.js``
rewrites them into the browser's time zone, with the UTC offset on hover, so a page
reads right without JavaScript too.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from maintd.admin_api.console.interface import CalendarCell, Fire
from maintd.admin_api.console.schedule_words import describe_schedule
from maintd.admin_api.console.sessions import Signed
from maintd.jobs.durations import format_duration_or_dash

# Glyphs and words of each status: the strip, the calendar and the badges use them,
# so no outcome is told by colour alone.
STATUS_GLYPH = {
    "succeeded": "✓",
    "running": "▶",
    "failed": "✕",
    "timed_out": "◔",
    "lost": "?",
    "cancelled": "⊘",
    "skipped": "–",
    "missed": "!",
}
STATE_WORDS = {"ok": "ok", "running": "running", "failing": "failing", "overdue": "overdue", "paused": "paused"}


def _time(value: datetime | None, fallback: str = "-") -> Markup:
    """A ``<time>`` element: UTC as text, the instant in ``datetime`` for console.js."""
    if value is None:
        return Markup.escape(fallback)
    utc = value.astimezone(UTC)
    return Markup('<time datetime="{}">{}</time>').format(utc.isoformat(), utc.strftime("%Y-%m-%d %H:%M:%S UTC"))


def _countdown(value: datetime | None) -> Markup:
    """A countdown to ``value``, kept current by console.js."""
    if value is None:
        return Markup("")
    return Markup('<span class="countdown" data-until="{}"></span>').format(value.astimezone(UTC).isoformat())


def _strip(fires: list[Fire]) -> Markup:
    """A job's strip, oldest first: built here rather than by a template loop, which took
    a third of the overview's time (3,000 cells a page)."""
    if not fires:
        return Markup('<span class="sub">no fires yet</span>')
    cells = []
    for fire in reversed(fires):
        word = fire.status.replace("_", " ")
        other = fire.trigger != "schedule"
        at = fire.at.astimezone(UTC) if fire.at else None
        when = f' <time datetime="{at.isoformat()}">{at:%Y-%m-%d %H:%M:%S} UTC</time>' if at else ""
        how = f" ({fire.trigger.replace('_', ' ')})" if other else ""
        cells.append(
            f'<li><a class="cell st-{escape(fire.status)}{" tr-other" if other else ""}" href="/ui/runs/{fire.id}">'
            f'<span class="sr">{escape(word)}{escape(how)}{when}</span></a></li>'
        )
    return Markup(f'<ol class="strip" aria-label="last {len(fires)} fires, oldest first">{"".join(cells)}</ol>')


def _calendar_cell(cell: CalendarCell | None, job_id: str, day: date) -> Markup:
    """One calendar cell (3,000 a page: built here, as the strip is)."""
    if cell is None:
        return Markup('<td class="none"></td>')
    plural = "" if cell.records == 1 else "s"
    return Markup(
        f'<td><a class="cell st-{escape(cell.worst)}" href="/ui/jobs/{escape(job_id)}?day={day.isoformat()}">'
        f'<span class="sr">{escape(job_id)} {day.isoformat()}: {escape(cell.worst.replace("_", " "))}, '
        f"{cell.records} record{plural}</span></a></td>"
    )


def _pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("maintd.admin_api.console", "templates"),
        autoescape=select_autoescape(default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        duration=format_duration_or_dash,
        schedule_words=describe_schedule,
        time=_time,
        countdown=_countdown,
        pretty_json=_pretty_json,
        strip=_strip,
    )
    env.globals.update(calendar_cell=_calendar_cell)
    env.globals.update(STATUS_GLYPH=STATUS_GLYPH)
    return env


ENV = _environment()


def page(request: Request, template: str, signed: Signed | None, *, status: int = 200, **context: Any) -> HTMLResponse:
    """A whole page (or, for ``fragment`` templates, part of one) as an HTML response."""
    html = ENV.get_template(template).render(request=request, signed=signed, path=request.url.path, **context)
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


def error_page(request: Request, signed: Signed | None, status: int, message: str) -> HTMLResponse:
    return page(request, "error.html", signed, status=status, status_code=status, message=message)
