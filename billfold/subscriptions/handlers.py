"""Stripe events about subscriptions: each re-reads the subscription from Stripe and applies
it, so the order and repetition of events never leave a wrong state.

Only subscriptions of ours are re-read: what we hold (the stored subscription ID, our
customer ID in the metadata, a linked Stripe customer) decides first, so events of other
systems sharing the Stripe account cost no Stripe call.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select

from billfold.customers.models import Customer
from billfold.services import Services
from billfold.stripe_gateway import StripeInvoice, StripeNotFound, StripeSubscription
from billfold.stripe_gateway.objects import parse_subscription
from billfold.subscriptions import dunning, invoices, scheduled_changes
from billfold.subscriptions.lifecycle import apply_stripe_subscription
from billfold.subscriptions.models import Subscription
from billfold.webhooks.dispatch import EventHandler, Outcome, event_object, event_time
from billfold.webhooks.models import EventStatus


def _id(value: Any) -> str | None:
    return value if isinstance(value, str) or value is None else value.get("id")


def _is_ours(
    services: Services, subscription_id: str, customer_id: str | None, stripe_customer: Any
) -> bool:
    stripe_customer_id = _id(stripe_customer)
    with services.db.transaction() as session:
        if session.scalar(
            select(Subscription.id).where(Subscription.stripe_subscription_id == subscription_id)
        ):
            return True
        owners = [Customer.id == customer_id] if customer_id else []
        if stripe_customer_id:
            owners.append(Customer.stripe_customer_id == stripe_customer_id)
        return bool(owners) and session.scalar(select(Customer.id).where(or_(*owners))) is not None


def _apply(
    services: Services,
    event: dict[str, Any],
    subscription_id: str,
    customer_id: str | None = None,
    fallback: dict[str, Any] | None = None,
    stripe_customer: Any = None,
) -> Outcome:
    if not _is_ours(services, subscription_id, customer_id, stripe_customer):
        return Outcome(EventStatus.IGNORED, note=f"no customer of ours owns {subscription_id}")
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
    return _apply(
        services, event, subscription_id, customer_id=ours, stripe_customer=checkout.get("customer")
    )


def on_subscription(services: Services, event: dict[str, Any]) -> Outcome:
    obj = event_object(event)
    ours = (obj.get("metadata") or {}).get("customer_id")
    outcome = _apply(
        services,
        event,
        obj["id"],
        customer_id=ours,
        fallback=obj,
        stripe_customer=obj.get("customer"),
    )
    if outcome.status == EventStatus.PROCESSED:
        dunning.after_subscription_change(services, obj["id"])
        scheduled_changes.after_subscription_change(services, obj["id"])
    return outcome


def on_schedule(services: Services, event: dict[str, Any]) -> Outcome:
    """A subscription schedule moved on or ended: the subscription it holds (or held) is
    re-read, and a pending change of ours that will no longer happen is closed."""
    schedule = event_object(event)
    subscription_id = _id(schedule.get("subscription") or schedule.get("released_subscription"))
    if event["type"] != "subscription_schedule.updated" and not scheduled_changes.on_schedule_ended(
        services, schedule["id"]
    ):
        return Outcome(EventStatus.IGNORED, note=f"no change of ours uses {schedule['id']}")
    if not subscription_id:
        return Outcome(EventStatus.IGNORED, note="schedule without a subscription")
    outcome = _apply(services, event, subscription_id, stripe_customer=schedule.get("customer"))
    if outcome.status == EventStatus.PROCESSED:
        scheduled_changes.after_subscription_change(services, subscription_id)
    return outcome


def _subscription_of_invoice(invoice: dict[str, Any]) -> str | None:
    subscription = invoice.get("subscription") or (
        ((invoice.get("parent") or {}).get("subscription_details") or {}).get("subscription")
    )
    return _id(subscription)


def on_invoice(services: Services, event: dict[str, Any]) -> Outcome:
    invoice = event_object(event)
    subscription_id = _subscription_of_invoice(invoice)
    if not subscription_id:
        return Outcome(EventStatus.IGNORED, note="invoice without a subscription")
    outcome = _apply(services, event, subscription_id, stripe_customer=invoice.get("customer"))
    if event["type"] == "invoice.paid" and outcome.status == EventStatus.PROCESSED:
        dunning.settle(services, invoice["id"])
    return outcome


def on_payment_problem(
    services: Services, event: dict[str, Any], remote: StripeInvoice | None = None
) -> Outcome:
    """A renewal Stripe could not collect: see `dunning`. `remote` is the invoice as Stripe
    gave it for this event already, if it was read."""
    invoice = event_object(event)
    subscription_id = _subscription_of_invoice(invoice)
    if not subscription_id:
        return Outcome(EventStatus.IGNORED, note="invoice without a subscription")
    if not _is_ours(services, subscription_id, None, invoice.get("customer")):
        return Outcome(EventStatus.IGNORED, note=f"no customer of ours owns {subscription_id}")
    return dunning.on_payment_problem(services, event, remote)


def _recording_invoice(handler: EventHandler) -> EventHandler:
    """Store the event's invoice (see `invoices`) before `handler` does its own work."""

    def both(services: Services, event: dict[str, Any]) -> Outcome:
        invoices.apply_event(services, event)
        return handler(services, event)

    return both


def _recorded_payment_problem(services: Services, event: dict[str, Any]) -> Outcome:
    """Store the event's invoice, then open the dunning case from the same read of it."""
    _, remote = invoices.record_event(services, event)
    return on_payment_problem(services, event, remote)


HANDLERS: dict[str, EventHandler] = {
    "checkout.session.completed": on_checkout_completed,
    "customer.subscription.created": on_subscription,
    "customer.subscription.updated": on_subscription,
    "customer.subscription.deleted": on_subscription,
    **{
        f"subscription_schedule.{kind}": on_schedule
        for kind in ("updated", "released", "canceled", "completed")
    },
    "invoice.paid": _recording_invoice(on_invoice),
    "invoice.payment_failed": _recorded_payment_problem,
    "invoice.payment_action_required": _recorded_payment_problem,
    **{
        f"invoice.{kind}": invoices.apply_event
        for kind in (
            "created",
            "finalized",
            "updated",
            "voided",
            "marked_uncollectible",
            "payment_succeeded",
        )
    },
}
