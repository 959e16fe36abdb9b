"""Auto-recharge: when a debit takes the balance below the threshold, one recharge starts.

Starting one claims the account's single in-flight slot with a conditional update, so
however many debits cross the threshold at once, one recharge runs; a recharge under way
counts. It charges the chosen saved card off-session (a job, with an idempotency key per
recharge) for the package that best closes the gap. A decline or `authentication_required`
turns auto-recharge off, records why and e-mails the customer; daily caps on count and
spend stop a runaway loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from billfold.auth.service import Caller
from billfold.config import Settings
from billfold.credits import packages
from billfold.credits.ledger import balance as ledger_balance
from billfold.credits.ledger import ensure_account
from billfold.credits.models import CreditAccount, CreditPurchase, PurchaseKind, PurchaseStatus
from billfold.credits.purchase import charge, new_purchase
from billfold.credits.rules import PackageOption, choose_package, credits_needed
from billfold.customers.models import Customer
from billfold.customers.service import acting_customer
from billfold.customers.stripe_sync import ensure_stripe_customer
from billfold.jobs.queue import enqueue
from billfold.kit import audit
from billfold.kit.db import new_id, utcnow
from billfold.kit.errors import BillfoldError, Conflict, InvalidInput
from billfold.mail.outbox import queue_mail
from billfold.payments.intents import record
from billfold.payments.methods import own_card
from billfold.payments.models import TERMINAL, Payment
from billfold.services import Services
from billfold.webhooks.outbound.notify import recharge_failed

log = structlog.get_logger("billfold.credits")

RECHARGE_JOB = "credits.recharge"


@dataclass(frozen=True)
class RechargeSettings:
    enabled: bool
    threshold_credits: int | None
    recharge_package_id: str | None
    recharge_credits: int | None
    payment_method_id: str | None


def account_of(session: Session, customer_id: str) -> CreditAccount:
    ensure_account(session, customer_id)
    account = session.get(CreditAccount, customer_id)
    assert account is not None
    return account


def configure(
    services: Services, caller: Caller, wanted: RechargeSettings, customer_id: str | None = None
) -> CreditAccount:
    """Set auto-recharge; turning it on checks the card is the customer's own."""
    with services.db.transaction() as session:
        customer = acting_customer(session, caller, customer_id)
        if wanted.recharge_package_id:
            packages.get_package(session, wanted.recharge_package_id)
    if wanted.enabled:
        if wanted.threshold_credits is None or wanted.payment_method_id is None:
            raise InvalidInput(
                "Auto-recharge needs thresholdCredits and paymentMethodId",
                code="incomplete_settings",
            )
        if wanted.recharge_package_id is None and wanted.recharge_credits is None:
            raise InvalidInput(
                "Auto-recharge needs rechargePackageId or rechargeCredits",
                code="incomplete_settings",
            )
        stripe_id = ensure_stripe_customer(services, customer.id, wait=10, source="first_payment")
        own_card(services, stripe_id, wanted.payment_method_id)
    with services.db.transaction() as session:
        account = account_of(session, customer.id)
        account.auto_recharge_enabled = wanted.enabled
        account.threshold_credits = wanted.threshold_credits
        account.recharge_package_id = wanted.recharge_package_id
        account.recharge_credits = wanted.recharge_credits
        account.recharge_payment_method_id = wanted.payment_method_id
        if wanted.enabled:
            account.auto_recharge_disabled_reason = None
            account.auto_recharge_disabled_at = None
            account.recharge_paused_until = None
        audit.record(
            session,
            caller.actor,
            "credits.auto_recharge.configure",
            customer.id,
            enabled=wanted.enabled,
            threshold=wanted.threshold_credits,
        )
        return account


