"""Dunning against the Stripe stand-in: a renewal fails → the subscription goes past due and
the customer is mailed the pay link → reminders on DUNNING_REMINDER_DAYS (an injected clock,
no waiting) → the customer makes a new card the default → it becomes the subscription's card
and pays the invoice. And when Stripe gives up, the subscription ends and the customer is
told, once."""

from __future__ import annotations

import signal
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe
from conftest import STRIPE_KEY
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from subscription_steps import (
    DECLINED_AT_CHARGE,
    ON_FIRST_PAYMENT,
    STARTER_FEATURES,
    Member,
    advance,
    authenticate_on_page,
    checkout,
    me,
    pay_on_page,
    seed_plans,
    sign_up,
)
from support.netfault import FaultyLink
from support.pages import sign_in
from support.payments import card
from support.server_process import start_server_process
from support.stripe_events import EventRelay

from billfold.config import Settings
from billfold.jobs.models import Job
from billfold.jobs.worker import Worker
from billfold.kit.db import utcnow
from billfold.mail.models import OutboxMail
from billfold.services import Services
from billfold.standin import LocalStripe
from billfold.subscriptions.dunning import (
    after_subscription_change,
    on_default_card,
    send_reminders,
)
from billfold.subscriptions.dunning.models import DunningCase, DunningNotice
from billfold.subscriptions.dunning.service import CARD_ANSWER_WAIT, CARD_JOB
from billfold.subscriptions.handlers import HANDLERS
from billfold.subscriptions.models import Invoice

MASTERCARD = "5555555555554444"
ALWAYS_AUTHENTICATE = "4000002760003184"  # 3-D Secure on every charge, even off-session


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # The billing pages answer the test client (plain http, its own origin).
    pages = {"pages_secure_cookies": False, "backend_url": "http://testserver"}
    return {**ON_FIRST_PAYMENT, **pages, "dunning_reminder_days": "1,3,7"}


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
    events: EventRelay,
    member: Member,
    number: str = "4242424242424242",
) -> str:
    """The member pays for starter on the stand-in's Checkout page; answers the subscription."""
    url = checkout(client, member)["checkout_url"]
    page = pay_on_page(url, number)
    if number == ALWAYS_AUTHENTICATE:
        page = authenticate_on_page(page, complete=True)
    assert page.status_code == 303, page.text
    _sync(client, worker, events)
    subscribed = me(client, member)
    assert subscribed["status"] == "active"
    return str(subscribed["id"])


def _stripe_subscription(services: Services, member: Member) -> str:
    from billfold.subscriptions.models import Subscription

    with services.db.transaction() as session:
        found = session.scalar(
            select(Subscription.stripe_subscription_id).where(
                Subscription.customer_id == member.customer_id
            )
        )
        assert found is not None
        return found


def _renewals_declined(stripe_api: stripe.StripeClient, subscription_id: str) -> None:
    """The subscription's own card (Checkout set it) becomes one the bank declines."""
    sub = stripe_api.v1.subscriptions.retrieve(subscription_id)
    pm = card(stripe_api, DECLINED_AT_CHARGE)
    stripe_api.v1.payment_methods.attach(pm, params={"customer": str(sub.customer)})
    stripe_api.v1.subscriptions.update(subscription_id, params={"default_payment_method": pm})


def _mails(services: Services, email: str) -> list[OutboxMail]:
    with services.db.transaction() as session:
        found = list(
            session.scalars(
                select(OutboxMail)
                .where(
                    OutboxMail.to_address == email,
                    OutboxMail.kind.in_(["payment_problem", "subscription_ended"]),
                )
                .order_by(OutboxMail.created_at)
            )
        )
        session.expunge_all()
        return found


def _invoice_id(services: Services, stripe_invoice_id: str) -> str:
    """Billfold's ID of Stripe's invoice (the one its pages use)."""
    with services.db.transaction() as session:
        found = session.scalar(
            select(Invoice.id).where(Invoice.stripe_invoice_id == stripe_invoice_id)
        )
        assert found is not None
        return found


def _case(services: Services, member: Member) -> DunningCase:
    with services.db.transaction() as session:
        case = session.scalar(
            select(DunningCase).where(DunningCase.customer_id == member.customer_id)
        )
        assert case is not None
        session.expunge(case)
        return case


def _failed_renewal(
    client: TestClient,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    events: EventRelay,
    localstripe: LocalStripe,
    member: Member,
    services: Services,
) -> tuple[str, dict[str, Any]]:
    _subscribe(client, worker, events, member)
    subscription_id = _stripe_subscription(services, member)
    _renewals_declined(stripe_api, subscription_id)
    renewed = advance(localstripe.url, subscription_id)
    assert "invoice.payment_failed" in _sync(client, worker, events)
    return subscription_id, renewed


