"""Stripe calls about events: listing what Stripe sent (or meant to send) since a time."""

from __future__ import annotations

from typing import Any

from billfold.stripe_gateway.base import GatewayBase


class EventCalls(GatewayBase):
    def list_events(self, *, created_since: int) -> list[dict[str, Any]]:
        """Every event Stripe still keeps (30 days) created at or after `created_since`
        (epoch seconds), as plain dicts shaped like webhook bodies."""

        def events() -> list[dict[str, Any]]:
            page = self._client.v1.events.list(
                params={"created": {"gte": created_since}, "limit": 100}
            )
            return [event.to_dict() for event in page.auto_paging_iter()]

        return self._call("event.list", events)
