"""The Stripe endpoints localstripe lacks (Checkout Sessions, Billing Portal sessions),
answered at the HTTP exchange with Stripe's own example objects from fixtures3.json; every
other call goes to the real localstripe."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import stripe

# The resources we use, copied from Stripe's OpenAPI fixtures3.json (see stripe_fixtures/).
FIXTURES = Path(__file__).resolve().parent / "stripe_fixtures" / "fixtures3.json"
FAKED = {
    "/v1/checkout/sessions": "checkout.session",
    "/v1/billing_portal/sessions": "billing_portal.session",
}


@cache
def fixture(resource: str) -> dict[str, Any]:
    resources: dict[str, Any] = json.loads(FIXTURES.read_text())["resources"]
    return dict(resources[resource])


def form(body: str) -> dict[str, Any]:
    """Stripe's form encoding (`metadata[customer_id]=…`, `line_items[0][price]=…`) as a tree."""
    tree: dict[str, Any] = {}
    for key, value in parse_qsl(body, keep_blank_values=True):
        parts = key.replace("]", "").split("[")
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return tree


class StandInWithFixtures(stripe.HTTPXClient):
    def __init__(self, timeout: float) -> None:
        super().__init__(timeout=timeout, allow_sync_methods=True)
        self.faked: list[tuple[str, dict[str, Any]]] = []

    def request(  # type: ignore[override]  # HTTPXClient answers bytes, as we do
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        path = urlsplit(url).path
        if method.lower() == "post" and path in FAKED:
            params = form(post_data.decode() if isinstance(post_data, bytes) else post_data or "")
            self.faked.append((path, params))
            answer = self._answer(FAKED[path], params)
            return json.dumps(answer).encode(), 200, {"request-id": f"req_{uuid.uuid4().hex[:14]}"}
        return super().request(method, url, headers, post_data)

    @staticmethod
    def _answer(resource: str, params: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(fixture(resource))
        if resource == "checkout.session":
            session_id = f"cs_test_{uuid.uuid4().hex}"
            obj.update(
                id=session_id,
                url=f"https://checkout.stripe.com/c/pay/{session_id}",
                mode=params.get("mode"),
                customer=params.get("customer"),
                client_reference_id=params.get("client_reference_id"),
                metadata=params.get("metadata", {}),
                success_url=params.get("success_url"),
                cancel_url=params.get("cancel_url"),
                status="open",
                subscription=None,
            )
        else:
            session_id = f"bps_{uuid.uuid4().hex[:24]}"
            obj.update(
                id=session_id,
                url=f"https://billing.stripe.com/p/session/{session_id}",
                customer=params.get("customer"),
                return_url=params.get("return_url"),
            )
        return obj
