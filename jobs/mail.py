"""Outgoing mail settings, the ``[smtp]`` section of config.toml, as jobs receive them."""

from __future__ import annotations

import os
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

# The HTML5 (WHATWG) pattern for one address: strict enough to catch typos and
# header injection, loose enough for every address a mail server accepts.
EMAIL_ADDRESS = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


def _addresses(addresses: list[str]) -> list[str]:
    for address in addresses:
        if not EMAIL_ADDRESS.fullmatch(address):
            raise ValueError(f"not an email address: {address!r}")
    return list(dict.fromkeys(addresses))


# Recipients: at least one, each an address, duplicates dropped.
EmailAddresses = Annotated[list[str], Field(min_length=1), AfterValidator(_addresses)]


class SmtpSettings(BaseModel):
    """How to reach the mail server. The password comes from an environment variable, never the file."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    host: str = "127.0.0.1"
    port: int = Field(25, ge=1, le=65535)
    from_address: str = Field("maintd@localhost", alias="from", min_length=3)
    # "starttls": upgrade a plain connection; "tls": implicit TLS (port 465); "none": plain (local relays).
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password_env: str | None = Field(None, description="name of the environment variable holding the password")
    timeout_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _credentials_together(self) -> SmtpSettings:
        if (self.username is None) != (self.password_env is None):
            raise ValueError("username and password_env go together")
        return self

    def password(self) -> str | None:
        """The password, read at send time so a rotated secret needs no restart."""
        return os.environ.get(self.password_env) if self.password_env else None
