"""Steps of a subscription's life for the tests: plans with real localstripe prices, a new
customer on the trial, Stripe completing the Checkout Billfold asked for, and signed webhook
deliveries of the objects Stripe then holds."""

from __future__ import annotations

import copy
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import stripe
from conftest import WEBHOOK_SECRET
from factories import auth, register
from fastapi.testclient import TestClient
from sqlalchemy import select
from support.payments import VISA, card
from support.stripe_events import delivery, event
from support.stripe_fakes import StandInWithFixtures, fixture

from billfold.customers.models import Customer
from billfold.mail.models import OutboxMail
from billfold.services import Services
from billfold.subscriptions.licenses import verify
from billfold.subscriptions.models import License
from billfold.webhooks.models import StripeEvent

# New customers get no Stripe customer until they first pay (the subscription guide's flow).
ON_FIRST_PAYMENT = {"stripe_customer_creation": "on_first_payment"}
DECLINED_AT_CHARGE = "4000000000000341"  # attaches fine, every charge is declined

TRIAL_FEATURES = {"limits": {"projects": 1, "seats": 1}, "flags": {"api": False}}
STARTER_FEATURES = {"limits": {"projects": 5, "seats": 3}, "flags": {"api": True}}
PRO_FEATURES = {"limits": {"projects": 50, "seats": 20}, "flags": {"api": True, "sso": True}}
# code: (Stripe price ID, amount, interval, features)
PAID_PLANS: dict[str, tuple[str, int, str, dict[str, Any]]] = {
    "starter": ("price_test_starter", 900, "month", STARTER_FEATURES),
    "professional": ("price_test_professional", 2900, "month", PRO_FEATURES),
    "starter_annual": ("price_test_starter_annual", 9000, "year", STARTER_FEATURES),
}
PRICE = {code: spec[0] for code, spec in PAID_PLANS.items()}
URLS = {"success_url": "https://app.example/ok", "cancel_url": "https://app.example/no"}


def ensure_price(
    stripe_api: stripe.StripeClient, price_id: str, amount: int, interval: str
) -> None:
    """A recurring price in localstripe (a legacy Plan, which both treat as a price)."""
    try:
        stripe_api.v1.plans.retrieve(price_id)
    except stripe.InvalidRequestError:
        stripe_api.v1.plans.create(
            params={
                "id": price_id,
                "amount": amount,
                "currency": "usd",
                "interval": interval,
                "product": {"name": price_id},
            }
        )


def seed_plans(client: TestClient, admin: dict[str, str], stripe_api: stripe.StripeClient) -> None:
    """The trial plan (no price) and the paid plans, made by an admin through the API."""
    trial = {"code": "trial", "name": "Trial", "trialDays": 14, "features": TRIAL_FEATURES}
    client.post("/plans", json=trial, headers=admin).raise_for_status()
    for code, (price_id, amount, interval, features) in PAID_PLANS.items():
        ensure_price(stripe_api, price_id, amount, interval)
        body = {
            "code": code,
            "name": code.replace("_", " ").title(),
            "stripePriceId": price_id,
            "interval": interval,
            "features": features,
        }
        client.post("/plans", json=body, headers=admin).raise_for_status()


@dataclass(frozen=True)
class Member:
    """A signed-up user: their customer ID, e-mail and auth headers."""

    customer_id: str
    email: str
    headers: dict[str, str]


def sign_up(client: TestClient) -> Member:
    data = register(client)
    return Member(data["user"]["customerId"], data["user"]["email"], auth(data["access_token"]))


def me(client: TestClient, member: Member) -> dict[str, Any]:
    answer = client.get("/subscriptions/me", headers=member.headers)
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()["data"]
    return data


def current_license(client: TestClient, member: Member) -> dict[str, Any]:
    answer = client.get("/licenses/me", headers=member.headers)
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()["data"]
    return data


def current_claims(client: TestClient, services: Services, member: Member) -> dict[str, Any]:
    return verify(current_license(client, member)["token"], services.licenses.public_keys())


def unverified_claims(token: str) -> dict[str, Any]:
    """The claims as written, even of a license that has already expired."""
    import jwt

    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def licenses_of(services: Services, customer_id: str) -> list[License]:
    with services.db.transaction() as session:
        rows = session.scalars(
            select(License)
            .where(License.customer_id == customer_id)
            .order_by(License.issued_at, License.id)
        )
        found = list(rows)
        session.expunge_all()
        return found


def license_mails(services: Services, email: str) -> list[OutboxMail]:
    with services.db.transaction() as session:
        rows = session.scalars(
            select(OutboxMail)
            .where(OutboxMail.to_address == email, OutboxMail.kind == "license")
            .order_by(OutboxMail.created_at)
        )
        found = list(rows)
        session.expunge_all()
        return found