def start(
    session: Session, customer_id: str, settings: Settings, *, manual: bool = False
) -> CreditPurchase | None:
    """Claim the account's in-flight slot and queue the recharge; None if one runs already,
    auto-recharge is off, the balance is not below the threshold, or a daily cap is hit."""
    purchase_id = new_id("cpu")
    now = utcnow()
    conditions = [
        CreditAccount.customer_id == customer_id,
        CreditAccount.auto_recharge_enabled.is_(True),
        CreditAccount.recharge_in_flight_id.is_(None),
    ]
    if not manual:
        conditions.append(CreditAccount.balance < CreditAccount.threshold_credits)
    claimed = session.execute(
        update(CreditAccount).where(*conditions).values(recharge_in_flight_id=purchase_id)
    ).rowcount  # type: ignore[attr-defined]
    if not claimed:
        return None
    account = session.get(CreditAccount, customer_id)
    assert account is not None
    session.refresh(account)
    credits, price, currency, package_id = _priced(session, account, settings)
    if _over_daily_caps(session, customer_id, price, settings, now):
        tomorrow = datetime.combine(now.date() + timedelta(days=1), time(), tzinfo=UTC)
        account.recharge_in_flight_id = None
        account.recharge_paused_until = tomorrow
        audit.record(session, "system", "credits.auto_recharge.capped", customer_id)
        log.warning("credits.recharge_capped", customer_id=customer_id)
        return None
    customer = session.get(Customer, customer_id)
    assert customer is not None
    purchase = new_purchase(
        session,
        customer,
        kind=PurchaseKind.RECHARGE,
        credits=credits,
        price=price,
        currency=currency,
        package_id=package_id,
        payment_method_id=account.recharge_payment_method_id,
        purchase_id=purchase_id,
    )
    enqueue(session, RECHARGE_JOB, {"purchase_id": purchase.id})
    log.info("credits.recharge_started", customer_id=customer_id, credits=credits, manual=manual)
    return purchase


def _priced(
    session: Session, account: CreditAccount, settings: Settings
) -> tuple[int, int, str, str | None]:
    configured = account.recharge_credits or 0
    preferred = (
        packages.get_package(session, account.recharge_package_id, include_inactive=True)
        if account.recharge_package_id
        else None
    )
    if preferred is not None:
        configured = max(configured, preferred.credits)
    needed = credits_needed(account.balance, account.threshold_credits or 0, configured)
    currency = preferred.currency if preferred else settings.stripe_currency
    options = packages.options(session, currency)
    if preferred is not None and preferred.active and preferred.credits >= needed:
        best: PackageOption | None = PackageOption(preferred.id, preferred.credits, preferred.price)
    else:
        best = choose_package(options, needed)
    if best is not None and best.credits >= needed:
        return best.credits, best.price, currency, best.id
    # No package closes the gap: buy exactly what is needed at the custom price.
    return needed, needed * settings.credits_unit_price, settings.stripe_currency, None


def _over_daily_caps(
    session: Session, customer_id: str, price: int, settings: Settings, now: datetime
) -> bool:
    since = datetime.combine(now.date(), time(), tzinfo=UTC)
    count, spent = session.execute(
        select(func.count(), func.coalesce(func.sum(Payment.amount), 0))
        .select_from(CreditPurchase)
        .join(Payment, Payment.id == CreditPurchase.payment_id)
        .where(
            CreditPurchase.customer_id == customer_id,
            CreditPurchase.kind == PurchaseKind.RECHARGE,
            CreditPurchase.status != PurchaseStatus.FAILED,
            CreditPurchase.created_at >= since,
        )
    ).one()
    return (
        count >= settings.credits_max_recharges_per_day
        or spent + price > settings.credits_max_recharge_spend_per_day
    )


def recharge_job(services: Services, payload: dict[str, Any]) -> None:
    """Charge the recharge's card off-session (once) and record the outcome."""
    with services.db.transaction() as session:
        purchase = session.get(CreditPurchase, payload["purchase_id"])
        if purchase is None or purchase.status != PurchaseStatus.PENDING:
            return
        payment = session.get(Payment, purchase.payment_id)
        assert payment is not None
        if payment.status in TERMINAL:
            return
        customer = session.get(Customer, purchase.customer_id)
        assert customer is not None
        method = purchase.payment_method_id
    if method is None:
        with services.db.transaction() as session:
            purchase = session.get(CreditPurchase, payload["purchase_id"])
            assert purchase is not None
            purchase.status = PurchaseStatus.FAILED
            disable_after_failure(
                session, purchase, None, services.settings, reason="no saved card chosen"
            )
        return
    stripe_id = ensure_stripe_customer(services, customer.id)
    intent = charge(services, payment, purchase, stripe_id, method, customer)
    record(services, payment.id, intent)


@dataclass(frozen=True)
class Triggered:
    """A recharge started by hand, as it stands once its charge was tried."""

    purchase: CreditPurchase
    payment: Payment
    balance: int


