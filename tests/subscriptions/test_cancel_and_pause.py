"""Cancel now or at the period's end (a trial's end for a trial), resume until then, and
pause collection: against the stand-in, its Checkout page and its clock."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import stripe
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from subscription_steps import (
    ON_FIRST_PAYMENT,
    STARTER_FEATURES,
    TRIAL_FEATURES,
    Member,
    advance,
    as_dict,
    at,
    current_license,
    me,
    parse_time,
    seed_plans,
    sign_up,
    subscribe,
    sync,
    unverified_claims,
)
from support.stripe_events import EventRelay

from billfold.jobs.worker import Worker
from billfold.kit.db import utcnow
from billfold.services import Services
from billfold.standin import LocalStripe
from billfold.subscriptions.cancellation import end_finished_trials
from billfold.subscriptions.models import Subscription, SubscriptionRequest


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return dict(ON_FIRST_PAYMENT)


@pytest.fixture
def member(client: TestClient, admin: dict[str, str], stripe_api: stripe.StripeClient) -> Member:
    seed_plans(client, admin, stripe_api)
    return sign_up(client)


def _post(client: TestClient, member: Member, path: str, **body: Any) -> dict[str, Any]:
    answer = client.post(f"/subscriptions/{path}", json=body, headers=member.headers)
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()["data"]
    return data


def _license_claims(client: TestClient, member: Member) -> dict[str, Any]:
    return unverified_claims(current_license(client, member)["token"])


def _invoices(stripe_api: stripe.StripeClient, subscription_id: str) -> list[dict[str, Any]]:
    listed = stripe_api.v1.invoices.list(params={"subscription": subscription_id, "limit": 100})
    return sorted((as_dict(i) for i in listed.data), key=lambda i: (i["created"], i["id"]))


def test_cancel_now_after_a_cancel_at_period_end_ends_at_once_with_canceled_at(
    client: TestClient,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    member: Member,
) -> None:
    subscription_id = subscribe(client, worker, stripe_api, stripe_events, member)
    pending = _post(client, member, "cancel", atPeriodEnd=True)
    assert (pending["status"], pending["cancel_at_period_end"], pending["canceledAt"]) == (
        "active",
        True,
        None,
    )
    before = utcnow() - timedelta(seconds=2)
    ended = _post(client, member, "cancel", atPeriodEnd=False)
    assert (ended["status"], ended["cancel_at_period_end"]) == ("canceled", False)
    assert parse_time(ended["canceledAt"]) >= before
    sync(client, worker, stripe_events)
    assert me(client, member) == ended
    assert stripe_api.v1.subscriptions.retrieve(subscription_id).status == "canceled"
    claims = _license_claims(client, member)
    assert (claims["status"], claims["features"]) == ("canceled", {})


def test_cancel_at_period_end_is_resumed_and_the_period_then_renews(
    client: TestClient,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    localstripe: LocalStripe,
    member: Member,
) -> None:
    subscription_id = subscribe(client, worker, stripe_api, stripe_events, member)
    _post(client, member, "cancel", atPeriodEnd=True)
    assert stripe_api.v1.subscriptions.retrieve(subscription_id).cancel_at_period_end is True
    resumed = _post(client, member, "resume")
    assert (resumed["status"], resumed["cancel_at_period_end"]) == ("active", False)
    assert stripe_api.v1.subscriptions.retrieve(subscription_id).cancel_at_period_end is False
    sync(client, worker, stripe_events)
    renewed = advance(localstripe.url, subscription_id)
    assert renewed["status"] == "active"
    sync(client, worker, stripe_events)
    assert me(client, member)["current_period_ends_at"] is not None
    assert [i["status"] for i in _invoices(stripe_api, subscription_id)] == ["paid", "paid"]
    again = client.post("/subscriptions/resume", json={}, headers=member.headers)
    assert (again.status_code, again.json()["error"]["code"]) == (409, "not_canceling")


def test_a_trial_canceled_at_period_end_keeps_its_features_until_the_trial_ends(
    client: TestClient, services: Services, worker: Worker[Services], member: Member
) -> None:
    trial_end = me(client, member)["trialEndsAt"]
    pending = _post(client, member, "cancel", atPeriodEnd=True)
    assert (pending["status"], pending["cancel_at_period_end"], pending["features"]) == (
        "trialing",
        True,
        TRIAL_FEATURES,
    )
    assert pending["trialEndsAt"] == trial_end
    claims = _license_claims(client, member)
    assert (claims["status"], claims["features"]) == ("trialing", TRIAL_FEATURES)
    assert claims["exp"] == int(parse_time(trial_end).timestamp())
    assert end_finished_trials(services) == 0  # not yet: the trial runs on

    # Resumed, then set to cancel again; this time the trial's end comes.
    assert _post(client, member, "resume")["cancel_at_period_end"] is False
    _post(client, member, "cancel", atPeriodEnd=True)
    ended_at = utcnow() - timedelta(minutes=1)
    with services.db.transaction() as session:
        session.execute(
            update(Subscription)
            .where(Subscription.customer_id == member.customer_id)
            .values(trial_ends_at=ended_at)
        )
    assert end_finished_trials(services) == 1
    assert end_finished_trials(services) == 0  # nothing ends twice
    now = me(client, member)
    assert (now["status"], now["cancel_at_period_end"], now["features"]) == ("canceled", False, {})
    assert abs(parse_time(now["canceledAt"]) - ended_at) < timedelta(seconds=1)
    claims = _license_claims(client, member)
    assert (claims["status"], claims["features"]) == ("canceled", {})


def test_a_trial_canceled_now_ends_at_once(client: TestClient, member: Member) -> None:
    ended = _post(client, member, "cancel", atPeriodEnd=False)
    assert (ended["status"], ended["features"]) == ("canceled", {})
    assert ended["canceledAt"] is not None


def test_a_stripe_trial_canceled_at_period_end_ends_when_the_trial_ends_unbilled(
    client: TestClient,
    worker: Worker[Services],
    admin: dict[str, str],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    localstripe: LocalStripe,
    member: Member,
) -> None:
    client.patch("/plans/starter", json={"trialDays": 7}, headers=admin).raise_for_status()
    subscription_id = subscribe(client, worker, stripe_api, stripe_events, member)
    trial = me(client, member)
    assert trial["status"] == "trialing"
    pending = _post(client, member, "cancel", atPeriodEnd=True)
    assert (pending["status"], pending["cancel_at_period_end"]) == ("trialing", True)
    remote = as_dict(stripe_api.v1.subscriptions.retrieve(subscription_id))
    assert remote["cancel_at"] == remote["trial_end"]

    ended = advance(localstripe.url, subscription_id)
    assert (ended["status"], ended["ended_at"]) == ("canceled", remote["trial_end"])
    sync(client, worker, stripe_events)
    now = me(client, member)
    assert (now["status"], now["features"]) == ("canceled", {})
    assert parse_time(now["current_period_ends_at"]) == at(remote["trial_end"])
    assert all(i["amount_paid"] == 0 for i in _invoices(stripe_api, subscription_id))


def test_paused_collection_voids_renewals_and_the_license_follows_until_resumed(
    client: TestClient,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    localstripe: LocalStripe,
    member: Member,
) -> None:
    subscription_id = subscribe(client, worker, stripe_api, stripe_events, member)
    paused = _post(client, member, "pause", behavior="void")
    assert (paused["status"], paused["pauseBehavior"], paused["features"]) == ("paused", "void", {})
    remote = as_dict(stripe_api.v1.subscriptions.retrieve(subscription_id))
    assert (remote["status"], remote["pause_collection"]["behavior"]) == ("active", "void")
    claims = _license_claims(client, member)
    assert (claims["status"], claims["features"]) == ("paused", {})

    advance(localstripe.url, subscription_id)  # a period passes while paused
    sync(client, worker, stripe_events)
    voided = _invoices(stripe_api, subscription_id)[-1]
    assert (voided["status"], voided["amount_paid"]) == ("void", 0)
    assert me(client, member)["status"] == "paused"

    resumed = _post(client, member, "resume")
    assert (resumed["status"], resumed["pauseBehavior"], resumed["features"]) == (
        "active",
        None,
        STARTER_FEATURES,
    )
    assert (
        as_dict(stripe_api.v1.subscriptions.retrieve(subscription_id))["pause_collection"] is None
    )
    claims = _license_claims(client, member)
    assert (claims["status"], claims["features"]) == ("active", STARTER_FEATURES)
    advance(localstripe.url, subscription_id)
    sync(client, worker, stripe_events)
    assert [i["status"] for i in _invoices(stripe_api, subscription_id)] == ["paid", "void", "paid"]
    assert me(client, member)["status"] == "active"


def test_pause_resume_pause_again_and_cancel_resume_cancel_again_each_reach_stripe(
    client: TestClient,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    services: Services,
    member: Member,
) -> None:
    """Each request has its own idempotency key (our request row), so the second pause or
    cancellation is a new call, not a replay of the first answer that Stripe then ignores."""
    subscription_id = subscribe(client, worker, stripe_api, stripe_events, member)

    def remote() -> dict[str, Any]:
        return as_dict(stripe_api.v1.subscriptions.retrieve(subscription_id))

    for _ in range(2):
        assert _post(client, member, "pause", behavior="void")["status"] == "paused"
        assert remote()["pause_collection"]["behavior"] == "void"
        assert _post(client, member, "resume")["status"] == "active"
        assert remote()["pause_collection"] is None
    for _ in range(2):
        assert _post(client, member, "cancel", atPeriodEnd=True)["cancel_at_period_end"] is True
        assert remote()["cancel_at_period_end"] is True
        assert _post(client, member, "resume")["cancel_at_period_end"] is False
        assert remote()["cancel_at_period_end"] is False
    with services.db.transaction() as session:
        asked = session.scalars(
            select(SubscriptionRequest.action)
            .where(SubscriptionRequest.customer_id == member.customer_id)
            .order_by(SubscriptionRequest.id)
        ).all()
    assert asked == ["checkout", *["pause", "resume"] * 2, *["cancel", "resume"] * 2]


def test_a_pause_with_resumes_at_ends_by_itself_when_that_time_has_come(
    client: TestClient,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    localstripe: LocalStripe,
    member: Member,
) -> None:
    subscription_id = subscribe(client, worker, stripe_api, stripe_events, member)
    period_end = parse_time(me(client, member)["current_period_ends_at"])
    resumes = period_end - timedelta(days=1)
    paused = _post(client, member, "pause", behavior="keep_as_draft", resumesAt=resumes.isoformat())
    assert parse_time(paused["pauseResumesAt"]) == resumes.replace(microsecond=0)
    advance(localstripe.url, subscription_id)
    sync(client, worker, stripe_events)
    assert (me(client, member)["status"], me(client, member)["pauseBehavior"]) == ("active", None)


def test_pause_is_refused_for_a_trial_a_bad_behavior_and_a_past_resume_time(
    client: TestClient,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    member: Member,
) -> None:
    trial = client.post("/subscriptions/pause", json={}, headers=member.headers)
    assert (trial.status_code, trial.json()["error"]["code"]) == (409, "not_pausable")
    subscribe(client, worker, stripe_api, stripe_events, member)
    bad = client.post("/subscriptions/pause", json={"behavior": "stop"}, headers=member.headers)
    assert bad.status_code == 422, bad.text
    past = (utcnow() - timedelta(hours=1)).isoformat()
    late = client.post("/subscriptions/pause", json={"resumesAt": past}, headers=member.headers)
    assert (late.status_code, late.json()["error"]["code"]) == (422, "resumes_in_the_past")
    # A time without an offset is read as UTC: refused the same way, not a server error.
    naive = (utcnow() - timedelta(hours=1)).replace(tzinfo=None).isoformat()
    late = client.post("/subscriptions/pause", json={"resumesAt": naive}, headers=member.headers)
    assert (late.status_code, late.json()["error"]["code"]) == (422, "resumes_in_the_past")
    assert me(client, member)["status"] == "active"
    _post(client, member, "pause")
    twice = client.post("/subscriptions/pause", json={}, headers=member.headers)
    assert (twice.status_code, twice.json()["error"]["code"]) == (409, "already_paused")
