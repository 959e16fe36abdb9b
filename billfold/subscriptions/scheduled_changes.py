"""Plan changes set for the period's end (downgrades): a Stripe subscription schedule moves the
subscription to the new price when the period (or the trial) ends; we keep the pending change
to show it, to let the customer drop it, and to close it when Stripe says the period rolled.

The plan, features and license follow Stripe's subscription as for any change (the
`customer.subscription.updated` at the roll-over goes through `apply_stripe_subscription`);
here only the pending change's own state is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from billfold.auth.service import Caller
from billfold.customers.service import acting_customer
from billfold.kit import audit
from billfold.kit.db import utcnow
from billfold.kit.errors import Conflict, NotFound
from billfold.services import Services
from billfold.stripe_gateway import StripeSchedule
from billfold.subscriptions.lifecycle import subscription_of
from billfold.subscriptions.models import (
    PlanChangeStatus,
    ScheduledPlanChange,
    Subscription,
    SubscriptionStatus,
)
from billfold.subscriptions.plans import get_plan

log = structlog.get_logger("billfold.subscriptions")

#: Intervals in a year, to compare prices of plans billed over different intervals.
_PER_YEAR = {"day": 365, "week": 52, "month": 12, "year": 1}
_SCHEDULABLE = (SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIALING)


@dataclass(frozen=True)
class PendingChange:
    plan: str
    effective_at: datetime


def pending_change(session: Session, subscription_id: str) -> ScheduledPlanChange | None:
    return session.scalar(
        select(ScheduledPlanChange).where(
            ScheduledPlanChange.subscription_id == subscription_id,
            ScheduledPlanChange.status == PlanChangeStatus.PENDING,
        )
    )


def pending_view(session: Session, subscription: Subscription) -> PendingChange | None:
    """What `/subscriptions/me` shows of a change waiting for the period end."""
    found = pending_change(session, subscription.id)
    if found is None or found.stripe_schedule_id is None:
        return None
    return PendingChange(found.to_plan.code, found.effective_at)


def yearly_amount(unit_amount: int, interval: str | None) -> int:
    """A recurring price per year, in its minor units (plans billed monthly and yearly compare)."""
    return unit_amount * _PER_YEAR.get(interval or "month", 12)


def is_downgrade(services: Services, current_price_id: str, target_price_id: str) -> bool:
    """Whether the target price costs less per year than the current one (same currency)."""
    current = services.stripe.retrieve_price(current_price_id)
    target = services.stripe.retrieve_price(target_price_id)
    if current.currency != target.currency:
        raise Conflict(
            "The new plan is priced in another currency than the subscription",
            code="currency_mismatch",
        )
    return yearly_amount(target.unit_amount or 0, target.interval) < yearly_amount(
        current.unit_amount or 0, current.interval
    )


def schedule(
    services: Services, caller: Caller, *, plan_code: str, customer_id: str | None = None
) -> Subscription:
    """Set the subscription to move to `plan_code` when its period (or trial) ends.

    The pending change is written first; its ID keys the Stripe calls, so a retry after a
    crash between them finishes the same schedule (the row is found again, still pending and
    without a schedule). A half-made change to another plan (never shown: Stripe's answer was
    lost) is replaced: what Stripe made of it is released first."""
    with services.db.transaction() as session:
        subscription = subscription_of(session, acting_customer(session, caller, customer_id).id)
        found = pending_change(session, subscription.id)
        half_made_elsewhere = (
            found is not None
            and found.stripe_schedule_id is None
            and found.to_plan.code != plan_code
        )
        subscription_id = subscription.id
    if half_made_elsewhere:
        drop_pending(services, subscription_id, reason="replaced")
    with services.db.transaction() as session:
        customer = acting_customer(session, caller, customer_id)
        subscription = subscription_of(session, customer.id)
        plan = get_plan(session, plan_code)
        _check_schedulable(subscription)
        if plan.id == subscription.plan_id:
            raise Conflict("Already on this plan", code="same_plan")
        if plan.stripe_price_id is None or not plan.active:
            raise Conflict(f"Plan {plan.code!r} cannot be bought", code="plan_not_purchasable")
        found = pending_change(session, subscription.id)
        if found is not None and (found.stripe_schedule_id or found.to_plan_id != plan.id):
            raise Conflict(
                "A plan change is already set for the period end: cancel it first",
                code="plan_change_pending",
            )
        if found is None:
            found = ScheduledPlanChange(
                subscription_id=subscription.id,
                from_plan_id=subscription.plan_id,
                to_plan_id=plan.id,
                effective_at=subscription.trial_ends_at
                if subscription.status == SubscriptionStatus.TRIALING
                else subscription.current_period_ends_at or utcnow(),
            )
            session.add(found)
            try:
                session.flush()
            except IntegrityError:  # a parallel request's change won the one-pending index
                raise Conflict(
                    "A plan change is already set for the period end: cancel it first",
                    code="plan_change_pending",
                ) from None
        change_id, stripe_id = found.id, subscription.stripe_subscription_id
        price_id, interval = plan.stripe_price_id, plan.interval
    assert stripe_id is not None
    made = services.stripe.schedule_price_change(
        stripe_id, change_id=change_id, price_id=price_id, plan_code=plan_code, interval=interval
    )
    with services.db.transaction() as session:
        change = session.get(ScheduledPlanChange, change_id)
        assert change is not None
        dropped = change.status != PlanChangeStatus.PENDING
        if change.stripe_schedule_id is None:
            change.stripe_schedule_id = made.id  # kept on a dropped change too: a trace
        if not dropped:
            change.effective_at = _boundary(made)
    if dropped:
        # "Keep", a change now or a cancellation dropped the change while Stripe was making
        # its schedule: the schedule must not go on to change the plan at the period end.
        _release(services, change_id, made.id)
        raise Conflict(
            "The plan change was dropped while it was being set: nothing changes",
            code="plan_change_dropped",
        )
    with services.db.transaction() as session:
        change = session.get(ScheduledPlanChange, change_id)
        assert change is not None
        audit.record(
            session,
            caller.actor,
            "subscription.change_plan_scheduled",
            change.subscription_id,
            plan=plan_code,
            effective_at=change.effective_at.isoformat(),
            stripe_schedule_id=made.id,
        )
        subscription = subscription_of(session, acting_customer(session, caller, customer_id).id)
        log.info("subscription.change_scheduled", change_id=change_id, plan=plan_code)
        return subscription


def _check_schedulable(subscription: Subscription) -> None:
    if subscription.stripe_subscription_id is None or subscription.status not in _SCHEDULABLE:
        raise Conflict(
            "Only an active or trialing paid subscription can change plan at the period end",
            code="no_paid_subscription",
        )
    if subscription.cancel_at_period_end:
        raise Conflict(
            "The subscription ends at the period end: resume it first", code="subscription_ending"
        )


def _boundary(made: StripeSchedule) -> datetime:
    """When the new plan starts: the end of the schedule's first (current) phase."""
    return datetime.fromtimestamp(made.phases[0].end, UTC)


