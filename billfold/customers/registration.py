"""Sign-up: the account commits first, then Stripe gets a short chance to link inline."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from datetime import timedelta

import structlog
from sqlalchemy.orm import Session

from billfold.auth.models import Role
from billfold.auth.service import start_hashing
from billfold.config import CustomerCreation
from billfold.customers import service
from billfold.customers.account_links import send_verification
from billfold.customers.models import Customer
from billfold.customers.stripe_sync import claim_at_creation, link_new_customer
from billfold.kit.wiring import Hook
from billfold.services import Services
from billfold.stripe_gateway import StripeFailure

log = structlog.get_logger("billfold.customers")

# What other domains do with a new customer in the sign-up transaction (the free trial and
# its license): wired by billfold/registry.py, so customers import none of them.
SIGN_UP: Hook[Callable[[Session, Customer, Services], None]] = Hook("customers.sign_up")


def sign_up(
    services: Services,
    *,
    name: str,
    email: str,
    password: str,
    company_name: str | None = None,
    phone: str | None = None,
    metadata: dict[str, str] | None = None,
) -> Customer:
    """Register a user; answer with the Stripe customer linked if Stripe answers promptly.

    The link job is committed with the account and held back for a moment, so the worker
    finishes the link only when the inline try fails (or this process dies). The account
    also commits holding the claim on its Stripe creation, so the inline try creates at
    once (no earlier try can have left a Stripe customer to look for).

    On PostgreSQL the password's hash is made on another thread while the transaction does
    the rest of the sign-up's work (its rows are new: nobody waits on them meanwhile). On
    SQLite every transaction holds the one write lock, so the hash is made before it.
    """
    settings = services.settings
    inline = settings.stripe_customer_creation is CustomerCreation.ON_REGISTRATION
    # On SQLite `register` hashes before the transaction's first statement.
    secret = password if services.db.dialect == "sqlite" else start_hashing(password)
    with services.db.transaction() as session:
        customer = service.register(
            session,
            name=name,
            email=email,
            password=secret,
            company_name=company_name,
            phone=phone,
            metadata=metadata,
            role=Role.USER,
            creation=settings.stripe_customer_creation,
            link_delay=timedelta(seconds=2 * settings.stripe_inline_timeout_seconds),
        )
        send_verification(session, settings, customer.user)
        # With EMAIL_VERIFICATION_REQUIRED, the trial (and its license e-mail) waits for the
        # address to be proven (account_links.FIRST_VERIFICATION).
        if not settings.email_verification_required:
            for hook in services.wiring.hooks(SIGN_UP):
                hook(session, customer, services)
        lease = timedelta(seconds=settings.customer_link_lease_seconds)
        claim = claim_at_creation(session, customer, lease) if inline else None
        if isinstance(secret, Future):
            service.store_password_hash(customer.user, secret)
        customer_id = customer.id
    if claim is not None:
        try:
            link_new_customer(services, customer_id, claim)
        except StripeFailure as exc:
            log.info("customer.link_deferred", customer_id=customer_id, reason=type(exc).__name__)
    with services.db.transaction() as session:
        fresh = session.get(Customer, customer_id)
        assert fresh is not None
        return fresh
