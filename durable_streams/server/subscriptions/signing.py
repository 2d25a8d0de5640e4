"""Webhook signatures (Ed25519, published as a JWK Set) and callback tokens (HMAC).

Keys are documents of the store (kind `signing`), so they live as long as the data:
in `data_dir` for the file store, in the database for PostgreSQL (every node signs with
the same key and publishes the same set), in memory for the memory store. A key's `kid`
is `ds_` and its RFC 7638 thumbprint, so it follows from the key material.

Rotation keeps the old public key published for REPLAY_WINDOW after the new one takes
over: a receiver verifying a delivery signed just before the switch still finds it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..engine.streams import StaleDocument, StreamEngine

KIND = "signing"
TOKEN_KEY_NAME = "callback-token-key"
CURRENT_KEY_NAME = "signing-key"
RETIRED_PREFIX = "retired-"
REPLAY_WINDOW = 300.0  # seconds: receivers reject older signatures (PROTOCOL §7.1)


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class SigningKey:
    private: Ed25519PrivateKey
    kid: str
    x: str  # the public key, base64url
    created_at: float
    retired_at: float | None = None

    @classmethod
    def generate(cls, now: float) -> "SigningKey":
        return cls.from_raw(Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()), now)

    @classmethod
    def from_raw(cls, raw: bytes, created_at: float, retired_at: float | None = None) -> "SigningKey":
        private = Ed25519PrivateKey.from_private_bytes(raw)
        public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        x = b64url(public)
        # RFC 7638: the required members in lexicographic order, no spaces
        thumbprint = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"), sort_keys=True)
        kid = "ds_" + b64url(hashlib.sha256(thumbprint.encode()).digest())
        return cls(private, kid, x, created_at, retired_at)

    def raw(self) -> bytes:
        return self.private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                          serialization.NoEncryption())

    def document(self) -> bytes:
        return json.dumps({"kind": "ed25519", "private": b64url(self.raw()), "created_at": self.created_at,
                           "retired_at": self.retired_at}).encode()

    def jwk(self) -> dict:
        return {"kty": "OKP", "crv": "Ed25519", "kid": self.kid, "use": "sig", "alg": "EdDSA", "x": self.x}


class Keyring:
    """The signing keys and the token key, loaded from the store at start. The key in use
    is one document (`signing-key`), so nodes that start together on one database agree
    on it: the first write wins and the others load it."""

    def __init__(self, engine: StreamEngine) -> None:
        self.engine = engine
        self._current: tuple[SigningKey, int] | None = None  # (key, its document's version)
        self._retired: dict[str, SigningKey] = {}
        self._token_key = b""

    async def open(self) -> None:
        await self._load()
        if not self._token_key:
            key = b64url(secrets.token_bytes(32))
            await self._create(TOKEN_KEY_NAME, json.dumps({"kind": "hmac-sha256", "key": key}).encode())
        if self._current is None:
            await self._create(CURRENT_KEY_NAME, SigningKey.generate(self.engine.clock()).document())

    async def _create(self, name: str, body: bytes) -> None:
        try:
            await self.engine.put_document(KIND, name, body, replaces=0)
        except StaleDocument:
            pass  # another node made it first: take theirs
        await self._load()

    async def _load(self) -> None:
        retired = {}
        for name, document in (await self.engine.documents(KIND)).items():
            fields = json.loads(document.body)
            if name == TOKEN_KEY_NAME:
                self._token_key = b64url_decode(fields["key"])
                continue
            key = SigningKey.from_raw(b64url_decode(fields["private"]), fields["created_at"], fields.get("retired_at"))
            if name == CURRENT_KEY_NAME:
                self._current = (key, document.version)
            else:
                retired[key.kid] = key
        self._retired = retired

    @property
    def active(self) -> SigningKey:
        assert self._current is not None, "Keyring.open() makes a key"
        return self._current[0]

    async def rotate(self) -> SigningKey:
        """Sign with a new key from now on; the old one stays published through the
        replay window (then `prune` removes it)."""
        now = self.engine.clock()
        old, version = self._current
        retired = SigningKey(old.private, old.kid, old.x, old.created_at, now)
        await self.engine.put_document(KIND, RETIRED_PREFIX + old.kid, retired.document(), replaces=0)
        key = SigningKey.generate(now)
        await self.engine.put_document(KIND, CURRENT_KEY_NAME, key.document(), replaces=version)
        await self._load()
        return key

    async def prune(self) -> None:
        """Forget keys retired longer ago than the replay window."""
        now = self.engine.clock()
        for kid, key in list(self._retired.items()):
            if now - key.retired_at > REPLAY_WINDOW:
                await self.engine.delete_document(KIND, RETIRED_PREFIX + kid)
                del self._retired[kid]

    def jwks(self) -> dict:
        now = self.engine.clock()
        keys = [self.active, *(k for k in self._retired.values() if now - k.retired_at <= REPLAY_WINDOW)]
        return {"keys": [key.jwk() for key in keys]}

    def sign(self, body: bytes, now: float | None = None) -> str:
        """The Webhook-Signature header: Ed25519 over `<t>.<raw body>`."""
        key = self.active
        t = int(time.time() if now is None else now)
        signature = key.private.sign(str(t).encode() + b"." + body)
        return f"t={t},kid={key.kid},ed25519={b64url(signature)}"

    # ---------------------------------------------------------------- callback tokens

    def token(self, claims: dict) -> str:
        payload = b64url(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
        mac = hmac.new(self._token_key, payload.encode(), hashlib.sha256).digest()
        return f"{payload}.{b64url(mac)}"

    def read_token(self, token: str) -> dict | None:
        """The claims of a token this server issued, or None (forged, mangled)."""
        payload, dot, mac = token.partition(".")
        if not dot or not payload.isascii() or not mac.isascii():
            return None
        expected = hmac.new(self._token_key, payload.encode(), hashlib.sha256).digest()
        try:
            if not hmac.compare_digest(expected, b64url_decode(mac)):
                return None
            claims = json.loads(b64url_decode(payload))
        except (ValueError, UnicodeDecodeError):
            return None
        return claims if isinstance(claims, dict) else None
