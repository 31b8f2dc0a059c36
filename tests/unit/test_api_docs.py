"""/docs is Swagger UI from the package's own assets: the page loads nothing from another host."""

from __future__ import annotations

import re

import httpx
import pytest

from maintd.scheduler.app import create_app
from tests.configs import make_config, sql_job

pytestmark = pytest.mark.unit


def client(root_path: str = "") -> httpx.AsyncClient:
    app = create_app(make_config({"purge": sql_job()}))  # no lifespan: the docs need no engine
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, root_path=root_path), base_url="http://maintd")


def loaded_urls(page: str) -> list[str]:
    """What the page makes the browser load: its src and href attributes, and the schema's url."""
    return [a or b for a, b in re.findall(r"""(?:src|href)="([^"]*)"|url: '([^']*)'""", page)]


async def test_the_docs_page_loads_only_the_daemons_own_assets() -> None:
    async with client() as http:
        page = await http.get("/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        urls = loaded_urls(page.text)
        assert sorted(urls) == [
            "/docs/assets/favicon-32x32.png",
            "/docs/assets/swagger-ui-bundle.js",
            "/docs/assets/swagger-ui.css",
            "/openapi.json",
        ]
        assert "cdn" not in page.text and "https://" not in page.text
        bundle = await http.get("/docs/assets/swagger-ui-bundle.js")
        assert bundle.status_code == 200 and bundle.headers["content-type"].startswith("text/javascript")
        assert "SwaggerUIBundle" in bundle.text
        css = await http.get("/docs/assets/swagger-ui.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        icon = await http.get("/docs/assets/favicon-32x32.png")
        assert icon.status_code == 200 and icon.content.startswith(b"\x89PNG")
        schema = await http.get("/openapi.json")
        assert schema.status_code == 200 and "/admin/jobs" in schema.json()["paths"]
        assert not any(path.startswith("/docs") for path in schema.json()["paths"])


async def test_behind_a_prefix_every_url_carries_it() -> None:
    async with client(root_path="/maintd") as http:
        page = await http.get("/docs")
    assert sorted(loaded_urls(page.text)) == [
        "/maintd/docs/assets/favicon-32x32.png",
        "/maintd/docs/assets/swagger-ui-bundle.js",
        "/maintd/docs/assets/swagger-ui.css",
        "/maintd/openapi.json",
    ]


@pytest.mark.parametrize(
    "path", ["/redoc", "/docs/assets/LICENSE", "/docs/assets/README", "/docs/assets/..%2fapi_docs.py"]
)
async def test_no_cdn_page_and_no_other_file_is_served(path: str) -> None:
    async with client() as http:
        answer = await http.get(path)
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("application/json")
