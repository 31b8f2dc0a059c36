"""A GET sent straight through an app's ASGI interface, with what no HTTP client would send
(a lone surrogate in the path, any peer address, forwarded headers)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

Asgi = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


async def asgi_get(
    app: Asgi,
    path: str,
    *,
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    client: tuple[str, int] = ("203.0.113.7", 40000),
) -> tuple[int, Any]:
    """The status and JSON body of ``GET path?query`` from ``client``."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogatepass"),
        "root_path": "",
        "query_string": query,
        "headers": [(b"host", b"maintd"), *(headers or [])],
        "client": client,
        "server": ("maintd", 80),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body)
