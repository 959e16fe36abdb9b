"""Stripe's subscription schedules as the stand-in runs them for a change at period end:
made `from_subscription`, phases replaced, released or canceled, and the subscription moved
to the next phase's price when the clock passes the phase's end. The creation, update and
release tests are `stripe_facing`; those that move the clock (`advance`) are stand-in only."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
import stripe
from conftest import STRIPE_KEY

from billfold.standin import LocalStripe


def _price(api: stripe.StripeClient, amount: int) -> str:
    return api.v1.prices.create(
        params={
            "unit_amount": amount,
            "currency": "usd",
            "recurring": {"interval": "month"},
            "product_data": {"name": f"Plan {amount}"},
        }
    ).id


def _subscribed(api: stripe.StripeClient, price: str) -> Any:
    customer = api.v1.customers.create(params={"email": "schedules@example.com"})
    pm = api.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    return api.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": price}],
            "default_payment_method": pm.id,
        }
    )


def _plain(obj: Any) -> dict[str, Any]:
    plain: dict[str, Any] = json.loads(json.dumps(obj.to_dict(for_json=True)))
    return plain


def _advance(standin: LocalStripe, subscription_id: str) -> dict[str, Any]:
    moved = httpx.post(
        f"{standin.url}/v1/test_helpers/subscriptions/{subscription_id}/advance",
        headers={"Authorization": f"Bearer {STRIPE_KEY}"},
    )
    assert moved.status_code == 200, moved.text
    answer: dict[str, Any] = moved.json()
    return answer


def _downgrade_at_period_end(
    api: stripe.StripeClient, sub: Any, current: str, cheaper: str
) -> dict[str, Any]:
    schedule = _plain(api.v1.subscription_schedules.create(params={"from_subscription": sub.id}))
    phase = schedule["phases"][0]
    card = phase["default_payment_method"]  # a phase without it takes it off the subscription
    return _plain(
        api.v1.subscription_schedules.update(
            schedule["id"],
            params={
                "phases": [
                    {
                        "items": [{"price": current, "quantity": 1}],
                        "start_date": phase["start_date"],
                        "end_date": phase["end_date"],
                        "default_payment_method": card,
                    },
                    {
                        "items": [{"price": cheaper, "quantity": 1}],
                        "default_payment_method": card,
                        "duration": {"interval": "month"},
                        "metadata": {"plan": "starter"},
                    },
                ],
                "end_behavior": "release",
            },
        )
    )


def _events_about(api: stripe.StripeClient, kind: str, object_id: str, since: int) -> int:
    return sum(
        1
        for e in api.v1.events.list(
            params={"type": kind, "created": {"gte": since}, "limit": 100}
        ).data
        if _plain(e)["data"]["object"]["id"] == object_id
    )


@pytest.mark.stripe_facing
def test_a_schedule_from_a_subscription_has_one_phase_the_current_period(
    stripe_facing: stripe.StripeClient,
) -> None:
    price = _price(stripe_facing, 2900)
    sub = _plain(_subscribed(stripe_facing, price))
    assert sub["schedule"] is None  # shown, null, on a subscription without one
    schedule = _plain(
        stripe_facing.v1.subscription_schedules.create(params={"from_subscription": sub["id"]})
    )
    assert (schedule["object"], schedule["status"]) == ("subscription_schedule", "active")
    assert (schedule["subscription"], schedule["end_behavior"]) == (sub["id"], "release")
    [phase] = schedule["phases"]
    item = sub["items"]["data"][0]
    assert phase["start_date"] == (item.get("current_period_start") or sub["current_period_start"])
    assert phase["end_date"] == (item.get("current_period_end") or sub["current_period_end"])
    assert phase["items"][0]["price"] == price
    assert schedule["current_phase"] == {
        "start_date": phase["start_date"],
        "end_date": phase["end_date"],
    }
    assert stripe_facing.v1.subscriptions.retrieve(sub["id"]).schedule == schedule["id"]

    with pytest.raises(stripe.InvalidRequestError, match="already attached to a schedule"):
        stripe_facing.v1.subscription_schedules.create(params={"from_subscription": sub["id"]})


@pytest.mark.stripe_facing
def test_a_next_phase_changes_nothing_now_and_release_leaves_the_subscription_as_it_is(
    stripe_facing: stripe.StripeClient,
) -> None:
    dear, cheap = _price(stripe_facing, 2900), _price(stripe_facing, 900)
    sub = _subscribed(stripe_facing, dear)
    schedule = _downgrade_at_period_end(stripe_facing, sub, dear, cheap)
    first, second = schedule["phases"]
    assert second["start_date"] == first["end_date"]
    assert second["items"][0]["price"] == cheap
    now = stripe_facing.v1.subscriptions.retrieve(sub.id)
    assert now["items"].data[0].price.id == dear
    assert stripe_facing.v1.invoice_items.list(params={"customer": str(sub.customer)}).data == []

    released = _plain(stripe_facing.v1.subscription_schedules.release(schedule["id"]))
    assert (released["status"], released["released_subscription"]) == ("released", sub.id)
    assert released["released_at"] is not None
    after = stripe_facing.v1.subscriptions.retrieve(sub.id)
    assert (after.schedule, after["items"].data[0].price.id) == (None, dear)
    with pytest.raises(stripe.InvalidRequestError, match="released"):
        stripe_facing.v1.subscription_schedules.release(schedule["id"])


@pytest.mark.stripe_facing
def test_a_scheduled_subscription_refuses_cancel_at_period_end_and_a_moved_current_phase(
    stripe_facing: stripe.StripeClient,
) -> None:
    price = _price(stripe_facing, 900)
    sub = _subscribed(stripe_facing, price)
    schedule = _plain(
        stripe_facing.v1.subscription_schedules.create(params={"from_subscription": sub.id})
    )
    with pytest.raises(stripe.InvalidRequestError, match="subscription schedule"):
        stripe_facing.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": True})
    phase = schedule["phases"][0]
    with pytest.raises(stripe.InvalidRequestError, match="start date of the current phase"):
        stripe_facing.v1.subscription_schedules.update(
            schedule["id"],
            params={
                "phases": [
                    {
                        "items": [{"price": price}],
                        "start_date": phase["start_date"] - 86400,
                        "end_date": phase["end_date"],
                    }
                ]
            },
        )


def test_passing_the_phase_end_moves_the_subscription_to_the_next_price_and_invoices_it(
    localstripe: LocalStripe, stripe_api: stripe.StripeClient
) -> None:
    since = int(time.time()) - 1
    dear, cheap = _price(stripe_api, 2900), _price(stripe_api, 900)
    sub = _subscribed(stripe_api, dear)
    schedule = _downgrade_at_period_end(stripe_api, sub, dear, cheap)
    boundary = schedule["phases"][0]["end_date"]

    renewed = _advance(localstripe, sub.id)
    assert renewed["items"]["data"][0]["price"]["id"] == cheap
    assert renewed["current_period_start"] == boundary
    assert renewed["metadata"]["plan"] == "starter"  # the phase's metadata
    assert renewed["schedule"] == schedule["id"]
    invoice = stripe_api.v1.invoices.retrieve(renewed["latest_invoice"])
    assert (invoice.amount_paid, invoice.billing_reason) == (900, "subscription_cycle")
    moved = _plain(stripe_api.v1.subscription_schedules.retrieve(schedule["id"]))
    assert moved["current_phase"]["start_date"] == boundary
    assert _events_about(stripe_api, "subscription_schedule.updated", schedule["id"], since) == 2
    assert _events_about(stripe_api, "customer.subscription.updated", sub.id, since) >= 2

    # The last phase ends a period later: the schedule releases the subscription, which
    # goes on at the last phase's price.
    later = _advance(localstripe, sub.id)
    assert (later["schedule"], later["items"]["data"][0]["price"]["id"]) == (None, cheap)
    done = _plain(stripe_api.v1.subscription_schedules.retrieve(schedule["id"]))
    assert (done["status"], done["released_subscription"]) == ("released", sub.id)
    assert _events_about(stripe_api, "subscription_schedule.released", schedule["id"], since) == 1


def test_a_released_schedule_changes_nothing_at_the_period_end(
    localstripe: LocalStripe, stripe_api: stripe.StripeClient
) -> None:
    dear, cheap = _price(stripe_api, 2900), _price(stripe_api, 900)
    sub = _subscribed(stripe_api, dear)
    schedule = _downgrade_at_period_end(stripe_api, sub, dear, cheap)
    stripe_api.v1.subscription_schedules.release(schedule["id"])
    renewed = _advance(localstripe, sub.id)
    assert renewed["items"]["data"][0]["price"]["id"] == dear
    assert stripe_api.v1.invoices.retrieve(renewed["latest_invoice"]).amount_paid == 2900


def test_a_trial_schedule_ends_its_first_phase_at_the_trial_end(
    localstripe: LocalStripe, stripe_api: stripe.StripeClient
) -> None:
    dear, cheap = _price(stripe_api, 2900), _price(stripe_api, 900)
    customer = stripe_api.v1.customers.create(params={"email": "sched-trial@example.com"})
    pm = stripe_api.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    sub = stripe_api.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": dear}],
            "trial_period_days": 14,
            "default_payment_method": pm.id,
        }
    )
    schedule = _plain(
        stripe_api.v1.subscription_schedules.create(params={"from_subscription": sub.id})
    )
    phase = schedule["phases"][0]
    assert phase["end_date"] == phase["trial_end"] == sub.trial_end
    with pytest.raises(stripe.InvalidRequestError, match="trial_end"):
        stripe_api.v1.subscription_schedules.update(
            schedule["id"],
            params={"phases": [{"items": [{"price": dear}], "end_date": phase["end_date"]}]},
        )
    stripe_api.v1.subscription_schedules.update(
        schedule["id"],
        params={
            "phases": [
                {
                    "items": [{"price": dear}],
                    "start_date": phase["start_date"],
                    "end_date": phase["end_date"],
                    "trial_end": phase["trial_end"],
                    "default_payment_method": pm.id,
                },
                {"items": [{"price": cheap}], "default_payment_method": pm.id},
            ]
        },
    )
    renewed = _advance(localstripe, sub.id)
    assert (renewed["status"], renewed["items"]["data"][0]["price"]["id"]) == ("active", cheap)
    assert stripe_api.v1.invoices.retrieve(renewed["latest_invoice"]).amount_paid == 900


def test_canceling_a_schedule_ends_its_subscription_now(
    stripe_api: stripe.StripeClient,
) -> None:
    sub = _subscribed(stripe_api, _price(stripe_api, 900))
    schedule = stripe_api.v1.subscription_schedules.create(params={"from_subscription": sub.id})
    canceled = _plain(stripe_api.v1.subscription_schedules.cancel(schedule.id))
    assert canceled["status"] == "canceled"
    assert stripe_api.v1.subscriptions.retrieve(sub.id).status == "canceled"
    with pytest.raises(stripe.InvalidRequestError, match="No such subscription_schedule"):
        stripe_api.v1.subscription_schedules.retrieve("sub_sched_unknown")


def test_canceling_a_scheduled_subscription_outright_cancels_its_schedule(
    stripe_api: stripe.StripeClient,
) -> None:
    sub = _subscribed(stripe_api, _price(stripe_api, 900))
    schedule = stripe_api.v1.subscription_schedules.create(params={"from_subscription": sub.id})
    stripe_api.v1.subscriptions.cancel(sub.id)
    ended = _plain(stripe_api.v1.subscription_schedules.retrieve(schedule.id))
    assert (ended["status"], ended["current_phase"]) == ("canceled", None)
    assert ended["canceled_at"] is not None


@pytest.mark.stripe_facing
def test_a_schedule_phase_copies_the_default_card_and_a_rewrite_without_it_takes_it_off(
    stripe_facing: stripe.StripeClient,
) -> None:
    price = _price(stripe_facing, 2900)
    sub = _plain(_subscribed(stripe_facing, price))
    card = sub["default_payment_method"]
    assert card
    schedule = _plain(
        stripe_facing.v1.subscription_schedules.create(params={"from_subscription": sub["id"]})
    )
    [phase] = schedule["phases"]
    assert phase["default_payment_method"] == card
    kept: Any = {"items": [{"price": price, "quantity": 1}], "end_date": phase["end_date"]}
    with_card: Any = {"phases": [{**kept, "default_payment_method": card}]}

    stripe_facing.v1.subscription_schedules.update(schedule["id"], params=with_card)
    assert stripe_facing.v1.subscriptions.retrieve(sub["id"]).default_payment_method == card
    stripe_facing.v1.subscription_schedules.update(schedule["id"], params={"phases": [kept]})
    assert stripe_facing.v1.subscriptions.retrieve(sub["id"]).default_payment_method is None
