"""Downgrades set for the period end: the change waits (shown on /subscriptions/me), the
customer may drop it, and when the stand-in's clock passes the period end the plan, its
features and the license follow, and the renewal is invoiced at the lower price. Upgrades stay
immediate. Against the stand-in's Checkout page, its subscription schedules and its clock."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
import stripe
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from subscription_steps import (
    ON_FIRST_PAYMENT,
    PRO_FEATURES,
    STARTER_FEATURES,
    Member,
    advance,
    as_dict,
    checkout,
    checkout_session,
    deliver,
    licenses_of,
    me,
    parse_time,
    pay_on_page,
    seed_plans,
    sign_up,
    subscribe,
    subscription_now,
    sync,
)
from support.netfault import FaultyLink
from support.pages import post_form, sign_in
from support.payments import VISA, card
from support.stripe_events import EventRelay

from billfold.jobs.worker import Worker
from billfold.kit.audit import AuditEntry
from billfold.kit.db import utcnow
from billfold.services import Services
from billfold.standin import LocalStripe
from billfold.subscriptions import revocations
from billfold.subscriptions.models import PlanChangeStatus, ScheduledPlanChange, Subscription

CHANGE = "/subscriptions/change-plan"


@pytest.fixture
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    return dict(getattr(request, "param", ON_FIRST_PAYMENT))


@pytest.fixture
def member(client: TestClient, admin: dict[str, str], stripe_api: stripe.StripeClient) -> Member:
    seed_plans(client, admin, stripe_api)
    return sign_up(client)


def _change(client: TestClient, member: Member, **body: Any) -> dict[str, Any]:
    answer = client.post(CHANGE, json=body, headers=member.headers)
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()["data"]
    return data


def _refused(
    client: TestClient, member: Member, path: str = CHANGE, **body: Any
) -> tuple[int, str]:
    answer = client.post(path, json=body, headers=member.headers)
    return answer.status_code, answer.json()["error"]["code"]


def _changes(services: Services, customer_id: str) -> list[ScheduledPlanChange]:
    with services.db.transaction() as session:
        rows = list(
            session.scalars(
                select(ScheduledPlanChange)
                .join(Subscription, Subscription.id == ScheduledPlanChange.subscription_id)
                .where(Subscription.customer_id == customer_id)
                .order_by(ScheduledPlanChange.created_at)
            )
        )
        session.expunge_all()
    return rows


def _audits(services: Services, action: str, subject_id: str) -> int:
    with services.db.transaction() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(AuditEntry)
                .where(AuditEntry.action == action, AuditEntry.subject_id == subject_id)
            )
            or 0
        )


def _price_of(stripe_api: stripe.StripeClient, subscription_id: str) -> str:
    return str(subscription_now(stripe_api, subscription_id)["items"]["data"][0]["price"]["id"])


def test_a_downgrade_at_period_end_waits_then_the_renewal_moves_plan_license_and_price(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    localstripe: LocalStripe,
    member: Member,
) -> None:
    subscription_id = subscribe(
        client, worker, stripe_api, stripe_events, member, plan="professional"
    )
    before = me(client, member)
    period_end = before["current_period_ends_at"]
    licensed = len(licenses_of(services, member.customer_id))

    changed = _change(client, member, plan="starter", when="period_end")
    assert (changed["plan"], changed["features"]) == ("professional", PRO_FEATURES)
    assert changed["pendingChange"]["plan"] == "starter"
    assert parse_time(changed["pendingChange"]["effectiveAt"]) == parse_time(period_end)
    sync(client, worker, stripe_events)
    shown = me(client, member)
    assert (shown["plan"], shown["pendingChange"]) == ("professional", changed["pendingChange"])
    assert _price_of(stripe_api, subscription_id) == "price_test_professional"
    assert len(licenses_of(services, member.customer_id)) == licensed  # nothing changed yet

    renewed = advance(localstripe.url, subscription_id)
    sync(client, worker, stripe_events)
    after = me(client, member)
    assert (after["plan"], after["features"], after["pendingChange"]) == (
        "starter",
        STARTER_FEATURES,
        None,
    )
    invoice = stripe_api.v1.invoices.retrieve(renewed["latest_invoice"])
    assert (invoice.status, invoice.amount_paid, invoice.billing_reason) == (
        "paid",
        900,
        "subscription_cycle",
    )
    issued = licenses_of(services, member.customer_id)
    assert issued[-1].plan_code == "starter"
    with services.db.transaction() as session:
        assert revocations.is_superseded(session, issued[licensed - 1].id)
    [change] = _changes(services, member.customer_id)
    assert change.status == PlanChangeStatus.APPLIED
    assert change.schedule_released_at is not None
    # Its work done, the schedule let the subscription go (so it can be canceled again).
    assert subscription_now(stripe_api, subscription_id)["schedule"] is None

    # The roll-over told again (a retried delivery, a duplicate event): applied once.
    licensed = len(issued)
    deliver(client, "customer.subscription.updated", subscription_now(stripe_api, subscription_id))
    worker.run_until_idle()
    assert len(licenses_of(services, member.customer_id)) == licensed
    assert _audits(services, "subscription.change_plan_applied", change.subscription_id) == 1
    assert me(client, member)["plan"] == "starter"


def test_a_canceled_pending_downgrade_releases_the_schedule_and_renews_at_the_same_price(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    localstripe: LocalStripe,
    member: Member,
) -> None:
    subscription_id = subscribe(
        client, worker, stripe_api, stripe_events, member, plan="professional"
    )
    _change(client, member, plan="starter", when="period_end")
    schedule_id = subscription_now(stripe_api, subscription_id)["schedule"]
    assert schedule_id

    kept = _change_cancel(client, member)
    assert (kept["plan"], kept["pendingChange"]) == ("professional", None)
    released = as_dict(stripe_api.v1.subscription_schedules.retrieve(schedule_id))
    assert released["status"] == "released"
    assert _refused(client, member, f"{CHANGE}/cancel") == (404, "no_pending_change")

    renewed = advance(localstripe.url, subscription_id)
    sync(client, worker, stripe_events)
    assert me(client, member)["plan"] == "professional"
    assert stripe_api.v1.invoices.retrieve(renewed["latest_invoice"]).amount_paid == 2900
    [change] = _changes(services, member.customer_id)
    assert change.status == PlanChangeStatus.CANCELED

    # Dropped, a downgrade can be set again.
    again = _change(client, member, plan="starter", when="period_end")
    assert again["pendingChange"]["plan"] == "starter"


def _change_cancel(client: TestClient, member: Member) -> dict[str, Any]:
    answer = client.post(f"{CHANGE}/cancel", json={}, headers=member.headers)
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()["data"]
    return data


@pytest.mark.parametrize(
    "settings_overrides",
    [{**ON_FIRST_PAYMENT, "subscription_downgrade_timing": "period_end"}],
    indirect=True,
)
def test_the_setting_sends_downgrades_to_the_period_end_and_upgrades_stay_immediate(
    client: TestClient,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    member: Member,
) -> None:
    subscription_id = subscribe(
        client, worker, stripe_api, stripe_events, member, plan="professional"
    )
    waiting = _change(client, member, plan="starter")
    assert (waiting["plan"], waiting["pendingChange"]["plan"]) == ("professional", "starter")
    # Asked for now, a downgrade is now.
    now = _change(client, member, plan="starter", when="now")
    assert (now["plan"], now["pendingChange"]) == ("starter", None)
    assert _price_of(stripe_api, subscription_id) == "price_test_starter"
    up = _change(client, member, plan="professional")
    assert (up["plan"], up["pendingChange"]) == ("professional", None)
    assert _price_of(stripe_api, subscription_id) == "price_test_professional"


@pytest.mark.parametrize(
    "settings_overrides",
    # The pages' cookies over the test client's plain http.
    [
        {
            **ON_FIRST_PAYMENT,
            "subscription_downgrade_timing": "period_end",
            "pages_secure_cookies": False,
        }
    ],
    indirect=True,
)
def test_the_plan_page_shows_a_downgrade_set_for_the_period_end_and_keeps_the_plan(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    member: Member,
) -> None:
    subscribe(client, worker, stripe_api, stripe_events, member, plan="professional")
    period_end = parse_time(me(client, member)["current_period_ends_at"])
    sign_in(client, member.email, "correct horse 1")

    preview_page = client.get("/billing/plan/change", params={"plan": "starter"}).text
    day = f"{period_end.day} {period_end:%B %Y}"
    assert f"Nothing: you stay on Professional until {day}" in preview_page
    assert f"for Starter from {day}" in preview_page
    assert "Adjustment for the rest of the period" not in preview_page
    asked = post_form(client, "/billing/plan/change", {"plan": "starter"}, page="/billing/plan")
    plan_page = client.get(asked.headers["location"]).text  # type: ignore[attr-defined]
    assert "Your plan changes at the end of the current period." in plan_page
    assert f"Starter on {period_end.day} {period_end:%B %Y}" in plan_page
    assert me(client, member)["plan"] == "professional"

    kept = post_form(client, "/billing/plan/change/cancel", {}, page="/billing/plan")
    plan_page = client.get(kept.headers["location"]).text  # type: ignore[attr-defined]
    assert "You stay on the Professional plan." in plan_page
    assert 'data-testid="pending-change"' not in plan_page
    assert [c.status for c in _changes(services, member.customer_id)] == [PlanChangeStatus.CANCELED]


def test_an_upgrade_now_replaces_a_pending_downgrade(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    member: Member,
) -> None:
    subscription_id = subscribe(client, worker, stripe_api, stripe_events, member, plan="starter")
    _change(client, member, plan="professional", when="now")
    _change(client, member, plan="starter", when="period_end")
    # Annual starter costs more per year than monthly starter: an upgrade, so at once.
    moved = _change(client, member, plan="starter_annual")
    assert (moved["plan"], moved["pendingChange"]) == ("starter_annual", None)
    assert subscription_now(stripe_api, subscription_id)["schedule"] is None
    assert [c.status for c in _changes(services, member.customer_id)] == [PlanChangeStatus.CANCELED]


def test_scheduled_changes_that_cannot_be_are_refused_clearly(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    member: Member,
) -> None:
    on_trial = _refused(client, member, plan="starter", when="period_end")
    assert on_trial == (409, "no_paid_subscription")
    subscribe(client, worker, stripe_api, stripe_events, member, plan="starter")
    assert _refused(client, member, plan="starter", when="period_end") == (409, "same_plan")
    assert _refused(client, member, plan="professional", when="period_end") == (
        409,
        "upgrade_is_immediate",
    )
    assert _refused(client, member, f"{CHANGE}/cancel") == (404, "no_pending_change")
    assert _refused(client, member, plan="starter", when="later")[0] == 422
    prorated = _refused(
        client, member, plan="starter_annual", when="period_end", prorationBehavior="none"
    )
    assert prorated == (422, "proration_with_period_end")

    # Yearly starter costs less per year than twelve months of monthly starter.
    _change(client, member, plan="starter_annual", when="period_end")
    assert _refused(client, member, plan="starter_annual", when="period_end") == (
        409,
        "plan_change_pending",
    )
    client.post(f"{CHANGE}/cancel", json={}, headers=member.headers).raise_for_status()
    client.post(
        "/subscriptions/cancel", json={"atPeriodEnd": True}, headers=member.headers
    ).raise_for_status()
    assert _refused(client, member, plan="starter_annual", when="period_end") == (
        409,
        "subscription_ending",
    )
    client.post(
        "/subscriptions/cancel", json={"atPeriodEnd": False}, headers=member.headers
    ).raise_for_status()
    assert _refused(client, member, plan="starter_annual", when="period_end") == (
        409,
        "no_paid_subscription",
    )
    assert me(client, member)["pendingChange"] is None
    assert [c.status for c in _changes(services, member.customer_id)] == [PlanChangeStatus.CANCELED]


def test_on_a_trial_the_downgrade_waits_for_the_trial_end_and_the_first_invoice_is_lower(
    client: TestClient,
    admin: dict[str, str],
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    localstripe: LocalStripe,
    member: Member,
) -> None:
    client.patch("/plans/professional", json={"trialDays": 7}, headers=admin).raise_for_status()
    subscription_id = subscribe(
        client, worker, stripe_api, stripe_events, member, plan="professional"
    )
    trial = me(client, member)
    assert trial["status"] == "trialing"

    waiting = _change(client, member, plan="starter", when="period_end")
    assert parse_time(waiting["pendingChange"]["effectiveAt"]) == parse_time(trial["trialEndsAt"])
    renewed = advance(localstripe.url, subscription_id)
    sync(client, worker, stripe_events)
    after = me(client, member)
    assert (after["status"], after["plan"], after["pendingChange"]) == ("active", "starter", None)
    assert stripe_api.v1.invoices.retrieve(renewed["latest_invoice"]).amount_paid == 900


def test_a_schedule_cut_off_after_stripe_made_it_is_finished_by_the_retry_without_a_second(
    client: TestClient,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    stripe_link: FaultyLink,
    member: Member,
) -> None:
    subscription_id = subscribe(
        client, worker, stripe_api, stripe_events, member, plan="professional"
    )
    # Stripe makes the schedule and sets its phases; Billfold never hears back (it gives up,
    # as if it had died between the call and recording the answer).
    stripe_link.hold_responses(only=b"POST /v1/subscription_schedules/sub_sched_")
    lost = client.post(
        CHANGE, json={"plan": "starter", "when": "period_end"}, headers=member.headers
    )
    stripe_link.up()
    assert lost.status_code >= 500, lost.text
    assert me(client, member)["pendingChange"] is None  # not shown before Stripe said so

    again = _change(client, member, plan="starter", when="period_end")
    assert again["pendingChange"]["plan"] == "starter"
    customer = subscription_now(stripe_api, subscription_id)["customer"]
    made = stripe_api.v1.subscription_schedules.list(params={"customer": customer}).data
    assert [s.id for s in made] == [subscription_now(stripe_api, subscription_id)["schedule"]]


@pytest.mark.parametrize("at_period_end", [True, False])
def test_a_cancellation_drops_a_pending_downgrade(
    at_period_end: bool,
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    member: Member,
) -> None:
    subscription_id = subscribe(
        client, worker, stripe_api, stripe_events, member, plan="professional"
    )
    _change(client, member, plan="starter", when="period_end")
    schedule_id = subscription_now(stripe_api, subscription_id)["schedule"]
    answer = client.post(
        "/subscriptions/cancel", json={"atPeriodEnd": at_period_end}, headers=member.headers
    )
    assert answer.status_code == 200, answer.text
    ending = answer.json()["data"]
    assert ending["pendingChange"] is None
    assert (ending["status"], ending["cancel_at_period_end"]) == (
        ("active", True) if at_period_end else ("canceled", False)
    )
    released = as_dict(stripe_api.v1.subscription_schedules.retrieve(schedule_id))
    assert released["status"] == "released"
    [change] = _changes(services, member.customer_id)
    assert change.status == PlanChangeStatus.CANCELED
    sync(client, worker, stripe_events)
    assert me(client, member)["pendingChange"] is None


def test_a_schedule_released_in_stripe_closes_the_pending_downgrade(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    localstripe: LocalStripe,
    member: Member,
) -> None:
    subscription_id = subscribe(
        client, worker, stripe_api, stripe_events, member, plan="professional"
    )
    _change(client, member, plan="starter", when="period_end")
    sync(client, worker, stripe_events)
    # Someone releases it in Stripe's Dashboard: the webhook tells Billfold.
    stripe_api.v1.subscription_schedules.release(
        str(subscription_now(stripe_api, subscription_id)["schedule"])
    )
    assert "subscription_schedule.released" in sync(client, worker, stripe_events)
    assert me(client, member)["pendingChange"] is None
    [change] = _changes(services, member.customer_id)
    assert change.status == PlanChangeStatus.CANCELED
    advance(localstripe.url, subscription_id)
    sync(client, worker, stripe_events)
    assert me(client, member)["plan"] == "professional"


def test_a_subscription_holds_at_most_one_pending_change(
    services: Services, member: Member
) -> None:
    with services.db.transaction() as session:
        subscription = session.scalar(
            select(Subscription).where(Subscription.customer_id == member.customer_id)
        )
        assert subscription is not None
        plan_id, subscription_id = subscription.plan_id, subscription.id

    def change(status: PlanChangeStatus) -> ScheduledPlanChange:
        return ScheduledPlanChange(
            subscription_id=subscription_id,
            from_plan_id=plan_id,
            to_plan_id=plan_id,
            effective_at=utcnow(),
            status=status,
        )

    with services.db.transaction() as session:
        session.add_all([change(PlanChangeStatus.CANCELED), change(PlanChangeStatus.PENDING)])
    with services.db.transaction() as session:
        session.add(change(PlanChangeStatus.PENDING))
        with pytest.raises(IntegrityError):
            session.flush()
        session.rollback()


def _lose_the_schedule_answer(
    client: TestClient, stripe_link: FaultyLink, member: Member, plan: str = "starter"
) -> None:
    """Stripe makes the schedule and sets its phases; Billfold never hears back."""
    stripe_link.hold_responses(only=b"POST /v1/subscription_schedules/sub_sched_")
    lost = client.post(CHANGE, json={"plan": plan, "when": "period_end"}, headers=member.headers)
    stripe_link.up()
    assert lost.status_code >= 500, lost.text
    assert me(client, member)["pendingChange"] is None


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (f"{CHANGE}/cancel", {}),
        (CHANGE, {"plan": "starter", "when": "now"}),
        ("/subscriptions/cancel", {"atPeriodEnd": True}),
    ],
    ids=["keep", "change_now", "cancel_at_period_end"],
)
def test_dropping_a_half_made_downgrade_releases_the_schedule_stripe_made(
    path: str,
    body: dict[str, Any],
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    stripe_link: FaultyLink,
    member: Member,
) -> None:
    subscription_id = subscribe(
        client, worker, stripe_api, stripe_events, member, plan="professional"
    )
    _lose_the_schedule_answer(client, stripe_link, member)
    schedule_id = subscription_now(stripe_api, subscription_id)["schedule"]
    assert schedule_id  # Stripe made it, we never heard

    answer = client.post(path, json=body, headers=member.headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["pendingChange"] is None
    assert subscription_now(stripe_api, subscription_id)["schedule"] is None
    released = as_dict(stripe_api.v1.subscription_schedules.retrieve(schedule_id))
    assert released["status"] == "released"
    [change] = _changes(services, member.customer_id)
    assert (change.status, change.stripe_schedule_id) == (PlanChangeStatus.CANCELED, schedule_id)
    assert change.schedule_released_at is not None


def test_keeping_the_plan_after_a_lost_answer_renews_at_the_same_price(
    client: TestClient,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    stripe_link: FaultyLink,
    localstripe: LocalStripe,
    member: Member,
) -> None:
    subscription_id = subscribe(
        client, worker, stripe_api, stripe_events, member, plan="professional"
    )
    _lose_the_schedule_answer(client, stripe_link, member)
    _change_cancel(client, member)
    renewed = advance(localstripe.url, subscription_id)
    sync(client, worker, stripe_events)
    assert me(client, member)["plan"] == "professional"
    assert stripe_api.v1.invoices.retrieve(renewed["latest_invoice"]).amount_paid == 2900


def test_a_downgrade_to_another_plan_replaces_a_half_made_one(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    stripe_link: FaultyLink,
    member: Member,
) -> None:
    subscription_id = subscribe(
        client, worker, stripe_api, stripe_events, member, plan="professional"
    )
    _lose_the_schedule_answer(client, stripe_link, member, plan="starter")
    first = subscription_now(stripe_api, subscription_id)["schedule"]

    # Nothing shows pending, so nothing stands in the way of another downgrade.
    other = _change(client, member, plan="starter_annual", when="period_end")
    assert other["pendingChange"]["plan"] == "starter_annual"
    now = subscription_now(stripe_api, subscription_id)["schedule"]
    assert now
    assert now != first
    assert as_dict(stripe_api.v1.subscription_schedules.retrieve(first))["status"] == "released"
    assert [c.status for c in _changes(services, member.customer_id)] == [
        PlanChangeStatus.CANCELED,
        PlanChangeStatus.PENDING,
    ]


def test_a_keep_while_stripe_makes_the_schedule_releases_it_once_made(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    stripe_link: FaultyLink,
    member: Member,
) -> None:
    subscription_id = subscribe(
        client, worker, stripe_api, stripe_events, member, plan="professional"
    )
    # The schedule's creation is on its way to Stripe (not there yet) when "Keep" arrives.
    stripe_link.hold_requests(only=b"POST /v1/subscription_schedules HTTP")
    answers: list[Any] = []
    setting = threading.Thread(
        target=lambda: answers.append(
            client.post(
                CHANGE, json={"plan": "starter", "when": "period_end"}, headers=member.headers
            )
        )
    )
    setting.start()
    try:
        assert stripe_link.wait_for_held_request(timeout=10)
        kept = _change_cancel(client, member)
        assert kept["pendingChange"] is None
    finally:
        stripe_link.up()
        setting.join(timeout=30)
    [late] = answers
    assert (late.status_code, late.json()["error"]["code"]) == (409, "plan_change_dropped")
    assert subscription_now(stripe_api, subscription_id)["schedule"] is None
    [change] = _changes(services, member.customer_id)
    assert change.status == PlanChangeStatus.CANCELED
    assert change.stripe_schedule_id is not None
    assert change.schedule_released_at is not None
    made = as_dict(stripe_api.v1.subscription_schedules.retrieve(change.stripe_schedule_id))
    assert made["status"] == "released"
    assert me(client, member)["pendingChange"] is None


def test_choosing_the_current_plan_while_a_downgrade_waits_drops_the_downgrade(
    client: TestClient,
    services: Services,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    member: Member,
) -> None:
    subscription_id = subscribe(
        client, worker, stripe_api, stripe_events, member, plan="professional"
    )
    _change(client, member, plan="starter", when="period_end")
    schedule_id = subscription_now(stripe_api, subscription_id)["schedule"]

    kept = _change(client, member, plan="professional")
    assert (kept["plan"], kept["pendingChange"]) == ("professional", None)
    assert subscription_now(stripe_api, subscription_id)["schedule"] is None
    released = as_dict(stripe_api.v1.subscription_schedules.retrieve(schedule_id))
    assert released["status"] == "released"
    [change] = _changes(services, member.customer_id)
    assert change.status == PlanChangeStatus.CANCELED


@pytest.mark.parametrize(
    "settings_overrides",
    [{**ON_FIRST_PAYMENT, "checkout_allow_promotion_codes": True}],
    indirect=True,
)
def test_a_scheduled_downgrade_keeps_the_promotion_discount_and_the_default_card(
    client: TestClient,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    localstripe: LocalStripe,
    member: Member,
) -> None:
    coupon = stripe_api.v1.coupons.create(params={"percent_off": 25, "duration": "forever"})
    code = f"KEEP{uuid.uuid4().hex[:6].upper()}"
    promo = stripe_api.v1.promotion_codes.create(
        params={"promotion": {"type": "coupon", "coupon": coupon.id}, "code": code}
    )
    url = checkout(client, member, "professional")["checkout_url"]
    assert pay_on_page(url, promotion_code=code).status_code == 303
    sync(client, worker, stripe_events)
    subscription_id = str(checkout_session(stripe_api, url)["subscription"])
    # A new default card on the subscription, as the dunning new-card job sets one.
    customer = str(subscription_now(stripe_api, subscription_id)["customer"])
    method = card(stripe_api, VISA)
    stripe_api.v1.payment_methods.attach(method, params={"customer": customer})
    stripe_api.v1.subscriptions.update(subscription_id, params={"default_payment_method": method})
    asked = {"plan": "starter", "when": "period_end"}
    previewed = client.get(f"{CHANGE}/preview", params=asked, headers=member.headers)
    assert previewed.status_code == 200, previewed.text
    shown = previewed.json()["data"]
    assert (shown["dueNow"], shown["nextAmount"]) == (0, 675)  # what the renewal will charge

    _change(client, member, plan="starter", when="period_end")

    def kept() -> tuple[Any, Any]:
        now = subscription_now(stripe_api, subscription_id)
        return (now["discount"] or {}).get("promotion_code"), now["default_payment_method"]

    assert kept() == (promo.id, method)
    renewed = advance(localstripe.url, subscription_id)
    sync(client, worker, stripe_events)
    assert _price_of(stripe_api, subscription_id) == "price_test_starter"
    assert kept() == (promo.id, method)
    invoice = stripe_api.v1.invoices.retrieve(renewed["latest_invoice"])
    assert (invoice.amount_paid, invoice.total) == (675, 675)  # 25 % off 9.00
    shown = me(client, member)
    assert (shown["plan"], shown["discount"]["promotionCode"]) == ("starter", promo.id)


@pytest.mark.parametrize(
    ("settings_overrides", "query"),
    [
        ({**ON_FIRST_PAYMENT, "subscription_downgrade_timing": "period_end"}, {}),
        (ON_FIRST_PAYMENT, {"when": "period_end"}),
    ],
    ids=["setting", "asked"],
    indirect=["settings_overrides"],
)
def test_the_preview_of_a_downgrade_at_the_period_end_charges_nothing_now(
    query: dict[str, str],
    client: TestClient,
    worker: Worker[Services],
    stripe_api: stripe.StripeClient,
    stripe_events: EventRelay,
    member: Member,
) -> None:
    subscribe(client, worker, stripe_api, stripe_events, member, plan="professional")
    period_end = parse_time(me(client, member)["current_period_ends_at"])
    answer = client.get(
        f"{CHANGE}/preview", params={"plan": "starter", **query}, headers=member.headers
    )
    assert answer.status_code == 200, answer.text
    shown = answer.json()["data"]
    assert (shown["when"], shown["dueNow"], shown["nextAmount"]) == ("period_end", 0, 900)
    assert parse_time(shown["nextAt"]) == period_end
    assert [line["proration"] for line in shown["lines"]] == [False]
