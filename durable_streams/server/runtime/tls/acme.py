"""Certificates from an ACME CA (RFC 8555), with certbot's `acme` library, stored as Caddy
(certmagic) stores them so either can reuse the other's certificates and accounts.

`AcmeIssuer.obtain(names)` is blocking (acme is synchronous): run it in a worker thread.
It takes certmagic's `issue_cert_<name>` storage lock, returns the stored certificate when
another process renewed it meanwhile, else orders a new one:

- the account: `<storage>/acme/<issuer key>/users/<email or "default">/<user>.json|.key`,
  registered once (under the `register_acme_account[_<email>]` lock), terms agreed, with
  External Account Binding when configured; re-registered if the CA forgot it;
- an ECDSA P-256 key and CSR; per authorization the first of `settings.challenges` the CA
  offers, put on the `ChallengeBoard` (which the listeners serve) until the order ends;
- polling from 50 ms growing 1.5x to 2 s (the library sleeps a fixed second): a CA validates
  in milliseconds (Pebble) to seconds (Let's Encrypt), about ten polls in the first 6 s;
  all within one overall deadline;
- `badNonce` answers retried up to `bad_nonce_retries` times per request (the library
  retries once: at a 30 % rejection rate most orders would fail);
- the result in `<storage>/certificates/<issuer key>/<name>/<name>.crt|.key|.json`: the
  full chain as the CA sent it, the key 0600, the metadata
  `{"sans": [...], "issuer_data": {"url", "ca", "account"}}` (acmez's Certificate JSON).

Every failure is an `AcmeError` whose message names the name, the challenge and the CA's
problem document.

ACME Renewal Info (RFC 9773): `renewal_window(chain_pem)` asks the CA's `renewalInfo`
endpoint for its suggested window; None when the CA has none (Pebble 2.4 has none).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import josepy as jose
import requests
from acme import client as acme_client
from acme import crypto_util
from acme import errors as acme_errors
from acme import messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ...config.certnames import is_ip, leaf_paths, qualifies_for_cert, safe_key
from .storage import StorageLock, StorageLockTimeout, issue_lock_name, mkdirs, write_atomic
from .challenges import HTTP01, TLS_ALPN01, ChallengeBoard

log = logging.getLogger("durable_streams.server.acme")

LETS_ENCRYPT_PRODUCTION = "https://acme-v02.api.letsencrypt.org/directory"
LETS_ENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"
SUPPORTED_CHALLENGES = (HTTP01, TLS_ALPN01)
RENEWAL_WINDOW_RATIO = 1 / 3  # certmagic's default: renew in the last third of the lifetime
_POLL_FIRST, _POLL_GROWTH, _POLL_MAX = 0.05, 1.5, 2.0
_EMPTY_EMAIL = "default"  # certmagic's emptyEmail
_PROBLEM_ACCOUNT_DOES_NOT_EXIST = "urn:ietf:params:acme:error:accountDoesNotExist"


@dataclass(frozen=True)
class AcmeSettings:
    """What Caddy's global options and `tls` directive say about the ACME issuer."""

    directory: str = LETS_ENCRYPT_PRODUCTION  # acme_ca
    email: str | None = None  # email
    ca_root: str | None = None  # acme_ca_root: PEM file trusted for the CA's HTTPS (else the system store)
    eab: tuple[str, str] | None = None  # acme_eab: (key_id, mac_key as base64url)
    challenges: tuple[str, ...] = SUPPORTED_CHALLENGES  # in order of preference
    order_timeout: float = 90.0  # seconds, whole order from new-order to certificate
    network_timeout: float = 30.0  # seconds, per HTTP request to the CA
    bad_nonce_retries: int = 10
    lock_timeout: float | None = None  # waiting for another process's issue_cert lock; None: no limit
    renewal_window_ratio: float = RENEWAL_WINDOW_RATIO

    def __post_init__(self) -> None:
        if not self.challenges:
            raise ValueError("at least one ACME challenge type must be enabled")
        unknown = [c for c in self.challenges if c not in SUPPORTED_CHALLENGES]
        if unknown:
            raise ValueError(f"unsupported ACME challenge type(s) {', '.join(unknown)}: "
                             f"supported are {', '.join(SUPPORTED_CHALLENGES)}")
        if self.eab is not None and (len(self.eab) != 2 or not all(self.eab)):
            raise ValueError("acme_eab needs a key id and a MAC key")
        if urlsplit(self.directory).scheme not in ("https", "http") or not urlsplit(self.directory).netloc:
            raise ValueError(f"ACME directory {self.directory!r} is not an http(s) URL")


