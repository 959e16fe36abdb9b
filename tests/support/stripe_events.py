"""Signed Stripe webhook deliveries for tests, built as Stripe builds them."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import stripe


def event(
    event_type: str, obj: dict[str, Any], *, created: int | None = None, event_id: str | None = None
) -> dict[str, Any]:
    return {
        "id": event_id or f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "api_version": "2024-06-20",
        "created": created if created is not None else int(time.time()),
        "livemode": False,
        "type": event_type,
        "data": {"object": obj},
    }


def sign(payload: bytes, secret: str, *, timestamp: int | None = None) -> str:
    """The Stripe-Signature header Stripe would send for `payload`."""
    ts = timestamp if timestamp is not None else int(time.time())
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def delivery(
    evt: dict[str, Any], secret: str, *, timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(evt).encode()
    return body, {
        "Stripe-Signature": sign(body, secret, timestamp=timestamp),
        "Content-Type": "application/json",
    }


@dataclass
class EventRelay:
    """Forwards the events the Stripe stand-in sent since the test began to Billfold's
    webhook endpoint, each once and in the order they happened, signed with `secret` (what
    `stripe listen --forward-to` does for a local server)."""

    stripe_api: stripe.StripeClient
    secret: str
    since: int = field(default_factory=lambda: int(time.time()) - 1)
    seen: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        # Events of the same second that came before (another test's) are not this test's.
        self.skip()

    def pending(self, *types: str) -> list[dict[str, Any]]:
        """The events not relayed yet (of `types`, if given), oldest first."""
        listed = self.stripe_api.v1.events.list(
            params={"created": {"gte": self.since}, "limit": 10_000}
        )
        fresh = [
            _plain(e)
            for e in listed.data
            if e.id not in self.seen and (not types or e.type in types)
        ]
        return sorted(fresh, key=lambda e: int(e["created"]))

    def relay(self, client: httpx.Client, *types: str) -> list[str]:
        """POST the new events (of `types`, if given) to Billfold (a TestClient, or a client of
        a live server); answers their types."""
        sent = []
        for evt in self.pending(*types):
            self.seen.add(evt["id"])
            body, headers = delivery(evt, self.secret)
            answer = client.post("/webhooks/stripe", content=body, headers=headers)
            assert answer.status_code == 200, answer.text
            sent.append(str(evt["type"]))
        return sent

    def skip(self, *types: str) -> list[str]:
        """Mark the new events (of `types`, if given) as seen without relaying them."""
        skipped = self.pending(*types)
        self.seen.update(e["id"] for e in skipped)
        return [str(e["type"]) for e in skipped]


def _plain(obj: stripe.StripeObject) -> dict[str, Any]:
    plain: dict[str, Any] = json.loads(json.dumps(obj.to_dict(for_json=True)))
    return plain


# Stripe's own example objects, from its OpenAPI fixtures3.json (see stripe_fixtures/), for
# events about objects the stand-in does not hold (one Stripe no longer has, say).
FIXTURES = Path(__file__).resolve().parent / "stripe_fixtures" / "fixtures3.json"


@cache
def _fixtures() -> dict[str, Any]:
    resources: dict[str, Any] = json.loads(FIXTURES.read_text())["resources"]
    return resources


def fixture(resource: str) -> dict[str, Any]:
    return dict(_fixtures()[resource])
