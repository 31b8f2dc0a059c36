"""Bearer-token authentication for the admin routes.

The config holds only the sha256 of each token (``[[admin.tokens]]``), so a
leaked config file grants nothing. A presented token is hashed and compared
against every entry in constant time.
"""

# No `from __future__ import annotations`: FastAPI must resolve the dependency
# annotations of Guard.operator's closure, which name `self`, at definition time.
import hashlib
import hmac
import math
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, get_args

import structlog
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from maintd.admin_api.auth_failures import AuthFailures, Reason
from maintd.admin_api.interface import Actor, Role
from maintd.admin_api.state import engine_of

log = structlog.get_logger("maintd.api")

# 32 random bytes: the entropy of a 256-bit key, printed as 43 url-safe characters.
TOKEN_BYTES = 32

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")

# Declares the security scheme in the OpenAPI schema. auto_error=False: a missing or
# malformed header is a failed authentication like a wrong token, counted by Guard.
_bearer = HTTPBearer(description="A token listed by its sha256 in `[[admin.tokens]]`.", auto_error=False)


@dataclass(frozen=True)
class TokenEntry:
    """One ``[[admin.tokens]]`` entry: the principal, its role and its token's sha256 (hex)."""

    name: str
    role: Role
    sha256: str

    def __post_init__(self) -> None:
        if self.role not in get_args(Role):
            raise ValueError(f"token {self.name!r}: role must be one of {get_args(Role)}, not {self.role!r}")
        if not _SHA256_HEX.fullmatch(self.sha256):
            raise ValueError(f"token {self.name!r}: sha256 must be 64 hex digits")


class TokenTable:
    """The configured tokens.

    An empty table authenticates nobody: every admin call is then 401.
    """

    def __init__(self, entries: Iterable[TokenEntry]) -> None:
        self._entries: list[tuple[bytes, TokenEntry]] = []
        for entry in entries:
            digest = bytes.fromhex(entry.sha256)
            if any(digest == known for known, _ in self._entries):
                # One token must name one principal, or the audit log could lie.
                raise ValueError(f"token {entry.name!r}: the same sha256 is listed twice")
            self._entries.append((digest, entry))

    def replace(self, entries: Iterable[TokenEntry]) -> None:
        """Take a reloaded token list (checked whole before it replaces the current one)."""
        self._entries = TokenTable(entries)._entries

    def authenticate(self, token: str) -> TokenEntry | None:
        """The entry whose sha256 matches ``token``, or None.

        Every entry is compared, with :func:`hmac.compare_digest`, whether or
        not an earlier one matched, so the response time tells nothing about
        which entry matched or how much of a hash did.
        """
        digest = hashlib.sha256(token.encode()).digest()
        matches = [entry for known, entry in self._entries if hmac.compare_digest(digest, known)]
        return matches[0] if matches else None

    def names(self) -> list[str]:
        """The principals configured, in the config's order."""
        return [entry.name for _, entry in self._entries]

    def entry_for(self, sha256: str) -> TokenEntry | None:
        """The entry listed under ``sha256`` (hex), or None once a reload has removed it: a
        console session signed in with a token lives only as long as the token."""
        digest = bytes.fromhex(sha256)
        matches = [entry for known, entry in self._entries if hmac.compare_digest(digest, known)]
        return matches[0] if matches else None


class Guard:
    """The FastAPI dependencies that admit a request to the admin routes.

    :meth:`viewer` admits any known token (401 otherwise, 429 once the client
    address has failed too often: :mod:`admin_api.auth_failures`);
    :meth:`operator` also needs the operator role, and a viewer's refused call
    is written to the audit log as denied before its 403.
    """

    def __init__(self, tokens: TokenTable, failures: AuthFailures) -> None:
        self.tokens = tokens
        self.failures = failures

    def viewer(
        self,
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Actor:
        """Dependency for read routes: any known token."""
        client = request.client.host if request.client else None
        entry = self.tokens.authenticate(credentials.credentials) if credentials else None
        if entry is None:
            reason: Reason = "missing" if credentials is None else "invalid"
            retry_after = self.failures.record(client or "unknown", reason, request.url.path)
            if retry_after is not None:
                raise HTTPException(
                    status.HTTP_429_TOO_MANY_REQUESTS,
                    "too many failed authentications from this address; a valid token is still accepted",
                    headers={"Retry-After": str(math.ceil(retry_after))},
                )
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "invalid bearer token" if credentials else "a bearer token is required",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return Actor(entry.name, entry.role, client)

    def operator(self, action: str) -> Callable[..., Awaitable[Actor]]:
        """Dependency for a mutating route whose audit action is ``action``: a known token with the operator role."""

        async def require_operator(request: Request, actor: Annotated[Actor, Depends(self.viewer)]) -> Actor:
            if actor.role == "operator":
                return actor
            await _audit_denied(request, actor, action)
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"{actor.name!r} is a viewer; {action} needs the operator role"
            )

        return require_operator


async def _audit_denied(request: Request, actor: Actor, action: str) -> None:
    """Write a viewer's refused mutation to the audit log; the 403 goes out whether or not that works."""
    engine = engine_of(request)
    params = request.path_params
    target = f"run:{params['run_id']}" if "run_id" in params else str(params.get("job_id", request.url.path))
    if engine is None:  # starting: there is no audit log to write to yet
        log.warning("mutation_denied", principal=actor.name, action=action, target=target, client=actor.client)
        return
    try:
        await engine.record_denied(actor, action, target)
    except Exception:
        log.exception("audit_write_failed", principal=actor.name, action=action, target=target)


def new_token() -> tuple[str, str]:
    """A fresh random bearer token and its sha256 hex, for a new ``[[admin.tokens]]`` entry."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    return token, hashlib.sha256(token.encode()).hexdigest()
