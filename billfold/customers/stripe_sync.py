"""Keeping each customer's Stripe twin in step: create it once, push edits, remove it.

`ensure_stripe_customer` is the one way a Stripe customer comes to exist. A creation is
claimed for a lease in our database before Stripe is called, and the exact request is kept,
so concurrent callers, retries after a timeout and a process that died mid-way all end with
one Stripe customer: the retry looks for what a lost try made before it creates anything,
and repeats the same idempotency key when it does.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from billfold.config import CustomerDeletion
from billfold.customers.contact import stripe_metadata_update
from billfold.customers.models import Customer
from billfold.customers.service import PUSH_JOB
from billfold.jobs.queue import enqueue
from billfold.jobs.worker import Defer
from billfold.kit.db import utcnow
from billfold.kit.errors import NotFound
from billfold.kit.observability import CUSTOMER_LINKS
from billfold.kit.wiring import Hook
from billfold.services import Services
from billfold.stripe_gateway import StripeCustomer, StripeGateway

log = structlog.get_logger("billfold.customers")


class LinkInProgress(Defer):
    """Another try holds the claim on this customer's creation; try again after it."""

    def __init__(self, customer_id: str, until: datetime) -> None:
        super().__init__(until, f"Stripe customer creation for {customer_id} is in progress")


def ensure_stripe_customer(
    services: Services,
    customer_id: str,
    *,
    inline: bool = False,
    wait: float = 0.0,
    source: str = "user_registration",
) -> str:
    """The customer's Stripe ID, creating the Stripe customer if there is none yet.

    Raises NotFound for a deleted customer, LinkInProgress when another try holds the
    claim for longer than `wait` seconds, and the gateway's errors when Stripe fails.
    """
    deadline = time.monotonic() + wait
    while True:
        claim = _claim(services, customer_id)
        if isinstance(claim, str):
            return claim
        if not isinstance(claim, datetime):
            break
        if time.monotonic() >= deadline:
            raise LinkInProgress(customer_id, claim)
        time.sleep(0.1)
    gateway = services.stripe_inline if inline else services.stripe
    return _create_and_link(services, gateway, customer_id, claim, source, look_first=True)


def claim_at_creation(session: Session, customer: Customer, lease: timedelta) -> LinkClaim:
    """Claim the Stripe creation of a customer the session's transaction is creating: the
    claim commits with the account, so no other try can come first, and none came before
    to leave a Stripe customer behind (`link_new_customer` creates without looking)."""
    session.flush()  # the customer's defaults (profile_version) are set
    user = customer.user
    claim = LinkClaim(
        token=secrets.token_hex(8),
        user_id=user.id,
        name=user.name,
        email=user.email,
        phone=customer.phone,
        metadata=dict(customer.metadata_),
    )
    customer.link_claim_token = claim.token
    customer.link_claim_expires_at = utcnow() + lease
    customer.link_name, customer.link_email = claim.name, claim.email
    customer.link_phone, customer.link_metadata = claim.phone, dict(claim.metadata)
    customer.link_version = customer.profile_version
    return claim


def link_new_customer(services: Services, customer_id: str, claim: LinkClaim) -> str:
    """The inline first try of a creation claimed by `claim_at_creation` (once it has
    committed): Stripe is asked to create at once, with the idempotency key every later try
    repeats; a failure gives the claim back for the link job."""
    return _create_and_link(
        services, services.stripe_inline, customer_id, claim, "user_registration", look_first=False
    )


def _create_and_link(
    services: Services,
    gateway: StripeGateway,
    customer_id: str,
    claim: LinkClaim,
    source: str,
    *,
    look_first: bool,
) -> str:
    try:
        if look_first:
            stripe_customer = _find_or_create(gateway, customer_id, claim, source)
        else:
            stripe_customer = _create(gateway, customer_id, claim, source)
    except Exception:
        CUSTOMER_LINKS.labels(outcome="failed").inc()
        _release(services, customer_id, claim.token)
        raise
    return _link(services, customer_id, claim.token, stripe_customer)


@dataclass(frozen=True)
class LinkClaim:
    """Our hold on a customer's creation, and the request every try of it sends."""

    token: str
    user_id: str
    name: str
    email: str
    phone: str | None
    metadata: dict[str, str]