def stripe_customer_of(services: Services, customer_id: str) -> str | None:
    with services.db.transaction() as session:
        customer = session.get(Customer, customer_id)
        assert customer is not None
        return customer.stripe_customer_id


def stored_event(services: Services, stripe_event_id: str) -> StripeEvent:
    with services.db.transaction() as session:
        found = session.scalar(
            select(StripeEvent).where(StripeEvent.stripe_event_id == stripe_event_id)
        )
        assert found is not None, stripe_event_id
        session.expunge(found)
        return found


def checkout(
    client: TestClient, member: Member, plan: str = "starter", **body: Any
) -> dict[str, Any]:
    answer = client.post(
        "/subscriptions/checkout", json={"plan": plan, **URLS, **body}, headers=member.headers
    )
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()["data"]
    return data


def checkout_requests(stripe_fakes: list[StandInWithFixtures]) -> list[dict[str, Any]]:
    """What Billfold asked Stripe to put in each Checkout Session, in order."""
    return [p for c in stripe_fakes for path, p in c.faked if path == "/v1/checkout/sessions"]


def portal_requests(stripe_fakes: list[StandInWithFixtures]) -> list[dict[str, Any]]:
    return [p for c in stripe_fakes for path, p in c.faked if path == "/v1/billing_portal/sessions"]


def use_card(stripe_api: stripe.StripeClient, stripe_customer_id: str, number: str) -> None:
    """The customer's card on file becomes `number` (as on Checkout's page or the portal)."""
    pm = card(stripe_api, number)
    stripe_api.v1.payment_methods.attach(pm, params={"customer": stripe_customer_id})
    stripe_api.v1.customers.update(
        stripe_customer_id, params={"invoice_settings": {"default_payment_method": pm}}
    )


@dataclass(frozen=True)
class Paid:
    """What Stripe holds once the customer paid on the Checkout page."""

    session: dict[str, Any]
    subscription: dict[str, Any]
    invoice: dict[str, Any]


def complete_checkout(
    stripe_api: stripe.StripeClient, request: dict[str, Any], number: str = VISA
) -> Paid:
    """Do in localstripe what Stripe does when the customer pays the session Billfold asked
    for: the card saved, the subscription made with the session's price and
    subscription_data.metadata, its first invoice paid."""
    use_card(stripe_api, request["customer"], number)
    subscription = stripe_api.v1.subscriptions.create(
        params={
            "customer": request["customer"],
            "items": [{"plan": request["line_items"]["0"]["price"]}],
            "metadata": request["subscription_data"]["metadata"],
        }
    )
    invoice = stripe_api.v1.invoices.retrieve(str(subscription.latest_invoice))
    session = copy.deepcopy(fixture("checkout.session"))
    session.update(
        id=f"cs_test_{uuid.uuid4().hex}",
        mode="subscription",
        customer=request["customer"],
        client_reference_id=request["client_reference_id"],
        metadata=request["metadata"],
        success_url=request["success_url"],
        cancel_url=request["cancel_url"],
        subscription=subscription.id,
        status="complete",
        payment_status="paid",
    )
    return Paid(session, as_dict(subscription), as_dict(invoice))


def as_dict(obj: stripe.StripeObject) -> dict[str, Any]:
    """A Stripe object as the JSON Stripe puts in an event's data.object."""
    plain: dict[str, Any] = json.loads(json.dumps(obj.to_dict(for_json=True)))
    return plain


def subscription_now(stripe_api: stripe.StripeClient, subscription_id: str) -> dict[str, Any]:
    return as_dict(stripe_api.v1.subscriptions.retrieve(subscription_id))


def deliver(
    client: TestClient,
    kind: str,
    obj: dict[str, Any],
    *,
    created: int | None = None,
    event_id: str | None = None,
) -> str:
    """POST one signed Stripe event; answers its event ID."""
    evt = event(kind, obj, created=created, event_id=event_id)
    body, headers = delivery(evt, WEBHOOK_SECRET)
    answer = client.post("/webhooks/stripe", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    return str(evt["id"])


def deliver_paid_checkout(client: TestClient, paid: Paid, *, created: int | None = None) -> None:
    """The three events Stripe sends when a subscription checkout is paid."""
    deliver(client, "customer.subscription.created", paid.subscription, created=created)
    deliver(client, "invoice.paid", paid.invoice, created=created)
    deliver(client, "checkout.session.completed", paid.session, created=created)


def at(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def now_epoch() -> int:
    return int(time.time())
