"""An endpoint's due deliveries taken as one batch under a lease, and the batch's outcomes
recorded in one transaction: a few statements per batch instead of several transactions per
delivery, while each delivery keeps its guarantees.

- Order per customer: a delivery is taken only if no earlier pending delivery of the same
  customer to the endpoint is waiting for a retry or leased to another batch, and claims of
  one endpoint are serialised, so two batches never hold one customer's events at once.
- At least once: a claimed delivery carries the batch's token and lease; a worker killed
  mid-batch records nothing, and the delivery is claimed again when the lease ends (its job
  is due then), sent again with the same `webhook-id`.
- Each delivery keeps its durable job (written with the event): the job runs a batch when no
  batch took the delivery first, and is the timer of its next try. A batch moves the jobs of
  the deliveries it takes to its lease's end, and settles them with the deliveries.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple, cast

import structlog
from sqlalchemy import Row, Table, bindparam, func, or_, select, tuple_, update
from sqlalchemy.orm import Session

from billfold.auth.models import Role, User
from billfold.config import Settings
from billfold.jobs import wakeup
from billfold.jobs.models import Job, JobStatus
from billfold.kit.db import UTCDateTime, new_id, utcnow
from billfold.mail.outbox import queue_mail
from billfold.webhooks.outbound.models import (
    DeliveryStatus,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from billfold.webhooks.outbound.secrets import SecretBox

log = structlog.get_logger("billfold.webhooks.outbound")

_PENDING = DeliveryStatus.PENDING
# A delivery behind a customer's earlier one that a batch holds: its job sleeps this long past
# that batch's lease (the batches settle it first; if a worker died, the earlier delivery's
# job carries the customer's events on).
_FOLLOWER_PARK = timedelta(minutes=10)
# When a batch settles a customer's delivery, the next one's job is due this soon in case no
# batch takes it first (one normally does, at once).
_NEXT_IN_LANE = timedelta(seconds=5)
# A delivery waiting for an earlier one of its customer looks again this long after the
# earlier one's next try (or lease) ends.
ORDER_RECHECK = timedelta(seconds=2)
_MAX_RETRY_AFTER = timedelta(hours=24)


@dataclass(frozen=True)
class Claimed:
    delivery_id: str
    customer_id: str | None
    event_id: str
    event_type: str
    event_created_at: datetime
    data: dict[str, Any]


@dataclass(frozen=True)
class Batch:
    endpoint_id: str
    url: str
    secrets: tuple[str, ...]  # the secrets that sign (two during a rotation's overlap)
    token: str
    send_by: datetime  # no try starts later, so every try ends within the lease
    deliveries: tuple[Claimed, ...]  # in the order the events were written


@dataclass(frozen=True)
class Outcome:
    """One try: its time, the HTTP status (None: no answer) and the error (None: delivered)."""

    tried_at: datetime
    status: int | None
    error: str | None
    retry_after: float | None = None
    final: bool = False  # refused before sending (an unsafe URL): not retried


def claim(
    session: Session,
    settings: Settings,
    endpoint_id: str,
    *,
    limit: int,
    send_by: datetime,
    leased_until: datetime,
) -> Batch | None:
    """Lease up to `limit` due deliveries of the endpoint until `leased_until`; its tries
    start by `send_by`. None when none is due."""
    endpoint = session.scalars(
        select(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id)
        # One claim at a time per endpoint, or two batches could take one customer's
        # consecutive events. NO KEY UPDATE: transactions writing events are not held up.
        .with_for_update(key_share=True)
    ).one_or_none()
    if endpoint is None:
        return None
    if not endpoint.enabled:  # paused: its deliveries wait until it is enabled again
        return None
    now = utcnow()
    rows = _due(session, endpoint_id, now, limit)
    if not rows:
        return None
    token = new_id("wbl")
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id.in_([r.id for r in rows]))
        .values(lease_token=token, leased_until=leased_until)
        .execution_options(synchronize_session=False)
    )
    _move_jobs(session, [r.job_id for r in rows], leased_until)
    lanes = {r.customer_id for r in rows if r.customer_id is not None}
    if lanes:
        _park_followers(session, endpoint_id, lanes, token, leased_until)
    return Batch(
        endpoint_id=endpoint_id,
        url=endpoint.url,
        secrets=_secrets(settings, endpoint, now),
        token=token,
        send_by=send_by,
        deliveries=tuple(
            Claimed(r.id, r.customer_id, r.event_id, r.type, r.created_at, r.data) for r in rows
        ),
    )


def record_margin(timeout: timedelta) -> timedelta:
    """How long a batch's lease lasts past its last try's end: time for the record."""
    return min(timedelta(seconds=5), timeout)


class _DueRow(NamedTuple):
    id: str
    job_id: str | None
    customer_id: str | None
    event_id: str
    type: str
    created_at: datetime
    data: dict[str, Any]


# How many due deliveries one look at the queue reads (times the batch's size) while
# skipping held-back ones.
_DUE_CHUNK = 2


def _due(session: Session, endpoint_id: str, now: datetime, limit: int) -> list[_DueRow]:
    """Due, unleased deliveries no earlier delivery of their customer is holding back, in
    event order (so when one is taken, every earlier one of its customer is too).

    In plain steps, each an index walk whatever the planner's statistics: the customers held
    back (their first delivery waiting for a retry or leased to a batch), then the due
    deliveries in order, skipping those behind a held one. One statement with a correlated
    NOT EXISTS did the same, but on a table the planner had no statistics for yet (a fresh
    backlog before autovacuum's ANALYZE) PostgreSQL ran it as a nested loop over every pending
    row for each one: 9 s a claim with 3,000 pending, 130 s with 20,000."""
    d = WebhookDelivery
    blocked = dict(
        session.execute(
            select(d.customer_id, func.min(d.event_seq))
            .where(
                d.endpoint_id == endpoint_id,
                d.status == _PENDING,
                d.customer_id.is_not(None),
                or_(d.next_attempt_at > now, d.leased_until > now),
            )
            .group_by(d.customer_id)
        ).all()
    )
    chosen: list[Row[str, str | None, str | None, int]] = []
    after: tuple[int, str] = (-1, "")
    while len(chosen) < limit:
        chunk = session.execute(
            select(d.id, d.job_id, d.customer_id, d.event_seq)
            .where(
                d.endpoint_id == endpoint_id,
                d.status == _PENDING,
                tuple_(d.event_seq, d.id) > after,
                or_(d.next_attempt_at.is_(None), d.next_attempt_at <= now),
                or_(d.leased_until.is_(None), d.leased_until <= now),
            )
            .order_by(d.event_seq, d.id)
            .limit(_DUE_CHUNK * limit)
        ).all()
        for row in chunk:
            first_held = blocked.get(row.customer_id)
            if first_held is None or first_held > row.event_seq:
                chosen.append(row)
                if len(chosen) == limit:
                    break
        if len(chunk) < _DUE_CHUNK * limit:
            break
        after = (chunk[-1].event_seq, chunk[-1].id)
    if not chosen:
        return []
    events = {
        e.seq: e
        for e in session.execute(
            select(
                WebhookEvent.seq,
                WebhookEvent.id,
                WebhookEvent.type,
                WebhookEvent.created_at,
                WebhookEvent.data,
            ).where(WebhookEvent.seq.in_({r.event_seq for r in chosen}))
        )
    }
    return [
        _DueRow(
            r.id,
            r.job_id,
            r.customer_id,
            events[r.event_seq].id,
            events[r.event_seq].type,
            events[r.event_seq].created_at,
            events[r.event_seq].data,
        )
        for r in chosen
    ]


def _secrets(settings: Settings, endpoint: WebhookEndpoint, now: datetime) -> tuple[str, ...]:
    box = SecretBox.from_settings(settings)
    secrets = [box.open(endpoint.secret_encrypted, endpoint.id)]
    if (
        endpoint.previous_secret_encrypted is not None
        and endpoint.previous_secret_expires_at is not None
        and endpoint.previous_secret_expires_at > now
    ):
        secrets.append(box.open(endpoint.previous_secret_encrypted, endpoint.id))
    return tuple(secrets)


def _move_jobs(session: Session, job_ids: list[str | None], run_at: datetime) -> None:
    """The waiting jobs behind these deliveries run at `run_at` instead."""
    ids = [j for j in job_ids if j is not None]
    if ids:
        session.execute(
            update(Job)
            .where(Job.id.in_(ids), Job.status == JobStatus.PENDING)
            .values(run_at=run_at)
            .execution_options(synchronize_session=False)
        )


def _park_followers(
    session: Session, endpoint_id: str, lanes: set[str], token: str, leased_until: datetime
) -> None:
    """The jobs of these customers' later deliveries would only find them held back: they
    sleep while the batches carry the customers' events on (each is parked once, not per
    batch: a parked job's time is already past the next lease)."""
    # Two statements, not UPDATE … WHERE id IN (SELECT …): on a table not yet analysed,
    # PostgreSQL planned that one as a loop over every job (4 s with 3,000 pending).
    followers = session.scalars(
        select(WebhookDelivery.job_id).where(
            WebhookDelivery.endpoint_id == endpoint_id,
            WebhookDelivery.status == _PENDING,
            WebhookDelivery.customer_id.in_(lanes),
            or_(WebhookDelivery.lease_token.is_(None), WebhookDelivery.lease_token != token),
        )
    ).all()
    ids = [j for j in followers if j is not None]
    if ids:
        session.execute(
            update(Job)
            .where(Job.id.in_(ids), Job.status == JobStatus.PENDING, Job.run_at < leased_until)
            .values(run_at=leased_until + _FOLLOWER_PARK)
            .execution_options(synchronize_session=False)
        )


def _settle_jobs(session: Session, job_ids: list[str | None]) -> None:
    ids = [j for j in job_ids if j is not None]
    if ids:
        session.execute(
            update(Job)
            .where(Job.id.in_(ids), Job.status == JobStatus.PENDING)
            .values(status=JobStatus.DONE, finished_at=utcnow(), last_error=None)
            .execution_options(synchronize_session=False)
        )


def record(
    session: Session,
    settings: Settings,
    batch: Batch,
    outcomes: dict[str, Outcome],
    *,
    final: bool = True,
) -> None:
    """Record the batch's tries not yet recorded. At the batch's end (`final`), deliveries
    it did not try are let go (no try counted); before it (a flush while some customers'
    tries still go on) the rest stays leased."""
    endpoint = session.scalars(
        select(WebhookEndpoint)
        .where(WebhookEndpoint.id == batch.endpoint_id)
        .with_for_update(key_share=True)
    ).one_or_none()
    if endpoint is None:  # deleted meanwhile: its deliveries went with it
        return
    held = {
        row.id: row
        for row in session.execute(
            select(WebhookDelivery.id, WebhookDelivery.job_id, WebhookDelivery.customer_id)
            .where(
                WebhookDelivery.id.in_([c.delivery_id for c in batch.deliveries]),
                # Still ours: neither taken over after our lease nor recorded by a flush.
                WebhookDelivery.lease_token == batch.token,
                WebhookDelivery.status == _PENDING,
            )
            .with_for_update()
        )
    }
    tried = sorted(
        (c for c in batch.deliveries if c.delivery_id in outcomes and c.delivery_id in held),
        key=lambda c: outcomes[c.delivery_id].tried_at,
    )
    failed_ids = [c.delivery_id for c in tried if outcomes[c.delivery_id].error is not None]
    failed = (
        {
            d.id: d
            for d in session.scalars(
                select(WebhookDelivery).where(WebhookDelivery.id.in_(failed_ids))
            )
        }
        if failed_ids
        else {}
    )
    delivered: list[dict[str, Any]] = []
    settled: list[tuple[str | None, str | None]] = []  # (job, customer)
    retried: list[WebhookDelivery] = []
    for claimed in tried:
        outcome = outcomes[claimed.delivery_id]
        if outcome.error is None:
            delivered.append(
                {"b_id": claimed.delivery_id, "b_at": outcome.tried_at, "b_code": outcome.status}
            )
            settled.append((held[claimed.delivery_id].job_id, claimed.customer_id))
            if endpoint.failing_since is not None:
                endpoint.failing_since = None
        elif _apply(session, settings, endpoint, failed[claimed.delivery_id], outcome):
            settled.append((failed[claimed.delivery_id].job_id, claimed.customer_id))
        else:
            retried.append(failed[claimed.delivery_id])
    now = utcnow()
    if delivered:
        _mark_delivered(session, delivered, now)
    let_go = [
        held[c.delivery_id]
        for c in batch.deliveries
        if final and c.delivery_id not in outcomes and c.delivery_id in held
    ]
    if let_go:
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_([d.id for d in let_go]))
            .values(lease_token=None, leased_until=None)
            .execution_options(synchronize_session=False)
        )
    session.flush()
    _settle_jobs(session, [job for job, _customer in settled])
    for delivery in retried:
        if delivery.job_id is not None and delivery.next_attempt_at is not None:
            _move_jobs(session, [delivery.job_id], delivery.next_attempt_at)
    # Their jobs look at once: each finds its delivery due, or when an earlier one of its
    # customer is (look_again_at); a flush may have recorded that earlier one already.
    _move_jobs(session, [d.job_id for d in let_go], now)
    waiting = {d.customer_id for d in retried if d.customer_id is not None}
    # A customer with deliveries still in this batch (untried, or let go above) goes on there.
    waiting |= {
        held[c.delivery_id].customer_id
        for c in batch.deliveries
        if c.delivery_id in held and c.delivery_id not in outcomes
    }
    moved_on = {customer for _job, customer in settled if customer is not None} - waiting
    if moved_on:
        _wake_next_in_lanes(session, batch.endpoint_id, moved_on, now + _NEXT_IN_LANE)


