"""A real `python -m billfold serve` process, for tests that kill the server mid-request."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from billfold.config import Settings
from billfold.standin import free_port
from support.waiting import wait_until

# Generous: on a busy machine importing Billfold alone can take many seconds.
START_TIMEOUT_SECONDS = 120


def start_server_process(
    settings: Settings, stripe_url: str, stripe_key: str, workdir: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """A server without a job worker, with the test's settings and database, reaching Stripe
    at `stripe_url` (the FaultyLink); answers the process and its base URL once it is up."""
    port = free_port()
    assert settings.jwt_secret is not None
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "STRIPE_API_BASE": stripe_url,
        "STRIPE_SECRET_KEY": stripe_key,
        "STRIPE_PUBLISHABLE_KEY": settings.stripe_publishable_key or "pk_test",
        "JWT_SECRET": settings.jwt_secret.get_secret_value(),
        "STRIPE_TIMEOUT_SECONDS": str(settings.stripe_timeout_seconds),
        "STRIPE_INLINE_TIMEOUT_SECONDS": str(settings.stripe_inline_timeout_seconds),
        "STRIPE_MAX_NETWORK_RETRIES": "0",
        "CUSTOMER_LINK_LEASE_SECONDS": str(settings.customer_link_lease_seconds),
        "MAIL_OUTBOX_DIR": str(workdir / "mail"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "billfold", "serve", "--no-worker", "--port", str(port)],
        env=env,
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode}")
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    if not wait_until(up, START_TIMEOUT_SECONDS, interval=0.1):
        process.kill()
        raise RuntimeError(f"the server did not answer within {START_TIMEOUT_SECONDS} s")
    return process, url
