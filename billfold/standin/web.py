"""The stand-in's own routes beside localstripe's: Stripe API endpoints localstripe lacks or
gets wrong, and the pages Stripe hosts (Checkout, the billing portal, an invoice's pay page).

localstripe binds its routes to functions at import time, so they cannot be replaced by
patching; one middleware answers our routes first (in the order they were added) and leaves
everything else to localstripe. API routes want a secret key as localstripe's do; pages are
public, as Stripe's hosted pages are.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request, dict[str, str]], Awaitable[web.StreamResponse]]
Next = Callable[[web.Request], Awaitable[web.StreamResponse]]
ApiFunction = Callable[..., Any]


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler


_routes: list[_Route] = []
#: Where the stand-in answers, for the URLs it hands out (Checkout's `url`, the portal's).
public_url = "http://127.0.0.1:8420"


def page(method: str, path: str) -> Callable[[Handler], Handler]:
    """Register a public page handler for `path` (``{name}`` segments match one segment)."""

    def register(handler: Handler) -> Handler:
        _routes.append(_Route(method, _compile(path), handler))
        return handler

    return register


def api(method: str, path: str, function: ApiFunction) -> None:
    """Register a Stripe API route: `function(**params)` answers a localstripe object."""
    from localstripe import server
    from localstripe.errors import UserError

    async def handler(request: web.Request, params: dict[str, str]) -> web.StreamResponse:
        if server.get_api_key(request) is None:
            raise UserError(401, "Unauthorized")
        data: dict[str, Any] = {}
        if request.method == "POST":
            data = dict(await server.get_post_data(request) or {})
        data.update(server.unflatten_data(request.query) or {})
        data.update(params)
        expand = data.pop("expand", None)
        response: web.StreamResponse = server.json_response(function(**data)._export(expand=expand))
        return response

    _routes.append(_Route(method, _compile(path), handler))


def _compile(path: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$")


@web.middleware
async def _ours_first(request: web.Request, handler: Next) -> web.StreamResponse:
    for route in _routes:
        match = route.pattern.match(request.path)
        if match and route.method == request.method:
            return await route.handler(request, match.groupdict())
    return await handler(request)


# Answers already given to a POST with an Idempotency-Key: (key, path) → (body hash, answer).
_replies: dict[tuple[str, str], tuple[str, int, bytes]] = {}


@web.middleware
async def _idempotent(request: web.Request, handler: Next) -> web.StreamResponse:
    """Stripe answers a POST sent again with the same Idempotency-Key with the first answer,
    doing nothing again (for 24 hours); the same key with other parameters is an error.
    localstripe ignores the header, so a retried create would make a second object."""
    key = request.headers.get("Idempotency-Key")
    if request.method != "POST" or not key:
        return await handler(request)
    body = hashlib.sha256(await request.read()).hexdigest()
    seen = _replies.get((key, request.path))
    if seen is not None:
        if seen[0] != body:
            return json_error(
                400,
                "Keys for idempotent requests can only be used with the same parameters they "
                "were first used with.",
                type="idempotency_error",
            )
        return web.Response(
            body=seen[2],
            status=seen[1],
            content_type="application/json",
            headers={"Idempotent-Replayed": "true"},
        )
    response = await handler(request)
    if isinstance(response, web.Response) and 200 <= response.status < 300 and response.body:
        _replies[(key, request.path)] = (body, response.status, bytes(response.body))  # type: ignore[arg-type]
    return response


def install(app: web.Application, url: str) -> None:
    """Answer our routes on localstripe's `app` (inside its error handling, before its auth),
    and replay answers to repeated idempotent requests as Stripe does."""
    global public_url
    public_url = url.rstrip("/")
    app.middlewares.insert(1, _ours_first)
    app.middlewares.insert(1, _idempotent)


# Small HTML helpers for the hosted pages: no scripts, one stylesheet-free layout.
def escape(value: object) -> str:
    return html.escape(str(value), quote=True)


def html_page(title: str, body: str, status: int = 200) -> web.Response:
    document = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'></head>"
        f"<body><main><p><small>Stripe stand-in (test mode)</small></p>{body}</main></body></html>"
    )
    return web.Response(
        text=document,
        status=status,
        content_type="text/html",
        headers={"Content-Security-Policy": "default-src 'none'; form-action *"},
    )


def money(amount: int, currency: str) -> str:
    """Minor units as the page shows them: ``9.00 USD`` (zero-decimal currencies as is)."""
    if currency.lower() in ZERO_DECIMAL:
        return f"{amount} {currency.upper()}"
    return f"{amount // 100}.{amount % 100:02d} {currency.upper()}"


ZERO_DECIMAL = frozenset({"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf"})


def json_error(status: int, message: str, **fields: Any) -> web.Response:
    body = {"error": {"type": "invalid_request_error", "message": message, **fields}}
    return web.Response(text=json.dumps(body), status=status, content_type="application/json")