class AcmeError(Exception):
    """Obtaining a certificate failed; str() says for which name, at which step, and what
    the CA answered."""

    def __init__(self, message: str, *, names: Sequence[str] = (), challenge: str | None = None,
                 problem_type: str | None = None, problem_detail: str | None = None) -> None:
        super().__init__(message)
        self.names = tuple(names)
        self.challenge = challenge
        self.problem_type = problem_type
        self.problem_detail = problem_detail


@dataclass(frozen=True)
class IssuedCertificate:
    names: tuple[str, ...]
    cert_path: str  # full chain PEM
    key_path: str
    meta_path: str
    not_before: dt.datetime
    not_after: dt.datetime
    issuer_key: str  # certmagic's, e.g. acme-v02.api.letsencrypt.org-directory
    certificate_url: str = ""
    account_url: str = ""
    reused: bool = False  # True: found in storage (another process had just obtained it), no order
    chain_pem: bytes = field(default=b"", repr=False)  # what was stored at cert_path (leaf first)

    def leaf(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.chain_pem)

    def needs_renewal(self, ratio: float = RENEWAL_WINDOW_RATIO, now: dt.datetime | None = None) -> bool:
        now = now or dt.datetime.now(dt.timezone.utc)
        return now >= self.not_after - (self.not_after - self.not_before) * ratio


@dataclass(frozen=True)
class RenewalWindow:
    """ACME Renewal Info: the CA's suggested window and when to ask again."""

    start: dt.datetime
    end: dt.datetime
    retry_after: dt.datetime | None
    explanation_url: str | None = None


# --------------------------------------------------------------------------- naming

def issuer_key(directory: str) -> str:
    """certmagic's ACMEIssuer.issuerKey: the directory URL's host, plus its path with slashes
    as hyphens (`https://127.0.0.1:14000/dir` -> `127.0.0.1:14000-dir`); storage paths use
    its safe form (`127.0.0.1-14000-dir`)."""
    parts = urlsplit(directory)
    if not parts.netloc:
        return directory
    key = parts.netloc
    path = parts.path.replace("/", "-").replace("\\", "-").strip("-")
    return f"{key}-{path}" if path else key


def _email_username(email: str) -> str:
    at = email.find("@")
    if at == -1:
        return email
    if at == 0:
        return email[1:]
    return email[:at]


def account_paths(storage_root: str, directory: str, email: str | None) -> tuple[str, str]:
    """(registration JSON, private key) of the account for `email` at this CA, as certmagic
    names them (storageKeyUserReg, storageKeyUserPrivateKey)."""
    email = (email or "").strip().lower() or _EMPTY_EMAIL
    username = _email_username(email)
    users = os.path.join(storage_root, "acme", safe_key(issuer_key(directory)), "users", safe_key(email))
    return (os.path.join(users, safe_key(username or "registration") + ".json"),
            os.path.join(users, safe_key(username or "private") + ".key"))


ZEROSSL_EAB_ENDPOINT = "https://api.zerossl.com/acme/eab-credentials-email"


