"""Stripe calls about customers."""

from __future__ import annotations

from typing import Any

from billfold.stripe_gateway.base import GatewayBase, idempotency_key, log
from billfold.stripe_gateway.errors import StripeNotFound
from billfold.stripe_gateway.objects import StripeCustomer, parse_customer


class CustomerCalls(GatewayBase):
    def create_customer(
        self,
        *,
        customer_id: str,
        user_id: str,
        name: str,
        email: str,
        source: str,
        phone: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> StripeCustomer:
        params: dict[str, Any] = {
            "name": name,
            "email": email,
            "description": f"Customer for user ID: {user_id}",
            # Our keys last: the user's metadata never stands in for them.
            "metadata": {
                **(metadata or {}),
                "customer_id": customer_id,
                "user_id": user_id,
                "source": source,
            },
        }
        if phone:
            params["phone"] = phone
        return self._call(
            "customer.create",
            lambda: parse_customer(
                self._client.v1.customers.create(
                    params=params,  # type: ignore[arg-type]
                    options={"idempotency_key": idempotency_key("customer.create", customer_id)},
                )
            ),
            customer_id=customer_id,
        )

    def find_customer_of(self, *, customer_id: str, email: str) -> StripeCustomer | None:
        """The live Stripe customer carrying our ID in its metadata, found by e-mail."""

        def find() -> StripeCustomer | None:
            page = self._client.v1.customers.list(params={"email": email, "limit": 100})
            for obj in page.auto_paging_iter():
                found = parse_customer(obj)
                if found.metadata.get("customer_id") == customer_id and not found.deleted:
                    return found
            return None

        return self._call("customer.find", find, customer_id=customer_id)

    def retrieve_customer(self, stripe_customer_id: str) -> StripeCustomer:
        return self._call(
            "customer.retrieve",
            lambda: parse_customer(self._client.v1.customers.retrieve(stripe_customer_id)),
            stripe_customer_id=stripe_customer_id,
        )

    def update_customer(
        self,
        stripe_customer_id: str,
        *,
        customer_id: str,
        profile_version: int,
        name: str,
        email: str,
        phone: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> StripeCustomer:
        """Set the profile fields; `phone` None clears it, `metadata` is merged by Stripe (an
        empty value removes a key). One push per profile version: a retry of the same
        version replays, a later version is a new update."""
        params: dict[str, Any] = {"name": name, "email": email, "phone": phone or ""}
        if metadata:
            params["metadata"] = metadata
        return self._call(
            "customer.update",
            lambda: parse_customer(
                self._client.v1.customers.update(
                    stripe_customer_id,
                    params=params,  # type: ignore[arg-type]
                    options={
                        "idempotency_key": idempotency_key(
                            "customer.update", customer_id, f"v{profile_version}"
                        )
                    },
                )
            ),
            stripe_customer_id=stripe_customer_id,
            customer_id=customer_id,
        )

    def archive_customer(self, stripe_customer_id: str, *, customer_id: str) -> None:
        self._call(
            "customer.archive",
            lambda: self._client.v1.customers.update(
                stripe_customer_id,
                params={"metadata": {"archived": "true", "customer_id": customer_id}},
                options={"idempotency_key": idempotency_key("customer.archive", customer_id)},
            ),
            stripe_customer_id=stripe_customer_id,
            customer_id=customer_id,
        )

    def delete_customer(self, stripe_customer_id: str, *, customer_id: str) -> None:
        """Delete in Stripe; one already gone counts as deleted."""
        try:
            self._call(
                "customer.delete",
                lambda: self._client.v1.customers.delete(
                    stripe_customer_id,
                    options={"idempotency_key": idempotency_key("customer.delete", customer_id)},
                ),
                stripe_customer_id=stripe_customer_id,
                customer_id=customer_id,
            )
        except StripeNotFound:
            log.info("stripe.customer_already_gone", stripe_customer_id=stripe_customer_id)
