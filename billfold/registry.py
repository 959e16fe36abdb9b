"""Where the domains plug in: every job kind, and the wiring (event handlers, payment purposes,
hooks) that the application factory and the CLI hand to Services. Nothing here runs at import."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from billfold.auth import service as auth_service
from billfold.config import Settings
from billfold.credits import outcomes as credit_outcomes
from billfold.credits import purchase as credit_purchase
from billfold.credits import recharge
from billfold.customers import account_links, stripe_sync
from billfold.customers import handlers as customer_events
from billfold.customers import service as customers
from billfold.customers.models import Customer
from billfold.customers.registration import SIGN_UP
from billfold.jobs.worker import JobKind, Worker, WorkerSettings
from billfold.kit import idempotency
from billfold.kit.db import Database, utcnow
from billfold.kit.wiring import Wiring
from billfold.mail import outbox
from billfold.pages import sessions as page_sessions
from billfold.payments import fulfilment, janitor, methods, refunds
from billfold.payments import handlers as payment_events
from billfold.payments.fulfilment import PURPOSES, Purpose
from billfold.services import Services
from billfold.subscriptions import cancellation, dunning, lifecycle
from billfold.subscriptions import handlers as subscription_events
from billfold.webhooks import inbox
from billfold.webhooks.dispatch import EVENT_HANDLERS
from billfold.webhooks.outbound import delivery as outbound_delivery
from billfold.webhooks.outbound.events import DELIVER_JOB


def _purge_idempotency_records(services: Services, _payload: dict[str, Any]) -> None:
    """Every `idempotency.PURGE_EVERY`: forget the records past the retention."""
    retention = timedelta(hours=services.settings.idempotency_retention_hours)
    idempotency.purge(services.db, utcnow() - retention)


def _process_event(services: Services, payload: dict[str, Any]) -> None:
    inbox.process(services, payload["event_id"])


JOB_KINDS: dict[str, JobKind[Services]] = {
    customers.LINK_JOB: JobKind(stripe_sync.link_job),
    customers.PUSH_JOB: JobKind(stripe_sync.push_job),
    customers.REMOVE_JOB: JobKind(stripe_sync.remove_job),
    inbox.PROCESS_JOB: JobKind(_process_event, on_failure=inbox.record_failure),
    outbox.SEND_JOB: JobKind(outbox.send_job, on_failure=outbox.record_failure),
    refunds.REFUND_JOB: JobKind(refunds.refund_job),
    recharge.RECHARGE_JOB: JobKind(recharge.recharge_job, on_failure=recharge.recharge_gave_up),
    janitor.CANCEL_INTENT_JOB: JobKind(janitor.cancel_intent_job),
    janitor.JANITOR_JOB: JobKind(
        janitor.janitor_job, every=lambda s: s.settings.payment_janitor_interval_seconds
    ),
    idempotency.PURGE_JOB: JobKind(
        _purge_idempotency_records, every=lambda _s: idempotency.PURGE_EVERY.total_seconds()
    ),
    DELIVER_JOB: JobKind(outbound_delivery.deliver_job),
    cancellation.END_TRIALS_JOB: JobKind(
        cancellation.end_trials_job, every=lambda _s: cancellation.END_TRIALS_EVERY_SECONDS
    ),
    dunning.REMINDERS_JOB: JobKind(
        dunning.reminders_job, every=lambda s: s.settings.dunning_check_interval_seconds
    ),
    dunning.CARD_JOB: JobKind(dunning.card_job),
}


def build_worker(services: Services, name: str | None = None) -> Worker[Services]:
    s = services.settings
    return Worker(
        services.db,
        JOB_KINDS,
        services,
        WorkerSettings(
            lease=timedelta(seconds=s.job_lease_seconds),
            backoff_base=s.job_backoff_base_seconds,
            backoff_max=s.job_backoff_max_seconds,
            poll_seconds=s.job_poll_seconds,
            batch_size=s.job_batch_size,
            wakeup=s.job_wakeup,
            listen_url=s.job_listen_url,
        ),
        name=name,
    )


def _start_trial(session: Session, customer: Customer, services: Services) -> None:
    lifecycle.start_trial(session, customer, services.settings, services.licenses)


def build_wiring() -> Wiring:
    """How the domains plug into each other, built anew for each application (and test)."""
    return (
        Wiring()
        .put(
            EVENT_HANDLERS,
            {
                **customer_events.HANDLERS,
                **payment_events.HANDLERS,
                **subscription_events.HANDLERS,
            },
        )
        .put(
            PURPOSES,
            {
                fulfilment.ORDER: fulfilment.ORDER_PURPOSE,
                credit_purchase.PURPOSE: Purpose(
                    paid=credit_outcomes.on_paid,
                    declined=credit_outcomes.on_declined,
                    refunded=credit_outcomes.on_refunded,
                ),
            },
        )
        # The free trial starts at sign-up, or at the first verified e-mail when sign-up
        # waits for it (EMAIL_VERIFICATION_REQUIRED).
        .on(SIGN_UP, _start_trial)
        .on(account_links.FIRST_VERIFICATION, _start_trial)
        .on(customers.EMAIL_CHANGED, account_links.after_email_change)
        .on(auth_service.TOKENS_REVOKED, page_sessions.end_user_sessions)
        .put(
            outbox.SECRET_FILLERS,
            {kind: account_links.link_filler(page) for kind, page in account_links.FILLERS.items()},
        )
        .on(
            stripe_sync.BEFORE_STRIPE_REMOVAL,
            lifecycle.end_for_deleted_customer,
            methods.detach_all,
        )
        # A new default card becomes the card of the customer's subscriptions too.
        .on(methods.DEFAULT_CARD_CHANGED, dunning.on_default_card)
    )


def build_services(
    settings: Settings,
    db: Database | None = None,
    *,
    stripe_http: Callable[[float], Any] | None = None,
) -> Services:
    """The services the app, the worker and the CLI run on, with the application's wiring."""
    return Services.build(settings, db, wiring=build_wiring(), stripe_http=stripe_http)
