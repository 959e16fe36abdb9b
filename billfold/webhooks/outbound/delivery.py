"""The `webhooks.deliver` job: sign one event with the `standardwebhooks` library and POST it.

Only a 2xx answer counts as delivered. A failed try is recorded on the delivery and the job
waits (`Defer`) for the next step of WEBHOOK_RETRY_SCHEDULE, jittered, or longer when a 429 or
5xx answer asks so with Retry-After; after the last step the delivery is `failed`. A 410 Gone
disables the endpoint. An endpoint that has failed for WEBHOOK_DISABLE_AFTER_HOURS is
disabled and the admins are e-mailed. One customer's events reach an endpoint in the order
they were written: a delivery waits while an earlier one for the same customer is pending.

Delivery is at least once: a worker killed after the receiver answered but before the
outcome was recorded sends again, with the same `webhook-id`.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from standardwebhooks.webhooks import Webhook

from billfold.auth.models import Role, User
from billfold.config import Settings
from billfold.jobs.models import Job, JobStatus
from billfold.jobs.worker import Defer, PermanentJobError
from billfold.kit.db import utcnow
from billfold.kit.errors import BillfoldError
from billfold.mail.outbox import queue_mail
from billfold.services import Services
from billfold.webhooks.outbound.models import (
    DeliveryStatus,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from billfold.webhooks.outbound.secrets import SecretBox
from billfold.webhooks.outbound.urls import check_url

log = structlog.get_logger("billfold.webhooks.outbound")

# A delivery waiting for an earlier one of the same customer is woken when that one settles;
# this is only the safety net, counted from the earlier one's next try.
_ORDER_RECHECK = timedelta(seconds=2)
_MAX_RETRY_AFTER = timedelta(hours=24)


@dataclass(frozen=True)
class _Prepared:
    url: str
    body: str
    headers: dict[str, str]


def deliver_job(services: Services, payload: dict[str, Any]) -> None:
    delivery_id = payload["delivery_id"]
    settings = services.settings
    with services.db.transaction() as session:
        prepared = _prepare(session, settings, delivery_id)
    if prepared is None:
        return
    now = utcnow()
    try:
        check_url(prepared.url, settings.webhook_allow_private_urls)  # DNS may have changed
    except BillfoldError as exc:
        with services.db.transaction() as session:
            _record(session, settings, delivery_id, now, None, exc.message, final=True)
        return
    status, error, retry_after = _post(services.webhook_http, prepared)
    with services.db.transaction() as session:
        next_at = _record(session, settings, delivery_id, now, status, error, retry_after)
    if next_at is not None:
        raise Defer(next_at, f"delivery {delivery_id}: {error}")


def _prepare(session: Session, settings: Settings, delivery_id: str) -> _Prepared | None:
    found = session.execute(
        select(WebhookDelivery, WebhookEndpoint, WebhookEvent)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .join(WebhookEvent, WebhookEvent.seq == WebhookDelivery.event_seq)
        .where(WebhookDelivery.id == delivery_id)
    ).one_or_none()
    if found is None:
        raise PermanentJobError(f"no webhook delivery {delivery_id} (endpoint deleted?)")
    delivery, endpoint, event = found
    if delivery.status != DeliveryStatus.PENDING:
        return None
    now = utcnow()
    if not endpoint.enabled:
        delivery.status = DeliveryStatus.FAILED
        delivery.last_error = "endpoint disabled"
        delivery.next_attempt_at = None
        _wake_next(session, delivery)
        return None
    if delivery.next_attempt_at is not None and delivery.next_attempt_at > now:
        # A try was recorded but its job was not put back (the worker died in between).
        raise Defer(delivery.next_attempt_at, "not yet due")
    if delivery.customer_id is not None:
        earlier = session.execute(
            select(WebhookDelivery.id, WebhookDelivery.next_attempt_at)
            .where(
                WebhookDelivery.endpoint_id == delivery.endpoint_id,
                WebhookDelivery.customer_id == delivery.customer_id,
                WebhookDelivery.status == DeliveryStatus.PENDING,
                WebhookDelivery.event_seq < delivery.event_seq,
            )
            .order_by(WebhookDelivery.event_seq)
            .limit(1)
        ).one_or_none()
        if earlier is not None:
            wait_until = max(earlier.next_attempt_at or now, now) + _ORDER_RECHECK
            raise Defer(wait_until, "an earlier event for this customer is not delivered yet")
    body = json.dumps(
        {"type": event.type, "timestamp": event.created_at.isoformat(), "data": event.data},
        separators=(",", ":"),
    )
    box = SecretBox.from_settings(settings)
    secrets = [box.open(endpoint.secret_encrypted, endpoint.id)]
    if (
        endpoint.previous_secret_encrypted is not None
        and endpoint.previous_secret_expires_at is not None
        and endpoint.previous_secret_expires_at > now
    ):
        secrets.append(box.open(endpoint.previous_secret_encrypted, endpoint.id))
    signatures = " ".join(Webhook(s).sign(event.id, now, body) for s in secrets)
    headers = {
        "content-type": "application/json",
        "user-agent": "Billfold-Webhooks/1",
        "webhook-id": event.id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signatures,
    }
    return _Prepared(endpoint.url, body, headers)


def _post(client: httpx.Client, prepared: _Prepared) -> tuple[int | None, str | None, float | None]:
    """(status code, error, Retry-After seconds) of one try; a 2xx has no error."""
    try:
        response = client.post(prepared.url, content=prepared.body, headers=prepared.headers)
    except httpx.TimeoutException:
        return None, "timed out", None
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:500], None
    if 200 <= response.status_code < 300:
        return response.status_code, None, None
    retry_after = None
    if response.status_code == 429 or response.status_code >= 500:
        retry_after = _retry_after(response.headers.get("retry-after"))
    return response.status_code, f"HTTP {response.status_code}", retry_after


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - utcnow()).total_seconds())


def _record(
    session: Session,
    settings: Settings,
    delivery_id: str,
    tried_at: datetime,
    status: int | None,
    error: str | None,
    retry_after: float | None = None,
    *,
    final: bool = False,
) -> datetime | None:
    """Record one try; answers when to try again, or None when the delivery is settled."""
    delivery = session.get(WebhookDelivery, delivery_id, with_for_update=True)
    if delivery is None or delivery.status != DeliveryStatus.PENDING:
        return None
    endpoint = session.get(WebhookEndpoint, delivery.endpoint_id)
    assert endpoint is not None
    delivery.attempts += 1
    delivery.last_attempt_at = tried_at
    delivery.last_status_code = status
    delivery.last_error = error
    if error is None:
        delivery.status = DeliveryStatus.DELIVERED
        delivery.delivered_at = utcnow()
        delivery.next_attempt_at = None
        if endpoint.failing_since is not None:
            endpoint.failing_since = None
        _wake_next(session, delivery)
        return None
    log.info("webhook.delivery_failed", delivery_id=delivery_id, status=status, error=error)
    if status == 410:
        _disable(session, endpoint, "the endpoint answered 410 Gone")
        final = True
    if endpoint.failing_since is None:
        endpoint.failing_since = tried_at
    elif tried_at - endpoint.failing_since >= timedelta(hours=settings.webhook_disable_after_hours):
        _disable(session, endpoint, f"failing since {endpoint.failing_since.isoformat()}")
        final = True
    delays = settings.webhook_retry_delays
    if final or delivery.attempts > len(delays):
        delivery.status = DeliveryStatus.FAILED
        delivery.next_attempt_at = None
        _wake_next(session, delivery)
        return None
    wait = timedelta(seconds=delays[delivery.attempts - 1] * random.uniform(0.9, 1.1))
    if retry_after is not None:
        wait = max(wait, min(timedelta(seconds=retry_after), _MAX_RETRY_AFTER))
    delivery.next_attempt_at = utcnow() + wait
    return delivery.next_attempt_at


def _wake_next(session: Session, settled: WebhookDelivery) -> None:
    """The next pending delivery of the same customer to the same endpoint may go now."""
    if settled.customer_id is None:
        return
    next_job = session.scalar(
        select(WebhookDelivery.job_id)
        .where(
            WebhookDelivery.endpoint_id == settled.endpoint_id,
            WebhookDelivery.customer_id == settled.customer_id,
            WebhookDelivery.status == DeliveryStatus.PENDING,
            WebhookDelivery.event_seq > settled.event_seq,
        )
        .order_by(WebhookDelivery.event_seq)
        .limit(1)
    )
    if next_job is not None:
        session.execute(
            update(Job)
            .where(Job.id == next_job, Job.status == JobStatus.PENDING)
            .values(run_at=utcnow())
        )


def _disable(session: Session, endpoint: WebhookEndpoint, reason: str) -> None:
    if not endpoint.enabled:
        return
    endpoint.enabled = False
    endpoint.disabled_reason = reason
    log.warning("webhook.endpoint_disabled", endpoint_id=endpoint.id, reason=reason)
    admins = session.scalars(
        select(User.email).where(User.role == Role.ADMIN, User.deleted_at.is_(None))
    )
    for email in admins:
        queue_mail(
            session,
            to=email,
            subject="Billfold disabled a webhook endpoint",
            body=(
                f"The webhook endpoint {endpoint.id} ({endpoint.url}) was disabled: {reason}.\n"
                "Events for it are no longer sent. Fix the receiver, then enable the endpoint "
                f"again (PATCH /webhook-endpoints/{endpoint.id} with enabled=true) and "
                "redeliver what it missed from its delivery log.\n"
            ),
            kind="webhook_endpoint_disabled",
            dedupe_key=f"webhook-disabled:{endpoint.id}:{utcnow().isoformat()}:{email}",
        )