def test_a_failed_renewal_is_mailed_reminded_on_schedule_and_paid_by_a_new_default_card(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    localstripe: LocalStripe,
    member: Member,
) -> None:
    subscription_id, renewed = _failed_renewal(
        client, worker, stripe_api, stripe_events, localstripe, member, services
    )
    past_due = me(client, member)
    assert (past_due["status"], past_due["features"]) == ("past_due", STARTER_FEATURES)
    invoice = stripe_api.v1.invoices.retrieve(renewed["latest_invoice"])
    [first] = _mails(services, member.email)
    assert first.subject == "Your payment of 9.00 USD for Starter failed"
    assert str(invoice.hosted_invoice_url) in first.body_text
    case = _case(services, member)
    assert (case.stripe_invoice_id, case.amount_due, case.closed_at) == (invoice.id, 900, None)

    browser = TestClient(client.app)  # the billing pages show it too (own cookies)
    sign_in(browser, member.email, "correct horse 1")
    banner = browser.get("/billing").text
    assert 'data-testid="dunning-banner"' in banner
    assert "Your payment of 9.00 USD failed." in banner
    assert f'href="{invoice.hosted_invoice_url}"' in banner
    assert 'data-testid="dunning-banner"' in browser.get("/billing/cards").text
    plan_page = browser.get("/billing/plan").text  # the banner, and the invoice still due
    assert 'data-testid="dunning-banner"' in plan_page
    assert "9.00 USD due" in plan_page
    assert 'aria-label="View invoice' in plan_page

    opened: datetime = case.opened_at
    assert send_reminders(services, now=opened + timedelta(hours=23)) == 0
    assert send_reminders(services, now=opened + timedelta(days=1)) == 1
    assert send_reminders(services, now=opened + timedelta(days=2)) == 0  # day 1's, sent
    assert send_reminders(services, now=opened + timedelta(days=3, hours=1)) == 1
    reminders = _mails(services, member.email)[1:]
    assert [m.subject for m in reminders] == [
        "Reminder: your payment of 9.00 USD for Starter is still due"
    ] * 2
    assert all(str(invoice.hosted_invoice_url) in m.body_text for m in reminders)

    # The customer adds a card in Billfold and makes it the default.
    pm = card(stripe_api, MASTERCARD)
    added = client.post(
        "/payments/customer/payment-methods", json={"paymentMethodId": pm}, headers=member.headers
    )
    assert added.status_code == 200, added.text
    made = client.patch(
        "/payments/customer/default-payment-method",
        json={"paymentMethodId": pm},
        headers=member.headers,
    )
    assert made.status_code == 200, made.text
    worker.run_until_idle()  # the new card becomes the subscription's and pays the invoice
    assert "invoice.paid" in _sync(client, worker, stripe_events)

    assert me(client, member)["status"] == "active"
    assert stripe_api.v1.invoices.retrieve(invoice.id).status == "paid"
    remote = stripe_api.v1.subscriptions.retrieve(subscription_id)
    assert remote["default_payment_method"] == pm
    assert _case(services, member).outcome == "paid"
    assert "dunning-banner" not in browser.get("/billing").text
    assert send_reminders(services, now=opened + timedelta(days=7)) == 0
    assert len(_mails(services, member.email)) == 3


def test_a_server_killed_on_stripes_answer_to_a_new_default_card_still_pays_the_invoice(
    client: TestClient,
    services: Services,
    settings: Settings,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    stripe_link: FaultyLink,
    localstripe: LocalStripe,
    member: Member,
    tmp_path: Path,
) -> None:
    """The two steps of a new default card, Stripe making it the customer's and the job that
    makes it the subscription's and pays the open invoice: the job is queued before Stripe
    is asked, so a server that dies as Stripe answers loses nothing."""
    subscription_id, renewed = _failed_renewal(
        client, worker, stripe_api, stripe_events, localstripe, member, services
    )
    pm = card(stripe_api, MASTERCARD)
    client.post(
        "/payments/customer/payment-methods", json={"paymentMethodId": pm}, headers=member.headers
    ).raise_for_status()
    server, url = start_server_process(settings, stripe_link.url, STRIPE_KEY, tmp_path)
    answers: list[Any] = []

    def make_default() -> None:
        try:
            answers.append(
                httpx.patch(
                    f"{url}/payments/customer/default-payment-method",
                    json={"paymentMethodId": pm},
                    headers=member.headers,
                    timeout=30,
                )
            )
        except httpx.TransportError as exc:
            answers.append(exc)

    # Stripe makes the card the customer's default; the server dies before hearing so.
    stripe_link.hold_responses(only=b"POST /v1/customers/")
    caller = threading.Thread(target=make_default)
    try:
        caller.start()
        assert stripe_link.wait_for_held_response(timeout=30)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
    finally:
        if server.poll() is None:
            server.kill()
        stripe_link.up()
        caller.join(timeout=30)
    assert isinstance(answers[0], httpx.TransportError)  # the caller never got an answer
    stripe_customer = str(stripe_api.v1.subscriptions.retrieve(subscription_id).customer)
    customer = stripe_api.v1.customers.retrieve(stripe_customer)
    assert customer["invoice_settings"]["default_payment_method"] == pm  # Stripe did it

    worker.run_until_idle()  # the job queued before the call does the rest
    assert "invoice.paid" in _sync(client, worker, stripe_events)
    assert stripe_api.v1.subscriptions.retrieve(subscription_id)["default_payment_method"] == pm
    assert stripe_api.v1.invoices.retrieve(renewed["latest_invoice"]).status == "paid"
    assert me(client, member)["status"] == "active"
    assert _case(services, member).outcome == "paid"