def cancel(services: Services, caller: Caller, *, customer_id: str | None = None) -> Subscription:
    """Drop the pending change: the schedule is released, the subscription renews as it is."""
    with services.db.transaction() as session:
        subscription = subscription_of(session, acting_customer(session, caller, customer_id).id)
        found = pending_change(session, subscription.id)
        if found is None:
            raise NotFound("No plan change is set for the period end", code="no_pending_change")
        change_id, schedule_id = found.id, found.stripe_schedule_id
        stripe_id = subscription.stripe_subscription_id
    schedule_id = _release_made(services, change_id, schedule_id, stripe_id)
    with services.db.transaction() as session:
        change = session.get(ScheduledPlanChange, change_id)
        assert change is not None
        if change.status == PlanChangeStatus.PENDING:
            _mark_dropped(change, schedule_id)
            audit.record(
                session, caller.actor, "subscription.change_plan_canceled", change.subscription_id
            )
        return subscription_of(session, acting_customer(session, caller, customer_id).id)


def drop_pending(services: Services, subscription_id: str, *, reason: str) -> None:
    """A change made now, or a cancellation, replaces a change set for the period end (and
    Stripe refuses to set cancel-at-period-end on a subscription under a schedule): release
    the pending one first. Nothing to do without one."""
    with services.db.transaction() as session:
        found = pending_change(session, subscription_id)
        if found is None:
            return
        change_id, schedule_id = found.id, found.stripe_schedule_id
        subscription = session.get(Subscription, subscription_id)
        stripe_id = subscription.stripe_subscription_id if subscription else None
    schedule_id = _release_made(services, change_id, schedule_id, stripe_id)
    with services.db.transaction() as session:
        change = session.get(ScheduledPlanChange, change_id)
        if change is not None and change.status == PlanChangeStatus.PENDING:
            _mark_dropped(change, schedule_id)
            audit.record(
                session,
                "billfold",
                "subscription.change_plan_dropped",
                change.subscription_id,
                reason=reason,
            )


