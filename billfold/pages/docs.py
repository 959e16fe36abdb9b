"""The API docs at /docs, served from Billfold itself (Swagger UI's files as the
fastapi-offline package ships them): they work offline and under the pages'
Content-Security-Policy (no inline script)."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response

from billfold.pages.rendering import Pages

SWAGGER_UI = Path(fastapi_offline.__file__).parent / "static"


def install(app: FastAPI) -> None:
    app.mount("/docs/assets", StaticFiles(directory=SWAGGER_UI), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def api_docs(request: Request) -> Response:
        pages: Pages = request.app.state.pages
        return pages.render(request, "docs.html", openapi_url=app.openapi_url)
