"""`billfold reconcile`: real drift made at the stand-in (a refund in the dashboard, an edited
customer, a webhook that never arrived…) is reported, and `--fix` repairs it through the
webhook handlers; what cannot be repaired safely is listed for a person."""

from __future__ import annotations

import os
import uuid
from typing import Any

import stripe
from conftest import STRIPE_KEY
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from support.netfault import FaultyLink
from support.payments import browser_pays, card, make_product, saved_card
from typer.testing import CliRunner, Result

from billfold.auth.models import AccountLink
from billfold.cli import app as cli_app
from billfold.config import Settings
from billfold.customers.models import Customer
from billfold.kit.audit import AuditEntry
from billfold.payments.models import Order, Payment, Refund, SavedCard
from billfold.reconcile.service import Report, reconcile
from billfold.services import Services
from billfold.subscriptions.models import Subscription

# -- helpers ---------------------------------------------------------------------------


def run(services: Services, *, fix: bool = False) -> Report:
    return reconcile(services, fix=fix, quiet_seconds=0)


def problems(report: Report) -> list[tuple[str, str]]:
    return sorted((d.kind, d.problem) for d in report.drift)


def cli(settings: Settings, *args: str) -> Result:
    env: dict[str, str | None] = {
        "DATABASE_URL": settings.database_url,
        "STRIPE_API_BASE": settings.stripe_api_base,
        "STRIPE_SECRET_KEY": STRIPE_KEY,
        "STRIPE_MAX_NETWORK_RETRIES": "0",
        "STRIPE_TIMEOUT_SECONDS": "3",
        "JWT_SECRET": "cli-jwt-secret-" + "z" * 32,
        "LICENSE_PRIVATE_KEY": os.environ["LICENSE_PRIVATE_KEY"],
        "COLUMNS": "250",
    }
    return CliRunner().invoke(cli_app, ["reconcile", "--quiet", "0", *args], env=env)


def paid_with_saved_card(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any], stripe_api: Any
) -> dict[str, Any]:
    product = make_product(client, admin, unit_amount=2000)
    pm = saved_card(client, stripe_api, buyer["headers"])
    body = {"productId": product["id"], "quantity": 1, "paymentMethodId": pm}
    response = client.post("/payments/create-intent", json=body, headers=buyer["headers"])
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    assert data["status"] == "succeeded"
    return data


def starter_plan(client: TestClient, admin: dict[str, str], stripe_api: Any) -> str:
    """A paid plan with its recurring price in the stand-in; answers the price ID."""
    price = f"price_reconcile_{uuid.uuid4().hex[:8]}"
    stripe_api.v1.plans.create(
        params={
            "id": price,
            "amount": 900,
            "currency": "usd",
            "interval": "month",
            "product": {"name": "Starter"},
        }
    )
    body = {"code": "starter", "name": "Starter", "stripePriceId": price, "interval": "month"}
    client.post("/plans", json=body, headers=admin).raise_for_status()
    return price


def payment(services: Services, payment_id: str) -> Payment:
    with services.db.transaction() as session:
        found = session.get(Payment, payment_id)
        assert found is not None
        session.expunge(found)
        return found


# -- reports ---------------------------------------------------------------------------


def test_nothing_differs_after_ordinary_use(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    stripe_api: stripe.StripeClient,
) -> None:
    paid_with_saved_card(client, admin, buyer, stripe_api)

    report = run(services)

    assert report.drift == []
    assert report.checked >= 3  # the admin, the buyer, the payment


def test_refund_made_in_stripe_is_reported_then_recorded_once_by_fix(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    stripe_api: stripe.StripeClient,
) -> None:
    data = paid_with_saved_card(client, admin, buyer, stripe_api)
    made = stripe_api.v1.refunds.create(
        params={"payment_intent": data["payment_intent_id"], "amount": 700}
    )

    found = run(services)

    assert problems(found) == [("refund", "refund_not_recorded")]
    assert found.drift[0].stripe_id == made.id
    assert payment(services, data["paymentId"]).amount_refunded == 0

    fixed = run(services, fix=True)

    assert [d.outcome for d in fixed.drift] == ["fixed"]
    assert payment(services, data["paymentId"]).amount_refunded == 700
    with services.db.transaction() as session:
        refunds = session.scalars(select(Refund).where(Refund.payment_id == data["paymentId"]))
        assert [(r.stripe_refund_id, r.amount, r.status) for r in refunds] == [
            (made.id, 700, "succeeded")
        ]
        order = session.get(Order, data["orderId"])
        assert order is not None
        assert order.status == "partially_refunded"
        repairs = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "reconcile.repair")
        ).all()
        assert [(a.subject_id, a.details["problem"]) for a in repairs] == [
            (data["paymentId"], "refund_not_recorded")
        ]
    assert run(services).drift == []


