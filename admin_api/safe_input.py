"""Text that PostgreSQL cannot store is refused at the door: a 422, never a 500.

PostgreSQL rejects a NUL in text (``CharacterNotInRepertoireError``) and the
UTF-8 encoder rejects an unpaired surrogate, so a job id such as ``"\\x00"``
would otherwise reach the database and come back as an internal error. One
router-level dependency checks every string a route can read: path and query
parameters (names too) and header values.
"""

from __future__ import annotations

import re

from fastapi import Request
from fastapi.exceptions import RequestValidationError

_UNSAFE = re.compile("[\x00\ud800-\udfff]")
# The part of that a schema can say (as a JSON Schema pattern): surrogates never come over HTTP.
NO_NUL = r"^[^\x00]*$"
MESSAGE = "must not contain a NUL character or an unpaired surrogate"


def printable(name: str) -> str:
    """A parameter name fit for the error body, which is UTF-8 JSON."""
    return name.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def reject_unsafe_strings(request: Request) -> None:
    """Dependency: 422 when a path or query parameter or a header holds a NUL or an unpaired surrogate.

    The error names where the value was, never the value itself (it may not even be encodable).
    """
    found: list[tuple[str, str]] = []
    for name, value in request.path_params.items():
        if isinstance(value, str) and _UNSAFE.search(value):
            found.append(("path", name))
    for name, value in request.query_params.multi_items():
        if _UNSAFE.search(name) or _UNSAFE.search(value):
            found.append(("query", name))
    for name, value in request.headers.items():
        if _UNSAFE.search(name) or _UNSAFE.search(value):
            found.append(("header", name))
    if found:
        raise RequestValidationError(
            [{"type": "string_unsafe", "loc": (where, printable(name)), "msg": MESSAGE} for where, name in found]
        )
