"""The outbound transport (kit/deadline_http) against a real local HTTP server: it checks the
address it connects to, not an earlier lookup's, and its address lookup ends by the try's
deadline."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from billfold.config import PrivateUrls
from billfold.kit.deadline_http import deadline, deadline_transport

LIMITS = httpx.Limits(max_connections=2, max_keepalive_connections=2)


class _Counting(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.hits += 1  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    httpd.hits = 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _client(**kwargs: Any) -> httpx.Client:
    return httpx.Client(trust_env=False, transport=deadline_transport(LIMITS, **kwargs))


def _rebinding(public_first: list[str]) -> Any:
    """A resolver whose answers change between lookups, as a hostile DNS server's can: each
    call gives the next address of the list (the last one from then on)."""
    answers = list(public_first)

    def resolve(host: str, port: int) -> list[tuple[Any, ...]]:
        address = answers.pop(0) if len(answers) > 1 else answers[0]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    return resolve


def test_a_host_that_now_resolves_to_loopback_is_not_connected_to_when_loopback_is_refused(
    server: ThreadingHTTPServer,
) -> None:
    port = server.server_address[1]
    # The URL was checked when it resolved to a public address; by the delivery it resolves
    # to this machine. The check on the address connected to is what stops it.
    resolve = _rebinding(["93.184.216.34", "127.0.0.1"])
    url_check_lookup = resolve("hooks.example", port)[0][4][0]
    assert PrivateUrls.NONE.allows(ipaddress.ip_address(url_check_lookup))
    with (
        _client(allow_address=PrivateUrls.NONE.allows, resolve=resolve) as client,
        pytest.raises(httpx.ConnectError, match=r"127\.0\.0\.1, which is not allowed"),
    ):
        client.get(f"http://hooks.example:{port}/")
    assert server.hits == 0  # type: ignore[attr-defined]


def test_loopback_is_connected_to_where_the_setting_allows_it(
    server: ThreadingHTTPServer,
) -> None:
    port = server.server_address[1]
    resolve = _rebinding(["127.0.0.1"])
    with _client(allow_address=PrivateUrls.LOOPBACK.allows, resolve=resolve) as client:
        answer = client.get(f"http://hooks.example:{port}/")
    assert (answer.status_code, answer.text) == (200, "ok")
    assert server.hits == 1  # type: ignore[attr-defined]


def test_one_refused_address_among_several_refuses_the_host(server: ThreadingHTTPServer) -> None:
    port = server.server_address[1]

    def resolve(host: str, port: int) -> list[tuple[Any, ...]]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port)),
        ]

    with (
        _client(allow_address=PrivateUrls.LOOPBACK.allows, resolve=resolve) as client,
        pytest.raises(httpx.ConnectError, match=r"10\.0\.0\.7, which is not allowed"),
    ):
        client.get(f"http://hooks.example:{port}/")
    assert server.hits == 0  # type: ignore[attr-defined]


def test_an_address_lookup_that_never_answers_ends_at_the_tries_deadline() -> None:
    never = threading.Event()

    def hanging(host: str, port: int) -> list[tuple[Any, ...]]:
        never.wait()  # a resolver stuck on an unanswering DNS server
        return []

    outcome: list[BaseException | None] = []

    def try_once() -> None:
        with _client(resolve=hanging) as client, deadline(time.monotonic() + 0.5):
            try:
                client.get("http://hooks.example/")
            except BaseException as exc:  # recorded for the assertion
                outcome.append(exc)
            else:
                outcome.append(None)

    sender = threading.Thread(target=try_once, daemon=True)
    sender.start()
    sender.join(30)  # without the bound the lookup would hold the try for good
    never.set()
    assert not sender.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], httpx.ConnectTimeout)


def test_a_host_that_does_not_resolve_is_a_connect_error() -> None:
    def unknown(host: str, port: int) -> list[tuple[Any, ...]]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with (
        _client(resolve=unknown) as client,
        pytest.raises(httpx.ConnectError, match="does not resolve"),
    ):
        client.get("http://nowhere.invalid/")
