"""Browser sign-in for the pages: sessions behind an HttpOnly cookie, and the single-use
sign-in links the host backend mints for a customer (Stripe's portal-session pattern).

Services flush, never commit: the page route owns the transaction."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from billfold.auth.models import User
from billfold.kit import audit
from billfold.kit.db import utcnow
from billfold.kit.errors import BillfoldError
from billfold.pages.models import SignInLink, WebSession
from billfold.services import Services

SESSION_COOKIE = "bf_session"


class LinkUnusable(BillfoldError):
    status_code = 410
    code = "link_unusable"


@dataclass(frozen=True)
class SignedIn:
    """Who a session cookie belongs to, for one request."""

    user: User
    session_id: str
    return_url: str | None


def start_session(
    session: Session, user: User, *, lifetime: timedelta, return_url: str | None = None
) -> str:
    """A new session for `user`; answers the token for the cookie (only its digest is kept)."""
    token = secrets.token_urlsafe(32)
    session.add(
        WebSession(
            token_hash=_digest(token),
            user_id=user.id,
            return_url=return_url,
            expires_at=utcnow() + lifetime,
        )
    )
    session.flush()
    return token


def open_session(
    services: Services, user: User, *, lifetime: timedelta, return_url: str | None
) -> str:
    """`start_session` in a transaction of its own, for a page whose work before it was a
    service function's own (signing up: `customers.registration.sign_up`)."""
    with services.db.transaction() as session:
        return start_session(session, user, lifetime=lifetime, return_url=return_url)


def signed_in(session: Session, token: str | None) -> SignedIn | None:
    """The live session behind a cookie's token, or None (unknown, expired, account gone)."""
    if not token:
        return None
    row = session.execute(
        select(WebSession, User)
        .join(User, User.id == WebSession.user_id)
        .where(WebSession.token_hash == _digest(token), WebSession.expires_at > utcnow())
    ).first()
    if row is None or row.User.deleted_at is not None:
        return None
    return SignedIn(
        user=row.User, session_id=row.WebSession.id, return_url=row.WebSession.return_url
    )


def end_session(session: Session, token: str | None) -> None:
    """Sign out: the token stops working at once, whoever holds a copy."""
    if token:
        session.execute(delete(WebSession).where(WebSession.token_hash == _digest(token)))


def end_user_sessions(session: Session, user: User) -> None:
    """Every browser session of `user` ends (their password or e-mail changed)."""
    session.execute(delete(WebSession).where(WebSession.user_id == user.id))


def mint_link(
    session: Session, user: User, *, return_url: str | None, lifetime: timedelta, actor: str
) -> tuple[SignInLink, str]:
    """A single-use sign-in link's record and its token (shown once, to the host backend)."""
    token = secrets.token_urlsafe(32)
    link = SignInLink(
        token_hash=_digest(token),
        user_id=user.id,
        return_url=return_url,
        created_by=actor,
        expires_at=utcnow() + lifetime,
    )
    session.add(link)
    session.flush()
    audit.record(session, actor, "billing_link.create", link.id, user_id=user.id)
    return link, token


def redeem_link(session: Session, token: str) -> SignInLink:
    """Use a link once: a conditional update, so two browsers racing get one session."""
    now = utcnow()
    used = session.execute(
        update(SignInLink)
        .where(
            SignInLink.token_hash == _digest(token),
            SignInLink.used_at.is_(None),
            SignInLink.expires_at > now,
        )
        .values(used_at=now)
        .returning(SignInLink.id)
    ).scalar()
    if used is None:
        raise LinkUnusable(
            "This sign-in link has expired or was already used. Ask for a new one, or sign in "
            "with your e-mail and password."
        )
    link = session.get(SignInLink, used)
    assert link is not None
    return link


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