# The table itself: an executemany UPDATE (one statement, a row of parameters per delivery).
_DELIVERIES_TABLE = cast(Table, WebhookDelivery.__table__)
_DELIVERIES = _DELIVERIES_TABLE.c


def _mark_delivered(session: Session, rows: list[dict[str, Any]], now: datetime) -> None:
    """The 2xx answers: one statement, run for every row (the lease was checked above)."""
    session.execute(
        update(_DELIVERIES_TABLE)
        .where(_DELIVERIES.id == bindparam("b_id"))
        .values(
            status=DeliveryStatus.DELIVERED,
            attempts=_DELIVERIES.attempts + 1,
            last_attempt_at=bindparam("b_at", type_=UTCDateTime()),
            last_status_code=bindparam("b_code"),
            last_error=None,
            delivered_at=now,
            next_attempt_at=None,
            lease_token=None,
            leased_until=None,
        ),
        rows,
    )


def _apply(
    session: Session,
    settings: Settings,
    endpoint: WebhookEndpoint,
    delivery: WebhookDelivery,
    outcome: Outcome,
) -> bool:
    """Record one try on its delivery; True when the delivery is settled (delivered or
    failed for good), False when it waits for its next try."""
    delivery.lease_token = None
    delivery.leased_until = None
    delivery.attempts += 1
    delivery.last_attempt_at = outcome.tried_at
    delivery.last_status_code = outcome.status
    delivery.last_error = outcome.error
    if outcome.error is None:
        delivery.status = DeliveryStatus.DELIVERED
        delivery.delivered_at = utcnow()
        delivery.next_attempt_at = None
        if endpoint.failing_since is not None:
            endpoint.failing_since = None
        return True
    log.info(
        "webhook.delivery_failed",
        delivery_id=delivery.id,
        status=outcome.status,
        error=outcome.error,
    )
    if outcome.status == 410:
        # The endpoint is gone, not this event: it waits, first in its customer's line, for
        # the endpoint to be enabled again (the try counts).
        _disable(session, endpoint, "the endpoint answered 410 Gone")
        delivery.next_attempt_at = utcnow()
        return False
    if endpoint.failing_since is None:
        endpoint.failing_since = outcome.tried_at
    elif outcome.tried_at - endpoint.failing_since >= timedelta(
        hours=settings.webhook_disable_after_hours
    ):
        _disable(session, endpoint, f"failing since {endpoint.failing_since.isoformat()}")
    delays = settings.webhook_retry_delays
    if outcome.final or delivery.attempts > len(delays):
        delivery.status = DeliveryStatus.FAILED
        delivery.next_attempt_at = None
        return True
    wait = timedelta(seconds=delays[delivery.attempts - 1] * random.uniform(0.9, 1.1))
    if outcome.retry_after is not None:
        wait = max(wait, min(timedelta(seconds=outcome.retry_after), _MAX_RETRY_AFTER))
    delivery.next_attempt_at = utcnow() + wait
    return False


