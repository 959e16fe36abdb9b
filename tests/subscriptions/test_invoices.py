"""Invoices for customers: every invoice the stand-in makes (first payment, renewals, a
declined renewal paid later on its page) reaches `GET /invoices` through Stripe's
`invoice.*` events, with its number, period, amounts, status and links."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import httpx
import pytest
import stripe
from fastapi.testclient import TestClient
from sqlalchemy import select
from subscription_steps import (
    DECLINED_AT_CHARGE,
    ON_FIRST_PAYMENT,
    Member,
    advance,
    as_dict,
    at,
    parse_time,
    pay_on_page,
    seed_plans,
    sign_up,
    subscribe,
    sync,
)
from support.payments import card
from support.stripe_events import EventRelay

from billfold.customers.stripe_sync import ensure_stripe_customer
from billfold.jobs.worker import Worker
from billfold.kit import audit
from billfold.kit.db import utcnow
from billfold.services import Services
from billfold.standin import LocalStripe
from billfold.stripe_gateway import StripeInvoice
from billfold.subscriptions import invoices
from billfold.subscriptions.models import Invoice

MASTERCARD = "5555555555554444"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return dict(ON_FIRST_PAYMENT)


@pytest.fixture
def member(client: TestClient, admin: dict[str, str], stripe_api: stripe.StripeClient) -> Member:
    seed_plans(client, admin, stripe_api)
    return sign_up(client)


def _invoices(client: TestClient, headers: dict[str, str], **query: Any) -> dict[str, Any]:
    answer = client.get("/invoices", params=query, headers=headers)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_each_renewal_is_listed_with_its_number_period_amounts_and_links(
    client: TestClient,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    localstripe: LocalStripe,
    member: Member,
) -> None:
    subscription_id = subscribe(client, worker, stripe_api, stripe_events, member)
    first_period = as_dict(stripe_api.v1.subscriptions.retrieve(subscription_id))
    renewed = advance(localstripe.url, subscription_id)
    sync(client, worker, stripe_events)

    listed = _invoices(client, member.headers)["data"]
    assert [(i["status"], i["amountDue"], i["amountPaid"], i["currency"]) for i in listed] == [
        ("paid", 900, 900, "usd"),
        ("paid", 900, 900, "usd"),
    ]
    renewal, first = listed  # newest first
    assert (renewal["billingReason"], first["billingReason"]) == (
        "subscription_cycle",
        "subscription_create",
    )
    assert renewal["stripeInvoiceId"] == renewed["latest_invoice"]
    assert renewal["number"]
    assert first["number"]
    assert renewal["number"] != first["number"]
    assert parse_time(renewal["periodStart"]) == at(first_period["current_period_end"])
    assert parse_time(renewal["periodEnd"]) == at(renewed["current_period_end"])
    assert renewal["hostedInvoiceUrl"] == f"{localstripe.url}/invoice/{renewed['latest_invoice']}"
    pdf = httpx.get(renewal["invoicePdf"])
    assert (pdf.status_code, pdf.headers["content-type"]) == (200, "application/pdf")
    assert pdf.content.startswith(b"%PDF-")
    assert renewal["number"].encode() in pdf.content


def test_a_declined_renewal_is_open_until_paid_on_its_page(
    client: TestClient,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    localstripe: LocalStripe,
    member: Member,
) -> None:
    subscription_id = subscribe(client, worker, stripe_api, stripe_events, member)
    sub = stripe_api.v1.subscriptions.retrieve(subscription_id)
    declining = card(stripe_api, DECLINED_AT_CHARGE)
    stripe_api.v1.payment_methods.attach(declining, params={"customer": str(sub.customer)})
    stripe_api.v1.subscriptions.update(
        subscription_id, params={"default_payment_method": declining}
    )
    advance(localstripe.url, subscription_id)
    sync(client, worker, stripe_events)
    renewal = _invoices(client, member.headers)["data"][0]
    assert (renewal["status"], renewal["amountDue"], renewal["amountPaid"]) == ("open", 900, 0)

    paid = pay_on_page(renewal["hostedInvoiceUrl"], MASTERCARD)
    assert "Status: paid" in paid.text, paid.text
    sync(client, worker, stripe_events)
    again = _invoices(client, member.headers)["data"][0]
    assert (again["id"], again["status"], again["amountPaid"]) == (renewal["id"], "paid", 900)


def test_customers_see_their_own_invoices_and_admins_any_customers_paged(
    client: TestClient,
    worker: Worker[Services],
    admin: dict[str, str],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    localstripe: LocalStripe,
    member: Member,
) -> None:
    subscription_id = subscribe(client, worker, stripe_api, stripe_events, member)
    advance(localstripe.url, subscription_id)
    other = sign_up(client)
    subscribe(client, worker, stripe_api, stripe_events, other)

    assert _invoices(client, other.headers)["page"]["total"] == 1
    peek = client.get("/invoices", params={"customerId": member.customer_id}, headers=other.headers)
    assert peek.status_code == 404, peek.text

    first_page = _invoices(client, admin, customerId=member.customer_id, limit=1)
    assert first_page["page"] == {"limit": 1, "offset": 0, "total": 2, "nextOffset": 1}
    assert first_page["data"][0]["customerId"] == member.customer_id
    everyone = _invoices(client, admin)["data"]
    assert {i["customerId"] for i in everyone} == {member.customer_id, other.customer_id}
    assert len(everyone) == 3
    paid_only = _invoices(client, admin, status="open")
    assert paid_only["data"] == []


def test_an_invoice_of_billions_of_minor_units_is_stored_whole_and_only_once(
    client: TestClient, services: Services, member: Member
) -> None:
    """21.5 million rupiah is past 2^31 minor units; and an event about a new invoice that
    finds it stored meanwhile by a parallel event's worker takes that row, not a second."""
    stripe_customer = ensure_stripe_customer(services, member.customer_id, inline=True)
    big = StripeInvoice(
        id="in_billions",
        status="open",
        amount_due=3_000_000_000,
        currency="idr",
        attempt_count=1,
        hosted_invoice_url=None,
        subscription=None,
        customer=stripe_customer,
        total=3_000_000_000,
    )
    with services.db.transaction() as session:
        stored = invoices.record(session, big, event_at=None)
        assert stored is not None
        stored_id = stored.id
    with services.db.transaction() as session:
        # What the parallel event's insert meets: the row is there, its own insert refused.
        raced = invoices._insert_or_load(session, big, member.customer_id)
        assert raced.id == stored_id
        audit.record(session, "test", "after.race", raced.id)
        session.flush()  # the transaction goes on after the refused insert
    [row] = _invoices(client, member.headers)["data"]
    assert (row["amountDue"], row["total"], row["currency"]) == (
        3_000_000_000,
        3_000_000_000,
        "idr",
    )