def _release_made(
    services: Services, change_id: str, schedule_id: str | None, stripe_id: str | None
) -> str | None:
    """Release the schedule of a change being dropped. A half-made change (Stripe made its
    schedule but the answer was lost) has no schedule ID of ours: the Stripe subscription
    says which schedule it is under. Answers the schedule released, if any."""
    if schedule_id is None and stripe_id is not None:
        schedule_id = services.stripe.retrieve_subscription(stripe_id).schedule
    if schedule_id is not None:
        services.stripe.release_schedule(schedule_id, change_id=change_id)
    return schedule_id


def _release(services: Services, change_id: str, schedule_id: str) -> None:
    services.stripe.release_schedule(schedule_id, change_id=change_id)
    with services.db.transaction() as session:
        change = session.get(ScheduledPlanChange, change_id)
        if change is not None and change.schedule_released_at is None:
            change.schedule_released_at = utcnow()


def _mark_dropped(change: ScheduledPlanChange, schedule_id: str | None) -> None:
    change.status, change.canceled_at = PlanChangeStatus.CANCELED, utcnow()
    if schedule_id is not None:
        change.stripe_schedule_id = change.stripe_schedule_id or schedule_id
        change.schedule_released_at = utcnow()


def after_subscription_change(services: Services, stripe_subscription_id: str) -> None:
    """Stripe's subscription was applied to ours: a pending change whose plan the subscription
    is now on, past the change's time, is applied; its schedule (whose work is done) is then
    released, so the subscription is free again (Stripe refuses to cancel at period end one
    under a schedule). Safe to run again: each step checks what is left to do."""
    with services.db.transaction() as session:
        subscription = session.scalar(
            select(Subscription).where(
                Subscription.stripe_subscription_id == stripe_subscription_id
            )
        )
        if subscription is None:
            return
        found = pending_change(session, subscription.id)
        if (
            found is not None
            and found.stripe_schedule_id is not None
            and subscription.plan_id == found.to_plan_id
            and subscription.current_period_ends_at is not None
            and subscription.current_period_ends_at > found.effective_at
        ):
            found.status, found.applied_at = PlanChangeStatus.APPLIED, utcnow()
            audit.record(
                session,
                "stripe",
                "subscription.change_plan_applied",
                subscription.id,
                plan=found.to_plan.code,
            )
            log.info("subscription.scheduled_change_applied", change_id=found.id)
        unreleased = session.scalars(
            select(ScheduledPlanChange).where(
                ScheduledPlanChange.subscription_id == subscription.id,
                ScheduledPlanChange.status == PlanChangeStatus.APPLIED,
                ScheduledPlanChange.schedule_released_at.is_(None),
            )
        ).all()
        to_release = [(c.id, c.stripe_schedule_id) for c in unreleased if c.stripe_schedule_id]
    for change_id, schedule_id in to_release:
        services.stripe.release_schedule(schedule_id, change_id=change_id)
        with services.db.transaction() as session:
            change = session.get(ScheduledPlanChange, change_id)
            if change is not None and change.schedule_released_at is None:
                change.schedule_released_at = utcnow()


def on_schedule_ended(services: Services, schedule_id: str) -> bool:
    """A schedule was released or canceled in Stripe (by us, or by someone in the Dashboard):
    a change of ours still pending on it will not happen. Answers whether one was ours."""
    with services.db.transaction() as session:
        found = session.scalar(
            select(ScheduledPlanChange).where(ScheduledPlanChange.stripe_schedule_id == schedule_id)
        )
        if found is None:
            return False
        change_id, pending = found.id, found.status == PlanChangeStatus.PENDING
    if not pending:
        return True
    remote = services.stripe.retrieve_schedule(schedule_id)
    if remote.live:
        return True
    with services.db.transaction() as session:
        change = session.get(ScheduledPlanChange, change_id)
        if change is not None and change.status == PlanChangeStatus.PENDING:
            subscription = session.get(Subscription, change.subscription_id)
            rolled = (
                subscription is not None
                and subscription.plan_id == change.to_plan_id
                and (subscription.current_period_ends_at or change.effective_at)
                > change.effective_at
            )
            if rolled:
                return True  # applied: the subscription's own event closes it
            change.status, change.canceled_at = PlanChangeStatus.CANCELED, utcnow()
            change.schedule_released_at = utcnow()
            audit.record(
                session, "stripe", "subscription.change_plan_canceled", change.subscription_id
            )
    return True
