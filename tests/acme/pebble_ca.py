"""A real ACME CA on loopback for the tests: Let's Encrypt's Pebble with pebble-challtestsrv
as its DNS (every name resolves to 127.0.0.1), so Pebble validates challenges against the
ports the test serves them on.

Debian's `pebble` ships no test certificates, so the CA of Pebble's own HTTPS listener and
its certificate (127.0.0.1, ::1, localhost) are made here with `cryptography`. Pebble makes
a new issuing root on every start; `issued_root_pem` is fetched from the management
interface's `/roots/0`.

`start_pebble` raises `PebbleUnavailable` when the binaries are missing or do not come up;
the pytest fixture turns that into a failure under CI (env CI set) and a skip elsewhere.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

START_TIMEOUT = 20.0
# the EAB key pairs of Pebble's own example config (pebble-config-external-account-bindings.json)
EXAMPLE_EAB_KEYS = {
    "kid-1": "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W",
    "kid-2": "b10lLJs8l1GPIzsLP0s6pMt8O0XVGnfTaCeROxQM0BIt2XrJMDHJZBM5NuQmQJQH",
}


class PebbleUnavailable(Exception):
    pass


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (the mock DNS listens on both)."""
    while True:
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
        try:
            with socket.socket(socket.AF_INET, other) as s:
                s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue


def _write_api_certificates(directory: str) -> tuple[str, str, str]:
    """(ca.pem, cert.pem, key.pem) for Pebble's HTTPS API on loopback."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble API test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = tuple(os.path.join(directory, n) for n in ("ca.pem", "cert.pem", "key.pem"))
    pem = serialization.Encoding.PEM
    with open(paths[0], "wb") as f:
        f.write(ca.public_bytes(pem))
    with open(paths[1], "wb") as f:
        f.write(cert.public_bytes(pem))
    with open(paths[2], "wb") as f:
        f.write(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths  # type: ignore[return-value]


@dataclass
class Pebble:
    """A running Pebble (and its mock DNS); `stop()` ends both."""

    workdir: str
    directory_url: str
    management_url: str
    api_ca_path: str  # trust this for Pebble's own HTTPS (the `ca_root` of the issuer settings)
    http_port: int
    tls_port: int
    issued_root_pem: bytes = b""
    log_path: str = ""
    _procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def issued_root_path(self) -> str:
        return os.path.join(self.workdir, "issued-root.pem")

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def new_account_count(self) -> int:
        """Accounts Pebble created (it logs "There are now N accounts in memory" for each)."""
        return len(re.findall(r"There are now \d+ accounts in memory", self.log()))

    def management_get(self, path: str) -> bytes:
        context = ssl.create_default_context(cafile=self.api_ca_path)
        with urllib.request.urlopen(self.management_url + path, context=context, timeout=5) as resp:
            return resp.read()

    def stop(self) -> None:
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self._procs):
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _wait(check, proc: subprocess.Popen, what: str, log_path: str) -> None:
    """Poll `check` until it succeeds (nothing to await: the binaries give no readiness signal)."""
    deadline = time.monotonic() + START_TIMEOUT
    last: Exception | None = None
    delay = 0.02
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PebbleUnavailable(f"{what} exited with {proc.returncode}: {_tail(log_path)}")
        try:
            return check()
        except OSError as exc:
            last = exc
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)
    raise PebbleUnavailable(f"{what} did not come up in {START_TIMEOUT:.0f} s ({last}): {_tail(log_path)}")


def _tail(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()[-2000:]
    except OSError:
        return ""


def start_pebble(
    *,
    http_port: int,
    tls_port: int,
    certificate_validity: int | None = None,
    nonce_reject: int | None = 0,
    eab_keys: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    api_port: int | None = None,
) -> Pebble:
    """Start the mock DNS and Pebble; Pebble validates HTTP-01 on `http_port` and
    TLS-ALPN-01 on `tls_port` of 127.0.0.1. `certificate_validity` is in seconds;
    `nonce_reject` is Pebble's PEBBLE_WFE_NONCEREJECT percentage (None: Pebble's default, 5);
    `api_port` fixes the directory's port (a restarted CA at the same URL), else a free one."""
    pebble_bin, challtest_bin = shutil.which("pebble"), shutil.which("pebble-challtestsrv")
    if not pebble_bin or not challtest_bin:
        raise PebbleUnavailable("pebble and pebble-challtestsrv are not installed (apt-get install pebble)")
    workdir = tempfile.mkdtemp(prefix="pebble-")
    log_path = os.path.join(workdir, "pebble.log")
    api_ca, cert, key = _write_api_certificates(workdir)
    mgmt_port, dns_port, dns_mgmt_port = (free_port() for _ in range(3))
    api_port = api_port or free_port()
    config: dict = {
        "listenAddress": f"127.0.0.1:{api_port}",
        "managementListenAddress": f"127.0.0.1:{mgmt_port}",
        "certificate": cert,
        "privateKey": key,
        "httpPort": http_port,
        "tlsPort": tls_port,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": bool(eab_keys),
    }
    if eab_keys:
        config["externalAccountMACKeys"] = eab_keys
    if certificate_validity is not None:
        config["certificateValidityPeriod"] = certificate_validity
    config_path = os.path.join(workdir, "pebble-config.json")
    with open(config_path, "w") as f:
        json.dump({"pebble": config}, f)

    pebble = Pebble(workdir=workdir, directory_url=f"https://127.0.0.1:{api_port}/dir",
                    management_url=f"https://127.0.0.1:{mgmt_port}", api_ca_path=api_ca,
                    http_port=http_port, tls_port=tls_port, log_path=log_path)
    log = open(log_path, "ab")
    try:
        dns_log = os.path.join(workdir, "challtestsrv.log")
        with open(dns_log, "ab") as dns_out:
            dns = subprocess.Popen(
                [challtest_bin, "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
                 "-dns01", f"127.0.0.1:{dns_port}", "-http01", "", "-https01", "", "-tlsalpn01", "",
                 "-management", f"127.0.0.1:{dns_mgmt_port}"],
                stdout=dns_out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        pebble._procs.append(dns)
        _wait(lambda: socket.create_connection(("127.0.0.1", dns_mgmt_port), timeout=1).close(),
              dns, "pebble-challtestsrv", dns_log)

        pebble_env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", **(env or {})}
        if nonce_reject is not None:
            pebble_env["PEBBLE_WFE_NONCEREJECT"] = str(nonce_reject)
        proc = subprocess.Popen([pebble_bin, "-config", config_path, "-dnsserver", f"127.0.0.1:{dns_port}"],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=pebble_env, cwd=workdir)
        pebble._procs.append(proc)
        context = ssl.create_default_context(cafile=api_ca)

        def directory_answers() -> None:
            with urllib.request.urlopen(pebble.directory_url, context=context, timeout=2) as resp:
                json.load(resp)

        _wait(directory_answers, proc, "pebble", log_path)
        pebble.issued_root_pem = _wait(lambda: pebble.management_get("/roots/0"), proc, "pebble /roots/0", log_path)
        with open(pebble.issued_root_path, "wb") as f:
            f.write(pebble.issued_root_pem)
        return pebble
    except BaseException:
        pebble.stop()
        raise
    finally:
        log.close()
