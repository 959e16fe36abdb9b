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
_PAUSE_BEHAVIORS = ("void", "keep_as_draft", "mark_uncollectible")
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


def as_plan_items(items: Any) -> Any:
    """`items[].price` as localstripe's `items[].plan`."""
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict) and "price" in item:
                item["plan"] = item.pop("price")
    return items


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

        @classmethod
        def _api_update(
            cls,
            id: str,
            active: Any = None,
            metadata: Any = None,
            nickname: Any = None,
            **unknown: Any,
        ) -> Any:
            """As in Stripe, a price's amount, currency and interval never change: only
            whether it is offered (`active`), its nickname and metadata."""
            if unknown:
                raise UserError(400, "Received unknown parameters: " + ", ".join(unknown))
            plan = r.Plan._api_retrieve(id)
            shown = _flag(active, "active")
            if metadata is not None and not isinstance(metadata, dict):
                raise UserError(400, "Invalid metadata", {"param": "metadata"})
            if shown is not None:
                plan.active = shown
            if nickname is not None:
                plan.nickname = nickname or None
            if metadata:
                plan.metadata = {**(plan.metadata or {}), **metadata}
            emit("price.updated", _Shown(price_view(plan)))
            return _Shown(price_view(plan))

    class _Shown:
        """A ready-made export, for objects shown under another name (a Plan as a Price)."""

        def __init__(self, exported: dict[str, Any]) -> None:
            self.exported = exported
            self.id = exported["id"]

        def _export(self, expand: Any = None) -> dict[str, Any]:
            return self.exported

    def _flag(value: Any, param: str) -> bool | None:
        if value is None:
            return None
        flag = r.try_convert_to_bool(value)
        if not isinstance(flag, bool):
            raise UserError(400, f"Invalid boolean: {value}", {"param": param})
        return flag

    def product_update(
        id: str,
        name: Any = None,
        active: Any = None,
        description: Any = None,
        metadata: Any = None,
        **unknown: Any,
    ) -> Any:
        """localstripe stores a posted `active=false` as the text "false"; Stripe a boolean."""
        if unknown:
            raise UserError(400, "Received unknown parameters: " + ", ".join(unknown))
        product = r.Product._api_retrieve(id)
        shown = _flag(active, "active")
        if name is not None and not (isinstance(name, str) and name):
            raise UserError(400, "Invalid name", {"param": "name"})
        if metadata is not None and not isinstance(metadata, dict):
            raise UserError(400, "Invalid metadata", {"param": "metadata"})
        if name is not None:
            product.name = name
        if shown is not None:
            product.active = shown
        if description is not None:
            product.description = description or None
        if metadata:
            product.metadata = {**(product.metadata or {}), **metadata}
        emit("product.updated", product)
        return product

    web.api("POST", "/v1/prices", Price._api_create)
    web.api("GET", "/v1/prices/{id}", Price._api_retrieve)
    web.api("POST", "/v1/prices/{id}", Price._api_update)
    web.api("POST", "/v1/products/{id}", product_update)
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

    sub_init = r.Subscription.__init__

    def subscription_init(self: Any, *args: Any, **data: Any) -> None:
        data["items"] = as_plan_items(data.get("items"))
        default_pm = data.pop("default_payment_method", None)
        data.pop("payment_settings", None)
        data.pop("collection_method", None)
        days = r.try_convert_to_int(data.get("trial_period_days"))
        trial_end = r.try_convert_to_int(data.get("trial_end"))
        self.default_payment_method = default_pm
        self.pause_collection = None
        # A discount from Checkout's promotion code: it applies to the first invoice too.
        self._pending_discount = data.pop("_discount", None)
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
            if self._pending_discount:
                self.discount = self._pending_discount
            first = getattr(self, "latest_invoice", None)
            if isinstance(first, str):
                r.Invoice._api_retrieve(first).billing_reason = "subscription_create"
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
        pause_collection: Any = None,
        proration_date: Any = None,
        **rest: Any,
    ) -> None:
        if proration_behavior is not None and proration_behavior not in _PRORATIONS:
            raise UserError(400, "Invalid proration_behavior", {"param": "proration_behavior"})
        pause = _pause_collection(pause_collection, UserError)
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
        if cancel_at_period_end is not None and getattr(self, "schedule", None):
            raise UserError(
                400,
                f"The subscription is managed by the subscription schedule `{self.schedule}`, "
                "and updating any cancelation behavior directly is not allowed. Please "
                "update the schedule instead.",
            )
        if metadata is not None and not isinstance(metadata, dict):
            raise UserError(400, "Invalid metadata", {"param": "metadata"})
        # All checks done: change nothing before this point.
        if rest:
            original_update(self, **rest)
        if new_plan is not None and new_plan.id != self.plan.id:
            _change_price(
                r, self, new_plan, proration_behavior or "create_prorations", proration_date
            )
        if cancel is not None:
            self.cancel_at_period_end = cancel
            self.cancel_at = self.current_period_end if cancel else None
            self.canceled_at = int(time.time()) if cancel else None
        if metadata:
            self.metadata = {**(self.metadata or {}), **metadata}
            self.metadata = {k: v for k, v in self.metadata.items() if v != ""}
        if default_payment_method is not None:
            self.default_payment_method = default_payment_method or None
        if pause_collection is not None:
            self.pause_collection = pause

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
        from billfold.standin import schedules  # schedules build on this module

        schedules.end_with_subscription(sub)
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
    invoice_status = r.Invoice.status

    def status(self: Any) -> str:
        if getattr(self, "_uncollectible", False):
            return "uncollectible"
        found: str = invoice_status.fget(self)
        return found

    r.Invoice.status = property(status)
    r.Invoice.hosted_invoice_url = property(lambda self: f"{web.public_url}/invoice/{self.id}")
    r.Invoice.invoice_pdf = property(
        lambda self: None if self._draft else f"{web.public_url}/invoice/{self.id}/pdf"
    )
    r.Invoice.number = property(_invoice_number)

    web.api("POST", "/v1/invoices/{id}/pay", lambda id, **data: pay_invoice(id, **data))
    web.api("POST", "/v1/invoices/create_preview", preview_invoice)
    web.api("GET", "/v1/invoices/upcoming", upcoming_invoice)
    web.api("POST", "/v1/test_helpers/subscriptions/{id}/advance", lambda id, **_: advance(id))


