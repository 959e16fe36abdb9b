"""Structured logging set-up and the Prometheus metrics Billfold exports at /metrics."""

from __future__ import annotations

import logging

import structlog
from prometheus_client import Counter, Gauge, Histogram

STRIPE_CALLS = Counter(
    "billfold_stripe_calls_total",
    "Stripe API calls by operation and outcome",
    ["operation", "outcome"],
)
STRIPE_LATENCY = Histogram("billfold_stripe_call_seconds", "Stripe API call latency", ["operation"])
CUSTOMER_LINKS = Counter(
    "billfold_customer_creations_total", "Stripe customer creations by outcome", ["outcome"]
)
PAYMENT_OUTCOMES = Counter(
    "billfold_payment_outcomes_total",
    "Payment outcomes recorded (succeeded, declined, requires_action, canceled)",
    ["outcome"],
)
REFUNDS = Counter("billfold_refunds_total", "Refunds by final status", ["status"])
REFUNDED_AMOUNT = Counter(
    "billfold_refunded_minor_units_total", "Refunded money in minor units", ["currency"]
)
JOB_RESULTS = Counter(
    "billfold_job_results_total", "Job tries by kind and result", ["kind", "result"]
)
JOB_QUEUE_DEPTH = Gauge("billfold_job_queue_depth", "Jobs per state", ["status"])
WEBHOOK_EVENTS = Counter(
    "billfold_webhook_events_total",
    "Stripe events received by type and outcome",
    ["type", "outcome"],
)
WEBHOOK_LAG = Histogram(
    "billfold_webhook_lag_seconds",
    "Seconds from a Stripe event's creation to its processing",
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600),
)


def configure_logging(json: bool = False, level: int = logging.INFO) -> None:
    """structlog to stderr: key=value for people, JSON lines for machines."""
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )
