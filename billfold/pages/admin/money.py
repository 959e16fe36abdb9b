"""The console's payments and refunds: lists filtered by status, date and customer."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Annotated, TypeVar

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from billfold.kit.errors import InvalidInput
from billfold.kit.paging import Period
from billfold.pages.admin.paging import PAGE_SIZE, pager
from billfold.pages.deps import AdminPageWorkDep, PagesDep
from billfold.payments import listing
from billfold.payments.models import PaymentStatus, RefundStatus

router = APIRouter(include_in_schema=False)
Text = Annotated[str, Query(max_length=100)]
E = TypeVar("E", bound=StrEnum)


@router.get("/admin/payments")
def list_payments(
    request: Request,
    work: AdminPageWorkDep,
    pages: PagesDep,
    status: Text = "",
    customer: Text = "",
    day_from: Annotated[str, Query(alias="from", max_length=10)] = "",
    day_to: Annotated[str, Query(alias="to", max_length=10)] = "",
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    where = listing.PaymentFilter(
        customer_id=customer or None,
        status=_one_of(PaymentStatus, status),
        created=days(day_from, day_to),
    )
    page = listing.list_payments(work.session, where, limit=PAGE_SIZE, offset=offset)
    return pages.render(
        request,
        "admin/payments.html",
        title="Payments",
        section="/admin/payments",
        page=page,
        pager=pager(request, page),
        statuses=[str(s) for s in PaymentStatus],
        chosen={"status": status, "customer": customer, "from": day_from, "to": day_to},
    )


@router.get("/admin/refunds")
def list_refunds(
    request: Request,
    work: AdminPageWorkDep,
    pages: PagesDep,
    status: Text = "",
    customer: Text = "",
    day_from: Annotated[str, Query(alias="from", max_length=10)] = "",
    day_to: Annotated[str, Query(alias="to", max_length=10)] = "",
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    where = listing.RefundFilter(
        customer_id=customer or None,
        status=_one_of(RefundStatus, status),
        created=days(day_from, day_to),
    )
    page = listing.list_refunds(work.session, where, limit=PAGE_SIZE, offset=offset)
    return pages.render(
        request,
        "admin/refunds.html",
        title="Refunds",
        section="/admin/refunds",
        page=page,
        pager=pager(request, page),
        statuses=[str(s) for s in RefundStatus],
        chosen={"status": status, "customer": customer, "from": day_from, "to": day_to},
    )


def days(first: str, last: str) -> Period:
    """From the start of `first` to the end of `last` (days in UTC, as a date input sends)."""
    try:
        start = _midnight(date.fromisoformat(first)) if first else None
        end = _midnight(date.fromisoformat(last) + timedelta(days=1)) if last else None
    except ValueError:
        raise InvalidInput("Dates look like 2026-11-29") from None
    return Period.of(start, end)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def _one_of(kind: type[E], value: str) -> E | None:
    if not value:
        return None
    try:
        return kind(value)
    except ValueError:
        raise InvalidInput(f"No such status: {value}") from None
