"""The overview page: plan, status, trial days left, renewal, license token, credit balance."""

from __future__ import annotations

import math

from fastapi import APIRouter, Request
from starlette.responses import Response

from billfold.credits import ledger
from billfold.customers.service import acting_customer
from billfold.kit.db import utcnow
from billfold.kit.errors import NotFound
from billfold.pages.deps import PagesDep, PageWorkDep
from billfold.subscriptions import dunning, licenses, lifecycle
from billfold.subscriptions.models import Subscription

router = APIRouter(include_in_schema=False)

STATUS_LABELS = {
    "trialing": "Free trial",
    "active": "Active",
    "past_due": "Payment overdue",
    "unpaid": "Unpaid",
    "incomplete": "Waiting for payment",
    "canceled": "Canceled",
    "paused": "Payments paused",
}


def status_label(subscription: Subscription) -> str:
    label = STATUS_LABELS.get(str(subscription.status), str(subscription.status))
    if subscription.cancel_at_period_end and str(subscription.status) != "canceled":
        label += " (cancels at period end)"
    return label


def trial_days_left(subscription: Subscription) -> int | None:
    if str(subscription.status) != "trialing" or subscription.trial_ends_at is None:
        return None
    seconds = (subscription.trial_ends_at - utcnow()).total_seconds()
    return max(0, math.ceil(seconds / 86400))


@router.get("/billing")
def overview(request: Request, work: PageWorkDep, pages: PagesDep) -> Response:
    session = work.session
    customer = acting_customer(session, work.caller)
    try:
        subscription: Subscription | None = lifecycle.subscription_of(session, customer.id)
    except NotFound:
        subscription = None
    return pages.render(
        request,
        "billing/overview.html",
        section="/billing",
        subscription=subscription,
        status_label=status_label(subscription) if subscription else "",
        trial_days_left=trial_days_left(subscription) if subscription else None,
        license=licenses.current(session, customer.id),
        balance=ledger.balance(session, customer.id),
        dunning=dunning.open_case(session, customer.id),
    )
