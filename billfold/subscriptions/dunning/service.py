"""Dunning: a renewal Stripe could not collect, until it is paid or Stripe gives up.

The subscription turns `past_due` (its license then runs to the end of the grace, never past
the period) and the customer is e-mailed the invoice's pay link, or, when the bank wants the
customer to confirm, the page to confirm it on. Reminders follow DUNNING_REMINDER_DAYS from
the first failure (a recurring job); when Stripe's retries end (the subscription canceled or
unpaid) the customer is told it ended. A card made the default meanwhile becomes the
subscription's card too and pays the open invoice at once. Each e-mail goes at most once per
invoice and step: the step's row is unique, and its e-mail is queued in the same transaction.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from billfold.config import Settings
from billfold.customers.models import Customer
from billfold.jobs.queue import enqueue
from billfold.jobs.worker import Defer
from billfold.kit.db import utcnow
from billfold.kit.money import format_money
from billfold.mail.outbox import queue_mail
from billfold.services import Services
from billfold.stripe_gateway import (
    PaymentDeclined,
    StripeInvoice,
    StripeNotFound,
    StripeRejected,
)
from billfold.subscriptions import invoices, licenses
from billfold.subscriptions.dunning.models import CaseOutcome, DunningCase, DunningNotice
from billfold.subscriptions.lifecycle import apply_stripe_subscription, new_request
from billfold.subscriptions.models import Invoice, Subscription, SubscriptionStatus
from billfold.webhooks.dispatch import Outcome, event_object, event_time
from billfold.webhooks.models import EventStatus

log = structlog.get_logger("billfold.dunning")

MAIL_KIND = "payment_problem"
ENDED_MAIL_KIND = "subscription_ended"
ACTION_REQUIRED = "invoice.payment_action_required"
REMINDERS_JOB = "dunning.reminders"
CARD_JOB = "dunning.new_card"
# How long the request that queued the card job may still be asking Stripe (its timeout and
# retries are far shorter), and how often the job looks again meanwhile.
CARD_ANSWER_WAIT = timedelta(minutes=5)
CARD_RECHECK = timedelta(seconds=5)
# What Stripe leaves a subscription in when its retries end (the account's setting decides).
GAVE_UP = frozenset({SubscriptionStatus.CANCELED, SubscriptionStatus.UNPAID})


def on_payment_problem(
    services: Services, event: dict[str, Any], invoice: StripeInvoice | None = None
) -> Outcome:
    """`invoice.payment_failed` / `invoice.payment_action_required`: re-read the invoice (unless
    the caller just did, for this event) and the subscription from Stripe, apply the
    subscription, and open the invoice's case (its first e-mail) while the invoice is open."""
    if invoice is None:
        try:
            invoice = services.stripe.retrieve_invoice(event_object(event)["id"])
        except StripeNotFound:
            return Outcome(EventStatus.IGNORED, note="the invoice is gone from Stripe")
    if invoice.subscription is None:
        return Outcome(EventStatus.IGNORED, note="invoice without a subscription")
    try:
        remote = services.stripe.retrieve_subscription(invoice.subscription)
    except StripeNotFound:
        return Outcome(EventStatus.IGNORED, note=f"{invoice.subscription} is gone from Stripe")
    with services.db.transaction() as session:
        subscription = apply_stripe_subscription(
            session,
            remote,
            event_at=event_time(event),
            settings=services.settings,
            keys=services.licenses,
        )
        if subscription is None:
            return Outcome(EventStatus.IGNORED, note=f"no customer of ours owns {remote.id}")
        if invoice.status == "open":
            # Stored now (not only by its own `invoice.*` event): the e-mail links to its page.
            invoices.record(session, invoice, event_at=event_time(event))
            needs_action = event["type"] == ACTION_REQUIRED
            case = _open_case(session, subscription, invoice, needs_action=needs_action)
            step = "action_required" if needs_action else "failed"
            _notify(session, case, subscription, services.settings, step)
        return Outcome(EventStatus.PROCESSED, subscription.customer_id)


def _open_case(
    session: Session, subscription: Subscription, invoice: StripeInvoice, *, needs_action: bool
) -> DunningCase:
    case = _case_of(session, invoice.id)
    if case is None:
        try:
            with session.begin_nested():  # the unique invoice ID settles a concurrent twin
                case = DunningCase(
                    stripe_invoice_id=invoice.id,
                    subscription_id=subscription.id,
                    customer_id=subscription.customer_id,
                    amount_due=invoice.amount_due,
                    currency=invoice.currency,
                    pay_url=invoice.hosted_invoice_url,
                    needs_action=needs_action,
                )
                session.add(case)
                session.flush()
        except IntegrityError:
            case = _case_of(session, invoice.id)
            if case is None:
                raise
    case.amount_due, case.needs_action = invoice.amount_due, needs_action
    case.pay_url = invoice.hosted_invoice_url or case.pay_url
    return case


def _case_of(session: Session, stripe_invoice_id: str) -> DunningCase | None:
    return session.scalar(
        select(DunningCase).where(DunningCase.stripe_invoice_id == stripe_invoice_id)
    )