@pytest.mark.parametrize("final", ["paid", "void", "uncollectible"])
def test_a_read_from_before_a_final_status_never_moves_the_invoice_back(
    final: str, services: Services, member: Member
) -> None:
    """The authenticate page reads the invoice open, the `invoice.paid` (or voided, or
    uncollectible) event stores what followed, and the page's write, with no event time,
    lands last: the invoice keeps the later status."""
    stripe_customer = ensure_stripe_customer(services, member.customer_id, inline=True)
    read_open = StripeInvoice(
        id=f"in_read_before_{final}",
        status="open",
        amount_due=900,
        currency="usd",
        attempt_count=1,
        hosted_invoice_url=None,
        subscription=None,
        customer=stripe_customer,
        total=900,
    )
    later = replace(read_open, status=final, amount_paid=900 if final == "paid" else 0)
    with services.db.transaction() as session:
        invoices.record(session, read_open, event_at=None)  # the page's first read
        invoices.record(session, later, event_at=utcnow())  # the event
    with services.db.transaction() as session:
        invoices.record(session, read_open, event_at=None)  # the page's write lands last
    with services.db.transaction() as session:
        stored = session.scalar(select(Invoice).where(Invoice.stripe_invoice_id == read_open.id))
        assert stored is not None
        assert (stored.status, stored.amount_paid) == (final, later.amount_paid)
        if final == "uncollectible":  # Stripe may still take the payment afterwards
            invoices.record(session, replace(later, status="paid"), event_at=None)
            assert stored.status == "paid"
