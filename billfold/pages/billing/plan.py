"""The plan page: upgrade through Stripe Checkout, change plan after a preview of what it
charges, cancel at period end, pause and resume payments, and the customer's invoices."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from billfold.auth.deps import ServicesDep
from billfold.customers.service import acting_customer
from billfold.kit.errors import BillfoldError, InvalidInput, NotFound
from billfold.pages.billing.outcomes import act, say
from billfold.pages.billing.overview import status_label, trial_days_left
from billfold.pages.deps import FormDep, PageCallerDep, PagesDep, PageWorkDep, field
from billfold.subscriptions import (
    cancellation,
    change_plan,
    dunning,
    invoices,
    licenses,
    lifecycle,
    plans,
    scheduled_changes,
)
from billfold.subscriptions.models import ScheduledPlanChange, Subscription

router = APIRouter(include_in_schema=False)

#: Invoices shown at once; older ones are a link away.
INVOICES_SHOWN = 12
#: What Stripe does with the invoices falling due while a customer pauses payments: none is
#: charged, none piles up to be paid on resuming.
PAUSE_BEHAVIOR = "void"


@router.get("/billing/plan")
def plan_page(
    request: Request,
    work: PageWorkDep,
    pages: PagesDep,
    invoices_from: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Response:
    session = work.session
    customer = acting_customer(session, work.caller)
    try:
        subscription: Subscription | None = lifecycle.subscription_of(session, customer.id)
    except NotFound:
        subscription = None
    listed = invoices.list_invoices(
        session,
        work.caller,
        invoices.InvoiceFilter(customer_id=customer.id),
        limit=INVOICES_SHOWN,
        offset=invoices_from,
    )
    return pages.render(
        request,
        "billing/plan.html",
        section="/billing/plan",
        subscription=subscription,
        status_label=status_label(subscription) if subscription else "",
        trial_days_left=trial_days_left(subscription) if subscription else None,
        paid=_paid(subscription),
        pending=_pending(session, subscription),
        license=licenses.current(session, customer.id),
        plans=[p for p in plans.list_plans(session) if p.stripe_price_id],
        invoices=listed,
        dunning=dunning.open_case(session, customer.id),
    )


def _pending(session: Session, subscription: Subscription | None) -> ScheduledPlanChange | None:
    """A change set for the period end, once Stripe holds its schedule (as the API shows)."""
    found = scheduled_changes.pending_change(session, subscription.id) if subscription else None
    return found if found is not None and found.stripe_schedule_id else None


def _paid(subscription: Subscription | None) -> bool:
    return bool(
        subscription
        and subscription.stripe_subscription_id
        and str(subscription.status) != "canceled"
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


def _preview(
    caller: PageCallerDep,
    services: ServicesDep,
    plan: Annotated[str, Query(max_length=50)] = "",
) -> change_plan.PlanChangePreview | BillfoldError:
    """Stripe's preview of the change, asked before the page's unit of work opens (no
    transaction stays open across the Stripe call); a refusal is shown, not raised."""
    try:
        return change_plan.preview(services, caller, plan_code=plan)
    except BillfoldError as exc:
        return exc


@router.get("/billing/plan/change")
def change_preview(
    request: Request,
    preview: Annotated[change_plan.PlanChangePreview | BillfoldError, Depends(_preview)],
    work: PageWorkDep,
    pages: PagesDep,
) -> Response:
    """What a plan change charges now and at the next renewal, before the customer confirms."""
    if isinstance(preview, BillfoldError):
        return pages.redirect("/billing/plan", error=say(preview))
    subscription = lifecycle.subscription_of(
        work.session, acting_customer(work.session, work.caller).id
    )
    return pages.render(
        request,
        "billing/change_plan.html",
        section="/billing/plan",
        preview=preview,
        current=subscription.plan,
        target=plans.get_plan(work.session, preview.plan),
    )


@router.post("/billing/plan/change")
def change(
    caller: PageCallerDep, form: FormDep, pages: PagesDep, services: ServicesDep
) -> Response:
    def switch() -> str:
        code = field(form, "plan")
        changed = change_plan.change_plan(
            services,
            caller,
            plan_code=code,
            proration_date=_previewed_at(field(form, "proration_date")),
        )
        if changed.plan.code != code:  # a downgrade set for the period end (the setting)
            return "Your plan changes at the end of the current period."
        return f"You are now on the {changed.plan.name} plan."

    return act(pages, "/billing/plan", switch)


def _previewed_at(text: str) -> datetime | None:
    """The preview's proration time, so the change charges what the preview showed."""
    if not text:
        return None
    try:
        at = datetime.fromisoformat(text)
        # One without an offset is UTC, as the API reads it (UtcDatetime); the conversion
        # overflows for a time at the very ends of the calendar.
        return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidInput("That preview is not valid: please preview the change again.") from None


@router.post("/billing/plan/change/cancel")
def keep_plan(
    caller: PageCallerDep, _form: FormDep, pages: PagesDep, services: ServicesDep
) -> Response:
    """Drop a change set for the period end (the same service as the API's)."""

    def keep() -> str:
        kept = scheduled_changes.cancel(services, caller)
        return f"You stay on the {kept.plan.name} plan."

    return act(pages, "/billing/plan", keep)


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


@router.post("/billing/plan/pause")
def pause(
    caller: PageCallerDep, _form: FormDep, pages: PagesDep, services: ServicesDep
) -> Response:
    def hold() -> str:
        cancellation.pause(services, caller, behavior=PAUSE_BEHAVIOR)
        return "Payments are paused: nothing is charged until you resume them."

    return act(pages, "/billing/plan", hold)


@router.post("/billing/plan/resume")
def resume(
    caller: PageCallerDep, _form: FormDep, pages: PagesDep, services: ServicesDep
) -> Response:
    """Undo a cancellation at the period's end, or a pause (the same service as the API's)."""

    def keep() -> str:
        cancellation.resume(services, caller)
        return "Your plan will renew as usual."

    return act(pages, "/billing/plan", keep)
