"""All console page routes, gathered on one router."""

from __future__ import annotations

from fastapi import APIRouter

from billfold.pages.admin import (
    catalog,
    customers,
    dashboard,
    money,
    operations,
    webhook_endpoints,
)

router = APIRouter(include_in_schema=False)
for _module in (dashboard, customers, money, operations, webhook_endpoints, catalog):
    router.include_router(_module.router)
