"""The shapes Billfold answers with, as TypedDicts (camelCase keys, as on the wire)."""

from __future__ import annotations

from typing import Any, TypedDict

JSON = dict[str, Any]


class Consumed(TypedDict):
    transactionId: str
    amount: int
    balance: int
    replayed: bool


class Balance(TypedDict):
    customerId: str
    balance: int


class Transaction(TypedDict):
    id: str
    entryNo: int
    amount: int
    balanceAfter: int
    kind: str
    reason: str | None
    referenceId: str | None
    createdAt: str


class TransactionsPage(TypedDict):
    transactions: list[Transaction]
    nextCursor: int | None


class Entitlement(TypedDict):
    feature: str
    kind: str | None
    allowed: bool
    reason: str | None
    limit: int | None
    balance: int | None
    amount: int
    remaining: int | None


class EntitlementCheck(Entitlement):
    customerId: str
    plan: str | None
    status: str | None


class Entitlements(TypedDict):
    customerId: str
    plan: str | None
    status: str | None
    active: bool
    entitlements: list[Entitlement]


class WebhookEndpoint(TypedDict):
    id: str
    url: str
    description: str | None
    eventTypes: list[str] | None
    enabled: bool
    disabledReason: str | None
    failingSince: str | None
    previousSecretExpiresAt: str | None
    createdAt: str
    updatedAt: str


class WebhookEndpointWithSecret(WebhookEndpoint):
    secret: str


class Delivery(TypedDict):
    id: str
    endpointId: str
    eventId: str
    eventType: str
    customerId: str | None
    status: str
    attempts: int
    nextAttemptAt: str | None
    lastAttemptAt: str | None
    lastStatusCode: int | None
    lastError: str | None
    deliveredAt: str | None
    createdAt: str


class DeliveriesPage(TypedDict):
    deliveries: list[Delivery]
    nextCursor: str | None


class WebhookEvent(TypedDict):
    """A verified outbound webhook: its `webhook-id`, type, time and data."""

    id: str
    type: str
    timestamp: str
    data: JSON
