"""Access logs of the real daemon (a subprocess): every field an operator needs, no secret
ever (Authorization, Cookie, userinfo, credential-looking query values), nothing on stdout."""

from __future__ import annotations

import base64
import json
import signal
import socket
import subprocess

from config.oracle import CADDY  # tests/ is on sys.path (rootdir packages)

from .helpers import free_port
from .process import request, running_server

SECRETS = ["correct-horse", "s3cret-bearer", "cookie-secret", "query-secret", "userinfo-secret"]


def _raw_request(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_access_lines_have_the_fields_and_never_a_secret(tmp_path) -> None:
    hashed = subprocess.run(
        [str(CADDY), "hash-password", "--bcrypt-cost", "4", "--plaintext", "correct-horse"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout.strip()
    port = free_port()
    config = tmp_path / "Caddyfile"
    config.write_text(
        "{\n\tadmin off\n}\n"
        f":{port} {{\n\tbind 127.0.0.1\n\tlog\n"
        f"\tbasic_auth /v1/* {{\n\t\talice {hashed}\n\t}}\n"
        "\troute /v1/stream/* {\n\t\tdurable_streams\n\t}\n"
        '\troute /b/* {\n\t\t@unauthorized not header Authorization "Bearer s3cret-bearer"\n'
        "\t\trespond @unauthorized 401\n\t\tdurable_streams\n\t}\n}\n"
    )
    basic = "Basic " + base64.b64encode(b"alice:correct-horse").decode()
    with running_server(config, port) as proc:
        assert request(port, "PUT", "/v1/stream/a", headers={"Authorization": basic})[0] == 201
        assert request(port, "GET", "/v1/stream/a?offset=-1", headers={"Authorization": basic})[0] == 200
        wrong = "Basic " + base64.b64encode(b"alice:correct-horse-not").decode()
        assert request(port, "GET", "/v1/stream/a", headers={"Authorization": wrong})[0] == 401
        status, _, _ = request(
            port, "PUT", "/b/x?token=query-secret&offset=-1",
            headers={"Authorization": "Bearer s3cret-bearer", "Cookie": "sid=cookie-secret"},
        )
        assert status == 201
        assert request(port, "GET", "/b/x", headers={"Authorization": "Bearer wrong-s3cret-bearer"})[0] == 401
        # absolute-form target with userinfo (what some proxies send)
        reply = _raw_request(
            port,
            f"GET http://bob:userinfo-secret@127.0.0.1:{port}/b/x?offset=-1 HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer s3cret-bearer\r\nConnection: close\r\n\r\n".encode(),
        )
        assert reply.startswith(b"HTTP/1.1 200")
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    assert stdout == ""  # logs go to stderr; stdout is never written by `run`
    for secret in SECRETS:
        assert secret not in stderr, secret
    entries = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    access = [e for e in entries if e.get("event") == "handled request"]
    by_uri = {(e["method"], e["uri"], e["status"]) for e in access}
    assert ("PUT", "/v1/stream/a", 201) in by_uri
    assert ("GET", "/v1/stream/a", 401) in by_uri
    assert ("PUT", "/b/x?token=REDACTED&offset=-1", 201) in by_uri
    assert ("GET", "/b/x?offset=-1", 200) in by_uri
    for entry in access:
        assert {"method", "uri", "status", "size", "duration", "remote_ip"} <= entry.keys()
        assert entry["remote_ip"] == "127.0.0.1" and entry["duration"] >= 0
    read = next(e for e in access if e["uri"] == "/v1/stream/a?offset=-1")
    assert (read["status"], read["user_id"]) == (200, "alice")