def trigger(services: Services, caller: Caller, customer_id: str | None = None) -> Triggered:
    """Start a recharge now (for testing a setup); it runs inline, the job is the backstop.
    It owns its transactions: the charge between them calls Stripe."""
    with services.db.transaction() as session:
        customer = acting_customer(session, caller, customer_id)
        account = account_of(session, customer.id)
        if not account.auto_recharge_enabled:
            raise Conflict("Auto-recharge is off", code="auto_recharge_disabled")
        purchase = start(session, customer.id, services.settings, manual=True)
        if purchase is None:
            raise _not_started(account)
        purchase_id = purchase.id
    recharge_job(services, {"purchase_id": purchase_id})
    with services.db.transaction() as session:
        fresh = session.get(CreditPurchase, purchase_id)
        assert fresh is not None
        payment = session.get(Payment, fresh.payment_id)
        if fresh.status == PurchaseStatus.FAILED:
            raise RechargeFailed.of(fresh, payment)
        assert payment is not None
        return Triggered(fresh, payment, ledger_balance(session, fresh.customer_id))


class RechargeFailed(BillfoldError):
    """A triggered recharge whose charge failed: the card's decline, as a payment's is."""

    status_code = 402
    code = "recharge_failed"

    @classmethod
    def of(cls, purchase: CreditPurchase, payment: Payment | None) -> RechargeFailed:
        decline = payment.decline_code if payment is not None else None
        return cls(
            (payment.failure_message if payment is not None else None)
            or "The recharge failed; auto-recharge is now off",
            code="card_declined" if decline else None,
            decline_code=decline,
            purchase_id=purchase.id,
            payment_id=purchase.payment_id,
            reason=purchase.failure,
        )


def _not_started(account: CreditAccount) -> Conflict:
    """Why `start` claimed nothing for an enabled account: a recharge holds the slot, or
    (having just released it) the day's caps were reached."""
    if account.recharge_in_flight_id is not None:
        return Conflict(
            "A recharge is already under way",
            code="recharge_not_started",
            cause="in_flight",
            recharge_in_flight_id=account.recharge_in_flight_id,
        )
    return Conflict(
        "The daily auto-recharge cap is reached",
        code="recharge_not_started",
        cause="daily_cap",
        paused_until=account.recharge_paused_until,
    )


def disable_after_failure(
    session: Session,
    purchase: CreditPurchase,
    payment: Payment | None,
    settings: Settings,
    *,
    reason: str | None = None,
) -> None:
    """Turn auto-recharge off after a failed recharge, say why, and tell the customer."""
    code = reason or (payment.decline_code if payment else None) or "payment failed"
    account = session.get(CreditAccount, purchase.customer_id)
    assert account is not None
    account.auto_recharge_enabled = False
    account.auto_recharge_disabled_reason = f"recharge {purchase.id} failed: {code}"
    account.auto_recharge_disabled_at = utcnow()
    if account.recharge_in_flight_id == purchase.id:
        account.recharge_in_flight_id = None
    audit.record(
        session, "system", "credits.auto_recharge.disabled", purchase.customer_id, reason=code
    )
    recharge_failed(session, purchase, code)
    customer = session.get(Customer, purchase.customer_id)
    if customer is None or customer.deleted_at is not None:
        return
    needs_auth = code == "authentication_required"
    action = (
        "Your bank asks you to confirm this payment yourself."
        if needs_auth
        else "Your card was declined."
    )
    queue_mail(
        session,
        to=customer.user.email,
        subject="Auto-recharge is paused",
        body="\n".join(
            [
                f"Hello {customer.user.name},",
                "",
                f"We could not recharge {purchase.credits} credits automatically. {action}",
                "Auto-recharge is off until you turn it on again.",
                "",
                "To confirm this payment, or pay it with another card, visit:",
                f"  {settings.backend_url}/billing/payments/{purchase.payment_id}/authenticate",
            ]
        ),
        kind="auto_recharge_failed",
        dedupe_key=f"auto-recharge-failed:{purchase.id}",
    )


def recharge_gave_up(
    services: Services, session: Session, payload: dict[str, Any], error: str, dead: bool
) -> None:
    """When the recharge job has spent its tries (Stripe away for hours), free the slot and
    turn auto-recharge off with the reason, rather than hold the slot for ever. A success
    that still arrives by webhook grants the credits as usual."""
    if not dead:
        return
    purchase = session.get(CreditPurchase, payload["purchase_id"])
    if purchase is None or purchase.status != PurchaseStatus.PENDING:
        return
    payment = session.get(Payment, purchase.payment_id)
    if payment is not None and payment.status in TERMINAL:
        return
    purchase.status = PurchaseStatus.FAILED
    purchase.failure = error[:500]
    disable_after_failure(
        session, purchase, payment, services.settings, reason="could not reach Stripe"
    )
