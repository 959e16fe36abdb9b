"""Deleting an account ends its billing in either deletion mode: its Stripe subscriptions are
canceled (and ours end), its cards detached, durably, even when Stripe was away."""

from __future__ import annotations

from typing import Any

import pytest
import stripe
from fastapi.testclient import TestClient
from sqlalchemy import select
from subscription_steps import (
    Member,
    checkout,
    complete_checkout,
    deliver_paid_checkout,
    me,
    seed_plans,
    sign_up,
    stripe_customer_of,
)
from support.netfault import FaultyLink
from support.payments import saved_card
from support.waiting import wait_until

from billfold.jobs.models import Job, JobStatus
from billfold.jobs.worker import Worker
from billfold.payments.models import SavedCard
from billfold.services import Services
from billfold.subscriptions.models import Subscription

BOTH_MODES = pytest.mark.parametrize(
    "settings_overrides",
    [{"stripe_customer_deletion": "archive"}, {"stripe_customer_deletion": "delete"}],
    ids=["archive", "delete"],
)


@pytest.fixture
def plans(client: TestClient, admin: dict[str, str], stripe_api: stripe.StripeClient) -> None:
    seed_plans(client, admin, stripe_api)


def subscribed_with_a_card(
    client: TestClient,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> tuple[Member, str, str]:
    """A member paying for `starter` through Checkout, with a second card saved through us;
    answers the member, the Stripe subscription ID and that card's ID."""
    member = sign_up(client)
    paid = complete_checkout(stripe_api, checkout(client, member, "starter")["checkout_url"])
    deliver_paid_checkout(client, paid)
    worker.run_until_idle()
    assert me(client, member)["status"] == "active"
    pm = saved_card(client, stripe_api, member.headers)
    return member, str(paid.subscription["id"]), pm


def delete_account(client: TestClient, member: Member) -> None:
    user_id = client.get("/users/me", headers=member.headers).json()["data"]["id"]
    response = client.delete(f"/users/{user_id}", headers=member.headers)
    assert response.status_code == 200, response.text


def drain(services: Services, worker: Worker[Services]) -> None:
    def idle() -> bool:
        worker.run_until_idle()
        with services.db.transaction() as session:
            return not session.scalars(select(Job).where(Job.status != JobStatus.DONE)).all()

    assert wait_until(idle, 20, interval=0.1), "jobs still open"


def assert_billing_ended(
    services: Services,
    stripe_api: stripe.StripeClient,
    member: Member,
    stripe_customer_id: str,
    subscription_id: str,
    archived: bool,
) -> None:
    assert stripe_api.v1.subscriptions.retrieve(subscription_id).status == "canceled"
    with services.db.transaction() as session:
        ours = session.scalar(
            select(Subscription).where(Subscription.customer_id == member.customer_id)
        )
        assert ours is not None
        assert ours.status == "canceled"
        cards = session.scalars(
            select(SavedCard).where(SavedCard.customer_id == member.customer_id)
        ).all()
        assert len(cards) == 2  # the one saved through us, and Checkout's
        assert all(not c.attached for c in cards)
    for c in cards:
        assert stripe_api.v1.payment_methods.retrieve(c.stripe_payment_method_id).customer is None
    if archived:
        kept = stripe_api.v1.customers.retrieve(stripe_customer_id).to_dict()
        assert kept["metadata"]["archived"] == "true"
        attached = stripe_api.v1.payment_methods.list(
            params={"customer": stripe_customer_id, "type": "card"}
        )
        assert list(attached.data) == []
    else:
        with pytest.raises(stripe.InvalidRequestError):
            stripe_api.v1.customers.retrieve(stripe_customer_id)


@BOTH_MODES
@pytest.mark.usefixtures("plans")
def test_deleting_an_account_cancels_its_subscription_and_detaches_its_cards(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    settings_overrides: dict[str, Any],
) -> None:
    member, subscription_id, _pm = subscribed_with_a_card(client, worker, stripe_api)
    stripe_customer_id = stripe_customer_of(services, member.customer_id)
    assert stripe_customer_id is not None

    delete_account(client, member)
    drain(services, worker)

    archived = settings_overrides["stripe_customer_deletion"] == "archive"
    assert_billing_ended(
        services, stripe_api, member, stripe_customer_id, subscription_id, archived
    )


@pytest.mark.parametrize("settings_overrides", [{"stripe_customer_deletion": "archive"}])
@pytest.mark.usefixtures("plans")
def test_account_deleted_while_stripe_is_down_stops_billing_once_stripe_is_back(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_link: FaultyLink,
    settings_overrides: dict[str, Any],
) -> None:
    member, subscription_id, _pm = subscribed_with_a_card(client, worker, stripe_api)
    stripe_customer_id = stripe_customer_of(services, member.customer_id)
    assert stripe_customer_id is not None
    stripe_link.down()

    delete_account(client, member)
    worker.run_until_idle()  # the removal fails while Stripe is away…
    assert stripe_api.v1.subscriptions.retrieve(subscription_id).status == "active"

    stripe_link.up()
    drain(services, worker)  # …and its retry ends the billing once Stripe is back
    assert_billing_ended(
        services, stripe_api, member, stripe_customer_id, subscription_id, archived=True
    )
