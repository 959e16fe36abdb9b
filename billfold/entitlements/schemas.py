"""Request and answer shapes of the entitlement routes."""

from __future__ import annotations

from pydantic import Field

from billfold.kit.envelope import ApiModel, InputModel


class CheckIn(InputModel):
    customer_id: str = Field(min_length=1, max_length=40)
    feature: str = Field(min_length=1, max_length=100)
    # How much is wanted: credits to spend, or the quantity a limit must allow (default 1).
    amount: int = Field(default=1, strict=True, ge=0, le=10**12)


class EntitlementOut(ApiModel):
    feature: str
    kind: str | None
    allowed: bool
    reason: str | None
    limit: int | None
    balance: int | None
    amount: int
    remaining: int | None


class CheckOut(EntitlementOut):
    customer_id: str
    plan: str | None
    status: str | None


class EntitlementsOut(ApiModel):
    customer_id: str
    plan: str | None
    status: str | None
    active: bool
    entitlements: list[EntitlementOut]
