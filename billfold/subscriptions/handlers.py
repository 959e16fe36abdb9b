"""Stripe events about subscriptions: each re-reads the subscription from Stripe and applies
it, so the order and repetition of events never leave a wrong state."""

from __future__ import annotations

from typing import Any

from billfold.services import Services
from billfold.stripe_gateway import StripeNotFound, StripeSubscription
from billfold.stripe_gateway.objects import parse_subscription
from billfold.subscriptions.lifecycle import apply_stripe_subscription
from billfold.webhooks.dispatch import EventHandler, Outcome, event_object, event_time
from billfold.webhooks.models import EventStatus


def _apply(
    services: Services,
    event: dict[str, Any],
    subscription_id: str,
    customer_id: str | None = None,
    fallback: dict[str, Any] | None = None,
) -> Outcome:
    try:
        remote: StripeSubscription = services.stripe.retrieve_subscription(subscription_id)
    except StripeNotFound:
        if fallback is None:
            return Outcome(EventStatus.IGNORED, note=f"{subscription_id} is gone from Stripe")
        remote = parse_subscription(fallback)
    with services.db.transaction() as session:
        applied = apply_stripe_subscription(
            session,
            remote,
            event_at=event_time(event),
            settings=services.settings,
            keys=services.licenses,
            customer_id=customer_id,
        )
        if applied is None:
            return Outcome(EventStatus.IGNORED, note=f"no customer of ours owns {subscription_id}")
        return Outcome(EventStatus.PROCESSED, applied.customer_id)


def on_checkout_completed(services: Services, event: dict[str, Any]) -> Outcome:
    checkout = event_object(event)
    if checkout.get("mode") != "subscription" or not checkout.get("subscription"):
        return Outcome(EventStatus.IGNORED, note="not a subscription checkout")
    subscription = checkout["subscription"]
    subscription_id = subscription if isinstance(subscription, str) else subscription["id"]
    ours = (checkout.get("metadata") or {}).get("customer_id") or checkout.get(
        "client_reference_id"
    )
    return _apply(services, event, subscription_id, customer_id=ours)


def on_subscription(services: Services, event: dict[str, Any]) -> Outcome:
    obj = event_object(event)
    return _apply(services, event, obj["id"], fallback=obj)


def on_invoice(services: Services, event: dict[str, Any]) -> Outcome:
    invoice = event_object(event)
    subscription = invoice.get("subscription") or (
        ((invoice.get("parent") or {}).get("subscription_details") or {}).get("subscription")
    )
    if not subscription:
        return Outcome(EventStatus.IGNORED, note="invoice without a subscription")
    subscription_id = subscription if isinstance(subscription, str) else subscription["id"]
    return _apply(services, event, subscription_id)


HANDLERS: dict[str, EventHandler] = {
    "checkout.session.completed": on_checkout_completed,
    "customer.subscription.created": on_subscription,
    "customer.subscription.updated": on_subscription,
    "customer.subscription.deleted": on_subscription,
    "invoice.paid": on_invoice,
    "invoice.payment_failed": on_invoice,
}
