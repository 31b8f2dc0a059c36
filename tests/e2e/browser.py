"""A real Chromium for the web console's tests, driven by Playwright.

Debian's ``chromium`` package (Playwright's own browser download cannot be reached
everywhere): ``$MAINTD_CHROMIUM``, else ``chromium`` on the path. Without one the
tests skip, saying so, unless ``MAINTD_REQUIRE_BROWSER=1`` (CI sets it), which makes
a missing browser a failure. One browser for the module of browser tests; a fresh
context (cookies, time zone) per test.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REQUIRE_ENV = "MAINTD_REQUIRE_BROWSER"
CHROMIUM_ENV = "MAINTD_CHROMIUM"
SCREENSHOTS_ENV = "MAINTD_SCREENSHOT_DIR"
WIDTHS = {"wide": 1280, "narrow": 390}
# A zone other than the machine's (UTC): the console must show the browser's times.
BROWSER_ZONE = "Europe/Berlin"


def chromium_path() -> str | None:
    return os.environ.get(CHROMIUM_ENV) or shutil.which("chromium") or shutil.which("chromium-browser")


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason}, and {REQUIRE_ENV}=1 requires the browser tests to run")
    pytest.skip(reason)


# Per module, not per session: while it is open, Playwright's loop runs in the test thread,
# where other modules' tests call asyncio.run (tests/blocking.py is what these tests use).
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = chromium_path()
    if path is None:
        _unavailable("no Chromium found (apt-get install chromium, or set $MAINTD_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install '.[test]')")
    with sync_playwright() as playwright:
        # The sandbox refuses to run as root (CI's containers).
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        chromium = playwright.chromium.launch(executable_path=path, args=args)
        yield chromium
        chromium.close()


@pytest.fixture
def new_page(browser: Any) -> Iterator[Any]:
    """Open a page in a context of its own: ``new_page(width=1280)``."""
    contexts: list[Any] = []

    def open_page(width: int = WIDTHS["wide"]) -> Any:
        context = browser.new_context(viewport={"width": width, "height": 900}, timezone_id=BROWSER_ZONE)
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tests save what each page looked like: ``$MAINTD_SCREENSHOT_DIR``, else a session tmp dir."""
    configured = os.environ.get(SCREENSHOTS_ENV)
    path = Path(configured) if configured else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def sign_in(page: Any, url: str, token: str) -> None:
    page.goto(f"{url}/ui/")
    page.get_by_label("Admin token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Jobs").wait_for()
