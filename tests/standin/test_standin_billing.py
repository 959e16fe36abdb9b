"""Stripe's behaviour the stand-in must match for Billfold's subscriptions: prices, plan
changes with prorations, cancel and resume, card brands, PaymentIntent events. Marked
`stripe_facing`: with STRIPE_TEST_SECRET_KEY set, the same tests also run against Stripe's
test mode. The stand-in's clock (`advance`) has no Stripe twin, so its tests are stand-in
only."""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

import httpx
import pytest
import stripe
from conftest import STRIPE_KEY

from billfold.standin import LocalStripe


def _plain(obj: stripe.StripeObject) -> dict[str, Any]:
    plain: dict[str, Any] = json.loads(json.dumps(obj.to_dict(for_json=True)))
    return plain


def _price(api: stripe.StripeClient, amount: int, interval: str = "month") -> str:
    return api.v1.prices.create(
        params={
            "unit_amount": amount,
            "currency": "usd",
            "recurring": {"interval": interval},
            "product_data": {"name": f"Plan {amount}"},
        }
    ).id


def _subscribed(api: stripe.StripeClient, price: str, method: str = "pm_card_visa") -> Any:
    customer = api.v1.customers.create(params={"email": f"{uuid.uuid4().hex[:8]}@example.com"})
    pm = api.v1.payment_methods.attach(method, params={"customer": customer.id})
    return api.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": price}],
            "default_payment_method": pm.id,
            "metadata": {"customer_id": "cust_ours"},
        }
    )


@pytest.mark.stripe_facing
def test_a_price_shows_its_amount_currency_interval_and_product(
    stripe_facing: stripe.StripeClient,
) -> None:
    price = _plain(stripe_facing.v1.prices.retrieve(_price(stripe_facing, 1200, "year")))
    assert (price["object"], price["unit_amount"], price["currency"]) == ("price", 1200, "usd")
    assert price["recurring"]["interval"] == "year"
    assert price["type"] == "recurring"
    assert price["product"]


@pytest.mark.stripe_facing
def test_a_new_subscription_is_active_with_its_first_invoice_paid_and_a_month_long_period(
    stripe_facing: stripe.StripeClient,
) -> None:
    sub = _plain(_subscribed(stripe_facing, _price(stripe_facing, 900)))
    assert sub["status"] == "active"
    item = sub["items"]["data"][0]
    start = item.get("current_period_start") or sub["current_period_start"]
    end = item.get("current_period_end") or sub["current_period_end"]
    assert 28 * 86400 <= end - start <= 31 * 86400
    invoice = stripe_facing.v1.invoices.retrieve(str(sub["latest_invoice"]))
    assert (invoice.status, invoice.amount_paid) == ("paid", 900)


@pytest.mark.stripe_facing
def test_changing_the_price_keeps_the_item_and_prorates_unless_told_not_to(
    stripe_facing: stripe.StripeClient,
) -> None:
    cheap, dear = _price(stripe_facing, 900), _price(stripe_facing, 2900)
    sub = _subscribed(stripe_facing, cheap)
    item = sub["items"].data[0].id
    changed = _plain(
        stripe_facing.v1.subscriptions.update(
            sub.id,
            params={
                "items": [{"id": item, "price": dear}],
                "proration_behavior": "create_prorations",
                "metadata": {"plan": "professional"},
            },
        )
    )
    assert (changed["items"]["data"][0]["id"], changed["items"]["data"][0]["price"]["id"]) == (
        item,
        dear,
    )
    assert changed["metadata"] == {"customer_id": "cust_ours", "plan": "professional"}
    pending = stripe_facing.v1.invoice_items.list(params={"customer": str(sub.customer)}).data
    amounts = sorted(i.amount for i in pending)
    assert len(amounts) == 2
    assert -900 <= amounts[0] < 0 < amounts[1] <= 2900
    assert all(i.proration for i in pending)
    # Lines name the product, as Stripe's do ("Unused time on Pro after 30 Nov 2026").
    described = sorted(str(i.description) for i in pending)
    after = r"after \d\d [A-Z][a-z]{2} \d{4}"
    assert re.fullmatch(rf"Remaining time on Plan 2900 {after}", described[0]), described
    assert re.fullmatch(rf"Unused time on Plan 900 {after}", described[1]), described

    other = _subscribed(stripe_facing, cheap)
    stripe_facing.v1.subscriptions.update(
        other.id,
        params={
            "items": [{"id": other["items"].data[0].id, "price": dear}],
            "proration_behavior": "none",
        },
    )
    assert stripe_facing.v1.invoice_items.list(params={"customer": str(other.customer)}).data == []


