"""Subscriptions in the stand-in as Stripe runs them: prices, trials, plan changes with
prorations, cancel and resume, and renewals when the stand-in's clock is moved on.

localstripe knows Plans but not Prices, computes one period from the start date forever,
never says `trialing`, ignores `items[].price`, sends no `customer.subscription.updated`
and no `invoice.paid`, and cancels without `canceled_at`. These patches (applied inside the
stand-in process only) close those gaps; `advance` is the stand-in's test clock.
"""

from __future__ import annotations

import calendar
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from billfold.standin import web

#: Stripe's test card that needs authentication on-session but not once set up off-session.
AUTH_UNLESS_SET_UP = "4000002500003155"
_PRORATIONS = ("create_prorations", "none", "always_invoice")
_DAYS = {"day": 1, "week": 7}
_MONTHS = {"month": 1, "year": 12}


def emit(kind: str, obj: Any) -> None:
    """Send a Stripe event about `obj` as it is now (localstripe signs and delivers it)."""
    from localstripe import resources as r

    r.schedule_webhook(r.Event(kind, obj))


def period_after(start: int, interval: str, count: int = 1) -> int:
    """`start` plus `count` intervals; a month later is the same day, or the month's last."""
    at = datetime.fromtimestamp(start, UTC)
    if interval in _DAYS:
        return int((at + timedelta(days=_DAYS[interval] * count)).timestamp())
    months = at.month - 1 + _MONTHS[interval] * count
    year, month = at.year + months // 12, months % 12 + 1
    day = min(at.day, calendar.monthrange(year, month)[1])
    return int(at.replace(year=year, month=month, day=day).timestamp())


def price_view(plan: Any) -> dict[str, Any]:
    """A localstripe Plan as Stripe's Price object shows it."""
    return {
        "id": plan.id,
        "object": "price",
        "active": plan.active,
        "currency": plan.currency,
        "unit_amount": plan.amount,
        "product": plan.product,
        "nickname": plan.nickname,
        "metadata": plan.metadata,
        "type": "recurring" if plan.interval else "one_time",
        "recurring": {"interval": plan.interval, "interval_count": plan.interval_count}
        if plan.interval
        else None,
        "billing_scheme": plan.billing_scheme,
        "created": plan.created,
        "livemode": False,
    }


