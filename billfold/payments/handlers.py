"""Stripe events about payments, refunds and cards: each re-reads the object from Stripe and
lands in the same records as the API calls, so arrival order and repeats change nothing.

A Stripe account is often shared with other systems, so each handler first decides from what
we hold (stored Stripe IDs, our IDs in the object's metadata) whether the object is ours, and
asks Stripe only about ours; an object Stripe no longer has is final (`ignored`), not retried.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from billfold.customers.models import Customer
from billfold.payments.intents import apply_intent, known_payment
from billfold.payments.methods import remember
from billfold.payments.models import SavedCard
from billfold.payments.refunds import sync_refunds
from billfold.services import Services
from billfold.stripe_gateway import StripeNotFound
from billfold.webhooks.dispatch import EventHandler, Outcome, event_object
from billfold.webhooks.models import EventStatus


def _not_ours(intent_id: str) -> Outcome:
    return Outcome(EventStatus.IGNORED, note=f"no payment of ours for {intent_id}")


def _gone(stripe_id: str) -> Outcome:
    return Outcome(EventStatus.IGNORED, note=f"{stripe_id} no longer exists in Stripe")


def _metadata(obj: dict[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in (obj.get("metadata") or {}).items()}


def _is_ours(services: Services, intent_id: str, metadata: dict[str, str]) -> bool:
    with services.db.transaction() as session:
        return known_payment(session, intent_id, metadata) is not None


def on_payment_intent(services: Services, event: dict[str, Any]) -> Outcome:
    obj = event_object(event)
    if not _is_ours(services, obj["id"], _metadata(obj)):
        return _not_ours(obj["id"])
    try:
        intent = services.stripe.retrieve_payment_intent(obj["id"])
    except StripeNotFound:
        return _gone(obj["id"])
    with services.db.transaction() as session:
        payment = known_payment(session, intent.id, intent.metadata)
        if payment is None:
            return _not_ours(intent.id)
        apply_intent(session, payment.id, intent, services)
        return Outcome(EventStatus.PROCESSED, payment.customer_id)


def on_charge_refunded(services: Services, event: dict[str, Any]) -> Outcome:
    charge = event_object(event)
    intent_ref = charge.get("payment_intent")
    intent_id = intent_ref if isinstance(intent_ref, str) else (intent_ref or {}).get("id")
    if not intent_id:
        return Outcome(EventStatus.IGNORED, note="charge without a PaymentIntent")
    # A charge carries the metadata its intent had when it was made.
    if not _is_ours(services, intent_id, _metadata(charge)):
        return _not_ours(intent_id)
    try:
        intent = services.stripe.retrieve_payment_intent(intent_id)
        refunds = services.stripe.list_refunds(intent_id)
    except StripeNotFound:
        return _gone(intent_id)
    with services.db.transaction() as session:
        payment = known_payment(session, intent.id, intent.metadata)
        if payment is None:
            return _not_ours(intent_id)
        sync_refunds(session, payment, refunds, services)
        return Outcome(EventStatus.PROCESSED, payment.customer_id)


def _card_holder(session: Session, pm_id: str, stripe_customer_id: str | None) -> Customer | None:
    """Our customer for a card: the one its Stripe customer is, else the one who saved it."""
    if stripe_customer_id:
        customer = session.scalar(
            select(Customer).where(Customer.stripe_customer_id == stripe_customer_id)
        )
        if customer is not None:
            return customer
    saved = session.scalar(select(SavedCard).where(SavedCard.stripe_payment_method_id == pm_id))
    return session.get(Customer, saved.customer_id) if saved else None


def on_payment_method(services: Services, event: dict[str, Any]) -> Outcome:
    obj = event_object(event)
    pm_id, holder = obj["id"], obj.get("customer")
    holder_id = holder if isinstance(holder, str) else (holder or {}).get("id")
    with services.db.transaction() as session:
        if _card_holder(session, pm_id, holder_id) is None:
            return Outcome(EventStatus.IGNORED, note=f"no customer of ours holds {pm_id}")
    try:
        card = services.stripe.retrieve_card(pm_id)
    except StripeNotFound:
        return _gone(pm_id)
    with services.db.transaction() as session:
        customer = _card_holder(session, pm_id, card.customer)
        if customer is None:
            return Outcome(EventStatus.IGNORED, note=f"no customer of ours holds {pm_id}")
        remember(session, customer.id, card, attached=card.customer == customer.stripe_customer_id)
        return Outcome(EventStatus.PROCESSED, customer.id)


HANDLERS: dict[str, EventHandler] = {
    "payment_intent.succeeded": on_payment_intent,
    "payment_intent.payment_failed": on_payment_intent,
    "payment_intent.canceled": on_payment_intent,
    "payment_intent.processing": on_payment_intent,
    "payment_intent.requires_action": on_payment_intent,
    "charge.refunded": on_charge_refunded,
    "payment_method.attached": on_payment_method,
    "payment_method.detached": on_payment_method,
}
