"""Finishing a payment with the customer present: the page the auto-recharge and failed-
payment e-mails link to, and where a purchase or an order goes when the bank asks for
3-D Secure. It tries the payment again with a saved or new card, and Stripe.js completes
the authentication; the server then re-reads the payment from Stripe."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select
from starlette.datastructures import FormData
from starlette.responses import Response

from billfold.auth.deps import ServicesDep
from billfold.auth.service import Caller
from billfold.credits.models import CreditPurchase
from billfold.credits.purchase import credits_bought_with
from billfold.customers.service import acting_customer
from billfold.kit.errors import BillfoldError, InvalidInput, NotFound
from billfold.pages.billing.outcomes import payment_outcome, say
from billfold.pages.deps import FormDep, PageCallerDep, PagesDep, PageWorkDep, field
from billfold.pages.rendering import Pages
from billfold.payments import intents, methods, orders
from billfold.payments.models import Payment, PaymentStatus
from billfold.services import Services

router = APIRouter(include_in_schema=False)


def done_page(payment: Payment) -> str:
    """Where a finished payment leads: its order, or the credits page."""
    return f"/billing/orders/{payment.order_id}" if payment.order_id else "/billing/credits"


def chosen_card(services: Services, caller: Caller, form: FormData) -> str:
    """The card a payment form chose: a saved one's ID, or the new one Stripe.js just set up
    (attached to the customer here, which is harmless if the SetupIntent did it already)."""
    choice = field(form, "payment_method_choice")
    if choice not in ("", "new"):
        return choice
    method = field(form, "payment_method_id")
    if not method:
        raise InvalidInput("Enter your card details.")
    return methods.attach(services, caller, method).card.id


def after_attempt(pages: Pages, payment: Payment, *, paid: str, back: str) -> Response:
    """Where to go after trying a card: done, the 3-D Secure step, or back with the decline."""
    if payment.status == PaymentStatus.SUCCEEDED:
        return pages.redirect(done_page(payment), notice=paid)
    if payment.status == PaymentStatus.REQUIRES_ACTION or (
        payment.decline_code == "authentication_required"
    ):
        return pages.redirect(f"/billing/payments/{payment.id}/authenticate")
    return pages.redirect(back, error=payment_outcome(payment) or "The payment did not go through.")


def _client_secret(payment_id: str, caller: PageCallerDep, services: ServicesDep) -> str | None:
    # Asked of Stripe (by the service, its transaction its own) before the page's unit of
    # work opens: a route's dependencies are resolved in order, so none stays open meanwhile.
    return intents.client_secret_of(services, caller, payment_id)


@router.get("/billing/payments/{payment_id}/authenticate")
def authenticate_page(
    payment_id: str,
    request: Request,
    client_secret: Annotated[str | None, Depends(_client_secret)],
    work: PageWorkDep,
    pages: PagesDep,
) -> Response:
    session = work.session
    payment = intents.payment_of(session, work.caller, payment_id)
    customer = acting_customer(session, work.caller)
    if payment.customer_id != customer.id:  # an admin's own pages show their own only
        raise NotFound("No such payment")
    purchase = session.scalar(select(CreditPurchase).where(CreditPurchase.payment_id == payment.id))
    cards = methods.saved_cards(session, customer.id)
    order = orders.get_order(session, customer, payment.order_id) if payment.order_id else None
    lines = [(line.quantity, line.product_name) for line in order.lines] if order else []
    return pages.render(
        request,
        "billing/authenticate.html",
        section="/billing/credits" if payment.order_id is None else "/billing/orders",
        payment=payment,
        purchase=purchase,
        order_lines=lines,
        cards=cards,
        current_card=payment.payment_method_id
        or (purchase.payment_method_id if purchase else None),
        client_secret=client_secret,
        problem=payment_outcome(payment),
        done=done_page(payment),
    )


@router.post("/billing/payments/{payment_id}/pay")
def pay(
    payment_id: str, caller: PageCallerDep, form: FormDep, pages: PagesDep, services: ServicesDep
) -> Response:
    back = f"/billing/payments/{payment_id}/authenticate"
    try:
        method = chosen_card(services, caller, form)
        outcome = intents.pay_with_card(services, caller, payment_id, method)
        outcome.raise_if_order_canceled()
    except BillfoldError as exc:
        return pages.redirect(back, error=say(exc))
    return after_attempt(
        pages, outcome.payment, paid=paid_notice(services, outcome.payment), back=back
    )


@router.post("/billing/payments/{payment_id}/confirm")
def confirmed(
    payment_id: str, caller: PageCallerDep, _form: FormDep, pages: PagesDep, services: ServicesDep
) -> Response:
    """Stripe.js finished (or abandoned) 3-D Secure: record where the payment stands now."""
    back = f"/billing/payments/{payment_id}/authenticate"
    try:
        outcome = intents.confirm_payment(services, caller, payment_id)
        outcome.raise_if_order_canceled()
    except BillfoldError as exc:
        return pages.redirect(back, error=say(exc))
    payment = outcome.payment
    if payment.status == PaymentStatus.SUCCEEDED:
        return pages.redirect(done_page(payment), notice=paid_notice(services, payment))
    return pages.redirect(
        back,
        error="The payment was not completed: the bank's check failed or was cancelled. "
        "You were not charged.",
    )


def paid_notice(services: Services, payment: Payment) -> str:
    """What a customer reads once a payment went through."""
    credits = credits_bought_with(services, payment.id)
    if credits is not None:
        return f"Payment complete: {credits:,} credits added."
    return "Payment complete: your order is paid."