def needs_zerossl_eab(settings: AcmeSettings, storage_root: str) -> bool:
    """ZeroSSL's ACME CA takes only accounts bound to one of its accounts (EAB); Caddy makes
    the binding from the email by itself, when it has no stored account to reuse."""
    if settings.eab is not None or not settings.directory.startswith("https://acme.zerossl.com/"):
        return False
    return not os.path.exists(account_paths(storage_root, settings.directory, settings.email)[1])


def zerossl_eab_credentials(email: str | None, endpoint: str = ZEROSSL_EAB_ENDPOINT,
                            timeout: float = 30.0) -> tuple[str, str]:
    """(key id, MAC key) that ZeroSSL's API gives for an email (caddytls'
    generateZeroSSLEABCredentials); AcmeError when it will not."""
    if not (email or "").strip():
        raise AcmeError("your email address is required to use ZeroSSL's ACME endpoint (the global `email` option)")
    try:
        response = requests.post(endpoint, data={"email": email.strip()}, timeout=timeout)
        result = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise AcmeError(f"getting ZeroSSL EAB credentials from {endpoint}: {exc}") from None
    error = result.get("error") or {}
    if error.get("code"):  # ZeroSSL's API answers errors with 200
        raise AcmeError(f"failed getting ZeroSSL EAB credentials: HTTP {response.status_code}: "
                        f"{error.get('type', '')} (code {error['code']})")
    if response.status_code != 200 or not result.get("eab_kid") or not result.get("eab_hmac_key"):
        raise AcmeError(f"failed getting ZeroSSL EAB credentials: HTTP {response.status_code}")
    log.info("generated ZeroSSL EAB credentials", extra={"ds_fields": {"key_id": result["eab_kid"]}})
    return result["eab_kid"], result["eab_hmac_key"]


