"""Automatic HTTPS with ACME, end to end: the real server process (`run --config`), a real
ACME CA on loopback (Pebble, with a mock DNS that sends every name to 127.0.0.1), and
clients that trust only Pebble's root.

The Caddyfile is the upstream deployment docs' production file with only the CA options,
the ports and the data directory changed; certificates live in Caddy's default location
($XDG_DATA_HOME/caddy), as under the packaged systemd unit.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from pebble_ca import Pebble, free_port  # noqa: E402

from durable_streams.server.runtime.tls.storage import StorageLock, issue_lock_name  # noqa: E402

SCRIPT = Path(sys.executable).parent / "durable-streams-server"
NAME = "streams.example.com"
REPO = Path(__file__).resolve().parents[2]
NODE_ROOT = REPO / "conformance"
TS_CHECK = Path(__file__).with_name("ts_https_check.mjs")


def production_caddyfile(tmp: Path, pebble: Pebble, *, http_port: int, https_port: int, site_tls: str = "",
                         admin: int | None = None) -> Path:
    """The docs' production Caddyfile; changed: acme_ca, acme_ca_root, the ports, data_dir
    (and an admin address where a test reads /readyz)."""
    path = tmp / "Caddyfile"
    path.write_text(
        "{\n"
        + (f"\tadmin 127.0.0.1:{admin}\n" if admin else "\tadmin off\n")
        + f"\tacme_ca {pebble.directory_url}\n"
        f"\tacme_ca_root {pebble.api_ca_path}\n"
        f"\thttp_port {http_port}\n"
        f"\thttps_port {https_port}\n"
        "}\n"
        f"{NAME} {{\n"
        + site_tls
        + "\troute /v1/stream/* {\n"
        "\t\tdurable_streams {\n"
        f"\t\t\tdata_dir {tmp / 'data'}\n"
        "\t\t}\n"
        "\t}\n"
        "}\n"
    )
    return path


@contextlib.contextmanager
def server(config: Path, xdg: Path) -> Iterator[subprocess.Popen]:
    log = open(config.parent / f"server-{time.monotonic_ns()}.log", "w")
    proc = subprocess.Popen([str(SCRIPT), "run", "--config", str(config)], cwd=config.parent, stdout=log,
                            stderr=subprocess.STDOUT, env={**os.environ, "XDG_DATA_HOME": str(xdg), "PYTHONUNBUFFERED": "1"})
    proc.log_path = log.name  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def server_log(proc: subprocess.Popen) -> str:
    return Path(proc.log_path).read_text()  # type: ignore[attr-defined]


def trusting(pebble: Pebble) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=pebble.issued_root_pem.decode())


def served_certificate(port: int, context: ssl.SSLContext, name: str = NAME) -> str | None:
    """SHA-256 of the certificate a verifying client gets for `name` (None: no valid one yet)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as raw:
            with context.wrap_socket(raw, server_hostname=name) as tls:
                return hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()
    except (OSError, ssl.SSLError):
        return None


def wait_for_certificate(proc: subprocess.Popen, port: int, context: ssl.SSLContext, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited ({proc.returncode}):\n{server_log(proc)}")
        fingerprint = served_certificate(port, context)
        if fingerprint:
            return fingerprint
        time.sleep(0.1)
    raise AssertionError(f"no valid certificate within {timeout}s:\n{server_log(proc)}")


class _SNIConnection(http.client.HTTPSConnection):
    """An HTTPS connection to 127.0.0.1 that says and verifies the site's name."""

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=NAME)  # type: ignore[attr-defined]


def https_request(port: int, context: ssl.SSLContext, method: str, path: str, body: bytes | None = None,
                  headers: dict | None = None) -> tuple[int, dict, bytes]:
    conn = _SNIConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Host": NAME, **(headers or {})})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def metric_lines(admin_port: int, name: str) -> list[str]:
    conn = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=5)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    return [line for line in text.splitlines() if line.startswith(f"durable_streams_{name}{{")]


def orders(pebble: Pebble) -> int:
    """Orders Pebble finalized (one log line each)."""
    return pebble.log().count("finalize")


@contextlib.contextmanager
def name_locked_by_another_process(xdg: Path) -> Iterator[StorageLock]:
    """certmagic's lock on NAME in the storage, held as another Caddy or server would."""
    lock = StorageLock(str(xdg / "caddy"), issue_lock_name(NAME))
    lock.acquire()
    try:
        yield lock
    finally:
        if lock.held:
            lock.release()


