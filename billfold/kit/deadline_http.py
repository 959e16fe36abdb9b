"""An HTTP transport whose requests end by a deadline, whatever the receiver does.

httpx's timeouts bound each socket operation, not the request: a receiver that accepts slowly,
then answers a byte at a time just inside the read timeout, could hold one try for minutes.
A batch leases its deliveries, and a try still running when the lease ends could overlap
the next batch's try of the same delivery (a duplicate, and that customer's order broken).
So each try sets a deadline for its thread (`deadline(...)`), and every connect, TLS
handshake, read and write on its connection waits at most until then: past it the try fails
as a timeout and the connection is closed. The host's address lookup is bounded too (the
resolver has no timeout of its own, so it runs on a thread the try stops waiting for).

The backend also checks every address it is about to connect to (`allow_address`), so a host
whose DNS answer changed after the endpoint URL was checked (DNS rebinding) still cannot reach
a private address: the check is on the address connected to, not on an earlier lookup.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpcore
import httpx

from billfold.kit.addresses import IPAddress, parse_address

Resolve = Callable[[str, int], list[tuple[typing.Any, ...]]]

_local = threading.local()


@contextmanager
def deadline(at: float) -> Iterator[None]:
    """Socket operations in this thread end by `at` (time.monotonic()) while inside."""
    _local.at = at
    try:
        yield
    finally:
        _local.at = None


def _clamp(timeout: float | None, error: type[Exception]) -> float | None:
    at: float | None = getattr(_local, "at", None)
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise error("the try's deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: typing.Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return _DeadlineStream(
            self._stream.start_tls(
                ssl_context, server_hostname, _clamp(timeout, httpcore.ConnectTimeout)
            )
        )

    def get_extra_info(self, info: str) -> typing.Any:
        return self._stream.get_extra_info(info)


class RefusedAddress(httpcore.ConnectError):
    """The host resolves to an address the transport may not connect to."""


def _getaddrinfo(host: str, port: int) -> list[tuple[typing.Any, ...]]:
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


def _lookup(resolve: Resolve, host: str, port: int, timeout: float | None) -> list[IPAddress]:
    """The host's addresses, or ConnectTimeout once `timeout` passes (the lookup thread is left
    to finish on its own: getaddrinfo cannot be interrupted)."""
    answer: list[list[tuple[typing.Any, ...]] | BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            answer.append(resolve(host, port))
        except BaseException as exc:  # handed to the waiting thread
            answer.append(exc)
        done.set()

    threading.Thread(target=run, name="dns-lookup", daemon=True).start()
    if not done.wait(timeout):
        raise httpcore.ConnectTimeout(f"looking up {host} passed the try's deadline")
    found = answer[0]
    if isinstance(found, OSError | UnicodeError):
        raise httpcore.ConnectError(f"{host} does not resolve: {found}") from found
    if isinstance(found, BaseException):
        raise found
    addresses: list[IPAddress] = []
    for *_, sockaddr in found:
        address = parse_address(str(sockaddr[0]))
        if address not in addresses:
            addresses.append(address)
    return addresses


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(
        self,
        allow_address: Callable[[IPAddress], bool] | None = None,
        resolve: Resolve = _getaddrinfo,
    ) -> None:
        self._backend = httpcore.SyncBackend()
        self._allow = allow_address
        self._resolve = resolve

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = _lookup(self._resolve, host, port, _clamp(timeout, httpcore.ConnectTimeout))
        if self._allow is not None:
            refused = [a for a in addresses if not self._allow(a)]
            if refused:
                raise RefusedAddress(f"{host} resolves to {refused[0]}, which is not allowed")
        error: Exception = httpcore.ConnectError(f"{host} has no address")
        for address in addresses:  # as socket.create_connection does, each in turn
            try:
                stream = self._backend.connect_tcp(
                    str(address),
                    port,
                    _clamp(timeout, httpcore.ConnectTimeout),
                    local_address,
                    socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
                continue
            return _DeadlineStream(stream)
        raise error

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        return _DeadlineStream(
            self._backend.connect_unix_socket(
                path, _clamp(timeout, httpcore.ConnectTimeout), socket_options
            )
        )

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def deadline_transport(
    limits: httpx.Limits,
    ssl_context: ssl.SSLContext | None = None,
    *,
    allow_address: Callable[[IPAddress], bool] | None = None,
    resolve: Resolve = _getaddrinfo,
) -> httpx.HTTPTransport:
    """httpx's transport, its connections made through the deadline-keeping backend
    (`ssl_context`: one shared by several transports, else a new default one). With
    `allow_address`, a host any of whose addresses it refuses is not connected to."""
    transport = httpx.HTTPTransport(limits=limits, verify=ssl_context or True)
    # httpx takes no network backend; its pool is rebuilt with one (same limits, TLS context).
    old = transport._pool
    transport._pool = httpcore.ConnectionPool(
        ssl_context=old._ssl_context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        http1=True,
        http2=False,
        network_backend=_DeadlineBackend(allow_address, resolve),
    )
    return transport


class ThreadClients:
    """One httpx client per thread, each with its own kept-alive connections: threads sending
    side by side never wait on one shared pool's lock (with 16 senders, that lock and the
    thread switches it caused cost each delivery over a millisecond of CPU)."""

    def __init__(self, make: Callable[[], httpx.Client]) -> None:
        self._make = make
        self._local = threading.local()

    def get(self) -> httpx.Client:
        """This thread's client (made on first use)."""
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._make()
        return client