def apply() -> None:
    from localstripe import resources as r
    from localstripe.errors import UserError

    class Price:
        """A price: stored as a Plan (one-time ones too, with no interval), shown as a Price."""

        @classmethod
        def _api_create(
            cls,
            currency: Any = None,
            unit_amount: Any = None,
            product: Any = None,
            product_data: Any = None,
            recurring: Any = None,
            nickname: Any = None,
            metadata: Any = None,
            id: Any = None,
            **unknown: Any,
        ) -> Any:
            if unknown:
                raise UserError(400, "Unexpected " + ", ".join(unknown))
            recurring = recurring or {}
            plan = r.Plan(
                id=id or "price_" + r.random_id(14),
                amount=r.try_convert_to_int(unit_amount),
                currency=currency,
                product=product or product_data,
                interval=recurring.get("interval", "month"),
                interval_count=r.try_convert_to_int(recurring.get("interval_count", 1)),
                nickname=nickname,
                metadata=metadata,
            )
            if not recurring:
                plan.interval = None
            return _Shown(price_view(plan))

        @classmethod
        def _api_retrieve(cls, id: str) -> Any:
            return _Shown(price_view(r.Plan._api_retrieve(id)))

        @classmethod
        def _api_list_all(cls, url: str, limit: Any = None, **filters: Any) -> Any:
            plans = r.Plan._api_list_all(url, limit=limit, **filters)
            plans._list = [_Shown(price_view(p)) for p in plans._list]
            return plans

    class _Shown:
        """A ready-made export, for objects shown under another name (a Plan as a Price)."""

        def __init__(self, exported: dict[str, Any]) -> None:
            self.exported = exported
            self.id = exported["id"]

        def _export(self, expand: Any = None) -> dict[str, Any]:
            return self.exported

    web.api("POST", "/v1/prices", Price._api_create)
    web.api("GET", "/v1/prices/{id}", Price._api_retrieve)
    web.api("GET", "/v1/prices", lambda **q: Price._api_list_all("/v1/prices", **q))

    # Subscription items show their price and (as newer API versions do) their period.
    r.SubscriptionItem.price = property(lambda self: price_view(self.plan))
    original_period = r.SubscriptionItem._current_period

    def current_period(self: Any) -> dict[str, int]:
        if self._subscription:
            sub = r.Subscription._api_retrieve(self._subscription)
            if getattr(sub, "_period", None):
                return {"start": sub._period[0], "end": sub._period[1]}
        period: dict[str, int] = original_period(self)
        return period

    r.SubscriptionItem._current_period = current_period
    r.SubscriptionItem.current_period_start = property(lambda s: s._current_period()["start"])
    r.SubscriptionItem.current_period_end = property(lambda s: s._current_period()["end"])

    def as_plan_items(items: Any) -> Any:
        if isinstance(items, list):
            for item in items:
                if isinstance(item, dict) and "price" in item:
                    item["plan"] = item.pop("price")
        return items

    sub_init = r.Subscription.__init__

    def subscription_init(self: Any, *args: Any, **data: Any) -> None:
        data["items"] = as_plan_items(data.get("items"))
        default_pm = data.pop("default_payment_method", None)
        data.pop("payment_settings", None)
        data.pop("collection_method", None)
        days = r.try_convert_to_int(data.get("trial_period_days"))
        trial_end = r.try_convert_to_int(data.get("trial_end"))
        self.default_payment_method = default_pm
        self._period = None
        with _held_events(r) as held:
            sub_init(self, *args, **data)
            now = int(time.time())
            if days or trial_end:
                self.status = "trialing"
                self.trial_start = now
                self.trial_end = trial_end or now + int(days) * 86400
                self._period = (now, self.trial_end)
            else:
                plan = self.items._list[0].plan
                start = self.start_date
                self._period = (start, period_after(start, plan.interval, plan.interval_count))
            self._ready = True
        held.send(refresh=self)

    r.Subscription.__init__ = subscription_init
    first_payment = r.Invoice._api_pay_invoice.__func__

    def pay_first_invoice(cls: Any, id: str) -> Any:
        # localstripe pays a new subscription's invoice with the customer's default card;
        # Stripe uses the subscription's own default payment method first.
        invoice = cls._api_retrieve(id)
        sub = invoice.subscription and r.Subscription._api_retrieve(invoice.subscription)
        method = sub and getattr(sub, "default_payment_method", None)
        if not method:
            return first_payment(cls, id)
        customer = r.Customer._api_retrieve(invoice.customer)
        kept = customer.invoice_settings
        customer.invoice_settings = {**kept, "default_payment_method": method}
        try:
            return first_payment(cls, id)
        finally:
            customer.invoice_settings = kept

    r.Invoice._api_pay_invoice = classmethod(pay_first_invoice)

    def subscription_update(
        self: Any,
        items: Any = None,
        proration_behavior: Any = None,
        cancel_at_period_end: Any = None,
        metadata: Any = None,
        default_payment_method: Any = None,
        payment_behavior: Any = None,
        off_session: Any = None,
        **rest: Any,
    ) -> None:
        if proration_behavior is not None and proration_behavior not in _PRORATIONS:
            raise UserError(400, "Invalid proration_behavior", {"param": "proration_behavior"})
        items = as_plan_items(items)
        new_plan = None
        if items:
            if len(items) != 1:
                raise UserError(400, "The stand-in supports one subscription item")
            item = items[0]
            if item.get("id") not in (None, self.items._list[0].id):
                raise UserError(404, f"No such subscription item: '{item['id']}'")
            if item.get("plan"):
                new_plan = r.Plan._api_retrieve(item["plan"])
        cancel = r.try_convert_to_bool(cancel_at_period_end)
        if metadata is not None and not isinstance(metadata, dict):
            raise UserError(400, "Invalid metadata", {"param": "metadata"})
        # All checks done: change nothing before this point.
        if rest:
            original_update(self, **rest)
        if new_plan is not None and new_plan.id != self.plan.id:
            _change_price(r, self, new_plan, proration_behavior or "create_prorations")
        if cancel is not None:
            self.cancel_at_period_end = cancel
            self.cancel_at = self.current_period_end if cancel else None
            self.canceled_at = int(time.time()) if cancel else None
        if metadata:
            self.metadata = {**(self.metadata or {}), **metadata}
            self.metadata = {k: v for k, v in self.metadata.items() if v != ""}
        if default_payment_method is not None:
            self.default_payment_method = default_payment_method or None

    original_update = r.Subscription._update
    r.Subscription._update = subscription_update
    sub_api_update = r.Subscription._api_update.__func__

    def subscription_api_update(cls: Any, id: str, /, **data: Any) -> Any:
        sub = sub_api_update(cls, id, **data)
        emit("customer.subscription.updated", sub)
        return sub

    r.Subscription._api_update = classmethod(subscription_api_update)

    def subscription_cancel(cls: Any, id: str, /, **_: Any) -> Any:
        sub = r.Subscription._api_retrieve(id)
        if sub.status in ("canceled", "incomplete_expired"):
            raise UserError(400, f"This subscription is already canceled: {id}")
        now = int(time.time())
        sub.status, sub.ended_at = "canceled", now
        sub.canceled_at = sub.canceled_at or now
        emit("customer.subscription.deleted", sub)
        return sub

    r.Subscription._api_delete = classmethod(subscription_cancel)
    web.api("DELETE", "/v1/subscriptions/{id}", lambda id, **_: subscription_cancel(None, id))
    web.api("POST", "/v1/subscriptions/{id}/cancel", lambda id, **_: subscription_cancel(None, id))

    # A status change after creation is a `customer.subscription.updated`, as in Stripe.
    for name in ("_on_initial_payment_success", "_on_recurring_payment_failure"):
        _announce_status_change(r, name)

    # A card authenticated on a Stripe-hosted page (Checkout, the invoice page) is charged
    # without asking again for that payment.
    requires = r.PaymentMethod._requires_authentication

    def requires_authentication(self: Any) -> bool:
        if getattr(self, "_authenticated_once", False):
            self._authenticated_once = False
            return False
        return bool(requires(self))

    r.PaymentMethod._requires_authentication = requires_authentication

    invoice_paid = r.Invoice._on_payment_success

    def on_invoice_paid(self: Any) -> None:
        invoice_paid(self)
        emit("invoice.paid", self)

    r.Invoice._on_payment_success = on_invoice_paid
    r.Invoice.hosted_invoice_url = property(lambda self: f"{web.public_url}/invoice/{self.id}")

    web.api("POST", "/v1/invoices/{id}/pay", lambda id, **data: pay_invoice(id, **data))
    web.api("POST", "/v1/test_helpers/subscriptions/{id}/advance", lambda id, **_: advance(id))


