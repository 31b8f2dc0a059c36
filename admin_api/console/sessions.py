"""Console sessions: a token typed once into the sign-in form, then a cookie.

The session lives in the database (through the console's engine), so it is valid on
every replica, and only the sha256 of the cookie's value is stored. It ends:

* ``[admin] session_ttl`` after sign-in (the daemon's clock decides);
* at sign-out;
* as soon as a reload removes the token it was opened with: the token's entry is
  looked up in the current token table on every request (its role too, so a role
  changed by a reload applies at once).

The cookie is ``HttpOnly`` (no script reads it), ``SameSite=Strict``, scoped to
``/ui``, and ``Secure`` when the request came over https: directly, or as a trusted
proxy's ``X-Forwarded-Proto`` says (uvicorn believes it only from
``[server] trusted_proxies``, so ``request.url.scheme`` tells). Failed sign-ins count
toward the same per-address throttle as bad API tokens.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from fastapi import Request, Response

from maintd.admin_api.auth import TokenTable
from maintd.admin_api.auth_failures import AuthFailures
from maintd.admin_api.console import csrf
from maintd.admin_api.console.interface import ConsoleEngine, NewSession
from maintd.admin_api.interface import Actor

COOKIE = "maintd_session"
COOKIE_PATH = "/ui"


@dataclass(frozen=True)
class Signed:
    """A signed-in console user: who, with which CSRF token, under which session."""

    actor: Actor
    csrf: str
    session_sha256: bytes

    @property
    def operator(self) -> bool:
        return self.actor.role == "operator"


@dataclass
class SessionPolicy:
    """How long a session lasts; replaced by a reload (``[admin] session_ttl``)."""

    ttl: timedelta


class Throttled(Exception):
    """Too many failed authentications from this address: wait ``retry_after`` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many failed sign-ins from this address; try again in {retry_after:.0f}s")
        self.retry_after = retry_after


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def client_of(request: Request) -> str | None:
    return request.client.host if request.client else None


class Sessions:
    """Opens, finds and ends console sessions against the configured tokens."""

    def __init__(self, tokens: TokenTable, failures: AuthFailures, policy: SessionPolicy) -> None:
        self.tokens = tokens
        self.failures = failures
        self.policy = policy

    async def sign_in(self, request: Request, response: Response, console: ConsoleEngine, token: str) -> Actor | None:
        """Open a session for ``token`` and set its cookie on ``response``; None for an unknown
        token (counted as a failed authentication); :class:`Throttled` once the address is limited."""
        client = client_of(request)
        entry = self.tokens.authenticate(token) if token else None
        if entry is None:
            retry_after = self.failures.record(client or "unknown", "invalid" if token else "missing", request.url.path)
            if retry_after is not None:
                raise Throttled(retry_after)
            return None
        actor = Actor(entry.name, entry.role, client, via="console")
        value = secrets.token_urlsafe(32)
        now = console.now()
        expires = now + self.policy.ttl
        session = NewSession(_digest(value), entry.sha256.lower(), entry.name, csrf.new_token(), client, now, expires)
        await console.open_session(session, actor)
        response.set_cookie(
            COOKIE,
            value,
            max_age=int(self.policy.ttl.total_seconds()),
            path=COOKIE_PATH,
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        return actor

    async def current(self, request: Request, console: ConsoleEngine) -> Signed | None:
        """The signed-in user of this request, or None (no cookie, unknown, expired, token removed)."""
        value = request.cookies.get(COOKIE)
        if not value:
            return None
        digest = _digest(value)
        record = await console.find_session(digest)
        if record is None:
            return None
        entry = self.tokens.entry_for(record.token_sha256)
        if entry is None:  # a reload removed the token: the session goes with it
            await console.end_session(digest, None)
            return None
        return Signed(Actor(entry.name, entry.role, client_of(request), via="console"), record.csrf, digest)

    async def sign_out(self, signed: Signed, response: Response, console: ConsoleEngine) -> None:
        await console.end_session(signed.session_sha256, signed.actor)
        response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