@pytest.fixture
def ports() -> tuple[int, int]:
    return free_port(), free_port()


def node_or_skip() -> str:
    node = shutil.which("node")
    manifest = NODE_ROOT / "node_modules" / "@durable-streams" / "client" / "package.json"
    if node is None or not manifest.exists():
        problem = "node and conformance/node_modules (npm ci) are needed for the TypeScript client"
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(problem)
        pytest.skip(problem)
    return node


def run_ts_client(pebble: Pebble, url: str) -> str:
    node = node_or_skip()
    done = subprocess.run([node, str(TS_CHECK), url], capture_output=True, text=True, timeout=60, cwd=NODE_ROOT,
                          env={**os.environ, "NODE_EXTRA_CA_CERTS": pebble.issued_root_path,
                               "DS_NODE_MODULES_ROOT": str(NODE_ROOT), "DS_RESOLVE_TO_LOOPBACK": NAME})
    assert done.returncode == 0, f"TypeScript client failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("challenge", ["http-01", "tls-alpn-01"])
def test_production_caddyfile_gets_a_certificate(tmp_path, pebble_factory, ports, challenge) -> None:
    http_port, https_port = ports
    if challenge == "http-01":
        # Pebble's TLS-ALPN-01 port gets nothing: only HTTP-01 on our http_port can succeed
        pebble = pebble_factory(http_port=http_port, tls_port=free_port())
        site_tls = ""
    else:
        # no HTTP-01 at all: the order can only be validated through our TLS listener
        pebble = pebble_factory(http_port=free_port(), tls_port=https_port)
        site_tls = (f"\ttls {{\n\t\tissuer acme {{\n\t\t\tdir {pebble.directory_url}\n"
                    f"\t\t\ttrusted_roots {pebble.api_ca_path}\n\t\t\tdisable_http_challenge\n\t\t}}\n\t}}\n")
    config = production_caddyfile(tmp_path, pebble, http_port=http_port, https_port=https_port, site_tls=site_tls)
    xdg = tmp_path / "xdg"
    started = time.monotonic()
    with server(config, xdg) as proc:
        context = trusting(pebble)
        wait_for_certificate(proc, https_port, context)
        elapsed = time.monotonic() - started
        print(f"{challenge}: start to certificate {elapsed:.2f}s")

        # stored where Caddy stores it, private key 0600 in 0700 directories
        issuer_dir = xdg / "caddy" / "certificates" / pebble.directory_url.split("://")[1].replace(":", "-").replace("/", "-")
        crt, key = issuer_dir / NAME / f"{NAME}.crt", issuer_dir / NAME / f"{NAME}.key"
        assert crt.exists() and key.exists(), sorted(str(p) for p in (xdg / "caddy").rglob("*"))
        assert key.stat().st_mode & 0o777 == 0o600 and (xdg / "caddy").stat().st_mode & 0o777 == 0o700

        status, headers, _ = https_request(https_port, context, "PUT", "/v1/stream/hello",
                                           headers={"Content-Type": "text/plain"})
        assert status == 201, (status, headers)
        status, _, _ = https_request(https_port, context, "POST", "/v1/stream/hello", b"over https",
                                     headers={"Content-Type": "text/plain"})
        assert status in (200, 204)
        status, _, body = https_request(https_port, context, "GET", "/v1/stream/hello?offset=-1")
        assert status == 200 and body == b"over https"

        # the HTTP port redirects to https with 308 (and answers nothing else)
        conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
        conn.request("GET", "/v1/stream/hello?offset=-1", headers={"Host": NAME})
        resp = conn.getresponse()
        assert resp.status == 308
        assert resp.getheader("Location", "").startswith(f"https://{NAME}") and "/v1/stream/hello?offset=-1" in \
            resp.getheader("Location", "")
        conn.close()

        # the official TypeScript client, verifying the chain against Pebble's root only
        out = run_ts_client(pebble, f"https://{NAME}:{https_port}/v1/stream/ts-{challenge}")
        assert out.strip().splitlines()[-1] == "ok", out


def test_restart_reuses_the_stored_certificate(tmp_path, pebble_factory, ports) -> None:
    http_port, https_port = ports
    pebble = pebble_factory(http_port=http_port, tls_port=https_port)
    config = production_caddyfile(tmp_path, pebble, http_port=http_port, https_port=https_port)
    xdg = tmp_path / "xdg"
    context = trusting(pebble)
    with server(config, xdg) as proc:
        first = wait_for_certificate(proc, https_port, context)
    assert orders(pebble) == 1
    pebble.stop()  # the CA is down: a stored certificate must not need it
    with server(config, xdg) as proc:
        again = wait_for_certificate(proc, https_port, context)
        assert again == first
        assert "stored, from" in server_log(proc)
        assert "could not obtain" not in server_log(proc)


