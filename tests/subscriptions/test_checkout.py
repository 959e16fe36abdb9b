"""The trial at sign-up, Checkout, change of plan, the Billing Portal, and whose data a caller
may touch."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import stripe
from factories import register
from fastapi.testclient import TestClient
from subscription_steps import (
    ON_FIRST_PAYMENT,
    PRICE,
    PRO_FEATURES,
    TRIAL_FEATURES,
    URLS,
    Member,
    as_dict,
    checkout,
    checkout_session,
    checkout_sessions,
    complete_checkout,
    current_claims,
    deliver,
    deliver_paid_checkout,
    license_mails,
    licenses_of,
    me,
    portal_sessions_page,
    seed_plans,
    sign_up,
    stripe_customer_of,
)

from billfold.jobs.worker import Worker
from billfold.services import Services


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return dict(ON_FIRST_PAYMENT)


@pytest.fixture
def plans(client: TestClient, admin: dict[str, str], stripe_api: stripe.StripeClient) -> None:
    seed_plans(client, admin, stripe_api)


def _stripe_customers_with(stripe_api: stripe.StripeClient, email: str) -> list[str]:
    return [c.id for c in stripe_api.v1.customers.list(params={"email": email, "limit": 100})]


def _subscribed(
    client: TestClient,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    member: Member,
    plan: str = "starter",
) -> str:
    """The member buys `plan` on the stand-in's Checkout page; answers the subscription ID."""
    paid = complete_checkout(stripe_api, checkout(client, member, plan)["checkout_url"])
    deliver_paid_checkout(client, paid)
    worker.run_until_idle()
    assert me(client, member)["status"] == "active"
    return str(paid.subscription["id"])


@pytest.mark.usefixtures("plans")
def test_a_new_customer_starts_on_the_trial_with_no_stripe_customer_and_a_mailed_license(
    client: TestClient, services: Services, stripe_api: stripe.StripeClient
) -> None:
    member = sign_up(client)
    trial = me(client, member)
    assert (trial["customerId"], trial["plan"], trial["status"], trial["features"]) == (
        member.customer_id,
        "trial",
        "trialing",
        TRIAL_FEATURES,
    )
    assert trial["current_period_ends_at"] is None
    assert stripe_customer_of(services, member.customer_id) is None
    assert _stripe_customers_with(stripe_api, member.email) == []
    [license_row] = licenses_of(services, member.customer_id)
    assert (license_row.plan_code, license_row.status) == ("trial", "trialing")
    [mail] = license_mails(services, member.email)
    assert license_row.token in mail.body_text
    assert current_claims(client, services, member)["customer_id"] == member.customer_id


@pytest.mark.usefixtures("plans")
def test_checkout_makes_one_stripe_customer_and_a_subscription_session_carrying_our_ids(
    client: TestClient,
    services: Services,
    stripe_api: stripe.StripeClient,
) -> None:
    member = sign_up(client)
    first = checkout(client, member, "starter")["checkout_url"]
    second = checkout(client, member, "professional")["checkout_url"]
    assert first != second
    stripe_customer = stripe_customer_of(services, member.customer_id)
    assert _stripe_customers_with(stripe_api, member.email) == [stripe_customer]
    ours = as_dict(stripe_api.v1.customers.retrieve(str(stripe_customer)))
    assert ours["metadata"]["customer_id"] == member.customer_id
    sessions = [checkout_session(stripe_api, url) for url in (first, second)]
    listed = checkout_sessions(stripe_api, str(stripe_customer))
    assert {s["id"] for s in listed} == {s["id"] for s in sessions}
    for session, plan in zip(sessions, ("starter", "professional"), strict=True):
        assert (session["url"], session["status"], session["mode"]) == (
            first if plan == "starter" else second,
            "open",
            "subscription",
        )
        [line] = stripe_api.v1.checkout.sessions.line_items.list(session["id"]).data
        assert (as_dict(line)["price"]["id"], line.quantity) == (PRICE[plan], 1)
        assert session["customer"] == stripe_customer
        assert session["client_reference_id"] == member.customer_id
        assert session["metadata"]["customer_id"] == member.customer_id
        assert session["metadata"]["plan"] == plan
        assert (session["success_url"], session["cancel_url"]) == (
            URLS["success_url"],
            URLS["cancel_url"],
        )
    # Asking to pay changes nothing until Stripe says it was paid.
    assert (me(client, member)["plan"], me(client, member)["status"]) == ("trial", "trialing")


@pytest.mark.usefixtures("plans")
def test_concurrent_checkouts_make_one_stripe_customer(
    client: TestClient, services: Services, stripe_api: stripe.StripeClient
) -> None:
    member = sign_up(client)

    def ask(_: int) -> int:
        body = {"plan": "starter", **URLS}
        answer = client.post("/subscriptions/checkout", json=body, headers=member.headers)
        status: int = answer.status_code
        return status

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(ask, range(4))) == [200] * 4
    assert _stripe_customers_with(stripe_api, member.email) == [
        stripe_customer_of(services, member.customer_id)
    ]


