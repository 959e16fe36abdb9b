"""Accounts and their customer records: register, read, edit, delete, look up, export."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Select, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from billfold.auth.models import Role, User
from billfold.auth.service import (
    Caller,
    check_current_password,
    hash_password,
    revoke_tokens,
    set_password,
    set_password_hash,
)
from billfold.config import CustomerCreation, Settings
from billfold.customers.contact import check_metadata, check_phone
from billfold.customers.models import Customer
from billfold.jobs.queue import enqueue
from billfold.kit import audit
from billfold.kit.db import one_of, utcnow
from billfold.kit.errors import BillfoldError, Conflict, Forbidden, InvalidInput, NotFound
from billfold.kit.wiring import Hook
from billfold.services import Services
from billfold.webhooks.outbound.notify import customer_event

LINK_JOB = "customers.link"
PUSH_JOB = "customers.push"
REMOVE_JOB = "customers.remove"


class EmailTaken(Conflict):
    code = "email_taken"


# What follows an e-mail change in the same transaction (a link to verify the new address,
# a notice to the old one): wired by billfold/registry.py (account_links imports this module).
EMAIL_CHANGED: Hook[Callable[[Session, Settings, User, str], None]] = Hook(
    "customers.email_changed"
)


def register(
    session: Session,
    *,
    name: str,
    email: str,
    password: str | Future[str],
    company_name: str | None = None,
    phone: str | None = None,
    metadata: dict[str, str] | None = None,
    role: Role = Role.USER,
    creation: CustomerCreation = CustomerCreation.ON_REGISTRATION,
    link_delay: timedelta = timedelta(0),
) -> Customer:
    """A new user and customer; the Stripe customer is a job of the same transaction.

    `password` may be a hash still being made (`start_hashing`): the user is then written
    without one, and the caller must store the hash (`store_password_hash`) before its
    transaction commits; an account never commits without its hash."""
    phone = check_phone(phone) if phone else None
    metadata = check_metadata(metadata or {})
    user = User(
        email=email.strip(),
        email_normalized=email.strip().lower(),
        name=name.strip(),
        company_name=company_name,
        password_hash=hash_password(password) if isinstance(password, str) else None,
        role=role,
    )
    customer = Customer(user=user, phone=phone, metadata_=metadata)
    _ensure_email_free(session, user.email_normalized)
    session.add_all([user, customer])
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:  # a concurrent registration won the race for this e-mail
        raise EmailTaken("An account with this e-mail already exists") from exc
    customer_event(session, "customer.created", customer)
    if creation is CustomerCreation.ON_REGISTRATION and role is Role.USER:
        enqueue(session, LINK_JOB, {"customer_id": customer.id}, run_at=utcnow() + link_delay)
    return customer


def store_password_hash(user: User, hashing: Future[str]) -> None:
    """Wait for the hash `register` was given to be made and store it (flushed with the
    transaction's commit); HashingBusy, if raised, rolls the registration back."""
    user.password_hash = hashing.result()


def get_customer(session: Session, caller: Caller, user_id: str) -> Customer:
    """The caller's own customer, or anyone's for admins and service keys; else 404."""
    customer = session.scalar(
        select(Customer).where(Customer.user_id == user_id, Customer.deleted_at.is_(None))
    )
    if customer is None or not caller.may_act_on(user_id):
        raise NotFound("No such user")
    return customer


def acting_customer(session: Session, caller: Caller, customer_id: str | None = None) -> Customer:
    """Whose money a call moves: a user's own customer; for admins and service keys, the
    `customer_id` they name (a user naming anyone else's gets 404)."""
    if caller.user is not None and customer_id is None:
        found = session.scalar(select(Customer).where(Customer.user_id == caller.user.id))
    elif customer_id is None:
        raise _customer_required()
    else:
        found = session.get(Customer, customer_id)
    if found is None or _acting_id(caller, found) is None:
        raise _no_such_customer()
    return found


def acting_customer_ids(
    session: Session, calls: Sequence[tuple[Caller, str | None]]
) -> list[str | BillfoldError]:
    """`acting_customer` for many calls at once, in one query: each call's customer ID, or
    the error `acting_customer` would raise for it."""
    named = {cid for _, cid in calls if cid is not None}
    users = {c.user.id for c, cid in calls if cid is None and c.user is not None}
    connection = session.connection()
    statements = _CUSTOMERS_BY[connection.dialect.name == "postgresql"]
    rows = (
        connection.execute(
            statements[bool(named), bool(users)], {"ids": list(named), "users": list(users)}
        ).all()
        if named or users
        else []
    )
    by_id = {r.id: r for r in rows}
    by_user = {r.user_id: r for r in rows}
    owners: list[str | BillfoldError] = []
    for caller, customer_id in calls:
        if customer_id is not None:
            found = by_id.get(customer_id)
        elif caller.user is not None:
            found = by_user.get(caller.user.id)
        else:
            owners.append(_customer_required())
            continue
        owners.append(_acting_id(caller, found) or _no_such_customer())
    return owners


class _CustomerRow(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def user_id(self) -> str: ...
    @property
    def deleted_at(self) -> datetime | None: ...


def _acting_id(caller: Caller, found: _CustomerRow | None) -> str | None:
    """The found customer's ID if the caller may act for it (it exists and is not deleted)."""
    if found is None or found.deleted_at is not None or not caller.may_act_on(found.user_id):
        return None
    return found.id


def _customer_required() -> InvalidInput:
    return InvalidInput("A service key must name the customer", code="customer_required")


def _no_such_customer() -> NotFound:
    return NotFound("No such customer")


# Built once for each database: the bulk lookup runs on every consume batch. Only the
# conditions that name someone: an always-empty IN () in an OR helps no index.
def _customers_by(postgresql: bool) -> dict[tuple[bool, bool], Select[str, str, datetime | None]]:
    found = select(Customer.id, Customer.user_id, Customer.deleted_at)
    named = one_of(Customer.id, "ids", postgresql=postgresql)
    of_users = one_of(Customer.user_id, "users", postgresql=postgresql)
    return {
        (True, False): found.where(named),
        (False, True): found.where(of_users),
        (True, True): found.where(or_(named, of_users)),
    }


_CUSTOMERS_BY = {pg: _customers_by(pg) for pg in (False, True)}


@dataclass(frozen=True)
class ProfileChanges:
    name: str | None = None
    email: str | None = None
    company_name: str | None = None
    password: str | None = None
    role: Role | None = None
    # "" clears the phone; {} clears the metadata (an edit replaces the whole set).
    phone: str | None = None
    metadata: dict[str, str] | None = None
    # Required when users change their own e-mail or password.
    current_password: str | None = None


@dataclass(frozen=True)
class HashedBefore:
    """Argon2's part of a profile edit, done before its transaction: the stored hash that the
    current password was checked against, and the new password's hash."""

    checked_against: str | None = None
    new_password_hash: str | None = None


def edit_profile(
    services: Services, caller: Caller, user_id: str, changes: ProfileChanges
) -> Customer:
    """`update_user` for a request. It owns its transaction so that Argon2 runs outside it
    (on SQLite an open transaction holds the one write lock): a user's current password is
    checked against the hash read with the caller, and the new one hashed, first."""
    me = caller.user if caller.user is not None and caller.user.id == user_id else None
    checked_against = None
    if me is not None and (
        changes.password is not None
        or (changes.email is not None and changes.email.strip() != me.email)
    ):
        check_current_password(me, changes.current_password)
        checked_against = me.password_hash
    new_password_hash = None
    if changes.password is not None and not caller.is_service:
        new_password_hash = hash_password(changes.password)
    with services.db.transaction() as session:
        hashed = HashedBefore(checked_against, new_password_hash)
        return update_user(session, services, caller, user_id, changes, hashed=hashed)


def update_user(
    session: Session,
    services: Services,
    caller: Caller,
    user_id: str,
    changes: ProfileChanges,
    *,
    hashed: HashedBefore = HashedBefore(),
) -> Customer:
    """Edit a profile. Credentials (e-mail, password) follow stricter rules: a user changing
    their own gives the current password; an admin may change anyone else's, a service key
    only the e-mail (never a password); every such change revokes the tokens issued before.
    What `hashed` brings is used when it still holds (the stored hash did not change)."""
    customer = get_customer(session, caller, user_id)
    user = customer.user
    phone = check_phone(changes.phone) if changes.phone else changes.phone
    metadata = check_metadata(changes.metadata) if changes.metadata is not None else None
    email_change = changes.email is not None and changes.email.strip() != user.email
    if email_change or changes.password is not None:
        if caller.user is not None and caller.user.id == user.id:
            if hashed.checked_against is None or hashed.checked_against != user.password_hash:
                check_current_password(user, changes.current_password)
        elif changes.password is not None and caller.is_service:
            # A leaked service key must not be enough to take over an account.
            raise Forbidden("A service key cannot set a password", code="password_not_settable")
    if changes.role is not None and changes.role != user.role:
        # Not even a service key: an admin could mint service keys of their own.
        if caller.user is None or not caller.user.is_admin:
            raise Forbidden("Only an admin may change a role")
        user.role = changes.role
    if changes.password is not None and hashed.new_password_hash is not None:
        set_password_hash(
            session,
            services.wiring,
            user,
            hashed.new_password_hash,
            actor=caller.actor,
            via="profile",
        )
    elif changes.password is not None:
        set_password(
            session, services.wiring, user, changes.password, actor=caller.actor, via="profile"
        )
    if changes.company_name is not None:
        user.company_name = changes.company_name or None
    pushed_fields_changed = False
    if changes.name is not None and changes.name.strip() != user.name:
        user.name = changes.name.strip()
        pushed_fields_changed = True
    if phone is not None and (phone or None) != customer.phone:
        customer.phone = phone or None
        pushed_fields_changed = True
    if metadata is not None and metadata != customer.metadata_:
        customer.metadata_ = metadata
        pushed_fields_changed = True
    if email_change:
        assert changes.email is not None
        old_email = user.email
        new_address = changes.email.strip().lower() != user.email_normalized
        if new_address:
            _ensure_email_free(session, changes.email.strip().lower())
            user.is_email_verified = False
        user.email = changes.email.strip()
        user.email_normalized = user.email.lower()
        pushed_fields_changed = True
        audit.record(
            session, caller.actor, "user.email_change", user.id, via="profile", old=old_email
        )
        if new_address:  # not a change of letter case only
            revoke_tokens(session, services.wiring, user)
            for hook in services.wiring.hooks(EMAIL_CHANGED):
                hook(session, services.settings, user, old_email)
    if pushed_fields_changed:
        customer.profile_version += 1
        enqueue(session, PUSH_JOB, {"customer_id": customer.id})
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:
        raise EmailTaken("An account with this e-mail already exists") from exc
    if caller.actor != user.id:
        audit.record(session, caller.actor, "user.update", user.id, fields=_changed(changes))
    if pushed_fields_changed or changes.company_name is not None:
        customer_event(session, "customer.updated", customer)
    return customer


def delete_user(session: Session, caller: Caller, user_id: str) -> Customer:
    """Erase the account's personal data here; the Stripe side follows as a job."""
    customer = get_customer(session, caller, user_id)
    user = customer.user
    now = utcnow()
    user.deleted_at = now
    user.email = f"deleted+{user.id}@invalid"
    user.email_normalized = user.email
    user.name = ""
    user.company_name = None
    user.password_hash = None
    customer.phone = None
    customer.metadata_ = {}
    customer.deleted_at = now
    enqueue(session, REMOVE_JOB, {"customer_id": customer.id})
    audit.record(session, caller.actor, "user.delete", user.id, customer_id=customer.id)
    customer_event(session, "customer.deleted", customer)
    return customer


def find_customers(
    session: Session,
    *,
    customer_id: str | None = None,
    email: str | None = None,
    stripe_customer_id: str | None = None,
) -> list[Customer]:
    """Admin and service look-up by our ID, e-mail, or Stripe customer ID."""
    if not (customer_id or email or stripe_customer_id):
        raise InvalidInput("Give customerId, email or stripeCustomerId", code="missing_filter")
    query = select(Customer).join(Customer.user).where(Customer.deleted_at.is_(None))
    if customer_id:
        query = query.where(or_(Customer.id == customer_id, Customer.user_id == customer_id))
    if email:
        query = query.where(User.email_normalized == email.strip().lower())
    if stripe_customer_id:
        query = query.where(Customer.stripe_customer_id == stripe_customer_id)
    return list(session.scalars(query.limit(100)))


def _ensure_email_free(session: Session, email_normalized: str) -> None:
    if session.scalar(select(User.id).where(User.email_normalized == email_normalized)):
        raise EmailTaken("An account with this e-mail already exists")


def _changed(changes: ProfileChanges) -> list[str]:
    return [k for k, v in vars(changes).items() if v is not None and "password" not in k] + (
        ["password"] if changes.password is not None else []
    )


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
