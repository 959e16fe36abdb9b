"""A subscription's life: the free trial at sign-up, checkout, cancel, change of plan, the
billing portal, and bringing Stripe's view of it into ours (with a new license each time)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from billfold.auth.service import Caller
from billfold.config import Settings
from billfold.customers.models import Customer
from billfold.customers.service import acting_customer
from billfold.customers.stripe_sync import ensure_stripe_customer
from billfold.kit import audit
from billfold.kit.db import utcnow
from billfold.kit.errors import Conflict, NotFound
from billfold.kit.signing_keys import SigningKeys
from billfold.services import Services
from billfold.stripe_gateway import StripeSubscription
from billfold.subscriptions import licenses
from billfold.subscriptions.models import (
    Plan,
    Subscription,
    SubscriptionRequest,
    SubscriptionStatus,
)
from billfold.subscriptions.plans import TRIAL, get_plan, plan_for_price
from billfold.webhooks.outbound.notify import subscription_changed

log = structlog.get_logger("billfold.subscriptions")
LINK_WAIT_SECONDS = 10.0


def start_trial(
    session: Session, customer: Customer, settings: Settings, keys: SigningKeys
) -> None:
    """A new customer starts on the trial plan, with no Stripe customer, licensed at once."""
    if session.scalar(select(Subscription.id).where(Subscription.customer_id == customer.id)):
        return  # started already (a verification that follows a sign-up that started it)
    plan = session.scalar(select(Plan).where(Plan.code == TRIAL))
    if plan is None or not plan.active:
        return
    days = plan.trial_days or settings.license_trial_days
    subscription = Subscription(
        customer_id=customer.id,
        plan_id=plan.id,
        status=SubscriptionStatus.TRIALING,
        trial_ends_at=utcnow() + timedelta(days=days),
    )
    session.add(subscription)
    session.flush()
    subscription_changed(session, subscription, None)
    licenses.issue(session, subscription, settings, keys)


def new_request(
    session: Session, customer_id: str, subscription_id: str | None, action: str
) -> int:
    """Record that we are about to ask Stripe for `action`, before asking: the row's ID ends
    the call's idempotency key, so a later request is a new call. Only a caller that sends
    the same request again with this ID (a job keeping it in its payload; the SDK's retries
    inside one call) gets Stripe's first answer replayed."""
    request = SubscriptionRequest(
        customer_id=customer_id, subscription_id=subscription_id, action=action
    )
    session.add(request)
    session.flush()
    return request.id


def subscription_of(session: Session, customer_id: str) -> Subscription:
    found = session.scalar(select(Subscription).where(Subscription.customer_id == customer_id))
    if found is None:
        raise NotFound("No subscription", code="no_subscription")
    return found


def checkout(
    services: Services,
    caller: Caller,
    *,
    plan_code: str,
    success_url: str,
    cancel_url: str,
    customer_id: str | None = None,
) -> str:
    """A Stripe Checkout Session for a paid plan; answers its URL."""
    with services.db.transaction() as session:
        customer = acting_customer(session, caller, customer_id)
        plan = get_plan(session, plan_code)
        if plan.stripe_price_id is None:
            raise Conflict(f"Plan {plan.code!r} cannot be bought", code="plan_not_purchasable")
        current = session.scalar(
            select(Subscription).where(Subscription.customer_id == customer.id)
        )
        if (
            current is not None
            and current.stripe_subscription_id
            and current.status
            not in (
                SubscriptionStatus.CANCELED,
                SubscriptionStatus.INCOMPLETE_EXPIRED,
            )
        ):
            raise Conflict("Already subscribed: change the plan instead", code="already_subscribed")
        price_id, user_id, trial_days = plan.stripe_price_id, customer.user_id, plan.trial_days
        request_id = new_request(session, customer.id, current.id if current else None, "checkout")
    stripe_customer_id = ensure_stripe_customer(
        services, customer.id, wait=LINK_WAIT_SECONDS, source="first_payment"
    )
    return services.stripe.create_checkout_session(
        customer_id=customer.id,
        user_id=user_id,
        plan_code=plan.code,
        request_id=request_id,
        stripe_customer_id=stripe_customer_id,
        price_id=price_id,
        success_url=success_url,
        cancel_url=cancel_url,
        trial_days=trial_days or None,
        allow_promotion_codes=services.settings.checkout_allow_promotion_codes,
    )


def apply_stripe_subscription(
    session: Session,
    remote: StripeSubscription,
    *,
    event_at: datetime | None,
    settings: Settings,
    keys: SigningKeys,
    customer_id: str | None = None,
) -> Subscription | None:
    """Bring Stripe's subscription into ours; None if no customer of ours owns it. A new
    license is issued when anything a license says (plan, status, period) changed.

    `event_at` is the creation time of the Stripe event that told us (an event older than
    one already applied changes nothing); None for Stripe's own answer to our call, which
    is current and leaves the event clock alone.
    """
    subscription = _local_for(session, remote, customer_id)
    if subscription is None:
        return None
    if event_at and subscription.stripe_event_at and event_at < subscription.stripe_event_at:
        return subscription  # older than what we hold
    if _second_live_subscription(subscription, remote):
        # Two checkouts both paid: keep the one we track, and flag the other for a person.
        log.warning(
            "subscription.second_live", customer_id=subscription.customer_id, other=remote.id
        )
        audit.record(
            session,
            "stripe",
            "subscription.second_live_ignored",
            subscription.id,
            stripe_subscription_id=remote.id,
        )
        return subscription
    plan = plan_for_price(session, remote.price_id) or subscription.plan
    status = status_of(remote)
    period_end = _time(remote.current_period_end)
    before = _license_facts(subscription)
    subscription.stripe_subscription_id = remote.id
    subscription.plan_id, subscription.plan = plan.id, plan
    subscription.status = status
    subscription.current_period_ends_at = period_end
    ended = status == SubscriptionStatus.CANCELED
    # An ended subscription is no longer "set to cancel": it is canceled, since then.
    subscription.cancel_at_period_end = remote.cancel_at_period_end and not ended
    subscription.trial_ends_at = _time(remote.trial_end) if remote.status == "trialing" else None
    subscription.canceled_at = (
        _time(remote.canceled_at or remote.ended_at) or utcnow() if ended else None
    )
    paused = status == SubscriptionStatus.PAUSED
    subscription.pause_behavior = remote.pause_behavior if paused else None
    subscription.pause_resumes_at = _time(remote.pause_resumes_at) if paused else None
    subscription.discount = remote.discount
    if event_at is not None:
        subscription.stripe_event_at = max(event_at, subscription.stripe_event_at or event_at)
    session.flush()
    if _license_facts(subscription) != before:
        subscription_changed(session, subscription, str(before[1]))
        licenses.issue(session, subscription, settings, keys)
        log.info(
            "subscription.changed",
            customer_id=subscription.customer_id,
            status=str(status),
            plan=plan.code,
        )
    return subscription


