"""The daemon's queries: named, described blocks of ``queries.sql``, loaded once.

A block starts with ``-- name: <name>`` followed by ``--`` description lines and
the statement. Only :mod:`scheduler.store` uses them.
"""

from __future__ import annotations

import re
from importlib import resources

_BLOCK = re.compile(r"^-- name: (\w+)\n((?:--[^\n]*\n)*)(.*?)(?=^-- name: |\Z)", re.M | re.S)


def load_queries(text: str) -> dict[str, str]:
    """Parse named blocks; every block must have a description and a statement."""
    queries: dict[str, str] = {}
    for name, description, statement in _BLOCK.findall(text):
        if not description.strip() or not statement.strip():
            raise ValueError(f"query {name!r} needs a description and a statement")
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        queries[name] = statement.strip().rstrip(";")
    return queries


QUERIES = load_queries(resources.files(__package__).joinpath("queries.sql").read_text(encoding="utf-8"))
