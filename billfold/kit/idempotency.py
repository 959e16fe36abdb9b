"""The `Idempotency-Key` header on mutating calls: the same key and body answer the same
result without doing the work twice (SPEC §8).

A key is scoped to the caller's credential. The first request with a key records itself as
in progress; its answer (any status below 500) is kept and replayed for a retry with the
same body; a retry while it runs answers 409; the same key with another body answers 422.
Server errors are not kept, so a retry after one does the work.

An answer that carries a credential (a new API key, an access token) says so with
`Cache-Control: no-store`, and its body is never kept: a secret must not rest in plain text in
this table, and encrypting it would only move the secret to the key that decrypts it. The
work is still done once; a retry answers 409 `idempotent_answer_withheld` with the original
status, and the caller looks the result up (the key is listed, without its secret) or, for a
log-in, simply logs in again without the header. Records older than the retention
(`IDEMPOTENCY_RETENTION_HOURS`) are purged by a periodic job.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import String, Text, UniqueConstraint, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from billfold.kit.db import Base, Database, UTCDateTime, new_id, utcnow
from billfold.kit.envelope import ErrorBody, ErrorEnvelope

HEADER = "Idempotency-Key"
PURGE_JOB = "idempotency.purge"
PURGE_EVERY = timedelta(hours=1)
_PURGE_BATCH = 5000
# A request still "in progress" after this long died with its process: let a retry run.
ABANDONED_AFTER = timedelta(minutes=5)
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Stripe's own retries carry their own event IDs; the inbox already dedupes them.
EXEMPT_PATHS = frozenset({"/webhooks/stripe"})


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("idk"))
    scope: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    response_status: Mapped[int | None]
    response_body: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (UniqueConstraint("scope", "key"),)


@dataclass(frozen=True)
class _Decision:
    kind: str  # "proceed" | "replay" | "withheld" | "mismatch" | "in_progress"
    record_id: str | None = None
    status: int | None = None
    body: str | None = None


def _begin(db: Database, scope: str, key: str, fingerprint: str, kept_for: timedelta) -> _Decision:
    now = utcnow()
    with db.transaction() as session:
        record = session.scalar(
            select(IdempotencyRecord).where(
                IdempotencyRecord.scope == scope, IdempotencyRecord.key == key
            )
        )
        if record is None:
            record = IdempotencyRecord(scope=scope, key=key, fingerprint=fingerprint)
            try:
                with session.begin_nested():
                    session.add(record)
                    session.flush()
            except IntegrityError:
                return _Decision("in_progress")  # a twin request got there a moment ago
            return _Decision("proceed", record.id)
        stale = now - record.created_at > kept_for
        abandoned = record.completed_at is None and now - record.created_at > ABANDONED_AFTER
        if stale or abandoned:
            record.fingerprint, record.created_at = fingerprint, now
            record.response_status = record.response_body = record.completed_at = None
            return _Decision("proceed", record.id)
        if record.fingerprint != fingerprint:
            return _Decision("mismatch")
        if record.completed_at is None:
            return _Decision("in_progress")
        kind = "replay" if record.response_body is not None else "withheld"
        return _Decision(kind, record.id, record.response_status, record.response_body)


def _finish(db: Database, record_id: str, status: int, body: str | None, kept: bool) -> None:
    """Keep the answer (`body`, or only its status when it carried a credential), or, when
    it is not `kept` (a server error), drop the record so that a retry does the work."""
    with db.transaction() as session:
        record = session.get(IdempotencyRecord, record_id)
        if record is None:
            return
        if not kept:
            session.delete(record)
            return
        record.response_status, record.response_body = status, body
        record.completed_at = utcnow()


def purge(db: Database, older_than: datetime) -> int:
    """Delete the records created before `older_than`, in batches; answers how many went."""
    purged = 0
    while True:
        with db.transaction() as session:
            batch = (
                select(IdempotencyRecord.id)
                .where(IdempotencyRecord.created_at < older_than)
                .limit(_PURGE_BATCH)
            )
            ids = list(session.scalars(batch))
            if ids:
                session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.id.in_(ids)))
        purged += len(ids)
        if len(ids) < _PURGE_BATCH:
            return purged


def _error(status: int, code: str, message: str) -> JSONResponse:
    envelope = ErrorEnvelope(error=ErrorBody(code=code, message=message))
    return JSONResponse(envelope.model_dump(mode="json", exclude_none=True), status_code=status)


class IdempotencyMiddleware:
    """Pure ASGI, so requests without the header pass straight through at no cost."""

    def __init__(self, app: ASGIApp, db: Database, retention: timedelta) -> None:
        self._app = app
        self._db = db
        self._retention = retention

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in MUTATING
            or scope["path"] in EXEMPT_PATHS
        ):
            await self._app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        key = headers.get(HEADER)
        if key is None:
            await self._app(scope, receive, send)
            return
        if not 1 <= len(key) <= 255:
            await _error(400, "invalid_idempotency_key", f"{HEADER} must be 1 to 255 characters")(
                scope, receive, send
            )
            return
        body = await _read_body(receive)
        scope_hash = hashlib.sha256(headers.get("authorization", "anonymous").encode()).hexdigest()
        query = scope.get("query_string", b"").decode()
        request_line = f"{scope['method']} {scope['path']}?{query}\n".encode()
        fingerprint = hashlib.sha256(request_line + body).hexdigest()
        decision = await run_in_threadpool(
            _begin, self._db, scope_hash, key, fingerprint, self._retention
        )
        if decision.kind != "proceed":
            await _answer(decision)(scope, receive, send)
            return
        assert decision.record_id is not None
        status, chunks, secret = 500, [], False

        async def replay_body() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        async def capture(message: Message) -> None:
            nonlocal status, secret
            if message["type"] == "http.response.start":
                status = message["status"]
                secret = "no-store" in Headers(raw=message.get("headers", [])).get(
                    "cache-control", ""
                )
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        try:
            await self._app(scope, replay_body, capture)
        finally:
            kept = status < 500
            body_kept = b"".join(chunks).decode() if kept and not secret else None
            await run_in_threadpool(_finish, self._db, decision.record_id, status, body_kept, kept)


async def _read_body(receive: Receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


def _answer(decision: _Decision) -> Response:
    if decision.kind == "mismatch":
        return _error(422, "idempotency_key_reused", f"This {HEADER} was used for another request")
    if decision.kind == "in_progress":
        return _error(409, "request_in_progress", f"A request with this {HEADER} is still running")
    if decision.kind == "withheld":
        envelope = ErrorEnvelope(
            error=ErrorBody(
                code="idempotent_answer_withheld",
                message=(
                    f"The request with this {HEADER} was done; its answer carried a credential, "
                    "which is never kept, so it cannot be replayed"
                ),
                details={"originalStatus": decision.status},
            )
        )
        return JSONResponse(
            envelope.model_dump(mode="json", exclude_none=True),
            status_code=409,
            headers={"Idempotent-Replayed": "true"},
        )
    assert decision.status is not None
    return Response(
        decision.body,
        status_code=decision.status,
        media_type="application/json",
        headers={"Idempotent-Replayed": "true"},
    )
