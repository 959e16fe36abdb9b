"""What every page answer carries: a strict Content-Security-Policy and friends, and the
CSRF cookie that every form's token is checked against.

CSRF uses the signed double-submit pattern: a random `bf_csrf` cookie (HttpOnly,
SameSite=Lax) and, in each form, an HMAC of it under a server key. A cross-site page can
neither read the cookie nor forge the HMAC, and it works before sign-in too."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from billfold.config import Settings, secret
from billfold.kit.errors import Forbidden

CSRF_COOKIE = "bf_csrf"
CSRF_FIELD = "csrf_token"
# Paths answered as pages (HTML); everything else stays the JSON API.
PAGE_PREFIXES = ("/billing", "/admin", "/account", "/docs")
STRIPE_JS = "https://js.stripe.com/v3/"


class CsrfRejected(Forbidden):
    code = "csrf_failed"


def is_page(path: str) -> bool:
    """Whether a path is a page (HTML answers, CSP) rather than the JSON API."""
    if path == "/billing/sessions":  # the host backend's JSON call that mints sign-in links
        return False
    return any(path == p or path.startswith(p + "/") for p in PAGE_PREFIXES)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@dataclass(frozen=True)
class PageSecurity:
    """The CSP and the CSRF key, derived once from the settings."""

    stripe_js_url: str
    policy: str
    csrf_key: bytes
    secure_cookies: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> PageSecurity:
        if settings.stripe_api_base:  # the stand-in serves its Stripe.js and API itself
            stand_in = _origin(settings.stripe_api_base)
            js_url = f"{settings.stripe_api_base.rstrip('/')}/js.stripe.com/v3/"
            scripts = frames = connect = stand_in
        else:
            js_url = STRIPE_JS
            scripts = "https://js.stripe.com"
            frames = "https://js.stripe.com https://hooks.stripe.com"
            connect = "https://api.stripe.com"
        images = "'self' data:"
        if settings.brand_logo_url:
            images += " " + _origin(settings.brand_logo_url)
        policy = "; ".join(
            (
                "default-src 'self'",
                f"script-src 'self' {scripts}",
                f"frame-src 'self' {frames}",
                f"connect-src 'self' {connect}",
                f"img-src {images}",
                "style-src 'self'",
                "font-src 'self'",
                "object-src 'none'",
                "base-uri 'none'",
                "form-action 'self'",  # Checkout is reached by a link, not a form's redirect
                "frame-ancestors 'none'",
            )
        )
        key = hashlib.sha256(b"billfold-pages-csrf:" + secret(settings.jwt_secret).encode())
        return cls(
            stripe_js_url=js_url,
            policy=policy,
            csrf_key=key.digest(),
            secure_cookies=settings.pages_secure_cookies,
        )

    def csrf_token(self, cookie: str) -> str:
        return hmac.new(self.csrf_key, cookie.encode(), hashlib.sha256).hexdigest()

    def check_csrf(self, request: Request, token: str | None) -> None:
        """Refuse a form whose token does not match this browser's CSRF cookie."""
        cookie = request.cookies.get(CSRF_COOKIE)
        if not cookie or not token or not hmac.compare_digest(self.csrf_token(cookie), token):
            raise CsrfRejected(
                "This form has expired or did not come from this site. Reload the page and "
                "try again."
            )


class PageHeaders:
    """ASGI middleware: on page paths, sets the CSRF cookie when missing (the token is on
    `scope["state"]` for the templates of this very request) and the security headers."""

    def __init__(self, app: ASGIApp, security: PageSecurity) -> None:
        self._app = app
        self._security = security

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_page(scope["path"]):
            await self._app(scope, receive, send)
            return
        cookie = Request(scope).cookies.get(CSRF_COOKIE)
        fresh = None
        if not cookie:
            cookie = fresh = secrets.token_urlsafe(32)
        scope.setdefault("state", {})["csrf_token"] = self._security.csrf_token(cookie)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["content-security-policy"] = self._security.policy
                headers["x-content-type-options"] = "nosniff"
                headers["referrer-policy"] = "same-origin"
                headers["x-frame-options"] = "DENY"
                if headers.get("content-type", "").startswith("text/html"):
                    headers["cache-control"] = "no-store"
                if fresh is not None:
                    secure = "; Secure" if self._security.secure_cookies else ""
                    headers.append(
                        "set-cookie",
                        f"{CSRF_COOKIE}={fresh}; Path=/; HttpOnly; SameSite=Lax{secure}",
                    )
            await send(message)

        await self._app(scope, receive, send_with_headers)
