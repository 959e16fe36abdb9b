"""Stripe's subscription events keep GET /subscriptions/me right whatever their order and
however often they come: each handler re-reads the subscription from Stripe."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import stripe
from conftest import WEBHOOK_SECRET
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from subscription_steps import (
    ON_FIRST_PAYMENT,
    STARTER_FEATURES,
    Member,
    Paid,
    as_dict,
    at,
    checkout,
    complete_checkout,
    deliver,
    deliver_paid_checkout,
    licenses_of,
    me,
    now_epoch,
    parse_time,
    seed_plans,
    sign_up,
    stored_event,
    stripe_customer_of,
    subscription_now,
)
from support.stripe_events import delivery, event, fixture

from billfold.jobs.worker import Worker
from billfold.kit.audit import AuditEntry
from billfold.services import Services
from billfold.subscriptions.models import Subscription
from billfold.webhooks.models import EventStatus, StripeEvent


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return dict(ON_FIRST_PAYMENT)


@pytest.fixture
def member(client: TestClient, admin: dict[str, str], stripe_api: stripe.StripeClient) -> Member:
    seed_plans(client, admin, stripe_api)
    return sign_up(client)


@pytest.fixture
def paid(client: TestClient, member: Member, stripe_api: stripe.StripeClient) -> Paid:
    """The member paid for starter on the stand-in's Checkout page; no event delivered yet."""
    return complete_checkout(stripe_api, checkout(client, member)["checkout_url"])


def _events(paid: Paid) -> dict[str, dict[str, Any]]:
    return {
        "checkout.session.completed": paid.session,
        "customer.subscription.created": paid.subscription,
        "invoice.paid": paid.invoice,
    }


@pytest.mark.parametrize(
    "order",
    [
        ("checkout.session.completed", "customer.subscription.created", "invoice.paid"),
        ("invoice.paid", "customer.subscription.created", "checkout.session.completed"),
        ("customer.subscription.created", "invoice.paid", "checkout.session.completed"),
    ],
    ids=["session-first", "invoice-first", "subscription-first"],
)
def test_paid_checkout_events_in_any_order_and_resent_give_one_active_subscription(
    order: tuple[str, ...],
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    member: Member,
    paid: Paid,
) -> None:
    objects = _events(paid)
    for kind in order:
        deliver(client, kind, objects[kind])
    worker.run_until_idle()
    for kind in reversed(order):  # Stripe sends some again, as new events
        deliver(client, kind, objects[kind])
    worker.run_until_idle()
    now = me(client, member)
    assert (now["plan"], now["status"], now["features"], now["cancel_at_period_end"]) == (
        "starter",
        "active",
        STARTER_FEATURES,
        False,
    )
    assert parse_time(now["current_period_ends_at"]) == at(paid.subscription["current_period_end"])
    assert [(lic.plan_code, lic.status) for lic in licenses_of(services, member.customer_id)] == [
        ("trial", "trialing"),
        ("starter", "active"),
    ]
    with services.db.transaction() as session:
        statuses = session.scalars(select(StripeEvent.status)).all()
    assert sorted(statuses) == [EventStatus.PROCESSED] * 6


def test_the_same_event_delivered_again_is_acknowledged_and_applied_once(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    member: Member,
    paid: Paid,
) -> None:
    body, headers = delivery(
        event("checkout.session.completed", paid.session, event_id="evt_same_id_twice"),
        WEBHOOK_SECRET,
    )
    first = client.post("/webhooks/stripe", content=body, headers=headers)
    worker.run_until_idle()
    again = client.post("/webhooks/stripe", content=body, headers=headers)
    worker.run_until_idle()
    assert (first.status_code, first.json()["data"]["duplicate"]) == (200, False)
    assert (again.status_code, again.json()["data"]["duplicate"]) == (200, True)
    with services.db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(StripeEvent)) == 1
    assert [lic.status for lic in licenses_of(services, member.customer_id)] == [
        "trialing",
        "active",
    ]


