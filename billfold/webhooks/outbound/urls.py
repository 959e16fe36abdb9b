"""Endpoint URLs we may call: no private, loopback or link-local address (SSRF), unless the
`WEBHOOK_ALLOW_PRIVATE_URLS` setting allows it."""

from __future__ import annotations

import socket
from typing import NewType
from urllib.parse import urlsplit

from billfold.config import PrivateUrls
from billfold.kit.addresses import IPAddress, parse_address
from billfold.kit.errors import InvalidInput


class UnsafeUrl(InvalidInput):
    code = "unsafe_url"


# A URL `check_url` passed. Checking looks the host up (DNS, no timeout of its own), so it is
# done before a transaction opens: on SQLite an open transaction holds the one write lock.
CheckedUrl = NewType("CheckedUrl", str)


def check_url(url: str, allow: PrivateUrls) -> CheckedUrl:
    """The URL if it is http(s) and every address its host resolves to is allowed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("The URL must be http:// or https:// with a host", code="invalid_url")
    if parts.username or parts.password:
        raise InvalidInput("The URL may not carry credentials", code="invalid_url")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise InvalidInput("The URL's port is not valid", code="invalid_url") from exc
    for address in _addresses(parts.hostname, port):
        if not allow.allows(address):
            raise UnsafeUrl(
                "The URL resolves to a private, loopback or link-local address",
                host=parts.hostname,
            )
    return CheckedUrl(url)


def _addresses(host: str, port: int) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidInput("The URL's host does not resolve", code="invalid_url") from exc
    return [parse_address(str(sockaddr[0])) for *_, sockaddr in infos]
