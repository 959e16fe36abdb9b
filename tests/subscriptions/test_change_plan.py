"""Plan changes priced before they happen: the preview (Stripe's invoice preview) says what
the change charges now and at the renewal, and the change then charges exactly that, for
each proration choice. Against the stand-in, its Checkout page and its clock."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import stripe
from fastapi.testclient import TestClient
from subscription_steps import (
    ON_FIRST_PAYMENT,
    PRO_FEATURES,
    Member,
    advance,
    as_dict,
    at,
    me,
    parse_time,
    seed_plans,
    sign_up,
    subscribe,
    sync,
)
from support.pages import post_form, sign_in
from support.stripe_events import EventRelay

from billfold.jobs.worker import Worker
from billfold.kit.db import utcnow
from billfold.services import Services
from billfold.standin import LocalStripe


@pytest.fixture
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    return dict(getattr(request, "param", ON_FIRST_PAYMENT))


@pytest.fixture
def member(client: TestClient, admin: dict[str, str], stripe_api: stripe.StripeClient) -> Member:
    seed_plans(client, admin, stripe_api)
    return sign_up(client)


def _preview(client: TestClient, member: Member, plan: str, **query: str) -> dict[str, Any]:
    answer = client.get(
        "/subscriptions/change-plan/preview", params={"plan": plan, **query}, headers=member.headers
    )
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()["data"]
    return data


def _invoices(stripe_api: stripe.StripeClient, subscription_id: str) -> list[dict[str, Any]]:
    listed = stripe_api.v1.invoices.list(params={"subscription": subscription_id, "limit": 100})
    return sorted((as_dict(i) for i in listed.data), key=lambda i: (i["created"], i["id"]))


@pytest.mark.parametrize("behavior", ["always_invoice", "create_prorations", "none"])
def test_the_preview_equals_what_the_change_then_charges_now_and_at_renewal(
    behavior: str,
    client: TestClient,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    localstripe: LocalStripe,
    member: Member,
) -> None:
    subscription_id = subscribe(client, worker, stripe_api, stripe_events, member)
    period_end = parse_time(me(client, member)["current_period_ends_at"])
    preview = _preview(client, member, "professional", prorationBehavior=behavior)
    assert (preview["plan"], preview["prorationBehavior"], preview["currency"]) == (
        "professional",
        behavior,
        "usd",
    )
    prorations = [line["amount"] for line in preview["lines"] if line["proration"]]
    if behavior == "none":
        assert prorations == []
        assert (preview["dueNow"], preview["nextAmount"]) == (0, 2900)
    else:
        credit, debit = sorted(prorations)  # unused starter time back, the rest at pro's price
        assert -900 <= credit < 0 < debit <= 2900
        if behavior == "always_invoice":
            assert (preview["dueNow"], preview["nextAmount"]) == (credit + debit, 2900)
        else:
            assert (preview["dueNow"], preview["nextAmount"]) == (0, 2900 + credit + debit)
    assert parse_time(preview["nextAt"]) == period_end

    changed = client.post(
        "/subscriptions/change-plan",
        json={
            "plan": "professional",
            "prorationBehavior": behavior,
            "prorationDate": preview["prorationDate"],
        },
        headers=member.headers,
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["data"]["plan"], changed.json()["data"]["features"]) == (
        "professional",
        PRO_FEATURES,
    )
    invoices = _invoices(stripe_api, subscription_id)
    updates = [i for i in invoices if i["billing_reason"] == "subscription_update"]
    assert sum(i["amount_paid"] for i in updates) == preview["dueNow"]
    assert (len(invoices), len(updates)) == ((2, 1) if behavior == "always_invoice" else (1, 0))

    renewed = advance(localstripe.url, subscription_id)
    sync(client, worker, stripe_events)
    renewal = _invoices(stripe_api, subscription_id)[-1]
    assert (renewal["status"], renewal["amount_paid"]) == ("paid", preview["nextAmount"])
    assert at(renewed["current_period_start"]) == period_end
    assert me(client, member)["plan"] == "professional"


@pytest.mark.parametrize(
    "settings_overrides",
    [{**ON_FIRST_PAYMENT, "subscription_proration_behavior": "always_invoice"}],
    indirect=True,
)
def test_the_setting_chooses_the_proration_when_the_call_does_not(
    client: TestClient,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    member: Member,
) -> None:
    subscription_id = subscribe(client, worker, stripe_api, stripe_events, member)
    preview = _preview(client, member, "professional")
    assert preview["prorationBehavior"] == "always_invoice"
    assert preview["dueNow"] > 0
    client.post(
        "/subscriptions/change-plan", json={"plan": "professional"}, headers=member.headers
    ).raise_for_status()
    # Found by its reason: the first invoice and this one may share a second of `created`.
    [immediate] = [
        i
        for i in _invoices(stripe_api, subscription_id)
        if i["billing_reason"] == "subscription_update"
    ]
    assert immediate["status"] == "paid"
    assert 0 < immediate["amount_paid"] <= 2000


def test_preview_and_change_are_refused_clearly(
    client: TestClient,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    member: Member,
) -> None:
    url = "/subscriptions/change-plan/preview"
    on_trial = client.get(url, params={"plan": "professional"}, headers=member.headers)
    assert (on_trial.status_code, on_trial.json()["error"]["code"]) == (
        409,
        "no_paid_subscription",
    )
    subscribe(client, worker, stripe_api, stripe_events, member)
    same = client.get(url, params={"plan": "starter"}, headers=member.headers)
    assert (same.status_code, same.json()["error"]["code"]) == (409, "same_plan")
    unknown = client.get(url, params={"plan": "gold"}, headers=member.headers)
    assert unknown.status_code == 404, unknown.text
    bad = client.get(
        url, params={"plan": "professional", "prorationBehavior": "later"}, headers=member.headers
    )
    assert bad.status_code == 422, bad.text
    stale = (utcnow() - timedelta(hours=2)).isoformat()
    old = client.post(
        "/subscriptions/change-plan",
        json={"plan": "professional", "prorationDate": stale},
        headers=member.headers,
    )
    assert (old.status_code, old.json()["error"]["code"]) == (422, "invalid_proration_date")
    naive = (utcnow() - timedelta(hours=2)).replace(tzinfo=None).isoformat()  # read as UTC
    old = client.post(
        "/subscriptions/change-plan",
        json={"plan": "professional", "prorationDate": naive},
        headers=member.headers,
    )
    assert (old.status_code, old.json()["error"]["code"]) == (422, "invalid_proration_date")
    assert me(client, member)["plan"] == "starter"


@pytest.mark.parametrize(
    "settings_overrides",
    [{**ON_FIRST_PAYMENT, "pages_secure_cookies": False}],  # cookies over plain http
    indirect=True,
)
@pytest.mark.parametrize(
    ("proration_date", "message"),
    [
        # No offset: UTC, as the API reads it, so it is compared (too old), not a 500.
        ("2026-01-01T00:00:00", "prorationDate must come from a preview of the last hour"),
        # No offset and recent: read as UTC and taken; the trial has no paid plan to change.
        ("now", "No paid subscription to change"),
        ("9999-12-31T23:59:59+00:00", "prorationDate must come from a preview of the last hour"),
        ("9999-12-31T23:59:59-23:59", "That preview is not valid"),  # past the calendar in UTC
        ("0001-01-01T00:00:00+23:59", "That preview is not valid"),
        ("yesterday", "That preview is not valid"),
        ("2" * 10_000, "That preview is not valid"),
    ],
)
def test_the_plan_page_answers_any_posted_proration_date_with_a_message(
    proration_date: str, message: str, client: TestClient, member: Member
) -> None:
    sign_in(client, member.email, "correct horse 1")
    if proration_date == "now":
        proration_date = utcnow().replace(tzinfo=None).isoformat()
    asked = post_form(
        client,
        "/billing/plan/change",
        {"plan": "professional", "proration_date": proration_date},
        page="/billing/plan",
    )
    assert asked.status_code == 303, asked.text  # type: ignore[attr-defined]
    assert asked.headers["location"].startswith("/billing/plan")  # type: ignore[attr-defined]
    assert message in client.get(asked.headers["location"]).text  # type: ignore[attr-defined]
    assert me(client, member)["plan"] == "trial"


def test_a_proration_date_past_the_calendar_in_utc_is_422_from_the_api(
    client: TestClient, member: Member
) -> None:
    for edge in ("9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59"):
        answer = client.post(
            "/subscriptions/change-plan",
            json={"plan": "professional", "prorationDate": edge},
            headers=member.headers,
        )
        assert answer.status_code == 422, answer.text
        assert "out of range" in answer.text
