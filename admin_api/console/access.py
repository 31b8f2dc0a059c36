"""Who may see and do what in the console: the signed-in user of a request, and the
checks every mutating form passes (CSRF token, operator role) before it reaches the engine.

A viewer's pages show no mutating controls; a viewer's forged request is refused
here anyway (403) and written to the audit log as denied, as the JSON API does.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from fastapi import HTTPException, Request, status
from fastapi.responses import HTMLResponse

from maintd.admin_api.console import csrf
from maintd.admin_api.console.engines import Engines
from maintd.admin_api.console.forms import FormTooLarge, read_form
from maintd.admin_api.console.render import error_page
from maintd.admin_api.console.sessions import Sessions, Signed

SIGN_IN_PATH = "/ui/"


def sign_in_required(request: Request) -> HTTPException:
    """Back to the sign-in form, then to this page: a redirect, or for htmx's own requests
    an ``HX-Redirect`` (htmx would otherwise put the sign-in page inside the one shown)."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    location = f"{SIGN_IN_PATH}?next={quote(target, safe='')}"
    if request.headers.get("HX-Request"):
        return HTTPException(status.HTTP_401_UNAUTHORIZED, "signed out", headers={"HX-Redirect": location})
    return HTTPException(status.HTTP_303_SEE_OTHER, "sign in first", headers={"Location": location})


@dataclass(frozen=True)
class Mutation:
    """A mutating request admitted: who, and the form it sent."""

    signed: Signed
    form: dict[str, str]


class Access:
    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    async def signed_in(self, request: Request, engines: Engines) -> Signed:
        """The signed-in user; raises the way back to the sign-in form otherwise."""
        signed = await self.sessions.current(request, engines.console)
        if signed is None:
            raise sign_in_required(request)
        return signed

    async def mutation(self, request: Request, engines: Engines, action: str, target: str) -> Mutation | HTMLResponse:
        """Admit a mutating form post: signed in, its CSRF token, the operator role (a viewer's
        attempt is audited as denied). Returns the error page to answer when it is refused."""
        signed = await self.signed_in(request, engines)
        try:
            form = await read_form(request)
        except FormTooLarge as exc:
            return error_page(request, signed, status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, str(exc))
        sent = form.get(csrf.FIELD) or request.headers.get(csrf.HEADER)
        if not csrf.matches(sent, signed.csrf):
            return error_page(
                request, signed, status.HTTP_403_FORBIDDEN, "the form's CSRF token is missing or stale: reload the page"
            )
        if not signed.operator:
            await engines.admin.record_denied(signed.actor, action, target)
            return error_page(
                request,
                signed,
                status.HTTP_403_FORBIDDEN,
                f"{signed.actor.name!r} is a viewer; {action} needs the operator role",
            )
        return Mutation(signed, form)
