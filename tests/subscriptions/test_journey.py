"""The customer's whole journey against the Stripe stand-in, with nothing faked: trial →
Checkout on the stand-in's page → plan change → renewals (paid, declined, needing 3-D
Secure) → recovery through the invoice's pay link → cancel. Every event Billfold sees is
one the stand-in sent, relayed to the webhook endpoint as `stripe listen` would."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import stripe
from fastapi.testclient import TestClient
from sqlalchemy import select
from subscription_steps import (
    DECLINED_AT_CHARGE,
    ON_FIRST_PAYMENT,
    PRICE,
    PRO_FEATURES,
    STARTER_FEATURES,
    TRIAL_FEATURES,
    URLS,
    Member,
    advance,
    as_dict,
    at,
    authenticate_on_page,
    checkout,
    checkout_session,
    current_claims,
    current_license,
    license_mails,
    licenses_of,
    me,
    now_epoch,
    page_alert,
    parse_time,
    pay_on_page,
    seed_plans,
    sign_up,
    stripe_customer_of,
    unverified_claims,
)
from support.payments import card
from support.stripe_events import EventRelay

from billfold.jobs.worker import Worker
from billfold.mail.models import OutboxMail
from billfold.services import Services
from billfold.standin import LocalStripe
from billfold.subscriptions.models import Invoice
from billfold.webhooks.models import EventStatus, StripeEvent

GRACE = timedelta(days=3)  # the default LICENSE_GRACE_DAYS
MASTERCARD = "5555555555554444"
ALWAYS_AUTHENTICATE = "4000002760003184"  # 3-D Secure on every charge, even off-session
GENERIC_DECLINE = "4000000000000002"
AUTH_FAILED = "We are unable to authenticate your payment method."


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return dict(ON_FIRST_PAYMENT)


@pytest.fixture
def member(client: TestClient, admin: dict[str, str], stripe_api: stripe.StripeClient) -> Member:
    seed_plans(client, admin, stripe_api)
    return sign_up(client)


def _sync(client: TestClient, worker: Worker[Services], events: EventRelay) -> list[str]:
    """Relay what the stand-in sent since the last time, and let Billfold's worker apply it."""
    sent = events.relay(client)
    worker.run_until_idle()
    return sent


def _subscribe(
    client: TestClient,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    member: Member,
    number: str = "4242424242424242",
) -> dict[str, Any]:
    """The member pays for starter on the stand-in's Checkout page; answers the session."""
    url = checkout(client, member)["checkout_url"]
    page = pay_on_page(url, number)
    if number == ALWAYS_AUTHENTICATE:
        page = authenticate_on_page(page, complete=True)
    assert page.status_code == 303, page.text
    _sync(client, worker, stripe_events)
    session = checkout_session(stripe_api, url)
    assert me(client, member)["status"] == "active"
    return session


def _mails(services: Services, email: str, kind: str) -> list[OutboxMail]:
    with services.db.transaction() as session:
        rows = session.scalars(
            select(OutboxMail)
            .where(OutboxMail.to_address == email, OutboxMail.kind == kind)
            .order_by(OutboxMail.created_at)
        )
        found = list(rows)
        session.expunge_all()
        return found


def _use_for_renewals(stripe_api: stripe.StripeClient, subscription_id: str, number: str) -> None:
    """The customer's card for the subscription becomes `number` (as in Stripe's portal)."""
    sub = stripe_api.v1.subscriptions.retrieve(subscription_id)
    pm = card(stripe_api, number)
    stripe_api.v1.payment_methods.attach(pm, params={"customer": str(sub.customer)})
    stripe_api.v1.subscriptions.update(subscription_id, params={"default_payment_method": pm})


