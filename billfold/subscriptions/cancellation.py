"""Ending and holding a subscription: cancel now or at the period's end (a trial's period
ends with the trial), resume what was set to cancel or paused, and pause collection."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from billfold.auth.service import Caller
from billfold.customers.service import acting_customer
from billfold.kit import audit
from billfold.kit.db import utcnow
from billfold.kit.errors import Conflict, InvalidInput
from billfold.services import Services
from billfold.subscriptions import licenses, scheduled_changes
from billfold.subscriptions.lifecycle import new_request, record, subscription_of
from billfold.subscriptions.models import Subscription, SubscriptionStatus
from billfold.webhooks.outbound.notify import subscription_changed

#: What Stripe does with the invoices of a paused subscription.
PAUSE_BEHAVIORS = ("void", "keep_as_draft", "mark_uncollectible")
END_TRIALS_JOB = "subscriptions.end_trials"
END_TRIALS_EVERY_SECONDS = 300.0


def cancel(
    services: Services, caller: Caller, *, at_period_end: bool, customer_id: str | None = None
) -> Subscription:
    """Cancel now (`canceled_at` set, the license loses its features) or at the end of the
    period: for a trial, its end."""
    with services.db.transaction() as session:
        customer = acting_customer(session, caller, customer_id)
        subscription = subscription_of(session, customer.id)
        if subscription.status == SubscriptionStatus.CANCELED:
            raise Conflict("Already canceled", code="already_canceled")
        stripe_id, subscription_id = subscription.stripe_subscription_id, subscription.id
        if stripe_id is None:  # a trial that never touched Stripe: ours to end
            if at_period_end:
                _set_trial_to_cancel(session, subscription, services, caller, cancel=True)
            else:
                _end_trial(session, subscription, services, actor=caller.actor)
            return subscription
        if at_period_end:
            request_id = new_request(session, customer.id, subscription_id, "cancel")
    # A cancellation supersedes a downgrade set for the period end.
    scheduled_changes.drop_pending(services, subscription_id, reason="canceled")
    if at_period_end:
        remote = services.stripe.cancel_at_period_end(
            stripe_id, subscription_id=subscription_id, request_id=request_id
        )
    else:  # ending is final: its key from our subscription's ID alone is enough
        remote = services.stripe.cancel_subscription(stripe_id, subscription_id=subscription_id)
    return record(services, remote, caller, "subscription.cancel")


def resume(services: Services, caller: Caller, *, customer_id: str | None = None) -> Subscription:
    """Undo what would stop the subscription: a cancellation at the period's end (until
    then) and a paused collection. Both at once if both are set."""
    with services.db.transaction() as session:
        customer = acting_customer(session, caller, customer_id)
        subscription = subscription_of(session, customer.id)
        paused = subscription.status == SubscriptionStatus.PAUSED
        if subscription.status == SubscriptionStatus.CANCELED or not (
            paused or subscription.cancel_at_period_end
        ):
            raise Conflict(
                "The subscription is neither set to cancel nor paused", code="not_canceling"
            )
        stripe_id, subscription_id = subscription.stripe_subscription_id, subscription.id
        if stripe_id is None:
            _set_trial_to_cancel(session, subscription, services, caller, cancel=False)
            return subscription
        undo_cancel = subscription.cancel_at_period_end
        request_id = new_request(session, customer.id, subscription_id, "resume")
    remote = services.stripe.resume(
        stripe_id,
        subscription_id=subscription_id,
        request_id=request_id,
        undo_cancel=undo_cancel,
        undo_pause=paused,
    )
    return record(services, remote, caller, "subscription.resume")


def pause(
    services: Services,
    caller: Caller,
    *,
    behavior: str,
    resumes_at: datetime | None = None,
    customer_id: str | None = None,
) -> Subscription:
    """Pause collection (Stripe's `pause_collection`): no charge until resumed (or until
    `resumes_at`); the license says `paused` and carries no features meanwhile."""
    if behavior not in PAUSE_BEHAVIORS:
        raise InvalidInput(f"Unknown pause behavior {behavior!r}", code="invalid_pause_behavior")
    if resumes_at is not None and resumes_at <= utcnow():
        raise InvalidInput("resumesAt must be in the future", code="resumes_in_the_past")
    with services.db.transaction() as session:
        customer = acting_customer(session, caller, customer_id)
        subscription = subscription_of(session, customer.id)
        if subscription.status == SubscriptionStatus.PAUSED:
            raise Conflict("Already paused", code="already_paused")
        if subscription.stripe_subscription_id is None or subscription.status not in (
            SubscriptionStatus.ACTIVE,
            SubscriptionStatus.PAST_DUE,
        ):
            raise Conflict("Only a paid, live subscription can be paused", code="not_pausable")
        stripe_id, subscription_id = subscription.stripe_subscription_id, subscription.id
        request_id = new_request(session, customer.id, subscription_id, "pause")
    remote = services.stripe.pause_collection(
        stripe_id,
        subscription_id=subscription_id,
        request_id=request_id,
        behavior=behavior,
        resumes_at=int(resumes_at.timestamp()) if resumes_at is not None else None,
    )
    return record(services, remote, caller, "subscription.pause")


def end_trials_job(services: Services, _payload: dict[str, Any]) -> None:
    """The periodic job (every `END_TRIALS_EVERY_SECONDS`) that ends finished trials."""
    end_finished_trials(services)


def end_finished_trials(services: Services) -> int:
    """Periodic job: end the trials (never in Stripe) set to cancel whose end has come.
    Answers how many ended; running it again ends nothing twice."""
    with services.db.transaction() as session:
        due = session.scalars(
            select(Subscription).where(
                Subscription.stripe_subscription_id.is_(None),
                Subscription.status == SubscriptionStatus.TRIALING,
                Subscription.cancel_at_period_end.is_(True),
                Subscription.trial_ends_at <= utcnow(),
            )
        ).all()
        for subscription in due:
            _end_trial(
                session, subscription, services, actor="billfold", at=subscription.trial_ends_at
            )
        return len(due)


def _set_trial_to_cancel(
    session: Session,
    subscription: Subscription,
    services: Services,
    caller: Caller,
    *,
    cancel: bool,
) -> None:
    if subscription.cancel_at_period_end == cancel:
        return
    subscription.cancel_at_period_end = cancel
    session.flush()
    subscription_changed(session, subscription, str(subscription.status))
    licenses.issue(session, subscription, services.settings, services.licenses)
    action = "subscription.cancel" if cancel else "subscription.resume"
    audit.record(session, caller.actor, action, subscription.id, at_period_end=True)


def _end_trial(
    session: Session,
    subscription: Subscription,
    services: Services,
    *,
    actor: str,
    at: datetime | None = None,
) -> None:
    previous = str(subscription.status)
    subscription.status = SubscriptionStatus.CANCELED
    subscription.cancel_at_period_end = False
    subscription.canceled_at = at or utcnow()
    session.flush()
    subscription_changed(session, subscription, previous)
    licenses.issue(session, subscription, services.settings, services.licenses)
    audit.record(session, actor, "subscription.cancel", subscription.id)
