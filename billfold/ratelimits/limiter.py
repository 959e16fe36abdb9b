"""Rate limits per client address, per credential and per e-mail, counted in the database.

A rule is a `limits` string ("10/minute;100/hour"). Each hit is counted against a
fixed-window counter shared by every server process (`DatabaseStorage`). A rule that allows
many requests (consume, entitlement checks) leases its hits in blocks: a process takes
`lease` hits from the shared counter in one upsert and hands them out from memory until the
block or the window runs out, so the counters cost one database round trip per block, not
one per request. A process can hold at most one unspent block per counter, so the limit is
never exceeded; it may refuse at most `lease - 1` requests per process too early.
"""

from __future__ import annotations

import hmac
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from limits import RateLimitItem, parse_many

from billfold.kit.errors import BillfoldError
from billfold.ratelimits.storage import DatabaseStorage

PURGE_EVERY_SECONDS = 600.0


@dataclass(frozen=True)
class Rule:
    """A named set of limits; `lease` hits are taken from the shared counter at a time."""

    name: str
    limits: tuple[RateLimitItem, ...]
    lease: int = 1

    @classmethod
    def parse(cls, name: str, text: str, *, leased: bool = False) -> Rule:
        items = tuple(parse_many(text))
        # Leasing a hundredth of the smallest limit keeps the early-refusal slack at 1 %.
        lease = max(1, min(i.amount for i in items) // 100) if leased else 1
        return cls(name, items, lease)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_at: float  # seconds since the epoch
    window: int  # seconds

    def headers(self) -> dict[str, str]:
        """IETF `RateLimit-*` fields (draft-ietf-httpapi-ratelimit-headers), and Retry-After."""
        reset = max(0, math.ceil(self.reset_at - time.time()))
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(reset),
            "RateLimit-Policy": f"{self.limit};w={self.window}",
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, reset))
        return headers


class RateLimited(BillfoldError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, decision: Decision) -> None:
        super().__init__("Too many requests; try again later", retry_after=_retry(decision))
        self.headers = decision.headers()


def _retry(decision: Decision) -> int:
    return max(1, math.ceil(decision.reset_at - time.time()))


def strictest(decisions: Sequence[Decision]) -> Decision:
    """The decision that tells the caller most: the longest refusal, else the least left."""
    refused = [d for d in decisions if not d.allowed]
    if refused:
        return max(refused, key=lambda d: d.reset_at)
    return min(decisions, key=lambda d: d.remaining)


@dataclass
class _Lease:
    ends_at: float
    left: int
    # What the shared counter left when the block was taken, for RateLimit-Remaining.
    remaining_then: int


class Limiter:
    """Counts hits per (rule, scope, who); one per process, shared by its threads."""

    def __init__(self, storage: DatabaseStorage, secret: str, *, enabled: bool = True) -> None:
        self._storage = storage
        # Counter keys carry a keyed hash of who: the table holds no address, e-mail or token.
        self._secret = secret.encode()
        self.enabled = enabled
        self._leases: dict[str, _Lease] = {}
        self._lock = threading.Lock()
        self._purged_at = time.monotonic()

    def hit(self, rule: Rule, scope: str, who: str) -> Decision:
        """Count one request of `who` against every limit of `rule` (database I/O)."""
        if not self.enabled:
            return _unlimited(rule)
        decisions = []
        for item, key in self._keys(rule, scope, who):
            decisions.append(self._from_lease(rule, item, key) or self._take(rule, item, key))
        self._purge_now_and_then()
        return strictest(decisions)

    def hit_from_memory(self, rule: Rule, scope: str, who: str) -> Decision | None:
        """The same as `hit` when this process holds leased hits for every limit (no I/O);
        None when the shared counter must be asked."""
        if not self.enabled:
            return _unlimited(rule)
        if rule.lease == 1:
            return None
        keys = self._keys(rule, scope, who)
        now = time.time()
        with self._lock:
            leases = []
            for _, key in keys:
                lease = self._leases.get(key)
                if lease is None or lease.ends_at <= now or lease.left <= 0:
                    return None
                leases.append(lease)
            least: Decision | None = None  # every limit allows: the one with least left
            for (item, _), lease in zip(keys, leases, strict=True):
                lease.left -= 1
                remaining = lease.remaining_then + lease.left
                if least is None or remaining < least.remaining:
                    least = Decision(True, item.amount, remaining, lease.ends_at, item.get_expiry())
        return least

    def enforce(self, rule: Rule, scope: str, who: str) -> Decision:
        """`hit`, raising RateLimited (429) when a limit is exceeded."""
        decision = self.hit(rule, scope, who)
        if not decision.allowed:
            raise RateLimited(decision)
        return decision

    def _keys(self, rule: Rule, scope: str, who: str) -> list[tuple[RateLimitItem, str]]:
        # hmac.digest is OpenSSL's one-shot HMAC: the same bytes as hmac.new(…).digest(),
        # without building two hash objects in Python on every request.
        digest = hmac.digest(self._secret, who.encode(), "sha256").hex()[:32]
        return [
            (item, f"{rule.name}:{scope}:{digest}:{item.amount}/{item.get_expiry()}")
            for item in rule.limits
        ]

    def _from_lease(self, rule: Rule, item: RateLimitItem, key: str) -> Decision | None:
        if rule.lease == 1:
            return None
        with self._lock:
            lease = self._leases.get(key)
            if lease is None or lease.ends_at <= time.time() or lease.left <= 0:
                return None
            lease.left -= 1
            return Decision(
                True,
                item.amount,
                lease.remaining_then + lease.left,
                lease.ends_at,
                item.get_expiry(),
            )

    def _take(self, rule: Rule, item: RateLimitItem, key: str) -> Decision:
        count, ends_at = self._storage.hit(key, item.get_expiry(), rule.lease)
        # Of the block just counted, the hits that still fit under the limit are ours.
        granted = max(0, min(rule.lease, item.amount - (count - rule.lease)))
        remaining = max(0, item.amount - count)
        if granted == 0:
            return Decision(False, item.amount, 0, ends_at, item.get_expiry())
        if rule.lease > 1:
            with self._lock:
                self._leases[key] = _Lease(ends_at, granted - 1, remaining)
        return Decision(True, item.amount, remaining + granted - 1, ends_at, item.get_expiry())

    def _purge_now_and_then(self) -> None:
        if time.monotonic() - self._purged_at < PURGE_EVERY_SECONDS:
            return
        self._purged_at = time.monotonic()
        self._storage.purge_expired(older_than=60.0)
        with self._lock:
            now = time.time()
            self._leases = {k: v for k, v in self._leases.items() if v.ends_at > now}


def _unlimited(rule: Rule) -> Decision:
    item = rule.limits[0]
    return Decision(True, item.amount, item.amount, time.time() + item.get_expiry(), 0)