def test_checkout_on_the_standin_page_makes_the_subscription_a_new_license_and_a_mail(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    member: Member,
) -> None:
    trial = current_claims(client, services, member)
    assert (trial["plan"], trial["status"], trial["features"]) == (
        "trial",
        "trialing",
        TRIAL_FEATURES,
    )
    url = checkout(client, member)["checkout_url"]
    page = pay_on_page(url)
    assert page.status_code == 303, page.text
    session = checkout_session(stripe_api, url)
    assert page.headers["location"] == URLS["success_url"]
    assert (session["status"], session["payment_status"], session["url"]) == (
        "complete",
        "paid",
        None,
    )
    sent = _sync(client, worker, stripe_events)
    assert {"checkout.session.completed", "customer.subscription.created", "invoice.paid"} <= set(
        sent
    )
    subscription = as_dict(stripe_api.v1.subscriptions.retrieve(session["subscription"]))
    assert subscription["metadata"]["customer_id"] == member.customer_id
    assert subscription["items"]["data"][0]["price"]["id"] == PRICE["starter"]
    period_end = at(subscription["current_period_end"])
    now = me(client, member)
    assert (now["plan"], now["status"], now["features"]) == ("starter", "active", STARTER_FEATURES)
    assert parse_time(now["current_period_ends_at"]) == period_end
    claims = current_claims(client, services, member)
    assert (claims["plan"], claims["status"], claims["features"]) == (
        "starter",
        "active",
        STARTER_FEATURES,
    )
    assert claims["exp"] == int((period_end + GRACE).timestamp())
    issued = licenses_of(services, member.customer_id)
    assert [(lic.plan_code, lic.status) for lic in issued] == [
        ("trial", "trialing"),
        ("starter", "active"),
    ]
    mails = license_mails(services, member.email)
    assert [lic.token in mail.body_text for lic, mail in zip(issued, mails, strict=True)] == [
        True,
        True,
    ]
    with services.db.transaction() as db:
        completed = db.scalar(
            select(StripeEvent.status).where(StripeEvent.type == "checkout.session.completed")
        )
    assert completed == EventStatus.PROCESSED


def test_a_plan_change_switches_the_price_in_stripe_and_the_license_carries_its_features(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    member: Member,
) -> None:
    subscription_id = _subscribe(client, worker, stripe_api, stripe_events, member)["subscription"]
    answer = client.post(
        "/subscriptions/change-plan", json={"plan": "professional"}, headers=member.headers
    )
    assert answer.status_code == 200, answer.text
    assert "customer.subscription.updated" in _sync(client, worker, stripe_events)
    remote = as_dict(stripe_api.v1.subscriptions.retrieve(subscription_id))
    assert remote["items"]["data"][0]["price"]["id"] == PRICE["professional"]
    now = me(client, member)
    assert (now["plan"], now["status"], now["features"]) == ("professional", "active", PRO_FEATURES)
    claims = current_claims(client, services, member)
    assert (claims["plan"], claims["features"]) == ("professional", PRO_FEATURES)
    # Prorations wait for the next invoice: unused starter time back, the rest at the new price.
    items = stripe_api.v1.invoice_items.list(params={"customer": remote["customer"]}).data
    credit, debit = sorted(item.amount for item in items)
    assert -900 <= credit < 0 < debit <= 2900


def test_a_paid_renewal_moves_the_period_on_and_licenses_the_new_period(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    localstripe: LocalStripe,
    member: Member,
) -> None:
    subscription_id = _subscribe(client, worker, stripe_api, stripe_events, member)["subscription"]
    first_end = parse_time(me(client, member)["current_period_ends_at"])
    renewed = advance(localstripe.url, subscription_id)
    assert renewed["current_period_start"] == int(first_end.timestamp())
    assert "invoice.paid" in _sync(client, worker, stripe_events)
    invoice = stripe_api.v1.invoices.retrieve(renewed["latest_invoice"])
    assert (invoice.status, invoice.amount_paid, invoice.billing_reason) == (
        "paid",
        900,
        "subscription_cycle",
    )
    now = me(client, member)
    new_end = at(renewed["current_period_end"])
    assert new_end - first_end >= timedelta(days=28)
    assert (now["status"], parse_time(now["current_period_ends_at"])) == ("active", new_end)
    assert current_claims(client, services, member)["exp"] == int((new_end + GRACE).timestamp())


