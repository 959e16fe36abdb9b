"""Self-tests of the test helpers: localstripe stand-in, FaultyLink proxy, ThrowawayPostgres."""

from __future__ import annotations

import base64
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sqlalchemy as sa
import stripe
from standardwebhooks.webhooks import Webhook
from support.netfault import FaultyLink
from support.postgres import ThrowawayPostgres
from support.waiting import wait_until
from support.webhook_receiver import Answer, WebhookReceiver

from billfold.standin import LocalStripe


@pytest.fixture(scope="module")
def localstripe() -> Iterator[LocalStripe]:
    with LocalStripe.start() as standin:
        yield standin


@pytest.fixture(scope="module")
def link_module(localstripe: LocalStripe) -> Iterator[FaultyLink]:
    with FaultyLink.start("127.0.0.1", localstripe.port) as link:
        yield link


@pytest.fixture
def link(link_module: FaultyLink) -> Iterator[FaultyLink]:
    link_module.up()
    yield link_module
    link_module.up()


def client_for(url: str, timeout: float = 10.0) -> stripe.StripeClient:
    return stripe.StripeClient(
        "sk_test_x",
        base_addresses={"api": url},
        max_network_retries=0,
        http_client=stripe.RequestsClient(timeout=timeout),
    )


def unique_email() -> str:
    return f"{uuid.uuid4().hex[:12]}@example.com"


def emails_in(localstripe: LocalStripe, email: str) -> list[str | None]:
    found = client_for(localstripe.url).v1.customers.list(params={"email": email})
    return [customer.email for customer in found.data]


def test_localstripe_creates_and_lists_customers(localstripe: LocalStripe) -> None:
    email = unique_email()
    customer = client_for(localstripe.url).v1.customers.create(params={"email": email})
    assert customer.id.startswith("cus_")
    assert emails_in(localstripe, email) == [email]
    assert localstripe.alive()


def test_localstripe_sends_signed_webhooks(localstripe: LocalStripe) -> None:
    received: list[tuple[bytes, str]] = []
    arrived = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((body, self.headers["Stripe-Signature"]))
            arrived.set()
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        hook_url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        localstripe.register_webhook("selfcheck", hook_url, "whsec_selfcheck", ["customer.created"])
        client_for(localstripe.url).v1.customers.create(params={"email": unique_email()})
        assert arrived.wait(10), "localstripe delivered no webhook"
    finally:
        server.shutdown()
        server.server_close()
    body, signature = received[0]
    event = stripe.Webhook.construct_event(body.decode(), signature, "whsec_selfcheck")
    assert event.type == "customer.created"


def test_localstripe_lists_no_refunds_for_an_intent_never_charged(
    localstripe: LocalStripe,
) -> None:
    client = client_for(localstripe.url)
    intent = client.v1.payment_intents.create(params={"amount": 500, "currency": "usd"})

    listed = client.v1.refunds.list(params={"payment_intent": intent.id})

    assert listed.data == []


def test_faultylink_forwards_when_up(link: FaultyLink, localstripe: LocalStripe) -> None:
    email = unique_email()
    client_for(link.url).v1.customers.create(params={"email": email})
    assert emails_in(localstripe, email) == [email]


def test_faultylink_counts_each_request_on_a_kept_alive_connection(
    link: FaultyLink, localstripe: LocalStripe
) -> None:
    client = client_for(link.url)
    before = link.counts["requests"]
    for _ in range(3):
        client.v1.customers.list(params={"limit": 1})
    client.v1.customers.create(params={"email": unique_email()})
    assert link.counts["requests"] - before == 4


def test_faultylink_down_fails_fast_then_recovers(
    link: FaultyLink, localstripe: LocalStripe
) -> None:
    client = client_for(link.url)
    client.v1.customers.list()  # leave a keep-alive connection open: down() must cut it too
    link.down()
    for _ in range(2):
        started = time.monotonic()
        with pytest.raises(stripe.APIConnectionError):
            client.v1.customers.create(params={"email": unique_email()})
        assert time.monotonic() - started < 2
    link.up()
    email = unique_email()
    client.v1.customers.create(params={"email": email})
    assert emails_in(localstripe, email) == [email]


def test_faultylink_drop_loses_answer_not_request(
    link: FaultyLink, localstripe: LocalStripe
) -> None:
    email = unique_email()
    link.drop_responses()
    with pytest.raises(stripe.APIConnectionError):
        client_for(link.url).v1.customers.create(params={"email": email})
    assert emails_in(localstripe, email) == [email]
    link.up()
    client_for(link.url).v1.customers.list(params={"limit": 1})


def test_faultylink_holds_responses_until_up(link: FaultyLink, localstripe: LocalStripe) -> None:
    email = unique_email()
    results: list[str] = []
    link.hold_responses()
    call = threading.Thread(
        target=lambda: results.append(
            client_for(link.url).v1.customers.create(params={"email": email}).id
        )
    )
    call.start()
    assert link.wait_for_held_response(timeout=10)
    assert emails_in(localstripe, email) == [email]  # Stripe did the work ...
    # ... but the caller has no answer yet, however long it is given.
    assert not wait_until(lambda: results != [], 0.2)
    link.up()
    call.join(timeout=10)
    assert len(results) == 1
    assert results[0].startswith("cus_")


@pytest.fixture(scope="module")
def postgres() -> Iterator[ThrowawayPostgres]:
    with ThrowawayPostgres.start() as server:
        yield server


def test_throwaway_postgres_answers(postgres: ThrowawayPostgres) -> None:
    engine = sa.create_engine(postgres.url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("select 1")).scalar_one() == 1
    finally:
        engine.dispose()


def test_throwaway_postgres_creates_databases(postgres: ThrowawayPostgres) -> None:
    engine = sa.create_engine(postgres.create_database("selfcheck_db"))
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("select current_database()")).scalar_one() == (
                "selfcheck_db"
            )
    finally:
        engine.dispose()


def test_webhook_receiver_trickles_and_sees_a_hang_up_on_a_descriptor_past_1024() -> None:
    """The receiver watches a trickled answer's connection for a hang-up; a long test run's
    process holds over 1,024 descriptors, where select() refused (and the answer was lost)."""
    padding = [os.dup(0) for _ in range(1100)]
    secret = "whsec_" + base64.b64encode(b"receiver-test-secret-32-bytes-xx").decode()
    receiver = WebhookReceiver.start([secret])
    try:
        receiver.respond = lambda _r: Answer(200, trickle=10.0)
        body = '{"type":"t","data":{}}'
        now = datetime.now(UTC)
        headers = {
            "webhook-id": "msg_fd",
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(secret).sign("msg_fd", now, body),
            "content-length": str(len(body)),
        }
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        port = int(receiver.url.rsplit(":", 1)[1].split("/", 1)[0])
        with socket.create_connection(("127.0.0.1", port)) as conn:
            assert conn.fileno() > 1024
            conn.sendall(f"POST /hooks HTTP/1.1\r\nhost: x\r\n{head}\r\n{body}".encode())
            assert conn.recv(64).startswith(b"HTTP/1.1 200")  # the trickle began
        assert wait_until(lambda: len(receiver.finished) == 1, timeout=10)
        [(received, ended)] = receiver.finished
        assert received.webhook_id == "msg_fd"
        assert ended - received.at < 5  # seen at the hang-up, not at the trickle's end
    finally:
        receiver.stop()
        for fd in padding:
            os.close(fd)
