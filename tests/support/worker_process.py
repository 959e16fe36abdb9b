"""A real `python -m billfold worker` process, for tests that kill a worker mid-way."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from billfold.config import Settings


def start_worker_process(
    settings: Settings,
    stripe_url: str,
    stripe_key: str,
    workdir: Path,
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """A worker with the test's settings, reaching Stripe at `stripe_url` (the FaultyLink)."""
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "STRIPE_API_BASE": stripe_url,
        "STRIPE_SECRET_KEY": stripe_key,
        "STRIPE_TIMEOUT_SECONDS": str(settings.stripe_timeout_seconds),
        "STRIPE_MAX_NETWORK_RETRIES": "0",
        "CUSTOMER_LINK_LEASE_SECONDS": str(settings.customer_link_lease_seconds),
        "JOB_LEASE_SECONDS": str(settings.job_lease_seconds),
        "JOB_POLL_SECONDS": "0.05",
        "PAYMENT_JANITOR_LEASE_SECONDS": str(settings.payment_janitor_lease_seconds),
        "PAYMENT_JANITOR_INTERVAL_SECONDS": str(settings.payment_janitor_interval_seconds),
        "DATABASE_TRANSACTION_POOLER": str(settings.database_transaction_pooler).lower(),
        **({"JOB_LISTEN_URL": settings.job_listen_url} if settings.job_listen_url else {}),
        **(extra_env or {}),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "billfold", "worker"],
        env=env,
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def output(process: subprocess.Popen[bytes]) -> str:
    """What a finished worker printed (for an assertion message)."""
    if process.poll() is None:
        return "worker still running"
    assert process.stdout is not None
    return process.stdout.read().decode(errors="replace")
