"""One-off payments: create a PaymentIntent for an order, and record its outcome once.

`apply_intent` is where every path meets: the confirm call, the page coming back after
3-D Secure, and Stripe's webhooks all hand it the intent as Stripe has it now. A success is
recorded by a conditional update, so whichever arrives first fulfils the order, takes the
stock and queues the receipt, and every later arrival changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from billfold.auth.service import Caller
from billfold.customers.models import Customer
from billfold.customers.service import acting_customer
from billfold.customers.stripe_sync import ensure_stripe_customer
from billfold.kit import audit
from billfold.kit.db import utcnow
from billfold.kit.errors import Conflict, InvalidInput, NotFound
from billfold.kit.observability import PAYMENT_OUTCOMES
from billfold.payments import orders
from billfold.payments.catalog import get_product
from billfold.payments.fulfilment import purpose_of, refunded_total
from billfold.payments.methods import own_card
from billfold.payments.models import TERMINAL, Order, OrderStatus, Payment, PaymentStatus
from billfold.payments.refunds import refund_automatically
from billfold.services import Services
from billfold.stripe_gateway import (
    PaymentDeclined,
    StripeFailure,
    StripePaymentIntent,
    StripeRejected,
)
from billfold.webhooks.outbound.notify import payment_event

log = structlog.get_logger("billfold.payments")

# How long a payment call waits for a Stripe customer being created by another try.
LINK_WAIT_SECONDS = 10.0
# An order's payment in one of these states is replaced when the order is paid again.
_REPLACEABLE = frozenset({PaymentStatus.CANCELED, PaymentStatus.FAILED})
# Intent states Stripe still lets us cancel.
CANCELABLE = frozenset(
    {"requires_payment_method", "requires_confirmation", "requires_action", "requires_capture"}
)
ORDER_NOT_PENDING = "order no longer awaiting payment (canceled or paid) when the money arrived"


@dataclass(frozen=True)
class IntentRequest:
    product_id: str | None = None
    quantity: int | None = None
    order_id: str | None = None
    payment_method_id: str | None = None
    customer_id: str | None = None


@dataclass(frozen=True)
class IntentOutcome:
    payment: Payment
    intent: StripePaymentIntent
    # A card was tried in this call (not just an intent opened for the page to use).
    attempted: bool = True
    # The order's state after recording: a success on a canceled order is refunded.
    order_status: OrderStatus | None = None

    @property
    def declined(self) -> bool:
        return (
            self.attempted
            and self.payment.status == PaymentStatus.REQUIRES_PAYMENT_METHOD
            and self.payment.decline_code is not None
        )

    def raise_if_declined(self) -> None:
        """A card tried in this call was declined: 402 with Stripe's decline code."""
        if self.declined:
            raise PaymentDeclined(
                self.payment.failure_message or "The card was declined",
                decline_code=self.payment.decline_code,
                payment_id=self.payment.id,
                payment_intent_id=self.intent.id,
            )

    def raise_if_order_canceled(self) -> None:
        """The money arrived after the order was canceled: 409, and it is being refunded."""
        canceled = self.order_status == OrderStatus.CANCELED
        if canceled and self.payment.status == PaymentStatus.SUCCEEDED:
            raise OrderCanceledRefunded(
                "The order was canceled before this payment succeeded; it is refunded in full",
                payment_id=self.payment.id,
                order_id=self.payment.order_id,
            )

    @property
    def client_secret(self) -> str | None:
        """What the page needs to go on, while there is something left for it to do."""
        return None if self.payment.status in TERMINAL else self.intent.client_secret

    @property
    def next_action(self) -> dict[str, Any] | None:
        if self.payment.status == PaymentStatus.REQUIRES_ACTION:
            return self.intent.next_action
        return None


class OrderCanceledRefunded(Conflict):
    code = "order_canceled"


class _ClaimLost(Exception):
    """A concurrent call opened this order's payment first; start over and reuse it."""


def create_intent(services: Services, caller: Caller, request: IntentRequest) -> IntentOutcome:
    """Open (or reuse) the order's payment and its PaymentIntent; pay now with a saved card."""
    for _ in range(3):
        try:
            with services.db.transaction() as session:
                customer, order, payment = _open_payment(session, caller, request)
            break
        except _ClaimLost:
            continue
    else:  # pragma: no cover - three lost races in a row
        raise Conflict("This order is being paid by another request", code="payment_in_progress")

    stripe_customer_id = ensure_stripe_customer(
        services, customer.id, wait=LINK_WAIT_SECONDS, source="first_payment"
    )
    if request.payment_method_id:
        own_card(services, stripe_customer_id, request.payment_method_id)

    intent = _intent_for(services, payment, stripe_customer_id, customer, order)
    method = request.payment_method_id
    if method:
        intent = _try_card(services, payment, intent, method)
    return record(services, payment.id, intent, attempted=method is not None)


