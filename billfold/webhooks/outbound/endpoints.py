"""The host's webhook endpoints: add, list, change, remove, rotate the secret; the delivery
log and redelivery."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from billfold.config import Settings
from billfold.kit import audit
from billfold.kit.db import new_id, utcnow
from billfold.kit.errors import InvalidInput, NotFound
from billfold.services import Services
from billfold.webhooks.outbound import batches
from billfold.webhooks.outbound.catalog import EVENT_TYPES
from billfold.webhooks.outbound.events import schedule
from billfold.webhooks.outbound.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from billfold.webhooks.outbound.secrets import SecretBox, new_signing_secret
from billfold.webhooks.outbound.urls import CheckedUrl, check_url


@dataclass(frozen=True)
class CreatedEndpoint:
    endpoint: WebhookEndpoint
    secret: str  # shown once, at creation (and at each rotation)


def _event_types(event_types: Sequence[str] | None) -> list[str] | None:
    if event_types is None:
        return None
    unknown = sorted(set(event_types) - EVENT_TYPES.keys())
    if unknown:
        raise InvalidInput(
            "Unknown event type(s): " + ", ".join(unknown), code="unknown_event_type"
        )
    if not event_types:
        raise InvalidInput(
            "Give at least one event type, or leave eventTypes out for all",
            code="unknown_event_type",
        )
    return sorted(set(event_types))


def add(
    services: Services,
    *,
    url: str,
    event_types: Sequence[str] | None,
    description: str | None,
    actor: str,
) -> CreatedEndpoint:
    """`create` for a request or command: the URL is checked (a DNS lookup) before its
    transaction opens."""
    checked = check_url(url, services.settings.webhook_allow_private_urls)
    with services.db.transaction() as session:
        return create(
            session,
            services.settings,
            url=checked,
            event_types=event_types,
            description=description,
            actor=actor,
        )


def create(
    session: Session,
    settings: Settings,
    *,
    url: CheckedUrl,
    event_types: Sequence[str] | None,
    description: str | None,
    actor: str,
) -> CreatedEndpoint:
    endpoint_id = new_id("whe")
    plaintext = new_signing_secret()
    endpoint = WebhookEndpoint(
        id=endpoint_id,
        url=url,
        description=description,
        event_types=_event_types(event_types),
        enabled=True,
        secret_encrypted=SecretBox.from_settings(settings).seal(plaintext, endpoint_id),
    )
    session.add(endpoint)
    session.flush()
    audit.record(session, actor, "webhook_endpoint.create", endpoint_id, url=url)
    return CreatedEndpoint(endpoint, plaintext)


def get(session: Session, endpoint_id: str) -> WebhookEndpoint:
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None:
        raise NotFound("No such webhook endpoint")
    return endpoint


def list_endpoints(session: Session) -> list[WebhookEndpoint]:
    return list(session.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.created_at)))


@dataclass(frozen=True)
class EndpointChanges:
    url: CheckedUrl | None = None  # a new URL comes through `change`, which checks it
    description: str | None = None
    # `all_event_types` clears the filter; `event_types` sets it.
    event_types: Sequence[str] | None = None
    all_event_types: bool = False
    enabled: bool | None = None


def change(
    services: Services,
    endpoint_id: str,
    changes: EndpointChanges,
    actor: str,
    *,
    url: str | None = None,
) -> WebhookEndpoint:
    """`update` for a request or command, with a new `url` checked (a DNS lookup) before its
    transaction opens."""
    if url is not None:
        changes = replace(changes, url=check_url(url, services.settings.webhook_allow_private_urls))
    with services.db.transaction() as session:
        return update(session, endpoint_id, changes, actor)


def update(
    session: Session, endpoint_id: str, changes: EndpointChanges, actor: str
) -> WebhookEndpoint:
    endpoint = get(session, endpoint_id)
    if changes.url is not None:
        endpoint.url = changes.url
    if changes.description is not None:
        endpoint.description = changes.description or None
    if changes.all_event_types:
        endpoint.event_types = None
    elif changes.event_types is not None:
        endpoint.event_types = _event_types(changes.event_types)
    if changes.enabled is not None and changes.enabled != endpoint.enabled:
        endpoint.enabled = changes.enabled
        endpoint.disabled_reason = None if changes.enabled else f"disabled by {actor}"
        endpoint.failing_since = None
        if changes.enabled:
            batches.resume(session, endpoint_id)
    session.flush()
    audit.record(session, actor, "webhook_endpoint.update", endpoint_id)
    return endpoint


def delete(session: Session, endpoint_id: str, actor: str) -> None:
    endpoint = get(session, endpoint_id)
    session.query(WebhookDelivery).filter(WebhookDelivery.endpoint_id == endpoint_id).delete()
    session.delete(endpoint)
    session.flush()
    audit.record(session, actor, "webhook_endpoint.delete", endpoint_id)


def rotate_secret(
    session: Session, settings: Settings, endpoint_id: str, actor: str
) -> CreatedEndpoint:
    """A new secret signs from now on; the old one signs too for WEBHOOK_SECRET_OVERLAP_HOURS,
    so every delivery carries two signatures while the receiver switches."""
    endpoint = get(session, endpoint_id)
    box = SecretBox.from_settings(settings)
    old = box.open(endpoint.secret_encrypted, endpoint.id)
    plaintext = new_signing_secret()
    endpoint.previous_secret_encrypted = box.seal(old, endpoint.id)
    endpoint.previous_secret_expires_at = utcnow() + timedelta(
        hours=settings.webhook_secret_overlap_hours
    )
    endpoint.secret_encrypted = box.seal(plaintext, endpoint.id)
    session.flush()
    audit.record(session, actor, "webhook_endpoint.rotate_secret", endpoint_id)
    return CreatedEndpoint(endpoint, plaintext)


@dataclass(frozen=True)
class DeliveryView:
    delivery: WebhookDelivery
    event_id: str
    event_type: str


def deliveries(
    session: Session, endpoint_id: str, *, before: datetime | None, limit: int
) -> list[DeliveryView]:
    """The endpoint's delivery log, newest first; `before` pages on."""
    get(session, endpoint_id)
    query = (
        select(WebhookDelivery, WebhookEvent.id, WebhookEvent.type)
        .join(WebhookEvent, WebhookEvent.seq == WebhookDelivery.event_seq)
        .where(WebhookDelivery.endpoint_id == endpoint_id)
        .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
        .limit(limit)
    )
    if before is not None:
        query = query.where(WebhookDelivery.created_at < before)
    return [
        DeliveryView(d, event_id, event_type) for d, event_id, event_type in session.execute(query)
    ]


def redeliver(session: Session, endpoint_id: str, delivery_id: str, actor: str) -> DeliveryView:
    """Send a delivery's event again (same `webhook-id`), as a new delivery in the log.

    A manual redelivery is out of band (as in Standard Webhooks' Svix): a new attempt of that
    message, sent as soon as it can be, outside its customer's line: it neither waits behind
    the customer's pending deliveries nor holds them back, even while it fails and is retried
    (so it carries no customer: the customer's order is kept among the normal deliveries)."""
    endpoint = get(session, endpoint_id)
    found = session.execute(
        select(WebhookDelivery, WebhookEvent.id, WebhookEvent.type)
        .join(WebhookEvent, WebhookEvent.seq == WebhookDelivery.event_seq)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.endpoint_id == endpoint.id)
    ).one_or_none()
    if found is None:
        raise NotFound("No such delivery")
    original, event_id, event_type = found
    (new_id_,) = schedule(session, [endpoint.id], original.event_seq, None)
    audit.record(session, actor, "webhook_delivery.redeliver", new_id_, original=delivery_id)
    created = session.get(WebhookDelivery, new_id_)
    assert created is not None
    return DeliveryView(created, event_id, event_type)