def _announce_status_change(r: Any, name: str) -> None:
    original = getattr(r.Subscription, name)

    def wrapped(self: Any, invoice: Any) -> Any:
        before = self.status
        result = original(self, invoice)
        if getattr(self, "_ready", False) and self.status != before:
            emit("customer.subscription.updated", self)
        return result

    setattr(r.Subscription, name, wrapped)


def _change_price(r: Any, sub: Any, new_plan: Any, proration_behavior: str) -> None:
    """Swap the item's price; prorations (unused time credited, the rest of the period at
    the new price) wait for the next invoice, or are invoiced now with `always_invoice`."""
    item = sub.items._list[0]
    old_plan = item.plan
    start, end = sub._period
    now = int(time.time())
    if proration_behavior != "none" and sub.status == "active" and end > now:
        remaining = (end - now) / (end - start)
        for plan, sign, label in (
            (old_plan, -1, "Unused time on"),
            (new_plan, 1, "Remaining time on"),
        ):
            r.InvoiceItem(
                amount=sign * round(plan.amount * item.quantity * remaining),
                currency=plan.currency,
                customer=sub.customer,
                subscription=sub.id,
                plan=plan.id,
                proration=True,
                description=f"{label} {plan.nickname or plan.id}",
                period_start=max(now, start),
                period_end=end,
            )
    item.plan = new_plan
    if proration_behavior == "always_invoice" and sub.status == "active":
        invoice = r.Invoice(customer=sub.customer, subscription=sub.id, items=[])
        invoice.billing_reason = "subscription_update"
        invoice._finalize()
        charge_invoice(invoice)


class _Held:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def send(self, refresh: Any) -> None:
        """Send the held events; those about `refresh` show it as it is now."""
        from localstripe import webhooks

        for event in self.events:
            if event.data["object"].get("id") == refresh.id:
                event.data = {"object": refresh._export()}
            webhooks.schedule_webhook(event)


class _held_events:
    """Hold the events a compound change sends until it is done (Stripe's events show the
    finished object, never a half-built one)."""

    def __init__(self, r: Any) -> None:
        self.r = r
        self.held = _Held()

    def __enter__(self) -> _Held:
        self.previous = self.r.schedule_webhook
        self.r.schedule_webhook = self.held.events.append
        return self.held

    def __exit__(self, *exc: object) -> None:
        self.r.schedule_webhook = self.previous


def needs_authentication(pm: Any, *, off_session: bool) -> bool:
    """Whether charging `pm` now needs the customer (Stripe's 3-D Secure test cards)."""
    if not pm._requires_authentication():
        return False
    set_up = getattr(pm, "_set_up_for_off_session", False)
    return not (off_session and set_up and getattr(pm, "_card_number", "") == AUTH_UNLESS_SET_UP)


