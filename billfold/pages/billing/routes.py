"""All billing page routes, gathered on one router."""

from __future__ import annotations

from fastapi import APIRouter

from billfold.pages.billing import overview

router = APIRouter(include_in_schema=False)
for _module in (overview,):
    router.include_router(_module.router)
