"""The console's customers: a searchable, paged list, and one customer's page with its
actions (refund, grant or adjust credits) and the privacy export as a download."""

from __future__ import annotations

import json
import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from billfold.auth.deps import ServicesDep
from billfold.credits import consume as spending
from billfold.credits.models import EntryKind
from billfold.customers import directory, privacy_export
from billfold.kit.errors import BillfoldError, InvalidInput
from billfold.operations import customer_view
from billfold.operations.customer_view import customer_overview
from billfold.pages.admin.forms import choice, minor_units, whole
from billfold.pages.admin.paging import PAGE_SIZE, pager
from billfold.pages.deps import AdminPageWorkDep, FormDep, PageAdminDep, PagesDep, field
from billfold.payments import refunds

router = APIRouter(include_in_schema=False)


@router.get("/admin/customers")
def list_customers(
    request: Request,
    work: AdminPageWorkDep,
    pages: PagesDep,
    q: Annotated[str, Query(max_length=320)] = "",
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    page = directory.search_customers(
        work.session, directory.CustomerFilter(search=q or None), limit=PAGE_SIZE, offset=offset
    )
    return pages.render(
        request,
        "admin/customers.html",
        title="Customers",
        section="/admin/customers",
        q=q,
        page=page,
        pager=pager(request, page),
    )


@router.get("/admin/customers/{customer_id}")
def show_customer(
    customer_id: str,
    request: Request,
    work: AdminPageWorkDep,
    pages: PagesDep,
) -> Response:
    seen = customer_overview(work.session, customer_id)
    return pages.render(
        request,
        "admin/customer.html",
        title=seen.customer.user.email,
        section="/admin/customers",
        seen=seen,
        # A fresh key per rendering: a form posted twice grants once.
        grant_key=uuid.uuid4().hex,
        refund_reasons=REFUND_REASONS,
    )


REFUND_REASONS = {
    "requested_by_customer": "Requested by the customer",
    "duplicate": "Duplicate",
    "fraudulent": "Fraudulent",
    "other": "Other",
}


@router.post("/admin/customers/{customer_id}/refunds")
def refund_payment(
    customer_id: str,
    form: FormDep,
    caller: PageAdminDep,
    pages: PagesDep,
    services: ServicesDep,
) -> Response:
    back = f"/admin/customers/{customer_id}"
    try:
        payment_id = field(form, "payment_id")
        currency = customer_view.payment_currency(services, customer_id, payment_id)
        made = refunds.request_refund(
            services,
            payment_id,
            amount=_refund_amount(field(form, "amount"), currency),
            reason=choice(field(form, "reason"), REFUND_REASONS, label="reason"),
            notes=field(form, "notes")[:2000] or None,
            actor=caller.actor,
        )
    except BillfoldError as exc:
        return pages.redirect(back, error=exc.message)
    return pages.redirect(back, notice=f"Refund {made.id} recorded ({made.status}).")


@router.post("/admin/customers/{customer_id}/credits")
def grant_credits(
    customer_id: str,
    form: FormDep,
    work: AdminPageWorkDep,
    pages: PagesDep,
) -> Response:
    back = f"/admin/customers/{customer_id}"
    try:
        kind = EntryKind(choice(field(form, "kind"), ("grant", "adjustment"), label="kind"))
        reason = field(form, "reason")
        if not reason:
            raise InvalidInput("Say why: the reason is recorded with the credits.")
        amount = whole(field(form, "amount"), label="Credits")
        # A savepoint: a refused grant, shown on the page, commits nothing.
        with work.session.begin_nested():
            posted = spending.grant(
                work.session,
                work.caller,
                customer_id=customer_id,
                amount=amount,
                kind=kind,
                reason=reason[:500],
                idempotency_key=field(form, "key")[:100] or uuid.uuid4().hex,
            )
    except BillfoldError as exc:
        return pages.redirect(back, error=exc.message)
    done = "Already recorded" if posted.replayed else f"{kind.capitalize()} recorded"
    return pages.redirect(back, notice=f"{done}: balance is now {posted.balance_after} credits.")


@router.get("/admin/customers/{customer_id}/export")
def download_export(customer_id: str, work: AdminPageWorkDep) -> Response:
    seen = customer_overview(work.session, customer_id)
    data = privacy_export.export(work.session, work.caller, seen.customer.user_id)
    return Response(
        json.dumps(data, indent=2),
        media_type="application/json",
        headers={"content-disposition": f'attachment; filename="export-{customer_id}.json"'},
    )


def _refund_amount(text: str, currency: str) -> int | None:
    """Empty: all that is left to refund."""
    return minor_units(text, currency) if text.strip() else None
