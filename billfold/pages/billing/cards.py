"""Saved cards: list, add (a SetupIntent confirmed by Stripe.js), set default, remove."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import JSONResponse, Response

from billfold.auth.deps import ServicesDep
from billfold.customers.service import acting_customer
from billfold.kit.errors import BillfoldError, InvalidInput
from billfold.pages.billing.outcomes import act, say
from billfold.pages.deps import FormDep, PageCallerDep, PagesDep, PageWorkDep, field
from billfold.payments import methods
from billfold.subscriptions import dunning

router = APIRouter(include_in_schema=False)


def card_label(brand: str | None, last4: str | None) -> str:
    return f"{(brand or 'card').capitalize()} ending in {last4 or '????'}"


def _stripe_cards(caller: PageCallerDep, services: ServicesDep) -> list[methods.CardView]:
    # Asked of Stripe (by the service, its transactions its own) before the page's unit of
    # work opens: a route's dependencies are resolved in order, so none stays open meanwhile.
    return methods.list_cards(services, caller)


@router.get("/billing/cards")
def cards(
    request: Request,
    saved: Annotated[list[methods.CardView], Depends(_stripe_cards)],
    work: PageWorkDep,
    pages: PagesDep,
) -> Response:
    return pages.render(
        request,
        "billing/cards.html",
        section="/billing/cards",
        cards=saved,
        dunning=dunning.open_case(work.session, acting_customer(work.session, work.caller).id),
    )


@router.post("/billing/cards/setup-intent")
def new_setup_intent(caller: PageCallerDep, _form: FormDep, services: ServicesDep) -> Response:
    """For the pages' script: a SetupIntent whose secret Stripe.js confirms with the card."""
    try:
        _intent_id, secret = methods.setup_intent(services, caller)
    except BillfoldError as exc:
        return JSONResponse({"error": say(exc)}, status_code=exc.status_code)
    return JSONResponse({"clientSecret": secret})


@router.post("/billing/cards")
def add_card(
    caller: PageCallerDep, form: FormDep, pages: PagesDep, services: ServicesDep
) -> Response:
    def save() -> str:
        method = field(form, "payment_method_id")
        if not method:
            raise InvalidInput("Enter your card details first.")
        view = methods.attach(services, caller, method)
        return f"{card_label(view.card.brand, view.card.last4)} saved."

    return act(pages, "/billing/cards", save)


@router.post("/billing/cards/{payment_method_id}/default")
def make_default(
    payment_method_id: str,
    caller: PageCallerDep,
    _form: FormDep,
    pages: PagesDep,
    services: ServicesDep,
) -> Response:
    def star() -> str:
        view = methods.set_default(services, caller, payment_method_id)
        return f"{card_label(view.card.brand, view.card.last4)} is now your default card."

    return act(pages, "/billing/cards", star)


@router.post("/billing/cards/{payment_method_id}/remove")
def remove(
    payment_method_id: str,
    caller: PageCallerDep,
    _form: FormDep,
    pages: PagesDep,
    services: ServicesDep,
) -> Response:
    def trash() -> str:
        methods.detach(services, caller, payment_method_id)
        return "Card removed."

    return act(pages, "/billing/cards", trash)