def _try_card(
    services: Services, payment: Payment, intent: StripePaymentIntent, method: str
) -> StripePaymentIntent:
    """Confirm the intent with this card, the customer present (3-D Secure may follow)."""
    if intent.status not in _CONFIRMABLE:
        return intent
    try:
        if intent.payment_method != method:
            intent = services.stripe.set_intent_payment_method(
                intent.id, method, payment_id=payment.id
            )
        return _confirm(services, payment, intent)
    except StripeRejected:
        # A concurrent call for the same order confirmed the intent between our read and our
        # confirm, and Stripe refuses a second one: answer where it stands now.
        current = services.stripe.retrieve_payment_intent(intent.id)
        if current.status in _CONFIRMABLE:
            raise
        return current


_CONFIRMABLE = ("requires_payment_method", "requires_confirmation")


def pay_with_card(
    services: Services, caller: Caller, payment_id: str, payment_method_id: str
) -> IntentOutcome:
    """Try an open payment again with a saved card while its customer is present: a credits
    purchase or recharge that needs 3-D Secure, or one whose card was declined."""
    with services.db.transaction() as session:
        payment = payment_of(session, caller, payment_id)
        customer = session.get(Customer, payment.customer_id)
        assert customer is not None
    if payment.stripe_payment_intent_id is None:
        raise Conflict("This payment has not reached Stripe yet", code="payment_not_started")
    intent = services.stripe.retrieve_payment_intent(payment.stripe_payment_intent_id)
    if payment.status not in TERMINAL:
        stripe_customer_id = ensure_stripe_customer(
            services, customer.id, wait=LINK_WAIT_SECONDS, source="first_payment"
        )
        own_card(services, stripe_customer_id, payment_method_id)
        intent = _try_card(services, payment, intent, payment_method_id)
    return record(services, payment.id, intent)


def history(session: Session, customer_id: str, *, limit: int = 50) -> list[Payment]:
    """A customer's payments, newest first, with their refunds."""
    return list(
        session.scalars(
            select(Payment)
            .where(Payment.customer_id == customer_id)
            .order_by(Payment.created_at.desc())
            .limit(limit)
        )
    )


def payment_of(session: Session, caller: Caller, payment_id: str) -> Payment:
    """A payment its customer (or an admin, or a service key) may see; 404 for anyone else."""
    payment = session.get(Payment, payment_id)
    if payment is None:
        raise NotFound("No such payment")
    customer = session.get(Customer, payment.customer_id)
    if customer is None or not caller.may_act_on(customer.user_id):
        raise NotFound("No such payment")
    return payment


def _open_payment(
    session: Session, caller: Caller, request: IntentRequest
) -> tuple[Customer, Order, Payment]:
    customer = acting_customer(session, caller, request.customer_id)
    if request.order_id:
        order = orders.get_order(session, customer, request.order_id)
        orders.ensure_payable(order)
        for line in order.lines:  # stock may have gone since the order was made
            if get_product(session, line.product_id, include_inactive=True).stock < line.quantity:
                raise orders.OutOfStock(f"{line.product_name!r} is out of stock")
    else:
        assert request.product_id is not None
        assert request.quantity is not None
        order = orders.create_order(session, customer, [(request.product_id, request.quantity)])
    if order.payment_id:
        current = session.get(Payment, order.payment_id)
        if current is not None and current.status not in _REPLACEABLE:
            return customer, order, current
    payment = Payment(
        customer_id=customer.id,
        order_id=order.id,
        amount=order.amount_total,
        currency=order.currency,
    )
    session.add(payment)
    session.flush()
    claimed = session.execute(
        update(Order)
        .where(Order.id == order.id, _same_payment(order.payment_id))
        .values(payment_id=payment.id)
    )
    if not claimed.rowcount:  # type: ignore[attr-defined]
        raise _ClaimLost
    return customer, order, payment


def _same_payment(payment_id: str | None):  # type: ignore[no-untyped-def]
    return Order.payment_id.is_(None) if payment_id is None else Order.payment_id == payment_id