def test_a_declined_renewal_goes_past_due_mails_the_pay_link_and_a_new_card_recovers_it(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    localstripe: LocalStripe,
    member: Member,
) -> None:
    subscription_id = _subscribe(client, worker, stripe_api, stripe_events, member)["subscription"]
    _use_for_renewals(stripe_api, subscription_id, DECLINED_AT_CHARGE)
    renewed = advance(localstripe.url, subscription_id)
    assert "invoice.payment_failed" in _sync(client, worker, stripe_events)
    invoice = stripe_api.v1.invoices.retrieve(renewed["latest_invoice"])
    assert invoice.status == "open"

    past_due = me(client, member)
    assert (past_due["status"], past_due["features"]) == ("past_due", STARTER_FEATURES)
    claims = current_claims(client, services, member)
    assert claims["status"] == "past_due"
    # While the customer pays: the grace from now, not the unpaid period Stripe moved on to.
    assert abs(claims["exp"] - (now_epoch() + int(GRACE.total_seconds()))) <= 10
    [mail] = _mails(services, member.email, "payment_problem")
    assert "failed" in mail.subject
    assert "9.00" in mail.subject
    assert str(invoice.hosted_invoice_url) in mail.body_text
    _sync(client, worker, stripe_events)  # the same news again sends no second mail
    assert len(_mails(services, member.email, "payment_problem")) == 1

    # The customer follows the link and pays with another card.
    declined = pay_on_page(str(invoice.hosted_invoice_url), GENERIC_DECLINE)
    assert (declined.status_code, page_alert(declined)) == (402, "Your card was declined.")
    paid = pay_on_page(str(invoice.hosted_invoice_url), MASTERCARD)
    assert paid.status_code == 200, paid.text
    assert "Status: paid" in paid.text
    assert "invoice.paid" in _sync(client, worker, stripe_events)
    recovered = me(client, member)
    assert recovered["status"] == "active"
    period_end = parse_time(recovered["current_period_ends_at"])
    assert current_claims(client, services, member)["exp"] == int((period_end + GRACE).timestamp())
    assert [lic.status for lic in licenses_of(services, member.customer_id)] == [
        "trialing",
        "active",
        "past_due",
        "active",
    ]
    remote = stripe_api.v1.subscriptions.retrieve(subscription_id)
    method = as_dict(stripe_api.v1.payment_methods.retrieve(str(remote["default_payment_method"])))
    assert (method["card"]["brand"], method["card"]["last4"]) == ("mastercard", "4444")


def test_a_renewal_needing_authentication_mails_a_confirm_link_that_reactivates_it(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    localstripe: LocalStripe,
    member: Member,
) -> None:
    session = _subscribe(client, worker, stripe_api, stripe_events, member, ALWAYS_AUTHENTICATE)
    renewed = advance(localstripe.url, session["subscription"])
    assert "invoice.payment_action_required" in _sync(client, worker, stripe_events)
    assert me(client, member)["status"] == "past_due"
    invoice = stripe_api.v1.invoices.retrieve(renewed["latest_invoice"])
    [mail] = _mails(services, member.email, "payment_problem")
    assert mail.subject.startswith("Please confirm your payment")
    with services.db.transaction() as db:
        ours = db.scalar(select(Invoice.id).where(Invoice.stripe_invoice_id == invoice.id))
    # Billfold's own confirm page (its browser journey: tests/pages/).
    assert f"{services.settings.backend_url}/billing/invoices/{ours}/authenticate" in (
        mail.body_text
    )
    page = pay_on_page(str(invoice.hosted_invoice_url), ALWAYS_AUTHENTICATE)
    confirmed = authenticate_on_page(page, complete=True)
    assert "Status: paid" in confirmed.text, confirmed.text
    _sync(client, worker, stripe_events)
    assert me(client, member)["status"] == "active"


