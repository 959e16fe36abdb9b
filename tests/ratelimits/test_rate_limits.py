"""Rate limits: tight on login and sign-up, generous (leased) on consume, counted in the
database so that they hold across server processes; 429 with Retry-After and RateLimit-*."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import STRIPE_KEY
from factories import admin_token, auth, register, unique_email
from fastapi.testclient import TestClient
from limits import parse
from limits.strategies import FixedWindowRateLimiter
from sqlalchemy import select
from support.waiting import wait_until

from billfold.config import Settings
from billfold.ratelimits.limiter import Limiter, Rule
from billfold.ratelimits.models import RateLimitCounter
from billfold.ratelimits.storage import DatabaseStorage
from billfold.services import Services
from billfold.standin import free_port

# The shipped defaults (conftest raises them for the other tests).
DEFAULTS = {
    "rate_limit_login": "10/minute;100/hour",
    "rate_limit_signup": "5/minute;30/hour",
    "rate_limit_account_mail": "5/minute;30/hour",
}


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return dict(DEFAULTS)


def _wrong_login(client: Any, email: str) -> Any:
    return client.post("/auth/login", json={"email": email, "password": "wrong password 1"})


def _assert_refused(response: Any) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "rate_limited"
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert response.headers["ratelimit-remaining"] == "0"
    assert response.headers["ratelimit-limit"] == "10"
    assert 0 <= int(response.headers["ratelimit-reset"]) <= 60


def test_25_wrong_passwords_in_a_row_end_in_429_with_retry_after(client: TestClient) -> None:
    email = register(client)["user"]["email"]

    answers = [_wrong_login(client, email) for _ in range(25)]

    statuses = [a.status_code for a in answers]
    assert statuses[:10] == [401] * 10
    assert statuses[10:] == [429] * 15
    for refused in answers[10:]:
        _assert_refused(refused)
    assert answers[0].headers["ratelimit-remaining"] == "9"
    # The right password is refused too until the window ends: guessing gains nothing.
    right = client.post("/auth/login", json={"email": email, "password": "correct horse 1"})
    assert right.status_code == 429


def test_login_limit_per_account_holds_across_client_addresses(
    client: TestClient, services: Services
) -> None:
    email = register(client)["user"]["email"]
    app = client.app
    answers = []
    for i in range(12):
        # A distributed guesser: every try from another address (the app is running already).
        elsewhere = TestClient(app, client=(f"10.0.0.{i + 1}", 5000))
        answers.append(_wrong_login(elsewhere, email))
    assert [a.status_code for a in answers] == [401] * 10 + [429] * 2
    # Another account is not affected.
    other = register(client)["user"]["email"]
    assert _wrong_login(client, other).status_code == 401


def test_sign_up_is_limited_per_address(client: TestClient) -> None:
    body = {"name": "Ada", "password": "correct horse 1"}
    answers = [client.post("/users", json={**body, "email": unique_email()}) for _ in range(7)]
    assert [a.status_code for a in answers] == [201] * 5 + [429] * 2
    assert int(answers[-1].headers["retry-after"]) >= 1
    assert answers[0].headers["ratelimit-limit"] == "5"


@pytest.mark.parametrize("settings_overrides", [{"rate_limit_consume": "200/minute"}])
def test_consume_limit_is_leased_yet_exact_in_one_process(
    client: TestClient, services: Services
) -> None:
    admin = auth(admin_token(client, services))
    key = client.post("/api-keys", json={"name": "backend"}, headers=admin).json()["data"]["key"]
    customer = register(client)["user"]["customerId"]
    body = {"customerId": customer, "amount": 1, "reason": "render"}

    statuses = [
        client.post(
            "/credits/consume", json={**body, "idempotencyKey": f"k{i}"}, headers=auth(key)
        ).status_code
        for i in range(205)
    ]

    # 402: no credits, yet counted; the limit (not the wallet) refuses the rest.
    assert statuses == [402] * 200 + [429] * 5
    with services.db.transaction() as session:
        hits = list(session.scalars(select(RateLimitCounter.hits)))
    # Leased in blocks of two: far fewer round trips than requests, none past the limit.
    assert hits
    assert max(hits) <= 210


def test_the_counter_table_holds_no_address_email_or_token(
    client: TestClient, services: Services
) -> None:
    data = register(client)
    _wrong_login(client, data["user"]["email"])
    client.patch(
        f"/users/{data['user']['id']}", json={"name": "X"}, headers=auth(data["access_token"])
    )
    with services.db.transaction() as session:
        keys = list(session.scalars(select(RateLimitCounter.key)))
    assert keys
    text = " ".join(keys)
    for secret in (data["user"]["email"], "testclient", data["access_token"][:20]):
        assert secret not in text


def test_database_storage_runs_the_limits_librarys_own_strategy(services: Services) -> None:
    storage = DatabaseStorage(services.db)
    strategy = FixedWindowRateLimiter(storage)
    item = parse("3/minute")

    assert [strategy.hit(item, "who") for _ in range(4)] == [True, True, True, False]
    assert strategy.test(item, "someone else")
    stats = strategy.get_window_stats(item, "who")
    assert stats.remaining == 0
    assert time.time() < stats.reset_time <= time.time() + 60
    storage.clear(item.key_for("who"))
    assert strategy.hit(item, "who")


def test_a_new_window_starts_once_the_old_one_ends(services: Services) -> None:
    storage = DatabaseStorage(services.db)
    assert storage.hit("k", 0.3)[0] == 1
    assert storage.hit("k", 0.3)[0] == 2
    assert wait_until(lambda: storage.get("k") == 0, timeout=2)
    assert storage.hit("k", 0.3)[0] == 1


def test_leased_rule_never_grants_past_the_limit_across_limiters(services: Services) -> None:
    # Two limiters on one database stand in for two processes, each leasing blocks of 5.
    rule = Rule("consume", (parse("50/minute"),), lease=5)
    first = Limiter(DatabaseStorage(services.db), "secret")
    second = Limiter(DatabaseStorage(services.db), "secret")
    granted = 0
    for i in range(100):
        limiter = first if i % 3 else second
        decision = limiter.hit_from_memory(rule, "credential", "bf_sk_x") or limiter.hit(
            rule, "credential", "bf_sk_x"
        )
        granted += decision.allowed
    assert 45 <= granted <= 50


# -- several server processes --------------------------------------------------------------


@contextmanager
def _server_process(settings: Settings, workdir: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "STRIPE_API_BASE": settings.stripe_api_base or "",
        "STRIPE_SECRET_KEY": STRIPE_KEY,
        "JWT_SECRET": "test-jwt-secret-" + "x" * 32,
        "RATE_LIMIT_LOGIN": DEFAULTS["rate_limit_login"],
        "STRIPE_MAX_NETWORK_RETRIES": "0",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "billfold", "serve", "--no-worker", "--port", str(port)],
        env=env,
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            try:
                return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_until(up, timeout=30), "the server process did not start"
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_login_limits_hold_across_two_server_processes(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    email = register(client)["user"]["email"]
    with (
        _server_process(settings, tmp_path) as first,
        _server_process(settings, tmp_path) as second,
    ):
        statuses = [
            httpx.post(
                f"{url}/auth/login",
                json={"email": email, "password": "wrong password 1"},
                timeout=30,
            ).status_code
            for url in [first, second] * 7
        ]
    # Ten tries in all, whichever process answers; each alone has seen only seven.
    assert statuses == [401] * 10 + [429] * 4