def _wake_next_in_lanes(
    session: Session, endpoint_id: str, customers: set[str], at: datetime
) -> None:
    """The first pending delivery of each of these customers is due by `at`."""
    firsts = session.execute(
        select(WebhookDelivery.customer_id, func.min(WebhookDelivery.event_seq))
        .where(
            WebhookDelivery.endpoint_id == endpoint_id,
            WebhookDelivery.customer_id.in_(customers),
            WebhookDelivery.status == _PENDING,
        )
        .group_by(WebhookDelivery.customer_id)
    ).all()
    if not firsts:
        return
    heads = session.scalars(
        select(WebhookDelivery.job_id).where(
            WebhookDelivery.endpoint_id == endpoint_id,
            WebhookDelivery.status == _PENDING,
            tuple_(WebhookDelivery.customer_id, WebhookDelivery.event_seq).in_(
                [(customer, seq) for customer, seq in firsts]
            ),
        )
    ).all()
    ids = [j for j in heads if j is not None]
    if ids:
        session.execute(
            update(Job)
            .where(Job.id.in_(ids), Job.status == JobStatus.PENDING, Job.run_at > at)
            .values(run_at=at)
            .execution_options(synchronize_session=False)
        )


def resume(session: Session, endpoint_id: str) -> None:
    """The endpoint was enabled again: its waiting deliveries are due now, and their jobs."""
    now = utcnow()
    jobs = session.scalars(
        select(WebhookDelivery.job_id).where(
            WebhookDelivery.endpoint_id == endpoint_id, WebhookDelivery.status == _PENDING
        )
    ).all()
    session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.endpoint_id == endpoint_id,
            WebhookDelivery.status == _PENDING,
            WebhookDelivery.next_attempt_at > now,
        )
        .values(next_attempt_at=now)
        .execution_options(synchronize_session=False)
    )
    _move_jobs(session, list(jobs), now)  # two statements, as in _park_followers
    wakeup.note_enqueued(session)


