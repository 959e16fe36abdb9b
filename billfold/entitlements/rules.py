"""The entitlement rules, pure: a flag is on or off, a limit caps a quantity, credits are
metered by the balance. Tested without a database."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

# The metered feature: paid for per use from the credits balance.
CREDITS = "credits"

Kind = Literal["flag", "limit", "metered"]


@dataclass(frozen=True)
class Entitlement:
    feature: str
    kind: Kind | None  # None: no such feature in the plan
    allowed: bool
    reason: str | None  # why not, when not allowed
    limit: int | None  # a limit's cap
    balance: int | None  # metered: the credits balance now
    amount: int  # what was asked for (1 unless given)
    remaining: int | None  # what is left after `amount` (limits and credits)


def decide(
    feature: str,
    amount: int,
    *,
    features: dict[str, Any],
    plan_active: bool,
    balance: int,
) -> Entitlement:
    """May `amount` of `feature` be used? `features` is the plan's {"flags", "limits"}."""
    if feature == CREDITS:
        left = balance - amount
        reason = None if left >= 0 else "insufficient_credits"
        return Entitlement(feature, "metered", left >= 0, reason, None, balance, amount, left)
    flags: dict[str, Any] = features.get("flags") or {}
    limits: dict[str, Any] = features.get("limits") or {}
    if feature in flags:
        on = bool(flags[feature]) and plan_active
        why = None if on else ("subscription_inactive" if not plan_active else "not_in_plan")
        return Entitlement(feature, "flag", on, why, None, None, amount, None)
    if feature in limits:
        cap = int(limits[feature])
        left = cap - amount
        if not plan_active:
            return Entitlement(
                feature, "limit", False, "subscription_inactive", cap, None, amount, None
            )
        reason = None if left >= 0 else "limit_reached"
        return Entitlement(feature, "limit", left >= 0, reason, cap, None, amount, left)
    return Entitlement(feature, None, False, "not_in_plan", None, None, amount, None)


def every(features: dict[str, Any], *, plan_active: bool, balance: int) -> list[Entitlement]:
    """Every flag and limit of the plan, and credits, each as asked for once."""
    names = [*(features.get("flags") or {}), *(features.get("limits") or {}), CREDITS]
    return [
        decide(name, 0, features=features, plan_active=plan_active, balance=balance)
        for name in names
    ]
