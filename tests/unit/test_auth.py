"""Bearer-token authentication: the token table, new tokens, and the role dependencies."""

import hashlib
import hmac
import string
from collections.abc import AsyncIterator
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI
from prometheus_client import CollectorRegistry, Counter

from maintd.admin_api.auth import Guard, TokenEntry, TokenTable, new_token
from maintd.admin_api.auth_failures import AuthFailures
from maintd.admin_api.interface import Actor

pytestmark = pytest.mark.unit

CLIENT_HOST = "198.51.100.23"


def sha256_hex(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


VIEWER = TokenEntry(name="alice", role="viewer", sha256=sha256_hex("viewer-token"))
OPERATOR = TokenEntry(name="ops", role="operator", sha256=sha256_hex("operator-token"))
LAST = TokenEntry(name="cron-bot", role="operator", sha256=sha256_hex("last-token"))


@pytest.fixture
def spy_compare_digest(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, bytes]]:
    """Record every hmac.compare_digest call, still comparing for real."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    return calls


class TestTokenEntry:
    def test_rejects_unknown_role(self) -> None:
        with pytest.raises(ValueError, match="role"):
            TokenEntry(name="x", role="admin", sha256=sha256_hex("t"))  # type: ignore[arg-type]

    @pytest.mark.parametrize("digest", ["", "abc", sha256_hex("t")[:-1], "g" * 64, sha256_hex("t") + "0"])
    def test_rejects_a_sha256_that_is_not_64_hex_digits(self, digest: str) -> None:
        with pytest.raises(ValueError, match="sha256"):
            TokenEntry(name="x", role="viewer", sha256=digest)

    def test_is_frozen(self) -> None:
        with pytest.raises(AttributeError):
            VIEWER.role = "operator"  # type: ignore[misc]


class TestTokenTable:
    def test_finds_the_first_and_the_last_entry(self) -> None:
        table = TokenTable([VIEWER, OPERATOR, LAST])
        assert table.authenticate("viewer-token") == VIEWER
        assert table.authenticate("last-token") == LAST

    @pytest.mark.parametrize("token", ["", "wrong", "viewer-token ", "VIEWER-TOKEN", sha256_hex("viewer-token")])
    def test_rejects_any_other_token(self, token: str) -> None:
        assert TokenTable([VIEWER, OPERATOR, LAST]).authenticate(token) is None

    def test_an_empty_table_accepts_nothing(self) -> None:
        assert TokenTable([]).authenticate("viewer-token") is None

    def test_accepts_an_upper_case_sha256(self) -> None:
        entry = TokenEntry(name="ops", role="operator", sha256=sha256_hex("t").upper())
        assert TokenTable([entry]).authenticate("t") == entry

    def test_rejects_the_same_sha256_listed_twice(self) -> None:
        twin = TokenEntry(name="bob", role="operator", sha256=VIEWER.sha256)
        with pytest.raises(ValueError, match="twice"):
            TokenTable([VIEWER, twin])

    @pytest.mark.parametrize("token", ["viewer-token", "last-token", "wrong"])
    def test_compares_every_entry_with_compare_digest(
        self, token: str, spy_compare_digest: list[tuple[bytes, bytes]]
    ) -> None:
        TokenTable([VIEWER, OPERATOR, LAST]).authenticate(token)
        compared = [known for _, known in spy_compare_digest]
        assert compared == [bytes.fromhex(e.sha256) for e in (VIEWER, OPERATOR, LAST)]


class TestNewToken:
    def test_returns_the_sha256_of_the_token(self) -> None:
        token, digest = new_token()
        assert digest == sha256_hex(token)

    def test_is_url_safe_with_at_least_32_bytes_of_entropy(self) -> None:
        token, _ = new_token()
        # base64 of 32 bytes without padding is 43 characters.
        assert len(token) >= 43
        assert set(token) <= set(string.ascii_letters + string.digits + "-_")

    def test_is_fresh_each_time(self) -> None:
        assert new_token()[0] != new_token()[0]

    def test_authenticates_once_listed(self) -> None:
        token, digest = new_token()
        entry = TokenEntry(name="new", role="viewer", sha256=digest)
        assert TokenTable([VIEWER, entry]).authenticate(token) == entry


def actor_app(tokens: TokenTable) -> FastAPI:
    """A bare app with one read and one mutating route that echo the actor."""
    app = FastAPI()
    guard = Guard(
        tokens, AuthFailures(Counter("maintd_auth_failures", "test", ["reason"], registry=CollectorRegistry()))
    )

    @app.get("/read")
    async def read(actor: Annotated[Actor, Depends(guard.viewer)]) -> dict[str, str | None]:
        return {"name": actor.name, "role": actor.role, "client": actor.client}

    @app.post("/write")
    async def write(actor: Annotated[Actor, Depends(guard.operator("write"))]) -> dict[str, str | None]:
        return {"name": actor.name, "role": actor.role, "client": actor.client}

    return app


async def open_client(tokens: TokenTable) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=actor_app(tokens), client=(CLIENT_HOST, 50123))
    return httpx.AsyncClient(transport=transport, base_url="http://maintd")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with await open_client(TokenTable([VIEWER, OPERATOR, LAST])) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class TestDependencies:
    @pytest.mark.parametrize(
        "headers",
        [
            {},
            {"Authorization": ""},
            {"Authorization": "Bearer"},
            {"Authorization": "Bearer "},
            {"Authorization": "viewer-token"},
            {"Authorization": "Basic dmlld2VyOnRva2Vu"},
            {"Authorization": "Token viewer-token"},
            bearer("wrong"),
            bearer("viewer-token extra"),
        ],
        ids=["none", "empty", "scheme-only", "scheme-space", "no-scheme", "basic", "other-scheme", "wrong", "extra"],
    )
    @pytest.mark.parametrize("method, path", [("GET", "/read"), ("POST", "/write")])
    async def test_401_with_a_bearer_challenge_without_a_valid_token(
        self, client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str]
    ) -> None:
        response = await client.request(method, path, headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert "detail" in response.json()

    async def test_an_empty_table_makes_every_call_401(self) -> None:
        async with await open_client(TokenTable([])) as client:
            for method, path in [("GET", "/read"), ("POST", "/write")]:
                response = await client.request(method, path, headers=bearer("viewer-token"))
                assert response.status_code == 401

    async def test_bearer_scheme_is_case_insensitive(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/read", headers={"Authorization": "bearer viewer-token"})
        assert response.status_code == 200

    async def test_a_viewer_reads_as_itself_from_its_address(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/read", headers=bearer("viewer-token"))
        assert response.status_code == 200
        assert response.json() == {"name": "alice", "role": "viewer", "client": CLIENT_HOST}

    async def test_a_viewer_may_not_mutate(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/write", headers=bearer("viewer-token"))
        assert response.status_code == 403
        assert "operator" in response.json()["detail"]

    @pytest.mark.parametrize("token, name", [("operator-token", "ops"), ("last-token", "cron-bot")])
    async def test_an_operator_mutates_as_itself(self, client: httpx.AsyncClient, token: str, name: str) -> None:
        response = await client.post("/write", headers=bearer(token))
        assert response.status_code == 200
        assert response.json() == {"name": name, "role": "operator", "client": CLIENT_HOST}

    async def test_an_operator_may_also_read(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/read", headers=bearer("operator-token"))
        assert response.status_code == 200