def test_customer_edited_in_stripe_is_brought_back_by_fix(
    client: TestClient, buyer: dict[str, Any], services: Services, stripe_api: stripe.StripeClient
) -> None:
    stripe_api.v1.customers.update(
        buyer["stripeCustomerId"], params={"name": "Ada King", "email": "ada.king@example.com"}
    )

    found = run(services)

    assert problems(found) == [("customer", "profile_differs")]
    assert "Ada King" in found.drift[0].detail

    fixed = run(services, fix=True)

    assert [d.outcome for d in fixed.drift] == ["fixed"]
    me = client.get("/users/me", headers=buyer["headers"]).json()["data"]
    # The name comes back; the login e-mail moves only once the new address is verified
    # (issue #9 item 7): a link went to it instead.
    assert (me["name"], me["email"]) == ("Ada King", buyer["email"])
    with services.db.transaction() as session:
        pending = session.scalars(
            select(AccountLink.email).where(AccountLink.purpose == "verify_email")
        ).all()
    assert "ada.king@example.com" in pending


def test_local_edit_not_yet_pushed_is_sent_to_stripe_not_overwritten(
    client: TestClient, buyer: dict[str, Any], services: Services, stripe_api: stripe.StripeClient
) -> None:
    # The edit is saved, but the push job never ran (as if the worker were down).
    response = client.patch(
        f"/users/{buyer['id']}", json={"name": "Ada Byron"}, headers=buyer["headers"]
    )
    assert response.status_code == 200, response.text

    fixed = run(services, fix=True)

    assert [(d.problem, d.outcome) for d in fixed.drift] == [("edit_not_pushed", "fixed")]
    assert stripe_api.v1.customers.retrieve(buyer["stripeCustomerId"]).name == "Ada Byron"


def test_success_whose_webhook_never_arrived_pays_the_order_on_fix(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    stripe_api: stripe.StripeClient,
) -> None:
    product = make_product(client, admin, stock=5)
    body = {"productId": product["id"], "quantity": 2}
    data = client.post("/payments/create-intent", json=body, headers=buyer["headers"]).json()[
        "data"
    ]
    browser_pays(stripe_api, data["payment_intent_id"])  # the page never called confirm

    found = run(services)

    assert problems(found) == [("payment", "status_differs")]
    assert found.drift[0].detail == "ours requires_payment_method · Stripe succeeded"

    run(services, fix=True)

    assert payment(services, data["paymentId"]).status == "succeeded"
    order = client.get(f"/orders/{data['orderId']}", headers=buyer["headers"]).json()["data"]
    assert order["status"] == "paid"
    assert client.get(f"/products/{product['id']}", headers=admin).json()["data"]["stock"] == 3
    assert run(services).drift == []


def test_card_attached_and_card_detached_in_stripe_are_brought_in_by_fix(
    client: TestClient, buyer: dict[str, Any], services: Services, stripe_api: stripe.StripeClient
) -> None:
    kept = saved_card(client, stripe_api, buyer["headers"])
    added = stripe_api.v1.payment_methods.attach(
        card(stripe_api), params={"customer": buyer["stripeCustomerId"]}
    )
    stripe_api.v1.payment_methods.detach(kept)

    found = run(services)

    assert problems(found) == [("card", "card_not_in_stripe"), ("card", "card_not_recorded")]

    fixed = run(services, fix=True)

    assert {d.outcome for d in fixed.drift} == {"fixed"}
    listed = client.get("/payments/customer/payment-methods", headers=buyer["headers"])
    assert [c["id"] for c in listed.json()["data"]] == [added.id]
    with services.db.transaction() as session:
        detached = session.scalar(
            select(SavedCard).where(SavedCard.stripe_payment_method_id == kept)
        )
        assert detached is not None
        assert detached.attached is False


def test_subscription_whose_checkout_webhooks_were_lost_is_recorded_by_fix(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    stripe_api: stripe.StripeClient,
) -> None:
    price = starter_plan(client, admin, stripe_api)
    pm = stripe_api.v1.payment_methods.attach(
        card(stripe_api), params={"customer": buyer["stripeCustomerId"]}
    )
    stripe_api.v1.customers.update(
        buyer["stripeCustomerId"], params={"invoice_settings": {"default_payment_method": pm.id}}
    )
    made = stripe_api.v1.subscriptions.create(  # as Checkout does; its webhooks never came
        params={
            "customer": buyer["stripeCustomerId"],
            "items": [{"plan": price}],
            "metadata": {"customer_id": buyer["customerId"], "plan": "starter"},
        }
    )

    found = run(services)

    assert ("subscription", "subscription_not_recorded") in problems(found)

    run(services, fix=True)

    with services.db.transaction() as session:
        subscription = session.scalar(
            select(Subscription).where(Subscription.customer_id == buyer["customerId"])
        )
        assert subscription is not None
        assert subscription.stripe_subscription_id == made.id
        assert (subscription.status, subscription.plan.code) == ("active", "starter")
    assert [d for d in run(services).drift if d.kind == "subscription"] == []


