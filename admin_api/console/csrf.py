"""Cross-site request forgery: every console form that changes anything carries a token
that a page of another site cannot read.

Each session has a random token of its own (stored with it); a mutating request must
send it back, as the form field ``csrf`` or the header ``X-CSRF-Token`` (htmx sends the
header for the requests it makes). The session cookie is ``SameSite=Strict`` as well, so
a browser does not even send it with another site's request; the token is the check
that does not depend on the browser.

The sign-in form has no session yet: it is protected by a double-submit nonce, a
cookie set with the form and echoed in it, so that another site cannot sign a
browser in under its own token (login CSRF).
"""

from __future__ import annotations

import hmac
import secrets

FIELD = "csrf"
HEADER = "X-CSRF-Token"
SIGN_IN_COOKIE = "maintd_sign_in"
SIGN_IN_FIELD = "nonce"


def new_token() -> str:
    """A fresh random token (32 bytes, URL-safe)."""
    return secrets.token_urlsafe(32)


def matches(sent: str | None, expected: str) -> bool:
    """Whether the token sent is the expected one, compared in constant time."""
    return sent is not None and hmac.compare_digest(sent.encode(), expected.encode())