def test_cancel_at_period_end_then_the_period_ends_and_the_subscription_is_canceled(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    localstripe: LocalStripe,
    member: Member,
) -> None:
    subscription_id = _subscribe(client, worker, stripe_api, stripe_events, member)["subscription"]
    later = client.post("/subscriptions/cancel", json={"atPeriodEnd": True}, headers=member.headers)
    assert later.status_code == 200, later.text
    _sync(client, worker, stripe_events)
    pending = me(client, member)
    assert (pending["status"], pending["cancel_at_period_end"]) == ("active", True)
    period_end = pending["current_period_ends_at"]

    ended = advance(localstripe.url, subscription_id)
    assert (ended["status"], ended["ended_at"]) == ("canceled", ended["current_period_end"])
    assert ended["canceled_at"] is not None
    assert "customer.subscription.deleted" in _sync(client, worker, stripe_events)
    now = me(client, member)
    assert (now["status"], now["current_period_ends_at"]) == ("canceled", period_end)
    license_now = current_license(client, member)
    claims = unverified_claims(license_now["token"])
    assert (claims["status"], claims["features"]) == ("canceled", {})
    assert stripe_api.v1.invoices.list(params={"subscription": subscription_id}).data[0].status == (
        "paid"
    )  # only the first invoice: nothing billed for a period that never came


@pytest.mark.parametrize("approved", [True, False], ids=["approved", "refused"])
def test_3d_secure_at_checkout_asks_first_and_only_an_approval_subscribes(
    approved: bool,
    client: TestClient,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    member: Member,
) -> None:
    url = checkout(client, member)["checkout_url"]
    asked = pay_on_page(url, ALWAYS_AUTHENTICATE)
    assert asked.status_code == 200
    assert "Authenticate your payment" in asked.text
    answered = authenticate_on_page(asked, complete=approved)
    _sync(client, worker, stripe_events)
    session = checkout_session(stripe_api, url)
    if approved:
        assert (answered.status_code, session["status"]) == (303, "complete")
        assert me(client, member)["status"] == "active"
        return
    assert (answered.status_code, session["status"]) == (402, "open")
    assert page_alert(answered).startswith(AUTH_FAILED)
    assert "Card number" in answered.text  # still on the page, to try another card
    assert (me(client, member)["plan"], me(client, member)["status"]) == ("trial", "trialing")
    assert session["subscription"] is None
    retried = pay_on_page(url)
    assert retried.status_code == 303
    _sync(client, worker, stripe_events)
    assert me(client, member)["status"] == "active"


def test_a_declined_card_at_checkout_is_shown_on_the_page_and_changes_nothing(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    member: Member,
) -> None:
    url = checkout(client, member)["checkout_url"]
    for number, message in (
        (GENERIC_DECLINE, "Your card was declined."),
        ("4000000000009995", "Your card has insufficient funds."),
        (DECLINED_AT_CHARGE, "Your card was declined."),
    ):
        page = pay_on_page(url, number)
        assert (page.status_code, page_alert(page)) == (402, message)
    _sync(client, worker, stripe_events)
    assert checkout_session(stripe_api, url)["status"] == "open"
    stripe_customer = str(stripe_customer_of(services, member.customer_id))
    assert stripe_api.v1.subscriptions.list(params={"customer": stripe_customer}).data == []
    assert me(client, member)["status"] == "trialing"


def test_a_canceled_checkout_leaves_the_trial_and_the_expired_session_cannot_be_paid(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    member: Member,
) -> None:
    url = checkout(client, member)["checkout_url"]
    page = pay_on_page(url, "")  # nothing typed: the form asks again
    assert page.status_code == 402
    assert f"href='{URLS['cancel_url']}'" in page.text  # "Back" leads to cancel_url
    # The customer leaves; Stripe expires the session later.
    stripe_api.v1.checkout.sessions.expire(checkout_session(stripe_api, url)["id"])
    assert "checkout.session.expired" in _sync(client, worker, stripe_events)
    assert (me(client, member)["plan"], me(client, member)["status"]) == ("trial", "trialing")
    late = pay_on_page(url)
    assert late.status_code == 410
    assert checkout_session(stripe_api, url)["status"] == "expired"
    # A new checkout still works.
    assert _subscribe(client, worker, stripe_api, stripe_events, member)["status"] == "complete"
