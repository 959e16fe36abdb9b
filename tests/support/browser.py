"""A real browser against a real server: Billfold under uvicorn (with its job worker) in a
thread on a free port, and Debian's Chromium driven by Playwright.

Playwright's own browser download is not available here, so it drives the system binary
(`scripts/test` installs the `chromium` package when it is missing)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from playwright.sync_api import Browser, Playwright

from support.waiting import wait_until

CHROMIUM = Path(os.environ.get("BILLFOLD_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Where a failing browser test leaves its screenshot (git-ignored).
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"


def launch_chromium(playwright: Playwright) -> Browser:
    if not CHROMIUM.exists():
        raise RuntimeError(
            f"{CHROMIUM} is missing: install Debian's chromium (scripts/test does), or point "
            "BILLFOLD_CHROMIUM at a Chromium binary"
        )
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


@contextmanager
def serve(app: FastAPI, port: int, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve `app` with uvicorn in a thread until the block ends; yields its base URL."""
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    if not wait_until(lambda: server.started or not thread.is_alive(), timeout=30):
        raise RuntimeError("uvicorn did not start")
    if not server.started:
        raise RuntimeError("uvicorn stopped while starting")
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