def _normalize(names: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for name in names:
        n = name.strip().rstrip(".").lower()
        if n and n not in seen:
            seen.append(n)
    return seen


def ari_cert_id(cert: x509.Certificate) -> str:
    """RFC 9773 §4.1: base64url(AKI keyIdentifier) "." base64url(DER serial's content bytes)."""
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier or b""
    serial = cert.serial_number
    serial_bytes = serial.to_bytes((serial.bit_length() + 8) // 8, "big", signed=True)  # room for the sign bit

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")
    return f"{b64(aki)}.{b64(serial_bytes)}"


# --------------------------------------------------------------------------- network

class _Network(acme_client.ClientNetwork):
    """The library's network with a badNonce retry loop of our own (its post retries once)."""

    def __init__(self, *args: Any, bad_nonce_retries: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bad_nonce_retries = bad_nonce_retries
        self.bad_nonces = 0

    def post(self, *args: Any, **kwargs: Any) -> requests.Response:
        attempt = 0
        while True:
            try:
                return self._post_once(*args, **kwargs)
            except messages.Error as error:
                if error.code != "badNonce" or attempt >= self.bad_nonce_retries:
                    raise
                attempt += 1
                self.bad_nonces += 1
                log.debug("ACME badNonce, retrying (%d)", attempt)


@dataclass
class _Account:
    key: Any  # a cryptography private key
    jwk: jose.JWK
    alg: jose.JWASignature
    location: str
    email: str  # "" when none
    body: dict = field(default_factory=dict)


def _jwk_and_alg(key: Any) -> tuple[jose.JWK, jose.JWASignature]:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        alg = {"secp256r1": jose.ES256, "secp384r1": jose.ES384, "secp521r1": jose.ES512}.get(key.curve.name)
        if alg is None:
            raise ValueError(f"unsupported account key curve {key.curve.name}")
        return jose.JWKEC(key=key), alg
    if isinstance(key, rsa.RSAPrivateKey):
        return jose.JWKRSA(key=key), jose.RS256
    raise ValueError(f"unsupported account key type {type(key).__name__}")


def _key_pem(key: Any) -> bytes:
    # SEC 1 "EC PRIVATE KEY" / PKCS#1 "RSA PRIVATE KEY", as certmagic's PEMEncodePrivateKey
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _status_name(status: Any) -> str:
    return str(getattr(status, "name", status) or "")


def _problem(error: messages.Error) -> tuple[str, str]:
    detail = error.detail or error.title or error.description or ""
    subs = getattr(error, "subproblems", None) or ()
    extra = "; ".join(f"{getattr(s, 'identifier', None) and s.identifier.value}: {s.detail}" for s in subs)
    return error.typ or "", f"{detail} ({extra})" if extra else detail


# --------------------------------------------------------------------------- the issuer

class AcmeIssuer:
    """One CA and account settings over one storage; thread-safe (each order has its own
    connection; the account is loaded or registered once, under a lock)."""

    def __init__(self, settings: AcmeSettings, storage_root: str, board: ChallengeBoard) -> None:
        self.settings = settings
        self.storage_root = storage_root
        self.board = board
        self.issuer_key = issuer_key(settings.directory)
        self._account: _Account | None = None
        self._account_lock = threading.Lock()

    # ------------------------------------------------------------------ storage

    def paths(self, name: str) -> tuple[str, str, str]:
        """(crt, key, json) of the certificate stored for `name` under this issuer."""
        return leaf_paths(self.storage_root, name, safe_key(self.issuer_key))

    def load_stored(self, names: Sequence[str]) -> IssuedCertificate | None:
        """The certificate stored for exactly these names with a matching key, or None."""
        names = _normalize(names)
        if not names:
            return None
        cert_path, key_path, meta_path = self.paths(names[0])
        try:
            with open(cert_path, "rb") as f:
                chain_pem = f.read()
            leaf = x509.load_pem_x509_certificate(chain_pem)
            with open(key_path, "rb") as f:
                key = serialization.load_pem_private_key(f.read(), password=None)
        except (OSError, ValueError):
            return None
        try:
            sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            dns_names = {n.lower() for n in sans.get_values_for_type(x509.DNSName)}
        except x509.ExtensionNotFound:
            dns_names = set()
        if dns_names != set(names):
            return None
        pub = serialization.PublicFormat.SubjectPublicKeyInfo
        if key.public_key().public_bytes(serialization.Encoding.DER, pub) != \
                leaf.public_key().public_bytes(serialization.Encoding.DER, pub):
            return None
        issuer_data: dict = {}
        try:
            with open(meta_path, "rb") as f:
                issuer_data = json.load(f).get("issuer_data") or {}
        except (OSError, ValueError, AttributeError):
            pass
        return IssuedCertificate(
            names=tuple(names), cert_path=cert_path, key_path=key_path, meta_path=meta_path,
            not_before=leaf.not_valid_before_utc, not_after=leaf.not_valid_after_utc,
            issuer_key=self.issuer_key, certificate_url=str(issuer_data.get("url", "")),
            account_url=str(issuer_data.get("account", "")), reused=True, chain_pem=chain_pem)

    def _store(self, names: list[str], key: ec.EllipticCurvePrivateKey, chain_pem: bytes,
               certificate_url: str, account_url: str) -> IssuedCertificate:
        cert_path, key_path, meta_path = self.paths(names[0])
        leaf = x509.load_pem_x509_certificate(chain_pem)
        meta = {"sans": names, "issuer_data": {"url": certificate_url, "ca": self.settings.directory,
                                               "account": account_url}}
        # key first: a reader that sees the new chain finds its key already in place
        write_atomic(key_path, _key_pem(key))
        write_atomic(cert_path, chain_pem)
        write_atomic(meta_path, json.dumps(meta, indent="\t").encode())
        return IssuedCertificate(
            names=tuple(names), cert_path=cert_path, key_path=key_path, meta_path=meta_path,
            not_before=leaf.not_valid_before_utc, not_after=leaf.not_valid_after_utc,
            issuer_key=self.issuer_key, certificate_url=certificate_url, account_url=account_url,
            chain_pem=chain_pem)

    # ------------------------------------------------------------------ obtaining

    def obtain(self, names: Sequence[str], *, replacing: x509.Certificate | None = None,
               cancel: threading.Event | None = None) -> IssuedCertificate:
        """A certificate for `names` (the first names the storage entry). Under the name's
        storage lock: if the stored certificate covers the names, is outside its renewal
        window and is not `replacing` (the one the caller wants renewed), it is returned
        (`reused`); otherwise a new one is ordered, stored and returned. Setting `cancel`
        (shutdown) ends the waits for the lock and between polls with an AcmeError."""
        names = _normalize(names)
        if not names:
            raise ValueError("no names to obtain a certificate for")
        for name in names:
            if is_ip(name) or not qualifies_for_cert(name):
                raise AcmeError(f"{name}: not a name an ACME CA issues certificates for", names=names)
            if name.startswith("*."):
                raise AcmeError(f"{name}: a wildcard needs the dns-01 challenge, which is not supported",
                                names=names)
        lock = StorageLock(self.storage_root, issue_lock_name(names[0]))
        try:
            lock.acquire(timeout=self.settings.lock_timeout, cancel=cancel)
        except StorageLockTimeout as exc:
            raise AcmeError(f"{names[0]}: {exc} (another process is obtaining it)", names=names) from None
        except InterruptedError:
            raise AcmeError(f"{names[0]}: cancelled while waiting for the storage lock", names=names) from None
        try:
            stored = self.load_stored(names)
            if stored is not None and not stored.needs_renewal(self.settings.renewal_window_ratio) and (
                    replacing is None or stored.leaf().fingerprint(hashes.SHA256())
                    != replacing.fingerprint(hashes.SHA256())):
                return stored
            return self._obtain_unlocked(names, cancel)
        finally:
            lock.release()

    def _obtain_unlocked(self, names: list[str], cancel: threading.Event | None) -> IssuedCertificate:
        where = f"(CA {self.settings.directory})"
        try:
            try:
                return self._order(names, cancel)
            except messages.Error as error:
                if error.typ != _PROBLEM_ACCOUNT_DOES_NOT_EXIST:
                    raise
                # the CA was reset and forgot the account: register anew, as certmagic does
                log.warning("ACME account unknown to the CA; registering a new one", extra={"ca": self.settings.directory})
                self._forget_account()
                return self._order(names, cancel)
        except AcmeError:
            raise
        except messages.Error as error:
            typ, detail = _problem(error)
            raise AcmeError(f"{', '.join(names)}: the ACME CA refused: {detail} [{typ}] {where}",
                            names=names, problem_type=typ, problem_detail=detail) from None
        except requests.RequestException as exc:
            raise AcmeError(f"{', '.join(names)}: cannot reach the ACME CA: {exc} {where}", names=names) from None
        except acme_errors.Error as exc:
            raise AcmeError(f"{', '.join(names)}: ACME protocol error: {exc!r} {where}", names=names) from None
        except OSError as exc:
            raise AcmeError(f"{', '.join(names)}: storing in {self.storage_root}: {exc}", names=names) from None

    def _network(self, account: _Account | None) -> tuple[_Network, acme_client.ClientV2]:
        verify: bool | str = self.settings.ca_root or True
        jwk, alg = (account.jwk, account.alg) if account else (None, jose.ES256)
        net = _Network(key=jwk, alg=alg, verify_ssl=verify,  # type: ignore[arg-type]  # requests takes a CA path
                       user_agent="durable-streams-server acme-python",
                       timeout=int(max(1, self.settings.network_timeout)),
                       bad_nonce_retries=self.settings.bad_nonce_retries)
        directory = acme_client.ClientV2.get_directory(self.settings.directory, net)
        return net, acme_client.ClientV2(directory, net)

    def _client(self) -> tuple[acme_client.ClientV2, _Account]:
        account = self._get_account()
        net, client = self._network(account)
        net.account = messages.RegistrationResource(body=messages.Registration(), uri=account.location)
        return client, account

    def _order(self, names: list[str], cancel: threading.Event | None) -> IssuedCertificate:
        deadline = time.monotonic() + self.settings.order_timeout
        started = time.monotonic()
        client, account = self._client()
        key = ec.generate_private_key(ec.SECP256R1())
        key_pkcs8 = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
        orderr = client.new_order(crypto_util.make_csr(key_pkcs8, names))
        cleanups: list = []
        try:
            pending = []
            for authzr in orderr.authorizations:
                name = authzr.body.identifier.value
                status = authzr.body.status
                if status == messages.STATUS_VALID:
                    continue  # the CA reuses an earlier validation
                if status != messages.STATUS_PENDING:
                    raise AcmeError(f"{name}: authorization is {_status_name(status)} before any challenge was answered",
                                    names=names)
                challb = self._pick_challenge(authzr, names)
                kind = challb.chall.typ
                key_authorization = challb.chall.key_authorization(account.jwk)
                if kind == HTTP01:
                    token = challb.chall.encode("token")
                    self.board.put_http01(token, key_authorization)
                    cleanups.append(lambda token=token: self.board.remove_http01(token))
                else:
                    self.board.put_tls_alpn01(name, key_authorization)
                    cleanups.append(lambda name=name: self.board.remove_tls_alpn01(name))
                pending.append((authzr, challb))
            for _authzr, challb in pending:
                client.answer_challenge(challb, challb.chall.response(account.jwk))
            for authzr, challb in pending:
                self._wait_for_authorization(client, authzr, challb.chall.typ, names, deadline, cancel)
            chain_pem, cert_url = self._finalize(client, orderr, names, deadline, cancel)
        finally:
            for cleanup in cleanups:
                cleanup()
        issued = self._store(names, key, chain_pem, cert_url, account.location)
        log.info("certificate obtained", extra={"names": names, "ca": self.settings.directory,
                                                "seconds": round(time.monotonic() - started, 3),
                                                "bad_nonce_retries": client.net.bad_nonces})  # type: ignore[attr-defined]
        return issued

    def _pick_challenge(self, authzr: messages.AuthorizationResource, names: list[str]) -> messages.ChallengeBody:
        offered = {c.chall.typ: c for c in authzr.body.challenges}
        for kind in self.settings.challenges:
            if kind in offered:
                return offered[kind]
        name = authzr.body.identifier.value
        raise AcmeError(f"{name}: the CA offers the challenges {', '.join(sorted(offered)) or 'none'}, "
                        f"none of which is enabled ({', '.join(self.settings.challenges)})", names=names)

    @staticmethod
    def _sleep(delay: float, deadline: float, cancel: threading.Event | None, names: list[str]) -> None:
        delay = max(0.0, min(delay, deadline - time.monotonic()))
        if cancel is None:
            time.sleep(delay)
        elif cancel.wait(delay):
            raise AcmeError(f"{', '.join(names)}: order cancelled", names=names)

    def _wait_for_authorization(self, client: acme_client.ClientV2, authzr: messages.AuthorizationResource,
                                kind: str, names: list[str], deadline: float,
                                cancel: threading.Event | None) -> None:
        name = authzr.body.identifier.value
        delay = _POLL_FIRST
        while True:
            authzr, response = client.poll(authzr)
            status = authzr.body.status
            if status == messages.STATUS_VALID:
                return
            if status not in (messages.STATUS_PENDING, messages.STATUS_PROCESSING):
                errors = [c.error for c in authzr.body.challenges if c.error is not None]
                if errors:
                    typ, detail = _problem(errors[0])
                else:
                    typ, detail = "", f"authorization became {_status_name(status)}"
                raise AcmeError(f"{name}: {kind} challenge failed: {detail} [{typ}] (CA {self.settings.directory})",
                                names=names, challenge=kind, problem_type=typ, problem_detail=detail)
            if time.monotonic() >= deadline:
                raise AcmeError(f"{name}: {kind} challenge still {_status_name(status)} after "
                                f"{self.settings.order_timeout:g} s (CA {self.settings.directory})",
                                names=names, challenge=kind)
            self._sleep(max(delay, self._retry_after(response)), deadline, cancel, names)
            delay = min(delay * _POLL_GROWTH, _POLL_MAX)

    @staticmethod
    def _retry_after(response: requests.Response) -> float:
        value = response.headers.get("Retry-After", "")
        try:
            return min(float(value), 10.0)  # a hint; the overall deadline still bounds the wait
        except ValueError:
            return 0.0

    def _post_as_get(self, client: acme_client.ClientV2, url: str) -> requests.Response:
        return client.net.post(url, None, new_nonce_url=client.directory["newNonce"])

    def _finalize(self, client: acme_client.ClientV2, orderr: messages.OrderResource, names: list[str],
                  deadline: float, cancel: threading.Event | None) -> tuple[bytes, str]:
        try:
            body = client.begin_finalization(orderr).body
        except messages.Error as error:
            if error.code != "orderNotReady":
                raise
            body = orderr.body
        delay = _POLL_FIRST
        while True:
            status = body.status
            if status == messages.STATUS_VALID and body.certificate:
                response = self._post_as_get(client, body.certificate)
                return response.content, body.certificate
            if status == messages.STATUS_INVALID:
                typ, detail = _problem(body.error) if body.error else ("", "order became invalid")
                raise AcmeError(f"{', '.join(names)}: the CA did not issue: {detail} [{typ}] "
                                f"(CA {self.settings.directory})", names=names, problem_type=typ,
                                problem_detail=detail)
            if time.monotonic() >= deadline:
                raise AcmeError(f"{', '.join(names)}: order still {_status_name(status)} after "
                                f"{self.settings.order_timeout:g} s (CA {self.settings.directory})", names=names)
            self._sleep(delay, deadline, cancel, names)
            delay = min(delay * _POLL_GROWTH, _POLL_MAX)
            response = self._post_as_get(client, orderr.uri)
            body = messages.Order.from_json(response.json())
            if body.status == messages.STATUS_READY:  # ready again (finalize raced): send the CSR
                body = client.begin_finalization(orderr).body

    # ------------------------------------------------------------------ the account

    def _configured_email(self) -> str:
        email = (self.settings.email or "").strip().lower()
        if email:
            return email
        # certmagic's mostRecentAccountEmail: with no email configured, reuse the newest account
        users = os.path.join(self.storage_root, "acme", safe_key(self.issuer_key), "users")
        try:
            entries = [e for e in os.scandir(users) if e.is_dir()]
        except OSError:
            return ""
        for entry in sorted(entries, key=lambda e: e.stat().st_mtime, reverse=True):
            account = self._load_account(entry.name if entry.name != _EMPTY_EMAIL else "")
            if account is not None:
                return account.email
        return ""

    def _load_account(self, email: str) -> _Account | None:
        reg_path, key_path = account_paths(self.storage_root, self.settings.directory, email)
        try:
            with open(reg_path, "rb") as f:
                body = json.load(f)
            with open(key_path, "rb") as f:
                key = serialization.load_pem_private_key(f.read(), password=None)
        except (OSError, ValueError):
            return None
        location = body.get("location") if isinstance(body, dict) else None
        if not location:
            return None
        jwk, alg = _jwk_and_alg(key)
        contacts = body.get("contact") or []
        contact_email = contacts[0].split(":", 1)[-1] if contacts else ""
        return _Account(key=key, jwk=jwk, alg=alg, location=location, email=contact_email, body=body)

    def _get_account(self) -> _Account:
        with self._account_lock:
            if self._account is None:
                email = self._configured_email()
                account = self._load_account(email)
                if account is None:
                    suffix = f"_{email}" if email else ""
                    with StorageLock(self.storage_root, f"register_acme_account{suffix}",
                                     timeout=self.settings.lock_timeout):
                        # another process may have registered it while we waited
                        account = self._load_account(email) or self._register(email)
                self._account = account
            return self._account

    def _forget_account(self) -> None:
        with self._account_lock:
            account, self._account = self._account, None
            if account is None:
                return
            for path in account_paths(self.storage_root, self.settings.directory, account.email):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass

    def _register(self, email: str) -> _Account:
        key = ec.generate_private_key(ec.SECP256R1())
        jwk, alg = _jwk_and_alg(key)
        net, client = self._network(None)
        net.key, net.alg = jwk, alg
        eab = None
        if self.settings.eab is not None:
            key_id, mac_key = self.settings.eab
            eab = messages.ExternalAccountBinding.from_data(
                account_public_key=jwk.public_key(), kid=key_id, hmac_key=mac_key, directory=client.directory)
        elif client.external_account_required():
            raise AcmeError(f"the ACME CA {self.settings.directory} requires External Account Binding: "
                            "set acme_eab <key_id> <mac_key>")
        registration = messages.NewRegistration.from_data(
            email=email or None, terms_of_service_agreed=True, external_account_binding=eab)
        try:
            regr = client.new_account(registration)
        except messages.Error as error:
            typ, detail = _problem(error)
            raise AcmeError(f"registering an ACME account{' for ' + email if email else ''} failed: "
                            f"{detail} [{typ}] (CA {self.settings.directory})",
                            problem_type=typ, problem_detail=detail) from None
        except requests.RequestException as exc:
            raise AcmeError(f"cannot reach the ACME CA {self.settings.directory}: {exc}") from None
        # acmez's Account JSON (what certmagic stores); the library's Registration has no `orders`
        body: dict = {"status": _status_name(regr.body.status) or "valid"}
        if regr.body.contact:
            body["contact"] = list(regr.body.contact)
        body["termsOfServiceAgreed"] = True
        body["location"] = regr.uri
        reg_path, key_path = account_paths(self.storage_root, self.settings.directory, email)
        mkdirs(os.path.dirname(reg_path))
        write_atomic(key_path, _key_pem(key))
        write_atomic(reg_path, json.dumps(body, indent="\t").encode())
        log.info("ACME account registered", extra={"ca": self.settings.directory, "email": email,
                                                   "location": regr.uri})
        return _Account(key=key, jwk=jwk, alg=alg, location=regr.uri, email=email, body=body)

    # ------------------------------------------------------------------ renewal info

    def renewal_window(self, chain_pem: bytes) -> RenewalWindow | None:
        """The CA's ARI window for this certificate (RFC 9773), or None when its directory
        has no `renewalInfo`. Raises AcmeError when the CA cannot be asked."""
        leaf = x509.load_pem_x509_certificate(chain_pem)
        try:
            net, client = self._network(None)
            try:
                base = client.directory["renewalInfo"]
            except KeyError:
                return None
            response = net.get(f"{base.rstrip('/')}/{ari_cert_id(leaf)}", content_type="application/json")
            info = messages.RenewalInfo.from_json(response.json())
        except (requests.RequestException, messages.Error, acme_errors.Error, jose.DeserializationError) as exc:
            raise AcmeError(f"fetching ACME renewal info from {self.settings.directory}: {exc}") from None
        retry_after = acme_client.ClientV2.retry_after(response, 6 * 3600)  # naive local time
        return RenewalWindow(start=info.suggested_window.start, end=info.suggested_window.end,
                             retry_after=retry_after.astimezone(dt.timezone.utc),
                             explanation_url=getattr(info, "explanation_url", None))
