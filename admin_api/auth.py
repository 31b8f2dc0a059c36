"""Bearer-token authentication for the admin routes.

The config holds only the sha256 of each token (``[[admin.tokens]]``), so a
leaked config file grants nothing. A presented token is hashed and compared
against every entry in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, get_args

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from admin_api.interface import Actor, Role

# 32 random bytes: the entropy of a 256-bit key, printed as 43 url-safe characters.
TOKEN_BYTES = 32

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")

# Missing or malformed headers (no "Bearer", no credentials) are answered by
# HTTPBearer itself: 401 with `WWW-Authenticate: Bearer`. It also declares the
# security scheme in the OpenAPI schema.
_bearer = HTTPBearer(description="A token listed by its sha256 in `[[admin.tokens]]`.")


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
    """The configured tokens, and the FastAPI dependencies that check a request against them.

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

    def require_viewer(
        self,
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials, Depends(_bearer)],
    ) -> Actor:
        """Dependency for read routes: any known token; 401 otherwise."""
        entry = self.authenticate(credentials.credentials)
        if entry is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "invalid bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return Actor(entry.name, entry.role, request.client.host if request.client else None)

    def require_operator(
        self,
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials, Depends(_bearer)],
    ) -> Actor:
        """Dependency for mutating routes: a known token with the operator role; 401/403 otherwise."""
        actor = self.require_viewer(request, credentials)
        if actor.role != "operator":
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"{actor.name!r} is a viewer; this needs the operator role")
        return actor


def new_token() -> tuple[str, str]:
    """A fresh random bearer token and its sha256 hex, for a new ``[[admin.tokens]]`` entry."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    return token, hashlib.sha256(token.encode()).hexdigest()
