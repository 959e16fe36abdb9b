"""Stripe events about customers, applied to our records once and never out of order."""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from billfold.auth.models import User
from billfold.config import Settings
from billfold.customers.account_links import propose_email
from billfold.customers.models import Customer
from billfold.kit.db import utcnow
from billfold.services import Services
from billfold.stripe_gateway import StripeCustomer, StripeNotFound
from billfold.webhooks.dispatch import EventHandler, Outcome, event_object, event_time
from billfold.webhooks.models import EventStatus

log = structlog.get_logger("billfold.customers")


def _ours(session: Session, stripe_object: dict[str, Any]) -> Customer | None:
    our_id = (stripe_object.get("metadata") or {}).get("customer_id")
    return session.scalar(
        select(Customer).where(
            or_(Customer.stripe_customer_id == stripe_object["id"], Customer.id == our_id)
        )
    )


def _unknown(stripe_id: str) -> Outcome:
    return Outcome(EventStatus.IGNORED, note=f"no customer of ours is linked to {stripe_id}")


def on_customer_updated(services: Services, event: dict[str, Any]) -> Outcome:
    """Bring a Stripe-side edit of name or e-mail back, unless ours is newer."""
    obj, at = event_object(event), event_time(event)
    with services.db.transaction() as session:
        customer = _ours(session, obj)
        if customer is None or customer.stripe_customer_id != obj["id"]:
            return _unknown(obj["id"])
        if customer.stripe_event_at is not None and at < customer.stripe_event_at:
            return Outcome(EventStatus.IGNORED, customer.id, "older than the state we hold")
    # The event may be stale by the time we see it: the object as Stripe has it now decides.
    try:
        current = services.stripe.retrieve_customer(obj["id"])
    except StripeNotFound:
        current = StripeCustomer(obj["id"], None, None, {}, deleted=True)
    if current.deleted:
        return _unlink(services, obj["id"], at)
    with services.db.transaction() as session:
        customer = _ours(session, obj)
        assert customer is not None
        customer.stripe_event_at = max(at, customer.stripe_event_at or at)
        if (
            customer.deleted_at is not None
            or customer.stripe_synced_version < customer.profile_version
        ):
            # Our own edit is on its way to Stripe and will overwrite this one.
            return Outcome(EventStatus.PROCESSED, customer.id, "local edit pending; kept ours")
        note = _apply_profile(session, services.settings, customer.user, current)
        return Outcome(EventStatus.PROCESSED, customer.id, note)


def _apply_profile(
    session: Session, settings: Settings, user: User, current: StripeCustomer
) -> str | None:
    if current.name and current.name != user.name:
        user.name = current.name
    if current.email and current.email.lower() != user.email_normalized:
        taken = session.scalar(
            select(User.id).where(
                User.email_normalized == current.email.lower(), User.id != user.id
            )
        )
        if taken:
            log.warning("customer.stripe_email_taken", user_id=user.id)
            return "Stripe's e-mail belongs to another account here; kept ours"
        # The login e-mail changes only once the new address is proven: whoever edited the
        # Stripe customer (or its portal) must not be able to redirect password resets.
        return propose_email(session, settings, user, current.email)
    return None


def on_customer_deleted(services: Services, event: dict[str, Any]) -> Outcome:
    """A Stripe customer deleted in Stripe is unlinked; the next need creates a fresh one."""
    return _unlink(services, event_object(event)["id"], event_time(event))


def _unlink(services: Services, stripe_id: str, at: Any) -> Outcome:
    with services.db.transaction() as session:
        customer = session.scalar(select(Customer).where(Customer.stripe_customer_id == stripe_id))
        if customer is None:
            return _unknown(stripe_id)
        customer.stripe_customer_id = None
        customer.stripe_synced_version = 0
        customer.link_name = customer.link_email = None
        customer.link_phone = customer.link_metadata = None
        customer.stripe_metadata_keys = []
        customer.link_version = None
        customer.stripe_removed_at = customer.stripe_removed_at or utcnow()
        customer.stripe_event_at = max(at, customer.stripe_event_at or at)
        log.info("customer.unlinked", customer_id=customer.id, stripe_customer_id=stripe_id)
        return Outcome(EventStatus.PROCESSED, customer.id, "Stripe customer deleted; unlinked")


HANDLERS: dict[str, EventHandler] = {
    "customer.updated": on_customer_updated,
    "customer.deleted": on_customer_deleted,
}