def test_without_redirects_tls_alpn_01_is_used(tmp_path, pebble_factory, ports) -> None:
    """`auto_https disable_redirects`: nothing listens on the HTTP port, so the order is
    answered through the TLS listener alone."""
    http_port, https_port = ports
    pebble = pebble_factory(http_port=http_port, tls_port=https_port)
    config = production_caddyfile(tmp_path, pebble, http_port=http_port, https_port=https_port)
    config.write_text(config.read_text().replace("{\n", "{\n\tauto_https disable_redirects\n", 1))
    with server(config, tmp_path / "xdg") as proc:
        wait_for_certificate(proc, https_port, trusting(pebble))
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", http_port), timeout=2).close()
    # Pebble validates HTTP-01 on http_port, where nothing listens: the certificate came by TLS-ALPN-01


def test_a_second_process_waits_on_the_storage_lock(tmp_path, pebble_factory, ports) -> None:
    """certmagic's lock file for the name is held (as by another Caddy or server process
    sharing the storage): nothing is ordered until it is released."""
    http_port, https_port = ports
    pebble = pebble_factory(http_port=http_port, tls_port=https_port)
    config = production_caddyfile(tmp_path, pebble, http_port=http_port, https_port=https_port)
    xdg = tmp_path / "xdg"
    with name_locked_by_another_process(xdg) as lock, server(config, xdg) as proc:
        time.sleep(4)  # what we assert is that nothing happens in this time
        assert orders(pebble) == 0 and served_certificate(https_port, trusting(pebble)) is None
        lock.release()
        wait_for_certificate(proc, https_port, trusting(pebble))
        assert orders(pebble) == 1


def test_unreachable_ca_at_start(tmp_path, pebble_factory, ports) -> None:
    """Plain sites serve at once; the managed site reports why it has no certificate
    (/readyz 503); once the CA answers, the certificate comes without a restart."""
    http_port, https_port = ports
    api_port, admin_port, plain_port = free_port(), free_port(), free_port()
    xdg = tmp_path / "xdg"
    config = tmp_path / "Caddyfile"
    api_ca = tmp_path / "pebble-api-ca.pem"  # written once Pebble starts
    config.write_text(
        "{\n"
        f"\tadmin 127.0.0.1:{admin_port}\n"
        f"\tacme_ca https://127.0.0.1:{api_port}/dir\n"
        f"\tacme_ca_root {api_ca}\n"
        f"\thttp_port {http_port}\n\thttps_port {https_port}\n"
        "}\n"
        f"{NAME} {{\n\trespond \"secure\"\n}}\n"
        f"http://127.0.0.1:{plain_port} {{\n\trespond \"plain\"\n}}\n"
    )
    with server(config, xdg) as proc:
        deadline = time.monotonic() + 30
        readiness: dict = {}
        while time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=2)
                conn.request("GET", "/readyz")
                resp = conn.getresponse()
                readiness = json.loads(resp.read())
                if resp.status == 503 and "could not obtain a certificate" in server_log(proc):
                    break
            except OSError:
                pass
            time.sleep(0.1)
        assert readiness.get("unavailable") == ["certificates"], readiness
        assert NAME in server_log(proc) and f"127.0.0.1:{api_port}" in server_log(proc)
        failing = metric_lines(admin_port, "tls_certificate_failed_attempts")
        assert len(failing) == 1 and f'subject="{NAME}"' in failing[0] and float(failing[0].split()[-1]) >= 1
        conn = http.client.HTTPConnection("127.0.0.1", plain_port, timeout=5)
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"plain"

        pebble = pebble_factory(http_port=http_port, tls_port=https_port, api_port=api_port)
        shutil.copy(pebble.api_ca_path, api_ca)
        wait_for_certificate(proc, https_port, trusting(pebble), timeout=90)
        conn = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=2)
        conn.request("GET", "/readyz")
        assert conn.getresponse().status == 200
        (expiry,) = metric_lines(admin_port, "tls_certificate_expiry_timestamp_seconds")
        assert f'subject="{NAME}"' in expiry and float(expiry.split()[-1]) > time.time()
        assert float(metric_lines(admin_port, "tls_certificate_failed_attempts")[0].split()[-1]) == 0


