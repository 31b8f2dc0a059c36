"""The two engines a console route talks to, read from ``app.state`` (set by the
daemon once it has started): the JSON API's and the console's own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from maintd.admin_api.console.interface import ConsoleEngine
from maintd.admin_api.interface import AdminEngine
from maintd.admin_api.state import STARTING, engine_of


@dataclass(frozen=True)
class Engines:
    admin: AdminEngine
    console: ConsoleEngine


def engines_of(request: Request) -> Engines:
    """Dependency: both engines; 503 while the daemon starts."""
    admin = engine_of(request)
    console: ConsoleEngine | None = getattr(request.app.state, "console", None)
    if admin is None or console is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, STARTING)
    return Engines(admin, console)


# The dependency every console route takes (module level: routes resolve their annotations here).
Engined = Annotated[Engines, Depends(engines_of)]
