"""Changing a paid subscription's plan: what it will cost (Stripe's invoice preview) and the
change itself, prorated as the caller chooses (or as the setting says), now or (downgrades)
at the period's end (see `scheduled_changes`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from billfold.auth.service import Caller
from billfold.config import ChangeTiming, ProrationBehavior
from billfold.customers.service import acting_customer
from billfold.kit.db import utcnow
from billfold.kit.errors import Conflict, InvalidInput
from billfold.services import Services
from billfold.stripe_gateway import StripeInvoiceLine, StripeInvoicePreview
from billfold.subscriptions import scheduled_changes
from billfold.subscriptions.lifecycle import new_request, record, subscription_of
from billfold.subscriptions.models import Subscription, SubscriptionStatus
from billfold.subscriptions.plans import get_plan

#: How old a `prorationDate` (from a preview) may be when the change is made.
PRORATION_DATE_MAX_AGE = timedelta(hours=1)


@dataclass(frozen=True)
class PreviewLine:
    description: str | None
    amount: int
    proration: bool


@dataclass(frozen=True)
class PlanChangePreview:
    """What a change would charge: `due_now` at once, `next_amount` at `next_at`. A change
    set for the period end (`when`) charges nothing now: the new price from `next_at`."""

    plan: str
    proration_behavior: str
    proration_date: datetime
    currency: str
    due_now: int
    next_amount: int
    next_at: datetime | None
    lines: tuple[PreviewLine, ...]
    when: str = ChangeTiming.NOW


@dataclass(frozen=True)
class _Target:
    stripe_id: str
    subscription_id: str
    price_id: str
    plan_code: str
    unchanged: bool
    # The subscription's price in Stripe now (None for a subscription we never linked).
    current_price_id: str | None
    customer_id: str


def _target(services: Services, caller: Caller, plan_code: str, customer_id: str | None) -> _Target:
    with services.db.transaction() as session:
        customer = acting_customer(session, caller, customer_id)
        subscription = subscription_of(session, customer.id)
        plan = get_plan(session, plan_code)
        if (
            subscription.stripe_subscription_id is None
            or subscription.status == SubscriptionStatus.CANCELED
        ):
            raise Conflict(
                "No paid subscription to change: use checkout", code="no_paid_subscription"
            )
        if plan.stripe_price_id is None:
            raise Conflict(f"Plan {plan.code!r} cannot be bought", code="plan_not_purchasable")
        return _Target(
            subscription.stripe_subscription_id,
            subscription.id,
            plan.stripe_price_id,
            plan.code,
            unchanged=plan.id == subscription.plan_id,
            current_price_id=subscription.plan.stripe_price_id,
            customer_id=customer.id,
        )


def _proration_time(proration_date: datetime | None) -> int:
    now = utcnow()
    if proration_date is None:
        return int(now.timestamp())
    if proration_date > now + timedelta(seconds=5) or proration_date < now - PRORATION_DATE_MAX_AGE:
        raise InvalidInput(
            "prorationDate must come from a preview of the last hour",
            code="invalid_proration_date",
        )
    return int(proration_date.timestamp())


def preview(
    services: Services,
    caller: Caller,
    *,
    plan_code: str,
    proration_behavior: ProrationBehavior | None = None,
    when: ChangeTiming | None = None,
    customer_id: str | None = None,
) -> PlanChangePreview:
    """What changing to `plan_code` would charge, from Stripe's invoice preview. Pass the
    answer's `proration_date` to `change_plan` and the change charges exactly this. A
    downgrade that will wait for the period end (`when`, else the setting) charges nothing
    now and nothing is prorated: the preview says so, with the new price from then."""
    target = _target(services, caller, plan_code, customer_id)
    if target.unchanged:
        raise Conflict("Already on this plan", code="same_plan")
    if when == ChangeTiming.PERIOD_END and proration_behavior:
        raise InvalidInput(
            "A change at the period end has nothing to prorate: leave out prorationBehavior",
            code="proration_with_period_end",
        )
    if _timing(services, target, when) == ChangeTiming.PERIOD_END:
        return _preview_at_period_end(services, target)
    behavior = proration_behavior or services.settings.subscription_proration_behavior
    at = int(utcnow().timestamp())
    item_id = services.stripe.retrieve_subscription(target.stripe_id).item_id or ""

    def preview_with(how: str) -> StripeInvoicePreview:
        return services.stripe.preview_price_change(
            target.stripe_id,
            item_id=item_id,
            price_id=target.price_id,
            proration_behavior=how,
            proration_date=at,
        )

    first = preview_with(str(behavior))
    if behavior == ProrationBehavior.ALWAYS_INVOICE:
        # Charged now: the prorations; then the renewal: the new price's own lines.
        renewal = preview_with(ProrationBehavior.NONE)
        next_lines = [line for line in renewal.lines if not line.proration and _after(line, at)]
        due_now, next_at = first.amount_due, renewal.due_at
        next_amount = sum(line.amount for line in next_lines)
    else:
        due_now, next_amount, next_at = 0, first.amount_due, first.due_at
    return PlanChangePreview(
        plan=target.plan_code,
        proration_behavior=str(behavior),
        proration_date=datetime.fromtimestamp(at, UTC),
        currency=first.currency,
        due_now=due_now,
        next_amount=next_amount,
        next_at=datetime.fromtimestamp(next_at, UTC) if next_at else None,
        lines=tuple(PreviewLine(x.description, x.amount, x.proration) for x in first.lines),
    )


def _preview_at_period_end(services: Services, target: _Target) -> PlanChangePreview:
    """Nothing now; the renewal when the period (or the trial) ends, where the schedule will
    move the subscription: Stripe's preview of that invoice at the new price, prorating
    nothing, so a discount, the quantity and anything else on it count as they will then."""
    remote = services.stripe.retrieve_subscription(target.stripe_id)
    renewal = services.stripe.preview_price_change(
        target.stripe_id,
        item_id=remote.item_id or "",
        price_id=target.price_id,
        proration_behavior=ProrationBehavior.NONE,
        proration_date=int(utcnow().timestamp()),
    )
    starts = remote.trial_end if remote.status == "trialing" else remote.current_period_end
    return PlanChangePreview(
        plan=target.plan_code,
        proration_behavior=ProrationBehavior.NONE,
        proration_date=utcnow().replace(microsecond=0),
        currency=renewal.currency,
        due_now=0,
        next_amount=renewal.amount_due,
        next_at=datetime.fromtimestamp(starts, UTC) if starts else None,
        lines=tuple(
            PreviewLine(x.description, x.amount, proration=False)
            for x in renewal.lines
            if not x.proration
        ),
        when=ChangeTiming.PERIOD_END,
    )


def _after(line: StripeInvoiceLine, at: int) -> bool:
    return line.period_start is None or line.period_start > at


def change_plan(
    services: Services,
    caller: Caller,
    *,
    plan_code: str,
    proration_behavior: ProrationBehavior | None = None,
    proration_date: datetime | None = None,
    when: ChangeTiming | None = None,
    customer_id: str | None = None,
) -> Subscription:
    """Switch the subscription's price now, prorated as asked (default: the setting), or set
    a downgrade for the period end (`when`; default: the setting for downgrades)."""
    if when == ChangeTiming.PERIOD_END and (proration_behavior or proration_date):
        raise InvalidInput(
            "A change at the period end has nothing to prorate: leave out prorationBehavior "
            "and prorationDate",
            code="proration_with_period_end",
        )
    at = _proration_time(proration_date)
    target = _target(services, caller, plan_code, customer_id)
    timing = _timing(services, target, when)
    if timing == ChangeTiming.PERIOD_END:
        return scheduled_changes.schedule(
            services, caller, plan_code=plan_code, customer_id=customer_id
        )
    if target.unchanged:
        # Choosing the plan one is on, while a downgrade waits, keeps it: as "Keep" does.
        scheduled_changes.drop_pending(services, target.subscription_id, reason="kept")
        with services.db.transaction() as session:
            return subscription_of(session, acting_customer(session, caller, customer_id).id)
    # A change made now replaces one set for the period end.
    scheduled_changes.drop_pending(services, target.subscription_id, reason="changed_now")
    behavior = proration_behavior or services.settings.subscription_proration_behavior
    current = services.stripe.retrieve_subscription(target.stripe_id)
    with services.db.transaction() as session:
        request_id = new_request(session, target.customer_id, target.subscription_id, "change_plan")
    remote = services.stripe.change_price(
        target.stripe_id,
        subscription_id=target.subscription_id,
        request_id=request_id,
        item_id=current.item_id,
        price_id=target.price_id,
        plan_code=target.plan_code,
        proration_behavior=str(behavior),
        proration_date=at,
    )
    return record(services, remote, caller, "subscription.change_plan")


def _timing(services: Services, target: _Target, when: ChangeTiming | None) -> ChangeTiming:
    """Upgrades take effect now; a downgrade when asked, else as the setting says."""
    default = services.settings.subscription_downgrade_timing
    if when == ChangeTiming.NOW or (when is None and default == ChangeTiming.NOW):
        return ChangeTiming.NOW
    if target.unchanged:
        if when == ChangeTiming.PERIOD_END:
            raise Conflict("Already on this plan", code="same_plan")
        return ChangeTiming.NOW
    downgrade = target.current_price_id is not None and scheduled_changes.is_downgrade(
        services, target.current_price_id, target.price_id
    )
    if downgrade:
        return ChangeTiming.PERIOD_END
    if when == ChangeTiming.PERIOD_END:
        raise Conflict(
            "Upgrades take effect at once: only a downgrade waits for the period end",
            code="upgrade_is_immediate",
        )
    return ChangeTiming.NOW
