"""The pages Stripe hosts, as the stand-in serves them: Checkout (`/checkout/{id}`), the
billing portal (`/billing_portal/{id}`) and an invoice's pay page (`/invoice/{id}`).

Plain HTML forms, no script: a browser, curl or a test posts the card form. Stripe's test
cards behave as on Stripe's pages: declines are shown and the page stays; 3-D Secure cards
ask for authentication first (a page with "Complete" and "Fail" buttons, like Stripe's
test authentication page).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web as aiohttp_web
from aiohttp.web import Request, Response

from billfold.standin import checkout, portal, web
from billfold.standin.billing import needs_authentication, pay_invoice
from billfold.standin.checkout import CheckoutError, NeedsAuthentication, new_card

Params = dict[str, str]
AUTH_FAILED = (
    "We are unable to authenticate your payment method. Please choose a different payment "
    "method and try again."
)


def _card_form(
    action: str,
    button: str,
    *,
    email: str | None = None,
    error: str = "",
    promotion_codes: bool = False,
) -> str:
    promotion = (
        "<p><label for='promotion_code'>Promotion code</label> "
        "<input id='promotion_code' name='promotion_code' autocomplete='off'></p>"
        if promotion_codes
        else ""
    )
    alert = f"<p role='alert'>{web.escape(error)}</p>" if error else ""
    email_field = (
        "<p><label for='email'>Email</label> "
        f"<input id='email' name='email' type='email' value='{web.escape(email)}' required></p>"
        if email is not None
        else ""
    )
    return (
        f"{alert}<form method='post' action='{web.escape(action)}'>{email_field}"
        "<p><label for='number'>Card number</label> "
        "<input id='number' name='number' inputmode='numeric' autocomplete='cc-number' "
        "placeholder='4242 4242 4242 4242' required></p>"
        "<p><label for='exp'>Expiration (MM/YY)</label> "
        "<input id='exp' name='exp' autocomplete='cc-exp' placeholder='12/34' required></p>"
        "<p><label for='cvc'>CVC</label> "
        "<input id='cvc' name='cvc' inputmode='numeric' autocomplete='cc-csc' placeholder='123' "
        f"required></p>{promotion}"
        f"<p><button type='submit'>{web.escape(button)}</button></p></form>"
    )


def _authenticate_form(action: str, payment_method: str, what: str) -> str:
    return (
        "<h1>Authenticate your payment</h1>"
        f"<p>Your bank asks you to confirm {web.escape(what)} (3-D Secure test page).</p>"
        f"<form method='post' action='{web.escape(action)}'>"
        f"<input type='hidden' name='payment_method' value='{web.escape(payment_method)}'>"
        "<button type='submit' name='outcome' value='complete'>Complete authentication</button> "
        "<button type='submit' name='outcome' value='fail'>Fail authentication</button></form>"
    )


def _date(epoch: int | None) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d") if epoch else "-"


def _recurring(plan: Any) -> dict[str, Any]:
    return {"interval": plan.interval, "interval_count": plan.interval_count}


def _interval(recurring: dict[str, Any] | None) -> str:
    if not recurring:
        return ""
    count = int(recurring.get("interval_count") or 1)
    unit = recurring["interval"]
    return f" per {unit}" if count == 1 else f" every {count} {unit}s"


# Checkout
def _checkout_page(cs: Any, *, error: str = "", status: int = 200) -> Response:
    if cs.status != "open":
        body = f"<h1>Checkout</h1><p>This Checkout Session is {web.escape(cs.status)}.</p>"
        if cs.status == "complete":
            body += f"<p><a href='{web.escape(_success_url(cs))}'>Continue</a></p>"
        return web.html_page("Checkout", body, status=410 if cs.status == "expired" else 200)
    rows = "".join(
        f"<tr><td>{web.escape(line.description)}</td><td>{line.quantity}</td>"
        f"<td>{web.money(line.unit_amount * line.quantity, line.currency)}"
        f"{_interval(line.recurring)}</td></tr>"
        for line in cs._lines
    )
    trial = (
        f"<p>{cs._trial_days} days free, then billed{_interval(cs._lines[0].recurring)}.</p>"
        if cs._trial_days
        else ""
    )
    button = "Subscribe" if cs.mode == "subscription" else "Pay"
    button = "Start trial" if cs._trial_days else button
    due = web.money(0 if cs._trial_days else cs.amount_total, cs.currency)
    email = None if cs.customer else (cs.customer_email or "")
    back = f"<p><a href='{web.escape(cs.cancel_url)}'>Back</a></p>" if cs.cancel_url else ""
    codes = bool(cs.allow_promotion_codes)
    form = _card_form(f"/checkout/{cs.id}", button, email=email, error=error, promotion_codes=codes)
    body = (
        f"<h1>Checkout</h1><table><thead><tr><th>Item</th><th>Qty</th><th>Price</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
        f"<p>Total due today: <strong>{due}</strong></p>"
        f"{trial}{form}{back}"
    )
    return web.html_page("Checkout", body, status=status)


def _success_url(cs: Any) -> str:
    return str(cs.success_url).replace("{CHECKOUT_SESSION_ID}", cs.id)


def _checkout_outcome(cs_id: str, result: Any) -> Response:
    if isinstance(result, NeedsAuthentication):
        body = _authenticate_form(
            f"/checkout/{cs_id}/authenticate", result.payment_method, "this payment"
        )
        return web.html_page("Authenticate your payment", body)
    raise aiohttp_web.HTTPSeeOther(_success_url(result))


async def _form(request: aiohttp_web.Request) -> dict[str, str]:
    posted = await request.post()
    return {key: str(value) for key, value in posted.items()}


async def checkout_page(request: Request, params: Params) -> Response:
    return _checkout_page(checkout.session(params["id"]))


async def checkout_pay(request: Request, params: Params) -> Response:
    form = await _form(request)
    cs = checkout.session(params["id"])
    try:
        result = checkout.pay(cs.id, card=form, authenticated=None, email=form.get("email"))
    except CheckoutError as exc:
        return _checkout_page(cs, error=exc.message, status=402)
    return _checkout_outcome(cs.id, result)


async def checkout_authenticate(request: Request, params: Params) -> Response:
    form = await _form(request)
    cs = checkout.session(params["id"])
    if form.get("outcome") != "complete":
        return _checkout_page(cs, error=AUTH_FAILED, status=402)
    try:
        result = checkout.pay(
            cs.id, card=None, authenticated=form.get("payment_method", ""), email=form.get("email")
        )
    except CheckoutError as exc:
        return _checkout_page(cs, error=exc.message, status=402)
    return _checkout_outcome(cs.id, result)


# Billing portal
async def portal_page(request: Request, params: Params) -> Response:
    from localstripe import resources as r

    session = portal.session(params["id"])
    customer = r.Customer._api_retrieve(session.customer)
    subs = r.Subscription._api_list_all(None, customer=customer.id, status="all", limit=100)._list
    sub_rows = "".join(
        f"<tr><td>{web.escape(s.plan.nickname or s.plan.name)}</td>"
        f"<td>{web.money(s.plan.amount, s.plan.currency)}{_interval(_recurring(s.plan))}</td>"
        f"<td>{web.escape(s.status)}</td><td>{_date(s.current_period_end)}</td>"
        f"<td>{'cancels at period end' if s.cancel_at_period_end else ''}</td></tr>"
        for s in subs
    )
    default = customer.invoice_settings.get("default_payment_method")
    cards = r.PaymentMethod._api_list_all(None, customer=customer.id, type="card", limit=100)._list
    card_rows = "".join(
        f"<li>{web.escape(pm.card['brand'])} ending {web.escape(pm.card['last4'])}, expires "
        f"{pm.card['exp_month']:02d}/{pm.card['exp_year']}"
        f"{' (default)' if pm.id == default else ''}</li>"
        for pm in cards
    )
    return_to = session.return_url
    back = (
        f"<p><a href='{web.escape(return_to)}'>Return to {web.escape(return_to)}</a></p>"
        if session.return_url
        else ""
    )
    body = (
        f"<h1>Billing</h1><p>{web.escape(customer.email or customer.id)}</p>"
        "<h2>Subscriptions</h2><table><thead><tr><th>Plan</th><th>Price</th><th>Status</th>"
        f"<th>Current period ends</th><th></th></tr></thead><tbody>{sub_rows}</tbody></table>"
        f"<h2>Payment methods</h2><ul>{card_rows or '<li>No cards</li>'}</ul>{back}"
    )
    return web.html_page("Billing", body)


# An invoice's pay page (Stripe's hosted invoice page)
def _invoice_page(invoice: Any, *, error: str = "", status: int = 200) -> Response:
    from localstripe import resources as r

    summary = (
        f"<h1>Invoice {web.escape(invoice.id)}</h1>"
        f"<p>Amount due: <strong>{web.money(invoice.amount_due, invoice.currency)}</strong></p>"
        f"<p>Status: {web.escape(invoice.status)}</p>"
    )
    if invoice.status != "open":
        return web.html_page("Invoice", summary, status=status)
    pending = (
        r.PaymentIntent._api_retrieve(invoice.payment_intent) if invoice.payment_intent else None
    )
    confirm = ""
    if pending is not None and pending.status == "requires_action" and not error:
        pm = r.PaymentMethod._api_retrieve(pending.payment_method)
        confirm = _authenticate_form(
            f"/invoice/{invoice.id}/authenticate",
            pm.id,
            f"this payment with your card ending {pm.card['last4']}",
        )
        confirm += "<h2>Or pay with another card</h2>"
    body = summary + confirm + _card_form(f"/invoice/{invoice.id}", "Pay invoice", error=error)
    return web.html_page("Invoice", body, status=status)


def _pay_with(invoice: Any, pm: Any) -> Response:
    """The card pays the invoice and becomes the customer's card for the next ones."""
    from localstripe import resources as r
    from localstripe.errors import UserError

    customer = r.Customer._api_retrieve(invoice.customer)
    if pm.customer != customer.id:
        pm.customer = customer.id
    customer.invoice_settings = {**customer.invoice_settings, "default_payment_method": pm.id}
    if invoice.subscription:
        r.Subscription._api_retrieve(invoice.subscription).default_payment_method = pm.id
    try:
        pay_invoice(invoice.id, payment_method=pm.id)
    except UserError as exc:
        return _invoice_page(invoice, error=exc.body["error"].get("message", ""), status=402)
    return _invoice_page(invoice)


