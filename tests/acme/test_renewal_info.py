"""ACME Renewal Info (RFC 9773) decides when a certificate renews: a CA that suggests a
window in the past makes the server renew a certificate that is nowhere near the last
third of its lifetime. Pebble 2.4 has no renewalInfo, so the CA here is a small HTTPS
server of the test's that serves a directory with `renewalInfo` and records what it is
asked; the real server process asks it over real sockets. Its orders fail (it implements
no orders), which also shows that a failing renewal keeps the stored certificate served.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.server
import json
import os
import socket
import ssl
import sys
import threading
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

sys.path.insert(0, os.path.dirname(__file__))
from pebble_ca import _write_api_certificates, free_port  # noqa: E402
from test_automatic_https import NAME, server, server_log  # noqa: E402

from durable_streams.server.config.certnames import acme_issuer_key, leaf_paths  # noqa: E402
from durable_streams.server.runtime.tls.acme import ari_cert_id  # noqa: E402


class FakeCA(http.server.ThreadingHTTPServer):
    """GET /dir (with renewalInfo), HEAD/GET /nonce, GET /renewal-info/<id>; POSTs fail."""

    def __init__(self, port: int, cert: str, key: str, window: tuple[dt.datetime, dt.datetime]) -> None:
        self.window = window
        self.asked: list[str] = []
        self.posts: list[str] = []
        super().__init__(("127.0.0.1", port), _Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.base = f"https://127.0.0.1:{port}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


class _Handler(http.server.BaseHTTPRequestHandler):
    server: FakeCA

    def log_message(self, *args) -> None:
        pass

    def _json(self, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Replay-Nonce", hashlib.sha256(os.urandom(8)).hexdigest()[:22])
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_HEAD(self) -> None:
        self._json(200, {})

    def do_GET(self) -> None:
        base = self.server.base
        if self.path == "/dir":
            self._json(200, {"newNonce": f"{base}/nonce", "newAccount": f"{base}/account", "newOrder": f"{base}/order",
                             "revokeCert": f"{base}/revoke", "keyChange": f"{base}/key", "renewalInfo": f"{base}/renewal-info"})
        elif self.path.startswith("/renewal-info/"):
            self.server.asked.append(self.path.rsplit("/", 1)[1])
            start, end = self.server.window
            self._json(200, {"suggestedWindow": {"start": start.isoformat().replace("+00:00", "Z"),
                                                 "end": end.isoformat().replace("+00:00", "Z")}},
                       {"Retry-After": "21600"})
        else:
            self._json(200, {})

    def do_POST(self) -> None:
        self.server.posts.append(self.path)
        self._json(403, {"type": "urn:ietf:params:acme:error:unauthorized", "detail": "this CA issues nothing"})


def stored_certificate(storage: Path, directory: str) -> x509.Certificate:
    """A certificate for NAME with 30 days to go (far from renewal by the lifetime rule),
    where the ACME issuer would have stored it."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test issuing CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([])).issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME)]), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file, _meta = leaf_paths(str(storage), NAME, acme_issuer_key(directory))
    Path(cert_file).parent.mkdir(parents=True, mode=0o700)
    Path(key_file).write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
    Path(cert_file).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert


def served_der(port: int) -> bytes | None:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as raw, \
                ctx.wrap_socket(raw, server_hostname=NAME) as tls:
            return tls.getpeercert(binary_form=True)
    except OSError:
        return None


def test_a_renewal_window_in_the_past_renews_now_and_a_failure_keeps_the_certificate(tmp_path: Path) -> None:
    ca_pem, ca_cert, ca_key = _write_api_certificates(str(tmp_path))
    now = dt.datetime.now(dt.timezone.utc)
    fake = FakeCA(free_port(), ca_cert, ca_key, window=(now - dt.timedelta(hours=2), now - dt.timedelta(hours=1)))
    directory = f"{fake.base}/dir"
    storage = tmp_path / "storage"
    stored = stored_certificate(storage, directory)
    http_port, https_port = free_port(), free_port()
    config = tmp_path / "Caddyfile"
    config.write_text(
        f"{{\n\tadmin off\n\tstorage file_system {storage}\n\tacme_ca {directory}\n\tacme_ca_root {ca_pem}\n"
        f"\thttp_port {http_port}\n\thttps_port {https_port}\n}}\n{NAME} {{\n\trespond \"ok\"\n}}\n")
    try:
        with server(config, tmp_path / "xdg") as proc:
            deadline = time.monotonic() + 30
            while not (fake.asked and fake.posts) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert fake.asked == [ari_cert_id(stored)], (fake.asked, server_log(proc))
            assert fake.posts, f"no renewal was attempted:\n{server_log(proc)}"  # though 30 days remain
            deadline = time.monotonic() + 10
            while "could not obtain a certificate" not in server_log(proc) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert "could not obtain a certificate" in server_log(proc)
            assert served_der(https_port) == stored.public_bytes(serialization.Encoding.DER)
    finally:
        fake.shutdown()
        fake.server_close()
