"""Promotion codes at Checkout: with the setting on, the stand-in's Checkout page takes a
code, the coupon becomes the subscription's discount, and its invoices show what it took
off; with it off, the page has no field and a code is refused."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
import stripe
from fastapi.testclient import TestClient
from subscription_steps import (
    ON_FIRST_PAYMENT,
    Member,
    advance,
    checkout,
    checkout_session,
    me,
    page_alert,
    pay_on_page,
    seed_plans,
    sign_up,
    sync,
)
from support.stripe_events import EventRelay

from billfold.jobs.worker import Worker
from billfold.services import Services
from billfold.standin import LocalStripe

WITH_CODES = {**ON_FIRST_PAYMENT, "checkout_allow_promotion_codes": True}


@pytest.fixture
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    return dict(getattr(request, "param", WITH_CODES))


@pytest.fixture
def member(client: TestClient, admin: dict[str, str], stripe_api: stripe.StripeClient) -> Member:
    seed_plans(client, admin, stripe_api)
    return sign_up(client)


def _promotion_code(stripe_api: stripe.StripeClient, prefix: str, **coupon: Any) -> tuple[str, str]:
    """(its ID, its code): a code is unique in a Stripe account, and the stand-in serves the
    whole run, so each test's code gets a suffix of its own."""
    made = stripe_api.v1.coupons.create(params=coupon)  # type: ignore[arg-type]
    code = f"{prefix}{uuid.uuid4().hex[:6].upper()}"
    promo = stripe_api.v1.promotion_codes.create(
        params={"promotion": {"type": "coupon", "coupon": made.id}, "code": code}
    )
    return str(promo.id), code


def test_a_promotion_code_at_checkout_discounts_the_subscription_and_its_invoices(
    client: TestClient,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    localstripe: LocalStripe,
    member: Member,
) -> None:
    promo, code = _promotion_code(stripe_api, "LAUNCH25", percent_off=25, duration="forever")
    url = checkout(client, member)["checkout_url"]
    session = checkout_session(stripe_api, url)
    assert session["allow_promotion_codes"] is True
    assert "Promotion code" in httpx.get(url).text

    wrong = pay_on_page(url, promotion_code="NOPE")
    assert (wrong.status_code, page_alert(wrong)) == (402, "This code is invalid.")
    paid = pay_on_page(url, promotion_code=code.lower())  # codes are case-insensitive
    assert paid.status_code == 303, paid.text
    sync(client, worker, stripe_events)
    now = me(client, member)
    assert now["status"] == "active"
    assert now["discount"]["percentOff"] == 25
    assert (now["discount"]["duration"], now["discount"]["promotionCode"]) == ("forever", promo)

    subscription_id = checkout_session(stripe_api, url)["subscription"]
    advance(localstripe.url, subscription_id)
    sync(client, worker, stripe_events)
    invoices = client.get("/invoices", headers=member.headers).json()["data"]
    assert [(i["total"], i["amountPaid"], i["discountAmount"]) for i in invoices] == [
        (675, 675, 225),
        (675, 675, 225),
    ]


def test_a_once_coupon_takes_its_amount_off_the_first_invoice_only(
    client: TestClient,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    localstripe: LocalStripe,
    member: Member,
) -> None:
    _, code = _promotion_code(
        stripe_api, "WELCOME", amount_off=500, currency="usd", duration="once"
    )
    url = checkout(client, member)["checkout_url"]
    assert pay_on_page(url, promotion_code=code).status_code == 303
    sync(client, worker, stripe_events)
    advance(localstripe.url, checkout_session(stripe_api, url)["subscription"])
    sync(client, worker, stripe_events)
    invoices = client.get("/invoices", headers=member.headers).json()["data"]
    assert [(i["amountPaid"], i["discountAmount"]) for i in invoices] == [(900, 0), (400, 500)]


@pytest.mark.parametrize("settings_overrides", [ON_FIRST_PAYMENT], indirect=True)
def test_without_the_setting_checkout_has_no_code_field_and_refuses_a_code(
    client: TestClient,
    stripe_api: stripe.StripeClient,
    member: Member,
) -> None:
    _, code = _promotion_code(stripe_api, "SPRING", percent_off=10, duration="forever")
    url = checkout(client, member)["checkout_url"]
    assert not checkout_session(stripe_api, url)["allow_promotion_codes"]
    refused = pay_on_page(url, promotion_code=code)
    assert (refused.status_code, page_alert(refused)) == (
        402,
        "Promotion codes are not accepted here.",
    )
    assert checkout_session(stripe_api, url)["status"] == "open"
    assert me(client, member)["discount"] is None