async def invoice_page(request: Request, params: Params) -> Response:
    from localstripe import resources as r

    return _invoice_page(r.Invoice._api_retrieve(params["id"]))


async def invoice_pay(request: Request, params: Params) -> Response:
    from localstripe import resources as r

    form = await _form(request)
    invoice = r.Invoice._api_retrieve(params["id"])
    if invoice.status != "open":
        return _invoice_page(invoice, status=409)
    try:
        pm = new_card(form.get("number", ""), form.get("exp", ""), form.get("cvc", ""))
    except CheckoutError as exc:
        return _invoice_page(invoice, error=exc.message, status=402)
    if pm._attaching_is_declined() or pm._charging_is_declined():
        return _invoice_page(invoice, error=checkout._declined(pm).message, status=402)
    if needs_authentication(pm, off_session=False):
        body = _authenticate_form(f"/invoice/{invoice.id}/authenticate", pm.id, "this payment")
        return web.html_page("Authenticate your payment", body)
    return _pay_with(invoice, pm)


async def invoice_authenticate(request: Request, params: Params) -> Response:
    from localstripe import resources as r

    form = await _form(request)
    invoice = r.Invoice._api_retrieve(params["id"])
    if invoice.status != "open":
        return _invoice_page(invoice, status=409)
    if form.get("outcome") != "complete":
        return _invoice_page(invoice, error=AUTH_FAILED, status=402)
    pm = r.PaymentMethod._api_retrieve(form.get("payment_method", ""))
    if pm.customer not in (None, invoice.customer):
        return _invoice_page(invoice, error=AUTH_FAILED, status=402)
    pm._authenticated_once = True
    pm._set_up_for_off_session = True
    return _pay_with(invoice, pm)


