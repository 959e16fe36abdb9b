"""Wires the pages into the FastAPI app: routers, static files, security headers, docs."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response

from billfold.pages import account, docs, signin
from billfold.pages.admin import routes as admin
from billfold.pages.billing import routes as billing
from billfold.pages.rendering import HERE, Pages, brand_css
from billfold.pages.security import PageHeaders, PageSecurity
from billfold.services import Services


def install_pages(app: FastAPI, services: Services) -> None:
    """Mount every page on `app` (call before the app's outermost middleware is added)."""
    security = PageSecurity.from_settings(services.settings)
    app.state.pages = Pages(services.settings, security)
    app.include_router(signin.api)
    app.include_router(signin.router)
    app.include_router(billing.router)
    app.include_router(account.router)
    app.include_router(admin.router)
    docs.install(app)
    app.mount("/billing/static", StaticFiles(directory=HERE / "static"), name="pages-static")
    css = brand_css(services.settings)

    @app.get("/billing/brand.css", include_in_schema=False)
    def brand(_request: Request) -> Response:
        return Response(css, media_type="text/css", headers={"cache-control": "max-age=300"})

    app.add_middleware(PageHeaders, security=security)
