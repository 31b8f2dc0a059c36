"""Which daemon an admin command talks to, and as whom.

The URL: ``--url``, else ``$MAINTD_URL``, else the config's ``[server]`` (the
file from ``--config``, ``$MAINTD_CONFIG`` or ``./config.toml``), of which only
``host`` and ``port`` are read (``scheduler/config/lenient.py``). The token:
``$MAINTD_TOKEN``, kept out of the command line where ``ps`` would show it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from maintd.scheduler.config.errors import ConfigError
from maintd.scheduler.config.lenient import default_config_path, server_address

URL_ENV = "MAINTD_URL"
TOKEN_ENV = "MAINTD_TOKEN"
# A daemon listening on every address is reached on loopback from its own host.
_ANY_ADDRESS = ("0.0.0.0", "::", "[::]")


@dataclass(frozen=True)
class Target:
    url: str
    token: str | None


def target(*, url: str | None, config: Path | None, environ: Mapping[str, str]) -> Target:
    """The daemon and the token for an admin command; :class:`ConfigError` (with a hint to give
    the URL instead) when the URL has to come from a config that does not tell it."""
    token = environ.get(TOKEN_ENV, "").strip() or None
    if url:
        return Target(url, token)
    if from_env := environ.get(URL_ENV, "").strip():
        return Target(from_env, token)
    path = config or default_config_path(environ)
    try:
        address = server_address(path)
    except ConfigError as exc:
        hint = f"; or give the daemon's URL with --url or ${URL_ENV}"
        raise ConfigError([*exc.problems[:-1], exc.problems[-1] + hint]) from exc
    return Target(url_of(address.host, address.port), token)


def url_of(host: str, port: int) -> str:
    """The URL of a daemon listening on ``host``:``port`` (``[server]``)."""
    if host in _ANY_ADDRESS:
        host = "127.0.0.1"
    if ":" in host:  # an IPv6 address goes in brackets in a URL
        host = f"[{host.strip('[]')}]"
    return f"http://{host}:{port}"