def _pdf(lines: list[str]) -> bytes:
    """A one-page PDF of text lines (Helvetica): the stand-in's `invoice_pdf`."""

    def text(value: str) -> str:
        return value.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    shown = " 0 -18 Td ".join(f"({text(line)}) Tj" for line in lines)
    stream = f"BT /F1 12 Tf 72 770 Td {shown} ET".encode("latin-1", "replace")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


async def invoice_pdf(request: Request, params: Params) -> Response:
    from localstripe import resources as r

    invoice = r.Invoice._api_retrieve(params["id"])
    lines = [
        f"Invoice {invoice.number or invoice.id}",
        f"Status: {invoice.status}",
        *(
            f"{line.description or 'Subscription'}: {web.money(line.amount, invoice.currency)}"
            for line in invoice.lines._list
        ),
        f"Amount due: {web.money(invoice.amount_due, invoice.currency)}",
        f"Amount paid: {web.money(invoice.amount_paid, invoice.currency)}",
    ]
    return Response(body=_pdf(lines), content_type="application/pdf")


def apply() -> None:
    """Serve the hosted pages."""
    web.page("GET", "/checkout/{id}")(checkout_page)
    web.page("POST", "/checkout/{id}")(checkout_pay)
    web.page("POST", "/checkout/{id}/authenticate")(checkout_authenticate)
    web.page("GET", "/billing_portal/{id}")(portal_page)
    web.page("GET", "/invoice/{id}")(invoice_page)
    web.page("GET", "/invoice/{id}/pdf")(invoice_pdf)
    web.page("POST", "/invoice/{id}")(invoice_pay)
    web.page("POST", "/invoice/{id}/authenticate")(invoice_authenticate)