def charge_invoice(invoice: Any, payment_method: str | None = None) -> Any:
    """Try to collect an open invoice off-session, as Stripe does at renewal: paid
    (`invoice.paid`), declined (`invoice.payment_failed`, subscription `past_due`), or
    waiting for the customer (`invoice.payment_action_required`, subscription `past_due`)."""
    from localstripe import resources as r

    if invoice.total <= 0:
        invoice._on_payment_success()
        return invoice
    customer = r.Customer._api_retrieve(invoice.customer)
    sub = r.Subscription._api_retrieve(invoice.subscription) if invoice.subscription else None
    method_id = (
        payment_method
        or (sub.default_payment_method if sub is not None else None)
        or customer.invoice_settings.get("default_payment_method")
    )
    if not method_id:
        invoice.attempt_count = getattr(invoice, "_attempts", 0) + 1
        invoice._on_payment_failure_now()
        return invoice
    pm = r.PaymentMethod._api_retrieve(method_id)
    pi = r.PaymentIntent(
        amount=invoice.total,
        currency=invoice.currency,
        customer=invoice.customer,
        payment_method=pm.id,
    )
    pi.invoice = invoice.id
    pi.description = f"Payment for invoice {invoice.id}"
    invoice.payment_intent = pi.id
    invoice._attempts = getattr(invoice, "_attempts", 0) + 1
    invoice.attempt_count = invoice._attempts
    if needs_authentication(pm, off_session=True):
        pi.next_action = {
            "type": "use_stripe_sdk",
            "use_stripe_sdk": {"type": "three_d_secure_redirect", "stripe_js": ""},
        }
        emit("payment_intent.requires_action", pi)
        emit("invoice.payment_action_required", invoice)
        if sub is not None and sub.status != "past_due":
            sub.status = "past_due"
            emit("customer.subscription.updated", sub)
        return invoice

    def declined() -> None:
        emit("payment_intent.payment_failed", pi)
        invoice._on_payment_failure_now()

    pi._create_charge(on_failure_now=declined)
    return invoice


def pay_invoice(id: str, payment_method: str | None = None, **_: Any) -> Any:
    """`POST /v1/invoices/{id}/pay`: collect now; a decline answers 402 as Stripe does."""
    from localstripe import resources as r
    from localstripe.errors import UserError

    invoice = r.Invoice._api_retrieve(id)
    if invoice.status == "paid":
        raise UserError(400, "Invoice is already paid", {"code": "invoice_already_paid"})
    if invoice.status not in ("draft", "open"):
        raise UserError(400, f"This invoice is {invoice.status}")
    if invoice._draft:
        invoice._finalize()
    if invoice.payment_intent:
        previous = r.PaymentIntent._api_retrieve(invoice.payment_intent)
        if previous.status not in ("succeeded", "canceled"):
            previous._canceled = True
            previous.next_action = None
    charge_invoice(invoice, payment_method)
    if invoice.status != "paid":
        pi = (
            r.PaymentIntent._api_retrieve(invoice.payment_intent)
            if invoice.payment_intent
            else None
        )
        if pi is not None and pi.status == "requires_action":
            raise UserError(
                402,
                "This payment requires authentication by the customer.",
                {"type": "card_error", "code": "invoice_payment_intent_requires_action"},
            )
        raise UserError(
            402,
            "Your card was declined.",
            {"type": "card_error", "code": "card_declined", "decline_code": "generic_decline"},
        )
    return invoice


def advance(id: str) -> Any:
    """Move a subscription to the end of its trial or period, as a Stripe test clock would:
    it ends there if it was set to cancel, otherwise it renews for a period and invoices it."""
    from localstripe import resources as r
    from localstripe.errors import UserError

    sub = r.Subscription._api_retrieve(id)
    if sub.status in ("canceled", "incomplete_expired", "incomplete"):
        raise UserError(400, f"A {sub.status} subscription has no period to end")
    end = sub._period[1]
    if sub.cancel_at_period_end:
        sub.status, sub.ended_at = "canceled", end
        sub.canceled_at = sub.canceled_at or int(time.time())
        emit("customer.subscription.deleted", sub)
        return sub
    plan = sub.items._list[0].plan
    sub._period = (end, period_after(end, plan.interval, plan.interval_count))
    if sub.status == "trialing":
        sub.status = "active"
    invoice = r.Invoice(
        customer=sub.customer,
        subscription=sub.id,
        items=list(sub.items._list),
        date=end,
    )
    invoice.billing_reason = "subscription_cycle"
    invoice._finalize()
    with _held_events(r) as held:
        charge_invoice(invoice)
    # Stripe tells of the renewal (new period, maybe a new status) once, then the invoice news.
    emit("customer.subscription.updated", sub)
    held.events = [e for e in held.events if e.type != "customer.subscription.updated"]
    held.send(refresh=sub)
    return sub
