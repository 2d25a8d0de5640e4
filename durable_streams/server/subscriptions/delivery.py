"""Outbound webhook requests: aiohttp's client with timeouts, a bound on deliveries in
flight, no redirects, no proxies from the environment, and an address check on every
connection (targets.py): the resolver refuses a name that resolves to an internal
address, so a DNS answer that changed since the subscription was made cannot reach one."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from .targets import RejectedTarget, check_address, check_url

CONNECT_TIMEOUT = 5.0
TOTAL_TIMEOUT = 15.0
MAX_REPLY_BYTES = 64 << 10  # of a receiver's reply: only `{"done": true}` matters
USER_AGENT = "durable-streams-server webhook"


class _CheckedResolver(AbstractResolver):
    """Resolves as the system does, then checks every answer: one internal address among
    them refuses the delivery (filtering it out would leave an attacker's DNS a second try)."""

    def __init__(self) -> None:
        self._system = ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        answers = await self._system.resolve(host, port, family)
        development = host == "localhost"
        for answer in answers:
            check_address(ipaddress.ip_address(answer["host"]), development=development)
        return answers

    async def close(self) -> None:
        await self._system.close()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a delivery attempt came to."""

    ok: bool  # the receiver answered 2xx
    done: bool = False  # ... with {"done": true}
    reason: str = ""  # why not, for the log and the metrics' outcome label
    label: str = "delivered"


class WebhookSender:
    def __init__(self, max_in_flight: int = 64) -> None:
        self._limit = asyncio.Semaphore(max_in_flight)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(resolver=_CheckedResolver(), use_dns_cache=False, limit=0)
            timeout = aiohttp.ClientTimeout(total=TOTAL_TIMEOUT, sock_connect=CONNECT_TIMEOUT)
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False,
                                                  headers={"User-Agent": USER_AGENT})
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, url: str, body: bytes, signature: str) -> Outcome:
        try:
            check_url(url)  # again: IP literals never reach the resolver
        except RejectedTarget as exc:
            return Outcome(False, reason=str(exc), label="refused")
        headers = {"Content-Type": "application/json", "Webhook-Signature": signature}
        async with self._limit:
            try:
                async with self._client().post(url, data=body, headers=headers, allow_redirects=False) as reply:
                    if not 200 <= reply.status < 300:
                        return Outcome(False, reason=f"receiver answered {reply.status}", label="rejected")
                    raw = await reply.content.read(MAX_REPLY_BYTES)
            except RejectedTarget as exc:
                return Outcome(False, reason=str(exc), label="refused")
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc.__cause__, RejectedTarget) or isinstance(getattr(exc, "os_error", None), RejectedTarget):
                    return Outcome(False, reason=str(exc.os_error), label="refused")
                return Outcome(False, reason=f"cannot connect: {exc.os_error or exc}", label="unreachable")
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                return Outcome(False, reason=f"{type(exc).__name__}: {exc}", label="failed")
        try:
            reply_body = json.loads(raw) if raw else None
        except (ValueError, UnicodeDecodeError):
            reply_body = None
        done = isinstance(reply_body, dict) and reply_body.get("done") is True
        return Outcome(True, done=done)
