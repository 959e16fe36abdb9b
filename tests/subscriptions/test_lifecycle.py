"""Trial → checkout → active → renewal → failed payment → cancel, end to end, against a real
localstripe (only Checkout and the Billing Portal answer from Stripe's fixtures)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import stripe
from factories import register
from fastapi.testclient import TestClient
from subscription_steps import (
    DECLINED_AT_CHARGE,
    ON_FIRST_PAYMENT,
    PRICE,
    STARTER_FEATURES,
    TRIAL_FEATURES,
    as_dict,
    at,
    checkout,
    checkout_requests,
    complete_checkout,
    current_claims,
    current_license,
    deliver,
    deliver_paid_checkout,
    license_mails,
    licenses_of,
    me,
    now_epoch,
    parse_time,
    seed_plans,
    sign_up,
    stripe_customer_of,
    unverified_claims,
    use_card,
)
from support.payments import VISA
from support.stripe_fakes import StandInWithFixtures

from billfold.jobs.worker import Worker
from billfold.mail.models import MailStatus
from billfold.services import Services
from billfold.subscriptions.licenses import InvalidLicense, verify

GRACE = timedelta(days=3)  # the default LICENSE_GRACE_DAYS


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return dict(ON_FIRST_PAYMENT)


def test_trial_checkout_active_renewal_failed_payment_cancel(
    client: TestClient,
    admin: dict[str, str],
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_fakes: list[StandInWithFixtures],
) -> None:
    seed_plans(client, admin, stripe_api)
    member = sign_up(client)

    # Trial: no Stripe customer yet, and a license at once.
    trial = me(client, member)
    assert (trial["plan"], trial["status"], trial["features"]) == (
        "trial",
        "trialing",
        TRIAL_FEATURES,
    )
    assert stripe_customer_of(services, member.customer_id) is None
    claims = current_claims(client, services, member)
    assert (claims["plan"], claims["status"], claims["features"]) == (
        "trial",
        "trialing",
        TRIAL_FEATURES,
    )
    assert claims["exp"] == int(parse_time(trial["trialEndsAt"]).timestamp())

    # Checkout: the Stripe customer is made now, and the session is for it.
    assert checkout(client, member)["checkout_url"].startswith("https://checkout.stripe.com/")
    stripe_customer = stripe_customer_of(services, member.customer_id)
    [request] = checkout_requests(stripe_fakes)
    assert stripe_customer is not None
    assert request["customer"] == stripe_customer

    # The customer pays on Stripe's page; Stripe tells us.
    paid = complete_checkout(stripe_api, request)
    subscription_id = paid.subscription["id"]
    deliver_paid_checkout(client, paid)
    worker.run_until_idle()
    period_end = at(paid.subscription["current_period_end"])
    active = me(client, member)
    assert (active["plan"], active["status"], active["cancel_at_period_end"]) == (
        "starter",
        "active",
        False,
    )
    assert parse_time(active["current_period_ends_at"]) == period_end
    claims = current_claims(client, services, member)
    assert (claims["plan"], claims["status"], claims["features"]) == (
        "starter",
        "active",
        STARTER_FEATURES,
    )
    assert claims["exp"] == int((period_end + GRACE).timestamp())
    issued = len(licenses_of(services, member.customer_id))

    # Renewal: the next invoice is paid. localstripe cannot move time on, so Stripe still
    # reports the same period; an event claiming a later one changes nothing, since the
    # handler re-reads the subscription from Stripe.
    renewal = stripe_api.v1.invoices.create(
        params={"customer": stripe_customer, "subscription": subscription_id}
    )
    renewal = stripe_api.v1.invoices.pay(renewal.id)
    assert renewal.status == "paid"
    claimed = {
        **paid.subscription,
        "current_period_end": paid.subscription["current_period_end"] + 30 * 86400,
    }
    deliver(client, "invoice.paid", as_dict(renewal))
    deliver(client, "customer.subscription.updated", claimed)
    worker.run_until_idle()
    assert me(client, member) == active
    assert len(licenses_of(services, member.customer_id)) == issued

    # Failed payment: the card on file now declines; the customer switches to annual billing
    # in the portal, Stripe charges the difference at once and the subscription is past due.
    use_card(stripe_api, stripe_customer, DECLINED_AT_CHARGE)
    item = paid.subscription["items"]["data"][0]["id"]
    switched = stripe_api.v1.subscriptions.update(
        subscription_id, params={"items": [{"id": item, "plan": PRICE["starter_annual"]}]}
    )
    assert switched.status == "past_due"
    failed = stripe_api.v1.invoices.retrieve(str(switched.latest_invoice))
    deliver(client, "invoice.payment_failed", as_dict(failed))  # this event alone
    worker.run_until_idle()
    annual_end = at(as_dict(switched)["current_period_end"])
    past_due = me(client, member)
    assert (past_due["plan"], past_due["status"]) == ("starter_annual", "past_due")
    assert parse_time(past_due["current_period_ends_at"]) == annual_end
    claims = current_claims(client, services, member)
    assert (claims["plan"], claims["status"]) == ("starter_annual", "past_due")
    assert claims["exp"] == int(annual_end.timestamp())  # the paid period only: no grace

    # The customer fixes the card; Stripe retries the invoice and it is paid.
    use_card(stripe_api, stripe_customer, VISA)
    retried = stripe_api.v1.invoices.pay(failed.id)
    assert retried.status == "paid"
    deliver(client, "invoice.paid", as_dict(retried))
    worker.run_until_idle()
    recovered = me(client, member)
    assert (recovered["plan"], recovered["status"]) == ("starter_annual", "active")
    claims = current_claims(client, services, member)
    assert (claims["status"], claims["exp"]) == ("active", int((annual_end + GRACE).timestamp()))

    # Cancel at the period's end, then at once.
    later = client.post("/subscriptions/cancel", json={"atPeriodEnd": True}, headers=member.headers)
    assert later.status_code == 200, later.text
    assert (later.json()["data"]["status"], later.json()["data"]["cancel_at_period_end"]) == (
        "active",
        True,
    )
    assert stripe_api.v1.subscriptions.retrieve(subscription_id).cancel_at_period_end is True
    assert current_claims(client, services, member)["status"] == "active"
    now = client.post("/subscriptions/cancel", json={"atPeriodEnd": False}, headers=member.headers)
    assert now.status_code == 200, now.text
    assert now.json()["data"]["status"] == "canceled"
    assert stripe_api.v1.subscriptions.retrieve(subscription_id).status == "canceled"
    ended = current_license(client, member)
    assert ended["status"] == "canceled"
    claims = unverified_claims(ended["token"])
    assert (claims["status"], claims["features"]) == ("canceled", {})
    assert abs(claims["exp"] - now_epoch()) <= 5
    with pytest.raises(InvalidLicense) as refused:
        verify(ended["token"], services.licenses.public_keys())
    assert refused.value.code == "license_expired"

    # Stripe's own event about the cancellation changes nothing more.
    deliver(
        client,
        "customer.subscription.deleted",
        as_dict(stripe_api.v1.subscriptions.retrieve(subscription_id)),
    )
    worker.run_until_idle()
    assert me(client, member)["status"] == "canceled"

    # One license per change (trial, active, past due, recovered, cancel at period end,
    # canceled), each e-mailed with its token.
    issued_licenses = licenses_of(services, member.customer_id)
    assert [lic.status for lic in issued_licenses] == [
        "trialing",
        "active",
        "past_due",
        "active",
        "active",
        "canceled",
    ]
    mails = license_mails(services, member.email)
    assert len(mails) == len(issued_licenses)
    for lic, mail in zip(issued_licenses, mails, strict=True):
        assert lic.token in mail.body_text
        assert mail.status == MailStatus.SENT


def test_resume_without_a_cancellation_is_refused(client: TestClient) -> None:
    data = register(client)
    answer = client.post(
        "/subscriptions/resume",
        json={},
        headers={"Authorization": f"Bearer {data['access_token']}"},
    )
    assert answer.status_code in (404, 409)
    assert answer.json()["error"]["code"] in ("no_subscription", "not_canceling")
