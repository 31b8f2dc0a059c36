"""What the admin commands need of a config: where the file is and where the daemon listens.

Read leniently: ``[server]``'s ``host`` and ``port`` and nothing else. Jobs,
tokens and the other sections are the daemon's business; a client that
validated them would refuse to talk to a daemon that runs fine (a task module
only the daemon can import) or that rightly kept its config when a SIGHUP
brought a broken one. No pydantic here: the command line loads this module on
every admin command.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from maintd.scheduler.config.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("config.toml")
CONFIG_ENV = "MAINTD_CONFIG"
# [server]'s defaults; config.model's ServerConfig takes them from here.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$MAINTD_CONFIG``, else ``./config.toml``."""
    return Path((os.environ if environ is None else environ).get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)


@dataclass(frozen=True)
class ServerAddress:
    """Where a config's daemon listens."""

    host: str
    port: int


def server_address(path: Path) -> ServerAddress:
    """``[server]`` host and port of the config at ``path``; :class:`ConfigError` when the file
    cannot be read or parsed, or either of those two keys is wrong. Nothing else is checked."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config: {exc.strerror or exc}"]) from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: TOML syntax error: {exc}"]) from exc
    server = raw.get("server", {})
    if not isinstance(server, dict):
        raise ConfigError([f"{path}: server: must be a table"])
    host, port = server.get("host", DEFAULT_HOST), server.get("port", DEFAULT_PORT)
    problems = []
    if not isinstance(host, str) or not host.strip():
        problems.append(f"{path}: server.host: must be a host name or address, got {host!r}")
    # bool is an int to Python, not to an operator.
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        problems.append(f"{path}: server.port: must be an integer 0-65535, got {port!r}")
    elif port == 0:
        problems.append(f"{path}: server.port: 0 lets the OS pick the daemon's port, so it cannot be found here")
    if problems:
        raise ConfigError(problems)
    return ServerAddress(host.strip(), port)