def _claim(services: Services, customer_id: str) -> str | LinkClaim | datetime:
    """The linked Stripe ID, or our claim (token and the request to send), or, when another
    try holds it, when that claim runs out."""
    now = utcnow()
    lease = timedelta(seconds=services.settings.customer_link_lease_seconds)
    token = secrets.token_hex(8)
    with services.db.transaction() as session:
        customer = session.get(Customer, customer_id)
        if customer is None or customer.deleted_at is not None:
            raise NotFound("No such customer")
        if customer.stripe_customer_id:
            return customer.stripe_customer_id
        user = customer.user
        row = session.execute(
            update(Customer)
            .where(
                Customer.id == customer_id,
                Customer.stripe_customer_id.is_(None),
                or_(
                    Customer.link_claim_expires_at.is_(None),
                    Customer.link_claim_expires_at < now,
                ),
            )
            .values(
                link_claim_token=token,
                link_claim_expires_at=now + lease,
                # The first try fixes the request; every retry sends it unchanged.
                link_name=func.coalesce(Customer.link_name, user.name),
                link_email=func.coalesce(Customer.link_email, user.email),
                link_version=func.coalesce(Customer.link_version, Customer.profile_version),
            )
            .returning(Customer.link_name, Customer.link_email)
        ).one_or_none()
        if row is None:
            return customer.link_claim_expires_at or now
        # The claim is ours: the first try fixes phone and metadata as it fixed name and e-mail.
        session.execute(
            update(Customer)
            .where(Customer.id == customer_id, Customer.link_metadata.is_(None))
            .values(link_phone=customer.phone, link_metadata=dict(customer.metadata_))
        )
        phone, metadata = session.execute(
            select(Customer.link_phone, Customer.link_metadata).where(Customer.id == customer_id)
        ).one()
        return LinkClaim(token, user.id, row.link_name, row.link_email, phone, metadata or {})


def _find_or_create(
    gateway: StripeGateway, customer_id: str, claim: LinkClaim, source: str
) -> StripeCustomer:
    # A try that died after Stripe answered left a customer with our ID in its metadata;
    # Stripe's own idempotency window covers only a day, so look before creating.
    existing = gateway.find_customer_of(customer_id=customer_id, email=claim.email)
    if existing is not None:
        log.info("customer.found_existing", customer_id=customer_id, stripe_id=existing.id)
        return existing
    return _create(gateway, customer_id, claim, source)


def _create(
    gateway: StripeGateway, customer_id: str, claim: LinkClaim, source: str
) -> StripeCustomer:
    return gateway.create_customer(
        customer_id=customer_id,
        user_id=claim.user_id,
        name=claim.name,
        email=claim.email,
        source=source,
        phone=claim.phone,
        metadata=claim.metadata,
    )


def _link(services: Services, customer_id: str, token: str, found: StripeCustomer) -> str:
    with services.db.transaction() as session:
        customer = session.get(Customer, customer_id, with_for_update=True)
        assert customer is not None  # customers are never hard-deleted
        if customer.stripe_customer_id:
            if customer.stripe_customer_id != found.id:
                log.error(
                    "customer.second_stripe_customer",
                    customer_id=customer_id,
                    kept=customer.stripe_customer_id,
                    extra=found.id,
                )
            return customer.stripe_customer_id
        if customer.link_claim_token != token:
            log.warning("customer.link_lease_lost", customer_id=customer_id)
        customer.stripe_customer_id = found.id
        customer.stripe_synced_version = customer.link_version or 0
        sent = set(customer.link_metadata or {})
        customer.stripe_metadata_keys = sorted(sent | set(customer.stripe_metadata_keys))
        customer.stripe_linked_at = utcnow()
        customer.stripe_removed_at = None
        customer.link_claim_token = None
        customer.link_claim_expires_at = None
        if customer.profile_version > customer.stripe_synced_version:
            enqueue(session, PUSH_JOB, {"customer_id": customer_id})
    CUSTOMER_LINKS.labels(outcome="linked").inc()
    log.info("customer.linked", customer_id=customer_id, stripe_customer_id=found.id)
    return found.id


def _release(services: Services, customer_id: str, token: str) -> None:
    """Give the claim back after a failed try so the next one need not wait for the lease."""
    try:
        with services.db.transaction() as session:
            session.execute(
                update(Customer)
                .where(Customer.id == customer_id, Customer.link_claim_token == token)
                .values(link_claim_token=None, link_claim_expires_at=None)
            )
    except Exception:  # the lease runs out by itself
        log.warning("customer.release_failed", customer_id=customer_id)


