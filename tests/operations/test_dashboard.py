"""The dashboard's figures equal what the database holds, after a scripted day of Billfold
driven through the real API against the Stripe stand-in."""

from __future__ import annotations

import math
from collections import Counter
from datetime import datetime
from typing import Any

import pytest
import stripe
from fastapi.testclient import TestClient
from sqlalchemy import select
from support.day import a_day_of_billfold
from support.netfault import FaultyLink

from billfold.auth.models import Role
from billfold.credits.models import CreditAccount, CreditPurchase, LedgerEntry
from billfold.customers.models import Customer
from billfold.customers.service import LINK_JOB
from billfold.jobs.models import Job, JobStatus
from billfold.jobs.worker import Worker
from billfold.kit.db import utcnow
from billfold.operations import dashboard
from billfold.payments.models import Payment, Refund, SavedCard
from billfold.services import Services
from billfold.standin import LocalStripe
from billfold.webhooks.models import StripeEvent

# -- the same figures, counted the slow way from every row -------------------------------------


def _nearest_rank(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return max(ordered[max(math.ceil(p * len(ordered)), 1) - 1], 0.0)


def _expected(services: Services, since: datetime, until: datetime) -> dict[str, Any]:
    def inside(moment: datetime | None) -> bool:
        return moment is not None and since <= moment < until

    with services.db.transaction() as session:
        customers = [
            c
            for c in session.scalars(select(Customer))
            if inside(c.created_at) and c.user.role == Role.USER
        ]
        payments = [p for p in session.scalars(select(Payment)) if inside(p.created_at)]
        refunds = [r for r in session.scalars(select(Refund)) if inside(r.created_at)]
        entries = [e for e in session.scalars(select(LedgerEntry)) if inside(e.created_at)]
        purchases = [
            p
            for p in session.scalars(select(CreditPurchase))
            if inside(p.created_at) and p.kind == "recharge"
        ]
        events = list(session.scalars(select(StripeEvent)))
        jobs = list(session.scalars(select(Job)))
        cards = [c for c in session.scalars(select(SavedCard)) if inside(c.attached_at)]
        disabled = [
            a for a in session.scalars(select(CreditAccount)) if inside(a.auto_recharge_disabled_at)
        ]
        refunded_amount: dict[str, int] = {}
        for r in refunds:
            if r.status == "succeeded":
                currency = r.payment.currency
                refunded_amount[currency] = refunded_amount.get(currency, 0) + r.amount

    def summed(kind: str) -> int:
        return sum(e.amount for e in entries if e.kind == kind)

    succeeded = [p for p in payments if p.status == "succeeded"]
    due = [j for j in jobs if j.status == "pending" and j.run_at <= until]
    return {
        "signups": (
            len(customers),
            sum(1 for c in customers if c.stripe_customer_id),
            sum(
                1
                for j in jobs
                if j.kind == LINK_JOB and j.status == "dead" and inside(j.created_at)
            ),
        ),
        "cards_attached": len(cards),
        "payments_by_status": dict(Counter(str(p.status) for p in payments)),
        "declined": sum(
            1 for p in payments if p.status == "requires_payment_method" and p.decline_code
        ),
        "three_ds": (
            sum(1 for p in payments if p.required_action and p.status == "succeeded"),
            sum(
                1
                for p in payments
                if p.required_action and p.status in ("requires_payment_method", "canceled")
            ),
        ),
        "succeeded_amount": {
            c: sum(p.amount for p in succeeded if p.currency == c)
            for c in {p.currency for p in succeeded}
        },
        "refunds_by_status": dict(Counter(str(r.status) for r in refunds)),
        "refunded_amount": refunded_amount,
        "credits": (
            summed("purchase"),
            -summed("consume"),
            summed("grant"),
            -summed("refund"),
            summed("adjustment"),
        ),
        "recharges": dict(Counter(str(p.status) for p in purchases)),
        "auto_recharge_disabled": len(disabled),
        "webhooks_by_status": dict(Counter(str(e.status) for e in events if inside(e.received_at))),
        "lags": [
            (e.processed_at - e.stripe_created_at).total_seconds()
            for e in events
            if inside(e.processed_at) and e.processed_at is not None
        ],
        "jobs_by_status": dict(Counter(str(j.status) for j in jobs)),
        "dead_by_kind": dict(Counter(j.kind for j in jobs if j.status == "dead")),
        "oldest_due": min(due, key=lambda j: (j.run_at, j.id)).id if due else None,
    }


def _as_figures(board: dashboard.Dashboard) -> dict[str, Any]:
    return {
        "signups": (board.signups.signups, board.signups.linked, board.signups.link_jobs_dead),
        "cards_attached": board.cards_attached,
        "payments_by_status": board.payments.by_status,
        "declined": board.payments.declined,
        "three_ds": (board.payments.three_ds_passed, board.payments.three_ds_failed),
        "succeeded_amount": board.payments.succeeded_amount,
        "refunds_by_status": board.refunds.by_status,
        "refunded_amount": board.refunds.succeeded_amount,
        "credits": (
            board.credits.sold,
            board.credits.consumed,
            board.credits.granted,
            board.credits.refunded,
            board.credits.adjusted,
        ),
        "recharges": board.recharges_by_status,
        "auto_recharge_disabled": board.auto_recharge_disabled,
        "webhooks_by_status": board.webhooks.by_status,
        "jobs_by_status": board.jobs.by_status,
        "dead_by_kind": board.jobs.dead_by_kind,
        "oldest_due": board.jobs.oldest_due.id if board.jobs.oldest_due else None,
    }


def test_dashboard_figures_equal_what_the_database_holds_after_a_day_of_billfold(
    client: TestClient,
    admin: dict[str, str],
    services: Services,
    worker: Worker[Services],
    stripe_link: FaultyLink,
    stripe_api: stripe.StripeClient,
    localstripe: LocalStripe,
) -> None:
    a_day_of_billfold(client, admin, services, worker, stripe_link, stripe_api, localstripe)
    now = utcnow()

    with services.db.transaction() as session:
        boards = {w: dashboard.figures(session, w, now=now) for w in dashboard.WINDOWS}

    for window, board in boards.items():
        expected = _expected(services, now - dashboard.WINDOWS[window], now)
        lags = expected.pop("lags")
        assert _as_figures(board) == expected, window
        assert board.webhooks.lag_p50_seconds == pytest.approx(_nearest_rank(lags, 0.5), abs=1e-3)
        assert board.webhooks.lag_p99_seconds == pytest.approx(_nearest_rank(lags, 0.99), abs=1e-3)

    # And what the script did, said plainly for the last 24 hours.
    day = boards["24h"]
    assert (day.signups.signups, day.signups.linked, day.signups.unlinked) == (6, 5, 1)
    assert day.signups.link_jobs_dead == 1
    assert day.cards_attached == 4
    assert day.payments.succeeded == 5  # two orders, a 3-D Secure one, a purchase, a recharge
    assert (day.payments.declined, day.payments.requires_action) == (1, 1)
    assert (day.payments.three_ds_passed, day.payments.three_ds_failed) == (1, 1)
    assert boards["7d"].payments.declined == 2  # Bob's, two days ago
    assert day.refunds.count == 1
    assert day.refunds.succeeded_amount == {"usd": 500}
    assert (day.credits.granted, day.credits.consumed) == (100, 200)
    assert day.credits.sold >= 1500
    assert day.recharges_by_status == {"succeeded": 1}
    assert day.webhooks.by_status == {"processed": 1, "ignored": 1}
    assert day.webhooks.lag_p99_seconds is not None
    assert day.webhooks.lag_p99_seconds >= 40
    assert day.webhooks.lag_p50_seconds is not None
    assert day.webhooks.lag_p50_seconds >= 5
    assert day.jobs.dead_by_kind == {LINK_JOB: 1}
    assert day.jobs.by_status[JobStatus.DEAD] == 1

    answer = client.get("/dashboard", params={"window": "7d"}, headers=admin)
    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    assert data["window"] == "7d"
    assert data["payments"]["declined"] == 2
    assert data["payments"]["threeDsPassed"] == 1
    assert data["refunds"]["succeededAmount"] == {"usd": 500}
    assert data["signups"]["unlinked"] == 1


def test_dashboard_refuses_an_unknown_window_and_non_admins(
    client: TestClient, admin: dict[str, str], buyer: dict[str, Any]
) -> None:
    bad = client.get("/dashboard", params={"window": "1y"}, headers=admin)
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "invalid_window"
    refused = client.get("/dashboard", headers=buyer["headers"])
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "admin_only"


def test_an_empty_database_shows_zeros_and_no_lag(services: Services) -> None:
    with services.db.transaction() as session:
        board = dashboard.figures(session, "30d")
    assert board.signups.signups == 0
    assert board.payments.total == 0
    assert board.webhooks.lag_p50_seconds is None
    assert board.jobs.oldest_due is None
