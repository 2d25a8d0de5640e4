"""Which webhook URLs a server may call (PROTOCOL.md §6.2 and §12.8: SSRF prevention).

Two checks. When a subscription is created, its URL: `https://` to a host that is not an
internal address, or the development exception `http://localhost` / `http://127.0.0.x`.
And on every delivery, the addresses the host resolves to *then*: a name may resolve to
a public address when the subscription is made and to an internal one later (DNS
rebinding). The delivery connects only to addresses that passed (delivery.py)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048


class RejectedTarget(ValueError):
    """The URL, or an address its host resolves to, may not receive webhooks."""


@dataclass(frozen=True, slots=True)
class Target:
    url: str
    host: str  # lower-case, brackets removed from IPv6 literals
    development: bool  # the http://localhost exception: only loopback addresses are allowed


def _is_dev_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return address in ipaddress.IPv4Network("127.0.0.0/24")


def check_url(url: str) -> Target:
    """The URL as a Target, or RejectedTarget saying why it may not be used."""
    if not isinstance(url, str) or not url:
        raise RejectedTarget("webhook.url must be a non-empty string")
    if len(url) > MAX_URL_LENGTH:
        raise RejectedTarget(f"webhook.url is longer than {MAX_URL_LENGTH} characters")
    if not url.isascii() or any(c <= " " or c == "\x7f" for c in url):
        raise RejectedTarget("webhook.url must be ASCII without spaces or control characters")
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower().rstrip(".")  # "localhost." is localhost
        parts.port  # raises on a bad port
    except ValueError:
        raise RejectedTarget("webhook.url is not a valid URL") from None
    if parts.username is not None or parts.password is not None:
        raise RejectedTarget("webhook.url must not carry credentials")
    if not host:
        raise RejectedTarget("webhook.url has no host")
    if parts.scheme == "http":
        if _is_dev_host(host):
            return Target(url, host, development=True)
        raise RejectedTarget("http webhook URLs are allowed only for localhost or 127.0.0.x (development)")
    if parts.scheme != "https":
        raise RejectedTarget("webhook.url must use https")
    if host == "localhost" or host.endswith(".localhost"):
        raise RejectedTarget("webhook.url must not target localhost over https (use http://localhost in development)")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return Target(url, host, development=False)  # a name: its addresses are checked at delivery
    check_address(address, development=False)
    return Target(url, host, development=False)


def check_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address, *, development: bool) -> None:
    """Refuse an address a webhook may not reach: anything but a global unicast address
    (RFC 1918, loopback, link-local, CGNAT, unique-local, multicast, reserved...), except
    loopback for the development exception, which allows nothing else."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if development:
        if not address.is_loopback:
            raise RejectedTarget(f"localhost webhook resolved to {address}, which is not a loopback address")
        return
    if not address.is_global or address.is_multicast:
        raise RejectedTarget(f"webhook host resolves to {address}, an internal or non-unicast address")
