"""How an error becomes an HTTP answer: one mapping for the app's exception handlers and for
the consume hot path (credits/hot_path.py), so both answer the same envelope and codes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import structlog
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

from billfold.kit.envelope import ErrorBody, ErrorEnvelope
from billfold.kit.errors import BillfoldError

log = structlog.get_logger("billfold.http")


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, object] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = ErrorEnvelope(error=ErrorBody(code=code, message=message, details=details))
    return JSONResponse(
        jsonable_encoder(body, exclude_none=True), status_code=status, headers=headers
    )


def invalid_request(errors: Iterable[Any], prefix: Sequence[str | int] = ()) -> JSONResponse:
    """A 422 naming each bad field; never echoes the input back, which may hold a password."""
    problems = [
        {
            "field": ".".join(str(p) for p in (*prefix, *e.get("loc", ()))),
            "problem": e.get("msg", ""),
        }
        for e in errors
    ]
    return error_response(
        422, "validation_error", "The request is not valid", {"problems": problems}
    )


def unparsable_json(exc: BaseException | None) -> JSONResponse | None:
    """422 for a JSON body Python's parser gives up on though it is well formed: nested past
    the recursion limit, or a number past the 4,300-digit limit on int conversion. FastAPI
    would answer such a body 400 and the consume hot path 500; both answer this instead."""
    if isinstance(exc, RecursionError):
        problem = "JSON nested too deeply"
    elif isinstance(exc, ValueError) and "integer string conversion" in str(exc):
        problem = "JSON number too long"
    else:
        return None
    return invalid_request([{"loc": (), "msg": problem}], ("body",))


def response_for(exc: Exception) -> JSONResponse:
    """Our own errors say what went wrong; anything else is logged and answered as ours."""
    if isinstance(exc, BillfoldError):
        return error_response(
            exc.status_code, exc.code, exc.message, exc.details or None, exc.headers
        )
    if isinstance(exc, OperationalError):
        log.error("database.unavailable", error=str(exc.orig))
        return error_response(
            503, "database_unavailable", "The database is not answering; try again"
        )
    log.error("http.unexpected_error", exc_info=exc)
    return error_response(500, "internal_error", "Something went wrong on our side")
