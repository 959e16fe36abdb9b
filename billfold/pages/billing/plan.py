"""The plan page: upgrade through Stripe Checkout, change plan, cancel at period end, resume."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from billfold.auth.deps import ServicesDep
from billfold.customers.service import acting_customer
from billfold.kit.errors import BillfoldError, NotFound
from billfold.pages.billing.outcomes import act, say
from billfold.pages.billing.overview import status_label, trial_days_left
from billfold.pages.deps import FormDep, PageCallerDep, PagesDep, field
from billfold.subscriptions import cancellation, change_plan, lifecycle, plans
from billfold.subscriptions.models import Subscription

router = APIRouter(include_in_schema=False)


@router.get("/billing/plan")
def plan_page(
    request: Request, caller: PageCallerDep, pages: PagesDep, services: ServicesDep
) -> Response:
    with services.db.transaction() as session:
        customer = acting_customer(session, caller)
        try:
            subscription: Subscription | None = lifecycle.subscription_of(session, customer.id)
        except NotFound:
            subscription = None
        paid = bool(
            subscription
            and subscription.stripe_subscription_id
            and str(subscription.status) != "canceled"
        )
        return pages.render(
            request,
            "billing/plan.html",
            section="/billing/plan",
            subscription=subscription,
            status_label=status_label(subscription) if subscription else "",
            trial_days_left=trial_days_left(subscription) if subscription else None,
            paid=paid,
            plans=[p for p in plans.list_plans(session) if p.stripe_price_id],
        )


@router.post("/billing/plan/checkout")
def upgrade(
    request: Request, caller: PageCallerDep, form: FormDep, pages: PagesDep, services: ServicesDep
) -> Response:
    base = services.settings.backend_url.rstrip("/")
    try:
        url = lifecycle.checkout(
            services,
            caller,
            plan_code=field(form, "plan"),
            success_url=f"{base}/billing?checkout=done",
            cancel_url=f"{base}/billing/plan",
        )
    except BillfoldError as exc:
        return pages.redirect("/billing/plan", error=say(exc))
    # A page that moves on to Checkout by itself, rather than a redirect: the CSP's
    # form-action keeps forms to Billfold, and it also covers a form's redirects.
    return pages.render(request, "billing/to_checkout.html", section="/billing/plan", url=url)


@router.post("/billing/plan/change")
def change(
    caller: PageCallerDep, form: FormDep, pages: PagesDep, services: ServicesDep
) -> Response:
    def switch() -> str:
        changed = change_plan.change_plan(services, caller, plan_code=field(form, "plan"))
        return f"You are now on the {changed.plan.name} plan."

    return act(pages, "/billing/plan", switch)


@router.post("/billing/plan/cancel")
def cancel(
    caller: PageCallerDep, _form: FormDep, pages: PagesDep, services: ServicesDep
) -> Response:
    def stop() -> str:
        done = cancellation.cancel(services, caller, at_period_end=True)
        if str(done.status) == "canceled":
            return "Your plan is canceled."
        return "Your plan will end at the end of the current period."

    return act(pages, "/billing/plan", stop)


@router.post("/billing/plan/resume")
def resume(
    caller: PageCallerDep, _form: FormDep, pages: PagesDep, services: ServicesDep
) -> Response:
    def keep() -> str:
        cancellation.resume(services, caller)
        return "Your plan will renew as usual."

    return act(pages, "/billing/plan", keep)
