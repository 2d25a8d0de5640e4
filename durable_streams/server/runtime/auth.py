"""`basic_auth` at request time: Caddy's `authentication` handler with `http_basic`.

A request without valid credentials gets 401 and `WWW-Authenticate: Basic realm="..."`
(every method, OPTIONS included, as in Caddy). bcrypt costs 50-250 ms of CPU, so:
- checkpw runs in a worker thread, never on the event loop;
- an unknown user is checked against a fake hash of the same cost, so response time does
  not tell which user names exist;
- a successful (user, password) pair is remembered for a short time, keyed by an HMAC
  under a per-process random key (no plaintext kept), so a streaming client's many
  requests cost one bcrypt; concurrent checks of the same pair share one computation.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import os
import time
from collections import OrderedDict

import bcrypt

from ..config.model import BasicAuth
from ..http import Request, Response
from .context import context_of

DEFAULT_REALM = "restricted"  # Caddy's
CACHE_SECONDS = 60.0
CACHE_ENTRIES = 1024

_PROCESS_KEY = os.urandom(32)


def parse_basic_credentials(header: str | None) -> tuple[bytes, bytes] | None:
    """Go's Request.BasicAuth: `Basic <base64(user:password)>`, scheme case-insensitive."""
    if not header or len(header) < 6 or header[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None
    user, sep, password = decoded.partition(b":")
    return (user, password) if sep else None


def _fake_hash(cost: int) -> bytes:
    # a well-formed hash nobody's password matches; checking against it costs a real check
    return bcrypt.gensalt(rounds=cost) + b"A" * 31


def _cost(hashed: bytes) -> int:
    return int(hashed[4:6])


class VerifiedCredentials:
    """Recently verified credential pairs (HMAC keys only), with expiry and a size bound."""

    def __init__(self, ttl: float = CACHE_SECONDS, size: int = CACHE_ENTRIES) -> None:
        self.ttl, self.size = ttl, size
        self._expiry: OrderedDict[bytes, float] = OrderedDict()

    @staticmethod
    def key(user: bytes, password: bytes) -> bytes:
        # the length prefix keeps ("ab", "c") and ("a", "bc") apart
        return hmac.new(_PROCESS_KEY, len(user).to_bytes(4, "big") + user + password, "sha256").digest()

    def __contains__(self, key: bytes) -> bool:
        expiry = self._expiry.get(key)
        if expiry is None:
            return False
        if expiry < time.monotonic():
            del self._expiry[key]
            return False
        return True

    def add(self, key: bytes) -> None:
        self._expiry[key] = time.monotonic() + self.ttl
        self._expiry.move_to_end(key)
        while len(self._expiry) > self.size:
            self._expiry.popitem(last=False)


class BasicAuthHandler:
    def __init__(self, config: BasicAuth) -> None:
        self.challenge = f'Basic realm="{config.realm or DEFAULT_REALM}"'
        self.accounts = {a.username.encode(): a.password_hash for a in config.accounts}
        costs = [_cost(h) for h in self.accounts.values()]
        self.fake_hash = _fake_hash(max(costs) if costs else 10)
        self.verified = VerifiedCredentials()
        self._pending: dict[bytes, asyncio.Future[bool]] = {}

    async def __call__(self, request: Request, next) -> Response:
        credentials = parse_basic_credentials(request.headers.get("Authorization"))
        if credentials is not None and await self.check(*credentials):
            context_of(request).user_id = credentials[0].decode("utf-8", "replace")
            return await next(request)
        return Response(status=401, headers={"WWW-Authenticate": self.challenge})

    async def check(self, user: bytes, password: bytes) -> bool:
        key = VerifiedCredentials.key(user, password)
        if key in self.verified:
            return True
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._compare(user, password))
            self._pending[key] = pending
            pending.add_done_callback(lambda _f: self._pending.pop(key, None))
        ok = await asyncio.shield(pending)  # one client leaving must not cancel the others' check
        if ok:
            self.verified.add(key)
        return ok

    async def _compare(self, user: bytes, password: bytes) -> bool:
        stored = self.accounts.get(user)
        hashed = stored if stored is not None else self.fake_hash
        loop = asyncio.get_running_loop()
        same = await loop.run_in_executor(None, _checkpw, password, hashed)
        return same and stored is not None


def _checkpw(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # e.g. longer than bcrypt's 72 bytes: Go's bcrypt refuses it too
        return False
