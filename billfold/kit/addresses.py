"""Which network addresses an outbound request may reach: the one rule behind the endpoint URL
check and the connection-time check (SSRF)."""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_address(text: str) -> IPAddress:
    """An address as getaddrinfo gives it (an IPv6 zone dropped, IPv4-mapped IPv6 unwrapped)."""
    address = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def address_allowed(address: IPAddress, *, loopback: bool, private: bool) -> bool:
    """Public addresses always; loopback when `loopback`; every unicast one when `private`."""
    if private:
        return not (address.is_multicast or address.is_unspecified)
    if address.is_loopback:
        return loopback
    return address.is_global