@pytest.mark.stripe_facing
def test_cancel_at_period_end_can_be_resumed_and_cancel_now_records_when(
    stripe_facing: stripe.StripeClient,
) -> None:
    sub = _subscribed(stripe_facing, _price(stripe_facing, 900))
    ending = _plain(
        stripe_facing.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": True})
    )
    assert (ending["status"], ending["cancel_at_period_end"]) == ("active", True)
    assert ending["cancel_at"] is not None
    resumed = _plain(
        stripe_facing.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": False})
    )
    assert (resumed["cancel_at_period_end"], resumed["cancel_at"]) == (False, None)
    before = int(time.time())
    canceled = _plain(stripe_facing.v1.subscriptions.cancel(sub.id))
    assert canceled["status"] == "canceled"
    assert canceled["canceled_at"] >= before - 5
    assert canceled["ended_at"] >= before - 5


@pytest.mark.stripe_facing
@pytest.mark.parametrize(
    ("method", "brand", "last4"),
    [
        ("pm_card_visa", "visa", "4242"),
        ("pm_card_mastercard", "mastercard", "4444"),
        ("pm_card_amex", "amex", "0005"),
        ("pm_card_discover", "discover", "1117"),
    ],
)
def test_a_card_reports_its_brand(
    method: str, brand: str, last4: str, stripe_facing: stripe.StripeClient
) -> None:
    customer = stripe_facing.v1.customers.create(params={"email": "brand@example.com"})
    attached = _plain(
        stripe_facing.v1.payment_methods.attach(method, params={"customer": customer.id})
    )
    assert (attached["card"]["brand"], attached["card"]["last4"]) == (brand, last4)


@pytest.mark.stripe_facing
def test_a_canceled_payment_intent_says_why_and_one_set_up_for_later_saves_its_card(
    stripe_facing: stripe.StripeClient,
) -> None:
    customer = stripe_facing.v1.customers.create(params={"email": "pi@example.com"})
    since = int(time.time()) - 1
    intent = stripe_facing.v1.payment_intents.create(
        params={"amount": 500, "currency": "usd", "customer": customer.id}
    )
    canceled = stripe_facing.v1.payment_intents.cancel(
        intent.id, params={"cancellation_reason": "abandoned"}
    )
    assert (canceled.status, canceled.cancellation_reason) == ("canceled", "abandoned")
    kinds = [
        e.type
        for e in stripe_facing.v1.events.list(
            params={"type": "payment_intent.canceled", "created": {"gte": since}, "limit": 100}
        ).data
        if _plain(e)["data"]["object"]["id"] == intent.id
    ]
    assert kinds == ["payment_intent.canceled"]

    saved = stripe_facing.v1.payment_intents.create(
        params={
            "amount": 700,
            "currency": "usd",
            "customer": customer.id,
            "payment_method": "pm_card_mastercard",
            "setup_future_usage": "off_session",
            "confirm": True,
        }
    )
    assert saved.status == "succeeded"
    [card] = stripe_facing.v1.payment_methods.list(
        params={"customer": customer.id, "type": "card"}
    ).data
    assert card.id == saved.payment_method


def _advance(standin: LocalStripe, subscription_id: str) -> httpx.Response:
    return httpx.post(
        f"{standin.url}/v1/test_helpers/subscriptions/{subscription_id}/advance",
        headers={"Authorization": f"Bearer {STRIPE_KEY}"},
    )


def test_advancing_a_trial_ends_it_and_charges_the_first_period(
    localstripe: LocalStripe, stripe_api: stripe.StripeClient
) -> None:
    customer = stripe_api.v1.customers.create(params={"email": "clock@example.com"})
    pm = stripe_api.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    sub = _plain(
        stripe_api.v1.subscriptions.create(
            params={
                "customer": customer.id,
                "items": [{"price": _price(stripe_api, 900)}],
                "trial_period_days": 14,
                "default_payment_method": pm.id,
            }
        )
    )
    assert (sub["status"], sub["latest_invoice"]) == ("trialing", None)
    moved = _advance(localstripe, sub["id"])
    assert moved.status_code == 200, moved.text
    renewed = moved.json()
    assert renewed["status"] == "active"
    assert renewed["current_period_start"] == sub["trial_end"]
    invoice = stripe_api.v1.invoices.retrieve(renewed["latest_invoice"])
    assert (invoice.status, invoice.amount_paid, invoice.billing_reason) == (
        "paid",
        900,
        "subscription_cycle",
    )


def test_advancing_needs_a_secret_key_and_a_live_subscription(
    localstripe: LocalStripe, stripe_api: stripe.StripeClient
) -> None:
    sub = _subscribed(stripe_api, _price(stripe_api, 900))
    anonymous = httpx.post(f"{localstripe.url}/v1/test_helpers/subscriptions/{sub.id}/advance")
    assert anonymous.status_code == 401
    stripe_api.v1.subscriptions.cancel(sub.id)
    ended = _advance(localstripe, sub.id)
    assert ended.status_code == 400
    assert "canceled" in ended.json()["error"]["message"]
    assert _advance(localstripe, "sub_unknown").status_code == 404