def _intent_for(
    services: Services, payment: Payment, stripe_customer_id: str, customer: Customer, order: Order
) -> StripePaymentIntent:
    """The payment's PaymentIntent: the one it has, or a new one (same key on every retry)."""
    if payment.stripe_payment_intent_id:
        return services.stripe.retrieve_payment_intent(payment.stripe_payment_intent_id)
    try:
        intent = services.stripe.create_payment_intent(
            payment_id=payment.id,
            amount=payment.amount,
            currency=payment.currency,
            stripe_customer_id=stripe_customer_id,
            metadata={
                "customer_id": customer.id,
                "user_id": customer.user_id,
                "order_id": order.id,
            },
            receipt_email=customer.user.email,
            description=f"Billfold order {order.id}",
        )
    except StripeFailure as exc:
        record_refusal(services, payment.id, exc)
        raise
    with services.db.transaction() as session:
        stored = session.execute(
            update(Payment)
            .where(Payment.id == payment.id, Payment.stripe_payment_intent_id.is_(None))
            .values(stripe_payment_intent_id=intent.id, status=intent.status)
        )
        if stored.rowcount:  # type: ignore[attr-defined]
            return intent
        kept = session.scalar(
            select(Payment.stripe_payment_intent_id).where(Payment.id == payment.id)
        )
    # A concurrent call stored its intent first (Stripe's idempotency key makes them one).
    assert kept is not None
    return services.stripe.retrieve_payment_intent(kept)


def _confirm(
    services: Services, payment: Payment, intent: StripePaymentIntent
) -> StripePaymentIntent:
    with services.db.transaction() as session:
        attempt = session.execute(
            update(Payment)
            .where(Payment.id == payment.id)
            .values(confirm_attempts=Payment.confirm_attempts + 1)
            .returning(Payment.confirm_attempts)
        ).scalar_one()
    try:
        return services.stripe.confirm_payment_intent(
            intent.id, payment_id=payment.id, attempt=attempt
        )
    except PaymentDeclined:
        # The decline is recorded on the intent; read it back so we record what Stripe has.
        return services.stripe.retrieve_payment_intent(intent.id)


def confirm(services: Services, caller: Caller, payment_intent_id: str) -> IntentOutcome:
    """Re-read the intent from Stripe and record where it stands."""
    with services.db.transaction() as session:
        payment = _payment_by_intent(session, caller, payment_intent_id)
    return record(services, payment.id, services.stripe.retrieve_payment_intent(payment_intent_id))


def confirm_payment(services: Services, caller: Caller, payment_id: str) -> IntentOutcome:
    """`confirm`, for our payment's ID (the billing pages' 3-D Secure step names ours)."""
    with services.db.transaction() as session:
        intent_id = payment_of(session, caller, payment_id).stripe_payment_intent_id
    if intent_id is None:
        raise InvalidInput("This payment has not reached Stripe yet")
    return confirm(services, caller, intent_id)


def client_secret_of(services: Services, caller: Caller, payment_id: str) -> str | None:
    """The secret Stripe.js needs to finish a payment that waits for the customer (3-D
    Secure), or None when it waits for nothing; read from Stripe after a short transaction."""
    with services.db.transaction() as session:
        payment = payment_of(session, caller, payment_id)
        status, intent_id = payment.status, payment.stripe_payment_intent_id
    if status != PaymentStatus.REQUIRES_ACTION or intent_id is None:
        return None
    return services.stripe.retrieve_payment_intent(intent_id).client_secret


def _payment_by_intent(session: Session, caller: Caller, payment_intent_id: str) -> Payment:
    payment = session.scalar(
        select(Payment).where(Payment.stripe_payment_intent_id == payment_intent_id)
    )
    if payment is None:
        raise NotFound("No such payment")
    customer = session.get(Customer, payment.customer_id)
    if customer is None or not caller.may_act_on(customer.user_id):
        raise NotFound("No such payment")
    return payment


def record(
    services: Services, payment_id: str, intent: StripePaymentIntent, *, attempted: bool = True
) -> IntentOutcome:
    with services.db.transaction() as session:
        apply_intent(session, payment_id, intent, services)
        payment = session.get(Payment, payment_id)
        assert payment is not None
        session.refresh(payment)
        order = session.get(Order, payment.order_id) if payment.order_id else None
        if order is not None:
            session.refresh(order)
    return IntentOutcome(payment, intent, attempted, order.status if order else None)


def record_refusal(services: Services, payment_id: str, failure: StripeFailure) -> bool:
    """Stripe refused to create the payment's intent: the payment is `failed` (not left
    `creating` for ever), and what it was for is told so. True when this call recorded it.

    Only a refusal that proves no intent was made counts: Stripe unreachable, or a clash of
    idempotency keys, leaves the payment `creating` for the janitor to settle."""
    if failure.retryable or isinstance(failure, PaymentDeclined):
        return False
    if failure.code == "stripe_idempotency_conflict":
        return False
    with services.db.transaction() as session:
        return _fail(session, payment_id, services, failure.code, failure.message)


def fail_without_intent(session: Session, payment_id: str, services: Services) -> bool:
    """A `creating` payment for which Stripe holds no intent, long after it was begun."""
    return _fail(
        session, payment_id, services, "no_payment_intent", "No PaymentIntent was ever made"
    )