def test_subscription_changed_in_stripe_is_applied_by_fix(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    stripe_api: stripe.StripeClient,
) -> None:
    test_subscription_whose_checkout_webhooks_were_lost_is_recorded_by_fix(
        client, admin, buyer, services, stripe_api
    )
    with services.db.transaction() as session:
        stripe_id = session.scalar(
            select(Subscription.stripe_subscription_id).where(
                Subscription.customer_id == buyer["customerId"]
            )
        )
    assert stripe_id is not None
    stripe_api.v1.subscriptions.update(stripe_id, params={"cancel_at_period_end": True})

    found = run(services)

    assert problems(found) == [("subscription", "differs")]
    assert "cancel_at_period_end: ours False · Stripe True" in found.drift[0].detail
    run(services, fix=True)
    assert run(services).drift == []


def test_customer_deleted_in_stripe_is_unlinked_by_fix(
    buyer: dict[str, Any], services: Services, stripe_api: stripe.StripeClient
) -> None:
    stripe_api.v1.customers.delete(buyer["stripeCustomerId"])

    found = run(services)
    assert problems(found) == [("customer", "gone_in_stripe")]
    run(services, fix=True)

    with services.db.transaction() as session:
        customer = session.get(Customer, buyer["customerId"])
        assert customer is not None
        assert customer.stripe_customer_id is None


def test_what_has_no_safe_repair_is_listed_for_a_person_and_left_alone(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    stripe_api: stripe.StripeClient,
) -> None:
    data = paid_with_saved_card(client, admin, buyer, stripe_api)
    with services.db.transaction() as session:  # as after Stripe lost the object
        session.execute(
            update(Payment)
            .where(Payment.id == data["paymentId"])
            .values(stripe_payment_intent_id="pi_vanished0000000000000")
        )

    fixed = run(services, fix=True)

    assert [(d.problem, d.repair, d.outcome) for d in fixed.drift] == [
        ("gone_in_stripe", None, None)
    ]
    assert fixed.remaining == fixed.drift
    assert payment(services, data["paymentId"]).status == "succeeded"


def test_stripe_down_marks_records_not_checked(
    buyer: dict[str, Any], services: Services, stripe_link: FaultyLink
) -> None:
    stripe_link.down()

    report = run(services, fix=True)

    assert {d.problem for d in report.drift} == {"not_checked"}
    assert all("stripe_unavailable" in d.detail for d in report.drift)


def test_progress_is_reported_for_every_record(
    buyer: dict[str, Any], services: Services, client: TestClient
) -> None:
    seen: list[tuple[int, int]] = []

    report = reconcile(services, quiet_seconds=0, progress=lambda d, t: seen.append((d, t)))

    assert seen == [(i, report.checked) for i in range(1, report.checked + 1)]


# -- the command -----------------------------------------------------------------------


def test_command_prints_the_drift_table_fixes_it_and_exits_by_what_remains(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    services: Services,
    settings: Settings,
    stripe_api: stripe.StripeClient,
) -> None:
    data = paid_with_saved_card(client, admin, buyer, stripe_api)
    stripe_api.v1.refunds.create(params={"payment_intent": data["payment_intent_id"]})

    report = cli(settings)
    fixing = cli(settings, "--fix")
    after = cli(settings)

    assert report.exit_code == 1, report.output
    assert "refund_not_recorded" in report.output
    assert data["paymentId"] in report.output
    assert "1 repairable with --fix" in report.output
    assert fixing.exit_code == 0, fixing.output
    assert "1 fixed, 0 left for a person" in fixing.output
    assert after.exit_code == 0, after.output
    assert "Billfold and Stripe agree" in after.output
    assert payment(services, data["paymentId"]).amount_refunded == 2000


def test_command_since_leaves_out_older_records(
    client: TestClient,
    admin: dict[str, str],
    buyer: dict[str, Any],
    settings: Settings,
    stripe_api: stripe.StripeClient,
) -> None:
    data = paid_with_saved_card(client, admin, buyer, stripe_api)
    stripe_api.v1.refunds.create(params={"payment_intent": data["payment_intent_id"]})

    later = cli(settings, "--since", "2999-01-01")

    assert later.exit_code == 0, later.output
    assert "Checked 0 record(s)" in later.output
