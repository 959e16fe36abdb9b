"""Buying credits: with a saved card (charged off-session now) or through Elements.

A purchase is a payment whose purpose is "credits". The credits are granted by the hook
that runs when the payment's success is recorded — by whichever of the charge answer, the
confirm call or the webhook gets there first — under a ledger key that makes it once.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from billfold.auth.service import Caller
from billfold.config import Settings
from billfold.credits import ledger, packages
from billfold.credits.models import (
    CreditPurchase,
    PurchaseKind,
)
from billfold.customers.models import Customer
from billfold.customers.service import acting_customer
from billfold.customers.stripe_sync import ensure_stripe_customer
from billfold.kit.errors import InvalidInput
from billfold.payments.intents import IntentOutcome, record, record_refusal
from billfold.payments.methods import own_card
from billfold.payments.models import Payment
from billfold.payments.orders import MAX_AMOUNT
from billfold.services import Services
from billfold.stripe_gateway import PaymentDeclined, StripeFailure, StripePaymentIntent

PURPOSE = "credits"
LINK_WAIT_SECONDS = 10.0


@dataclass(frozen=True)
class PurchaseRequest:
    package_id: str | None = None
    custom_credits: int | None = None
    payment_method_id: str | None = None
    save_payment_method: bool = False
    customer_id: str | None = None


@dataclass(frozen=True)
class PurchaseOutcome:
    purchase: CreditPurchase
    charge: IntentOutcome  # the payment and its intent, declined or not
    balance: int


def price_of(
    session: Session, settings: Settings, *, package_id: str | None, custom_credits: int | None
) -> tuple[int, int, str, str | None]:
    """(credits, price, currency, package) of a package or of a custom amount of credits."""
    if package_id is not None:
        package = packages.get_package(session, package_id)
        return package.credits, package.price, package.currency, package.id
    assert custom_credits is not None
    low, high = settings.credits_custom_min, settings.credits_custom_max
    if not low <= custom_credits <= high:
        raise InvalidInput(
            f"A custom amount must be between {low} and {high} credits", code="amount_out_of_range"
        )
    price = custom_credits * settings.credits_unit_price
    if price > MAX_AMOUNT:
        raise InvalidInput(
            f"One payment may be at most {MAX_AMOUNT} minor units", code="amount_too_large"
        )
    return custom_credits, price, settings.stripe_currency, None


def new_purchase(
    session: Session,
    customer: Customer,
    *,
    kind: PurchaseKind,
    credits: int,
    price: int,
    currency: str,
    package_id: str | None,
    payment_method_id: str | None,
    purchase_id: str | None = None,
) -> CreditPurchase:
    payment = Payment(customer_id=customer.id, purpose=PURPOSE, amount=price, currency=currency)
    session.add(payment)
    session.flush()
    purchase = CreditPurchase(
        customer_id=customer.id,
        kind=kind,
        package_id=package_id,
        credits=credits,
        payment_id=payment.id,
        payment_method_id=payment_method_id,
    )
    if purchase_id:
        purchase.id = purchase_id
    session.add(purchase)
    session.flush()
    return purchase


def purchase_credits(
    services: Services, caller: Caller, request: PurchaseRequest
) -> PurchaseOutcome:
    with services.db.transaction() as session:
        customer = acting_customer(session, caller, request.customer_id)
        credits, price, currency, package_id = price_of(
            session,
            services.settings,
            package_id=request.package_id,
            custom_credits=request.custom_credits,
        )
    stripe_customer_id = ensure_stripe_customer(
        services, customer.id, wait=LINK_WAIT_SECONDS, source="first_payment"
    )
    method = request.payment_method_id
    if method:  # refuse someone else's card before anything is recorded
        own_card(services, stripe_customer_id, method)
    with services.db.transaction() as session:
        purchase = new_purchase(
            session,
            customer,
            kind=PurchaseKind.PURCHASE,
            credits=credits,
            price=price,
            currency=currency,
            package_id=package_id,
            payment_method_id=request.payment_method_id,
        )
        payment = session.get(Payment, purchase.payment_id)
        assert payment is not None
    if method:
        intent = charge(services, payment, purchase, stripe_customer_id, method, customer)
    else:
        intent = _create_intent(
            services,
            payment,
            purchase,
            stripe_customer_id,
            customer,
            save_card=request.save_payment_method,
        )
        _store_intent(services, payment.id, intent.id)
    outcome = record(services, payment.id, intent, attempted=method is not None)
    with services.db.transaction() as session:
        fresh = session.get(CreditPurchase, purchase.id)
        assert fresh is not None
        return PurchaseOutcome(fresh, outcome, ledger.balance(session, customer.id))


def charge(
    services: Services,
    payment: Payment,
    purchase: CreditPurchase,
    stripe_customer_id: str,
    payment_method_id: str,
    customer: Customer,
) -> StripePaymentIntent:
    """Charge a saved card off-session, once: a retry finds the intent a lost try made."""
    if payment.stripe_payment_intent_id:
        return services.stripe.retrieve_payment_intent(payment.stripe_payment_intent_id)
    intent = services.stripe.find_payment_intent(stripe_customer_id, payment.id)
    if intent is None:
        try:
            intent = _create_intent(
                services,
                payment,
                purchase,
                stripe_customer_id,
                customer,
                payment_method_id=payment_method_id,
            )
        except PaymentDeclined as exc:
            declined_id = exc.details.get("payment_intent_id")
            found = (
                services.stripe.retrieve_payment_intent(declined_id)
                if declined_id
                else services.stripe.find_payment_intent(stripe_customer_id, payment.id)
            )
            if found is None:
                raise
            intent = found
    _store_intent(services, payment.id, intent.id)
    return intent


def _store_intent(services: Services, payment_id: str, intent_id: str) -> None:
    with services.db.transaction() as session:
        session.execute(
            update(Payment)
            .where(Payment.id == payment_id, Payment.stripe_payment_intent_id.is_(None))
            .values(stripe_payment_intent_id=intent_id)
        )


def _create_intent(
    services: Services,
    payment: Payment,
    purchase: CreditPurchase,
    stripe_customer_id: str,
    customer: Customer,
    *,
    payment_method_id: str | None = None,
    save_card: bool = False,
) -> StripePaymentIntent:
    """The purchase's intent: charged off-session at once when a saved card is given.

    The payment (and so its ID, which the intent carries in its metadata and its
    idempotency key) is committed before this call: a process killed before storing the
    answer leaves a `creating` payment that the janitor finds the intent for."""
    try:
        return services.stripe.create_payment_intent(
            payment_id=payment.id,
            amount=payment.amount,
            currency=payment.currency,
            stripe_customer_id=stripe_customer_id,
            metadata={
                "customer_id": customer.id,
                "user_id": customer.user_id,
                "credit_purchase_id": purchase.id,
                "kind": str(purchase.kind),
            },
            receipt_email=customer.user.email,
            description=f"{purchase.credits} credits",
            payment_method_id=payment_method_id,
            off_session=payment_method_id is not None,
            save_card=save_card,
        )
    except StripeFailure as exc:
        record_refusal(services, payment.id, exc)  # a refusal fails the purchase
        raise


def credits_bought_with(services: Services, payment_id: str) -> int | None:
    """How many credits a payment buys (None: it pays for something else, an order), for
    telling the customer once it went through; a short transaction of its own."""
    with services.db.transaction() as session:
        return session.scalar(
            select(CreditPurchase.credits).where(CreditPurchase.payment_id == payment_id)
        )
