"""The daemon's HTTP API as the admin commands call it: a small JSON client.

Over the standard library's ``http.client`` rather than httpx: importing httpx
takes about 0.1 s, half of what a whole ``maintd jobs`` may take
(``bench/cli.py``). One connection, kept alive between the requests of one
command (``trigger --wait`` polls every half second).

Errors::

    ClientError             the command cannot get an answer from the API (exit 1)
    ├── InvalidUrl          not an http(s) URL (exit 64)
    ├── DaemonUnreachable   no connection, or none that answered (exit 69)
    └── RequestRefused      a 4xx/5xx answer: its status and detail (exit 1)
"""

from __future__ import annotations

import http.client
import json
import select
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

DEFAULT_TIMEOUT_S = 10.0
USER_AGENT = "maintd-cli"


class ClientError(Exception):
    """The daemon could not be reached or refused the request."""


class InvalidUrl(ClientError):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"invalid daemon URL {url!r}: {reason}")
        self.url = url


class DaemonUnreachable(ClientError):
    def __init__(self, url: str, cause: Exception) -> None:
        super().__init__(f"cannot reach the daemon at {url}: {cause}")
        self.url = url


class RequestRefused(ClientError):
    """An answer with a 4xx or 5xx status; ``detail`` is the API's ``{"detail": ...}`` in one line."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    text: str

    def json(self) -> Any:
        """The body as JSON; :class:`ValueError` when it is not."""
        return json.loads(self.text)


class ApiClient:
    """Requests to one daemon's API as one principal (``token``; none: anonymous)."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https"):
            raise InvalidUrl(url, "expected http://HOST:PORT or https://...")
        try:
            port = parts.port
        except ValueError as exc:  # a port that is not a number, or out of range
            raise InvalidUrl(url, str(exc)) from None
        if not parts.hostname:
            raise InvalidUrl(url, "no host")
        self.url = url.strip().rstrip("/")
        self._prefix = parts.path.rstrip("/")  # a daemon behind a proxy under a path
        self._headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._connection = _connection(parts.scheme, parts.hostname, port, timeout)

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._connection.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """Send one request (``params``: the query, None values left out; ``json_body``: sent as
        JSON unless None) and read its answer, whatever its status."""
        target = self._prefix + path
        if query := urlencode({k: v for k, v in (params or {}).items() if v is not None}, doseq=True):
            target += f"?{query}"
        sent = {**self._headers, **(headers or {})}
        body = None
        if json_body is not None:
            body = json.dumps(json_body).encode()
            sent["Content-Type"] = "application/json"
        self._drop_if_closed_by_peer()
        try:
            self._connection.request(method, target, body=body, headers=sent)
            answer = self._connection.getresponse()
            raw = answer.read()
        except (OSError, http.client.HTTPException) as exc:
            self._connection.close()
            raise DaemonUnreachable(self.url, exc) from exc
        return Response(answer.status, dict(answer.getheaders()), raw.decode("utf-8", "replace"))

    def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """:meth:`request`, and the JSON of a success; :class:`RequestRefused` for a 4xx/5xx."""
        response = self.request(method, path, params=params, json_body=json_body, headers=headers)
        if response.status >= 400:
            raise RequestRefused(response.status, _detail(response))
        try:
            return response.json()
        except ValueError as exc:  # not the daemon's API answering (a proxy page, say)
            raise ClientError(f"{response.status} from {self.url}{path} is not JSON: {response.text[:80]!r}") from exc

    def _drop_if_closed_by_peer(self) -> None:
        # An idle kept-alive connection that reads as ready has been closed by the server
        # (uvicorn closes idle ones after 5 s): open a new one rather than fail on it.
        sock = self._connection.sock
        if sock is not None and select.select([sock], [], [], 0)[0]:
            self._connection.close()


def _connection(scheme: str, host: str, port: int | None, timeout: float) -> http.client.HTTPConnection:
    if scheme == "http":
        return http.client.HTTPConnection(host, port, timeout=timeout)
    import ssl  # only for https: it takes as long to import as the rest of a command

    return http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl.create_default_context())


def _detail(response: Response) -> str:
    """The ``detail`` of an error answer in one line: FastAPI's validation errors say which
    parameter and why; anything not JSON is shown as text."""
    try:
        body = response.json()
    except ValueError:
        return " ".join(response.text.split())[:200]
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):
        return "; ".join(
            f"{_location(error.get('loc'))}: {error.get('msg')}" for error in detail if isinstance(error, dict)
        )
    return detail if isinstance(detail, str) else json.dumps(detail)


def _location(loc: Any) -> str:
    return str(loc[-1]) if isinstance(loc, list | tuple) and loc else "?"
