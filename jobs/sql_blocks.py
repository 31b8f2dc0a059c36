"""The format of maintd's ``.sql`` files: named blocks, each ``-- name: <name>``, ``--``
description lines, then the statement.

Both the daemon's queries (``scheduler/store/sql/queries.sql``) and the built-in
jobs' (``jobs/queries.sql``) are written this way, so no job or route builds SQL
strings of its own. It lives in ``maintd.jobs`` because jobs do not import the daemon.
"""

from __future__ import annotations

import re
from importlib import resources

_BLOCK = re.compile(r"^-- name: (\w+)\n((?:--[^\n]*\n)*)(.*?)(?=^-- name: |\Z)", re.M | re.S)


def parse_sql_blocks(text: str) -> dict[str, str]:
    """Each block's statement by name; every block must have a description and a statement."""
    queries: dict[str, str] = {}
    for name, description, statement in _BLOCK.findall(text):
        if not description.strip() or not statement.strip():
            raise ValueError(f"query {name!r} needs a description and a statement")
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        queries[name] = statement.strip().rstrip(";")
    return queries


def load_sql_blocks(package: str, filename: str = "queries.sql") -> dict[str, str]:
    """Parse a package's ``.sql`` file; called once per file, at import."""
    return parse_sql_blocks(resources.files(package).joinpath(filename).read_text(encoding="utf-8"))
