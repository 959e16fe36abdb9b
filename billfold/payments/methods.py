"""Saved cards: list, add (SetupIntent or attach), remove and choose the default.

Only a card's owner may touch it: a card of another customer answers 404 and nothing moves.
We keep the card's Stripe ID and display fields; the card itself stays with Stripe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from billfold.auth.service import Caller
from billfold.customers.models import Customer
from billfold.customers.service import acting_customer
from billfold.customers.stripe_sync import ensure_stripe_customer
from billfold.kit.db import utcnow
from billfold.kit.errors import NotFound
from billfold.kit.wiring import Hook
from billfold.payments.models import SavedCard
from billfold.services import Services
from billfold.stripe_gateway import StripeCard, StripeNotFound

LINK_WAIT_SECONDS = 10.0
# Run in a transaction of its own just before Stripe is asked to make a card the customer's
# default (customer ID, card ID), so what must follow is queued durably even if the process
# dies on Stripe's answer; what it queues checks that Stripe made the change before acting.
# Subscriptions make it their card too (wired by billfold/registry.py).
DEFAULT_CARD_CHANGED: Hook[Callable[[Session, str, str], None]] = Hook(
    "payments.default_card_changed"
)


class CardNotFound(NotFound):
    code = "payment_method_not_found"


@dataclass(frozen=True)
class CardView:
    card: StripeCard
    is_default: bool


def own_card(services: Services, stripe_customer_id: str, payment_method_id: str) -> StripeCard:
    """The card if it is attached to this Stripe customer; 404 for anyone else's."""
    try:
        card = services.stripe.retrieve_card(payment_method_id)
    except StripeNotFound as exc:
        raise CardNotFound("No such payment method") from exc
    if card.customer != stripe_customer_id:
        raise CardNotFound("No such payment method")
    return card


def _customer_and_stripe_id(
    services: Services, caller: Caller, customer_id: str | None
) -> tuple[Customer, str]:
    with services.db.transaction() as session:
        customer = acting_customer(session, caller, customer_id)
    stripe_id = ensure_stripe_customer(
        services, customer.id, wait=LINK_WAIT_SECONDS, source="first_payment"
    )
    return customer, stripe_id


def list_cards(
    services: Services, caller: Caller, customer_id: str | None = None
) -> list[CardView]:
    customer, stripe_id = _customer_and_stripe_id(services, caller, customer_id)
    cards = services.stripe.list_cards(stripe_id)
    default = services.stripe.default_card_id(stripe_id)
    with services.db.transaction() as session:
        for card in cards:
            remember(session, customer.id, card, attached=True)
    return [CardView(card, card.id == default) for card in cards]


def saved_cards(session: Session, customer_id: str) -> list[SavedCard]:
    """The customer's cards as we last saw them in Stripe (for pages; no Stripe call)."""
    return list(
        session.scalars(
            select(SavedCard)
            .where(SavedCard.customer_id == customer_id, SavedCard.attached.is_(True))
            .order_by(SavedCard.updated_at.desc())
        )
    )


def setup_intent(
    services: Services, caller: Caller, customer_id: str | None = None
) -> tuple[str, str]:
    customer, stripe_id = _customer_and_stripe_id(services, caller, customer_id)
    return services.stripe.create_setup_intent(stripe_id, customer_id=customer.id)


def attach(
    services: Services, caller: Caller, payment_method_id: str, customer_id: str | None = None
) -> CardView:
    """Attach a card made by Stripe.js; attaching one already ours is harmless."""
    customer, stripe_id = _customer_and_stripe_id(services, caller, customer_id)
    try:
        card = services.stripe.retrieve_card(payment_method_id)
    except StripeNotFound as exc:
        raise CardNotFound("No such payment method") from exc
    if card.customer is not None and card.customer != stripe_id:
        raise CardNotFound("No such payment method")
    if card.customer is None:
        with services.db.transaction() as session:
            count = _attach_count(session, payment_method_id) + 1
        card = services.stripe.attach_card(
            payment_method_id, stripe_customer_id=stripe_id, customer_id=customer.id, attempt=count
        )
        with services.db.transaction() as session:
            remember(session, customer.id, card, attached=True, attach_count=count)
    default = services.stripe.default_card_id(stripe_id)
    return CardView(card, card.id == default)


def detach(
    services: Services, caller: Caller, payment_method_id: str, customer_id: str | None = None
) -> None:
    customer, stripe_id = _customer_and_stripe_id(services, caller, customer_id)
    card = own_card(services, stripe_id, payment_method_id)
    with services.db.transaction() as session:
        count = _attach_count(session, payment_method_id)
    detached = services.stripe.detach_card(card.id, customer_id=customer.id, version=count)
    with services.db.transaction() as session:
        remember(session, customer.id, detached, attached=False)


def set_default(
    services: Services, caller: Caller, payment_method_id: str, customer_id: str | None = None
) -> CardView:
    customer, stripe_id = _customer_and_stripe_id(services, caller, customer_id)
    card = own_card(services, stripe_id, payment_method_id)
    with services.db.transaction() as session:
        for hook in services.wiring.hooks(DEFAULT_CARD_CHANGED):
            hook(session, customer.id, card.id)
    services.stripe.set_default_card(stripe_id, card.id, customer_id=customer.id)
    return CardView(card, True)


def remember(
    session: Session,
    customer_id: str,
    card: StripeCard,
    *,
    attached: bool,
    attach_count: int | None = None,
) -> None:
    """Keep the display fields of a card (from an API answer or a webhook)."""
    saved = session.scalar(select(SavedCard).where(SavedCard.stripe_payment_method_id == card.id))
    if saved is None:
        saved = SavedCard(
            customer_id=customer_id,
            stripe_payment_method_id=card.id,
            attached=False,
            attach_count=0,
        )
        session.add(saved)
    saved.customer_id = customer_id
    saved.brand, saved.last4 = card.brand, card.last4
    saved.exp_month, saved.exp_year = card.exp_month, card.exp_year
    if attach_count is not None:
        saved.attach_count = attach_count
    elif attached and not saved.attached:
        saved.attach_count += 1  # attached outside our API: keep detach keys distinct
    if attached and (attach_count is not None or not saved.attached):
        saved.attached_at = utcnow()
    saved.attached = attached
    session.flush()


def _attach_count(session: Session, payment_method_id: str) -> int:
    count = session.scalar(
        select(SavedCard.attach_count).where(
            SavedCard.stripe_payment_method_id == payment_method_id
        )
    )
    return count or 0


def detach_all(services: Services, customer_id: str, stripe_customer_id: str | None) -> None:
    """A deleted account keeps no card: detach every card from its Stripe customer.

    Safe to run again (a retry lists only the cards still attached); Stripe errors go
    through so the removal job retries while Stripe is away."""
    if stripe_customer_id is not None:
        for card in services.stripe.list_cards(stripe_customer_id):
            with services.db.transaction() as session:
                count = _attach_count(session, card.id)
            detached = services.stripe.detach_card(card.id, customer_id=customer_id, version=count)
            with services.db.transaction() as session:
                remember(session, customer_id, detached, attached=False)
    with services.db.transaction() as session:
        session.execute(
            update(SavedCard)
            .where(SavedCard.customer_id == customer_id, SavedCard.attached.is_(True))
            .values(attached=False)
        )
