"""What the sync and async clients share: headers, idempotency keys, reading answers, and
when (and how long) to wait before a retry."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from billfold_client._operations import MUTATING, Op
from billfold_client.errors import BillfoldError, RateLimited, ServiceUnavailable, error_for

USER_AGENT = "billfold-client-python/0.1.0"
_MAX_WAIT = 30.0


@dataclass(frozen=True)
class Retry:
    """The answer asks for another try (after `after` seconds, when it said so)."""

    error: BillfoldError
    after: float | None


def headers_for(op: Op[Any]) -> dict[str, str]:
    """The request's headers; a mutating call gets its Idempotency-Key here, once, so every
    retry of the call sends the same one."""
    if op.method in MUTATING and op.header_key:
        return {"Idempotency-Key": op.idempotency_key or f"bfc_{uuid.uuid4().hex}"}
    return {}


def read(response: httpx.Response) -> Any:
    """The data of a success, a `Retry` for what is worth retrying, or raises the error."""
    if response.status_code == 204:
        return None
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if response.is_success:
        if isinstance(payload, dict) and "success" in payload and "data" in payload:
            return payload["data"]
        return payload
    body = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(body, dict):
        code, message = str(body.get("code", "error")), str(body.get("message", ""))
        details = body.get("details") if isinstance(body.get("details"), dict) else None
    else:
        code, message, details = "http_error", response.text[:500], None
    error = error_for(response.status_code, code, message, details)
    retry_after = _retry_after(response.headers.get("retry-after"))
    if isinstance(error, RateLimited):
        error.retry_after = retry_after
        return Retry(error, retry_after)
    if response.status_code >= 500 or code == "request_in_progress":
        return Retry(error, retry_after)
    raise error


def network_error(exc: Exception) -> Retry:
    return Retry(ServiceUnavailable(0, "network_error", f"{type(exc).__name__}: {exc}"), None)


def wait_before(attempt: int, retry: Retry, backoff: float) -> float:
    """Full-jitter exponential backoff, or what Retry-After asked (capped)."""
    if retry.after is not None:
        return min(retry.after, _MAX_WAIT)
    return random.uniform(0, min(_MAX_WAIT, backoff * 2**attempt))


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
