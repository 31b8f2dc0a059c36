"""SQL identifiers taken from config: validated when the config loads, always quoted in SQL.

A job that works on an operator's table gets its name from config; the name is
checked against a plain pattern and then double-quoted, so it can never carry
SQL of its own. Quoting also means the name is matched exactly as written
(``Sessions`` is not ``sessions``), as PostgreSQL does for quoted names.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

# PostgreSQL silently truncates longer names (NAMEDATALEN - 1), which could name another table.
MAX_NAME_LENGTH = 63
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")


def _check_name(value: str, *, qualified: bool) -> str:
    parts = value.split(".")
    if len(parts) > (2 if qualified else 1) or not all(_NAME.fullmatch(p) for p in parts):
        example = "sessions or app.sessions" if qualified else "expires_at"
        raise ValueError(
            f"must be a plain name such as {example} (letters, digits, '_' and '$', "
            f"not starting with a digit), got {value!r}"
        )
    if any(len(p) > MAX_NAME_LENGTH for p in parts):
        raise ValueError(f"names are at most {MAX_NAME_LENGTH} characters, got {value!r}")
    return value


def quote(name: str) -> str:
    """``app.sessions`` -> ``"app"."sessions"``; raises ``ValueError`` for anything but a plain name."""
    return ".".join(f'"{part}"' for part in _check_name(name, qualified=True).split("."))


# A column name.
Identifier = Annotated[str, AfterValidator(lambda v: _check_name(v, qualified=False))]
# A table name, optionally schema-qualified.
TableName = Annotated[str, AfterValidator(lambda v: _check_name(v, qualified=True))]
