"""The console's dashboard: the seeds' figures over 24 h, 7 days or 30 days, as bars."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from billfold.kit.money import format_money
from billfold.operations import dashboard
from billfold.pages.admin.charts import Bar, bars, seconds
from billfold.pages.deps import AdminPageWorkDep, PagesDep

router = APIRouter(include_in_schema=False)


@router.get("/admin")
def show_dashboard(
    request: Request,
    work: AdminPageWorkDep,
    pages: PagesDep,
    window: str = "24h",
) -> Response:
    if window not in dashboard.WINDOWS:
        window = "24h"
    board = dashboard.figures(work.session, window)
    return pages.render(
        request,
        "admin/dashboard.html",
        title="Dashboard",
        section="/admin",
        window=window,
        windows=list(dashboard.WINDOWS),
        board=board,
        charts=charts(board),
        seconds=seconds,
    )


def _money(amounts: dict[str, int]) -> str:
    return ", ".join(format_money(a, c) for c, a in sorted(amounts.items())) or "none"


def charts(board: dashboard.Dashboard) -> dict[str, Any]:
    """Each panel's bars, in the order an operator reads them."""
    p, r, c = board.payments, board.refunds, board.credits
    by = board.webhooks.by_status
    jobs = board.jobs.by_status
    panels: dict[str, list[Bar]] = {
        "signups": bars(
            [
                ("Signed up", board.signups.signups, "plain"),
                ("Linked to Stripe", board.signups.linked, "good"),
                ("Not linked yet", board.signups.unlinked, "warn"),
                ("Link gave up", board.signups.link_jobs_dead, "bad"),
                ("Cards attached", board.cards_attached, "good"),
            ]
        ),
        "payments": bars(
            [
                ("Succeeded", p.succeeded, "good"),
                ("Declined", p.declined, "bad"),
                ("Requires action", p.requires_action, "warn"),
                ("Canceled", p.canceled, "plain"),
                ("3-D Secure passed", p.three_ds_passed, "good"),
                ("3-D Secure failed", p.three_ds_failed, "bad"),
            ]
        ),
        "refunds": bars(
            [(status.capitalize(), n, _tone(status)) for status, n in sorted(r.by_status.items())]
        ),
        "credits": bars(
            [
                ("Sold", c.sold, "good"),
                ("Consumed", c.consumed, "plain"),
                ("Granted", c.granted, "plain"),
                ("Taken back by refunds", c.refunded, "warn"),
                ("Adjusted", c.adjusted, "plain"),
            ]
        ),
        "recharges": bars(
            [
                (status.capitalize(), n, _tone(status))
                for status, n in sorted(board.recharges_by_status.items())
            ]
            + [("Turned off", board.auto_recharge_disabled, "bad")]
        ),
        "webhooks": bars(
            [
                (status.capitalize(), by.get(status, 0), _tone(status))
                for status in ("processed", "ignored", "pending", "failed")
            ]
        ),
        "jobs": bars(
            [
                (status.capitalize(), jobs.get(status, 0), _tone(status))
                for status in ("pending", "running", "done", "dead")
            ]
        ),
    }
    return {
        "panels": panels,
        "succeeded_amount": _money(p.succeeded_amount),
        "refunded_amount": _money(r.succeeded_amount),
    }


def _tone(status: str) -> str:
    return {
        "succeeded": "good",
        "processed": "good",
        "done": "good",
        "failed": "bad",
        "dead": "bad",
        "canceled": "plain",
        "pending": "warn",
        "running": "plain",
        "ignored": "plain",
    }.get(status, "plain")
