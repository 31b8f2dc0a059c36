"""JSON text for log lines and captured run logs, fast and never refused.

orjson takes 1 us where the stdlib's json takes 4, and a burst of 1,000 runs logs
and captures thousands of lines. What orjson refuses (integers beyond 64 bits, keys
that are not strings, etc.) goes through the stdlib's json instead, so a job's odd
value never costs its line.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(value: Any, default: Any = None) -> str:
    try:
        return orjson.dumps(value, default=default).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(value, default=default)
