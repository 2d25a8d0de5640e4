"""The local certificate authority (Caddy's `pki` app and `internal` issuer), with `cryptography`.

Like Caddy's default CA ("local"):
- a root (10 years) and an intermediate (7 days) in `<storage>/pki/authorities/local/`
  (`root.crt`, `root.key`, `intermediate.crt`, `intermediate.key`); each is renewed once
  the last fifth of its lifetime begins (caddypki's renewal window); the root is kept
  across restarts, so a client that trusts it keeps trusting the server;
- leaf certificates (12 hours) signed by the intermediate, one per name, in certmagic's
  layout `<storage>/certificates/local/<name>/<name>.crt|.key|.json`; the .crt holds the
  chain (leaf, then intermediate); a leaf is renewed once the last third of its lifetime
  begins (certmagic's default window), or sooner if its intermediate changed;
- ECDSA P-256 keys; private keys are written 0600, directories created 0700.

Everything here is synchronous file and crypto work (milliseconds per certificate).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ...config.certnames import authority_dir, is_ip, leaf_paths
from .storage import StorageLock, write_atomic as _write

ROOT_LIFETIME = dt.timedelta(days=3650)
INTERMEDIATE_LIFETIME = dt.timedelta(days=7)
LEAF_LIFETIME = dt.timedelta(hours=12)
CA_RENEWAL_RATIO = 0.2  # caddypki: renew a CA certificate in the last 20 % of its life
LEAF_RENEWAL_RATIO = 1 / 3  # certmagic's default RenewalWindowRatio
BACKDATE = dt.timedelta(minutes=1)  # tolerate clients whose clock is a little behind
CA_NAME = "durable-streams-server Local Authority"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    # "EC PRIVATE KEY" (SEC 1), as certmagic's PEMEncodePrivateKey writes ECDSA keys
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _not_after(cert: x509.Certificate) -> dt.datetime:
    return cert.not_valid_after_utc


def _not_before(cert: x509.Certificate) -> dt.datetime:
    return cert.not_valid_before_utc


def needs_renewal(cert: x509.Certificate, ratio: float, now: dt.datetime | None = None) -> bool:
    """True once the last `ratio` of the certificate's lifetime has begun (or it expired)."""
    now = now or _now()
    lifetime = _not_after(cert) - _not_before(cert)
    return now >= _not_after(cert) - lifetime * ratio


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


@dataclass
class _Pair:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _load_pair(cert_path: str, key_path: str) -> _Pair | None:
    try:
        with open(cert_path, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        with open(key_path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
    except (FileNotFoundError, ValueError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    return _Pair(cert, key)


def _ski(key: ec.EllipticCurvePrivateKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(key.public_key())


class LocalCA:
    """The CA "local" under a storage root: loads what is stored, makes what is missing."""

    def __init__(self, storage_root: str) -> None:
        self.storage_root = storage_root
        self.dir = authority_dir(storage_root)
        self.root_cert_path = os.path.join(self.dir, "root.crt")
        self.root_key_path = os.path.join(self.dir, "root.key")
        self.intermediate_cert_path = os.path.join(self.dir, "intermediate.crt")
        self.intermediate_key_path = os.path.join(self.dir, "intermediate.key")
        self._root: _Pair | None = None
        self._intermediate: _Pair | None = None

    # ------------------------------------------------------------------ authorities

    def root(self) -> _Pair:
        if self._root is None or needs_renewal(self._root.cert, CA_RENEWAL_RATIO):
            pair = _load_pair(self.root_cert_path, self.root_key_path)
            if pair is None or needs_renewal(pair.cert, CA_RENEWAL_RATIO):
                pair = self._new_root()
            self._root = pair
        return self._root

    def intermediate(self) -> _Pair:
        root = self.root()
        pair = self._intermediate
        if pair is None or needs_renewal(pair.cert, CA_RENEWAL_RATIO) or not self._signed_by(pair.cert, root.cert):
            pair = _load_pair(self.intermediate_cert_path, self.intermediate_key_path)
            if pair is None or needs_renewal(pair.cert, CA_RENEWAL_RATIO) or not self._signed_by(pair.cert, root.cert):
                pair = self._new_intermediate(root)
            self._intermediate = pair
        return self._intermediate

    @staticmethod
    def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
        try:
            cert.verify_directly_issued_by(issuer)
            return True
        except (ValueError, TypeError, Exception):  # InvalidSignature and friends
            return False

    def _new_root(self) -> _Pair:
        key = _new_key()
        now = _now()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{CA_NAME} - {now.year} ECC Root")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + ROOT_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(_ski(key), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write(self.root_key_path, _key_pem(key))
        _write(self.root_cert_path, _cert_pem(cert))
        return _Pair(cert, key)

    def _new_intermediate(self, root: _Pair) -> _Pair:
        key = _new_key()
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{CA_NAME} - ECC Intermediate")]))
            .issuer_name(root.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(min(now + INTERMEDIATE_LIFETIME, _not_after(root.cert)))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(_ski(key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root.key.public_key()), critical=False)
            .sign(root.key, hashes.SHA256())
        )
        _write(self.intermediate_key_path, _key_pem(key))
        _write(self.intermediate_cert_path, _cert_pem(cert))
        return _Pair(cert, key)

    # ------------------------------------------------------------------ leaves

    def leaf_needs_renewal(self, subject: str) -> bool:
        cert_path, key_path, _meta = leaf_paths(self.storage_root, subject)
        pair = _load_pair(cert_path, key_path)
        if pair is None or needs_renewal(pair.cert, LEAF_RENEWAL_RATIO):
            return True
        return not self._signed_by(pair.cert, self.intermediate().cert)

    def issue(self, subject: str) -> x509.Certificate:
        """A new leaf for `subject` (a DNS name, wildcard or IP), stored in certmagic's layout."""
        inter = self.intermediate()
        key = _new_key()
        now = _now()
        san: x509.GeneralName
        if is_ip(subject):
            san = x509.IPAddress(ipaddress.ip_address(subject.strip("[]")))
        else:
            san = x509.DNSName(subject.lower())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))  # names are in subjectAltName only, as Caddy's leaves
            .issuer_name(inter.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(min(now + LEAF_LIFETIME, _not_after(inter.cert)))
            .add_extension(x509.SubjectAlternativeName([san]), critical=True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                              data_encipherment=False, key_agreement=False, key_cert_sign=False,
                              crl_sign=False, encipher_only=False, decipher_only=False),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(_ski(key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(inter.key.public_key()), critical=False)
            .sign(inter.key, hashes.SHA256())
        )
        cert_path, key_path, meta_path = leaf_paths(self.storage_root, subject)
        # key first: a reader that sees the new chain finds its key already in place
        _write(key_path, _key_pem(key))
        _write(cert_path, _cert_pem(cert) + _cert_pem(inter.cert))
        meta = {"sans": [subject], "issuer_data": None}
        _write(meta_path, json.dumps(meta, indent="\t").encode())
        return cert


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                         encipher_only=False, decipher_only=False)


CA_LOCK_NAME = "durable_streams_local_ca"


def storage_lock(storage_root: str) -> StorageLock:
    """One process at a time makes or renews the CA and its leaves in this storage, so
    two servers sharing it never end up with two roots: certmagic's file lock protocol
    (cert_storage.StorageLock), under a name of our own (Caddy's pki app takes none)."""
    return StorageLock(storage_root, CA_LOCK_NAME)