def open_case(session: Session, customer_id: str) -> DunningCase | None:
    """The customer's unpaid renewal, if any (the billing pages show it as a banner)."""
    return session.scalar(
        select(DunningCase)
        .where(DunningCase.customer_id == customer_id, DunningCase.closed_at.is_(None))
        .order_by(DunningCase.opened_at.desc())
        .limit(1)
    )


def settle(services: Services, stripe_invoice_id: str) -> None:
    """`invoice.paid`: the case is over (no e-mail: the receipt and the new license say it)."""
    with services.db.transaction() as session:
        case = _case_of(session, stripe_invoice_id)
        if case is not None and case.closed_at is None:
            case.closed_at, case.outcome = utcnow(), CaseOutcome.PAID


def after_subscription_change(services: Services, stripe_subscription_id: str) -> None:
    """After a subscription event is applied: if Stripe gave up on it, its open cases end and
    the customer is told, once."""
    with services.db.transaction() as session:
        subscription = session.scalar(
            select(Subscription).where(
                Subscription.stripe_subscription_id == stripe_subscription_id
            )
        )
        if subscription is None or subscription.status not in GAVE_UP:
            return
        for case in _open_cases(session, subscription.id):
            _give_up(session, case, subscription, services.settings)


def _open_cases(session: Session, subscription_id: str) -> list[DunningCase]:
    return list(
        session.scalars(
            select(DunningCase).where(
                DunningCase.subscription_id == subscription_id, DunningCase.closed_at.is_(None)
            )
        )
    )


def _give_up(
    session: Session, case: DunningCase, subscription: Subscription, settings: Settings
) -> None:
    case.closed_at, case.outcome = utcnow(), CaseOutcome.GAVE_UP
    _notify(session, case, subscription, settings, "ended")


# Reminders --------------------------------------------------------------------------------


def reminder_step(days: int) -> str:
    return f"reminder_{days}d"


def send_reminders(services: Services, now: datetime | None = None) -> int:
    """Mail the reminder each open case is due (the latest one passed, if the job was away
    for several); answers how many went out. `now` is injectable for the tests."""
    now = now or utcnow()
    schedule = services.settings.dunning_schedule
    with services.db.transaction() as session:
        due = [
            (case.id, case.stripe_invoice_id, step)
            for case in session.scalars(select(DunningCase).where(DunningCase.closed_at.is_(None)))
            if (step := _due_step(session, case, schedule, now)) is not None
        ]
    sent = 0
    for case_id, invoice_id, step in due:
        invoice = _still_open(services, invoice_id)
        with services.db.transaction() as session:
            case = session.get(DunningCase, case_id)
            if case is None or case.closed_at is not None:
                continue
            subscription = session.get(Subscription, case.subscription_id)
            if subscription is None:
                continue
            if invoice is None or invoice.status == "paid":
                case.closed_at = utcnow()
                case.outcome = CaseOutcome.PAID if invoice else CaseOutcome.CLOSED
            elif invoice.status != "open":
                case.closed_at, case.outcome = utcnow(), CaseOutcome.CLOSED
            elif subscription.status in GAVE_UP:
                _give_up(session, case, subscription, services.settings)
            elif _notify(session, case, subscription, services.settings, step):
                sent += 1
    return sent


def _due_step(
    session: Session, case: DunningCase, schedule: list[int], now: datetime
) -> str | None:
    passed = [days for days in schedule if case.opened_at + timedelta(days=days) <= now]
    if not passed:
        return None
    latest = reminder_step(passed[-1])
    already = session.scalar(
        select(DunningNotice.id).where(
            DunningNotice.case_id == case.id, DunningNotice.step == latest
        )
    )
    return None if already else latest


def _still_open(services: Services, invoice_id: str) -> StripeInvoice | None:
    try:
        return services.stripe.retrieve_invoice(invoice_id)
    except StripeNotFound:
        return None


def reminders_job(services: Services, _payload: dict[str, Any]) -> None:
    sent = send_reminders(services)
    if sent:
        log.info("dunning.reminders_sent", count=sent)


# A new card during dunning -----------------------------------------------------------------


def on_default_card(session: Session, customer_id: str, payment_method_id: str) -> None:
    """The customer is making a card their default: renewals must use it too. A
    Checkout-made subscription has its own default_payment_method, which Stripe prefers over
    the customer's, so a durable job sets it on the subscription (and pays an open invoice).

    Queued before Stripe is asked to make the card the customer's default, in a transaction
    of its own, so a process dying on Stripe's answer loses nothing; the job acts only once
    Stripe holds the card as the customer's default (see `card_job`)."""
    subscription = session.scalar(
        select(Subscription).where(Subscription.customer_id == customer_id)
    )
    if subscription is None or subscription.stripe_subscription_id is None:
        return
    if subscription.status in (SubscriptionStatus.CANCELED, SubscriptionStatus.INCOMPLETE_EXPIRED):
        return
    # Per change (its own request row, in this transaction): A → B → A must set A again,
    # not replay the first answer; the job's retries reuse it.
    request_id = new_request(session, customer_id, subscription.id, "default_card")
    enqueue(
        session,
        CARD_JOB,
        {
            "subscription_id": subscription.id,
            "payment_method_id": payment_method_id,
            "request_id": request_id,
            "asked_at": utcnow().isoformat(),
        },
    )


