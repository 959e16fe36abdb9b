"""The consume batcher: debits that arrive together are applied in one transaction, and when
the database refuses a batch, each debit is applied alone instead — once."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import structlog
from fastapi.testclient import TestClient
from sqlalchemy import text
from support.credits import balance, grant, ledger

from billfold.auth.service import TokenIssuer
from billfold.config import secret
from billfold.credits.batching import ConsumeBatcher
from billfold.credits.consume import Debit
from billfold.credits.postings import Posted
from billfold.services import Services


async def submitted_together(
    batcher: ConsumeBatcher, credential: str, debits: list[Debit]
) -> list[Posted | BaseException]:
    """Queue every debit before the batcher starts, so its first batch holds them all."""
    tasks = [asyncio.ensure_future(batcher.submit(credential, d)) for d in debits]
    await asyncio.sleep(0)  # one turn of the loop: each task runs up to its wait, queued
    batcher.start()
    return await asyncio.gather(*tasks, return_exceptions=True)


def _batcher(services: Services) -> ConsumeBatcher:
    """A consume batcher of its own (not the app's), with the app's token settings."""
    settings = services.settings
    return ConsumeBatcher(
        services,
        TokenIssuer(
            secret=secret(settings.jwt_secret),
            lifetime=timedelta(minutes=settings.jwt_expires_minutes),
        ),
    )


def test_a_batch_the_database_refuses_is_applied_one_at_a_time_and_debits_each_once(
    client: TestClient, services: Services, admin: dict[str, str], buyer: dict[str, Any]
) -> None:
    assert grant(client, admin, buyer["customerId"], 100).status_code == 201
    # A real constraint that a batch breaks and a debit alone keeps: a batch writes all its
    # entries at one instant; a debit alone, at its own.
    with services.db.transaction() as session:
        session.execute(
            text(
                "CREATE UNIQUE INDEX one_entry_per_instant"
                " ON credit_transactions (customer_id, created_at)"
            )
        )
    batcher = _batcher(services)
    credential = buyer["headers"]["Authorization"].removeprefix("Bearer ")
    debits = [Debit(None, 10, key, "render") for key in ("a", "b", "c", "a")]

    try:
        with structlog.testing.capture_logs() as logs:
            outcomes = asyncio.run(submitted_together(batcher, credential, debits))
    finally:
        batcher.stop()

    assert [log["event"] for log in logs].count("credits.batch_failed") == 1, logs
    assert all(isinstance(o, Posted) for o in outcomes), outcomes
    posted = [o for o in outcomes if isinstance(o, Posted)]
    assert [(p.amount, p.replayed) for p in posted] == [
        (-10, False),
        (-10, False),
        (-10, False),
        (-10, True),
    ]
    assert posted[3].id == posted[0].id
    assert balance(client, buyer["headers"]) == 70
    entries = ledger(client, buyer["headers"])
    assert [e["amount"] for e in entries] == [-10, -10, -10, 100]
    assert sorted(e["id"] for e in entries[:3]) == sorted(p.id for p in posted[:3])


def test_a_request_cancelled_while_its_debit_waits_leaves_the_batcher_answering_others(
    client: TestClient, services: Services, admin: dict[str, str], buyer: dict[str, Any]
) -> None:
    assert grant(client, admin, buyer["customerId"], 100).status_code == 201
    batcher = _batcher(services)
    credential = buyer["headers"]["Authorization"].removeprefix("Bearer ")

    async def cancel_one_then_consume() -> tuple[Posted, Posted]:
        gone = asyncio.ensure_future(batcher.submit(credential, Debit(None, 10, "gone", None)))
        kept = asyncio.ensure_future(batcher.submit(credential, Debit(None, 10, "kept", None)))
        await asyncio.sleep(0)  # one turn of the loop: both debits are queued
        gone.cancel()  # the caller went away before its answer came
        batcher.start()
        first = await asyncio.wait_for(kept, timeout=60)
        # The batcher still answers: a debit sent after the cancelled one's batch.
        later = await asyncio.wait_for(
            batcher.submit(credential, Debit(None, 10, "later", None)), timeout=60
        )
        return first, later

    try:
        kept, later = asyncio.run(cancel_one_then_consume())
    finally:
        batcher.stop()

    assert (kept.amount, later.amount) == (-10, -10)
    # The cancelled request's debit was applied (only its answer was lost), once.
    assert balance(client, buyer["headers"]) == 70
    assert sorted(e["amount"] for e in ledger(client, buyer["headers"])) == [-10, -10, -10, 100]