def _fail(session: Session, payment_id: str, services: Services, code: str, message: str) -> bool:
    failed = session.execute(
        update(Payment)
        .where(
            Payment.id == payment_id,
            Payment.status == PaymentStatus.CREATING,
            Payment.stripe_payment_intent_id.is_(None),
        )
        .values(status=PaymentStatus.FAILED, decline_code=code, failure_message=message)
    ).rowcount  # type: ignore[attr-defined]
    if not failed:
        return False
    payment = session.get(Payment, payment_id)
    assert payment is not None
    session.refresh(payment)
    purpose_of(services.wiring, payment).declined(session, payment, services.settings)
    PAYMENT_OUTCOMES.labels(outcome="failed").inc()
    log.warning("payment.failed", payment_id=payment_id, code=code)
    return True


def apply_intent(
    session: Session, payment_id: str, intent: StripePaymentIntent, services: Services
) -> bool:
    """Record the intent's state on our payment; True only for the call that records success."""
    status = PaymentStatus(intent.status)
    open_states = Payment.status.not_in([s.value for s in TERMINAL])
    # Money taken is recorded even on a payment we had given up on (`failed`).
    may_succeed = Payment.status.not_in([PaymentStatus.SUCCEEDED, PaymentStatus.CANCELED])
    # A webhook may be the first to tell us which intent a payment got (a lost answer).
    session.execute(
        update(Payment)
        .where(Payment.id == payment_id, Payment.stripe_payment_intent_id.is_(None))
        .values(stripe_payment_intent_id=intent.id)
    )
    if status == PaymentStatus.SUCCEEDED:
        won = session.execute(
            update(Payment)
            .where(Payment.id == payment_id, may_succeed)
            .values(
                status=status,
                succeeded_at=utcnow(),
                decline_code=None,
                failure_message=None,
                payment_method_id=intent.payment_method,
            )
        ).rowcount  # type: ignore[attr-defined]
        if won:
            _on_success(session, payment_id, services)
        return bool(won)
    declined = status == PaymentStatus.REQUIRES_PAYMENT_METHOD and intent.decline_code is not None
    before = session.execute(
        select(Payment.status, Payment.decline_code).where(Payment.id == payment_id)
    ).one()
    values: dict[str, object] = {
        "status": status,
        "payment_method_id": intent.payment_method,
        "decline_code": intent.decline_code if declined else None,
        "failure_message": intent.failure_message if declined else None,
    }
    if status == PaymentStatus.REQUIRES_ACTION:
        values["required_action"] = True
    changed = session.execute(
        update(Payment).where(Payment.id == payment_id, open_states).values(values)
    ).rowcount  # type: ignore[attr-defined]
    if changed and (before.status, before.decline_code) != (status, values["decline_code"]):
        if declined:
            payment = session.get(Payment, payment_id)
            assert payment is not None
            session.refresh(payment)
            purpose_of(services.wiring, payment).declined(session, payment, services.settings)
            payment_event(session, "payment.failed", payment)
        outcome = "declined" if declined else str(status)
        PAYMENT_OUTCOMES.labels(outcome=outcome).inc()
        log.info(
            "payment.status", payment_id=payment_id, status=outcome, decline=intent.decline_code
        )
    return False


def _on_success(session: Session, payment_id: str, services: Services) -> None:
    payment = session.get(Payment, payment_id)
    assert payment is not None
    session.refresh(payment)
    if payment.order_id is not None and not orders.claim_paid(session, payment.order_id):
        # The order was canceled (or paid by another payment) before this money arrived:
        # keep the order as it is and give the money back.
        refund_automatically(session, payment, note=ORDER_NOT_PENDING)
        audit.record(session, "stripe", "payment.succeeded_unwanted", payment.id)
        PAYMENT_OUTCOMES.labels(outcome="refunded_unwanted").inc()
        return
    purpose = purpose_of(services.wiring, payment)
    purpose.paid(session, payment, services.settings)
    payment_event(session, "payment.succeeded", payment)
    # A charge.refunded may have been recorded before the success itself.
    if already_refunded := refunded_total(session, payment.id):
        purpose.refunded(session, payment, already_refunded, services.settings)
    audit.record(
        session,
        "stripe",
        "payment.succeeded",
        payment.id,
        amount=payment.amount,
        currency=payment.currency,
    )
    PAYMENT_OUTCOMES.labels(outcome="succeeded").inc()
    log.info("payment.succeeded", payment_id=payment.id, amount=payment.amount)


def known_payment(session: Session, intent_id: str, metadata: dict[str, str]) -> Payment | None:
    """Ours for a Stripe intent, from what we hold: a payment storing its ID, else the one
    named by the payment_id in its metadata (unless that payment has another intent)."""
    payment = session.scalar(select(Payment).where(Payment.stripe_payment_intent_id == intent_id))
    if payment is None and metadata.get("payment_id"):
        payment = session.get(Payment, metadata["payment_id"])
        if payment is not None and payment.stripe_payment_intent_id not in (None, intent_id):
            return None
    return payment