def test_an_admin_replay_of_an_applied_event_issues_no_new_license(
    client: TestClient,
    admin: dict[str, str],
    services: Services,
    worker: Worker[Services],
    member: Member,
    paid: Paid,
) -> None:
    evt_id = deliver(client, "customer.subscription.created", paid.subscription)
    worker.run_until_idle()
    replayed = client.post(
        f"/webhooks/events/{stored_event(services, evt_id).id}/replay", headers=admin
    )
    assert replayed.status_code == 200, replayed.text
    worker.run_until_idle()
    assert stored_event(services, evt_id).status == EventStatus.PROCESSED
    assert len(licenses_of(services, member.customer_id)) == 2


def test_an_older_subscription_event_after_a_newer_one_changes_nothing(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    member: Member,
    paid: Paid,
) -> None:
    sub_id = paid.subscription["id"]
    created = now_epoch()
    deliver(client, "checkout.session.completed", paid.session, created=created - 60)
    worker.run_until_idle()
    before_change = subscription_now(stripe_api, sub_id)
    # The customer sets the subscription to end in Stripe's portal; Stripe tells us.
    stripe_api.v1.subscriptions.update(sub_id, params={"cancel_at_period_end": True})
    deliver(
        client,
        "customer.subscription.updated",
        subscription_now(stripe_api, sub_id),
        created=created,
    )
    worker.run_until_idle()
    assert me(client, member)["cancel_at_period_end"] is True
    issued = len(licenses_of(services, member.customer_id))
    # A late retry of an event from before that change arrives last.
    late = deliver(client, "customer.subscription.updated", before_change, created=created - 30)
    worker.run_until_idle()
    assert me(client, member)["cancel_at_period_end"] is True
    assert len(licenses_of(services, member.customer_id)) == issued
    assert stored_event(services, late).status == EventStatus.PROCESSED


def _gone_from_stripe(member: Member, stripe_customer: str, status: str) -> dict[str, Any]:
    """A subscription object (Stripe's fixture) that Stripe no longer has."""
    obj = copy.deepcopy(fixture("subscription"))
    obj.update(
        id="sub_gone_" + member.customer_id[-12:],
        customer=stripe_customer,
        status=status,
        metadata={"customer_id": member.customer_id},
        cancel_at_period_end=False,
    )
    obj["items"]["data"][0]["price"]["id"] = "price_test_starter"
    return obj


def test_when_stripe_no_longer_has_the_subscription_events_apply_in_event_order(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    member: Member,
    paid: Paid,
) -> None:
    stripe_customer = stripe_customer_of(services, member.customer_id)
    assert stripe_customer is not None
    created = now_epoch()
    deliver(
        client,
        "customer.subscription.deleted",
        _gone_from_stripe(member, stripe_customer, "canceled"),
        created=created,
    )
    worker.run_until_idle()
    assert me(client, member)["status"] == "canceled"
    older = deliver(
        client,
        "customer.subscription.updated",
        _gone_from_stripe(member, stripe_customer, "active"),
        created=created - 5,
    )
    worker.run_until_idle()
    assert me(client, member)["status"] == "canceled"
    assert stored_event(services, older).status == EventStatus.PROCESSED


def test_a_subscription_event_is_checked_against_stripe_not_taken_on_trust(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    member: Member,
    paid: Paid,
) -> None:
    deliver(client, "checkout.session.completed", paid.session)
    worker.run_until_idle()
    active = me(client, member)
    issued = len(licenses_of(services, member.customer_id))
    # Stripe's fixture subscription, made to say ours is past due with a later period.
    claimed = copy.deepcopy(fixture("subscription"))
    claimed.update(
        id=paid.subscription["id"],
        customer=paid.subscription["customer"],
        status="past_due",
        current_period_end=paid.subscription["current_period_end"] + 30 * 86400,
        metadata={"customer_id": member.customer_id},
    )
    evt = deliver(client, "customer.subscription.updated", claimed)
    renewal = {**paid.invoice, "period_end": claimed["current_period_end"]}
    deliver(client, "invoice.paid", renewal)
    worker.run_until_idle()
    assert stripe_api.v1.subscriptions.retrieve(paid.subscription["id"]).status == "active"
    assert me(client, member) == active
    assert len(licenses_of(services, member.customer_id)) == issued
    assert stored_event(services, evt).status == EventStatus.PROCESSED


