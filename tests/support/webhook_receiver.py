"""A real HTTP receiver for outbound webhooks: it verifies every delivery with the
`standardwebhooks` library and answers as the test tells it (status, Retry-After, delay,
hold until released), so faults are real network behaviour, not a mocked client."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass(frozen=True)
class Received:
    webhook_id: str
    type: str
    data: dict[str, Any]
    headers: dict[str, str]
    verified_with: tuple[str, ...]  # the secrets whose signature matched
    body: bytes
    at: float = 0.0  # time.monotonic() when it arrived


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (beyond the sender's timeout = a slow receiver)
    hold: threading.Event | None = None  # answer only once this is set
    # Answer this slowly: the status line, then a header line every 0.2 s for this many
    # seconds (each read of the sender's is quick, the whole answer is not).
    trickle: float = 0.0


class WebhookReceiver:
    """Start with `WebhookReceiver.start(secrets)`; `.stop()` takes it down, `.restart()` up."""

    def __init__(self, secrets: list[str], port: int = 0) -> None:
        self.secrets = list(secrets)
        self.received: list[Received] = []
        self.rejected: list[str] = []
        self.accepted: list[Received] = []  # answered with a 2xx
        # Each request with when its exchange ended (answered, or the sender hung up).
        self.finished: list[tuple[Received, float]] = []
        self.requests = 0
        # Called for each verified delivery; answers how to reply (default: 200 at once).
        self.respond: Callable[[Received], Answer] = lambda _r: Answer()
        self._lock = threading.Lock()
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def start(cls, secrets: list[str] | None = None) -> WebhookReceiver:
        receiver = cls(secrets or [])
        receiver.restart()
        return receiver

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}/hooks"

    def restart(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                received, answer = receiver._handle(
                    body, {k.lower(): v for k, v in self.headers.items()}
                )
                try:
                    self._answer(answer)
                except OSError:
                    self.close_connection = True  # the sender hung up
                if received is not None:
                    with receiver._lock:
                        receiver.finished.append((received, time.monotonic()))

            def _answer(self, answer: Answer) -> None:
                if answer.hold is not None:
                    answer.hold.wait(30)
                if answer.delay:
                    time.sleep(answer.delay)
                if answer.trickle:
                    self.wfile.write(f"HTTP/1.1 {answer.status} OK\r\n".encode())
                    self.wfile.flush()
                    until = time.monotonic() + answer.trickle
                    n = 0
                    # poll, not select: select() refuses a descriptor numbered past 1,024,
                    # which a long test run's process reaches.
                    readable = select.poll()
                    readable.register(self.connection, select.POLLIN)
                    while time.monotonic() < until:
                        # A hang-up is seen when it happens, not at the second write after it
                        # (up to 0.4 s later, by when the sender may have tried again).
                        if readable.poll(200):
                            if not self.connection.recv(1, socket.MSG_PEEK):
                                raise ConnectionResetError("the sender hung up")
                            time.sleep(0.2)  # bytes of a next request: not an answer to wait on
                        n += 1
                        self.wfile.write(f"x-slow-{n}: 1\r\n".encode())
                        self.wfile.flush()
                    self.wfile.write(b"content-length: 0\r\n\r\n")
                    self.wfile.flush()
                    return
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        server = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        server.daemon_threads = True
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _handle(self, body: bytes, headers: dict[str, str]) -> tuple[Received | None, Answer]:
        arrived = time.monotonic()
        with self._lock:
            self.requests += 1
        matched = []
        for secret in self.secrets:
            try:
                Webhook(secret).verify(body, headers)
            except WebhookVerificationError:
                continue
            matched.append(secret)
        if not matched:
            with self._lock:
                self.rejected.append(headers.get("webhook-id", "?"))
            return None, Answer(status=400)
        payload = json.loads(body)
        received = Received(
            headers["webhook-id"],
            payload["type"],
            payload["data"],
            headers,
            tuple(matched),
            body,
            arrived,
        )
        with self._lock:
            self.received.append(received)
        answer = self.respond(received)
        if 200 <= answer.status < 300:
            with self._lock:
                self.accepted.append(received)
        return received, answer

    def accepted_ids(self) -> list[str]:
        with self._lock:
            return [r.webhook_id for r in self.accepted]
