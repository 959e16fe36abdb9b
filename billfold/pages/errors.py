"""Errors on page paths become pages: a message in the site's layout, never JSON or a trace.

Signing in is a redirect to the sign-in page that brings the person back afterwards."""

from __future__ import annotations

from urllib.parse import quote

import structlog
from sqlalchemy.exc import OperationalError
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from billfold.kit.errors import BillfoldError
from billfold.pages.deps import SignInRequired
from billfold.pages.rendering import Pages

log = structlog.get_logger("billfold.pages")

_TITLES = {
    400: "That did not work",
    401: "Please sign in",
    403: "Not allowed",
    404: "Not found",
    405: "Not found",
    409: "That did not work",
    410: "Link no longer valid",
    422: "Please check what you entered",
    503: "Temporarily unavailable",
}


def page_error(request: Request, exc: Exception) -> Response:
    """The answer for an error raised while serving a page."""
    if isinstance(exc, SignInRequired):
        path = request.url.path
        if request.url.query:
            path += "?" + request.url.query
        return RedirectResponse(f"/billing/sign-in?next={quote(path, safe='/')}", 303)
    status, message = status_and_message(exc)
    pages: Pages = request.app.state.pages
    return pages.render(
        request,
        "error.html",
        status_code=status,
        title=_TITLES.get(status, "Something went wrong"),
        message=message,
    )


def status_and_message(exc: Exception) -> tuple[int, str]:
    """What a person is told about an error: ours say what went wrong, others are logged."""
    if isinstance(exc, BillfoldError):
        if exc.status_code == 404:
            return 404, "There is no such page, or it is not yours."
        return exc.status_code, exc.message
    if isinstance(exc, OperationalError):
        log.error("database.unavailable", error=str(exc.orig))
        return 503, "The service is not answering right now. Please try again in a moment."
    log.error("pages.unexpected_error", exc_info=exc)
    return 500, "Something went wrong on our side. Please try again."