def _foreign_subscription(stripe_api: stripe.StripeClient) -> dict[str, Any]:
    """A live subscription of a Stripe customer no customer of ours is linked to."""
    stranger = stripe_api.v1.customers.create(params={"email": "stranger@example.com"})
    stripe_api.v1.subscriptions.create(
        params={
            "customer": stranger.id,
            "items": [{"plan": "price_test_starter"}],
            "trial_period_days": 7,
        }
    )
    [subscription] = stripe_api.v1.subscriptions.list(params={"customer": stranger.id}).data
    return as_dict(subscription)


@pytest.mark.parametrize(
    ("kind", "make"),
    [
        ("customer.subscription.created", lambda api: _foreign_subscription(api)),
        (
            "invoice.payment_failed",
            lambda api: {**fixture("invoice"), "subscription": "sub_unknown_to_stripe"},
        ),
        (
            "checkout.session.completed",
            lambda api: {**fixture("checkout.session"), "mode": "payment"},
        ),
    ],
    ids=["foreign-customer", "unknown-subscription", "not-a-subscription-checkout"],
)
def test_events_about_customers_or_subscriptions_we_do_not_know_are_stored_as_ignored(
    kind: str,
    make: Callable[[stripe.StripeClient], dict[str, Any]],
    client: TestClient,
    admin: dict[str, str],
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    member: Member,
) -> None:
    evt = deliver(client, kind, make(stripe_api))
    worker.run_until_idle()
    listed = client.get("/webhooks/events", params={"status": "ignored"}, headers=admin)
    assert [e["stripeEventId"] for e in listed.json()["data"]] == [evt]
    assert me(client, member)["status"] == "trialing"
    with services.db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Subscription)) == 1


def test_a_stripe_change_in_the_same_second_as_our_own_api_call_is_not_lost(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    member: Member,
    paid: Paid,
) -> None:
    deliver(client, "checkout.session.completed", paid.session, created=now_epoch() - 60)
    worker.run_until_idle()
    client.post(
        "/subscriptions/cancel", json={"atPeriodEnd": True}, headers=member.headers
    ).raise_for_status()
    with services.db.transaction() as session:
        recorded = session.scalar(select(Subscription.stripe_event_at))
    assert recorded is not None
    # Within that same second the customer resumes the subscription in the portal.
    resumed = stripe_api.v1.subscriptions.update(
        paid.subscription["id"], params={"cancel_at_period_end": False}
    )
    deliver(
        client,
        "customer.subscription.updated",
        as_dict(resumed),
        created=int(recorded.timestamp()),
    )
    worker.run_until_idle()
    assert me(client, member)["cancel_at_period_end"] is False


def test_a_second_paid_checkout_does_not_replace_the_live_subscription(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    member: Member,
    paid: Paid,
    stripe_api: stripe.StripeClient,
) -> None:
    # The customer had opened two Checkout pages during the trial and paid both.
    other_page = checkout(client, member)["checkout_url"]
    deliver_paid_checkout(client, paid)
    worker.run_until_idle()
    second = complete_checkout(stripe_api, other_page)
    deliver_paid_checkout(client, second)
    worker.run_until_idle()

    with services.db.transaction() as session:
        tracked = session.scalar(
            select(Subscription.stripe_subscription_id).where(
                Subscription.customer_id == member.customer_id
            )
        )
        flagged = session.scalars(
            select(AuditEntry.details).where(
                AuditEntry.action == "subscription.second_live_ignored"
            )
        ).all()
    assert tracked == paid.subscription["id"]
    assert {d["stripe_subscription_id"] for d in flagged} == {second.subscription["id"]}
    assert me(client, member)["status"] == "active"
