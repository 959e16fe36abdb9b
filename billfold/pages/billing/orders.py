"""Orders: the catalog, placing an order, paying it (saved or new card, 3-D Secure), and the
payment history with refunds."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from billfold.auth.deps import ServicesDep
from billfold.customers.service import acting_customer
from billfold.kit.errors import BillfoldError, InvalidInput
from billfold.pages.billing.outcomes import say
from billfold.pages.billing.payments import after_attempt, chosen_card
from billfold.pages.deps import FormDep, PageCallerDep, PagesDep, PageWorkDep, field
from billfold.payments import catalog, intents, methods, orders
from billfold.payments.models import OrderStatus

router = APIRouter(include_in_schema=False)


@router.get("/billing/orders")
def orders_page(request: Request, work: PageWorkDep, pages: PagesDep) -> Response:
    session = work.session
    customer = acting_customer(session, work.caller)
    return pages.render(
        request,
        "billing/orders.html",
        section="/billing/orders",
        products=catalog.list_products(session),
        orders=orders.list_orders(session, customer_id=customer.id, status=None, limit=50),
        payments=intents.history(session, customer.id),
    )


@router.post("/billing/orders")
def place_order(work: PageWorkDep, form: FormDep, pages: PagesDep) -> Response:
    quantity = field(form, "quantity") or "1"
    try:
        if not quantity.isdigit() or not 1 <= int(quantity) <= 1000:
            raise InvalidInput("Enter a quantity between 1 and 1000.")
        with work.session.begin_nested():
            customer = acting_customer(work.session, work.caller)
            order = orders.create_order(
                work.session, customer, [(field(form, "product_id"), int(quantity))]
            )
            order_id = order.id
    except BillfoldError as exc:
        return pages.redirect("/billing/orders", error=say(exc))
    return pages.redirect(f"/billing/orders/{order_id}")


@router.get("/billing/orders/{order_id}")
def order_page(order_id: str, request: Request, work: PageWorkDep, pages: PagesDep) -> Response:
    session = work.session
    customer = acting_customer(session, work.caller)
    order = orders.get_order(session, customer, order_id)
    return pages.render(
        request,
        "billing/order.html",
        section="/billing/orders",
        order=order,
        payable=order.status == OrderStatus.PENDING,
        cards=methods.saved_cards(session, customer.id),
        current_card=None,
    )


@router.post("/billing/orders/{order_id}/pay")
def pay_order(
    order_id: str, caller: PageCallerDep, form: FormDep, pages: PagesDep, services: ServicesDep
) -> Response:
    back = f"/billing/orders/{order_id}"
    try:
        method = chosen_card(services, caller, form)
        outcome = intents.create_intent(
            services, caller, intents.IntentRequest(order_id=order_id, payment_method_id=method)
        )
    except BillfoldError as exc:
        return pages.redirect(back, error=say(exc))
    return after_attempt(
        pages, outcome.payment, paid="Payment complete: your order is paid.", back=back
    )
