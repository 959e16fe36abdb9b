"""Entitlement reads grouped: the checks that arrive together are answered from one read.

A host application asks before many actions, often many at once. Answered one by one, each
check pays for its own transaction, its own caller lookup and its own query. The reader
hands every waiting question to its thread (the consume batcher's mechanism,
`kit/batching.py`), which resolves the callers in bulk and reads every customer's plan and
balance in one query, in one transaction that begins after each of its questions arrived:
an answer is never older than its question, so nothing is kept between batches and nothing
can be stale. On SQLite that transaction takes no write lock (it only writes when a service
key's last use is due to be recorded, at most once a minute: should SQLite refuse that write,
the batch is answered question by question in ordinary transactions).
"""

from __future__ import annotations

from billfold.auth.service import Caller, TokenIssuer, resolve_caller, resolve_callers
from billfold.entitlements.service import Standing, standing, standings
from billfold.kit.batching import Batcher, HeldConnection
from billfold.services import Services

# A question as it waits: the credential (resolved inside the batch) and the customer ID.
_Ask = tuple[str, str]


class EntitlementReader(Batcher[_Ask, Standing]):
    def __init__(
        self, services: Services, tokens: TokenIssuer, *, threads: int = 1, max_batch: int = 500
    ) -> None:
        super().__init__(
            services.db.engine,
            name="entitlement-reader",
            failed_event="entitlements.batch_failed",
            threads=threads,
            max_batch=max_batch,
            reader=True,  # on SQLite, no write lock: a check neither waits for nor blocks a debit
        )
        self._services = services
        self._tokens = tokens

    async def standing(self, credential: str, customer_id: str) -> Standing:
        """The customer's plan and balance as the caller behind `credential` may see them
        (404 for a customer they may not see, 401 for a bad credential)."""
        return await self.handle((credential, customer_id))

    def run_batch(
        self, batch: list[_Ask], connection: HeldConnection
    ) -> list[Standing | Exception]:
        with connection.transaction() as session:
            callers = resolve_callers(session, [c for c, _ in batch], self._tokens)
            asks = [
                (c, cid)
                for c, (_, cid) in zip(callers, batch, strict=True)
                if isinstance(c, Caller)
            ]
            found = iter(standings(session, asks, self._services.settings))
            return [next(found) if isinstance(c, Caller) else c for c in callers]

    def settle_alone(self, work: _Ask) -> Standing:
        credential, customer_id = work
        with self._services.db.transaction() as session:
            caller = resolve_caller(session, credential, self._tokens)
            return standing(session, caller, customer_id, self._services.settings)
