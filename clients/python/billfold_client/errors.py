"""Billfold's error answers as exceptions: each carries the envelope's code and message."""

from __future__ import annotations

from typing import Any


class BillfoldError(Exception):
    """An error answer from Billfold (or the last failure after the retries ran out)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}


class BadRequest(BillfoldError):
    """400 or 422: the request was refused as it stands (validation_error, …)."""


class Unauthorized(BillfoldError):
    """401: no credential, or a wrong or expired one."""


class Forbidden(BillfoldError):
    """403: the credential may not do this."""


class NotFound(BillfoldError):
    """404: no such object, or not one the caller may see."""


class Conflict(BillfoldError):
    """409: the object's state forbids it (or the same idempotency key is still running)."""


class InsufficientCredits(BillfoldError):
    """402 insufficient_credits: the balance is short; nothing was debited."""


class PaymentDeclined(BillfoldError):
    """402: the card was declined (`details` has the decline code)."""


class RateLimited(BillfoldError):
    """429: too many requests; `retry_after` says when to try again, when known."""

    retry_after: float | None = None


class ServiceUnavailable(BillfoldError):
    """5xx, or Billfold could not be reached at all (status 0, code network_error)."""


_BY_STATUS: dict[int, type[BillfoldError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: BadRequest,
    429: RateLimited,
}


def error_for(
    status: int, code: str, message: str, details: dict[str, Any] | None
) -> BillfoldError:
    if status == 402:
        kind: type[BillfoldError] = (
            InsufficientCredits if code == "insufficient_credits" else PaymentDeclined
        )
    elif status >= 500:
        kind = ServiceUnavailable
    else:
        kind = _BY_STATUS.get(status, BillfoldError)
    return kind(status, code, message, details)
