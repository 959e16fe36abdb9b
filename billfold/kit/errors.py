"""Domain error types: each carries an HTTP status, a machine-readable code and a message."""

from __future__ import annotations

from typing import Any


class BillfoldError(Exception):
    """Base of every error a caller may see; one handler turns it into the error envelope."""

    status_code = 400
    code = "bad_request"
    # Extra response headers (Retry-After on 429 and 503).
    headers: dict[str, str] | None = None

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details


class NotFound(BillfoldError):
    status_code = 404
    code = "not_found"


class Conflict(BillfoldError):
    status_code = 409
    code = "conflict"


class Unauthorized(BillfoldError):
    status_code = 401
    code = "unauthorized"


class Forbidden(BillfoldError):
    status_code = 403
    code = "forbidden"


class InvalidInput(BillfoldError):
    status_code = 422
    code = "validation_error"