# -- job handlers ----------------------------------------------------------------------


def link_job(services: Services, payload: dict[str, Any]) -> None:
    try:
        ensure_stripe_customer(services, payload["customer_id"])
    except NotFound:
        log.info("customer.link_skipped_deleted", customer_id=payload["customer_id"])


def push_job(services: Services, payload: dict[str, Any]) -> None:
    """Send the customer's current name, e-mail, phone and metadata to Stripe, once per
    profile version; user metadata keys sent before and removed since are removed there."""
    customer_id = payload["customer_id"]
    with services.db.transaction() as session:
        customer = session.get(Customer, customer_id, with_for_update=True)
        if customer is None or customer.deleted_at is not None:
            return
        if customer.stripe_customer_id is None:
            return  # the link pushes whatever changed before it
        version = customer.profile_version
        if customer.stripe_synced_version >= version:
            return
        stripe_id, name, email, phone = (
            customer.stripe_customer_id,
            customer.user.name,
            customer.user.email,
            customer.phone,
        )
        metadata = stripe_metadata_update(customer.metadata_, customer.stripe_metadata_keys)
        # Recorded before the call: a key that may reach Stripe is one to remove later.
        customer.stripe_metadata_keys = sorted(
            set(customer.stripe_metadata_keys) | set(customer.metadata_)
        )
    services.stripe.update_customer(
        stripe_id,
        customer_id=customer_id,
        profile_version=version,
        name=name,
        email=email,
        phone=phone,
        metadata=metadata,
    )
    removed = {key for key, value in metadata.items() if value == ""}
    with services.db.transaction() as session:
        customer = session.get(Customer, customer_id, with_for_update=True)
        assert customer is not None
        if customer.stripe_synced_version < version:
            customer.stripe_synced_version = version
        # Keys this push removed are gone at Stripe, unless a newer edit brought them back.
        customer.stripe_metadata_keys = sorted(
            {
                k
                for k in customer.stripe_metadata_keys
                if k not in removed or k in customer.metadata_
            }
        )


# What other domains end for a deleted customer before its Stripe customer is deleted or
# archived (its subscriptions, its saved cards): each gets (services, customer ID, Stripe
# customer ID or None), must be safe to run again, and lets Stripe errors through so the
# job retries. Wired by billfold/registry.py.
BEFORE_STRIPE_REMOVAL: Hook[Callable[[Services, str, str | None], None]] = Hook(
    "customers.before_stripe_removal"
)


def remove_job(services: Services, payload: dict[str, Any]) -> None:
    """End a deleted user's subscriptions and detach its cards, then delete (or archive) its
    Stripe customer, including one a lost try made."""
    customer_id = payload["customer_id"]
    with services.db.transaction() as session:
        customer = session.get(Customer, customer_id)
        if customer is None or customer.stripe_removed_at is not None:
            return
        claim_expires = customer.link_claim_expires_at
        if customer.stripe_customer_id is None and claim_expires and claim_expires > utcnow():
            raise LinkInProgress(customer_id, claim_expires)  # let it finish, then remove it
        stripe_id, link_email = customer.stripe_customer_id, customer.link_email
    if stripe_id is None and link_email is not None:
        found = services.stripe.find_customer_of(customer_id=customer_id, email=link_email)
        stripe_id = found.id if found else None
    for hook in services.wiring.hooks(
        BEFORE_STRIPE_REMOVAL
    ):  # end its subscriptions, detach its cards
        hook(services, customer_id, stripe_id)
    if stripe_id is not None:
        if services.settings.stripe_customer_deletion is CustomerDeletion.ARCHIVE:
            services.stripe.archive_customer(stripe_id, customer_id=customer_id)
        else:
            services.stripe.delete_customer(stripe_id, customer_id=customer_id)
    with services.db.transaction() as session:
        customer = session.get(Customer, customer_id)
        assert customer is not None
        customer.stripe_removed_at = utcnow()
        customer.link_name = None
        customer.link_email = None
        customer.link_phone = None
        customer.link_metadata = None
    log.info("customer.removed_from_stripe", customer_id=customer_id, stripe_customer_id=stripe_id)
