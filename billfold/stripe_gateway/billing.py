"""Stripe calls about subscriptions: Checkout, the billing portal, prices."""

from __future__ import annotations

from typing import Any

from billfold.stripe_gateway.base import GatewayBase, idempotency_key
from billfold.stripe_gateway.errors import StripeNotFound
from billfold.stripe_gateway.objects import (
    StripeInvoice,
    StripeInvoicePreview,
    StripePaymentIntent,
    StripeSubscription,
    parse_invoice,
    parse_invoice_preview,
    parse_payment_intent,
    parse_subscription,
)


class BillingCalls(GatewayBase):
    def create_checkout_session(
        self,
        *,
        customer_id: str,
        user_id: str,
        plan_code: str,
        request_id: int,
        stripe_customer_id: str,
        price_id: str,
        success_url: str,
        cancel_url: str,
        trial_days: int | None = None,
        allow_promotion_codes: bool = False,
    ) -> str:
        """A Checkout Session in subscription mode; answers the URL to send the customer to.

        The key ends with `request_id`, our `subscription_requests` row of this checkout: a
        session completed, expired or asked with other URLs must not be replayed to a new
        checkout, so the customer's ID alone is not enough."""
        metadata = {"customer_id": customer_id, "user_id": user_id, "plan": plan_code}
        subscription_data: dict[str, Any] = {"metadata": metadata}
        if trial_days:
            subscription_data["trial_period_days"] = trial_days
        params: dict[str, Any] = {
            "mode": "subscription",
            "customer": stripe_customer_id,
            "line_items": [{"price": price_id, "quantity": 1}],
            "success_url": success_url,
            "cancel_url": cancel_url,
            "client_reference_id": customer_id,
            "metadata": metadata,
            "subscription_data": subscription_data,
        }
        if allow_promotion_codes:
            params["allow_promotion_codes"] = True
        key = idempotency_key("checkout.create", customer_id, f"r{request_id}")
        session = self._call(
            "checkout_session.create",
            lambda: self._client.v1.checkout.sessions.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": key},
            ),
            customer_id=customer_id,
        )
        return str(session.url)

    def create_portal_session(
        self, stripe_customer_id: str, *, customer_id: str, request_id: int, return_url: str
    ) -> str:
        """A billing portal session. Each visit needs a fresh one (a session lives minutes, and
        replaying an earlier one for 24 hours would hand out an expired link), so the key
        ends with `request_id`, our `subscription_requests` row of this visit; it still
        makes the SDK's network retries of this call one session."""
        key = idempotency_key("billing_portal.session", customer_id, f"r{request_id}")
        session = self._call(
            "billing_portal_session.create",
            lambda: self._client.v1.billing_portal.sessions.create(
                params={"customer": stripe_customer_id, "return_url": return_url},
                options={"idempotency_key": key},
            ),
            stripe_customer_id=stripe_customer_id,
            customer_id=customer_id,
        )
        return str(session.url)

    def retrieve_subscription(self, subscription_id: str) -> StripeSubscription:
        return self._call(
            "subscription.retrieve",
            lambda: parse_subscription(self._client.v1.subscriptions.retrieve(subscription_id)),
            subscription_id=subscription_id,
        )

    def list_subscriptions(self, stripe_customer_id: str) -> list[StripeSubscription]:
        """Every subscription of a Stripe customer, ended ones included."""

        def subscriptions() -> list[StripeSubscription]:
            page = self._client.v1.subscriptions.list(
                params={"customer": stripe_customer_id, "status": "all", "limit": 100}
            )
            return [parse_subscription(sub) for sub in page.auto_paging_iter()]

        return self._call("subscription.list", subscriptions, stripe_customer_id=stripe_customer_id)

    def retrieve_invoice(self, invoice_id: str) -> StripeInvoice:
        return self._call(
            "invoice.retrieve",
            lambda: parse_invoice(self._client.v1.invoices.retrieve(invoice_id)),
            invoice_id=invoice_id,
        )

    def preview_price_change(
        self,
        subscription_id: str,
        *,
        item_id: str,
        price_id: str,
        proration_behavior: str,
        proration_date: int,
    ) -> StripeInvoicePreview:
        """The invoice a change of the item's price would make (`always_invoice`: the one
        charged now; otherwise the next renewal's), prorated at `proration_date`."""
        params: dict[str, Any] = {
            "subscription": subscription_id,
            "subscription_details": {
                "items": [{"id": item_id, "price": price_id}],
                "proration_behavior": proration_behavior,
                "proration_date": proration_date,
            },
        }
        return self._call(
            "invoice.create_preview",
            lambda: parse_invoice_preview(
                self._client.v1.invoices.create_preview(params=params)  # type: ignore[arg-type]
            ),
            subscription_id=subscription_id,
        )

    def retrieve_invoice_payment(
        self, invoice_id: str
    ) -> tuple[StripeInvoice, StripePaymentIntent | None]:
        """The invoice and the payment intent collecting it (None when there is none), for
        the customer to confirm with Stripe.js. Its client secret is for the page only: never
        store it."""
        invoice = self.retrieve_invoice(invoice_id)
        intent_id = invoice.payment_intent
        if intent_id is None:
            return invoice, None
        intent = self._call(
            "payment_intent.retrieve",
            lambda: parse_payment_intent(self._client.v1.payment_intents.retrieve(intent_id)),
            payment_intent_id=intent_id,
        )
        return invoice, intent

    def pay_invoice(
        self, invoice_id: str, *, payment_method_id: str, case_id: str, request_id: int
    ) -> StripeInvoice:
        """Try an open invoice of a dunning case again, now, with this card (the customer
        just made it their default). Per request: the same card may be tried again later
        (declined today, funded tomorrow), and a replayed decline would say nothing new."""
        key = idempotency_key("dunning.pay", case_id, payment_method_id, f"r{request_id}")
        return self._call(
            "invoice.pay",
            lambda: parse_invoice(
                self._client.v1.invoices.pay(
                    invoice_id,
                    params={"payment_method": payment_method_id, "off_session": True},
                    options={"idempotency_key": key},
                )
            ),
            invoice_id=invoice_id,
        )

    # Changes to a subscription. Each may be asked again later (cancel at the period's end,
    # resume, cancel again; pause, resume, pause again; A → B → A): a key from the
    # subscription's ID alone would replay the first answer for 24 hours and Stripe would
    # keep what the second one undid. So each key ends with the ID of our
    # `subscription_requests` row for this request, written before the call: a new request
    # is a new call. The key is reused only when the same request is sent again: by the
    # SDK's network retries inside one call (the jobs' client; the routes' inline client
    # makes none) and by a retried job that keeps its row's ID in its payload (dunning's
    # new-card job). An HTTP route called again writes a new row, so a new key.

    def cancel_at_period_end(
        self, stripe_subscription_id: str, *, subscription_id: str, request_id: int
    ) -> StripeSubscription:
        """Set the subscription to end at its period's (or trial's) end."""
        return self._update_subscription(
            "subscription.cancel_at_period_end",
            stripe_subscription_id,
            {"cancel_at_period_end": True},
            subscription_id=subscription_id,
            request_id=request_id,
        )

    def resume(
        self,
        stripe_subscription_id: str,
        *,
        subscription_id: str,
        request_id: int,
        undo_cancel: bool,
        undo_pause: bool,
    ) -> StripeSubscription:
        """Undo a cancellation at the period's end and/or a paused collection."""
        params: dict[str, Any] = {}
        if undo_cancel:
            params["cancel_at_period_end"] = False
        if undo_pause:
            params["pause_collection"] = ""  # Stripe's way to clear it
        return self._update_subscription(
            "subscription.resume",
            stripe_subscription_id,
            params,
            subscription_id=subscription_id,
            request_id=request_id,
        )

    def pause_collection(
        self,
        stripe_subscription_id: str,
        *,
        subscription_id: str,
        request_id: int,
        behavior: str,
        resumes_at: int | None = None,
    ) -> StripeSubscription:
        """Stop charging (`behavior`: what becomes of invoices meanwhile) until resumed, or
        until `resumes_at` (epoch seconds)."""
        pause: dict[str, Any] = {"behavior": behavior}
        if resumes_at is not None:
            pause["resumes_at"] = resumes_at
        return self._update_subscription(
            "subscription.pause",
            stripe_subscription_id,
            {"pause_collection": pause},
            subscription_id=subscription_id,
            request_id=request_id,
        )

    def change_price(
        self,
        stripe_subscription_id: str,
        *,
        subscription_id: str,
        request_id: int,
        item_id: str | None,
        price_id: str,
        plan_code: str,
        proration_behavior: str,
        proration_date: int,
    ) -> StripeSubscription:
        """Put the item on a new price now, prorated as asked; a pending cancellation at
        the period's end is dropped (a new plan is a wish to stay)."""
        return self._update_subscription(
            "subscription.change_plan",
            stripe_subscription_id,
            {
                "items": [{"id": item_id, "price": price_id}],
                "proration_behavior": proration_behavior,
                "proration_date": proration_date,
                "cancel_at_period_end": False,
                "metadata": {"plan": plan_code},
            },
            subscription_id=subscription_id,
            request_id=request_id,
        )

    def set_subscription_default_payment_method(
        self,
        stripe_subscription_id: str,
        payment_method_id: str,
        *,
        subscription_id: str,
        request_id: int,
    ) -> StripeSubscription:
        """The card renewals charge (a Checkout-made subscription has its own, which Stripe
        prefers over the customer's default)."""
        return self._update_subscription(
            "subscription.default_card",
            stripe_subscription_id,
            {"default_payment_method": payment_method_id},
            subscription_id=subscription_id,
            request_id=request_id,
        )

    def _update_subscription(
        self,
        operation: str,
        stripe_subscription_id: str,
        params: dict[str, Any],
        *,
        subscription_id: str,
        request_id: int,
    ) -> StripeSubscription:
        key = idempotency_key(operation, subscription_id, f"r{request_id}")
        return self._call(
            operation,
            lambda: parse_subscription(
                self._client.v1.subscriptions.update(
                    stripe_subscription_id,
                    params=params,  # type: ignore[arg-type]
                    options={"idempotency_key": key},
                )
            ),
            subscription_id=stripe_subscription_id,
        )

    def cancel_subscription(
        self, stripe_subscription_id: str, *, subscription_id: str | None
    ) -> StripeSubscription:
        """Cancel now. `subscription_id` is ours (None: Stripe has one we never recorded).
        The key carries Stripe's subscription ID too: a deleted account may have several
        live subscriptions under one of ours, and each cancel must be its own call."""
        key = idempotency_key(
            "subscription.cancel", subscription_id or "unrecorded", stripe_subscription_id
        )
        return self._call(
            "subscription.cancel",
            lambda: parse_subscription(
                self._client.v1.subscriptions.cancel(
                    stripe_subscription_id, options={"idempotency_key": key}
                )
            ),
            subscription_id=stripe_subscription_id,
        )

    def list_live_subscriptions(self, stripe_customer_id: str) -> list[StripeSubscription]:
        """The customer's subscriptions that still bill (Stripe leaves ended ones out)."""

        def live() -> list[StripeSubscription]:
            page = self._client.v1.subscriptions.list(
                params={"customer": stripe_customer_id, "limit": 100}
            )
            return [parse_subscription(s) for s in page.auto_paging_iter()]

        return self._call("subscription.list", live, stripe_customer_id=stripe_customer_id)

    def ensure_recurring_price(
        self, price_id: str, *, name: str, amount: int, currency: str, interval: str
    ) -> str:
        """A recurring price with a chosen ID (created as a legacy Plan, which Stripe and the
        stand-in both treat as a price); for seeding a demo catalog."""
        try:
            return self._call("plan.retrieve", lambda: self._client.v1.plans.retrieve(price_id).id)
        except StripeNotFound:
            pass
        return self._call(
            "plan.create",
            lambda: (
                self._client.v1.plans.create(
                    params={
                        "id": price_id,
                        "amount": amount,
                        "currency": currency,
                        "interval": interval,
                        "product": {"name": name},
                    },
                    options={"idempotency_key": idempotency_key("plan.create", price_id)},
                ).id
            ),
        )
