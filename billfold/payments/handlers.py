"""Stripe events about payments, refunds and cards: each re-reads the object from Stripe and
lands in the same records as the API calls, so arrival order and repeats change nothing."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from billfold.customers.models import Customer
from billfold.payments.intents import apply_intent, payment_for_intent
from billfold.payments.methods import remember
from billfold.payments.models import SavedCard
from billfold.payments.refunds import sync_refunds
from billfold.services import Services
from billfold.stripe_gateway import StripeNotFound
from billfold.webhooks.dispatch import EventHandler, Outcome, event_object
from billfold.webhooks.models import EventStatus


def on_payment_intent(services: Services, event: dict[str, Any]) -> Outcome:
    intent = services.stripe.retrieve_payment_intent(event_object(event)["id"])
    with services.db.transaction() as session:
        payment = payment_for_intent(session, intent)
        if payment is None:
            return Outcome(EventStatus.IGNORED, note=f"no payment of ours for {intent.id}")
        apply_intent(session, payment.id, intent, services.settings)
        return Outcome(EventStatus.PROCESSED, payment.customer_id)


def on_charge_refunded(services: Services, event: dict[str, Any]) -> Outcome:
    charge = event_object(event)
    intent_ref = charge.get("payment_intent")
    intent_id = intent_ref if isinstance(intent_ref, str) else (intent_ref or {}).get("id")
    if not intent_id:
        return Outcome(EventStatus.IGNORED, note="charge without a PaymentIntent")
    intent = services.stripe.retrieve_payment_intent(intent_id)
    refunds = services.stripe.list_refunds(intent_id)
    with services.db.transaction() as session:
        payment = payment_for_intent(session, intent)
        if payment is None:
            return Outcome(EventStatus.IGNORED, note=f"no payment of ours for {intent_id}")
        sync_refunds(session, payment, refunds, services.settings)
        return Outcome(EventStatus.PROCESSED, payment.customer_id)


def on_payment_method(services: Services, event: dict[str, Any]) -> Outcome:
    pm_id = event_object(event)["id"]
    try:
        card = services.stripe.retrieve_card(pm_id)
    except StripeNotFound:
        return Outcome(EventStatus.IGNORED, note=f"{pm_id} no longer exists in Stripe")
    with services.db.transaction() as session:
        customer = None
        if card.customer:
            customer = session.scalar(
                select(Customer).where(Customer.stripe_customer_id == card.customer)
            )
        if customer is None:
            saved = session.scalar(
                select(SavedCard).where(SavedCard.stripe_payment_method_id == card.id)
            )
            customer = session.get(Customer, saved.customer_id) if saved else None
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
