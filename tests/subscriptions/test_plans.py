"""Plans: admins create and change them; everyone else only reads the active ones."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import stripe
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.orm import Session
from subscription_steps import STARTER_FEATURES, ensure_price, sign_up
from support.netfault import FaultyLink
from support.transactions import transaction_open

from billfold.services import Services
from billfold.subscriptions.models import Plan

STARTER = {
    "code": "starter",
    "name": "Starter",
    "stripePriceId": "price_plans_starter",
    "interval": "month",
    "features": STARTER_FEATURES,
}


@pytest.fixture(autouse=True)
def stripe_prices(stripe_api: stripe.StripeClient) -> None:
    """The Stripe prices these plans name exist in the stand-in (plans are checked there)."""
    ensure_price(stripe_api, "price_plans_starter", 900, "month")
    ensure_price(stripe_api, "price_other", 1900, "month")


def _codes(client: TestClient, headers: dict[str, str]) -> list[str]:
    answer = client.get("/plans", headers=headers)
    assert answer.status_code == 200, answer.text
    return [p["code"] for p in answer.json()["data"]]


def test_admin_creates_a_plan_and_everyone_signed_in_reads_it(
    client: TestClient, admin: dict[str, str]
) -> None:
    made = client.post("/plans", json=STARTER, headers=admin)
    assert made.status_code == 201, made.text
    plan: dict[str, Any] = made.json()["data"]
    assert {k: plan[k] for k in ("code", "stripePriceId", "interval", "features", "active")} == {
        "code": "starter",
        "stripePriceId": "price_plans_starter",
        "interval": "month",
        "features": STARTER_FEATURES,
        "active": True,
    }
    assert _codes(client, sign_up(client).headers) == ["starter"]


def test_a_user_can_neither_create_nor_change_a_plan(
    client: TestClient, admin: dict[str, str]
) -> None:
    user = sign_up(client)
    refused = client.post("/plans", json=STARTER, headers=user.headers)
    assert refused.status_code == 403, refused.text
    assert _codes(client, admin) == []
    client.post("/plans", json=STARTER, headers=admin).raise_for_status()
    changed = client.patch("/plans/starter", json={"name": "Mine"}, headers=user.headers)
    assert changed.status_code == 403, changed.text
    assert client.get("/plans", headers=admin).json()["data"][0]["name"] == "Starter"


def test_plans_need_a_signed_in_caller(client: TestClient) -> None:
    assert client.get("/plans").status_code == 401
    assert client.post("/plans", json=STARTER).status_code == 401


def test_a_second_plan_with_the_same_code_is_refused(
    client: TestClient, admin: dict[str, str]
) -> None:
    client.post("/plans", json=STARTER, headers=admin).raise_for_status()
    again = client.post("/plans", json={**STARTER, "stripePriceId": "price_other"}, headers=admin)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "plan_exists"


def test_admin_changes_a_plan_and_a_deactivated_one_is_hidden_from_users(
    client: TestClient, admin: dict[str, str]
) -> None:
    client.post("/plans", json=STARTER, headers=admin).raise_for_status()
    changed = client.patch(
        "/plans/starter",
        json={"name": "Starter 2", "features": {"limits": {"projects": 9}}, "active": False},
        headers=admin,
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["data"]["name"], changed.json()["data"]["features"]) == (
        "Starter 2",
        {"limits": {"projects": 9}},
    )
    assert _codes(client, sign_up(client).headers) == []
    assert _codes(client, admin) == ["starter"]


def test_changing_an_unknown_plan_is_not_found(client: TestClient, admin: dict[str, str]) -> None:
    answer = client.patch("/plans/nope", json={"name": "X"}, headers=admin)
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "plan_not_found"


def test_a_plan_with_a_malformed_code_price_or_interval_is_refused(
    client: TestClient, admin: dict[str, str]
) -> None:
    for bad in (
        {"code": "Has Spaces"},
        {"stripePriceId": "price/../x"},
        {"interval": "fortnight"},
        {"trialDays": -1},
    ):
        answer = client.post("/plans", json={**STARTER, **bad}, headers=admin)
        assert answer.status_code == 422, (bad, answer.text)
    assert _codes(client, admin) == []


def test_a_stripe_price_already_on_another_plan_is_409_on_create_and_change(
    client: TestClient, admin: dict[str, str]
) -> None:
    client.post("/plans", json=STARTER, headers=admin).raise_for_status()
    other = {**STARTER, "code": "other", "stripePriceId": "price_other"}
    client.post("/plans", json=other, headers=admin).raise_for_status()

    copied = client.post("/plans", json={**STARTER, "code": "copy"}, headers=admin)
    taken = client.patch(
        "/plans/other", json={"stripePriceId": STARTER["stripePriceId"]}, headers=admin
    )
    kept = client.patch(
        "/plans/starter", json={"stripePriceId": STARTER["stripePriceId"]}, headers=admin
    )

    for refused in (copied, taken):
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "price_in_use"
    assert kept.status_code == 200, kept.text
    assert _codes(client, admin) == ["starter", "other"]


def test_a_plan_naming_a_price_stripe_does_not_have_is_422_and_not_made(
    client: TestClient, admin: dict[str, str]
) -> None:
    answer = client.post(
        "/plans", json={**STARTER, "stripePriceId": "price_nobody_made"}, headers=admin
    )
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "unknown_price"
    assert "price_nobody_made" in error["message"]
    assert _codes(client, admin) == []


def test_changing_a_plan_to_an_unknown_price_is_422_and_keeps_the_old_one(
    client: TestClient, admin: dict[str, str]
) -> None:
    client.post("/plans", json=STARTER, headers=admin).raise_for_status()
    answer = client.patch("/plans/starter", json={"stripePriceId": "price_gone"}, headers=admin)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "unknown_price"
    kept = client.get("/plans", headers=admin).json()["data"][0]
    assert kept["stripePriceId"] == STARTER["stripePriceId"]


def test_a_price_of_another_interval_or_an_inactive_price_is_refused(
    client: TestClient, admin: dict[str, str], stripe_api: stripe.StripeClient
) -> None:
    ensure_price(stripe_api, "price_plans_yearly", 9000, "year")
    yearly = client.post(
        "/plans", json={**STARTER, "stripePriceId": "price_plans_yearly"}, headers=admin
    )
    assert yearly.status_code == 422, yearly.text
    assert yearly.json()["error"]["code"] == "price_interval_mismatch"

    product = stripe_api.v1.products.create(params={"name": "Old"})
    retired = stripe_api.v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            "unit_amount": 500,
            "recurring": {"interval": "month"},
        }
    )
    stripe_api.v1.prices.update(retired.id, params={"active": False})
    inactive = client.post("/plans", json={**STARTER, "stripePriceId": retired.id}, headers=admin)
    assert inactive.status_code == 422, inactive.text
    assert inactive.json()["error"]["code"] == "price_inactive"
    assert _codes(client, admin) == []


def test_creating_and_repricing_a_plan_asks_stripe_with_no_transaction_open(
    client: TestClient, admin: dict[str, str], services: Services, stripe_link: FaultyLink
) -> None:
    """The price check is a Stripe call between two short transactions: a transaction held
    open while Stripe answers would hold SQLite's one write lock (every other write waits)."""
    calls: list[Callable[[], httpx.Response]] = [
        lambda: client.post("/plans", json=STARTER, headers=admin),
        lambda: client.patch(
            "/plans/starter", json={"stripePriceId": "price_other"}, headers=admin
        ),
    ]
    for call in calls:
        stripe_link.hold_responses(only=b"GET /v1/prices/")
        with ThreadPoolExecutor(max_workers=1) as pool:
            answer = pool.submit(call)
            try:
                assert stripe_link.wait_for_held_response(timeout=20)
                assert not transaction_open(services)
            finally:
                stripe_link.up()
            assert answer.result(timeout=30).status_code in (200, 201), answer.result().text
    plan = client.get("/plans", headers=admin).json()["data"][0]
    assert (plan["code"], plan["stripePriceId"]) == ("starter", "price_other")


