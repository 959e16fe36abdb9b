"""License tokens: Ed25519-signed JWTs saying what a customer's plan allows, verifiable
offline with the public key. Never a Stripe ID inside."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from billfold.config import Settings
from billfold.customers.models import Customer
from billfold.kit.db import utcnow
from billfold.kit.errors import BillfoldError
from billfold.kit.signing_keys import SigningKeys
from billfold.mail.outbox import queue_mail
from billfold.subscriptions.models import License, Subscription, SubscriptionStatus
from billfold.webhooks.outbound.notify import license_issued

ISSUER = "billfold"
ALGORITHM = "EdDSA"
# Statuses whose license carries the plan's features; any other gets none.
ENTITLED = frozenset(
    {SubscriptionStatus.TRIALING, SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE}
)


class InvalidLicense(BillfoldError):
    status_code = 400
    code = "invalid_license"


@dataclass(frozen=True)
class Terms:
    status: str
    features: dict[str, Any]
    expires_at: datetime


def terms(subscription: Subscription, settings: Settings, now: datetime) -> Terms:
    """What a license for this subscription may say; it never outlasts what was paid for.

    Trial: until the trial ends. Active: the paid period plus a short grace. Past due (a
    renewal Stripe could not collect; Stripe has already moved the period on): the grace
    from now, while the customer pays, never past the period. Canceled or any other state:
    no features, expired now.
    """
    return terms_of(
        subscription.status,
        subscription.plan.features,
        trial_ends_at=subscription.trial_ends_at,
        period_ends_at=subscription.current_period_ends_at,
        settings=settings,
        now=now,
    )


def terms_of(
    subscription_status: str,
    plan_features: dict[str, Any],
    *,
    trial_ends_at: datetime | None,
    period_ends_at: datetime | None,
    settings: Settings,
    now: datetime,
) -> Terms:
    """`terms` from a subscription's columns, for readers that load no entities."""
    status = SubscriptionStatus(subscription_status)
    features = plan_features if status in ENTITLED else {}
    if status == SubscriptionStatus.TRIALING:
        expires = trial_ends_at or period_ends_at or now
    elif status == SubscriptionStatus.ACTIVE and period_ends_at is not None:
        expires = period_ends_at + timedelta(days=settings.license_grace_days)
    elif status == SubscriptionStatus.PAST_DUE and period_ends_at is not None:
        expires = min(period_ends_at, now + timedelta(days=settings.license_grace_days))
    else:
        expires = now
    return Terms(str(status), features, max(expires, now))


def issue(
    session: Session, subscription: Subscription, settings: Settings, keys: SigningKeys
) -> License:
    """Sign and record a new license for the subscription as it stands, and e-mail it."""
    now = utcnow()
    granted = terms(subscription, settings, now)
    license_row = License(
        customer_id=subscription.customer_id,
        plan_code=subscription.plan.code,
        status=granted.status,
        key_id=keys.kid,
        issued_at=now,
        expires_at=granted.expires_at,
        token="",
    )
    session.add(license_row)
    session.flush()
    claims = {
        "iss": ISSUER,
        "sub": subscription.customer_id,
        "jti": license_row.id,
        "customer_id": subscription.customer_id,
        "plan": subscription.plan.code,
        "features": granted.features,
        "status": granted.status,
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int(granted.expires_at.timestamp()),
    }
    license_row.token = jwt.encode(
        claims, keys.private, algorithm=ALGORITHM, headers={"kid": keys.kid}
    )
    _mail(session, license_row)
    license_issued(session, license_row)
    return license_row


def _mail(session: Session, license_row: License) -> None:
    customer = session.get(Customer, license_row.customer_id)
    if customer is None or customer.deleted_at is not None:
        return
    queue_mail(
        session,
        to=customer.user.email,
        subject=f"Your Billfold license: {license_row.plan_code} ({license_row.status})",
        body="\n".join(
            [
                f"Hello {customer.user.name},",
                "",
                f"Your plan is {license_row.plan_code}, status {license_row.status}, valid until "
                f"{license_row.expires_at:%Y-%m-%d %H:%M} UTC. Your license key:",
                "",
                license_row.token,
            ]
        ),
        kind="license",
        dedupe_key=f"license:{license_row.id}",
    )


def current(session: Session, customer_id: str) -> License | None:
    return session.scalar(
        select(License)
        .where(License.customer_id == customer_id)
        .order_by(License.issued_at.desc(), License.id.desc())
        .limit(1)
    )


def verify(token: str, public_keys: Mapping[str, Ed25519PublicKey]) -> dict[str, Any]:
    """The claims of a license signed by one of `public_keys` (by key ID), or InvalidLicense
    saying why. Needs no database and no network: this is what offline checks do."""
    try:
        kid = jwt.get_unverified_header(token).get("kid")
        public = public_keys.get(kid) if kid else None
        if public is None:
            raise InvalidLicense("Signed by a key we do not know", code="unknown_key")
        claims: dict[str, Any] = jwt.decode(
            token,
            public,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise InvalidLicense("The license has expired", code="license_expired") from exc
    except jwt.PyJWTError as exc:
        raise InvalidLicense(f"The license is not valid: {exc}") from exc
    return claims
