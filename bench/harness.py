"""What every benchmark shares: real parts (localstripe, SQLite or a throwaway PostgreSQL,
uvicorn over HTTP) and how figures are printed."""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.postgres import ThrowawayPostgres

from billfold.app import create_app
from billfold.config import Settings
from billfold.kit.signing_keys import new_private_key_text
from billfold.standin import free_port

BENCH_LICENSE_KEY = new_private_key_text()


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


@contextmanager
def database(kind: str) -> Iterator[str]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/bench.db"
        return
    with ThrowawayPostgres.start() as pg:
        yield pg.create_database("bench")


# One client address signs hundreds up: the limiter still counts every call (its cost is in
# the figures), but never refuses one.
_NO_REFUSALS = {"rate_limit_signup": "1000000/minute", "rate_limit_login": "1000000/minute"}


def settings_for(url: str, stripe_base: str, **overrides: Any) -> Settings:
    return Settings(
        _env_file=None,
        database_url=url,
        stripe_api_base=stripe_base,
        stripe_secret_key="sk_test_bench",
        stripe_webhook_secret="whsec_bench",
        jwt_secret="bench-secret-" + "x" * 32,
        license_private_key=BENCH_LICENSE_KEY,
        **(_NO_REFUSALS | overrides),
    )


@contextmanager
def served(settings: Settings) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def report(label: str, samples: list[float]) -> None:
    ms = [s * 1000 for s in samples]
    print(
        f"  {label:<44} n={len(ms):<5} p50={percentile(ms, 50):7.1f} ms  "
        f"p99={percentile(ms, 99):7.1f} ms  mean={statistics.fmean(ms):7.1f} ms"
    )
