"""The `Idempotency-Key` header on mutating calls: the same key and body answer the same
result without doing the work twice (SPEC §8).

A key is scoped to the caller's credential. The first request with a key records itself as
in progress; its answer (any status below 500) is kept and replayed for a retry with the
same body; a retry while it runs answers 409; the same key with another body answers 422.
Server errors are not kept, so a retry after one does the work.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import String, Text, UniqueConstraint, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column
from starlette.concurrency import run_in_threadpool
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from billfold.db import Base, Database, UTCDateTime, new_id, utcnow
from billfold.envelope import ErrorBody, ErrorEnvelope

HEADER = "Idempotency-Key"
KEPT_FOR = timedelta(hours=24)
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
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (UniqueConstraint("scope", "key"),)


@dataclass(frozen=True)
class _Decision:
    kind: str  # "proceed" | "replay" | "mismatch" | "in_progress"
    record_id: str | None = None
    status: int | None = None
    body: str | None = None


def _begin(db: Database, scope: str, key: str, fingerprint: str) -> _Decision:
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
        stale = now - record.created_at > KEPT_FOR
        abandoned = record.completed_at is None and now - record.created_at > ABANDONED_AFTER
        if stale or abandoned:
            record.fingerprint, record.created_at = fingerprint, now
            record.response_status = record.response_body = record.completed_at = None
            return _Decision("proceed", record.id)
        if record.fingerprint != fingerprint:
            return _Decision("mismatch")
        if record.completed_at is None:
            return _Decision("in_progress")
        return _Decision("replay", record.id, record.response_status, record.response_body)


def _finish(db: Database, record_id: str, status: int, body: str | None) -> None:
    with db.transaction() as session:
        record = session.get(IdempotencyRecord, record_id)
        if record is None:
            return
        if body is None:  # not kept: a retry must do the work
            session.delete(record)
            return
        record.response_status, record.response_body = status, body
        record.completed_at = utcnow()


def _error(status: int, code: str, message: str) -> JSONResponse:
    envelope = ErrorEnvelope(error=ErrorBody(code=code, message=message))
    return JSONResponse(envelope.model_dump(mode="json", exclude_none=True), status_code=status)


class IdempotencyMiddleware(BaseHTTPMiddleware):
    def __init__(self, app: object, db: Database) -> None:
        super().__init__(app)  # type: ignore[arg-type]
        self._db = db

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        key = request.headers.get(HEADER)
        if key is None or request.method not in MUTATING or request.url.path in EXEMPT_PATHS:
            return await call_next(request)
        if not 1 <= len(key) <= 255:
            return _error(400, "invalid_idempotency_key", f"{HEADER} must be 1 to 255 characters")
        body = await request.body()
        credential = request.headers.get("Authorization", "anonymous")
        scope = hashlib.sha256(credential.encode()).hexdigest()
        request_line = f"{request.method} {request.url.path}?{request.url.query}\n".encode()
        fingerprint = hashlib.sha256(request_line + body).hexdigest()
        decision = await run_in_threadpool(_begin, self._db, scope, key, fingerprint)
        if decision.kind == "mismatch":
            return _error(
                422, "idempotency_key_reused", f"This {HEADER} was used for another request"
            )
        if decision.kind == "in_progress":
            return _error(
                409, "request_in_progress", f"A request with this {HEADER} is still running"
            )
        if decision.kind == "replay":
            assert decision.status is not None
            return Response(
                decision.body,
                status_code=decision.status,
                media_type="application/json",
                headers={"Idempotent-Replayed": "true"},
            )
        assert decision.record_id is not None
        try:
            response = await call_next(request)
        except Exception:
            await run_in_threadpool(_finish, self._db, decision.record_id, 500, None)
            raise
        chunks = [chunk async for chunk in response.body_iterator]  # type: ignore[attr-defined]
        content = b"".join(c if isinstance(c, bytes) else c.encode() for c in chunks)
        kept = content.decode() if response.status_code < 500 else None
        await run_in_threadpool(_finish, self._db, decision.record_id, response.status_code, kept)
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        return Response(content, status_code=response.status_code, headers=headers)
