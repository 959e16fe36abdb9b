"""Stripe calls about cards, SetupIntents, PaymentIntents and refunds."""

from __future__ import annotations

from typing import Any

from billfold.stripe_gateway.base import GatewayBase, attempt_nonce, idempotency_key
from billfold.stripe_gateway.objects import (
    StripeCard,
    StripePaymentIntent,
    StripeRefund,
    parse_card,
    parse_payment_intent,
    parse_refund,
)


class PaymentCalls(GatewayBase):
    def list_cards(self, stripe_customer_id: str) -> list[StripeCard]:
        def cards() -> list[StripeCard]:
            page = self._client.v1.payment_methods.list(
                params={"customer": stripe_customer_id, "type": "card", "limit": 100}
            )
            return [parse_card(pm) for pm in page.auto_paging_iter()]

        return self._call("payment_method.list", cards, stripe_customer_id=stripe_customer_id)

    def retrieve_card(self, payment_method_id: str) -> StripeCard:
        return self._call(
            "payment_method.retrieve",
            lambda: parse_card(self._client.v1.payment_methods.retrieve(payment_method_id)),
            payment_method_id=payment_method_id,
        )

    def attach_card(
        self, payment_method_id: str, *, stripe_customer_id: str, customer_id: str, attempt: int
    ) -> StripeCard:
        return self._call(
            "payment_method.attach",
            lambda: parse_card(
                self._client.v1.payment_methods.attach(
                    payment_method_id,
                    params={"customer": stripe_customer_id},
                    options={
                        "idempotency_key": idempotency_key(
                            "payment_method.attach", customer_id, payment_method_id, attempt
                        )
                    },
                )
            ),
            customer_id=customer_id,
            payment_method_id=payment_method_id,
        )

    def detach_card(self, payment_method_id: str, *, customer_id: str, version: int) -> StripeCard:
        return self._call(
            "payment_method.detach",
            lambda: parse_card(
                self._client.v1.payment_methods.detach(
                    payment_method_id,
                    options={
                        "idempotency_key": idempotency_key(
                            "payment_method.detach", customer_id, payment_method_id, version
                        )
                    },
                )
            ),
            customer_id=customer_id,
            payment_method_id=payment_method_id,
        )

    def default_card_id(self, stripe_customer_id: str) -> str | None:
        def default() -> str | None:
            customer = self._client.v1.customers.retrieve(stripe_customer_id).to_dict()
            found = (customer.get("invoice_settings") or {}).get("default_payment_method")
            return found if isinstance(found, str) else (found or {}).get("id")

        return self._call("customer.default_card", default, stripe_customer_id=stripe_customer_id)

    def set_default_card(
        self, stripe_customer_id: str, payment_method_id: str, *, customer_id: str
    ) -> None:
        # The key ends with a fresh nonce (see `attempt_nonce`): A → B → A must set A again
        # rather than replay the first answer, and we keep no count of default changes.
        request_id = attempt_nonce()
        self._call(
            "customer.set_default_card",
            lambda: self._client.v1.customers.update(
                stripe_customer_id,
                params={"invoice_settings": {"default_payment_method": payment_method_id}},
                options={
                    "idempotency_key": idempotency_key(
                        "customer.default_card", customer_id, payment_method_id, request_id
                    )
                },
            ),
            customer_id=customer_id,
            payment_method_id=payment_method_id,
        )

    def create_setup_intent(self, stripe_customer_id: str, *, customer_id: str) -> tuple[str, str]:
        """(SetupIntent ID, client_secret) for saving a card for off-session use."""
        # Each call opens a new card form, and one SetupIntent saves one card: a key from our
        # IDs alone would hand back a used intent. Nothing of ours records the attempt, so the
        # key ends with a fresh nonce; it still makes the SDK's network retries of this call
        # one SetupIntent.
        request_id = attempt_nonce()
        intent = self._call(
            "setup_intent.create",
            lambda: self._client.v1.setup_intents.create(
                params={
                    "customer": stripe_customer_id,
                    "usage": "off_session",
                    "metadata": {"customer_id": customer_id},
                },
                options={
                    "idempotency_key": idempotency_key(
                        "setup_intent.create", customer_id, request_id
                    )
                },
            ),
            customer_id=customer_id,
        )
        return intent.id, str(intent.client_secret)

    def create_payment_intent(
        self,
        *,
        payment_id: str,
        amount: int,
        currency: str,
        stripe_customer_id: str,
        metadata: dict[str, str],
        receipt_email: str | None,
        description: str,
        payment_method_id: str | None = None,
        off_session: bool = False,
        save_card: bool = False,
    ) -> StripePaymentIntent:
        """Create an intent; with `off_session`, confirm it at once against the saved card
        (the customer is not there: a card that needs authentication fails)."""
        params: dict[str, Any] = {
            "amount": amount,
            "currency": currency,
            "customer": stripe_customer_id,
            "metadata": {"payment_id": payment_id, **metadata},
            "description": description,
            "automatic_payment_methods": {"enabled": True},
        }
        if receipt_email:
            params["receipt_email"] = receipt_email
        if payment_method_id:
            params["payment_method"] = payment_method_id
        if off_session:
            params.update(confirm=True, off_session=True)
            del params["automatic_payment_methods"]
        if save_card:
            params["setup_future_usage"] = "off_session"
        return self._call(
            "payment_intent.create",
            lambda: parse_payment_intent(
                self._client.v1.payment_intents.create(
                    params=params,  # type: ignore[arg-type]
                    options={
                        "idempotency_key": idempotency_key("payment_intent.create", payment_id)
                    },
                )
            ),
            payment_id=payment_id,
        )

    def confirm_payment_intent(
        self, payment_intent_id: str, *, payment_id: str, attempt: int
    ) -> StripePaymentIntent:
        return self._call(
            "payment_intent.confirm",
            lambda: parse_payment_intent(
                self._client.v1.payment_intents.confirm(
                    payment_intent_id,
                    options={
                        "idempotency_key": idempotency_key(
                            "payment_intent.confirm", payment_id, attempt
                        )
                    },
                )
            ),
            payment_id=payment_id,
            payment_intent_id=payment_intent_id,
        )

    def set_intent_payment_method(
        self, payment_intent_id: str, payment_method_id: str, *, payment_id: str
    ) -> StripePaymentIntent:
        return self._call(
            "payment_intent.update",
            lambda: parse_payment_intent(
                self._client.v1.payment_intents.update(
                    payment_intent_id,
                    params={"payment_method": payment_method_id},
                    options={
                        "idempotency_key": idempotency_key(
                            "payment_intent.payment_method", payment_id, payment_method_id
                        )
                    },
                )
            ),
            payment_id=payment_id,
            payment_intent_id=payment_intent_id,
        )

    def find_payment_intent(
        self, stripe_customer_id: str, payment_id: str
    ) -> StripePaymentIntent | None:
        """The customer's intent made for our payment, if a lost try already made one."""

        def find() -> StripePaymentIntent | None:
            page = self._client.v1.payment_intents.list(
                params={"customer": stripe_customer_id, "limit": 100}
            )
            for obj in page.auto_paging_iter():
                intent = parse_payment_intent(obj)
                if intent.metadata.get("payment_id") == payment_id:
                    return intent
            return None

        return self._call("payment_intent.find", find, payment_id=payment_id)

    def cancel_payment_intent(
        self, payment_intent_id: str, *, payment_id: str
    ) -> StripePaymentIntent:
        """Cancel an intent nobody may pay any more; one already paid is refused (400)."""
        return self._call(
            "payment_intent.cancel",
            lambda: parse_payment_intent(
                self._client.v1.payment_intents.cancel(
                    payment_intent_id,
                    options={
                        "idempotency_key": idempotency_key("payment_intent.cancel", payment_id)
                    },
                )
            ),
            payment_id=payment_id,
            payment_intent_id=payment_intent_id,
        )

    def retrieve_payment_intent(self, payment_intent_id: str) -> StripePaymentIntent:
        return self._call(
            "payment_intent.retrieve",
            lambda: parse_payment_intent(
                self._client.v1.payment_intents.retrieve(payment_intent_id)
            ),
            payment_intent_id=payment_intent_id,
        )

    def create_refund(
        self,
        *,
        refund_id: str,
        payment_id: str,
        payment_intent_id: str,
        amount: int,
        reason: str | None,
    ) -> StripeRefund:
        params: dict[str, Any] = {
            "payment_intent": payment_intent_id,
            "amount": amount,
            "metadata": {"refund_id": refund_id, "payment_id": payment_id},
        }
        if reason:
            params["reason"] = reason
        return self._call(
            "refund.create",
            lambda: parse_refund(
                self._client.v1.refunds.create(
                    params=params,  # type: ignore[arg-type]
                    options={"idempotency_key": idempotency_key("refund.create", refund_id)},
                )
            ),
            refund_id=refund_id,
            payment_id=payment_id,
        )

    def retrieve_refund(self, stripe_refund_id: str) -> StripeRefund:
        return self._call(
            "refund.retrieve",
            lambda: parse_refund(self._client.v1.refunds.retrieve(stripe_refund_id)),
            stripe_refund_id=stripe_refund_id,
        )

    def list_refunds(self, payment_intent_id: str) -> list[StripeRefund]:
        def refunds() -> list[StripeRefund]:
            page = self._client.v1.refunds.list(
                params={"payment_intent": payment_intent_id, "limit": 100}
            )
            return [parse_refund(r) for r in page.auto_paging_iter()]

        return self._call("refund.list", refunds, payment_intent_id=payment_intent_id)
