"""Automatic HTTPS from the local CA (`tls internal`, localhost and IP sites): a real
server process, real sockets, and clients that trust only the generated root."""

from __future__ import annotations

import asyncio
import datetime as dt
import http.client
import json
import os
import socket
import ssl
import stat
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from durable_streams.server.runtime.tls import local_ca as pki

from .helpers import free_port, port_of, serve
from .process import SCRIPT

ROUTE = "\troute /v1/stream/* {\n\t\tdurable_streams\n\t}\n"


def caddyfile(tmp_path: Path, sites: str, *, extra: str = "") -> Path:
    path = tmp_path / "Caddyfile"
    path.write_text(
        "{\n\tadmin off\n"
        f"\thttp_port {free_port()}\n"
        f"\tstorage file_system {tmp_path / 'storage'}\n"
        f"{extra}"
        "}\n\n" + sites
    )
    return path


def root_path(tmp_path: Path) -> Path:
    return tmp_path / "storage" / "pki" / "authorities" / "local" / "root.crt"


def client_context(tmp_path: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(root_path(tmp_path)))


def wait_tls(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early ({proc.returncode}): {proc.stderr.read() if proc.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("server did not start listening")


def https(port: int, ctx: ssl.SSLContext, method: str, path: str, body: bytes | None = None,
          headers: dict | None = None, host: str = "localhost") -> tuple[int, bytes]:
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def peer_cert(port: int, ctx: ssl.SSLContext, server_hostname: str) -> x509.Certificate:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
            der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der)


def load_chain(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def fp(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def start(config: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(SCRIPT), "run", "--config", str(config)],
        cwd=config.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    try:
        _out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _out, err = proc.communicate()
    return err


def test_localhost_site_gets_a_local_ca_certificate(tmp_path: Path) -> None:
    port = free_port()
    # the upstream plugin's own Caddyfile shape
    config = caddyfile(tmp_path, f"localhost:{port} {{\n{ROUTE}}}\n")
    proc = start(config)
    try:
        wait_tls(port, proc)
        ctx = client_context(tmp_path)
        assert https(port, ctx, "PUT", "/v1/stream/s", headers={"Content-Type": "text/plain"})[0] == 201
        assert https(port, ctx, "POST", "/v1/stream/s", b"hello", {"Content-Type": "text/plain"})[0] == 204
        assert https(port, ctx, "GET", "/v1/stream/s?offset=-1") == (200, b"hello")
        served = peer_cert(port, ctx, "localhost")
    finally:
        err = stop(proc)
    assert "certificates issued by the local CA" in err

    storage = tmp_path / "storage"
    authority = storage / "pki" / "authorities" / "local"
    leaf_dir = storage / "certificates" / "local" / "localhost"
    root = load_chain(authority / "root.crt")[0]
    intermediate = load_chain(authority / "intermediate.crt")[0]
    chain = load_chain(leaf_dir / "localhost.crt")
    assert len(chain) == 2 and fp(chain[0]) == fp(served) and fp(chain[1]) == fp(intermediate)
    # root -> intermediate -> leaf
    root.verify_directly_issued_by(root)
    intermediate.verify_directly_issued_by(root)
    chain[0].verify_directly_issued_by(intermediate)
    san = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    lifetime = chain[0].not_valid_after_utc - chain[0].not_valid_before_utc
    assert lifetime <= dt.timedelta(hours=12, minutes=2)
    assert root.not_valid_after_utc - root.not_valid_before_utc >= dt.timedelta(days=3649)
    assert intermediate.not_valid_after_utc - intermediate.not_valid_before_utc <= dt.timedelta(days=7, minutes=2)
    assert json.loads((leaf_dir / "localhost.json").read_text())["sans"] == ["localhost"]
    for key in (authority / "root.key", authority / "intermediate.key", leaf_dir / "localhost.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    for directory in (storage, storage / "pki", authority, storage / "certificates", leaf_dir):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700

    # a restart reuses the stored root (and the still-fresh leaf): no new CA
    proc = start(config)
    try:
        wait_tls(port, proc)
        ctx = client_context(tmp_path)
        assert https(port, ctx, "PUT", "/v1/stream/again")[0] == 201  # (an in-memory store)
    finally:
        err = stop(proc)
    assert fp(load_chain(authority / "root.crt")[0]) == fp(root)
    assert fp(load_chain(authority / "intermediate.crt")[0]) == fp(intermediate)
    assert fp(load_chain(leaf_dir / "localhost.crt")[0]) == fp(chain[0])
    assert "certificates issued by the local CA" not in err


def test_ip_site_gets_the_ip_in_subject_alt_name(tmp_path: Path) -> None:
    port = free_port()
    config = caddyfile(tmp_path, f"127.0.0.1:{port} {{\n{ROUTE}}}\n")
    proc = start(config)
    try:
        wait_tls(port, proc)
        ctx = client_context(tmp_path)
        # http.client checks the IP against the certificate's iPAddress names
        assert https(port, ctx, "PUT", "/v1/stream/ip", host="127.0.0.1")[0] == 201
        served = peer_cert(port, ctx, "127.0.0.1")
    finally:
        stop(proc)
    san = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert (tmp_path / "storage" / "certificates" / "local" / "127.0.0.1" / "127.0.0.1.key").is_file()


def test_tls_internal_serves_any_name_picked_by_sni(tmp_path: Path) -> None:
    port = free_port()
    config = caddyfile(
        tmp_path,
        f"streams.example.com:{port} {{\n\ttls internal\n\trespond \"public\"\n}}\n"
        f"localhost:{port} {{\n\trespond \"local\"\n}}\n",
    )
    proc = start(config)
    try:
        wait_tls(port, proc)
        ctx = client_context(tmp_path)
        for name in ("streams.example.com", "localhost"):
            served = peer_cert(port, ctx, name)
            san = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            assert san.get_values_for_type(x509.DNSName) == [name]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="streams.example.com") as tls:
                tls.sendall(b"GET / HTTP/1.1\r\nHost: streams.example.com\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := tls.recv(65536):
                    data += chunk
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"public")
        # a name the server has no certificate for is not trusted as that name
        with pytest.raises(ssl.SSLCertVerificationError):
            peer_cert(port, ctx, "other.example.com")
    finally:
        stop(proc)


def test_trust_prints_the_root(tmp_path: Path) -> None:
    config = caddyfile(tmp_path, f"localhost:{free_port()} {{\n{ROUTE}}}\n")
    first = subprocess.run([str(SCRIPT), "trust", "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert str(root_path(tmp_path)) in first.stderr
    assert first.stdout == root_path(tmp_path).read_text() and first.stdout.startswith("-----BEGIN CERTIFICATE-----")
    again = subprocess.run([str(SCRIPT), "trust", "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert again.stdout == first.stdout  # the same root, not a new CA
    # XDG_DATA_HOME is Caddy's default location when the Caddyfile names no storage
    bare = tmp_path / "bare"
    bare.mkdir()
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg")}
    default = subprocess.run([str(SCRIPT), "trust"], capture_output=True, text=True, timeout=60, cwd=bare, env=env)
    assert default.returncode == 0, default.stderr
    assert (tmp_path / "xdg" / "caddy" / "pki" / "authorities" / "local" / "root.crt").read_text() == default.stdout


def test_short_leaf_is_renewed_and_swapped_without_dropping_connections(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(pki, "LEAF_LIFETIME", dt.timedelta(seconds=3))
    monkeypatch.setattr(pki, "BACKDATE", dt.timedelta(0))
    text = (
        "{\n\tadmin off\n\tauto_https disable_redirects\n"
        f"\tstorage file_system {tmp_path / 'storage'}\n}}\n"
        "localhost:0 {\n\trespond \"ok\"\n}\n"
    )

    async def main() -> None:
        async with serve(text) as app:
            port = port_of(app)
            ctx = client_context(tmp_path)

            def open_conn() -> tuple[http.client.HTTPSConnection, str]:
                conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=10)
                conn.request("GET", "/")
                resp = conn.getresponse()
                assert resp.status == 200 and resp.read() == b"ok"
                return conn, fp(x509.load_der_x509_certificate(conn.sock.getpeercert(binary_form=True)))

            kept, first = await asyncio.to_thread(open_conn)
            deadline = time.monotonic() + 15
            second = first
            while second == first and time.monotonic() < deadline:
                await asyncio.sleep(0.3)
                conn, second = await asyncio.to_thread(open_conn)
                conn.close()
            assert second != first, "the leaf was not renewed"

            def reuse() -> bytes:
                kept.request("GET", "/")
                return kept.getresponse().read()

            assert await asyncio.to_thread(reuse) == b"ok"  # the old connection still serves
            kept.close()

    asyncio.run(main())


def test_two_processes_sharing_storage_make_one_root(tmp_path: Path) -> None:
    config = caddyfile(tmp_path, f"localhost:{free_port()} {{\n{ROUTE}}}\n")
    procs = [subprocess.Popen([str(SCRIPT), "trust", "--config", str(config)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = {p.communicate(timeout=60)[0] for p in procs}
    assert len(outputs) == 1 and outputs == {root_path(tmp_path).read_text()}


def test_validate_names_the_local_ca_sites(tmp_path: Path) -> None:
    config = caddyfile(tmp_path, f"localhost:{free_port()}, 127.0.0.1:{free_port()} {{\n{ROUTE}}}\n")
    proc = subprocess.run([str(SCRIPT), "validate", "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "Valid configuration\n"
    assert "automatic HTTPS: localhost: local CA, stored in " in proc.stderr
    assert "automatic HTTPS: 127.0.0.1: local CA, stored in " in proc.stderr
    assert not (tmp_path / "storage").exists()  # validating issues nothing
