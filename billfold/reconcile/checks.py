"""Comparing one record of ours with what Stripe has now: a customer (with its cards and any
subscription we do not track), a payment (with its refunds), a subscription.

Each check reads our side in one short transaction, asks Stripe, and answers the
differences, each with the repair that the matching webhook would have made (or none, when
a person must decide).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from billfold.auth.models import Role
from billfold.config import CustomerCreation
from billfold.customers import stripe_sync
from billfold.customers.account_links import pending_emails
from billfold.customers.models import Customer
from billfold.customers.service import LINK_JOB
from billfold.jobs.models import Job, JobStatus
from billfold.payments import refunds as refund_service
from billfold.payments.models import Payment, Refund, SavedCard
from billfold.reconcile.drift import Drift, Subject, as_event, as_job
from billfold.services import Services
from billfold.stripe_gateway import StripeNotFound, StripePaymentIntent, StripeRefund
from billfold.subscriptions.models import Subscription, SubscriptionStatus

_ENDED = frozenset({SubscriptionStatus.CANCELED.value, SubscriptionStatus.INCOMPLETE_EXPIRED.value})
# The webhook that carries an intent in each state (they share one handler).
_INTENT_EVENT = {
    "succeeded": "payment_intent.succeeded",
    "canceled": "payment_intent.canceled",
    "requires_payment_method": "payment_intent.payment_failed",
    "requires_action": "payment_intent.requires_action",
}


def check(services: Services, subject: Subject) -> list[Drift]:
    if subject.kind == "customer":
        return _customer(services, subject)
    if subject.kind == "payment":
        return _payment(services, subject)
    return _subscription(services, subject)


# -- customers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _CustomerSide:
    stripe_id: str | None
    name: str
    email: str
    # Addresses awaiting verification (a Stripe-side e-mail edit waits for one, issue #9).
    proposed_emails: frozenset[str]
    push_pending: bool
    link_expected: bool  # none yet, though one is due and no job is on its way to make it
    tracked_subscription: str | None
    tracked_status: str | None
    attached_cards: frozenset[str]


def _customer_side(services: Services, customer_id: str) -> _CustomerSide | None:
    with services.db.transaction() as session:
        customer = session.get(Customer, customer_id)
        if customer is None or customer.deleted_at is not None:
            return None
        subscription = session.scalar(
            select(Subscription).where(Subscription.customer_id == customer_id)
        )
        cards = session.scalars(
            select(SavedCard.stripe_payment_method_id).where(
                SavedCard.customer_id == customer_id, SavedCard.attached.is_(True)
            )
        )
        queued = session.scalars(
            select(Job.payload).where(
                Job.kind == LINK_JOB, Job.status.in_([JobStatus.PENDING, JobStatus.RUNNING])
            )
        )
        return _CustomerSide(
            stripe_id=customer.stripe_customer_id,
            # Admins get a Stripe customer only when they first pay, like that mode.
            link_expected=customer.user.role != Role.ADMIN
            and services.settings.stripe_customer_creation is CustomerCreation.ON_REGISTRATION
            and not any(p.get("customer_id") == customer_id for p in queued),
            name=customer.user.name,
            email=customer.user.email,
            proposed_emails=frozenset(pending_emails(session, customer.user_id)),
            push_pending=customer.stripe_synced_version < customer.profile_version,
            tracked_subscription=subscription.stripe_subscription_id if subscription else None,
            tracked_status=str(subscription.status) if subscription else None,
            attached_cards=frozenset(cards),
        )


def _customer(services: Services, subject: Subject) -> list[Drift]:
    ours = _customer_side(services, subject.id)
    if ours is None:
        return []
    if ours.stripe_id is None:
        if not ours.link_expected:
            return []
        repair = as_job("create it (the link job)", stripe_sync.link_job, customer_id=subject.id)
        return [
            Drift(
                subject,
                "customer",
                subject.id,
                None,
                "not_linked",
                "no Stripe customer yet",
                repair,
            )
        ]
    try:
        remote = services.stripe.retrieve_customer(ours.stripe_id)
    except StripeNotFound:
        remote = None
    if remote is None or remote.deleted:
        repair = as_event("customer.deleted", {"id": ours.stripe_id, "object": "customer"})
        detail = "deleted in Stripe; still linked here"
        return [
            Drift(subject, "customer", subject.id, ours.stripe_id, "gone_in_stripe", detail, repair)
        ]
    found: list[Drift] = []
    remote_email = (remote.email or "").lower()
    email_differs = remote_email != ours.email.lower() and remote_email not in ours.proposed_emails
    if (remote.name or "") != ours.name or email_differs:
        detail = f"ours {ours.name!r} <{ours.email}> · Stripe {remote.name!r} <{remote.email}>"
        if ours.push_pending:
            repair = as_job(
                "send ours (the push job)", stripe_sync.push_job, customer_id=subject.id
            )
            problem = "edit_not_pushed"
        else:
            obj = {"id": remote.id, "object": "customer", "metadata": remote.metadata}
            repair, problem = as_event("customer.updated", obj), "profile_differs"
        found.append(Drift(subject, "customer", subject.id, remote.id, problem, detail, repair))
    found += _cards(services, subject, ours)
    found += _untracked_subscriptions(services, subject, ours)
    return found


def _cards(services: Services, subject: Subject, ours: _CustomerSide) -> list[Drift]:
    assert ours.stripe_id is not None
    remote = {card.id: card for card in services.stripe.list_cards(ours.stripe_id)}
    found: list[Drift] = []
    for pm_id in sorted(remote.keys() - ours.attached_cards):
        card = remote[pm_id]
        obj = {"id": pm_id, "object": "payment_method", "customer": ours.stripe_id}
        found.append(
            Drift(
                subject,
                "card",
                subject.id,
                pm_id,
                "card_not_recorded",
                f"{card.brand} …{card.last4} attached in Stripe, not listed here",
                as_event("payment_method.attached", obj),
            )
        )
    for pm_id in sorted(ours.attached_cards - remote.keys()):
        detached: dict[str, Any] = {"id": pm_id, "object": "payment_method", "customer": None}
        found.append(
            Drift(
                subject,
                "card",
                subject.id,
                pm_id,
                "card_not_in_stripe",
                "listed here as attached; Stripe has it on no customer of ours",
                as_event("payment_method.detached", detached),
            )
        )
    return found


def _untracked_subscriptions(
    services: Services, subject: Subject, ours: _CustomerSide
) -> list[Drift]:
    assert ours.stripe_id is not None
    found: list[Drift] = []
    tracking_live = ours.tracked_subscription is not None and ours.tracked_status not in _ENDED
    for remote in services.stripe.list_subscriptions(ours.stripe_id):
        if remote.id == ours.tracked_subscription or remote.status in _ENDED:
            continue
        detail = f"{remote.status} in Stripe, not tracked here"
        if tracking_live:
            # Two live subscriptions: which one to keep (and refund) is a person's call.
            found.append(
                Drift(subject, "subscription", subject.id, remote.id, "second_live", detail)
            )
            continue
        obj = {
            "id": remote.id,
            "object": "subscription",
            "customer": ours.stripe_id,
            "metadata": remote.metadata,
        }
        found.append(
            Drift(
                subject,
                "subscription",
                subject.id,
                remote.id,
                "subscription_not_recorded",
                detail,
                as_event("customer.subscription.updated", obj),
            )
        )
    return found


# -- payments and refunds ------------------------------------------------------------------


@dataclass(frozen=True)
class _RefundSide:
    id: str
    stripe_id: str | None
    status: str
    amount: int


@dataclass(frozen=True)
class _PaymentSide:
    status: str
    intent_id: str | None
    amount: int
    currency: str
    stripe_customer_id: str | None
    refunds: tuple[_RefundSide, ...]


def _payment_side(services: Services, payment_id: str) -> _PaymentSide | None:
    with services.db.transaction() as session:
        payment = session.get(Payment, payment_id)
        if payment is None:
            return None
        customer = session.get(Customer, payment.customer_id)
        refunds = session.scalars(select(Refund).where(Refund.payment_id == payment_id))
        return _PaymentSide(
            status=str(payment.status),
            intent_id=payment.stripe_payment_intent_id,
            amount=payment.amount,
            currency=payment.currency,
            stripe_customer_id=customer.stripe_customer_id if customer else None,
            refunds=tuple(
                _RefundSide(r.id, r.stripe_refund_id, str(r.status), r.amount) for r in refunds
            ),
        )


def _intent_event(intent: StripePaymentIntent) -> dict[str, object]:
    return {"id": intent.id, "object": "payment_intent", "metadata": intent.metadata}


def _payment(services: Services, subject: Subject) -> list[Drift]:
    ours = _payment_side(services, subject.id)
    if ours is None:
        return []
    if ours.intent_id is None:
        return _payment_without_intent(services, subject, ours)
    try:
        intent = services.stripe.retrieve_payment_intent(ours.intent_id)
    except StripeNotFound:
        detail = f"ours {ours.status}; Stripe has no such PaymentIntent"
        return [Drift(subject, "payment", subject.id, ours.intent_id, "gone_in_stripe", detail)]
    found: list[Drift] = []
    if (intent.amount, intent.currency) != (ours.amount, ours.currency):
        detail = f"ours {ours.amount} {ours.currency} · Stripe {intent.amount} {intent.currency}"
        found.append(Drift(subject, "payment", subject.id, intent.id, "amount_differs", detail))
    if intent.status != ours.status:
        kind = _INTENT_EVENT.get(intent.status, "payment_intent.processing")
        found.append(
            Drift(
                subject,
                "payment",
                subject.id,
                intent.id,
                "status_differs",
                f"ours {ours.status} · Stripe {intent.status}",
                as_event(kind, _intent_event(intent)),
            )
        )
    if intent.status == "succeeded" or ours.refunds:
        found += _refunds(services, subject, ours, intent, services.stripe.list_refunds(intent.id))
    return found


def _payment_without_intent(
    services: Services, subject: Subject, ours: _PaymentSide
) -> list[Drift]:
    """A payment whose intent was never stored (a crash or a lost answer in between)."""
    if ours.status != "creating":
        return []
    intent = (
        services.stripe.find_payment_intent(ours.stripe_customer_id, subject.id)
        if ours.stripe_customer_id
        else None
    )
    if intent is None:
        detail = "creating, and Stripe has no PaymentIntent for it"
        return [Drift(subject, "payment", subject.id, None, "no_intent", detail)]
    kind = _INTENT_EVENT.get(intent.status, "payment_intent.processing")
    detail = f"ours creating, without the intent · Stripe {intent.status}"
    repair = as_event(kind, _intent_event(intent))
    return [Drift(subject, "payment", subject.id, intent.id, "intent_not_recorded", detail, repair)]


def _refunds(
    services: Services,
    subject: Subject,
    ours: _PaymentSide,
    intent: StripePaymentIntent,
    remote: list[StripeRefund],
) -> list[Drift]:
    # charge.refunded brings every refund of the intent in (and settles ours).
    charge = {
        "id": intent.latest_charge or f"ch_of_{intent.id}",
        "object": "charge",
        "payment_intent": intent.id,
        "metadata": intent.metadata,
    }
    by_stripe_id = {r.stripe_id: r for r in ours.refunds if r.stripe_id}
    by_id = {r.id: r for r in ours.refunds}
    matched: set[str] = set()
    found: list[Drift] = []
    for stripe_refund in remote:
        mine = by_stripe_id.get(stripe_refund.id) or by_id.get(
            stripe_refund.metadata.get("refund_id", "")
        )
        if mine is None:
            detail = f"{stripe_refund.amount} {stripe_refund.status} in Stripe, not recorded here"
            found.append(
                Drift(
                    subject,
                    "refund",
                    subject.id,
                    stripe_refund.id,
                    "refund_not_recorded",
                    detail,
                    as_event("charge.refunded", charge),
                )
            )
            continue
        matched.add(mine.id)
        if _refund_status(stripe_refund.status) != mine.status:
            found.append(
                Drift(
                    subject,
                    "refund",
                    mine.id,
                    stripe_refund.id,
                    "status_differs",
                    f"ours {mine.status} · Stripe {stripe_refund.status}",
                    as_event("charge.refunded", charge),
                )
            )
    for mine in ours.refunds:
        if mine.id in matched or mine.status in ("failed", "canceled"):
            continue
        if mine.stripe_id is None and mine.status == "pending":
            repair = as_job(
                "make it (the refund job)", refund_service.refund_job, refund_id=mine.id
            )
            detail = f"{mine.amount} pending here; Stripe has no such refund"
            found.append(
                Drift(subject, "refund", mine.id, None, "refund_not_in_stripe", detail, repair)
            )
        else:
            detail = f"{mine.amount} {mine.status} here; Stripe has no such refund"
            found.append(
                Drift(subject, "refund", mine.id, mine.stripe_id, "gone_in_stripe", detail)
            )
    return found


def _refund_status(stripe_status: str) -> str:
    """Our refund status for Stripe's (Stripe's `pending` and `requires_action` are pending)."""
    return stripe_status if stripe_status in ("succeeded", "failed", "canceled") else "pending"


# -- subscriptions -------------------------------------------------------------------------


def _subscription(services: Services, subject: Subject) -> list[Drift]:
    with services.db.transaction() as session:
        subscription = session.get(Subscription, subject.id)
        if subscription is None or subscription.stripe_subscription_id is None:
            return []
        stripe_id = subscription.stripe_subscription_id
        period_end = subscription.current_period_ends_at
        ours = {
            "status": str(subscription.status),
            "price": subscription.plan.stripe_price_id,
            "cancel_at_period_end": subscription.cancel_at_period_end,
            "period_end": int(period_end.timestamp()) if period_end else None,
        }
    try:
        remote = services.stripe.retrieve_subscription(stripe_id)
    except StripeNotFound:
        detail = f"ours {ours['status']}; Stripe has no such subscription"
        return [Drift(subject, "subscription", subject.id, stripe_id, "gone_in_stripe", detail)]
    theirs = {
        "status": remote.status,
        "price": remote.price_id,
        "cancel_at_period_end": remote.cancel_at_period_end,
        "period_end": remote.current_period_end,
    }
    differing = [name for name in ours if ours[name] != theirs[name]]
    if not differing:
        return []
    detail = "; ".join(f"{n}: ours {ours[n]} · Stripe {theirs[n]}" for n in differing)
    obj = {
        "id": remote.id,
        "object": "subscription",
        "customer": remote.customer,
        "metadata": remote.metadata,
    }
    repair = as_event("customer.subscription.updated", obj)
    return [Drift(subject, "subscription", subject.id, stripe_id, "differs", detail, repair)]
