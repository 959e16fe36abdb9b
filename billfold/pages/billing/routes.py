"""All billing page routes, gathered on one router."""

from __future__ import annotations

from fastapi import APIRouter

from billfold.pages.billing import cards, credits, invoices, orders, overview, payments, plan

router = APIRouter(include_in_schema=False)
for _module in (overview, plan, cards, credits, orders, payments, invoices):
    router.include_router(_module.router)
