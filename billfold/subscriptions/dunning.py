"""A renewal Stripe could not collect: the subscription goes `past_due` (its license then
lasts to the end of the paid period, no grace) and the customer gets an e-mail with the
invoice's pay link, once per attempt."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from billfold.config import Settings
from billfold.customers.models import Customer
from billfold.kit.db import utcnow
from billfold.kit.money import format_money
from billfold.mail.outbox import queue_mail
from billfold.services import Services
from billfold.stripe_gateway import StripeInvoice, StripeNotFound
from billfold.subscriptions import licenses
from billfold.subscriptions.lifecycle import apply_stripe_subscription
from billfold.subscriptions.models import Subscription
from billfold.webhooks.dispatch import Outcome, event_object, event_time
from billfold.webhooks.models import EventStatus

MAIL_KIND = "payment_problem"
ACTION_REQUIRED = "invoice.payment_action_required"


def on_payment_problem(services: Services, event: dict[str, Any]) -> Outcome:
    """`invoice.payment_failed` / `invoice.payment_action_required`: re-read the invoice and
    the subscription from Stripe, apply the subscription, and mail the pay link while the
    invoice is still open."""
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
            needs_action = event["type"] == ACTION_REQUIRED
            _mail(session, subscription, invoice, services.settings, needs_action=needs_action)
        return Outcome(EventStatus.PROCESSED, subscription.customer_id)


def _mail(
    session: Session,
    subscription: Subscription,
    invoice: StripeInvoice,
    settings: Settings,
    *,
    needs_action: bool,
) -> None:
    customer = session.get(Customer, subscription.customer_id)
    if customer is None or customer.deleted_at is not None:
        return
    amount = format_money(invoice.amount_due, invoice.currency)
    plan = subscription.plan.name
    if needs_action:
        subject = f"Please confirm your payment of {amount} for {plan}"
        reason = "Your bank asks you to confirm this payment before it goes through."
    else:
        subject = f"Your payment of {amount} for {plan} failed"
        reason = "We could not charge your card on file."
    until = licenses.terms(subscription, settings, utcnow()).expires_at
    queue_mail(
        session,
        to=customer.user.email,
        subject=subject,
        body="\n".join(
            [
                f"Hello {customer.user.name},",
                "",
                f"{reason} Pay the invoice here (you can use another card):",
                "",
                invoice.hosted_invoice_url or "(your billing page)",
                "",
                f"Your {plan} plan stays available until {until:%Y-%m-%d %H:%M} UTC; after "
                "that it pauses until the invoice is paid.",
            ]
        ),
        kind=MAIL_KIND,
        dedupe_key=f"{MAIL_KIND}:{invoice.id}:{invoice.attempt_count}:{int(needs_action)}",
    )
