"""A query parameter that a route does not declare is a 422, as an unknown config key is an error.

A typo such as ``/admin/runs?stauts=failed`` would otherwise be ignored, and
the answer (every run) would look like an answer to the question asked.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError

from maintd.admin_api.safe_input import printable


def _query_names(dependant: Dependant) -> set[str]:
    """The query parameter names of a route, its dependencies' included (a walk of a few nodes)."""
    names = {field.alias for field in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def reject_unknown_query(request: Request) -> None:
    """Dependency: 422 naming each query parameter the matched route does not declare."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None or not request.query_params:
        return
    declared = _query_names(dependant)
    unknown = sorted({name for name in request.query_params if name not in declared})
    if unknown:
        raise RequestValidationError(
            [
                {"type": "extra_forbidden", "loc": ("query", printable(name)), "msg": "unknown query parameter"}
                for name in unknown
            ]
        )
