"""Billing portal sessions in the stand-in: create answers a URL to a small hosted page
(see `pages`) listing the customer's subscriptions and cards, with a link back."""

from __future__ import annotations

from typing import Any

from billfold.standin import web


def apply() -> None:
    from localstripe import resources as r
    from localstripe.errors import UserError

    class BillingPortalSession(r.StripeObject):  # type: ignore[misc]  # localstripe is untyped
        object = "billing_portal.session"
        _id_prefix = "bps_"

        def __init__(
            self,
            customer: Any = None,
            return_url: Any = None,
            configuration: Any = None,
            locale: Any = None,
            flow_data: Any = None,
            **unknown: Any,
        ) -> None:
            if unknown:
                name = sorted(unknown)[0]
                raise UserError(400, f"Received unknown parameter: {name}", {"param": name})
            if not isinstance(customer, str):
                raise UserError(400, "customer is required", {"param": "customer"})
            r.Customer._api_retrieve(customer)
            if return_url is not None and not str(return_url).startswith(("http://", "https://")):
                raise UserError(400, "return_url must be an http(s) URL", {"param": "return_url"})
            super().__init__()
            self.customer = customer
            self.return_url = return_url
            self.configuration = configuration or "bpc_standin"
            self.locale = locale
            self.flow = None
            self.on_behalf_of = None

        @property
        def url(self) -> str:
            return f"{web.public_url}/billing_portal/{self.id}"

    global _Session
    _Session = BillingPortalSession
    web.api(
        "POST",
        "/v1/billing_portal/sessions",
        lambda **data: BillingPortalSession._api_create(**data),
    )


_Session: Any = None


def session(id: str) -> Any:
    return _Session._api_retrieve(id)
