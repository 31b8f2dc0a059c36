"""The uvicorn settings of ``maintd run``: forwarded headers are believed only from [server] trusted_proxies."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI, Request

from maintd.scheduler.config.model import parse_config
from maintd.scheduler.server import uvicorn_config
from tests.asgi import asgi_get

pytestmark = pytest.mark.unit


def echo_app() -> FastAPI:
    app = FastAPI()

    @app.get("/who")
    async def who(request: Request) -> dict[str, Any]:
        return {"client": request.client.host if request.client else None, "scheme": request.url.scheme}

    return app


async def call_from(trusted: list[str], peer: str, forwarded_for: str) -> dict[str, Any]:
    """GET /who through the ASGI app uvicorn would serve, as sent by ``peer`` with X-Forwarded-For."""
    server = parse_config({"server": {"trusted_proxies": trusted}}).server
    config = uvicorn_config(server, echo_app())
    config.load()
    forwarded = [(b"x-forwarded-for", forwarded_for.encode()), (b"x-forwarded-proto", b"https")]
    return (await asgi_get(config.loaded_app, "/who", headers=forwarded, client=(peer, 40000)))[1]


async def test_by_default_a_loopback_client_does_not_choose_its_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")  # uvicorn's own knob must not widen trust either
    assert await call_from([], "127.0.0.1", "198.51.100.66") == {"client": "127.0.0.1", "scheme": "http"}


async def test_a_trusted_proxy_passes_the_client_address_on() -> None:
    answer = await call_from(["10.0.0.0/8"], "10.1.2.3", "198.51.100.66")
    assert answer == {"client": "198.51.100.66", "scheme": "https"}


async def test_a_peer_outside_the_trusted_networks_is_not_believed() -> None:
    answer = await call_from(["10.0.0.0/8", "::1"], "127.0.0.1", "198.51.100.66")
    assert answer == {"client": "127.0.0.1", "scheme": "http"}
