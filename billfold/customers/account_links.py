"""E-mailed single-use links: verifying an address, resetting a forgotten password.

A link's token is `<link id>.<HMAC of the id>` under a key derived from `JWT_SECRET`; only
its SHA-256 is stored, and the outbox stores a placeholder that the send job fills in, so
nothing at rest opens an account. Following a link is one conditional update (unused, not
expired), so a token works once even when two requests race. The e-mails point at page
paths under `BACKEND_URL` (`VERIFY_PAGE`, `RESET_PAGE`): a page that POSTs the token to the
API, because mail scanners fetch links and a GET must not use the token up.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from billfold.auth.models import AccountLink, LinkPurpose, User
from billfold.auth.service import Caller, hash_password, revoke_tokens, set_password_hash
from billfold.config import Settings, secret
from billfold.customers.models import Customer
from billfold.customers.service import PUSH_JOB, EmailTaken, get_customer
from billfold.jobs.queue import enqueue
from billfold.kit import audit
from billfold.kit.db import new_id, utcnow
from billfold.kit.errors import BillfoldError, Conflict
from billfold.kit.wiring import Hook, Wiring
from billfold.mail.outbox import queue_mail, secret_placeholder
from billfold.services import Services

VERIFY_PAGE = "/account/verify-email"
RESET_PAGE = "/account/reset-password"
# Mail secret fillers (billfold/mail/outbox.py SECRET_FILLERS) by the page their link opens.
FILLERS = {"verify_email_link": VERIFY_PAGE, "reset_password_link": RESET_PAGE}

# What follows a first verification when sign-up waited for it (EMAIL_VERIFICATION_REQUIRED):
# the trial and its license, wired by billfold/registry.py.
FIRST_VERIFICATION: Hook[Callable[[Session, Customer, Services], None]] = Hook(
    "customers.first_verification"
)


class InvalidLink(BillfoldError):
    status_code = 400
    code = "invalid_link"


_INVALID = "This link is not valid: it was used already, has expired, or was replaced"


def _key(settings: Settings) -> bytes:
    return hmac.new(secret(settings.jwt_secret).encode(), b"account-links", "sha256").digest()


def _token(settings: Settings, link_id: str) -> str:
    mac = hmac.new(_key(settings), link_id.encode(), hashlib.sha256).digest()
    return f"{link_id}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def link_filler(page: str) -> Callable[[Services, str], str]:
    """The mail secret filler writing the URL of `page` with a link's token."""

    def fill(services: Services, link_id: str) -> str:
        base = services.settings.backend_url.rstrip("/")
        return f"{base}{page}?token={_token(services.settings, link_id)}"

    return fill


def _issue(
    session: Session,
    settings: Settings,
    user: User,
    purpose: LinkPurpose,
    email: str,
    lifetime: timedelta,
) -> AccountLink:
    link_id, now = new_id("lnk"), utcnow()
    link = AccountLink(
        id=link_id,
        user_id=user.id,
        purpose=purpose,
        token_hash=_digest(_token(settings, link_id)),
        email=email,
        created_at=now,
        expires_at=now + lifetime,
    )
    session.add(link)
    session.flush()
    return link


def _use(session: Session, token: str, purpose: LinkPurpose) -> AccountLink:
    """The link behind `token`, marked used by this call and no other; else InvalidLink."""
    used = session.execute(
        update(AccountLink)
        .where(
            AccountLink.token_hash == _digest(token.strip()),
            AccountLink.purpose == purpose,
            AccountLink.used_at.is_(None),
            AccountLink.expires_at > utcnow(),
        )
        .values(used_at=utcnow())
        .returning(AccountLink.id)
    ).scalar_one_or_none()
    if used is None:
        raise InvalidLink(_INVALID)
    link = session.get(AccountLink, used)
    assert link is not None
    return link


def _user(session: Session, link: AccountLink) -> User:
    user = session.get(User, link.user_id)
    if user is None or user.deleted_at is not None:
        raise InvalidLink(_INVALID)
    return user


# -- e-mail verification -----------------------------------------------------------------


def send_verification(
    session: Session, settings: Settings, user: User, email: str | None = None
) -> AccountLink:
    """E-mail a link proving `email` (the user's own address unless another is given)."""
    address = email or user.email
    link = _issue(
        session,
        settings,
        user,
        LinkPurpose.VERIFY_EMAIL,
        address,
        timedelta(hours=settings.email_verification_ttl_hours),
    )
    change = address.lower() != user.email_normalized
    queue_mail(
        session,
        to=address,
        subject="Confirm your e-mail address",
        body=(
            f"Hello {user.name},\n\n"
            + (
                "Please confirm that this is your new e-mail address for your account:\n\n"
                if change
                else "Please confirm your e-mail address:\n\n"
            )
            + f"{secret_placeholder('verify_email_link', link.id)}\n\n"
            f"The link works once, for {settings.email_verification_ttl_hours} hours. If you "
            "did not ask for it, ignore this e-mail.\n"
        ),
        kind="verify_email",
        dedupe_key=f"verify_email:{link.id}",
    )
    return link


def resend_verification(session: Session, settings: Settings, caller: Caller) -> None:
    if caller.user is None:
        raise Conflict("A service key has no e-mail to verify", code="not_a_user")
    user = get_customer(session, caller, caller.user.id).user
    if user.is_email_verified:
        raise Conflict("The e-mail address is verified already", code="already_verified")
    send_verification(session, settings, user)


