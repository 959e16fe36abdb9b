"""A person waits on every route: while Stripe hangs, a route that calls it answers 503
`stripe_unavailable` after the inline timeout, never after the jobs' long timeout and retries."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import stripe
from fastapi.testclient import TestClient
from support.netfault import FaultyLink
from support.payments import card, make_product

INLINE, JOBS = 1.0, 30.0


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # The jobs' timeout (with retries) would keep a caller waiting for minutes.
    return {
        "stripe_inline_timeout_seconds": INLINE,
        "stripe_timeout_seconds": JOBS,
        "stripe_max_network_retries": 2,
        "customer_link_lease_seconds": JOBS * 2,
    }


def test_routes_answer_503_within_the_inline_timeout_while_stripe_hangs(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    stripe_api: stripe.StripeClient,
    stripe_link: FaultyLink,
) -> None:
    headers = buyer["headers"]
    product = make_product(client, admin)
    pm = card(stripe_api)
    calls: dict[str, Callable[[], httpx.Response]] = {
        "list cards": lambda: client.get("/payments/customer/payment-methods", headers=headers),
        "attach a card": lambda: client.post(
            "/payments/customer/payment-methods", json={"paymentMethodId": pm}, headers=headers
        ),
        "setup intent": lambda: client.post("/payments/customer/setup-intent", headers=headers),
        "create intent": lambda: client.post(
            "/payments/create-intent",
            json={"productId": product["id"], "quantity": 1},
            headers=headers,
        ),
    }
    stripe_link.hold_responses()
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            for label, call in calls.items():
                started = time.monotonic()
                answer = pool.submit(call).result(timeout=JOBS)
                waited = time.monotonic() - started

                assert answer.status_code == 503, (label, answer.text)
                assert answer.json()["error"]["code"] == "stripe_unavailable", label
                assert waited < INLINE * 4 + 3, (label, waited)
    finally:
        stripe_link.up()
