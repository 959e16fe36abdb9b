"""Group commit for Stripe's deliveries: the events that arrive together are stored in one
transaction.

Stored one by one, each event paid for its own transaction: a connection checked out (and
pinged), a savepoint, the event's insert, the job's insert, the workers' NOTIFY and the
commit, each a round trip, on a thread-pool thread per request. The batcher hands every
waiting delivery to its thread (`kit/batching.py`, as the consume debits), which checks each
signature, stores the good events and their jobs with one statement each
(`inbox.receive_all`) and commits once; only then is any of them answered, so nothing is
acknowledged before it is stored. A delivery whose signature fails is refused alone; if the
batch fails as a whole, each delivery is stored alone through `inbox.accept`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from billfold.kit.batching import Batcher, HeldConnection
from billfold.services import Services
from billfold.stripe_gateway.errors import WebhookSignatureInvalid
from billfold.webhooks import inbox

# A delivery as it waits: the raw body and its Stripe-Signature header.
_Delivery = tuple[bytes, str | None]


class InboxBatcher(Batcher[_Delivery, inbox.Stored]):
    def __init__(self, services: Services, *, threads: int = 1, max_batch: int = 200) -> None:
        super().__init__(
            services.db.engine,
            name="webhook-inbox-batcher",
            failed_event="webhooks.batch_failed",
            threads=threads,
            max_batch=max_batch,
        )
        self._services = services

    async def accept(self, raw_body: bytes, signature: str | None) -> inbox.Stored:
        """Stripe's delivery, stored (with its job) and committed in the next batch."""
        return await self.handle((raw_body, signature))

    def settle_alone(self, work: _Delivery) -> inbox.Stored:
        return inbox.accept(self._services, *work)

    def run_batch(
        self, batch: list[_Delivery], connection: HeldConnection
    ) -> list[inbox.Stored | Exception]:
        refused: list[Exception | None] = []  # None: verified, stored below
        verified: list[tuple[dict[str, Any], bytes]] = []
        for raw_body, signature in batch:
            try:
                event = self._services.stripe.verify_webhook(raw_body, signature)
            except WebhookSignatureInvalid as exc:
                refused.append(exc)
                continue
            verified.append((event, raw_body))
            refused.append(None)
        stored: Iterator[inbox.Stored] = iter(())
        if verified:
            with connection.transaction() as session:
                stored = iter(inbox.receive_all(session, verified))
        # Committed: only now may the deliveries be acknowledged.
        return [next(stored) if exc is None else exc for exc in refused]