def test_a_card_stripe_never_made_the_default_is_not_put_on_the_subscription(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    localstripe: LocalStripe,
    member: Member,
) -> None:
    """The job is queued before Stripe is asked. When the process dies before asking, the
    job waits while the request could still be asking, then leaves the subscription alone."""
    subscription_id, renewed = _failed_renewal(
        client, worker, stripe_api, stripe_events, localstripe, member, services
    )
    before = stripe_api.v1.subscriptions.retrieve(subscription_id)["default_payment_method"]
    pm = card(stripe_api, MASTERCARD)
    client.post(
        "/payments/customer/payment-methods", json={"paymentMethodId": pm}, headers=member.headers
    ).raise_for_status()
    with services.db.transaction() as session:  # what set_default does before asking Stripe
        on_default_card(session, member.customer_id, pm)

    worker.run_until_idle()
    [job] = _card_jobs(services)
    # Deferred, not failed: the request that queued it may still be asking Stripe.
    assert (job.status, job.attempts) == ("pending", 0)
    assert job.last_error == f"{pm} is not the customer's default yet"
    with services.db.transaction() as session:  # ...until its time to answer is over
        queued = session.get(Job, job.id)
        assert queued is not None
        asked = datetime.fromisoformat(queued.payload["asked_at"]) - CARD_ANSWER_WAIT
        queued.payload = {**queued.payload, "asked_at": asked.isoformat()}
        queued.run_at = utcnow()
    worker.run_until_idle()

    assert [j.status for j in _card_jobs(services)] == ["done"]
    remote = stripe_api.v1.subscriptions.retrieve(subscription_id)
    assert remote["default_payment_method"] == before
    assert stripe_api.v1.invoices.retrieve(renewed["latest_invoice"]).status == "open"
    assert _case(services, member).closed_at is None


def _card_jobs(services: Services) -> list[Job]:
    with services.db.transaction() as session:
        found = list(session.scalars(select(Job).where(Job.kind == CARD_JOB)))
        session.expunge_all()
        return found


def test_a_payment_failed_event_reads_its_invoice_from_stripe_once(
    monkeypatch: pytest.MonkeyPatch,
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    localstripe: LocalStripe,
    member: Member,
) -> None:
    """Storing the invoice and opening its case share one read of it."""
    subscription_id, renewed = _failed_renewal(
        client, worker, stripe_api, stripe_events, localstripe, member, services
    )
    invoice = stripe_api.v1.invoices.retrieve(renewed["latest_invoice"])
    read: list[str] = []
    real_retrieve = services.stripe.retrieve_invoice

    def retrieve_invoice(invoice_id: str) -> Any:
        read.append(invoice_id)
        return real_retrieve(invoice_id)

    monkeypatch.setattr(services.stripe, "retrieve_invoice", retrieve_invoice)
    event = {
        "id": "evt_read_once",
        "type": "invoice.payment_failed",
        "created": int(utcnow().timestamp()),
        "data": {
            "object": {
                "id": invoice.id,
                "customer": str(invoice.customer),
                "subscription": subscription_id,
            }
        },
    }
    outcome = HANDLERS["invoice.payment_failed"](services, event)

    assert (outcome.status, read) == ("processed", [invoice.id])
    assert _case(services, member).stripe_invoice_id == invoice.id


def test_when_stripe_gives_up_the_subscription_ends_and_the_customer_is_told_once(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    localstripe: LocalStripe,
    member: Member,
) -> None:
    subscription_id, _ = _failed_renewal(
        client, worker, stripe_api, stripe_events, localstripe, member, services
    )
    # Stripe's retries are over and the account's setting cancels the subscription.
    stripe_api.v1.subscriptions.cancel(subscription_id)
    assert "customer.subscription.deleted" in _sync(client, worker, stripe_events)

    ended = me(client, member)
    assert (ended["status"], ended["features"]) == ("canceled", {})
    mails = _mails(services, member.email)
    assert [m.subject for m in mails] == [
        "Your payment of 9.00 USD for Starter failed",
        "Your Starter subscription has ended",
    ]
    assert _case(services, member).outcome == "gave_up"
    after_subscription_change(services, subscription_id)  # the same news again
    assert send_reminders(services, now=_case(services, member).opened_at + timedelta(days=7)) == 0
    assert len(_mails(services, member.email)) == 2


