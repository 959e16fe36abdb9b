"""Page tests: cookies are not Secure (the test server speaks plain http); browser tests get
a live Billfold, Chromium, and a screenshot of the page when they fail."""

from __future__ import annotations

import re
from collections.abc import Generator, Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright
from support.browser import SCREENSHOTS, launch_chromium, serve

from billfold.app import create_app
from billfold.services import Services
from billfold.standin.launcher import free_port

# The machine is shared: give a page up to 15 s to show what a test expects.
expect.set_options(timeout=15_000)


@pytest.fixture
def server_port() -> int:
    return free_port()


@pytest.fixture
def settings_overrides(server_port: int) -> dict[str, Any]:
    return {"pages_secure_cookies": False, "backend_url": f"http://127.0.0.1:{server_port}"}


@pytest.fixture
def live_server(services: Services, server_port: int) -> Iterator[str]:
    """Billfold under uvicorn, with its in-process job worker, on SQLite or PostgreSQL."""
    with serve(create_app(services=services, run_worker=True), server_port) as url:
        yield url


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    launched = launch_chromium(playwright)
    yield launched
    launched.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def page(browser: Browser, live_server: str, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser context (cookies of its own) at the live server, phone-or-desktop
    agnostic; on failure its screenshot goes to test-artifacts/screenshots/."""
    context = browser.new_context(base_url=live_server, viewport={"width": 1100, "height": 900})
    context.set_default_timeout(15_000)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    opened.on(
        "console",
        lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    yield opened
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^\w.-]+", "_", request.node.nodeid)[-150:]
        opened.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    context.close()
    assert not errors, f"the page reported errors: {errors}"
