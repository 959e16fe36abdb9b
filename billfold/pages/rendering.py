"""Rendering pages: one Jinja2 environment, the branding, flash messages, money and dates.

A flash message survives one redirect in a signed cookie (Post/Redirect/Get), so a form's
outcome shows on the page it returns to and a reload does not post it again."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from billfold.config import Settings, secret
from billfold.kit.money import format_money
from billfold.pages.security import CSRF_FIELD, PageSecurity

HERE = Path(__file__).parent
FLASH_COOKIE = "bf_flash"


class Pages:
    """What every page route needs to answer: templates, branding, security, flash."""

    def __init__(self, settings: Settings, security: PageSecurity) -> None:
        self.settings = settings
        self.security = security
        self.env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(("html",)),
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,  # templates ship with the package: no stat() per render
        )
        self.env.filters["money"] = format_money
        self.env.filters["when"] = _when
        self.env.filters["day"] = _day
        self.env.globals.update(
            brand=_brand(settings),
            stripe_js_url=security.stripe_js_url,
            publishable_key=settings.stripe_publishable_key or "",
            csrf_field=CSRF_FIELD,
        )
        self._flash = URLSafeSerializer(secret(settings.jwt_secret), salt="billfold-pages-flash")

    def render(
        self, request: Request, template: str, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        flash = self._read_flash(request)
        html = self.env.get_template(template).render(
            request=request,
            csrf_token=request.scope.get("state", {}).get("csrf_token", ""),
            flash=flash,
            path=request.url.path,
            **context,
        )
        response = HTMLResponse(html, status_code=status_code)
        if flash is not None:
            response.delete_cookie(FLASH_COOKIE, path="/")
        return response

    def redirect(
        self, url: str, *, notice: str | None = None, error: str | None = None
    ) -> RedirectResponse:
        """303 to `url`, carrying one message for the page it lands on."""
        response = RedirectResponse(url, status_code=303)
        if notice or error:
            value = self._flash.dumps(
                {"kind": "error" if error else "notice", "text": error or notice}
            )
            response.set_cookie(
                FLASH_COOKIE,
                value,
                max_age=60,
                path="/",
                httponly=True,
                samesite="lax",
                secure=self.security.secure_cookies,
            )
        return response

    def set_cookie(self, response: Response, name: str, value: str, *, max_age: int) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/",
            httponly=True,
            samesite="lax",
            secure=self.security.secure_cookies,
        )

    def _read_flash(self, request: Request) -> dict[str, str] | None:
        raw = request.cookies.get(FLASH_COOKIE)
        if not raw:
            return None
        try:
            value = self._flash.loads(raw)
        except BadSignature:
            return None
        return value if isinstance(value, dict) else None


def _brand(settings: Settings) -> dict[str, str | None]:
    return {
        "name": settings.brand_name,
        "logo_url": settings.brand_logo_url,
        "accent": settings.brand_accent_color,
    }


def brand_css(settings: Settings) -> str:
    """The accent colour as a stylesheet (no inline styles: the CSP forbids them)."""
    return f":root {{ --accent: {settings.brand_accent_color}; }}\n"


def _when(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%-d %b %Y, %H:%M UTC")


def _day(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%-d %B %Y")


def data_json(value: Any) -> str:
    """A value for a `data-` attribute read by the page's script."""
    return json.dumps(value, separators=(",", ":"))