def test_a_renewal_needing_authentication_mails_and_reminds_the_confirm_page(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    localstripe: LocalStripe,
    member: Member,
) -> None:
    _subscribe(client, worker, stripe_events, member, ALWAYS_AUTHENTICATE)
    renewed = advance(localstripe.url, _stripe_subscription(services, member))
    assert "invoice.payment_action_required" in _sync(client, worker, stripe_events)
    invoice = stripe_api.v1.invoices.retrieve(renewed["latest_invoice"])

    assert send_reminders(services, now=_case(services, member).opened_at + timedelta(days=1)) == 1
    first, reminder = _mails(services, member.email)
    assert first.subject == "Please confirm your payment of 9.00 USD for Starter"
    ours = _invoice_id(services, invoice.id)
    page_url = f"http://testserver/billing/invoices/{ours}/authenticate"
    for mail in (first, reminder):
        assert "Your bank asks you to confirm this payment" in mail.body_text
        assert page_url in mail.body_text  # Billfold's own page, not Stripe's
        assert str(invoice.hosted_invoice_url) not in mail.body_text

    browser = TestClient(client.app)
    sign_in(browser, member.email, "correct horse 1")
    page = browser.get(page_url)
    assert page.status_code == 200, page.text
    assert str(invoice.number) in page.text
    assert "9.00 USD" in page.text
    assert "Confirm with my bank" in page.text
    assert "_secret_" in page.text  # the payment intent's client secret, for Stripe.js

    confirmed = authenticate_on_page(
        pay_on_page(str(invoice.hosted_invoice_url), ALWAYS_AUTHENTICATE), complete=True
    )
    assert "Status: paid" in confirmed.text
    _sync(client, worker, stripe_events)
    assert me(client, member)["status"] == "active"
    assert _case(services, member).outcome == "paid"
    paid = browser.get(page_url)
    assert "This invoice is paid." in paid.text
    assert "Confirm with my bank" not in paid.text


def test_someone_elses_or_an_unknown_invoice_has_no_authenticate_page(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    localstripe: LocalStripe,
    member: Member,
) -> None:
    _subscribe(client, worker, stripe_events, member, ALWAYS_AUTHENTICATE)
    renewed = advance(localstripe.url, _stripe_subscription(services, member))
    assert "invoice.payment_action_required" in _sync(client, worker, stripe_events)
    theirs = _invoice_id(services, renewed["latest_invoice"])

    other = sign_up(client)
    browser = TestClient(client.app)
    sign_in(browser, other.email, "correct horse 1")
    for path in (
        f"/billing/invoices/{theirs}/authenticate",
        "/billing/invoices/inv_nonexistent/authenticate",
    ):
        page = browser.get(path)
        assert page.status_code == 404, path
        assert "Not found" in page.text
        assert "_secret_" not in page.text
    refused = browser.post(f"/billing/invoices/{theirs}/confirm", data={})
    assert refused.status_code in (403, 404)


def test_each_step_of_an_invoice_is_recorded_once_by_the_database(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    localstripe: LocalStripe,
    member: Member,
) -> None:
    _failed_renewal(client, worker, stripe_api, stripe_events, localstripe, member, services)
    case = _case(services, member)
    with pytest.raises(IntegrityError), services.db.transaction() as session:
        session.add(DunningNotice(case_id=case.id, step="failed"))
    with services.db.transaction() as session:
        steps = session.scalars(select(DunningNotice.step).where(DunningNotice.case_id == case.id))
        assert list(steps) == ["failed"]


def test_a_reminder_due_for_an_invoice_paid_meanwhile_closes_the_case_and_mails_nothing(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    localstripe: LocalStripe,
    member: Member,
) -> None:
    _, renewed = _failed_renewal(
        client, worker, stripe_api, stripe_events, localstripe, member, services
    )
    invoice = stripe_api.v1.invoices.retrieve(renewed["latest_invoice"])
    paid = pay_on_page(str(invoice.hosted_invoice_url), MASTERCARD)  # its event not relayed
    assert "Status: paid" in paid.text

    assert send_reminders(services, now=_case(services, member).opened_at + timedelta(days=1)) == 0

    assert _case(services, member).outcome == "paid"
    assert len(_mails(services, member.email)) == 1