def _invoice_number(invoice: Any) -> str | None:
    """Stripe's invoice number: the customer's prefix and a sequence, from finalization on
    (given here when first read, so each invoice keeps the one it got)."""
    from localstripe import resources as r

    if invoice._draft or invoice.id is None or str(invoice.id).startswith("upcoming_"):
        return None
    if getattr(invoice, "_number", None) is None:
        numbered = sum(
            1
            for key, other in r.store.items()
            if key.startswith("invoice:")
            and other.customer == invoice.customer
            and getattr(other, "_number", None)
        )
        invoice._number = f"{invoice.customer[4:12].upper()}-{numbered + 1:04d}"
    number: str = invoice._number
    return number


def _pause_collection(value: Any, error: Any) -> dict[str, Any] | None:
    """`pause_collection` as given: "" clears it; else a behavior and maybe `resumes_at`."""
    if value is None or value == "":
        return None
    if not isinstance(value, dict) or value.get("behavior") not in _PAUSE_BEHAVIORS:
        raise error(400, "Invalid pause_collection[behavior]", {"param": "pause_collection"})
    resumes_at = value.get("resumes_at")
    if resumes_at not in (None, ""):
        try:
            resumes_at = int(resumes_at)
        except ValueError:
            raise error(400, "Invalid pause_collection[resumes_at]") from None
        if resumes_at <= time.time():
            raise error(400, "pause_collection[resumes_at] must be in the future")
    return {"behavior": value["behavior"], "resumes_at": resumes_at or None}


def _announce_status_change(r: Any, name: str) -> None:
    original = getattr(r.Subscription, name)

    def wrapped(self: Any, invoice: Any) -> Any:
        before = self.status
        result = original(self, invoice)
        if getattr(self, "_ready", False) and self.status != before:
            emit("customer.subscription.updated", self)
        return result

    setattr(r.Subscription, name, wrapped)


def _prorations(sub: Any, old_plan: Any, new_plan: Any, at: int) -> list[dict[str, Any]]:
    """Stripe's prorations for one item swapping prices at `at`: the unused time on the old
    price credited and the rest of the period at the new one, each by seconds left."""
    start, end = sub._period
    if sub.status != "active" or not start <= at < end:
        return []
    quantity = sub.items._list[0].quantity
    remaining = (end - at) / (end - start)
    after = datetime.fromtimestamp(at, UTC).strftime("%d %b %Y")
    return [
        {
            "amount": sign * round(plan.amount * quantity * remaining),
            "currency": plan.currency,
            "plan": plan.id,
            # As Stripe words it: "Unused time on Pro after 30 Nov 2026", with "2 x Pro" for two.
            "description": f"{label} {_quantity_of(quantity, plan)} after {after}",
            "period": {"start": at, "end": end},
            "proration": True,
        }
        for plan, sign, label in (
            (old_plan, -1, "Unused time on"),
            (new_plan, 1, "Remaining time on"),
        )
    ]


