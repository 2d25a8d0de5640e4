"""ZeroSSL's ACME CA needs External Account Binding; like Caddy, the server asks ZeroSSL's
API for credentials from the email (POST email=... to /acme/eab-credentials-email), only
when no account is stored. The API here is a loopback stand-in that answers as ZeroSSL's
does (errors come with HTTP 200)."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse
from pathlib import Path

import pytest

from durable_streams.server.runtime.tls.acme import (
    AcmeError, AcmeSettings, account_paths, needs_zerossl_eab, zerossl_eab_credentials,
)

ZEROSSL = "https://acme.zerossl.com/v2/DV90"


@pytest.fixture
def api():
    received: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:
            form = urllib.parse.parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
            received.append({"form": form, "content_type": self.headers["Content-Type"]})
            email = form.get("email", [""])[0]
            body = ({"success": True, "eab_kid": "kid-" + email, "eab_hmac_key": "bWFjLWtleQ"} if email != "bad@example.com"
                    else {"success": False, "error": {"code": 2900, "type": "invalid_email"}})
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/acme/eab-credentials-email", received
    server.shutdown()
    server.server_close()


def test_credentials_come_from_the_email(api) -> None:
    endpoint, received = api
    assert zerossl_eab_credentials("ops@example.com", endpoint) == ("kid-ops@example.com", "bWFjLWtleQ")
    assert received == [{"form": {"email": ["ops@example.com"]}, "content_type": "application/x-www-form-urlencoded"}]


def test_errors_are_said(api) -> None:
    endpoint, _received = api
    with pytest.raises(AcmeError, match=r"invalid_email \(code 2900\)"):
        zerossl_eab_credentials("bad@example.com", endpoint)
    with pytest.raises(AcmeError, match="email address is required"):
        zerossl_eab_credentials("", endpoint)
    with pytest.raises(AcmeError, match="getting ZeroSSL EAB credentials from http://127.0.0.1:9/"):
        zerossl_eab_credentials("ops@example.com", "http://127.0.0.1:9/", timeout=2)


def test_needed_only_for_zerossl_without_a_stored_account_or_given_eab(tmp_path: Path) -> None:
    root = str(tmp_path)
    zerossl = AcmeSettings(directory=ZEROSSL, email="ops@example.com")
    assert needs_zerossl_eab(zerossl, root)
    assert not needs_zerossl_eab(AcmeSettings(directory=ZEROSSL, email="ops@example.com", eab=("k", "m")), root)
    assert not needs_zerossl_eab(AcmeSettings(email="ops@example.com"), root)  # Let's Encrypt
    key = Path(account_paths(root, ZEROSSL, "ops@example.com")[1])
    key.parent.mkdir(parents=True)
    key.write_text("stored account key")
    assert not needs_zerossl_eab(zerossl, root)
