"""Console sessions as the server hands them out, over plain HTTP against a real
``maintd run``: the cookie's Secure flag behind a proxy, a session ended by the reload
that removed its token, and failed sign-ins counted with failed API tokens."""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e.records import fetch

pytestmark = pytest.mark.e2e

JOBS = '[jobs.nightly]\ntask = "sql"\nschedule = "0 0 * * *"\n[jobs.nightly.params]\nsql = "SELECT 1"\n'
# The test client is the proxy: it connects from loopback.
BEHIND_A_PROXY = 'trusted_proxies = ["127.0.0.1"]\n'
HTTPS = {"X-Forwarded-Proto": "https"}


def sign_in(daemon: Any, token: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """Fetch the sign-in form and post it, sending back its nonce cookie by hand (a cookie
    marked Secure is not sent over plain http by a client's cookie jar)."""
    with httpx.Client(base_url=daemon.url, headers=headers or {}) as http:
        form = http.get("/ui/")
        nonce = re.search(r'name="nonce" value="([^"]+)"', form.text)
        assert nonce is not None, form.text
        cookie = form.headers["set-cookie"].split(";")[0]
        return http.post(
            "/ui/sign-in",
            data={"nonce": nonce[1], "next": "/ui/", "token": token},
            headers={"Cookie": cookie},
        )


def session_cookie(answer: httpx.Response) -> str:
    [cookie] = [c for c in answer.headers.get_list("set-cookie") if c.startswith("maintd_session=")]
    return cookie


def test_the_session_cookie_is_secure_when_https_reached_a_trusted_proxy(start_daemon: Any, db_dsn: str) -> None:
    daemon = start_daemon(JOBS, dsn=db_dsn, server_toml=BEHIND_A_PROXY)
    over_https = sign_in(daemon, daemon.operator_token, HTTPS)
    assert over_https.status_code == 303
    assert "secure" in session_cookie(over_https).lower().split("; ")
    over_http = sign_in(daemon, daemon.operator_token)
    assert over_http.status_code == 303
    assert "secure" not in session_cookie(over_http).lower().split("; ")


def test_an_untrusted_client_cannot_claim_https(start_daemon: Any, db_dsn: str) -> None:
    daemon = start_daemon(JOBS, dsn=db_dsn)
    answer = sign_in(daemon, daemon.operator_token, HTTPS)
    assert answer.status_code == 303
    assert "secure" not in session_cookie(answer).lower().split("; ")


def test_a_reload_that_removes_a_token_ends_its_sessions(start_daemon: Any, db_dsn: str, tmp_path: Path) -> None:
    daemon = start_daemon(JOBS, dsn=db_dsn)
    viewer = session_cookie(sign_in(daemon, daemon.viewer_token)).split(";")[0]
    operator = session_cookie(sign_in(daemon, daemon.operator_token)).split(";")[0]
    with httpx.Client(base_url=daemon.url) as http:
        assert "nightly" in http.get("/ui/", headers={"Cookie": viewer}).text
        config = tmp_path / f"config-{urlsplit(daemon.url).port}.toml"
        text = config.read_text()
        without_viewer = re.sub(r'\[\[admin\.tokens\]\]\nname = "watcher"\n[^\[]*', "", text)
        assert without_viewer != text
        config.write_text(without_viewer)
        daemon.process.send_signal(signal.SIGHUP)
        daemon.wait_for_event(lambda e: e.get("event") == "config_reloaded")

        gone = http.get("/ui/", headers={"Cookie": viewer})
        assert "Admin token" in gone.text and "nightly" not in gone.text
        assert "nightly" in http.get("/ui/", headers={"Cookie": operator}).text
    principals = [row["principal"] for row in fetch(db_dsn, "SELECT principal FROM maintd.console_sessions")]
    assert principals == ["ops"]


def test_failed_sign_ins_and_failed_api_tokens_share_one_throttle(start_daemon: Any, db_dsn: str) -> None:
    daemon = start_daemon(JOBS, dsn=db_dsn)
    with daemon.client("not-a-token") as http:
        for _ in range(19):
            assert http.get("/admin/jobs").status_code == 401
    assert sign_in(daemon, "still-not-a-token").status_code == 401  # the 20th failure
    throttled = sign_in(daemon, "nor-this")
    assert throttled.status_code == 429
    assert int(throttled.headers["Retry-After"]) > 0
    with daemon.client("not-a-token") as http:
        assert http.get("/admin/jobs").status_code == 429
    # A valid token from the same address still signs in.
    assert sign_in(daemon, daemon.operator_token).status_code == 303
