"""Passwords (Argon2id), bearer tokens (JWT) and service API keys; who is calling."""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from billfold.auth.models import ApiKey, User
from billfold.kit import audit
from billfold.kit.db import Database, utcnow
from billfold.kit.errors import BillfoldError, Forbidden, NotFound, Unauthorized
from billfold.kit.wiring import Hook, Wiring

API_KEY_PREFIX = "bf_sk_"
LAST_USED_PRECISION = timedelta(minutes=1)
# OWASP's Argon2id recommendation: 19 MiB, two passes, one lane. Hashes made with other
# costs (the library's 64 MiB default before) still verify, and are rehashed at login.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# Each hash holds its 19 MiB while it runs: at most this many run at once per process, so a
# flood of logins queues here (and then answers 503) instead of exhausting memory.
MAX_CONCURRENT_HASHES = 4
HASH_WAIT_SECONDS = 10.0
_hashing = threading.BoundedSemaphore(MAX_CONCURRENT_HASHES)
# Verified against when an e-mail is unknown, so a login takes as long either way.
_DUMMY_HASH = _hasher.hash("billfold-no-such-user")


class HashingBusy(BillfoldError):
    status_code = 503
    code = "busy"
    headers = {"Retry-After": "1"}


def _take_hashing_slot() -> None:
    if not _hashing.acquire(timeout=HASH_WAIT_SECONDS):
        raise HashingBusy("Too many sign-ins at once; try again in a moment")


@contextmanager
def _hashing_slot() -> Iterator[None]:
    _take_hashing_slot()
    try:
        yield
    finally:
        _hashing.release()


def hash_password(password: str) -> str:
    with _hashing_slot():
        return _hasher.hash(password)


# Argon2 releases the GIL while it hashes: a hash made on one of these threads costs the
# request little more than its own other work (a sign-up's statements) when that is longer.
_hash_threads = ThreadPoolExecutor(MAX_CONCURRENT_HASHES, thread_name_prefix="password-hash")


def start_hashing(password: str) -> Future[str]:
    """`hash_password` on a thread of its own; `.result()` waits for the hash. The hashing
    slot is taken here, by the caller (HashingBusy after HASH_WAIT_SECONDS, before it opens
    any transaction), so the hashes waiting for a thread never outnumber the slots and a
    flood of sign-ups cannot queue up holding open transactions."""
    _take_hashing_slot()
    try:
        return _hash_threads.submit(_hash_in_slot, password)
    except BaseException:
        _hashing.release()
        raise


def _hash_in_slot(password: str) -> str:
    try:
        return _hasher.hash(password)
    finally:
        _hashing.release()


def verify_password(password_hash: str | None, password: str) -> bool:
    with _hashing_slot():
        try:
            return (
                _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
            )
        except (VerificationError, InvalidHashError):
            return False


def set_password(
    session: Session, wiring: Wiring, user: User, password: str, *, actor: str, via: str
) -> None:
    """A new password: every token issued before it stops working; the change is audited."""
    set_password_hash(session, wiring, user, hash_password(password), actor=actor, via=via)


def set_password_hash(
    session: Session, wiring: Wiring, user: User, password_hash: str, *, actor: str, via: str
) -> None:
    """`set_password` with the hash made beforehand, outside the transaction."""
    user.password_hash = password_hash
    revoke_tokens(session, wiring, user)
    audit.record(session, actor, "user.password_change", user.id, via=via)


# What else ends with a credential change (the pages' browser sessions): billfold/registry.py.
TOKENS_REVOKED: Hook[Callable[[Session, User], None]] = Hook("auth.tokens_revoked")


def revoke_tokens(session: Session, wiring: Wiring, user: User) -> None:
    """Every access token issued to `user` so far stops working (they carry the version),
    and so does every other kind of session wired to TOKENS_REVOKED."""
    user.token_version = (user.token_version or 0) + 1
    for hook in wiring.hooks(TOKENS_REVOKED):
        hook(session, user)


class CurrentPasswordRequired(Forbidden):
    code = "current_password_required"


def check_current_password(user: User, password: str | None) -> None:
    """A user changing their own credentials proves they know the current password."""
    if password is None:
        raise CurrentPasswordRequired("Give currentPassword to change the e-mail or password")
    if not verify_password(user.password_hash, password):
        raise CurrentPasswordRequired("The current password is wrong", code="wrong_password")


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
            "ver": user.token_version or 0,
            "role": str(user.role),
            "iss": self.issuer,
            "iat": now,
            "exp": now + self.lifetime,
        }
        return jwt.encode(claims, self.secret, algorithm=self.algorithm)

    def subject(self, token: str) -> tuple[str, int]:
        """The user ID a valid token names, and the token version it was issued under."""
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
        # Tokens from before versions existed carry none: they belong to version 0.
        version = claims.get("ver", 0)
        if not isinstance(version, int):
            raise Unauthorized("The access token is not valid", code="invalid_token")
        return str(claims["sub"]), version


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
    assert user.password_hash is not None  # verified above
    if _hasher.check_needs_rehash(user.password_hash):
        # Made with older costs: the password is at hand now, so store it at today's.
        user.password_hash = hash_password(password)
        audit.record(session, user.id, "user.password_rehash", user.id)
    return user


def sign_in(db: Database, session: Session, email: str, password: str) -> User:
    """`authenticate` with Argon2 outside any transaction (on SQLite an open one holds the
    one write lock while the hash runs): the stored hash is read in a short transaction of
    its own and checked outside it; the user is then loaded in `session` (the request's unit
    of work, not begun yet) and refused if the password changed in between."""
    email_normalized = email.strip().lower()
    with db.transaction() as reading:
        stored = reading.scalar(
            select(User.password_hash).where(
                User.email_normalized == email_normalized, User.deleted_at.is_(None)
            )
        )
    if not verify_password(stored, password):  # with no account, against the dummy hash
        raise Unauthorized("E-mail or password is wrong", code="invalid_credentials")
    assert stored is not None  # verified above
    rehashed = hash_password(password) if _hasher.check_needs_rehash(stored) else None
    user = session.scalar(select(User).where(User.email_normalized == email_normalized))
    if user is None or user.deleted_at is not None or user.password_hash != stored:
        raise Unauthorized("E-mail or password is wrong", code="invalid_credentials")
    if rehashed is not None:
        # Made with older costs: the password is at hand now, so store it at today's.
        user.password_hash = rehashed
        audit.record(session, user.id, "user.password_rehash", user.id)
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
    subjects: dict[str, tuple[str, int] | Unauthorized] = {}
    for credential in credentials:
        if credential not in digests:
            try:
                subjects[credential] = tokens.subject(credential)
            except Unauthorized as exc:
                subjects[credential] = exc
    user_ids = {s[0] for s in subjects.values() if isinstance(s, tuple)}
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
        user_id, version = subject
        user = users.get(user_id)
        if user is None or user.deleted_at is not None:
            callers.append(Unauthorized("The account no longer exists", code="invalid_token"))
        elif version != (user.token_version or 0):
            # The password or e-mail changed since this token was issued.
            callers.append(Unauthorized("The access token was revoked", code="token_revoked"))
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
