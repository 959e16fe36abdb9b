"""Group commit for debits: the consumes that arrive together are applied in one transaction.

The host application calls `consume` on every billable action, often many at once on the
same account. Applied one by one, each debit pays for its own transaction and waits for the
account's row lock in turn. The batcher hands every waiting debit to its thread, which
resolves the callers and their accounts in bulk and applies the debits in arrival order
through `consume.spend` — the very rule of a single debit (`postings.decide`, the ledger's
one entry writer) — and commits once. If a batch fails as a whole, each debit is retried
alone through the plain path, so a bad neighbour never fails a good debit.
"""

from __future__ import annotations

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from billfold.auth.service import Caller, TokenIssuer, resolve_caller, resolve_callers
from billfold.config import Settings
from billfold.credits.consume import Debit, consume, debit_of, spend
from billfold.credits.postings import Posted
from billfold.customers.service import acting_customer_ids
from billfold.kit.batching import Batcher, HeldConnection
from billfold.services import Services

log = structlog.get_logger("billfold.credits")

# A debit as it waits: the credential is resolved to a caller inside the batch (no
# transaction per request).
_Work = tuple[str, Debit]


class ConsumeBatcher(Batcher[_Work, Posted]):
    def __init__(
        self, services: Services, tokens: TokenIssuer, *, threads: int = 1, max_batch: int = 500
    ) -> None:
        super().__init__(
            services.db.engine,
            name="consume-batcher",
            failed_event="credits.batch_failed",
            threads=threads,
            max_batch=max_batch,
        )
        self._services = services
        self._tokens = tokens

    async def submit(self, credential: str, debit: Debit) -> Posted:
        """Apply a debit for the caller behind `credential` (a JWT or a service API key)."""
        return await self.handle((credential, debit))

    def settle_alone(self, work: _Work) -> Posted:
        credential, debit = work
        with self._services.db.transaction() as session:
            caller = resolve_caller(session, credential, self._tokens)
        return consume(self._services, caller, debit)

    def run_batch(self, batch: list[_Work], connection: HeldConnection) -> list[Posted | Exception]:
        try:
            return self._apply_once(batch, connection, keys_before_lock=True)
        except IntegrityError:
            # Another batch committed one of these keys after this one looked: look again,
            # this time under the account locks, where no other batch can come between.
            log.info("credits.batch_key_raced", size=len(batch))
        except Exception:
            log.warning("credits.batch_failed", size=len(batch), exc_info=True)
            connection.release()  # it may be what failed: the next batch checks out a new one
        return self._apply_once(batch, connection, keys_before_lock=False)

    def _apply_once(
        self, batch: list[_Work], connection: HeldConnection, *, keys_before_lock: bool
    ) -> list[Posted | Exception]:
        with connection.transaction() as session:
            return apply_batch(
                session,
                self._services.settings,
                batch,
                self._tokens,
                keys_before_lock=keys_before_lock,
            )


def apply_batch(
    session: Session,
    settings: Settings,
    debits: list[tuple[str, Debit]],
    tokens: TokenIssuer,
    *,
    keys_before_lock: bool = False,
) -> list[Posted | Exception]:
    """Each debit's outcome (or error), in order, applied in the caller's transaction: the
    callers and the accounts they draw on resolved in bulk, then every debit by
    `consume.spend`, the rule of a single debit."""
    callers = resolve_callers(session, [credential for credential, _ in debits], tokens)
    allowed = [(c, d) for c, (_, d) in zip(callers, debits, strict=True) if isinstance(c, Caller)]
    owners = iter(acting_customer_ids(session, [(c, d.customer_id) for c, d in allowed]))
    outcomes: list[str | Exception] = [
        c if isinstance(c, Exception) else next(owners) for c in callers
    ]
    movements = [
        debit_of(c, owner, d)
        for c, (_, d), owner in zip(callers, debits, outcomes, strict=True)
        if isinstance(c, Caller) and isinstance(owner, str)
    ]
    applied = iter(spend(session, settings, movements, keys_before_lock=keys_before_lock))
    return [next(applied) if isinstance(o, str) else o for o in outcomes]