def propose_email(session: Session, settings: Settings, user: User, email: str) -> str:
    """A new login e-mail that came from elsewhere (Stripe): it applies once verified.
    Answers a note for the event log."""
    pending = session.scalar(
        select(AccountLink.id).where(
            AccountLink.user_id == user.id,
            AccountLink.purpose == LinkPurpose.VERIFY_EMAIL,
            AccountLink.email == email,
            AccountLink.used_at.is_(None),
            AccountLink.expires_at > utcnow(),
        )
    )
    if pending is None:
        send_verification(session, settings, user, email)
        audit.record(session, "stripe", "user.email_change_proposed", user.id, email=email)
    return "Stripe's e-mail differs: kept ours until the new address is verified"


def pending_emails(session: Session, user_id: str) -> list[str]:
    """The (lower-cased) addresses a live verification link of the user was sent to."""
    found = session.scalars(
        select(AccountLink.email).where(
            AccountLink.user_id == user_id,
            AccountLink.purpose == LinkPurpose.VERIFY_EMAIL,
            AccountLink.used_at.is_(None),
            AccountLink.expires_at > utcnow(),
        )
    )
    return [e.lower() for e in found]


def verify_email(services: Services, session: Session, token: str) -> User:
    """Follow a verification link: the address it was sent to is proven (and becomes the
    login e-mail when it was a proposed change)."""
    link = _use(session, token, LinkPurpose.VERIFY_EMAIL)
    user = _user(session, link)
    first = not user.is_email_verified
    if link.email.lower() != user.email_normalized:
        _adopt_email(session, services.wiring, user, link.email)
    user.is_email_verified = True
    audit.record(session, user.id, "user.email_verified", user.id, email=link.email)
    customer = session.scalar(select(Customer).where(Customer.user_id == user.id))
    if first and customer is not None and services.settings.email_verification_required:
        for hook in services.wiring.hooks(FIRST_VERIFICATION):
            hook(session, customer, services)
    return user


def _adopt_email(session: Session, wiring: Wiring, user: User, email: str) -> None:
    taken = session.scalar(
        select(User.id).where(User.email_normalized == email.lower(), User.id != user.id)
    )
    if taken:
        raise EmailTaken("An account with this e-mail already exists")
    old = user.email
    user.email, user.email_normalized = email, email.lower()
    revoke_tokens(session, wiring, user)
    audit.record(session, user.id, "user.email_change", user.id, via="verification", old=old)
    customer = session.scalar(select(Customer).where(Customer.user_id == user.id))
    if customer is not None:
        customer.profile_version += 1
        enqueue(session, PUSH_JOB, {"customer_id": customer.id})


def after_email_change(session: Session, settings: Settings, user: User, old_email: str) -> None:
    """Verify the new address, and tell the old one (it may be the owner, locked out)."""
    send_verification(session, settings, user)
    queue_mail(
        session,
        to=old_email,
        subject="Your e-mail address was changed",
        body=(
            f"Hello {user.name},\n\nThe e-mail address of your account was changed from "
            f"{old_email} to {user.email}. If you did not do this, reset your password and "
            "contact us.\n"
        ),
        kind="email_changed",
        dedupe_key=f"email_changed:{user.id}:{user.token_version}",
    )


# -- password reset ----------------------------------------------------------------------


def request_password_reset(session: Session, settings: Settings, email: str) -> None:
    """E-mail a reset link if an account has this e-mail; the caller learns nothing either way."""
    user = session.scalar(select(User).where(User.email_normalized == email.strip().lower()))
    if user is None or user.deleted_at is not None:
        return
    minutes = settings.password_reset_ttl_minutes
    link = _issue(
        session,
        settings,
        user,
        LinkPurpose.RESET_PASSWORD,
        user.email,
        timedelta(minutes=minutes),
    )
    queue_mail(
        session,
        to=user.email,
        subject="Reset your password",
        body=(
            f"Hello {user.name},\n\nSomeone (we hope you) asked to reset your password. "
            f"Choose a new one here:\n\n{secret_placeholder('reset_password_link', link.id)}\n\n"
            f"The link works once, for {minutes} minutes. If you did not ask, ignore this "
            "e-mail: your password stays as it is.\n"
        ),
        kind="password_reset",
        dedupe_key=f"password_reset:{link.id}",
    )
    audit.record(session, "anonymous", "user.password_reset_requested", user.id)


def reset_password(services: Services, session: Session, token: str, new_password: str) -> User:
    """Follow a reset link: a new password, every earlier token and reset link revoked.

    The password is hashed first, before the session's first statement: given a session not
    begun yet (the request's unit of work), Argon2 runs outside the database transaction."""
    password_hash = hash_password(new_password)
    link = _use(session, token, LinkPurpose.RESET_PASSWORD)
    user = _user(session, link)
    if link.email.lower() != user.email_normalized:
        raise InvalidLink(_INVALID)  # sent to an address the account no longer has
    set_password_hash(
        session, services.wiring, user, password_hash, actor=user.id, via="password_reset"
    )
    # The link reached the inbox: that proves the address as well.
    user.is_email_verified = True
    session.execute(
        update(AccountLink)
        .where(
            AccountLink.user_id == user.id,
            AccountLink.purpose == LinkPurpose.RESET_PASSWORD,
            AccountLink.used_at.is_(None),
        )
        .values(used_at=utcnow())
    )
    return user
