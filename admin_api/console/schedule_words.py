"""A schedule in words, for people: ``0 0 * * *`` is "At 00:00 every day".

Pure: it reads the expression as written (maintd has already validated it), and
covers the common shapes; anything else is read field by field ("At minute 5
past hour 8-18 on day 1,15 of the month"), never guessed. The console always
shows the expression itself beside it.
"""

from __future__ import annotations

import re

from maintd.scheduler.schedules import ALIASES

_UNITS = {"ms": "millisecond", "s": "second", "m": "minute", "h": "hour", "d": "day"}
_DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_DAY_NAMES = {name[:3].lower(): str(number) for number, name in enumerate(_DAYS[:7])}
_MONTHS = [
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
]  # fmt: skip
_MONTH_NAMES = {name[:3].lower(): str(number) for number, name in enumerate(_MONTHS, start=1)}
_NUMBER = re.compile(r"^\d+$")
_EVERY = re.compile(r"^every\s+(\d+)\s*(ms|s|m|h|d)$", re.I)


def describe_schedule(expression: str) -> str:
    """``expression`` (crontab, alias or ``every N``) in words, capitalised, without its zone."""
    text = expression.strip()
    if match := _EVERY.match(text):
        count, unit = int(match[1]), _UNITS[match[2].lower()]
        return f"Every {unit}" if count == 1 else f"Every {count} {unit}s"
    fields = ALIASES.get(text.lower(), text).split()
    if len(fields) != 5:
        return text
    minute, hour, dom, month, dow = fields
    days = _days(dom, month, dow)
    if days == "every day" and (hour == "*" or hour.startswith("*/")):
        return _time_of_day(minute, hour)  # "Every 5 minutes", not "... every day"
    return f"{_time_of_day(minute, hour)} {days}"


def _time_of_day(minute: str, hour: str) -> str:
    if _NUMBER.match(minute) and _NUMBER.match(hour):
        return f"At {int(hour):02d}:{int(minute):02d}"
    if _NUMBER.match(minute) and all(_NUMBER.match(h) for h in hour.split(",")):
        return "At " + ", ".join(f"{int(h):02d}:{int(minute):02d}" for h in hour.split(","))
    if hour == "*":
        if minute == "*":
            return "Every minute"
        if step := re.fullmatch(r"\*/(\d+)", minute):
            return f"Every {step[1]} minutes"
        if _NUMBER.match(minute):
            return "Every hour" if int(minute) == 0 else f"At minute {int(minute)} of every hour"
        return f"At minute {minute} of every hour"
    if step := re.fullmatch(r"\*/(\d+)", hour):
        if _NUMBER.match(minute):
            return f"At minute {int(minute)} of every {step[1]} hours"
    return f"At minute {minute} past hour {hour}"


def _days(dom: str, month: str, dow: str) -> str:
    parts = []
    if dom == "*" and dow == "*":
        parts.append("every day")
    else:
        if dom != "*":
            parts.append(f"on day {dom} of the month")
        if dow != "*":
            # Debian's rule: both fields restricted means either day matches.
            either = "or " if dom != "*" and not dom.startswith("*") else ""
            parts.append(f"{either}on {_weekdays(dow)}")
    if month != "*":
        parts.append(f"in {_months(month)}")
    return " ".join(parts)


def _weekdays(field: str) -> str:
    return _named(field, _DAY_NAMES, _DAYS, range_word="to")


def _months(field: str) -> str:
    return _named(field, _MONTH_NAMES, [""] + _MONTHS, range_word="to")


def _named(field: str, names: dict[str, str], words: list[str], *, range_word: str) -> str:
    """A list of numbers, names and ranges, spelled; a stepped item is left as written."""
    spelled = []
    for item in field.lower().split(","):
        if "/" in item:
            spelled.append(item)
            continue
        ends = [names.get(end, end) for end in item.split("-")]
        if not all(_NUMBER.match(end) and int(end) < len(words) for end in ends):
            spelled.append(item)
        elif len(ends) == 2:
            spelled.append(f"{words[int(ends[0])]} {range_word} {words[int(ends[1])]}")
        else:
            spelled.append(words[int(ends[0])])
    return ", ".join(spelled)