@contextmanager
def _twin_lands_before_our_write(services: Services, **twin: Any) -> Iterator[list[str]]:
    """A parallel request's plan `twin` committed after our request checked the code and the
    price, just before our request writes: the moment two racing requests meet on
    PostgreSQL (on SQLite each transaction holds the write lock, so they cannot)."""
    landed: list[str] = []

    def land_twin(session: Session, *_: object) -> None:
        ours = [o for o in (*session.new, *session.dirty) if isinstance(o, Plan)]
        if landed or not ours:
            return
        landed.append(str(twin["code"]))
        with services.db.transaction() as other:
            other.add(Plan(name="Twin", interval="month", features=STARTER_FEATURES, **twin))

    event.listen(Session, "before_flush", land_twin)
    try:
        yield landed
    finally:
        event.remove(Session, "before_flush", land_twin)


@pytest.mark.postgres_only
def test_a_plan_code_or_price_taken_by_a_racing_request_is_409_not_500(
    client: TestClient, admin: dict[str, str], services: Services
) -> None:
    with _twin_lands_before_our_write(services, code="starter") as landed:
        same_code = client.post("/plans", json=STARTER, headers=admin)
    assert landed == ["starter"]
    assert (same_code.status_code, same_code.json()["error"]["code"]) == (409, "plan_exists")

    with _twin_lands_before_our_write(services, code="twin", stripe_price_id="price_other"):
        same_price = client.post(
            "/plans",
            json={**STARTER, "code": "mine", "stripePriceId": "price_other"},
            headers=admin,
        )
    assert (same_price.status_code, same_price.json()["error"]["code"]) == (409, "price_in_use")

    with _twin_lands_before_our_write(
        services, code="twin2", stripe_price_id=STARTER["stripePriceId"]
    ):
        relinked = client.patch(
            "/plans/starter", json={"stripePriceId": STARTER["stripePriceId"]}, headers=admin
        )
    assert (relinked.status_code, relinked.json()["error"]["code"]) == (409, "price_in_use")
    assert sorted(_codes(client, admin)) == ["starter", "twin", "twin2"]
