"""The batcher under the consume debits and the entitlement reads: requests that arrive
together are handled in one batch; an error of one request answers that request only; a
batch that fails as a whole is settled request by request, so a bad neighbour fails no one."""

from __future__ import annotations

import asyncio

import structlog
from sqlalchemy import text

from billfold.kit.batching import Batcher, HeldConnection
from billfold.services import Services


class Doubler(Batcher[int, int]):
    """Doubles numbers on the real database; a negative number fails its whole batch (and
    itself alone), a zero fails only itself."""

    def __init__(self, services: Services) -> None:
        super().__init__(services.db.engine, name="doubler", failed_event="doubler.batch_failed")
        self.services = services
        self.batches: list[list[int]] = []
        self.alone: list[int] = []

    def run_batch(self, batch: list[int], connection: HeldConnection) -> list[int | Exception]:
        self.batches.append(batch)
        with connection.transaction() as session:
            doubled = [
                int(session.execute(text("SELECT 2 * :n"), {"n": n}).scalar_one()) for n in batch
            ]
        if any(n < 0 for n in batch):
            raise ValueError("a negative number in the batch")
        return [
            ZeroDivisionError("zero") if n == 0 else d for n, d in zip(batch, doubled, strict=True)
        ]

    def settle_alone(self, work: int) -> int:
        self.alone.append(work)
        if work < 0:
            raise ValueError("negative")
        with self.services.db.transaction() as session:
            return int(session.execute(text("SELECT 2 * :n"), {"n": work}).scalar_one())


async def together(batcher: Doubler, numbers: list[int]) -> list[int | BaseException]:
    """Queue every number before the batcher starts, so its first batch holds them all."""
    tasks = [asyncio.ensure_future(batcher.handle(n)) for n in numbers]
    await asyncio.sleep(0)
    batcher.start()
    try:
        return await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        batcher.stop()


def test_requests_arriving_together_are_one_batch_and_an_error_answers_its_own_request(
    services: Services,
) -> None:
    batcher = Doubler(services)

    outcomes = asyncio.run(together(batcher, [1, 0, 2]))

    assert batcher.batches == [[1, 0, 2]]
    assert batcher.alone == []
    assert outcomes[0] == 2
    assert isinstance(outcomes[1], ZeroDivisionError)
    assert outcomes[2] == 4


def test_a_batch_failing_as_a_whole_is_settled_request_by_request(services: Services) -> None:
    batcher = Doubler(services)

    with structlog.testing.capture_logs() as logs:
        outcomes = asyncio.run(together(batcher, [1, -1, 2, 0]))

    assert batcher.batches == [[1, -1, 2, 0]]
    assert batcher.alone == [1, -1, 2, 0]
    assert [outcomes[0], outcomes[2], outcomes[3]] == [2, 4, 0]
    assert isinstance(outcomes[1], ValueError)
    assert [log["event"] for log in logs] == ["doubler.batch_failed"]


class Miscounting(Doubler):
    """Answers a batch of three with two answers (a defect past run_batch): on its first
    batch only."""

    def run_batch(self, batch: list[int], connection: HeldConnection) -> list[int | Exception]:
        answers = super().run_batch(batch, connection)
        return answers[:-1] if len(self.batches) == 1 else answers


def test_a_defect_answering_a_batch_fails_that_batch_and_the_batcher_answers_the_next(
    services: Services,
) -> None:
    batcher = Miscounting(services)

    async def first_then_next() -> tuple[list[int | BaseException], int]:
        first = await together_started(batcher, [1, 2, 3])
        return first, await asyncio.wait_for(batcher.handle(5), timeout=30)

    with structlog.testing.capture_logs() as logs:
        try:
            first, later = asyncio.run(first_then_next())
        finally:
            batcher.stop()

    assert all(isinstance(outcome, ValueError) for outcome in first), first
    assert later == 10
    assert "batching.answer_failed" in [log["event"] for log in logs]


async def together_started(batcher: Doubler, numbers: list[int]) -> list[int | BaseException]:
    """As `together`, leaving the batcher running for the requests that follow."""
    tasks = [asyncio.ensure_future(batcher.handle(n)) for n in numbers]
    await asyncio.sleep(0)
    batcher.start()
    return await asyncio.gather(*tasks, return_exceptions=True)
