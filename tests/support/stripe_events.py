"""Signed Stripe webhook deliveries for tests, built as Stripe builds them."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any


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
