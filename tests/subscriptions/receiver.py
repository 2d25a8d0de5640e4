"""A real webhook receiver on loopback for the subscription tests: an aiohttp server on
its own thread that records every delivery and verifies its Ed25519 signature against
the JWK Set the server publishes (fetched over HTTP, as a receiver would)."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from dataclasses import dataclass, field

import httpx
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

REPLAY_WINDOW = 300


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify(raw_body: bytes, header: str | None, jwks: dict) -> bool:
    """The receiver's check (PROTOCOL §7.1): `t=<unix>,kid=<kid>,ed25519=<b64url>` over
    `<t>.<raw body>`, with the key named by kid, within the replay window."""
    if not header:
        return False
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    if set(fields) != {"t", "kid", "ed25519"} or not fields["t"].isdigit():
        return False
    if abs(time.time() - int(fields["t"])) > REPLAY_WINDOW:
        return False
    key = next((k for k in jwks.get("keys", []) if k.get("kid") == fields["kid"]), None)
    if key is None or key.get("kty") != "OKP" or key.get("crv") != "Ed25519":
        return False
    public = Ed25519PublicKey.from_public_bytes(_b64url(key["x"]))
    try:
        public.verify(_b64url(fields["ed25519"]), fields["t"].encode() + b"." + raw_body)
    except InvalidSignature:
        return False
    return True


@dataclass
class Delivery:
    at: float  # time.monotonic() when it arrived
    raw: bytes
    body: dict
    signature: str | None
    verified: bool
    answered: int  # the status this receiver answered with


@dataclass
class Receiver:
    """`fail_first`: answer the first N deliveries with 503. `reply`: the JSON body of a
    2xx answer (e.g. {"done": True}). `jwks_url`: where to fetch the keys from."""

    jwks_url: str | None = None
    fail_first: int = 0
    reply: dict = field(default_factory=dict)
    deliveries: list[Delivery] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._jwks: dict = {"keys": []}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> "Receiver":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _keys(self, kid: str | None) -> dict:
        """The server's JWK Set, fetched again when a signature names an unknown kid."""
        if self.jwks_url and not any(k.get("kid") == kid for k in self._jwks["keys"]):
            self._jwks = httpx.get(self.jwks_url, timeout=10).json()
        return self._jwks

    async def _hook(self, request: web.Request) -> web.Response:
        raw = await request.read()
        signature = request.headers.get("Webhook-Signature")
        kid = None
        if signature:
            kid = dict(p.split("=", 1) for p in signature.split(",") if "=" in p).get("kid")
        jwks = await asyncio.to_thread(self._keys, kid)
        with self._cond:
            failing = len(self.deliveries) < self.fail_first
            status = 503 if failing else 200
            self.deliveries.append(Delivery(time.monotonic(), raw, json.loads(raw), signature,
                                            verify(raw, signature, jwks), status))
            self._cond.notify_all()
        if failing:
            return web.Response(status=503, text="not now")
        return web.json_response(self.reply)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Delivery]:
        """The first `count` deliveries, waiting up to `timeout` seconds for them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.deliveries) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.deliveries)} deliveries arrived, expected {count}")
                self._cond.wait(left)
            return list(self.deliveries[:count])
