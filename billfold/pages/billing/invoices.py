"""Confirming a renewal with the bank: the page the dunning e-mail links to when a
subscription's invoice waits for 3-D Secure. Stripe.js confirms the invoice's payment intent
with the client secret Stripe gives us for the page; the server then re-reads the invoice."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from billfold.auth.deps import ServicesDep
from billfold.pages.deps import FormDep, PageCallerDep, PagesDep
from billfold.subscriptions.invoices import InvoiceToConfirm, invoice_to_confirm

router = APIRouter(include_in_schema=False)


def _invoice(invoice_id: str, caller: PageCallerDep, services: ServicesDep) -> InvoiceToConfirm:
    # Asked of Stripe by the service (its transactions its own); no page transaction is open.
    return invoice_to_confirm(services, caller, invoice_id)


InvoiceDep = Annotated[InvoiceToConfirm, Depends(_invoice)]


@router.get("/billing/invoices/{invoice_id}/authenticate")
def authenticate_invoice_page(request: Request, invoice: InvoiceDep, pages: PagesDep) -> Response:
    return pages.render(
        request, "billing/authenticate_invoice.html", section="/billing/plan", invoice=invoice
    )


@router.post("/billing/invoices/{invoice_id}/confirm")
def invoice_confirmed(
    invoice_id: str, _form: FormDep, invoice: InvoiceDep, pages: PagesDep
) -> Response:
    """Stripe.js finished (or abandoned) 3-D Secure: say where the invoice stands now."""
    back = f"/billing/invoices/{invoice_id}/authenticate"
    if invoice.status == "paid":
        return pages.redirect(back, notice="Payment complete: your invoice is paid.")
    return pages.redirect(
        back,
        error="The payment was not completed: the bank's check failed or was cancelled. "
        "You were not charged.",
    )
