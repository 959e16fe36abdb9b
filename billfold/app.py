"""The FastAPI application factory: routers, error envelope, health, metrics, worker."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import structlog
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from billfold.auth import api as auth_api
from billfold.auth.service import TokenIssuer
from billfold.config import Settings, secret
from billfold.credits import api as credits_api
from billfold.credits.batching import ConsumeBatcher
from billfold.credits.hot_path import ConsumeHotPath
from billfold.customers import api as customers_api
from billfold.customers import sign_in_api
from billfold.entitlements import api as entitlements_api
from billfold.entitlements.batching import EntitlementReader
from billfold.entitlements.hot_path import EntitlementsHotPath
from billfold.kit.errors import BillfoldError, InvalidInput
from billfold.kit.http_errors import error_response, invalid_request, response_for, unparsable_json
from billfold.kit.idempotency import IdempotencyMiddleware
from billfold.kit.observability import configure_logging
from billfold.kit.request_guard import BodyTooLarge, RequestGuard, too_large
from billfold.operations import api as operations_api
from billfold.operations import metrics as operations_metrics
from billfold.pages.app import install_pages
from billfold.pages.errors import page_error
from billfold.pages.security import is_page
from billfold.payments import api as payments_api
from billfold.payments import catalog_api
from billfold.ratelimits.limiter import Limiter
from billfold.ratelimits.middleware import (
    RateLimitMiddleware,
    routes_from_settings,
    rules_from_settings,
)
from billfold.ratelimits.storage import DatabaseStorage
from billfold.registry import build_services, build_worker
from billfold.services import Services
from billfold.subscriptions import api as subscriptions_api
from billfold.webhooks import api as webhooks_api
from billfold.webhooks.batching import InboxBatcher
from billfold.webhooks.hot_path import WebhookHotPath
from billfold.webhooks.outbound import api as outbound_webhooks_api


def create_app(
    settings: Settings | None = None,
    *,
    services: Services | None = None,
    run_worker: bool = False,
) -> FastAPI:
    """Build the app; with `run_worker`, a job worker runs in a thread for its lifetime."""
    settings = settings or (services.settings if services else Settings())
    settings.require("stripe_secret_key", "jwt_secret", "license_private_key")
    services = services or build_services(settings)
    stop = threading.Event()
    tokens = TokenIssuer(
        secret=secret(settings.jwt_secret), lifetime=timedelta(minutes=settings.jwt_expires_minutes)
    )
    batcher = ConsumeBatcher(services, tokens, threads=settings.credits_consume_batch_threads)
    reader = EntitlementReader(services, tokens)
    inbox_batcher = InboxBatcher(services)
    limiter = Limiter(
        DatabaseStorage(services.db),
        secret(settings.jwt_secret),
        enabled=settings.rate_limits_enabled,
    )
    rate_rules = rules_from_settings(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        thread = build_worker(services).start_in_thread(stop) if run_worker else None
        batcher.start()
        reader.start()
        inbox_batcher.start()
        yield
        inbox_batcher.stop()
        reader.stop()
        batcher.stop()
        stop.set()
        if thread is not None:
            thread.join(timeout=10)

    app = FastAPI(
        title="Billfold",
        version="0.1.0",
        summary="Customers kept in sync with Stripe, payments, subscriptions and credits.",
        lifespan=lifespan,
        # /docs is served by billfold/pages/docs.py from local assets (works offline).
        docs_url=None,
        redoc_url=None,
    )
    app.state.services = services
    app.state.request_services = services.for_requests()
    app.state.consume_batcher = batcher
    app.state.entitlement_reader = reader
    app.state.inbox_batcher = inbox_batcher
    app.state.tokens = tokens
    app.state.limiter = limiter
    app.state.rate_rules = rate_rules
    for router in (
        customers_api.router,
        sign_in_api.router,
        auth_api.router,
        payments_api.router,
        catalog_api.router,
        credits_api.router,
        subscriptions_api.router,
        webhooks_api.router,
        operations_api.router,
        outbound_webhooks_api.router,
        entitlements_api.router,
    ):
        app.include_router(router)
    _add_operations_routes(app, services)
    install_pages(app, services)
    _add_error_handlers(app)
    app.add_middleware(
        IdempotencyMiddleware,
        db=services.db,
        retention=timedelta(hours=settings.idempotency_retention_hours),
    )
    app.add_middleware(ConsumeHotPath, batcher=batcher)
    app.add_middleware(EntitlementsHotPath, reader=reader)
    app.add_middleware(WebhookHotPath, batcher=inbox_batcher)
    app.add_middleware(
        RateLimitMiddleware, limiter=limiter, routes=routes_from_settings(rate_rules)
    )
    app.add_middleware(_RequestContext)
    app.add_middleware(
        RequestGuard,
        max_body_bytes=settings.max_request_body_bytes,
        max_webhook_body_bytes=settings.max_webhook_body_bytes,
    )
    return app


def app_from_environment() -> FastAPI:
    """The app as `billfold serve --workers N` builds it in each server process."""
    settings = Settings()
    configure_logging(settings.log_json)
    return create_app(settings, run_worker=settings.serve_job_worker)


def _add_operations_routes(app: FastAPI, services: Services) -> None:
    @app.get("/healthz", tags=["operations"], summary="The process is up")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="The database answers")
    def readyz() -> JSONResponse:
        try:
            with services.db.transaction() as session:
                session.execute(text("SELECT 1"))
        except OperationalError:
            return JSONResponse({"status": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    def metrics(request: Request) -> Response:
        operations_metrics.authorize(services.settings, request.headers.get("authorization"))
        with services.db.transaction() as session:
            body = operations_metrics.exposition(session)
        return Response(body, media_type=operations_metrics.CONTENT_TYPE)


def _add_error_handlers(app: FastAPI) -> None:
    # On a page (/billing, /admin, /docs) an error is a page with a message, never JSON.
    async def known_error(request: Request, exc: Exception) -> Response:
        if is_page(request.url.path):
            return page_error(request, exc)
        return response_for(exc)

    for kind in (BillfoldError, OperationalError, Exception):
        app.add_exception_handler(kind, known_error)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        if is_page(request.url.path):
            return page_error(request, InvalidInput("That address is not valid."))
        return invalid_request(exc.errors())

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if is_page(request.url.path):
            error = BillfoldError(str(exc.detail), code="http_error")
            error.status_code = exc.status_code
            return page_error(request, error)
        if isinstance(exc, BodyTooLarge):
            return too_large(exc.limit)
        unparsable = unparsable_json(exc.__cause__) if exc.status_code == 400 else None
        if unparsable is not None:
            return unparsable
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        response = error_response(exc.status_code, code, str(exc.detail))
        if exc.status_code == 405:
            response.headers["Allow"] = ", ".join(_allowed_methods(request))
        return response


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route answers on this path (each route takes one method, so the
    route that refused knows only its own): each is tried against the app's routes."""
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(r.matches({**request.scope, "method": method})[0] == Match.FULL for r in routes)
    ]


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class RequestIds:
    """Request IDs for requests that bring none: 32 hex digits, a random prefix per process
    and a counter. They need to be unique, not secret, and a `uuid4` per request asked the
    system for random bytes on every request (a system call, costly on the consume hot path).
    A process forked after this was made draws a new prefix, so no two processes share one."""

    def __init__(self) -> None:
        self._reseed()
        os.register_at_fork(after_in_child=self._reseed)

    def _reseed(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


_REQUEST_IDS = RequestIds()  # one per process: it registers itself for forks


class _RequestContext:
    """Binds a request ID to every log line of the request and echoes it in X-Request-ID."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        request_id = _given_request_id(scope) or _REQUEST_IDS.next()
        structlog.contextvars.bind_contextvars(request_id=request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self._app(scope, receive, send_with_id)
        finally:
            structlog.contextvars.clear_contextvars()


def _given_request_id(scope: Scope) -> str | None:
    """The caller's X-Request-ID (ASGI servers pass header names in lower case)."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            return bytes(value).decode("latin-1")
    return None
