"""Imports every table so Alembic and the tests see the whole schema."""

from billfold.auth.models import AccountLink, ApiKey, User
from billfold.credits.models import (
    CreditAccount,
    CreditPackage,
    CreditPurchase,
    LedgerEntry,
)
from billfold.customers.models import Customer
from billfold.jobs.models import Job
from billfold.kit.audit import AuditEntry
from billfold.kit.idempotency import IdempotencyRecord
from billfold.mail.models import OutboxMail
from billfold.pages.models import SignInLink, WebSession
from billfold.payments.models import Order, OrderLine, Payment, Product, Refund, SavedCard
from billfold.ratelimits.models import RateLimitCounter
from billfold.subscriptions.dunning.models import DunningCase, DunningNotice
from billfold.subscriptions.models import (
    License,
    Plan,
    PlanPrice,
    ScheduledPlanChange,
    Subscription,
    SubscriptionRequest,
)
from billfold.webhooks.models import StripeEvent
from billfold.webhooks.outbound.models import WebhookDelivery, WebhookEndpoint, WebhookEvent

__all__ = [
    "AccountLink",
    "ApiKey",
    "AuditEntry",
    "CreditAccount",
    "CreditPackage",
    "CreditPurchase",
    "Customer",
    "DunningCase",
    "DunningNotice",
    "IdempotencyRecord",
    "Job",
    "LedgerEntry",
    "License",
    "Order",
    "OrderLine",
    "OutboxMail",
    "Payment",
    "Plan",
    "PlanPrice",
    "Product",
    "RateLimitCounter",
    "Refund",
    "SavedCard",
    "ScheduledPlanChange",
    "SignInLink",
    "StripeEvent",
    "Subscription",
    "SubscriptionRequest",
    "User",
    "WebSession",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEvent",
]
