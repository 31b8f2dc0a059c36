"""The HTTP side of ``maintd run``: uvicorn, on a port bound before anything else starts.

The order is the operator's: the port is bound first (a busy port must not be
found after migrations ran and the engine started), then the app's lifespan
opens the database and starts the engine, then uvicorn serves. Forwarded
headers are believed only from ``[server] trusted_proxies``.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from types import FrameType

import uvicorn
from fastapi import FastAPI

from maintd.scheduler.config.model import ServerConfig
from maintd.scheduler.systemd import ServiceNotifier


class PortUnavailable(Exception):
    """The configured address cannot be listened on (in use, not ours, not an address)."""


def bind_listener(server: ServerConfig) -> socket.socket:
    """A socket bound to ``server.host:port`` (it listens once uvicorn serves on it)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            server.host, server.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except OSError as exc:
        raise PortUnavailable(f"cannot listen on {server.host}:{server.port}: {exc.strerror or exc}") from exc
    sock = socket.socket(family, kind, proto)
    try:
        # As uvicorn does: a port left in TIME_WAIT by the previous process is free to take.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise PortUnavailable(f"cannot listen on {server.host}:{server.port}: {exc.strerror or exc}") from exc
    return sock


def uvicorn_config(server: ServerConfig, app: FastAPI) -> uvicorn.Config:
    """uvicorn's settings for ``app``; the caller runs the app's lifespan itself (``lifespan="off"``)."""
    trusted = [str(network) for network in server.trusted_proxies]
    return uvicorn.Config(
        app,
        host=server.host,
        port=server.port,
        log_config=None,  # our structlog handler renders uvicorn's records too
        access_log=False,
        lifespan="off",
        # Explicit even when empty: uvicorn's default trusts 127.0.0.1 (and $FORWARDED_ALLOW_IPS).
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted,
    )


async def serve(app: FastAPI, listener: socket.socket, server: ServerConfig, systemd: ServiceNotifier) -> None:
    """Run the app's lifespan (database, engine) and serve on ``listener`` until SIGTERM/SIGINT.
    Errors of the lifespan's start (``DatabaseUnavailable``) propagate."""
    http = Server(uvicorn_config(server, app), systemd)
    # Signals are uvicorn's from here on, so that a SIGTERM during the start or the drain
    # stops the daemon in order instead of killing it.
    with http.capture_signals():
        async with app.router.lifespan_context(app):
            if not http.should_exit:  # a SIGTERM during the start: stop without serving
                await http.serve(sockets=[listener])


class Server(uvicorn.Server):
    """uvicorn's server, except that a drained stop on SIGTERM exits 0 instead of re-raising the signal,
    and that it tells systemd when it is ready and when it stops."""

    def __init__(self, config: uvicorn.Config, systemd: ServiceNotifier) -> None:
        super().__init__(config)
        self.systemd = systemd

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # The lifespan (migrations, engine started) has run: once the port listens,
        # systemd may start units ordered after us.
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit:
            if sockets:  # uvicorn announces only the sockets it bound itself
                self._log_started_message(sockets)
            self.systemd.ready()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Before uvicorn closes the port and the lifespan drains running jobs (up to shutdown_grace).
        self.systemd.stopping()
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            self._captured_signals.clear()
