"""The application's wiring: built by the factory and handed to Services, never registered at
import, so what a sign-up does depends on the services it runs on, not on what was imported."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from factories import unique_email
from sqlalchemy import select

from billfold.customers.registration import SIGN_UP, sign_up
from billfold.kit.wiring import Wiring
from billfold.payments import fulfilment
from billfold.payments.fulfilment import PURPOSES
from billfold.registry import build_wiring
from billfold.services import Services
from billfold.subscriptions.models import License, Plan, Subscription, SubscriptionStatus


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"stripe_customer_creation": "on_first_payment"}  # sign-up leaves Stripe alone


def _trial_plan(services: Services) -> None:
    with services.db.transaction() as session:
        session.add(Plan(code="trial", name="Trial", trial_days=14, features={}))


def _subscription_of(services: Services, customer_id: str) -> Subscription | None:
    with services.db.transaction() as session:
        return session.scalar(select(Subscription).where(Subscription.customer_id == customer_id))


def test_sign_up_on_the_applications_services_starts_the_trial_with_a_license(
    services: Services,
) -> None:
    _trial_plan(services)

    customer = sign_up(services, name="Ada", email=unique_email(), password="a long password")

    subscription = _subscription_of(services, customer.id)
    assert subscription is not None
    assert subscription.status == SubscriptionStatus.TRIALING
    with services.db.transaction() as session:
        assert session.scalar(select(License).where(License.customer_id == customer.id))


def test_sign_up_on_services_without_the_wiring_starts_no_trial(services: Services) -> None:
    # The same process has imported billfold.registry (the fixture built the services with
    # it): importing registers nothing, only the wiring handed to Services counts.
    _trial_plan(services)
    bare = replace(services, wiring=Wiring())

    customer = sign_up(bare, name="Ada", email=unique_email(), password="a long password")

    assert _subscription_of(bare, customer.id) is None
    assert services.wiring.hooks(SIGN_UP), "the application's wiring starts the trial"


def test_each_build_of_the_wiring_is_its_own() -> None:
    first, second = build_wiring(), build_wiring()
    first.on(SIGN_UP, lambda _session, _customer, _services: None)

    assert len(first.hooks(SIGN_UP)) == len(second.hooks(SIGN_UP)) + 1
    assert set(second.table(PURPOSES)) == {fulfilment.ORDER, "credits"}


def test_a_purpose_wired_twice_is_a_mistake_said_at_start() -> None:
    wiring = build_wiring()

    with pytest.raises(ValueError, match="order wired twice"):
        wiring.put(PURPOSES, {fulfilment.ORDER: fulfilment.ORDER_PURPOSE})
