"""The wallet's pure rules, tested without a database: when a recharge is due, how much it
must bring, which package fits, and how many credits a refund takes back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class RechargePolicy:
    enabled: bool
    threshold: int | None
    in_flight: bool
    paused_until: datetime | None


def recharge_due(balance: int, policy: RechargePolicy, now: datetime) -> bool:
    """A debit that leaves the balance below the threshold starts a recharge, unless one is
    already under way or a daily cap paused them."""
    if not policy.enabled or policy.threshold is None or policy.in_flight:
        return False
    if policy.paused_until is not None and now < policy.paused_until:
        return False
    return balance < policy.threshold


def credits_needed(balance: int, threshold: int, configured: int) -> int:
    """One charge closes the whole gap: at least the configured amount, and at least enough
    to bring the balance back up to the threshold."""
    return max(configured, threshold - balance, 1)


@dataclass(frozen=True)
class PackageOption:
    id: str
    credits: int
    price: int


def choose_package(packages: Sequence[PackageOption], needed: int) -> PackageOption | None:
    """The smallest package that covers `needed` (cheapest per credit on a tie); if none
    covers it, the largest. None when there is no package at all."""
    if not packages:
        return None
    covering = [p for p in packages if p.credits >= needed]
    if covering:
        return min(covering, key=lambda p: (p.credits, p.price * 10**9 // p.credits, p.id))
    return max(packages, key=lambda p: (p.credits, -p.price, p.id))


def clawback(granted: int, paid: int, refunded_total: int, clawed_back: int, balance: int) -> int:
    """Credits to take back after refunds totalling `refunded_total` of a purchase that
    granted `granted` credits for `paid`: the refunded share, less what was taken back
    already, and never more than is left unspent."""
    if paid <= 0 or granted <= 0:
        return 0
    share = granted * min(refunded_total, paid) // paid
    return max(0, min(share - clawed_back, balance))
