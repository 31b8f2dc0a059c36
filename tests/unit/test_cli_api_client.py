"""The admin commands' HTTP client against a real HTTP server on loopback (no daemon)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from maintd.scheduler.cli.api_client import ApiClient, ClientError, DaemonUnreachable, InvalidUrl, RequestRefused

pytestmark = pytest.mark.unit

VALIDATION = {"detail": [{"loc": ["query", "status"], "msg": "Input should be 'running' or 'failed'"}]}


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.connections = 0
        self.closed = threading.Semaphore(0)  # released each time the server closes a connection

    def get_request(self) -> Any:
        self.connections += 1
        return super().get_request()

    def shutdown_request(self, request: Any) -> None:
        super().shutdown_request(request)
        self.closed.release()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless a handler says otherwise
    server: Server

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.answer()

    def do_POST(self) -> None:
        self.answer()

    def answer(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else None
        if url.path.endswith("/echo"):
            self.send(200, "application/json", {
                "method": self.command, "path": url.path, "query": parse_qs(url.query),
                "authorization": self.headers.get("Authorization"), "content_type": self.headers.get("Content-Type"),
                "body": body,
            })  # fmt: skip
        elif url.path == "/invalid":
            self.send(422, "application/json", VALIDATION)
        elif url.path == "/busy":
            self.send(409, "application/json", {"detail": "a run of nightly is in progress"})
        elif url.path == "/proxy-error":
            self.send(502, "text/html", "<html>\n <h1>Bad   gateway</h1></html>")
        elif url.path == "/not-json":
            self.send(200, "text/plain", "hello")
        elif url.path == "/then-close":
            # Keep-alive as far as the client can tell, then closed, as an idle connection is.
            self.send(200, "application/json", {})
            self.close_connection = True

    def send(self, status: int, content_type: str, body: Any) -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server() -> Iterator[Server]:
    with Server() as server:
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        yield server
        server.shutdown()
        thread.join(10)


def url(server: Server, path: str = "") -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def test_query_token_and_json_body(server: Server) -> None:
    with ApiClient(url(server), "s3cret") as api:
        got = api.call("POST", "/echo", params={"job_id": "a b", "status": None, "limit": 5}, json_body={"x": [1]})
    assert got == {
        "method": "POST", "path": "/echo", "query": {"job_id": ["a b"], "limit": ["5"]},
        "authorization": "Bearer s3cret", "content_type": "application/json", "body": '{"x": [1]}',
    }  # fmt: skip


def test_no_token_no_authorization_and_a_path_prefix(server: Server) -> None:
    with ApiClient(url(server, "/maintd/"), None) as api:
        got = api.call("GET", "/echo")
    assert got["path"] == "/maintd/echo" and got["authorization"] is None and got["body"] is None


def test_refusals_carry_the_status_and_the_detail_in_one_line(server: Server) -> None:
    with ApiClient(url(server)) as api:
        with pytest.raises(RequestRefused) as invalid:
            api.call("GET", "/invalid")
        with pytest.raises(RequestRefused) as busy:
            api.call("GET", "/busy")
        with pytest.raises(RequestRefused) as proxy:
            api.call("GET", "/proxy-error")
        with pytest.raises(ClientError, match=r"^200 from http://\S+/not-json is not JSON: 'hello'$"):
            api.call("GET", "/not-json")
        # request() answers whatever the status, for a caller that tells 200 from 202 or reads a 409.
        assert api.request("GET", "/busy").status == 409
    assert str(invalid.value) == "422: status: Input should be 'running' or 'failed'"
    assert (busy.value.status, busy.value.detail) == (409, "a run of nightly is in progress")
    assert str(proxy.value) == "502: <html> <h1>Bad gateway</h1></html>"


def test_one_connection_kept_alive_and_reopened_once_the_server_closed_it(server: Server) -> None:
    with ApiClient(url(server)) as api:
        api.call("GET", "/echo")
        api.call("GET", "/echo")
        assert server.connections == 1
        assert api.call("GET", "/then-close") == {}
        assert server.closed.acquire(timeout=10)
        assert api.call("GET", "/echo")["path"] == "/echo"
        assert server.connections == 2


def test_nobody_listening_is_unreachable() -> None:
    with Server() as idle:  # bound, never accepting: then closed, so nothing listens on its port
        port = idle.server_address[1]
    with ApiClient(f"http://127.0.0.1:{port}") as api, pytest.raises(DaemonUnreachable) as raised:
        api.call("GET", "/admin/jobs")
    assert str(raised.value).startswith(f"cannot reach the daemon at http://127.0.0.1:{port}: ")


@pytest.mark.parametrize(
    ("bad", "reason"),
    [("127.0.0.1:8080", "expected http://HOST:PORT"), ("ftp://host", "expected http://HOST:PORT"),
     ("http://:8080", "no host"), ("http://host:99999", "Port out of range")],
)  # fmt: skip
def test_invalid_urls(bad: str, reason: str) -> None:
    with pytest.raises(InvalidUrl, match=reason):
        ApiClient(bad)
