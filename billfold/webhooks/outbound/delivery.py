"""The `webhooks.deliver` job: send the endpoint's due deliveries in batches, each signed with
the `standardwebhooks` library and POSTed over its sender thread's kept-alive client.

A batch (see batches.py) is claimed in one transaction, sent, and recorded in one more. Its
customers' deliveries go out at once over up to WEBHOOK_BATCH_CONCURRENCY connections, each
customer's one after another in the order they were written; a customer's failed try stops
that customer's later ones in the batch. Only a 2xx answer counts as delivered. A failed try
waits for the next step of WEBHOOK_RETRY_SCHEDULE, jittered, or longer when a 429 or 5xx
answer asks so with Retry-After; after the last step the delivery is `failed`. A 410 Gone
disables the endpoint. An endpoint that has failed for WEBHOOK_DISABLE_AFTER_HOURS is disabled
and the admins are e-mailed.

Every try ends inside its batch's lease (see send_due), and a batch still sending records
what it has settled every FLUSH_EVERY seconds. Delivery is at least once: a worker killed
after the receiver answered but before that was recorded sends again when the batch's lease
ends, with the same `webhook-id`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import wait
from datetime import timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from billfold.jobs.worker import Defer, PermanentJobError
from billfold.kit.db import utcnow
from billfold.kit.deadline_http import deadline
from billfold.kit.errors import BillfoldError
from billfold.services import Services
from billfold.webhooks.outbound import batches
from billfold.webhooks.outbound.batches import Batch, Claimed, Outcome
from billfold.webhooks.outbound.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from billfold.webhooks.outbound.urls import check_url


def deliver_job(services: Services, payload: dict[str, Any]) -> None:
    delivery_id = payload["delivery_id"]
    with services.db.transaction() as session:
        found = session.execute(
            select(
                WebhookDelivery.endpoint_id,
                WebhookDelivery.status,
                WebhookDelivery.leased_until,
                WebhookEndpoint.enabled,
            )
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
            .where(WebhookDelivery.id == delivery_id)
        ).one_or_none()
    if found is None:
        raise PermanentJobError(f"no webhook delivery {delivery_id} (endpoint deleted?)")
    if found.status != DeliveryStatus.PENDING:
        return
    if not found.enabled:
        # Paused: enabling the endpoint makes this job due at once (batches.resume); the
        # late look is only a safety net.
        raise Defer(utcnow() + DISABLED_RECHECK, f"delivery {delivery_id}: endpoint disabled")
    if found.leased_until is not None and found.leased_until > utcnow():
        # A batch holds it, and that batch's job goes on with the endpoint's other due
        # deliveries: this job is only the safety net if that worker dies.
        raise Defer(found.leased_until, f"delivery {delivery_id}: a batch is sending it")
    send_due(services, found.endpoint_id)
    with services.db.transaction() as session:
        again = batches.look_again_at(session, delivery_id)
    if again is not None:
        until, reason = again
        raise Defer(until, f"delivery {delivery_id}: {reason}")


# A disabled endpoint's delivery jobs look again this late (enabling it wakes them at once).
DISABLED_RECHECK = timedelta(hours=1)
# A batch still sending records what it has learnt this often, so that what it settled is
# not sent again should its worker die or its lease end before the batch is over.
FLUSH_EVERY = 1.0


def send_due(services: Services, endpoint_id: str) -> int:
    """Send the endpoint's due deliveries, batch after batch; answers how many were tried.

    Each batch starts tries for at most WEBHOOK_TIMEOUT_SECONDS, each try ends within that
    timeout (kit/deadline_http.py keeps it), and the batch's lease covers both plus a margin
    for the record: every try ends, and is recorded, inside the lease. No batch is started
    whose lease would outlive the job's (unless the job's lease is too short for even one:
    then one)."""
    settings = services.settings
    timeout = timedelta(seconds=settings.webhook_timeout_seconds)
    job_ends = utcnow() + timedelta(seconds=settings.job_lease_seconds) * 0.9
    tried = 0
    ran = 0
    while True:
        send_by = utcnow() + timeout
        leased_until = send_by + timeout + batches.record_margin(timeout)
        if ran and leased_until > job_ends:
            return tried  # the job's next run (or another job) goes on
        with services.db.transaction() as session:
            batch = batches.claim(
                session,
                settings,
                endpoint_id,
                limit=settings.webhook_batch_size,
                send_by=send_by,
                leased_until=leased_until,
            )
        if batch is None:
            return tried
        ran += 1

        def flush(known: dict[str, Outcome], batch: Batch = batch) -> None:
            with services.db.transaction() as session:
                batches.record(session, settings, batch, known, final=False)

        outcomes = send_batch(services, batch, flush)
        with services.db.transaction() as session:
            batches.record(session, settings, batch, outcomes)
        tried += len(outcomes)


def send_batch(
    services: Services,
    batch: Batch,
    flush: Callable[[dict[str, Outcome]], None] | None = None,
) -> dict[str, Outcome]:
    """Try each delivery of the batch; a delivery missing from the answer was not tried.
    Customers' deliveries go side by side on the process's sender threads (shared by all the
    batches it runs, so their connections stay within WEBHOOK_SEND_CONCURRENCY). While some
    are still going, `flush` gets what is known every FLUSH_EVERY seconds."""
    settings, clients = services.settings, services.webhook_http
    try:
        check_url(batch.url, settings.webhook_allow_private_urls)  # DNS may have changed
    except BillfoldError as exc:
        now = utcnow()
        return {
            d.delivery_id: Outcome(now, None, exc.message, final=True) for d in batch.deliveries
        }
    lanes: dict[str, list[Claimed]] = {}
    for claimed in batch.deliveries:
        lane = claimed.customer_id if claimed.customer_id is not None else claimed.delivery_id
        lanes.setdefault(lane, []).append(claimed)
    signers = [Webhook(secret) for secret in batch.secrets]
    timeout = settings.webhook_timeout_seconds
    outcomes: dict[str, Outcome] = {}
    known = threading.Lock()
    gone = threading.Event()

    def send_lane(lane: list[Claimed]) -> None:
        for claimed in lane:
            # No try starts past `send_by`: it would end past the lease.
            if gone.is_set() or utcnow() >= batch.send_by:
                return
            outcome = _try(clients.get(), batch.url, signers, claimed, timeout)
            if outcome is None:
                return
            with known:
                outcomes[claimed.delivery_id] = outcome
            if outcome.status == 410:
                gone.set()
            if outcome.error is not None:
                return  # the customer's later events wait behind this one

    waiting = {services.webhook_senders.submit(send_lane, lane) for lane in lanes.values()}
    flushed = 0
    while waiting:
        done, waiting = wait(waiting, timeout=FLUSH_EVERY)
        for future in done:
            future.result()
        with known:
            so_far = dict(outcomes)
        if waiting and flush is not None and len(so_far) > flushed:
            flush(so_far)
            flushed = len(so_far)
    return outcomes


def _try(
    client: httpx.Client, url: str, signers: list[Webhook], claimed: Claimed, timeout: float
) -> Outcome | None:
    """One signed POST, over by `timeout` whatever the receiver does; None when it was never
    sent (no connection came free in time)."""
    now = utcnow()
    body = json.dumps(
        {
            "type": claimed.event_type,
            "timestamp": claimed.event_created_at.isoformat(),
            "data": claimed.data,
        },
        separators=(",", ":"),
    )
    headers = {
        "content-type": "application/json",
        "user-agent": "Billfold-Webhooks/1",
        "webhook-id": claimed.event_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": " ".join(s.sign(claimed.event_id, now, body) for s in signers),
    }
    try:
        with deadline(time.monotonic() + timeout):
            response = client.post(url, content=body, headers=headers)
    except httpx.PoolTimeout:
        return None
    except httpx.TimeoutException:
        return Outcome(now, None, "timed out")
    except httpx.HTTPError as exc:
        return Outcome(now, None, f"{type(exc).__name__}: {exc}"[:500])
    if 200 <= response.status_code < 300:
        return Outcome(now, response.status_code, None)
    retry_after = None
    if response.status_code == 429 or response.status_code >= 500:
        retry_after = _retry_after(response.headers.get("retry-after"))
    return Outcome(now, response.status_code, f"HTTP {response.status_code}", retry_after)


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
