"""What every group of Stripe calls shares: the SDK client and one place for timing,
logging and error mapping."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TypeVar

import stripe
import structlog

from billfold.kit.observability import STRIPE_CALLS, STRIPE_LATENCY
from billfold.stripe_gateway.errors import map_error

log = structlog.get_logger("billfold.stripe")

T = TypeVar("T")


def idempotency_key(operation: str, *our_ids: str | int) -> str:
    """The deterministic Idempotency-Key of a mutating call, built from our IDs only."""
    return ":".join(["billfold", operation, *map(str, our_ids)])


def attempt_nonce() -> str:
    """The last part of a key for a call that is a new attempt each time and that nothing of
    ours counts (a new card form, a default card chosen again): with our IDs alone, Stripe
    would replay an earlier attempt's answer for 24 hours. Each use says why in a comment."""
    return uuid.uuid4().hex


class GatewayBase:
    _client: stripe.StripeClient

    def _call(self, operation: str, fn: Callable[[], T], **ids: str) -> T:
        started = time.perf_counter()
        try:
            result = fn()
        except stripe.StripeError as exc:
            mapped = map_error(exc)
            STRIPE_CALLS.labels(operation=operation, outcome=mapped.code).inc()
            log.warning(
                "stripe.call_failed",
                operation=operation,
                error=mapped.code,
                http_status=exc.http_status,
                stripe_request_id=exc.request_id,
                **ids,
            )
            raise mapped from exc
        finally:
            STRIPE_LATENCY.labels(operation=operation).observe(time.perf_counter() - started)
        STRIPE_CALLS.labels(operation=operation, outcome="ok").inc()
        stripe_id = getattr(result, "id", None)
        log.info("stripe.call", operation=operation, stripe_id=stripe_id, **ids)
        return result