def look_again_at(session: Session, delivery_id: str) -> tuple[datetime, str] | None:
    """When the job of a delivery no batch settled should run again, and why; None when the
    delivery is settled (or gone)."""
    delivery = session.get(WebhookDelivery, delivery_id)
    if delivery is None or delivery.status != _PENDING:
        return None
    now = utcnow()
    if delivery.leased_until is not None and delivery.leased_until > now:
        return delivery.leased_until, "a batch is sending it"
    if delivery.next_attempt_at is not None and delivery.next_attempt_at > now:
        return delivery.next_attempt_at, delivery.last_error or "not yet due"
    if delivery.customer_id is not None:
        earlier = session.execute(
            select(WebhookDelivery.next_attempt_at, WebhookDelivery.leased_until)
            .where(
                WebhookDelivery.endpoint_id == delivery.endpoint_id,
                WebhookDelivery.customer_id == delivery.customer_id,
                WebhookDelivery.status == _PENDING,
                WebhookDelivery.event_seq < delivery.event_seq,
            )
            .order_by(WebhookDelivery.event_seq)
            .limit(1)
        ).one_or_none()
        if earlier is not None:
            times = [t for t in (earlier.next_attempt_at, earlier.leased_until, now) if t]
            return (
                max(times) + ORDER_RECHECK,
                "an earlier event for this customer is not delivered yet",
            )
    return now, "more deliveries are due than one batch sends"


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
                "Nothing is sent to it now: its waiting deliveries stay queued, and events "
                "written while it is disabled are not queued for it. Fix the receiver, then "
                f"enable the endpoint again (PATCH /webhook-endpoints/{endpoint.id} with "
                "enabled=true): the queued deliveries go out, each customer's in order; "
                "redeliver from its delivery log anything else it should have.\n"
            ),
            kind="webhook_endpoint_disabled",
            dedupe_key=f"webhook-disabled:{endpoint.id}:{utcnow().isoformat()}:{email}",
        )
