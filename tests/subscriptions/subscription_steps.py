"""Steps of a subscription's life for the tests: plans with real stand-in prices, a new
customer on the trial, the customer paying on the stand-in's Checkout page (plain form
posts, as a browser would), the stand-in's clock moved to a period's end, and the events
the stand-in sent relayed to Billfold signed (as `stripe listen --forward-to` does)."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import stripe
from conftest import STRIPE_KEY, WEBHOOK_SECRET
from factories import auth, register
from fastapi.testclient import TestClient
from sqlalchemy import select
from support.payments import VISA, card
from support.stripe_events import delivery, event

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


def session_id_of(checkout_url: str) -> str:
    """The Checkout Session behind the URL Billfold answered (the stand-in's hosted page)."""
    found = re.search(r"/checkout/(cs_[A-Za-z0-9_]+)$", checkout_url)
    assert found, checkout_url
    return found.group(1)


def checkout_session(stripe_api: stripe.StripeClient, checkout_url: str) -> dict[str, Any]:
    return as_dict(stripe_api.v1.checkout.sessions.retrieve(session_id_of(checkout_url)))


def checkout_sessions(
    stripe_api: stripe.StripeClient, stripe_customer: str
) -> list[dict[str, Any]]:
    """The customer's Checkout Sessions in the stand-in, oldest first."""
    listed = stripe_api.v1.checkout.sessions.list(
        params={"customer": stripe_customer, "limit": 100}
    )
    return sorted((as_dict(s) for s in listed.data), key=lambda s: (s["created"], s["id"]))


def portal_sessions_page(url: str) -> str:
    answer = httpx.get(url)
    assert answer.status_code == 200, answer.text
    return answer.text


def pay_on_page(url: str, number: str = VISA, **form: str) -> httpx.Response:
    """Submit the card form of a stand-in page (Checkout or an invoice's) as a browser would."""
    fields = {"number": number, "exp": "12/34", "cvc": "123", **form}
    return httpx.post(url, data=fields, follow_redirects=False)


def authenticate_on_page(page: httpx.Response, *, complete: bool) -> httpx.Response:
    """Press "Complete" or "Fail" on the stand-in's 3-D Secure page."""
    assert "Complete authentication" in page.text, page.text
    action = re.search(r"<form method='post' action='([^']+)'>", page.text)
    method = re.search(r"name='payment_method' value='([^']+)'", page.text)
    assert action, page.text
    assert method, page.text
    url = str(page.request.url.join(action.group(1)))
    outcome = "complete" if complete else "fail"
    return httpx.post(url, data={"payment_method": method.group(1), "outcome": outcome})


def page_alert(page: httpx.Response) -> str:
    found = re.search(r"<p role='alert'>([^<]*)</p>", page.text)
    return found.group(1) if found else ""


def advance(standin_url: str, subscription_id: str) -> dict[str, Any]:
    """Move the stand-in's clock to the end of the subscription's trial or period."""
    answer = httpx.post(
        f"{standin_url}/v1/test_helpers/subscriptions/{subscription_id}/advance",
        headers={"Authorization": f"Bearer {STRIPE_KEY}"},
    )
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()
    return data


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
    stripe_api: stripe.StripeClient, checkout_url: str, number: str = VISA
) -> Paid:
    """The customer pays on the stand-in's Checkout page; answers what Stripe then holds."""
    page = pay_on_page(checkout_url, number)
    assert page.status_code == 303, page.text
    session = checkout_session(stripe_api, checkout_url)
    assert page.headers["location"] == session["success_url"].replace(
        "{CHECKOUT_SESSION_ID}", session["id"]
    )
    subscription = stripe_api.v1.subscriptions.retrieve(session["subscription"])
    invoice = stripe_api.v1.invoices.retrieve(str(subscription.latest_invoice))
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


def sync(client: TestClient, worker: Any, events: Any) -> list[str]:
    """Relay what the stand-in sent since the last time, and let Billfold's worker apply it."""
    sent: list[str] = events.relay(client)
    worker.run_until_idle()
    return sent


def subscribe(
    client: TestClient,
    worker: Any,
    stripe_api: stripe.StripeClient,
    events: Any,
    member: Member,
    plan: str = "starter",
    number: str = VISA,
) -> str:
    """The member pays for `plan` on the stand-in's Checkout page, and Billfold hears of it
    through the relayed events; answers the Stripe subscription ID."""
    url = checkout(client, member, plan)["checkout_url"]
    page = pay_on_page(url, number)
    assert page.status_code == 303, page.text
    sync(client, worker, events)
    assert me(client, member)["status"] in ("active", "trialing")
    return str(checkout_session(stripe_api, url)["subscription"])