def test_renewal_swaps_the_certificate_while_an_sse_reader_stays(tmp_path, pebble_factory, ports) -> None:
    http_port, https_port = ports
    # 30 s certificates: renewal is due after 20 s (the last third of the lifetime)
    pebble = pebble_factory(http_port=http_port, tls_port=https_port, certificate_validity=30)
    config = production_caddyfile(tmp_path, pebble, http_port=http_port, https_port=https_port)
    context = trusting(pebble)
    with server(config, tmp_path / "xdg") as proc:
        first = wait_for_certificate(proc, https_port, context)
        assert https_request(https_port, context, "PUT", "/v1/stream/live", headers={"Content-Type": "text/plain"})[0] == 201
        reader = _SNIConnection("127.0.0.1", https_port, context=context, timeout=60)
        reader.request("GET", "/v1/stream/live?offset=-1&live=sse", headers={"Host": NAME})
        events = reader.getresponse()
        assert events.status == 200
        received: list[bytes] = []

        def read_events() -> None:
            try:
                while True:
                    line = events.fp.readline()
                    if not line:
                        return
                    received.append(line)
            except (OSError, ValueError, AttributeError):  # closed by the test at the end
                return

        threading.Thread(target=read_events, daemon=True).start()
        deadline = time.monotonic() + 60
        second = first
        while second == first and time.monotonic() < deadline:
            time.sleep(0.5)
            second = served_certificate(https_port, context) or first
        assert second != first, f"not renewed:\n{server_log(proc)}"
        assert orders(pebble) >= 2
        # the reader connected before the swap still gets what is appended after it
        assert https_request(https_port, context, "POST", "/v1/stream/live", b"after-renewal",
                             headers={"Content-Type": "text/plain"})[0] in (200, 204)
        deadline = time.monotonic() + 10
        while not any(b"after-renewal" in line for line in received) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any(b"after-renewal" in line for line in received), received
        reader.close()


def test_stopping_while_an_order_waits_on_the_lock_is_prompt(tmp_path, pebble_factory, ports) -> None:
    """The order's worker thread gives up when the server stops (else the process would
    wait for it at exit, here for as long as the other holder keeps the lock)."""
    http_port, https_port = ports
    pebble = pebble_factory(http_port=http_port, tls_port=https_port)
    config = production_caddyfile(tmp_path, pebble, http_port=http_port, https_port=https_port)
    xdg = tmp_path / "xdg"
    with name_locked_by_another_process(xdg), server(config, xdg) as proc:
        time.sleep(2)
        stopped = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, server_log(proc)
        assert time.monotonic() - stopped < 12  # the grace period (10 s) bounds it, not the lock


def test_docs_static_api_key_example(tmp_path, pebble_factory, ports) -> None:
    """The deployment docs' `api.example.com` example (a bearer key checked by a matcher),
    with only the CA options, the ports and data_dir added."""
    http_port, https_port = ports
    pebble = pebble_factory(http_port=http_port, tls_port=https_port)
    docs = (REPO / "tests" / "caddyfile" / "corpus" / "ds-doc-05-docs-deployment.caddy").read_text()
    assert docs.startswith("api.example.com {") and "data_dir ./data" in docs
    config = tmp_path / "Caddyfile"
    config.write_text(
        f"{{\n\tacme_ca {pebble.directory_url}\n\tacme_ca_root {pebble.api_ca_path}\n"
        f"\thttp_port {http_port}\n\thttps_port {https_port}\n}}\n"
        + docs.replace("data_dir ./data", f"data_dir {tmp_path / 'data'}")
    )
    context = trusting(pebble)
    with server(config, tmp_path / "xdg") as proc:
        deadline = time.monotonic() + 60
        while served_certificate(https_port, context, "api.example.com") is None and time.monotonic() < deadline:
            assert proc.poll() is None, server_log(proc)
            time.sleep(0.1)

        def call(headers: dict) -> int:
            conn = http.client.HTTPSConnection("127.0.0.1", https_port, context=context, timeout=10)
            conn.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", https_port), 10),
                                            server_hostname="api.example.com")
            conn.request("PUT", "/v1/stream/keyed", headers={"Host": "api.example.com",
                                                            "Content-Type": "text/plain", **headers})
            status = conn.getresponse().status
            conn.close()
            return status

        assert call({}) == 401
        assert call({"Authorization": "Bearer my-secret-key"}) == 201