def _product_name(plan: Any) -> str:
    """The product's name (the price's nickname or ID if its product is gone), as Stripe
    names an item on an invoice line."""
    from localstripe import resources as r
    from localstripe.errors import UserError

    try:
        return str(r.Product._api_retrieve(plan.product).name)
    except UserError:
        return str(plan.nickname or plan.id)


def _quantity_of(quantity: int, plan: Any) -> str:
    """The item as a proration line names it: the quantity only when more than one."""
    name = _product_name(plan)
    return f"{quantity} × {name}" if quantity > 1 else name  # noqa: RUF001 - as Stripe


def _proration_time(value: Any, sub: Any) -> int:
    """`proration_date` as given (so a preview and the change agree), else now."""
    from localstripe.errors import UserError

    if value in (None, ""):
        return int(time.time())
    try:
        at = int(value)
    except ValueError:
        raise UserError(400, "Invalid proration_date", {"param": "proration_date"}) from None
    start, end = sub._period
    if not start <= at < end:
        raise UserError(
            400, "proration_date must be within the current period", {"param": "proration_date"}
        )
    return at


def _change_price(
    r: Any, sub: Any, new_plan: Any, proration_behavior: str, proration_date: Any = None
) -> None:
    """Swap the item's price; prorations (unused time credited, the rest of the period at
    the new price) wait for the next invoice, or are invoiced now with `always_invoice`."""
    item = sub.items._list[0]
    at = _proration_time(proration_date, sub)
    if proration_behavior != "none":
        for line in _prorations(sub, item.plan, new_plan, at):
            r.InvoiceItem(
                amount=line["amount"],
                currency=line["currency"],
                customer=sub.customer,
                subscription=sub.id,
                plan=line["plan"],
                proration=True,
                description=line["description"],
                period_start=at,
                period_end=line["period"]["end"],
            )
    item.plan = new_plan
    if proration_behavior == "always_invoice" and sub.status == "active":
        invoice = r.Invoice(customer=sub.customer, subscription=sub.id, items=[])
        invoice.billing_reason = "subscription_update"
        invoice._finalize()
        charge_invoice(invoice)


def preview_invoice(
    customer: Any = None,
    subscription: Any = None,
    subscription_details: Any = None,
    **unknown: Any,
) -> Any:
    """`POST /v1/invoices/create_preview` for a subscription (maybe with a price change):
    with `always_invoice`, the invoice the change would make now (its prorations); else
    the next renewal's invoice, pending items and prorations included."""
    from localstripe import resources as r
    from localstripe.errors import UserError

    if unknown:
        raise UserError(400, "Unexpected " + ", ".join(unknown))
    if not subscription:
        raise UserError(400, "The stand-in previews a subscription's invoice only")
    sub = r.Subscription._api_retrieve(subscription)
    if customer not in (None, sub.customer):
        raise UserError(400, "The subscription belongs to another customer")
    details = subscription_details or {}
    if not isinstance(details, dict):
        raise UserError(400, "Invalid subscription_details")
    behavior = details.get("proration_behavior") or "create_prorations"
    if behavior not in _PRORATIONS:
        raise UserError(400, "Invalid proration_behavior", {"param": "proration_behavior"})
    item = sub.items._list[0]
    new_plan = item.plan
    items = as_plan_items(details.get("items"))
    if items:
        if len(items) != 1 or items[0].get("id") not in (None, item.id):
            raise UserError(400, "The stand-in previews one subscription item")
        if items[0].get("plan"):
            new_plan = r.Plan._api_retrieve(items[0]["plan"])
    at = _proration_time(details.get("proration_date"), sub)
    changed = new_plan.id != item.plan.id
    prorations = _prorations(sub, item.plan, new_plan, at) if changed and behavior != "none" else []
    pending = [
        {
            "amount": ii.amount,
            "currency": ii.currency,
            "plan": ii.plan.id if getattr(ii, "plan", None) else None,
            "description": ii.description,
            "period": ii.period,
            "proration": bool(ii.proration),
        }
        for ii in r.InvoiceItem._api_list_all(None, customer=sub.customer, limit=99)._list
        if ii.invoice is None
    ]
    end = sub._period[1]
    if behavior == "always_invoice":
        lines = pending + prorations
        date, period = at, (at, end)
    else:
        after = period_after(end, new_plan.interval, new_plan.interval_count)
        cycle = {
            "amount": new_plan.amount * item.quantity,
            "currency": new_plan.currency,
            "plan": new_plan.id,
            "description": f"{item.quantity} × {_product_name(new_plan)}",  # noqa: RUF001
            "period": {"start": end, "end": after},
            "proration": False,
        }
        lines = pending + prorations + [cycle]
        date, period = end, (sub._period[0], end)
    subtotal = sum(line["amount"] for line in lines)
    discount, off = _preview_discount(sub, lines)
    total = subtotal - off
    return _Preview(
        {
            "id": "upcoming_" + r.random_id(14),
            "object": "invoice",
            "customer": sub.customer,
            "subscription": sub.id,
            "parent": {
                "type": "subscription_details",
                "subscription_details": {"subscription": sub.id},
            },
            "status": "draft",
            "currency": new_plan.currency,
            "subtotal": subtotal,
            "total": total,
            "amount_due": max(total, 0),
            "discount": discount if off else None,
            "total_discount_amounts": (
                [{"amount": off, "discount": discount["promotion_code"]}] if off else []
            ),
            "amount_paid": 0,
            "created": date,
            "next_payment_attempt": date,
            "period_start": period[0],
            "period_end": period[1],
            "subscription_proration_date": at,
            "lines": {
                "object": "list",
                "data": [{"object": "line_item", **line} for line in lines],
                "has_more": False,
            },
            "livemode": False,
        }
    )


