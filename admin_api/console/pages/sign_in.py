"""Sign-in and sign-out. ``GET /ui/`` shows the sign-in form to whoever has no session
(see :mod:`..overview`); the form posts here."""

from __future__ import annotations

import math

from fastapi import APIRouter, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from maintd.admin_api.console import csrf
from maintd.admin_api.console.access import SIGN_IN_PATH, Access
from maintd.admin_api.console.engines import Engined
from maintd.admin_api.console.forms import FormTooLarge, read_form
from maintd.admin_api.console.page_route import PageRoute
from maintd.admin_api.console.render import page
from maintd.admin_api.console.sessions import COOKIE_PATH, Throttled


def safe_next(target: str | None) -> str:
    """Where to go after sign-in: a console path of this site, never another site's."""
    if target and target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return SIGN_IN_PATH


def sign_in_form(
    request: Request, *, status_code: int = 200, message: str | None = None, next_path: str | None = None
) -> HTMLResponse:
    """The sign-in page, with a fresh double-submit nonce in a cookie and in the form."""
    nonce = csrf.new_token()
    target = safe_next(next_path if next_path is not None else request.query_params.get("next"))
    response = page(request, "sign_in.html", None, status=status_code, message=message, nonce=nonce, next_path=target)
    response.set_cookie(
        csrf.SIGN_IN_COOKIE, nonce, path=COOKIE_PATH, httponly=True, samesite="strict",
        secure=request.url.scheme == "https",
    )  # fmt: skip
    return response


def router(access: Access) -> APIRouter:
    routes = APIRouter(route_class=PageRoute, include_in_schema=False)

    @routes.post("/ui/sign-in")
    async def sign_in(request: Request, engines: Engined) -> Response:
        try:
            form = await read_form(request)
        except FormTooLarge:
            return sign_in_form(request, status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, message="form too large")
        next_path = safe_next(form.get("next"))
        if not csrf.matches(
            form.get(csrf.SIGN_IN_FIELD), request.cookies.get(csrf.SIGN_IN_COOKIE, "")
        ) or not request.cookies.get(csrf.SIGN_IN_COOKIE):
            return sign_in_form(
                request, status_code=status.HTTP_403_FORBIDDEN, next_path=next_path,
                message="The sign-in form expired or came from elsewhere; please try again.",
            )  # fmt: skip
        redirect = RedirectResponse(next_path, status_code=status.HTTP_303_SEE_OTHER)
        try:
            actor = await access.sessions.sign_in(request, redirect, engines.console, form.get("token", "").strip())
        except Throttled as exc:
            response = sign_in_form(
                request, status_code=status.HTTP_429_TOO_MANY_REQUESTS, message=str(exc), next_path=next_path
            )
            response.headers["Retry-After"] = str(math.ceil(exc.retry_after))
            return response
        if actor is None:
            return sign_in_form(
                request, status_code=status.HTTP_401_UNAUTHORIZED, next_path=next_path,
                message="That token is not valid.",
            )  # fmt: skip
        redirect.delete_cookie(csrf.SIGN_IN_COOKIE, path=COOKIE_PATH)
        return redirect

    @routes.post("/ui/sign-out")
    async def sign_out(request: Request, engines: Engined) -> Response:
        signed = await access.signed_in(request, engines)
        form = await read_form(request)
        if not csrf.matches(form.get(csrf.FIELD) or request.headers.get(csrf.HEADER), signed.csrf):
            return page(
                request, "error.html", signed, status=403, status_code=403, message="stale form: reload the page"
            )
        response = RedirectResponse(SIGN_IN_PATH, status_code=status.HTTP_303_SEE_OTHER)
        await access.sessions.sign_out(signed, response, engines.console)
        return response

    return routes
