"""Verify Billfold's outbound webhooks (Standard Webhooks signatures) in the host backend."""

from __future__ import annotations

import json
from collections.abc import Mapping

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from billfold_client.types import WebhookEvent


class InvalidWebhook(Exception):
    """The delivery's signature or timestamp does not verify: answer it with a 400."""


class WebhookVerifier:
    """`WebhookVerifier(secret).verify(raw_body, headers)` answers the event, or raises
    `InvalidWebhook`. Give both secrets while rotating (`WebhookVerifier(new, old)`): a
    delivery verifies if any of its signatures matches any of them."""

    def __init__(self, *secrets: str) -> None:
        if not secrets:
            raise ValueError("give the endpoint's whsec_… secret")
        self._webhooks = [Webhook(secret) for secret in secrets]

    def verify(self, body: bytes | str, headers: Mapping[str, str]) -> WebhookEvent:
        """Check the signature and the timestamp (within 5 minutes), then parse the body.
        Dedupe on the answer's `id` (the `webhook-id`): a retry or redelivery repeats it."""
        lowered = {k.lower(): v for k, v in headers.items()}
        for webhook in self._webhooks:
            try:
                webhook.verify(body, lowered)
            except WebhookVerificationError:
                continue
            payload = json.loads(body)
            return WebhookEvent(
                id=lowered["webhook-id"],
                type=payload["type"],
                timestamp=payload["timestamp"],
                data=payload["data"],
            )
        raise InvalidWebhook("the webhook's signature or timestamp does not verify")
