"""The credits page: balance, buying a package or a custom amount, auto-recharge, the ledger."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from billfold.auth.deps import ServicesDep
from billfold.credits import ledger, packages, purchase, recharge
from billfold.credits.schemas import AutoRechargeIn
from billfold.customers.service import acting_customer
from billfold.kit.errors import BillfoldError, InvalidInput
from billfold.pages.billing.outcomes import act, say
from billfold.pages.billing.payments import after_attempt, chosen_card, paid_notice
from billfold.pages.deps import FormDep, PageCallerDep, PagesDep, PageWorkDep, field, validated
from billfold.payments import methods

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 25


@router.get("/billing/credits")
def credits_page(
    request: Request,
    work: PageWorkDep,
    pages: PagesDep,
    services: ServicesDep,
    before: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    settings, session = services.settings, work.session
    customer = acting_customer(session, work.caller)
    entries = ledger.entries(session, customer.id, before=before, limit=PAGE_SIZE)
    more = len(entries) == PAGE_SIZE and entries[-1].entry_no > 1
    return pages.render(
        request,
        "billing/credits.html",
        section="/billing/credits",
        balance=ledger.balance(session, customer.id),
        packages=packages.list_packages(session),
        cards=methods.saved_cards(session, customer.id),
        current_card=None,
        account=recharge.account_of(session, customer.id),
        entries=entries,
        next_before=entries[-1].entry_no if more else None,
        first_page=before is None,
        custom_min=settings.credits_custom_min,
        custom_max=settings.credits_custom_max,
        unit_price=settings.credits_unit_price,
        currency=settings.stripe_currency,
    )


@router.post("/billing/credits/buy")
def buy(caller: PageCallerDep, form: FormDep, pages: PagesDep, services: ServicesDep) -> Response:
    back = "/billing/credits"
    choice = field(form, "package")
    new_card = field(form, "payment_method_choice") in ("", "new")
    try:
        custom = None
        if choice == "custom":
            amount = field(form, "custom_credits")
            if not amount.isdigit():
                raise InvalidInput("Enter how many credits you want, as a whole number.")
            custom = int(amount)
        elif not choice:
            raise InvalidInput("Choose a package or a custom amount.")
        method = chosen_card(services, caller, form)
        outcome = purchase.purchase_credits(
            services,
            caller,
            purchase.PurchaseRequest(
                package_id=None if custom is not None else choice,
                custom_credits=custom,
                payment_method_id=method,
            ),
        )
        if (
            new_card
            and not field(form, "save_card")
            and outcome.charge.payment.status in ("succeeded",)
        ):
            methods.detach(services, caller, method)  # used once, as the customer asked
    except BillfoldError as exc:
        return pages.redirect(back, error=say(exc))
    payment = outcome.charge.payment
    return after_attempt(pages, payment, paid=paid_notice(services, payment), back=back)


@router.post("/billing/credits/auto-recharge")
def auto_recharge(
    caller: PageCallerDep, form: FormDep, pages: PagesDep, services: ServicesDep
) -> Response:
    def save() -> str:
        threshold, amount = field(form, "threshold_credits"), field(form, "recharge_credits")
        wanted = validated(
            AutoRechargeIn,
            {
                "enabled": field(form, "enabled") == "1",
                "threshold_credits": int(threshold) if threshold.isdigit() else None,
                "recharge_credits": int(amount) if amount.isdigit() else None,
                "payment_method_id": field(form, "payment_method_id") or None,
            },
        )
        recharge.configure(
            services,
            caller,
            recharge.RechargeSettings(
                enabled=wanted.enabled,
                threshold_credits=wanted.threshold_credits,
                recharge_package_id=None,
                recharge_credits=wanted.recharge_credits,
                payment_method_id=wanted.payment_method_id,
            ),
        )
        return "Auto-recharge is on." if wanted.enabled else "Auto-recharge is off."

    return act(pages, "/billing/credits#auto-recharge", save)


@router.post("/billing/credits/recharge-now")
def recharge_now(
    caller: PageCallerDep, _form: FormDep, pages: PagesDep, services: ServicesDep
) -> Response:
    try:
        made = recharge.trigger(services, caller).purchase
    except BillfoldError as exc:
        return pages.redirect("/billing/credits#auto-recharge", error=say(exc))
    if str(made.status) == "succeeded":
        return pages.redirect("/billing/credits", notice=f"Recharged {made.credits:,} credits.")
    return pages.redirect(f"/billing/payments/{made.payment_id}/authenticate")