def status_of(remote: StripeSubscription) -> SubscriptionStatus:
    """Ours is Stripe's status, except that a subscription whose collection is paused is
    `paused` (Stripe keeps it `active`, with `pause_collection` set)."""
    status = SubscriptionStatus(remote.status)
    live = (SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIALING, SubscriptionStatus.PAST_DUE)
    if remote.pause_behavior and status in live:
        return SubscriptionStatus.PAUSED
    return status


def _local_for(
    session: Session, remote: StripeSubscription, customer_id: str | None
) -> Subscription | None:
    found = session.scalar(
        select(Subscription).where(Subscription.stripe_subscription_id == remote.id)
    )
    if found is not None:
        return found
    ours = customer_id or remote.metadata.get("customer_id")
    customer = session.scalar(
        select(Customer).where(
            or_(Customer.id == ours, Customer.stripe_customer_id == remote.customer)
        )
    )
    if customer is None:
        return None
    found = session.scalar(select(Subscription).where(Subscription.customer_id == customer.id))
    if found is None:
        plan = plan_for_price(session, remote.price_id)
        if plan is None:
            return None
        found = Subscription(
            customer_id=customer.id, plan_id=plan.id, plan=plan, status=remote.status
        )
        session.add(found)
        session.flush()
        subscription_changed(session, found, None)
    return found


def _second_live_subscription(subscription: Subscription, remote: StripeSubscription) -> bool:
    ended = (SubscriptionStatus.CANCELED, SubscriptionStatus.INCOMPLETE_EXPIRED)
    return bool(
        subscription.stripe_subscription_id
        and subscription.stripe_subscription_id != remote.id
        and subscription.status not in ended
    )


def _license_facts(subscription: Subscription) -> tuple[object, ...]:
    return (
        subscription.plan_id,
        str(subscription.status),
        subscription.current_period_ends_at,
        subscription.trial_ends_at,
        subscription.cancel_at_period_end,
    )


def _time(epoch: int | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if epoch else None


def record(
    services: Services, remote: StripeSubscription, caller: Caller, action: str
) -> Subscription:
    with services.db.transaction() as session:
        subscription = apply_stripe_subscription(
            session, remote, event_at=None, settings=services.settings, keys=services.licenses
        )
        assert subscription is not None
        audit.record(session, caller.actor, action, subscription.id, status=remote.status)
        return subscription


def portal(
    services: Services, caller: Caller, *, return_url: str, customer_id: str | None = None
) -> str:
    with services.db.transaction() as session:
        customer = acting_customer(session, caller, customer_id)
        current = session.scalar(
            select(Subscription.id).where(Subscription.customer_id == customer.id)
        )
        request_id = new_request(session, customer.id, current, "portal")
    stripe_customer_id = ensure_stripe_customer(
        services, customer.id, wait=LINK_WAIT_SECONDS, source="first_payment"
    )
    return services.stripe.create_portal_session(
        stripe_customer_id, customer_id=customer.id, request_id=request_id, return_url=return_url
    )


def end_for_deleted_customer(
    services: Services, customer_id: str, stripe_customer_id: str | None
) -> None:
    """A deleted account bills no more: cancel its Stripe subscriptions now and end ours.

    Safe to run again (a retry lists only what still bills); Stripe errors go through so
    the removal job retries while Stripe is away."""
    with services.db.transaction() as session:
        local = session.scalar(select(Subscription).where(Subscription.customer_id == customer_id))
        if local is not None and local.stripe_subscription_id is None:
            _end_locally(session, local, services)  # a trial that never touched Stripe
        local_id = local.id if local is not None else None
    if stripe_customer_id is None:
        return
    for remote in services.stripe.list_live_subscriptions(stripe_customer_id):
        ended = services.stripe.cancel_subscription(remote.id, subscription_id=local_id)
        with services.db.transaction() as session:
            apply_stripe_subscription(
                session,
                ended,
                event_at=None,
                settings=services.settings,
                keys=services.licenses,
                customer_id=customer_id,
            )
            audit.record(session, "billfold", "subscription.cancel", ended.id, reason="deleted")
        log.info("subscription.ended_for_deletion", customer_id=customer_id, stripe_id=ended.id)


def _end_locally(session: Session, subscription: Subscription, services: Services) -> None:
    if subscription.status == SubscriptionStatus.CANCELED:
        return
    subscription.status = SubscriptionStatus.CANCELED
    subscription.canceled_at = utcnow()
    licenses.issue(session, subscription, services.settings, services.licenses)
    audit.record(session, "billfold", "subscription.cancel", subscription.id, reason="deleted")