@pytest.mark.usefixtures("plans")
def test_checkout_refuses_unknown_inactive_and_free_plans_and_bad_urls_before_stripe(
    client: TestClient,
    admin: dict[str, str],
    services: Services,
) -> None:
    member = sign_up(client)
    client.patch("/plans/professional", json={"active": False}, headers=admin).raise_for_status()
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"plan": "platinum", **URLS}, 404, "plan_not_found"),
        ({"plan": "professional", **URLS}, 404, "plan_not_found"),
        ({"plan": "trial", **URLS}, 409, "plan_not_purchasable"),
        ({"plan": "starter", **URLS, "success_url": "not a url"}, 422, "validation_error"),
        ({"plan": "starter", **URLS, "cancel_url": "javascript:alert(1)"}, 422, "validation_error"),
        ({"plan": "starter", "success_url": URLS["success_url"]}, 422, "validation_error"),
        ({"plan": "Starter!", **URLS}, 422, "validation_error"),
    ]
    for body, status, code in cases:
        answer = client.post("/subscriptions/checkout", json=body, headers=member.headers)
        assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), body
    assert stripe_customer_of(services, member.customer_id) is None


@pytest.mark.usefixtures("plans")
def test_checkout_while_subscribed_is_a_conflict_and_allowed_again_once_canceled(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    member = sign_up(client)
    _subscribed(client, worker, stripe_api, member)
    again = client.post(
        "/subscriptions/checkout", json={"plan": "professional", **URLS}, headers=member.headers
    )
    assert (again.status_code, again.json()["error"]["code"]) == (409, "already_subscribed")
    stripe_customer = str(stripe_customer_of(services, member.customer_id))
    assert len(checkout_sessions(stripe_api, stripe_customer)) == 1
    canceled = client.post(
        "/subscriptions/cancel", json={"atPeriodEnd": False}, headers=member.headers
    )
    assert canceled.json()["data"]["status"] == "canceled"
    assert checkout(client, member, "professional")["checkout_url"]
    assert len(checkout_sessions(stripe_api, stripe_customer)) == 2


@pytest.mark.usefixtures("plans")
def test_a_trial_canceled_before_paying_ends_without_touching_stripe(
    client: TestClient, services: Services
) -> None:
    member = sign_up(client)
    answer = client.post(
        "/subscriptions/cancel", json={"atPeriodEnd": False}, headers=member.headers
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["status"] == "canceled"
    assert stripe_customer_of(services, member.customer_id) is None
    assert [lic.status for lic in licenses_of(services, member.customer_id)] == [
        "trialing",
        "canceled",
    ]
    again = client.post("/subscriptions/cancel", json={"atPeriodEnd": True}, headers=member.headers)
    assert (again.status_code, again.json()["error"]["code"]) == (409, "already_canceled")


@pytest.mark.usefixtures("plans")
def test_change_plan_is_refused_without_a_paid_subscription_or_to_a_free_or_unknown_plan(
    client: TestClient,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    member = sign_up(client)
    on_trial = client.post(
        "/subscriptions/change-plan", json={"plan": "starter"}, headers=member.headers
    )
    assert (on_trial.status_code, on_trial.json()["error"]["code"]) == (409, "no_paid_subscription")
    _subscribed(client, worker, stripe_api, member)
    for plan, status, code in (
        ("trial", 409, "plan_not_purchasable"),
        ("gold", 404, "plan_not_found"),
    ):
        answer = client.post(
            "/subscriptions/change-plan", json={"plan": plan}, headers=member.headers
        )
        assert (answer.status_code, answer.json()["error"]["code"]) == (status, code)
    assert me(client, member)["plan"] == "starter"


@pytest.mark.usefixtures("plans")
def test_change_plan_asks_stripe_for_the_new_price_and_resumes_a_pending_cancellation(
    monkeypatch: pytest.MonkeyPatch,
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    member = sign_up(client)
    subscription_id = _subscribed(client, worker, stripe_api, member)
    client.post(
        "/subscriptions/cancel", json={"atPeriodEnd": True}, headers=member.headers
    ).raise_for_status()
    issued = len(licenses_of(services, member.customer_id))
    sent: list[dict[str, Any]] = []
    # Routes call Stripe through the inline gateway (a person is waiting).
    real_change = services.stripe_inline.change_price

    def change_price(subscription: str, **asked: Any) -> Any:
        sent.append(asked)
        return real_change(subscription, **asked)

    monkeypatch.setattr(services.stripe_inline, "change_price", change_price)

    answer = client.post(
        "/subscriptions/change-plan", json={"plan": "professional"}, headers=member.headers
    )
    assert answer.status_code == 200, answer.text
    item = stripe_api.v1.subscriptions.retrieve(subscription_id)["items"].data[0].id
    assert len(sent) == 1
    assert isinstance(sent[0].pop("proration_date"), int)  # now, unless a preview's is given
    assert isinstance(sent[0].pop("request_id"), int)  # our request row: the key's last part
    assert sent[0].pop("subscription_id").startswith("subs_")  # ours, for the key
    assert sent == [
        {
            "item_id": item,
            "price_id": PRICE["professional"],
            "plan_code": "professional",
            "proration_behavior": "create_prorations",  # the setting's default
        }
    ]
    remote = as_dict(stripe_api.v1.subscriptions.retrieve(subscription_id))
    assert remote["cancel_at_period_end"] is False
    assert remote["items"]["data"][0]["price"]["id"] == PRICE["professional"]
    assert remote["metadata"]["plan"] == "professional"
    assert answer.json()["data"]["plan"] == "professional"
    assert answer.json()["data"]["features"] == PRO_FEATURES
    assert answer.json()["data"]["cancel_at_period_end"] is False
    assert me(client, member)["cancel_at_period_end"] is False
    assert len(licenses_of(services, member.customer_id)) == issued + 1

    assert current_claims(client, services, member)["features"] == PRO_FEATURES
    same = client.post(
        "/subscriptions/change-plan", json={"plan": "professional"}, headers=member.headers
    )
    assert same.status_code == 200
    assert len(sent) == 1  # already on that plan: nothing asked of Stripe
    assert len(licenses_of(services, member.customer_id)) == issued + 1


@pytest.mark.usefixtures("plans")
def test_a_plan_change_made_in_stripe_reaches_the_subscription_and_a_new_license(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    member = sign_up(client)
    subscription_id = _subscribed(client, worker, stripe_api, member)
    item = stripe_api.v1.subscriptions.retrieve(subscription_id)["items"].data[0].id
    changed = stripe_api.v1.subscriptions.update(
        subscription_id, params={"items": [{"id": item, "plan": PRICE["professional"]}]}
    )
    deliver(client, "customer.subscription.updated", as_dict(changed))
    worker.run_until_idle()
    now = me(client, member)
    assert (now["plan"], now["status"], now["features"]) == ("professional", "active", PRO_FEATURES)
    claims = current_claims(client, services, member)
    assert (claims["plan"], claims["features"]) == ("professional", PRO_FEATURES)


@pytest.mark.usefixtures("plans")
def test_portal_answers_a_billing_portal_url_for_the_callers_own_stripe_customer(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    member = sign_up(client)
    _subscribed(client, worker, stripe_api, member)
    answer = client.post(
        "/subscriptions/portal",
        json={"returnUrl": "https://app.example/billing"},
        headers=member.headers,
    )
    assert answer.status_code == 200, answer.text
    page = portal_sessions_page(answer.json()["data"]["url"])
    stripe_customer = stripe_customer_of(services, member.customer_id)
    assert stripe_customer is not None
    email = as_dict(stripe_api.v1.customers.retrieve(stripe_customer))["email"]
    assert email in page
    assert "<td>Starter</td>" in page or "price_test_starter" in page
    assert "<td>active</td>" in page
    assert "visa ending 4242" in page
    assert "href='https://app.example/billing'" in page
    again = client.post(
        "/subscriptions/portal",
        json={"returnUrl": "https://app.example/billing"},
        headers=member.headers,
    )
    assert again.json()["data"]["url"] != answer.json()["data"]["url"]  # each visit its own
    bad = client.post(
        "/subscriptions/portal", json={"returnUrl": "billing"}, headers=member.headers
    )
    assert bad.status_code == 422


@pytest.mark.usefixtures("plans")
def test_another_users_subscription_and_license_are_never_visible_or_changeable(
    client: TestClient,
    admin: dict[str, str],
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
) -> None:
    owner, other = sign_up(client), sign_up(client)
    _subscribed(client, worker, stripe_api, owner)
    before = me(client, owner)
    assert me(client, other)["customerId"] == other.customer_id
    assert me(client, other)["plan"] == "trial"
    query = {"customerId": owner.customer_id}
    for path in ("/subscriptions/me", "/licenses/me"):
        answer = client.get(path, params=query, headers=other.headers)
        assert answer.status_code == 404, path
        assert owner.customer_id not in answer.text
    body = {"customerId": owner.customer_id}
    for path, extra in (
        ("/subscriptions/cancel", {"atPeriodEnd": False}),
        ("/subscriptions/change-plan", {"plan": "professional"}),
        ("/subscriptions/portal", {"returnUrl": "https://app.example/x"}),
        ("/subscriptions/checkout", {"plan": "professional", **URLS}),
    ):
        answer = client.post(path, json={**body, **extra}, headers=other.headers)
        assert answer.status_code == 404, (path, answer.text)
    assert me(client, owner) == before
    # An admin may look, by naming the customer.
    seen = client.get("/subscriptions/me", params=query, headers=admin)
    assert seen.json()["data"] == before


def test_resume_without_a_cancellation_is_refused(client: TestClient) -> None:
    data = register(client)
    answer = client.post(
        "/subscriptions/resume",
        json={},
        headers={"Authorization": f"Bearer {data['access_token']}"},
    )
    assert answer.status_code in (404, 409)
    assert answer.json()["error"]["code"] in ("no_subscription", "not_canceling")