def _preview_discount(sub: Any, lines: list[dict[str, Any]]) -> tuple[Any, int]:
    """The subscription's discount and what it takes off a previewed invoice of these lines,
    reckoned as the invoice itself will be (standin/discounts.py)."""
    from types import SimpleNamespace

    from billfold.standin.discounts import discount_amount

    # As an invoice finds it (standin/discounts.py): a Checkout promotion code not yet
    # applied to the subscription counts too.
    discount = getattr(sub, "discount", None) or getattr(sub, "_pending_discount", None)
    if not discount:
        return None, 0
    shown = SimpleNamespace(
        lines=SimpleNamespace(
            _list=[SimpleNamespace(amount=x["amount"], proration=x["proration"]) for x in lines]
        )
    )
    return discount, discount_amount(shown, sub, discount)


def upcoming_invoice(
    customer: Any = None,
    subscription: Any = None,
    subscription_items: Any = None,
    subscription_proration_behavior: Any = None,
    subscription_proration_date: Any = None,
    **unknown: Any,
) -> Any:
    """`GET /v1/invoices/upcoming` (older API versions): the same as `create_preview`."""
    details = {
        "items": subscription_items,
        "proration_behavior": subscription_proration_behavior,
        "proration_date": subscription_proration_date,
    }
    return preview_invoice(customer, subscription, details, **unknown)


class _Preview:
    """An invoice preview, answered as it is (Stripe does not store it)."""

    def __init__(self, exported: dict[str, Any]) -> None:
        self.exported = exported
        self.id = exported["id"]

    def _export(self, expand: Any = None) -> dict[str, Any]:
        return self.exported


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
    from billfold.standin import schedules  # schedules build on this module

    schedules.at_period_end(sub, end)
    pause = getattr(sub, "pause_collection", None)
    if pause and pause["resumes_at"] and pause["resumes_at"] <= end:
        sub.pause_collection = pause = None  # collection resumed before this renewal
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
    invoice.created = end  # made when the clock reached the period's end, as on a test clock
    if pause:
        _set_aside(invoice, pause["behavior"])
        emit("customer.subscription.updated", sub)
        return sub
    invoice._finalize()
    with _held_events(r) as held:
        charge_invoice(invoice)
    # Stripe tells of the renewal (new period, maybe a new status) once, then the invoice news.
    emit("customer.subscription.updated", sub)
    held.events = [e for e in held.events if e.type != "customer.subscription.updated"]
    held.send(refresh=sub)
    return sub


def _set_aside(invoice: Any, behavior: str) -> None:
    """A renewal while collection is paused: voided, marked uncollectible, or kept a draft."""
    if behavior == "keep_as_draft":
        return
    invoice._finalize()
    if behavior == "void":
        invoice._voided = True
        invoice.status_transitions["voided_at"] = int(time.time())
        emit("invoice.voided", invoice)
    else:
        invoice._uncollectible = True
        emit("invoice.marked_uncollectible", invoice)
