"""Applies the rate-limit rules to the routes they name, before any other work is done.

The table of routes is built in one place (`routes_from_settings`): a route is limited per
client address and, when it carries `Authorization`, per credential. Answers carry the
`RateLimit-*` fields; a refusal is `429 rate_limited` with `Retry-After`. Limits on a value
in the body (the e-mail of a login or of a password reset) are applied by the route itself
with `Limiter.enforce`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from billfold.config import Settings
from billfold.kit.http_errors import error_response
from billfold.ratelimits.limiter import Decision, Limiter, Rule, strictest

ADDRESS = "address"
CREDENTIAL = "credential"


@dataclass(frozen=True)
class LimitedRoute:
    method: str
    # An exact path, or a prefix when it ends with "/" ("/entitlements/" covers its IDs).
    path: str
    rule: Rule

    def matches(self, method: str, path: str) -> bool:
        if method != self.method:
            return False
        return path.startswith(self.path) if self.path.endswith("/") else path == self.path


def rules_from_settings(settings: Settings) -> dict[str, Rule]:
    """Every rule by name; routes and services share them."""
    return {
        "login": Rule.parse("login", settings.rate_limit_login),
        "signup": Rule.parse("signup", settings.rate_limit_signup),
        "account_mail": Rule.parse("account_mail", settings.rate_limit_account_mail),
        "credential_change": Rule.parse("credential_change", settings.rate_limit_login),
        "consume": Rule.parse("consume", settings.rate_limit_consume, leased=True),
        "check": Rule.parse("check", settings.rate_limit_check, leased=True),
    }


def routes_from_settings(rules: dict[str, Rule]) -> list[LimitedRoute]:
    """Which routes each rule guards. A new route that needs a limit gets a line here."""
    return [
        LimitedRoute("POST", "/auth/login", rules["login"]),
        LimitedRoute("POST", "/users", rules["signup"]),
        LimitedRoute("POST", "/auth/password-reset/request", rules["account_mail"]),
        LimitedRoute("POST", "/auth/password-reset/confirm", rules["account_mail"]),
        LimitedRoute("POST", "/auth/verify-email", rules["account_mail"]),
        LimitedRoute("POST", "/auth/verify-email/resend", rules["account_mail"]),
        # Profile edits can change credentials (and test a current password).
        LimitedRoute("PATCH", "/users/", rules["credential_change"]),
        LimitedRoute("POST", "/credits/consume", rules["consume"]),
        LimitedRoute("POST", "/entitlements/check", rules["check"]),
        LimitedRoute("GET", "/entitlements/", rules["check"]),
    ]


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, limiter: Limiter, routes: Sequence[LimitedRoute]) -> None:
        self._app = app
        self._limiter = limiter
        self._routes = tuple(routes)
        # The route of each exact (method, path) pair, found once: the scan below runs on
        # every request, the consume hot path's included.
        self._exact = {
            (r.method, r.path): self._scan(r.method, r.path)
            for r in self._routes
            if not r.path.endswith("/")
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._route(scope)
        if route is None:
            await self._app(scope, receive, send)
            return
        decision = await self._decide(route.rule, _identities(scope))
        if not decision.allowed:
            refusal = error_response(
                429,
                "rate_limited",
                "Too many requests; try again later",
                {"retryAfter": int(decision.headers()["Retry-After"])},
                decision.headers(),
            )
            await refusal(scope, receive, send)
            return

        headers = [(k.lower().encode(), v.encode()) for k, v in decision.headers().items()]

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *headers]}
            await send(message)

        await self._app(scope, receive, send_with_limits)

    def _route(self, scope: Scope) -> LimitedRoute | None:
        if scope["type"] != "http" or not self._limiter.enabled:
            return None
        method, path = scope["method"], scope["path"]
        return self._exact.get((method, path)) or self._scan(method, path)

    def _scan(self, method: str, path: str) -> LimitedRoute | None:
        return next((r for r in self._routes if r.matches(method, path)), None)

    async def _decide(self, rule: Rule, identities: list[tuple[str, str]]) -> Decision:
        decisions: list[Decision] = []
        for scope_name, who in identities:
            decision = self._limiter.hit_from_memory(rule, scope_name, who)
            if decision is None:
                decision = await run_in_threadpool(self._limiter.hit, rule, scope_name, who)
            decisions.append(decision)
        return strictest(decisions)


def _identities(scope: Scope) -> list[tuple[str, str]]:
    client = scope.get("client")
    # Behind a proxy, run uvicorn with --proxy-headers (and --forwarded-allow-ips) so this is
    # the client's address, not the proxy's.
    found = [(ADDRESS, client[0] if client else "unknown")]
    for name, value in scope["headers"]:
        if name == b"authorization":
            found.append((CREDENTIAL, value.decode("latin-1").strip()))
            break
    return found