def card_job(services: Services, payload: dict[str, Any]) -> None:
    subscription_id, method = payload["subscription_id"], payload["payment_method_id"]
    with services.db.transaction() as session:
        subscription = session.get(Subscription, subscription_id)
        customer = session.get(Customer, subscription.customer_id) if subscription else None
        if subscription is None or subscription.stripe_subscription_id is None:
            return
        stripe_id = subscription.stripe_subscription_id
        stripe_customer_id = customer.stripe_customer_id if customer else None
        unpaid = [(c.id, c.stripe_invoice_id) for c in _open_cases(session, subscription_id)]
        request = payload["request_id"]
        if not isinstance(request, int):  # queued before requests had rows
            request = new_request(
                session, subscription.customer_id, subscription_id, "default_card"
            )
    if "asked_at" in payload and stripe_customer_id is not None:
        chosen = services.stripe.default_card_id(stripe_customer_id)
        if chosen != method:
            _not_default_yet(datetime.fromisoformat(payload["asked_at"]), method)
            return  # Stripe never made it the default (refused, or a later card won)
    services.stripe.set_subscription_default_payment_method(
        stripe_id, method, subscription_id=subscription_id, request_id=request
    )
    for case_id, invoice_id in unpaid:
        try:
            services.stripe.pay_invoice(
                invoice_id, payment_method_id=method, case_id=case_id, request_id=request
            )
        except (PaymentDeclined, StripeRejected) as exc:
            # Declined, or the bank wants the customer: the case and its reminders go on.
            log.info("dunning.new_card_not_charged", case_id=case_id, error=exc.code)


def _not_default_yet(asked_at: datetime, method: str) -> None:
    """The job runs as soon as it is queued, which may be before the request that queued it
    has Stripe's answer: while that request may still be asking, try again shortly."""
    if utcnow() < asked_at + CARD_ANSWER_WAIT:
        raise Defer(utcnow() + CARD_RECHECK, f"{method} is not the customer's default yet")
    log.info("dunning.new_card_not_default", payment_method_id=method)


# The e-mails --------------------------------------------------------------------------------


def _notify(
    session: Session,
    case: DunningCase,
    subscription: Subscription,
    settings: Settings,
    step: str,
) -> bool:
    """Record the step and queue its e-mail, in the caller's transaction; False (and nothing
    done) if this step of this invoice was sent already."""
    try:
        with session.begin_nested():
            session.add(DunningNotice(case_id=case.id, step=step))
            session.flush()
    except IntegrityError:
        return False
    customer = session.get(Customer, subscription.customer_id)
    if customer is None or customer.deleted_at is not None:
        return True  # nobody to tell; the step still counts as done
    subject, lines = _message(case, subscription, settings, step, _link(session, case, settings))
    queue_mail(
        session,
        to=customer.user.email,
        subject=subject,
        body="\n".join([f"Hello {customer.user.name},", "", *lines]),
        kind=ENDED_MAIL_KIND if step == "ended" else MAIL_KIND,
        dedupe_key=f"dunning:{case.stripe_invoice_id}:{step}",
    )
    return True


def _link(session: Session, case: DunningCase, settings: Settings) -> str:
    """Where the e-mail sends the customer: Billfold's page to confirm the payment with the
    bank when it waits for that, else Stripe's hosted invoice page to pay it."""
    if case.needs_action:
        invoice_id = session.scalar(
            select(Invoice.id).where(Invoice.stripe_invoice_id == case.stripe_invoice_id)
        )
        if invoice_id is not None:
            return f"{settings.backend_url}/billing/invoices/{invoice_id}/authenticate"
    return case.pay_url or f"{settings.backend_url}/billing"


def _message(
    case: DunningCase, subscription: Subscription, settings: Settings, step: str, link: str
) -> tuple[str, list[str]]:
    amount = format_money(case.amount_due, case.currency)
    plan = subscription.plan.name
    if step == "ended":
        return (
            f"Your {plan} subscription has ended",
            [
                f"We could not collect your payment of {amount} for {plan} after several "
                "attempts, so the subscription has ended and its features are off.",
                "",
                f"You can subscribe again at any time: {settings.backend_url}/billing",
            ],
        )
    until = licenses.terms(subscription, settings, utcnow()).expires_at
    keep = (
        f"Your {plan} plan stays available until {until:%Y-%m-%d %H:%M} UTC; after that it "
        "pauses until the invoice is paid."
    )
    if case.needs_action:
        ask = "Your bank asks you to confirm this payment before it goes through. Confirm it here:"
        subject = f"Please confirm your payment of {amount} for {plan}"
    else:
        ask = (
            "We could not charge your card on file. Pay the invoice here (you can use "
            "another card), or make another card your default on your billing page:"
        )
        subject = f"Your payment of {amount} for {plan} failed"
    if step.startswith("reminder_"):
        subject = f"Reminder: your payment of {amount} for {plan} is still due"
    return subject, [ask, "", link, "", keep]
