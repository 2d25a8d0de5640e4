"""The ACME challenges being answered right now, shared between the order (a worker thread
running `acme_issuer`) and the listeners (the event loop):

- HTTP-01 (RFC 8555 §8.3): `/.well-known/acme-challenge/<token>` answers the key
  authorization as text;
- TLS-ALPN-01 (RFC 8737): a handshake offering ALPN `acme-tls/1` for the name gets a
  self-signed certificate for it whose critical id-pe-acmeIdentifier extension holds
  SHA-256(key authorization).

A challenge stays on the board until its order is finished (the CA may validate several
times, from several vantage points), then the issuer removes it.

acme 5.x no longer ships a TLS-ALPN-01 challenge class; `TLSALPN01` below registers one so
the library parses authorizations that offer it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import ssl
import tempfile
import threading
from dataclasses import dataclass
from typing import Any

import josepy as jose
from acme import challenges
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ObjectIdentifier

HTTP01 = "http-01"
TLS_ALPN01 = "tls-alpn-01"
ACME_TLS_ALPN = "acme-tls/1"
HTTP01_PATH_PREFIX = "/.well-known/acme-challenge/"
ID_PE_ACME_IDENTIFIER = ObjectIdentifier("1.3.6.1.5.5.7.1.31")  # RFC 8737 §6.1


# --------------------------------------------------------------------------- acme library

if TLS_ALPN01 in challenges.Challenge.TYPES:  # a newer acme may ship its own again
    TLSALPN01 = challenges.Challenge.TYPES[TLS_ALPN01]
    TLSALPN01Response = challenges.ChallengeResponse.TYPES[TLS_ALPN01]
else:
    @challenges.ChallengeResponse.register
    class TLSALPN01Response(challenges.KeyAuthorizationChallengeResponse):
        """The (empty) response POSTed to a tls-alpn-01 challenge."""

        typ = TLS_ALPN01

    @challenges.Challenge.register
    class TLSALPN01(challenges.KeyAuthorizationChallenge):
        """ACME tls-alpn-01 (RFC 8737); the validation is the key authorization, which the
        board turns into the challenge certificate."""

        response_cls = TLSALPN01Response
        typ = TLS_ALPN01

        def validation(self, account_key: jose.JWK, **unused_kwargs: Any) -> str:
            return self.key_authorization(account_key)


# --------------------------------------------------------------------------- TLS-ALPN-01

def tls_alpn01_certificate(domain: str, key_authorization: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """RFC 8737 §3: self-signed, the domain as its only SAN, and the critical acmeIdentifier
    extension holding the DER OCTET STRING of SHA-256(key authorization)."""
    key = ec.generate_private_key(ec.SECP256R1())
    digest = hashlib.sha256(key_authorization.encode("ascii")).digest()
    acme_identifier = b"\x04\x20" + digest  # OCTET STRING, 32 bytes
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=True)
        .add_extension(x509.UnrecognizedExtension(ID_PE_ACME_IDENTIFIER, acme_identifier), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _challenge_context(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols([ACME_TLS_ALPN])
    # load_cert_chain takes paths only: a private directory (mkdtemp makes it 0700), gone at once
    directory = tempfile.mkdtemp(prefix="acme-tls-alpn-")
    try:
        cert_path = os.path.join(directory, "cert.pem")
        key_path = os.path.join(directory, "key.pem")
        with open(cert_path, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        context.load_cert_chain(cert_path, key_path)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return context


def _name_key(name: str) -> str:
    return name.strip().rstrip(".").lower()


@dataclass(frozen=True)
class TLSALPNChallenge:
    domain: str
    key_authorization: str
    certificate: x509.Certificate
    context: ssl.SSLContext


# --------------------------------------------------------------------------- the board

class ChallengeBoard:
    """Challenges in flight. Writers are order threads, readers the event loop: every access
    takes a lock (held for dictionary operations only; certificates are made outside it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._http01: dict[str, str] = {}
        self._tls_alpn01: dict[str, TLSALPNChallenge] = {}

    # HTTP-01 ---------------------------------------------------------------

    def put_http01(self, token: str, key_authorization: str) -> None:
        with self._lock:
            self._http01[token] = key_authorization

    def http01(self, token: str) -> str | None:
        """The key authorization to answer for `token`, or None (then answer 404)."""
        with self._lock:
            return self._http01.get(token)

    def http01_for_path(self, path: str) -> str | None:
        """The answer for a request path `/.well-known/acme-challenge/<token>`, or None
        when the path is not a challenge path or its token is unknown."""
        if not path.startswith(HTTP01_PATH_PREFIX):
            return None
        return self.http01(path[len(HTTP01_PATH_PREFIX):])

    def remove_http01(self, token: str) -> None:
        with self._lock:
            self._http01.pop(token, None)

    # TLS-ALPN-01 -----------------------------------------------------------

    def put_tls_alpn01(self, domain: str, key_authorization: str) -> TLSALPNChallenge:
        cert, key = tls_alpn01_certificate(_name_key(domain), key_authorization)
        challenge = TLSALPNChallenge(_name_key(domain), key_authorization, cert, _challenge_context(cert, key))
        with self._lock:
            self._tls_alpn01[challenge.domain] = challenge
        return challenge

    def has_tls_alpn01(self) -> bool:
        """Whether any TLS-ALPN-01 challenge is up (cheap: listeners only peek at
        ClientHellos while it is true)."""
        return bool(self._tls_alpn01)  # a single read of a dict's size: atomic under the GIL

    def tls_alpn01_context(self, server_name: str | None) -> ssl.SSLContext | None:
        """The SSL context to hand a handshake that offers ALPN `acme-tls/1` for
        `server_name` (its SNI), or None when no challenge is up for that name."""
        if not server_name:
            return None
        with self._lock:
            challenge = self._tls_alpn01.get(_name_key(server_name))
        return challenge.context if challenge else None

    def remove_tls_alpn01(self, domain: str) -> None:
        with self._lock:
            self._tls_alpn01.pop(_name_key(domain), None)

    # ----------------------------------------------------------------------

    def is_empty(self) -> bool:
        with self._lock:
            return not self._http01 and not self._tls_alpn01
