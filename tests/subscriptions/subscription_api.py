"""What the subscription tests share: the option that turns subscriptions on, names of
headers and bodies, unique ids, and the few requests every test file makes."""

from __future__ import annotations

import itertools
import time
from urllib.parse import quote

import httpx

from durable_streams.server.engine.offsets import parse_position
from retention_servers import Server

SUBSCRIPTIONS = ["\t\t\tsubscriptions"]  # the durable_streams option that turns them on
NEXT = "Stream-Next-Offset"
BINARY = {"Content-Type": "application/octet-stream"}
JSON = {"Content-Type": "application/json"}

_ids = itertools.count()


def uniq(prefix: str) -> str:
    return f"{prefix}{next(_ids)}x{time.monotonic_ns() % 10**6}"


def position(offset: str) -> int:
    """A minted offset (or -1, before the first byte) as a byte position."""
    return -1 if offset == "-1" else parse_position(offset)


def sub_url(server: Server, sub_id: str, *rest: str) -> str:
    return server.url("__ds/subscriptions/" + "/".join([quote(sub_id, safe=""), *rest]))


def append(c: httpx.Client, url: str, body: bytes) -> str:
    """POST bytes to a stream; its new tail."""
    r = c.post(url, content=body, headers=BINARY)
    assert r.status_code == 204, (r.status_code, r.text)
    return r.headers[NEXT]


def pull_wake_subscription(c: httpx.Client, server: Server) -> tuple[str, str, str]:
    """A fresh pull-wake subscription on `<prefix>/*` with its wake stream (30 s leases);
    (prefix, wake stream, subscription id)."""
    prefix, wake_stream, sub_id = uniq("jobs"), uniq("wake"), uniq("pull")
    assert c.put(server.url(wake_stream), content=b"[]", headers=JSON).status_code == 201
    r = c.put(sub_url(server, sub_id), json={"type": "pull-wake", "pattern": f"{prefix}/*",
                                             "wake_stream": wake_stream, "lease_ttl_ms": 30_000})
    assert r.status_code == 201, r.text
    return prefix, wake_stream, sub_id
