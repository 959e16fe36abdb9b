"""Passwords (Argon2id), bearer tokens (JWT) and service API keys; who is calling."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from billfold import audit
from billfold.auth.models import ApiKey, User
from billfold.db import utcnow
from billfold.errors import NotFound, Unauthorized

API_KEY_PREFIX = "bf_sk_"
LAST_USED_PRECISION = timedelta(minutes=1)
_hasher = PasswordHasher()  # Argon2id with the library's current recommended costs
# Verified against when an e-mail is unknown, so a login takes as long either way.
_DUMMY_HASH = _hasher.hash("billfold-no-such-user")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True)
class TokenIssuer:
    secret: str
    lifetime: timedelta
    algorithm: str = "HS256"
    issuer: str = "billfold"

    def issue(self, user: User) -> str:
        now = utcnow()
        claims = {
            "sub": user.id,
            "role": str(user.role),
            "iss": self.issuer,
            "iat": now,
            "exp": now + self.lifetime,
        }
        return jwt.encode(claims, self.secret, algorithm=self.algorithm)

    def subject(self, token: str) -> str:
        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=[self.algorithm],
                issuer=self.issuer,
                options={"require": ["sub", "exp", "iat"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("The access token has expired", code="token_expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("The access token is not valid", code="invalid_token") from exc
        return str(claims["sub"])


@dataclass(frozen=True)
class Caller:
    """Who is calling: a signed-in user, or the host application with a service key."""

    user: User | None
    api_key_id: str | None = None

    @property
    def is_service(self) -> bool:
        return self.api_key_id is not None

    @property
    def is_privileged(self) -> bool:
        """Admins and service keys may act on any customer."""
        return self.is_service or (self.user is not None and self.user.is_admin)

    @property
    def actor(self) -> str:
        return self.api_key_id or (self.user.id if self.user else "anonymous")

    def may_act_on(self, user_id: str) -> bool:
        return self.is_privileged or (self.user is not None and self.user.id == user_id)


def authenticate(session: Session, email: str, password: str) -> User:
    user = session.scalar(select(User).where(User.email_normalized == email.strip().lower()))
    if user is None or user.deleted_at is not None:
        verify_password(None, password)
        raise Unauthorized("E-mail or password is wrong", code="invalid_credentials")
    if not verify_password(user.password_hash, password):
        raise Unauthorized("E-mail or password is wrong", code="invalid_credentials")
    return user


def credential_from_header(authorization: str | None) -> str:
    """The credential of an `Authorization: Bearer <JWT or API key>` header."""
    scheme, _, credential = (authorization or "").partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        raise Unauthorized("Send 'Authorization: Bearer <token or API key>'")
    return credential


def resolve_caller(session: Session, credential: str, tokens: TokenIssuer) -> Caller:
    """The caller behind a bearer credential: a service API key or a user's JWT."""
    found = resolve_callers(session, [credential], tokens)[0]
    if isinstance(found, Unauthorized):
        raise found
    return found


# Built once: these run for every batch of debits.
_LIVE_API_KEYS = select(ApiKey.id, ApiKey.secret_hash, ApiKey.last_used_at).where(
    ApiKey.secret_hash.in_(bindparam("digests", expanding=True)), ApiKey.revoked_at.is_(None)
)
_USERS = select(User).where(User.id.in_(bindparam("ids", expanding=True)))


def resolve_callers(
    session: Session, credentials: list[str], tokens: TokenIssuer
) -> list[Caller | Unauthorized]:
    """`resolve_caller` for many credentials at once: two queries, whatever their number."""
    digests = {c: _digest(c) for c in credentials if c.startswith(API_KEY_PREFIX)}
    # Plain rows, not entities: this runs for every batch of debits.
    keys = (
        {
            k.secret_hash: k
            for k in session.connection().execute(
                _LIVE_API_KEYS, {"digests": list(set(digests.values()))}
            )
        }
        if digests
        else {}
    )
    stale: set[str] = set()
    subjects: dict[str, str | Unauthorized] = {}
    for credential in credentials:
        if credential not in digests:
            try:
                subjects[credential] = tokens.subject(credential)
            except Unauthorized as exc:
                subjects[credential] = exc
    user_ids = {s for s in subjects.values() if isinstance(s, str)}
    users = {u.id: u for u in session.scalars(_USERS, {"ids": list(user_ids)})} if user_ids else {}
    now = utcnow()
    callers: list[Caller | Unauthorized] = []
    for credential in credentials:
        if credential in digests:
            key = keys.get(digests[credential])
            if key is None:
                callers.append(
                    Unauthorized("The API key is not valid or was revoked", code="invalid_api_key")
                )
                continue
            if key.last_used_at is None or now - key.last_used_at > LAST_USED_PRECISION:
                stale.add(key.id)  # at most a write a minute per key, not one per request
            callers.append(Caller(user=None, api_key_id=key.id))
            continue
        subject = subjects[credential]
        if isinstance(subject, Unauthorized):
            callers.append(subject)
            continue
        user = users.get(subject)
        if user is None or user.deleted_at is not None:
            callers.append(Unauthorized("The account no longer exists", code="invalid_token"))
        else:
            callers.append(Caller(user=user))
    if stale:
        session.execute(update(ApiKey).where(ApiKey.id.in_(stale)).values(last_used_at=now))
    return callers


def create_api_key(session: Session, name: str, *, actor: str) -> tuple[ApiKey, str]:
    """A new service key; its plain text is answered here once and never stored."""
    plaintext = API_KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        name=name,
        prefix=plaintext[: len(API_KEY_PREFIX) + 4],
        secret_hash=_digest(plaintext),
        created_by=actor if actor.startswith("usr_") else None,
    )
    session.add(key)
    session.flush()
    audit.record(session, actor, "api_key.create", key.id, name=name)
    return key, plaintext


def list_api_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at.desc())))


def revoke_api_key(session: Session, key_id: str, *, actor: str) -> None:
    result = session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        raise NotFound("No such active API key")
    audit.record(session, actor, "api_key.revoke", key_id)


def _digest(api_key: str) -> str:
    # API keys carry 256 bits of randomness, so a fast hash is enough (unlike passwords).
    return hashlib.sha256(api_key.encode()).hexdigest()
