"""Superseded licenses: each subscription change issues a new license, but the one before
still verifies offline until its `exp`. The revocation list names those still unexpired,
signed with the license key, so a host app that checks online can refuse them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt
from sqlalchemy import and_, case, exists, func, or_, select
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.expression import Exists

from billfold.kit.db import utcnow
from billfold.kit.memo import Memo
from billfold.kit.signing_keys import SigningKeys
from billfold.subscriptions.licenses import ALGORITHM, ISSUER
from billfold.subscriptions.models import License

#: How long a published list is good for: a host app fetches a fresh one within this.
LIST_VALIDITY = timedelta(hours=1)
LIST_TYPE = "license-revocations"
#: A list is served again for at most this long, so what a host app gets always has at least
#: LIST_VALIDITY - LIST_REUSE left.
LIST_REUSE = timedelta(minutes=30)
#: The list's name in `Services.memo` (whose `made` counts how often it was built).
MEMO_NAME = "license_revocations"


@dataclass(frozen=True)
class RevocationList:
    revoked: list[str]
    issued_at: datetime
    expires_at: datetime
    token: str


def _superseded() -> Exists:
    newer = aliased(License)
    return exists().where(
        newer.customer_id == License.customer_id,
        or_(
            newer.issued_at > License.issued_at,
            and_(newer.issued_at == License.issued_at, newer.id > License.id),
        ),
    )


def superseded_ids(session: Session, now: datetime) -> list[str]:
    """IDs (`jti`) of licenses a newer one replaced and that have not expired yet."""
    return list(
        session.scalars(
            select(License.id).where(License.expires_at > now, _superseded()).order_by(License.id)
        )
    )


def is_superseded(session: Session, license_id: str) -> bool:
    found = session.scalar(select(License.id).where(License.id == license_id, _superseded()))
    return found is not None


def current(session: Session, keys: SigningKeys, memo: Memo) -> RevocationList:
    """The signed list, built and signed again only when it may have changed: a license was
    issued (which may supersede one) or removed, one reached its expiry (and may leave the
    list), the signing key changed, or the list kept is LIST_REUSE old. Asking that is one
    aggregate over the licenses, where building the list joins them and signs."""
    now = utcnow()
    issued, unexpired, newest = session.execute(
        select(
            func.count(License.id),
            func.count(case((License.expires_at > now, License.id))),
            func.max(License.issued_at),
        )
    ).one()
    marker = (keys.kid, issued, unexpired, newest)
    return memo.get(
        MEMO_NAME, marker, lambda: publish(session, keys), max_age=LIST_REUSE.total_seconds()
    )


def publish(session: Session, keys: SigningKeys) -> RevocationList:
    """The signed list as of now: a JWT (EdDSA, the licenses' key) whose `revoked` claim
    names the superseded licenses' IDs, valid for `LIST_VALIDITY`."""
    now = utcnow().replace(microsecond=0)
    revoked = superseded_ids(session, now)
    expires = now + LIST_VALIDITY
    token = jwt.encode(
        {
            "iss": ISSUER,
            "typ": LIST_TYPE,
            "iat": int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "revoked": revoked,
        },
        keys.private,
        algorithm=ALGORITHM,
        headers={"kid": keys.kid},
    )
    return RevocationList(revoked, now, expires, token)
