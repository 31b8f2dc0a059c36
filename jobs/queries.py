"""Named SQL blocks: ``-- name: <name>``, ``--`` description lines, then the statement.

Used for the daemon's queries (``scheduler/store/sql/queries.sql``) and the jobs'
own (``jobs/queries.sql``), so no job or route builds SQL strings of its own.
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


def load_package_queries(package: str, filename: str = "queries.sql") -> dict[str, str]:
    """Load a package's queries file once, at import."""
    return load_queries(resources.files(package).joinpath(filename).read_text(encoding="utf-8"))
